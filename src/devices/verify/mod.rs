//! Configuration verification: did the phone really apply what it was sent?
//!
//! The device layer remembers the last profile it rendered for each device ([`Served`]:
//! only the last one, size-capped, for a bounded number of devices). When the phone tells
//! what it runs (a Cisco/SPA report at `reports.path` after a SIP NOTIFY `Event: report`;
//! a Polycom or Yealink upload of its active configuration), [`compare`] puts the two side
//! by side by parameter name: every parameter the phone reports that the profile set must
//! have the value the profile gave it. Parameters the phone does not report (and ones it
//! masks, `*****` passwords) are not judged. The result moves the device to `verified` or
//! `drift: <n> parameters` on its timeline, the dashboard, the hooks and
//! `provbox_devices_verification{result}`.
//!
//! Three formats: Cisco flat-profile XML (`<Name ua="na">value</Name>`), Polycom XML with
//! parameters as attributes (`<reg reg.1.address="1001"/>`), Yealink `key = value` lines.

pub(crate) mod parse;

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::confkit::{At, Problems};
use crate::devices::Mac;

/// A profile larger than this is not remembered (phones' profiles are a few KiB).
pub(crate) const MAX_PROFILE: usize = 256 * 1024;
/// Devices whose last profile is remembered; beyond it the oldest is forgotten.
pub(crate) const MAX_DEVICES: usize = 10_000;
/// Drifted parameters kept (and shown) per verdict.
pub(crate) const MAX_LISTED: usize = 50;

/// `devices.reports`: where Cisco/SPA phones send their configuration report (`Report_Rule`).
#[derive(Debug, Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The path a report is POSTed or PUT to, with `$MA` for the phone's MAC (12 hex
    /// digits), e.g. `/report/$MA.xml`. Unset: reports are not taken.
    #[serde(default)]
    pub path: Option<At<String>>,
}

impl Config {
    pub fn validate(&self, p: &mut Problems) {
        if let Some(path) = &self.path
            && (!path.starts_with('/') || path.matches("$MA").count() != 1)
        {
            p.add(
                "devices.reports.path",
                path,
                format!(
                    "`{}` is not a report path; expected one starting with / and naming $MA once, e.g. /report/$MA.xml",
                    path.value
                ),
            );
        }
    }

    /// The MAC a request path names, when it is a report path.
    pub fn mac_of(&self, path: &str) -> Option<Mac> {
        let pattern = self.path.as_ref()?;
        let (pre, post) = pattern.split_once("$MA")?;
        let mid = path.strip_prefix(pre)?.strip_suffix(post)?;
        if mid.len() != 12 {
            return None;
        }
        mid.parse().ok()
    }
}

/// One parameter whose reported value is not the one served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drift {
    pub name: String,
    pub expected: String,
    pub reported: String,
}

/// What a comparison found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every parameter both name has the served value; `checked` of them.
    Verified { checked: usize },
    /// `count` parameters differ (the first [`MAX_LISTED`] are listed).
    Drift {
        checked: usize,
        count: usize,
        params: Vec<Drift>,
    },
    /// One side could not be read, or they share no parameter.
    Unreadable(String),
}

impl Verdict {
    /// `verified`, `drift: 2 parameters`, or why it could not be judged.
    pub fn summary(&self) -> String {
        match self {
            Verdict::Verified { checked } => format!("verified ({checked} parameters)"),
            Verdict::Drift { count, .. } => format!(
                "drift: {count} parameter{}",
                if *count == 1 { "" } else { "s" }
            ),
            Verdict::Unreadable(why) => format!("not verified: {why}"),
        }
    }

    /// The metric and hook label.
    pub fn result(&self) -> &'static str {
        match self {
            Verdict::Verified { .. } => "verified",
            Verdict::Drift { .. } => "drift",
            Verdict::Unreadable(_) => "unreadable",
        }
    }
}

/// Which format a vendor writes; an unknown vendor is told by the content.
fn format_of(vendor: &str, text: &str) -> parse::Format {
    match vendor.to_ascii_lowercase().as_str() {
        "cisco" | "spa" | "linksys" => parse::Format::CiscoFlat,
        "polycom" => parse::Format::PolycomXml,
        "yealink" => parse::Format::KeyValue,
        _ => parse::sniff(text),
    }
}

