//! One device's record and the state machine that folds events into it. Pure data: no
//! locks, no I/O, so the rules are unit-tested directly.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Timeline entries kept per device (oldest dropped first).
pub(crate) const MAX_EVENTS: usize = 200;
/// Other syslog lines kept per device.
pub(crate) const MAX_LINES: usize = 100;
/// A syslog line longer than this is cut (phones send short lines; this bounds memory).
pub(crate) const MAX_LINE_LEN: usize = 1024;

/// `older` then `newer` in `order` (a tie keeps that order), the newest `max` kept: two
/// timelines made one. `once`: entries equal in `order` (the same entry, as two boxes
/// each kept it) are kept once.
pub(super) fn merged<T>(
    older: VecDeque<T>,
    newer: VecDeque<T>,
    order: impl Fn(&T, &T) -> std::cmp::Ordering,
    once: bool,
    max: usize,
) -> VecDeque<T> {
    let mut all: Vec<T> = older.into_iter().chain(newer).collect();
    all.sort_by(&order);
    if once {
        all.dedup_by(|a, b| order(a, b).is_eq());
    }
    let skip = all.len().saturating_sub(max);
    all.into_iter().skip(skip).collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Seen,
    Configured,
    Upgraded,
    Provisioned,
    Failed,
}

impl State {
    pub const ALL: [State; 5] = [
        State::Seen,
        State::Configured,
        State::Upgraded,
        State::Provisioned,
        State::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Seen => "seen",
            State::Configured => "configured",
            State::Upgraded => "upgraded",
            State::Provisioned => "provisioned",
            State::Failed => "failed",
        }
    }
}

/// What a phone does that it reports on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Resync,
    Upgrade,
}

/// A provisioning report from the phone itself (today: its syslog lines).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PhoneEvent {
    Requested {
        action: Action,
        url: String,
    },
    Succeeded {
        action: Action,
        url: String,
        /// Text after a trailing `-- $ERR` (often empty).
        detail: Option<String>,
    },
    Failed {
        action: Action,
        reason: String,
    },
}

impl PhoneEvent {
    /// Event kind as shown in the timeline and counted in metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            PhoneEvent::Requested {
                action: Action::Resync,
                ..
            } => "resync_requested",
            PhoneEvent::Requested {
                action: Action::Upgrade,
                ..
            } => "upgrade_requested",
            PhoneEvent::Succeeded {
                action: Action::Resync,
                ..
            } => "resync_ok",
            PhoneEvent::Succeeded {
                action: Action::Upgrade,
                ..
            } => "upgrade_ok",
            PhoneEvent::Failed {
                action: Action::Resync,
                ..
            } => "resync_failed",
            PhoneEvent::Failed {
                action: Action::Upgrade,
                ..
            } => "upgrade_failed",
        }
    }

    pub fn detail(&self) -> String {
        match self {
            PhoneEvent::Requested { url, .. } => url.clone(),
            PhoneEvent::Succeeded { url, detail, .. } => match detail {
                Some(d) if !d.is_empty() => format!("{url} ({d})"),
                _ => url.clone(),
            },
            PhoneEvent::Failed { reason, .. } => reason.clone(),
        }
    }
}

/// One recognised provisioning line: the phone's model (`$PN`), MAC and what happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhoneReport {
    pub model: Option<String>,
    pub mac: crate::devices::Mac,
    pub event: PhoneEvent,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Unix milliseconds, provbox's clock (phones' clocks are often unset on a bench).
    pub at: u64,
    pub kind: String,
    pub detail: String,
    /// Which box saw it (`store.box_name`), when boxes share a store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    pub at: u64,
    pub text: String,
}

