//! Two small limits the front ends share (a leaf: nothing of the crate is imported here).
//!
//! - [`WarnGate`]: a repeated warning goes out at most once per period, with a count of
//!   what was held back, so a flood does not turn into a flood of log lines.
//! - [`PerIp`]: a per-address cap. The map holds only addresses with a slot taken (each
//!   entry is a held slot, and the callers bound those), so it stays small however many
//!   addresses ask.

use std::collections::HashMap;
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