/// A reported value that hides the real one (a password shown as `*****`).
fn masked(v: &str) -> bool {
    !v.is_empty() && v.chars().all(|c| c == '*')
}

/// Compare what was `served` with what the phone `reported`, both in `vendor`'s format:
/// parameters named by both are compared (white space around values ignored).
pub(crate) fn compare(vendor: &str, served: &[u8], reported: &[u8]) -> Verdict {
    let served = String::from_utf8_lossy(served);
    let reported = String::from_utf8_lossy(reported);
    let (s, r) = match (
        parse::parse(format_of(vendor, &served), &served),
        parse::parse(format_of(vendor, &reported), &reported),
    ) {
        (Ok(s), Ok(r)) => (s, r),
        (Err(e), _) => return Verdict::Unreadable(format!("the served profile: {e}")),
        (_, Err(e)) => return Verdict::Unreadable(format!("the report: {e}")),
    };
    let mut checked = 0;
    let mut params = Vec::new();
    let mut count = 0;
    for (name, want) in &s {
        let Some(got) = r.get(name) else { continue };
        if masked(got.trim()) {
            continue;
        }
        checked += 1;
        if want.trim() != got.trim() {
            count += 1;
            if params.len() < MAX_LISTED {
                params.push(Drift {
                    name: name.clone(),
                    expected: want.trim().to_string(),
                    reported: got.trim().to_string(),
                });
            }
        }
    }
    if checked == 0 {
        return Verdict::Unreadable("the report names none of the served parameters".into());
    }
    if count == 0 {
        Verdict::Verified { checked }
    } else {
        Verdict::Drift {
            checked,
            count,
            params,
        }
    }
}

/// The last profile rendered for a device.
#[derive(Debug, Clone)]
pub struct Remembered {
    /// The catalog key it was served as.
    pub key: String,
    pub body: Bytes,
    /// Its order among remembered profiles (the oldest is forgotten first).
    seq: u64,
}

/// The last rendered profile per device, bounded ([`MAX_PROFILE`], [`MAX_DEVICES`]).
#[derive(Default)]
pub struct Served {
    inner: Mutex<(HashMap<Mac, Remembered>, u64)>,
}

impl Served {
    /// Remember `body` as what `mac` was last served (`key`). A profile over the cap is
    /// not kept, and the previous one is dropped (it is no longer the last).
    pub fn remember(&self, mac: Mac, key: &str, body: &Bytes) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if body.len() > MAX_PROFILE {
            g.0.remove(&mac);
            return;
        }
        g.1 += 1;
        let seq = g.1;
        if !g.0.contains_key(&mac)
            && g.0.len() >= MAX_DEVICES
            && let Some(old) = g.0.iter().min_by_key(|(_, r)| r.seq).map(|(m, _)| *m)
        {
            g.0.remove(&old);
        }
        g.0.insert(
            mac,
            Remembered {
                key: key.to_string(),
                body: body.clone(),
                seq,
            },
        );
    }

    pub fn last(&self, mac: Mac) -> Option<Remembered> {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.0.get(&mac).cloned()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().unwrap().0.len()
    }
}

/// Each device's latest verdict: what `provbox_devices_verification{result}` counts.
#[derive(Default)]
pub(crate) struct Results {
    by: Mutex<BTreeMap<Mac, &'static str>>,
}

impl Results {
    /// Record `mac`'s verdict; the counts per result afterwards.
    pub(crate) fn set(&self, mac: Mac, result: &'static str) -> BTreeMap<&'static str, i64> {
        let mut g = self.by.lock().unwrap_or_else(|e| e.into_inner());
        if g.len() >= MAX_DEVICES && !g.contains_key(&mac) {
            // Bounded like `Served`: the lowest MAC goes (any one would do).
            if let Some(first) = g.keys().next().copied() {
                g.remove(&first);
            }
        }
        g.insert(mac, result);
        let mut counts: BTreeMap<&'static str, i64> =
            ["verified", "drift", "unreadable"].map(|r| (r, 0)).into();
        for r in g.values() {
            *counts.entry(r).or_default() += 1;
        }
        counts
    }
}

#[cfg(test)]
mod tests;
