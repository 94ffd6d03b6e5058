//! Two small limits the front ends share (a leaf: nothing of the crate is imported here).
//!
//! - [`WarnGate`]: a repeated warning goes out at most once per period, with a count of
//!   what was held back, so a flood does not turn into a flood of log lines.
//! - [`PerIp`]: a per-address cap. The map holds only addresses with a slot taken (each
//!   entry is a held slot, and the callers bound those), so it stays small however many
//!   addresses ask.
//! - [`Guesses`]: wrong guesses of a secret (retail PINs, HTTP passwords) per guesser and
//!   from everyone together, per window.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Lets a repeated warning through at most once per period, counting what it held back:
/// a flood must not turn into a flood of log lines.
pub(crate) struct WarnGate {
    every: Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl WarnGate {
    pub(crate) fn new(every: Duration) -> WarnGate {
        WarnGate {
            every,
            state: Mutex::new((None, 0)),
        }
    }

    /// `Some(held back since the last one)` when this warning may be logged now.
    pub(crate) fn admit(&self) -> Option<u64> {
        self.admit_at(Instant::now())
    }

    /// [`admit`](Self::admit) at a given time.
    pub(crate) fn admit_at(&self, now: Instant) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match s.0 {
            Some(last) if now.duration_since(last) < self.every => {
                s.1 += 1;
                None
            }
            _ => {
                let held = s.1;
                *s = (Some(now), 0);
                Some(held)
            }
        }
    }
}

/// At most `cap` slots at once per address.
pub(crate) struct PerIp {
    cap: usize,
    running: Mutex<HashMap<IpAddr, usize>>,
}

/// One place in its address's count; released on drop.
pub(crate) struct IpSlot {
    owner: Arc<PerIp>,
    ip: IpAddr,
}

impl PerIp {
    pub(crate) fn new(cap: usize) -> Arc<PerIp> {
        Arc::new(PerIp {
            cap,
            running: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for `ip`, or `None` when it already holds `cap`.
    pub(crate) fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Option<IpSlot> {
        // A v4 client on a dual-stack socket is the same host as over v4.
        let ip = ip.to_canonical();
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if running.get(&ip).copied().unwrap_or(0) >= self.cap {
            return None;
        }
        *running.entry(ip).or_insert(0) += 1;
        Some(IpSlot {
            owner: self.clone(),
            ip,
        })
    }

    /// Addresses holding a slot.
    #[cfg(test)]
    pub(crate) fn addresses(&self) -> usize {
        self.running.lock().unwrap().len()
    }

    /// Slots `ip` holds.
    #[cfg(test)]
    pub(crate) fn held(&self, ip: IpAddr) -> usize {
        let running = self.running.lock().unwrap();
        running.get(&ip.to_canonical()).copied().unwrap_or(0)
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut running = self.owner.running.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = running.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                running.remove(&self.ip);
            }
        }
    }
}

/// Why a guess was not even let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Throttle {
    /// One of this attempt's guessers used up its allowance in this window.
    Guesser,
    /// Everyone together used up the global budget in this window.
    Global,
}

/// Guesses at a secret, limited per guesser (each attempt names several: a device and an
/// address, a user and an address, so neither a new address nor a new name resets it) and
/// for everyone together (fresh names and fresh addresses cost nothing). An attempt is
/// taken before the secret is checked, under one lock, so parallel requests cannot all
/// slip past; a right guess gives it back ([`Guesses::right`]).
pub(crate) struct Guesses<K> {
    per_guesser: u32,
    budget: u32,
    window: Duration,
    /// What the global warning names (the config key of the budget).
    what: &'static str,
    state: Mutex<GuessState<K>>,
}

struct GuessState<K> {
    by: HashMap<K, (Instant, u32)>,
    swept: Option<Instant>,
    all: Option<(Instant, u32)>,
    /// The global budget ran out in this window and it was logged.
    warned: bool,
}

impl<K: Hash + Eq + Clone> Guesses<K> {
    pub(crate) fn new(per_guesser: u32, budget: u32, window: Duration, what: &'static str) -> Self {
        Guesses {
            per_guesser,
            budget,
            window,
            what,
            state: Mutex::new(GuessState {
                by: HashMap::new(),
                swept: None,
                all: None,
                warned: false,
            }),
        }
    }