/// What proved a device's address: only these may set it over an earlier proven one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Proof {
    /// provbox's own DHCP lease (valid while the lease registry still holds it).
    Lease,
    /// A verified TLS client certificate naming the MAC.
    ClientCert,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Device {
    /// `00:0e:08:aa:bb:cc`, or `ip:198.18.0.7` until a MAC is known for that address.
    pub key: String,
    pub mac: Option<String>,
    pub ip: Option<IpAddr>,
    /// How `ip` was proven; `None` when only the device's own words (syslog, User-Agent,
    /// a path) placed it there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_proof: Option<Proof>,
    /// When a refused claim was last noted on the timeline (notes are rate-limited).
    #[serde(skip)]
    pub refusal_noted: u64,
    pub model: Option<String>,
    pub vendor_class: Option<String>,
    pub hostname: Option<String>,
    pub user_agent: Option<String>,
    pub state: State,
    /// Why, when `state` is `failed`.
    pub reason: Option<String>,
    pub first_seen: u64,
    pub last_seen: u64,
    pub transfers: u64,
    pub bytes: u64,
    pub events: VecDeque<Event>,
    pub lines: VecDeque<Line>,
    /// The last configuration report's verdict (`crate::devices::verify`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<Verification>,
}

/// `verified`, or `drift` with what differs, as the device's last report showed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verification {
    /// `verified`, `drift` or `unreadable`.
    pub result: String,
    /// `verified (6 parameters)`, `drift: 2 parameters`…
    pub summary: String,
    pub at: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drift: Vec<crate::devices::verify::Drift>,
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn cut(s: &str) -> String {
    if s.len() <= MAX_LINE_LEN {
        return s.to_string();
    }
    let mut end = MAX_LINE_LEN;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Transfer outcomes that mean the device got its file.
pub(crate) fn transfer_ok(outcome: &str) -> bool {
    matches!(outcome, "ok" | "partial" | "not_modified")
}

impl Device {
    pub fn new(key: String, at: u64) -> Device {
        let mac = if key.starts_with("ip:") {
            None
        } else {
            Some(key.clone())
        };
        Device {
            key,
            mac,
            ip: None,
            ip_proof: None,
            refusal_noted: 0,
            model: None,
            vendor_class: None,
            hostname: None,
            user_agent: None,
            state: State::Seen,
            reason: None,
            first_seen: at,
            last_seen: at,
            transfers: 0,
            bytes: 0,
            events: VecDeque::new(),
            lines: VecDeque::new(),
            verification: None,
        }
    }

    pub fn push_event(&mut self, at: u64, kind: &str, detail: impl Into<String>) {
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(Event {
            at,
            kind: kind.to_string(),
            detail: cut(&detail.into()),
            by: crate::store::shared().map(|s| s.box_name().to_string()),
        });
        self.last_seen = self.last_seen.max(at);
    }

    pub fn push_line(&mut self, at: u64, text: &str) {
        if self.lines.len() >= MAX_LINES {
            self.lines.pop_front();
        }
        self.lines.push_back(Line {
            at,
            text: cut(text),
        });
        self.last_seen = self.last_seen.max(at);
    }

    /// A successful transfer: a device that had nothing (or had failed and retries) now has
    /// its configuration; later states are not demoted by periodic resyncs.
    pub fn on_transfer(&mut self, ok: bool) {
        if ok && matches!(self.state, State::Seen | State::Failed) {
            self.state = State::Configured;
            self.reason = None;
        }
    }

    /// The phone's own report decides: success of a resync means provisioned, of an upgrade
    /// means upgraded (it resyncs again after the reboot), a failure carries its reason.
    pub fn on_phone(&mut self, ev: &PhoneEvent) {
        match ev {
            PhoneEvent::Requested { .. } => {}
            PhoneEvent::Succeeded {
                action: Action::Resync,
                ..
            } => {
                self.state = State::Provisioned;
                self.reason = None;
            }
            PhoneEvent::Succeeded {
                action: Action::Upgrade,
                ..
            } => {
                self.state = State::Upgraded;
                self.reason = None;
            }
            PhoneEvent::Failed { action, reason } => {
                self.state = State::Failed;
                let what = match action {
                    Action::Resync => "resync",
                    Action::Upgrade => "upgrade",
                };
                self.reason = Some(cut(&format!("{what}: {reason}")));
            }
        }
    }

    /// Fold an address-only record into this one (its MAC became known).
    pub fn absorb(&mut self, other: Device) {
        self.first_seen = self.first_seen.min(other.first_seen);
        self.last_seen = self.last_seen.max(other.last_seen);
        self.transfers += other.transfers;
        self.bytes += other.bytes;
        self.user_agent = self.user_agent.take().or(other.user_agent);
        if self.ip.is_none() {
            self.ip = other.ip;
            self.ip_proof = other.ip_proof;
        }
        if self.state == State::Seen {
            self.state = other.state;
            self.reason = other.reason;
        }
        let mine = std::mem::take(&mut self.events);
        self.events = merged(
            other.events,
            mine,
            |a, b| a.at.cmp(&b.at),
            false,
            MAX_EVENTS,
        );
        let mine = std::mem::take(&mut self.lines);
        self.lines = merged(other.lines, mine, |a, b| a.at.cmp(&b.at), false, MAX_LINES);
    }

    pub fn last_event(&self) -> Option<&Event> {
        self.events.back()
    }
}

/// Unix milliseconds → `2026-11-26T23:59:01Z` (days-from-civil inverse, no time crate).
pub(crate) fn iso(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = ((secs / 86400) as i64, secs % 86400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(action: Action) -> PhoneEvent {
        PhoneEvent::Succeeded {
            action,
            url: "http://x/y".into(),
            detail: None,
        }
    }

    #[test]
    fn normal_path() {
        let mut d = Device::new("00:0e:08:aa:bb:cc".into(), 1);
        assert_eq!(d.state, State::Seen);
        d.on_transfer(false);
        assert_eq!(d.state, State::Seen, "a 404 is not a configuration");
        d.on_transfer(true);
        assert_eq!(d.state, State::Configured);
        d.on_phone(&ok(Action::Upgrade));
        assert_eq!(d.state, State::Upgraded);
        d.on_phone(&ok(Action::Resync));
        assert_eq!(d.state, State::Provisioned);
        d.on_transfer(true);
        assert_eq!(
            d.state,
            State::Provisioned,
            "periodic resync keeps the state"
        );
    }

    #[test]
    fn failure_carries_reason_and_retry_clears_it() {
        let mut d = Device::new("00:0e:08:aa:bb:cc".into(), 1);
        d.on_phone(&PhoneEvent::Failed {
            action: Action::Resync,
            reason: "parse error".into(),
        });
        assert_eq!(d.state, State::Failed);
        assert_eq!(d.reason.as_deref(), Some("resync: parse error"));
        d.on_transfer(true);
        assert_eq!(d.state, State::Configured);
        assert_eq!(d.reason, None);
    }

    #[test]
    fn history_is_bounded() {
        let mut d = Device::new("ip:198.18.0.9".into(), 1);
        assert_eq!(d.mac, None);
        for i in 0..(MAX_EVENTS as u64 + 50) {
            d.push_event(i, "transfer", "x");
            d.push_line(i, &"y".repeat(5000));
        }
        assert_eq!(d.events.len(), MAX_EVENTS);
        assert_eq!(d.events.front().unwrap().at, 50);
        assert_eq!(d.lines.len(), MAX_LINES);
        assert!(d.lines[0].text.len() <= MAX_LINE_LEN + 4);
    }

    #[test]
    fn absorb_merges_timelines() {
        let mut a = Device::new("00:0e:08:aa:bb:cc".into(), 10);
        a.push_event(20, "resync_ok", "");
        let mut b = Device::new("ip:198.18.0.9".into(), 5);
        b.push_event(6, "transfer", "/a.cfg");
        b.on_transfer(true);
        b.transfers = 1;
        a.absorb(b);
        assert_eq!(a.first_seen, 5);
        assert_eq!(a.transfers, 1);
        assert_eq!(a.state, State::Configured);
        assert_eq!(a.events[0].kind, "transfer");
        assert_eq!(a.events[1].kind, "resync_ok");
    }
}
