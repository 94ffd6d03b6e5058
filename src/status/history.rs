//! Devices per state over the last hours, for the dashboard's chart: a bounded ring of
//! per-state counts, one sample a minute (a walk of the book once a minute, not per
//! event: counting on every event was most of the CPU under a DHCP storm).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{State, StatusBook, now_ms};

/// One sample a minute...
pub(crate) const EVERY: Duration = Duration::from_secs(60);
/// ...for a day.
pub(crate) const KEEP: usize = 24 * 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Unix milliseconds.
    pub at: u64,
    /// In the order of `State::ALL`.
    pub counts: [u32; State::ALL.len()],
}

impl Sample {
    fn json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        m.insert("at".into(), self.at.into());
        for (s, n) in State::ALL.iter().zip(self.counts) {
            m.insert(s.as_str().into(), n.into());
        }
        m.into()
    }
}

#[derive(Debug)]
pub struct History {
    ring: Mutex<VecDeque<Sample>>,
    keep: usize,
}

impl Default for History {
    fn default() -> Self {
        History::new(KEEP)
    }
}

/// The book's counts now.
pub(crate) fn count(book: &StatusBook) -> Sample {
    let mut counts = [0u32; State::ALL.len()];
    for st in book.map(|d| d.state) {
        if let Some(i) = State::ALL.iter().position(|s| *s == st) {
            counts[i] += 1;
        }
    }
    Sample {
        at: now_ms(),
        counts,
    }
}

impl History {
    pub fn new(keep: usize) -> History {
        History {
            ring: Mutex::new(VecDeque::with_capacity(keep.min(KEEP))),
            keep: keep.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Sample>> {
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn push(&self, s: Sample) {
        let mut r = self.lock();
        while r.len() >= self.keep {
            r.pop_front();
        }
        r.push_back(s);
    }

    pub fn samples(&self) -> Vec<Sample> {
        self.lock().iter().copied().collect()
    }

    /// `{every_s, states, samples: [{at, seen, …}]}`, the kept samples and then the
    /// counts now (so a chart is current between samples).
    pub fn json(&self, book: &StatusBook) -> serde_json::Value {
        let mut v: Vec<serde_json::Value> = self.lock().iter().map(Sample::json).collect();
        v.push(count(book).json());
        json!({
            "every_s": EVERY.as_secs(),
            "states": State::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
            "samples": v,
        })
    }

    /// Sample now and then every `EVERY` until shutdown.
    pub async fn run(self: Arc<Self>, book: Arc<StatusBook>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => self.push(count(&book)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_newest() {
        let h = History::new(3);
        for at in 0..5 {
            h.push(Sample {
                at,
                counts: [at as u32, 0, 0, 0, 0],
            });
        }
        let s = h.samples();
        assert_eq!(s.iter().map(|s| s.at).collect::<Vec<_>>(), [2, 3, 4]);
        assert_eq!(
            s[2].json(),
            json!({"at": 4, "seen": 4, "configured": 0, "upgraded": 0, "provisioned": 0, "failed": 0})
        );
    }
}