    /// Take one attempt for all of `keys`.
    pub(crate) fn try_attempt(&self, keys: &[K]) -> Result<(), Throttle> {
        let now = Instant::now();
        let window = self.window;
        let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if g.swept.is_none_or(|t| now.duration_since(t) >= window) {
            // Bounded memory: forget windows that are over, once a window.
            g.by.retain(|_, (t, _)| now.duration_since(*t) < window);
            g.swept = Some(now);
        }
        // Counted only once admitted: a refused attempt adds no entry, so fresh names
        // sent after the budget is spent cannot grow the map.
        let used = |g: &GuessState<K>, k: &K| match g.by.get(k) {
            Some((t, n)) if now.duration_since(*t) < window => *n,
            _ => 0,
        };
        if keys.iter().any(|k| used(&g, k) >= self.per_guesser) {
            return Err(Throttle::Guesser);
        }
        let all = match g.all {
            Some((t, n)) if now.duration_since(t) < window => (t, n),
            _ => {
                g.warned = false;
                (now, 0)
            }
        };
        if all.1 >= self.budget {
            g.all = Some(all);
            if !std::mem::replace(&mut g.warned, true) {
                // Once per window: someone is guessing from many names or addresses.
                tracing::warn!(
                    budget = self.budget,
                    "{} used up: refused for everyone until the window ends",
                    self.what
                );
            }
            return Err(Throttle::Global);
        }
        g.all = Some((all.0, all.1 + 1));
        for k in keys {
            let e = g.by.entry(k.clone()).or_insert((now, 0));
            if now.duration_since(e.0) >= window {
                *e = (now, 0);
            }
            e.1 += 1;
        }
        Ok(())
    }

    /// A right guess: `forget` start over, `give_back` (shared guessers, an address) and
    /// the global budget get this attempt back.
    pub(crate) fn right(&self, forget: &[K], give_back: &[K]) {
        let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        for k in forget {
            g.by.remove(k);
        }
        for k in give_back {
            if let Some((_, n)) = g.by.get_mut(k) {
                *n = n.saturating_sub(1);
            }
        }
        if let Some((_, n)) = &mut g.all {
            *n = n.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_each_address_and_forgets_idle_ones() {
        let p = PerIp::new(2);
        let a: IpAddr = "198.18.0.2".parse().unwrap();
        let mapped: IpAddr = "::ffff:198.18.0.2".parse().unwrap();
        let b: IpAddr = "198.18.0.3".parse().unwrap();
        let s1 = p.try_acquire(a).unwrap();
        let s2 = p.try_acquire(mapped).unwrap();
        assert!(
            p.try_acquire(a).is_none(),
            "third transfer from one address"
        );
        let s3 = p.try_acquire(b).unwrap();
        drop(s1);
        let s4 = p.try_acquire(a).unwrap();
        assert_eq!(p.addresses(), 2);
        drop((s2, s3, s4));
        assert_eq!(
            p.addresses(),
            0,
            "an address with nothing running is forgotten"
        );
    }

    #[test]
    fn refused_guesses_add_no_entries() {
        let g: Guesses<u32> = Guesses::new(2, 3, Duration::from_secs(60), "test budget");
        assert_eq!(g.try_attempt(&[1, 100]), Ok(()));
        assert_eq!(g.try_attempt(&[2, 100]), Ok(()));
        // Address 100 used up its two: fresh names behind it are refused, not recorded.
        for name in 3..1000 {
            assert_eq!(g.try_attempt(&[name, 100]), Err(Throttle::Guesser));
        }
        assert_eq!(g.state.lock().unwrap().by.len(), 3);
        assert_eq!(g.try_attempt(&[5, 101]), Ok(()));
        assert_eq!(g.try_attempt(&[6, 102]), Err(Throttle::Global));
        // A right guess gives its attempt back to the shared ones and the budget.
        g.right(&[5], &[101]);
        assert_eq!(g.try_attempt(&[6, 102]), Ok(()));
    }

    #[test]
    fn one_warning_per_period_with_the_count_held_back() {
        let g = WarnGate::new(Duration::from_secs(10));
        let t = Instant::now();
        assert_eq!(g.admit_at(t), Some(0));
        for i in 1..=5 {
            assert_eq!(g.admit_at(t + Duration::from_secs(i)), None);
        }
        assert_eq!(g.admit_at(t + Duration::from_secs(10)), Some(5));
        assert_eq!(g.admit_at(t + Duration::from_secs(11)), None);
    }
}
