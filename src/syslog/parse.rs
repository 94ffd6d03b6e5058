//! Syslog framing (RFC 5424, RFC 3164 and what phones really send) and recognition of the
//! phones' provisioning lines. Pure functions, tested without sockets.

use crate::devices::Mac;
use crate::status::{Action, PhoneEvent, PhoneReport};
use crate::vendors::{self, Job, Outcome};

/// One syslog message with the header taken apart as far as it goes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    pub pri: Option<u8>,
    pub hostname: Option<String>,
    pub app: Option<String>,
    /// The free text (for 3164 everything after the header that could be recognised).
    pub msg: String,
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

fn split_token(s: &str) -> (&str, &str) {
    match s.find(' ') {
        Some(i) => (&s[..i], &s[i + 1..]),
        None => (s, ""),
    }
}

/// `<PRI>` at the start, if well formed (1–3 digits, ≤ 191).
fn take_pri(s: &str) -> (Option<u8>, &str) {
    if let Some(rest) = s.strip_prefix('<')
        && let Some(end) = rest.find('>')
        && (1..=3).contains(&end)
        && let Ok(p) = rest[..end].parse::<u8>()
        && p <= 191
    {
        return (Some(p), &rest[end + 1..]);
    }
    (None, s)
}

/// RFC 5424 structured data: `-` or one or more `[...]` with `\]` escapes inside.
fn skip_sd(s: &str) -> Option<&str> {
    if let Some(r) = s.strip_prefix('-') {
        return Some(r);
    }
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() && b[i] == b'[' {
        let mut esc = false;
        i += 1;
        loop {
            let c = *b.get(i)?;
            i += 1;
            match c {
                b'\\' if !esc => esc = true,
                b']' if !esc => break,
                _ => esc = false,
            }
        }
    }
    if i == 0 { None } else { Some(&s[i..]) }
}

fn nil(s: &str) -> Option<String> {
    (s != "-" && !s.is_empty()).then(|| s.to_string())
}

fn parse_5424(s: &str) -> Option<(Option<String>, Option<String>, String)> {
    let rest = s.strip_prefix("1 ")?;
    let (_ts, rest) = split_token(rest);
    let (host, rest) = split_token(rest);
    let (app, rest) = split_token(rest);
    let (_procid, rest) = split_token(rest);
    let (_msgid, rest) = split_token(rest);
    let rest = skip_sd(rest)?;
    let msg = rest.strip_prefix(' ').unwrap_or(rest);
    let msg = msg.strip_prefix('\u{feff}').unwrap_or(msg);
    Some((nil(host), nil(app), msg.to_string()))
}

/// `Mmm dd hh:mm:ss ` (day space-padded), as RFC 3164 says.
fn take_3164_time(s: &str) -> Option<&str> {
    let month = s.get(..3)?;
    if !MONTHS.contains(&month) || s.as_bytes().get(3) != Some(&b' ') {
        return None;
    }
    let rest = s[4..].trim_start();
    let (day, rest) = split_token(rest);
    day.parse::<u8>().ok()?;
    let (time, rest) = split_token(rest);
    let t: Vec<&str> = time.split(':').collect();
    if t.len() != 3 || t.iter().any(|p| p.parse::<u8>().is_err()) {
        return None;
    }
    Some(rest)
}

/// A 3164 TAG: letters, digits, `-_./`, optional `[pid]`, then `:`.
fn take_tag(s: &str) -> Option<(String, &str)> {
    let (tok, rest) = split_token(s);
    let name = tok.strip_suffix(':')?;
    let base = name.split('[').next().unwrap_or(name);
    if base.is_empty()
        || !base
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
    {
        return None;
    }
    Some((base.to_string(), rest))
}

/// Take one datagram (or TCP frame) apart. Never fails: what cannot be parsed is message.
pub fn parse(line: &str) -> Message {
    let line = line.trim_end_matches(['\r', '\n', '\0']);
    let (pri, rest) = take_pri(line);
    if let Some((hostname, app, msg)) = parse_5424(rest) {
        return Message {
            pri,
            hostname,
            app,
            msg,
        };
    }
    // RFC 3164: the timestamp makes the header; a hostname follows it. Without the
    // timestamp (many phones), the whole rest is the message.
    let mut out = Message {
        pri,
        ..Default::default()
    };
    let mut rest = rest;
    if let Some(r) = take_3164_time(rest) {
        let (host, r2) = split_token(r);
        // Some senders put the tag right after the time, with no hostname.
        if host.ends_with(':') {
            rest = r;
        } else {
            out.hostname = nil(host);
            rest = r2;
        }
    }
    if let Some((tag, r)) = take_tag(rest) {
        out.app = Some(tag);
        rest = r;
    }
    out.msg = rest.trim_start().to_string();
    out
}

/// The event kind a vendor phrase reports (`vendors` has no dependency on `status`).
fn action(job: Job) -> Action {
    match job {
        Job::Resync => Action::Resync,
        Job::Upgrade => Action::Upgrade,
    }
}

/// A separator between `$MAC` and the phrase, or before `$ERR`: `--`, `–` (U+2013), `–-`,
/// `—`, `-`, in any mix.
fn is_dash_token(t: &str) -> bool {
    !t.is_empty() && t.chars().all(|c| matches!(c, '-' | '–' | '—'))
}

/// Split `URL [dash ERR]` after a success or request phrase.
fn url_and_detail(s: &str) -> (String, Option<String>) {
    let s = s.trim();
    let (url, rest) = split_token(s);
    let rest = rest.trim_start();
    let (dash, tail) = split_token(rest);
    let detail = if is_dash_token(dash) {
        Some(tail.trim().to_string())
    } else if rest.is_empty() {
        None
    } else {
        Some(rest.to_string())
    };
    (url.to_string(), detail.filter(|d| !d.is_empty()))
}

/// Recognise `$PN $MAC -- Requesting resync $URL`, `… Successful resync $URL [-- $ERR]`,
/// `… Resync failed: $ERR` and the same for upgrade, anywhere in the message: the
/// phrases of every vendor's table, the earliest in the line winning.
pub fn recognise(msg: &str) -> Option<PhoneReport> {
    let lower = msg.to_ascii_lowercase();
    // Lowercasing ASCII keeps byte offsets, so indexes into `lower` are valid in `msg`.
    // The phrases come from every vendor's table (`vendors::*::VENDOR.syslog`).
    let (at, p) = vendors::phrases()
        .filter_map(|p| lower.find(p.text).map(|i| (i, p)))
        .min_by_key(|(i, _)| *i)?;
    let (phrase, action) = (p.text, action(p.job));
    let before: Vec<&str> = msg[..at].split_whitespace().collect();
    let after = &msg[at + phrase.len()..];
    let mut toks = before.into_iter().rev().peekable();
    while toks.peek().is_some_and(|t| is_dash_token(t)) {
        toks.next();
    }
    let mac_tok = toks.next()?;
    let mac = mac_tok.parse::<Mac>().ok()?;
    let model = toks
        .next()
        .filter(|t| !t.ends_with(':'))
        .map(str::to_string);
    let event = match p.outcome {
        Outcome::Requested => PhoneEvent::Requested {
            action,
            url: url_and_detail(after).0,
        },
        Outcome::Succeeded => {
            let (url, detail) = url_and_detail(after);
            PhoneEvent::Succeeded {
                action,
                url,
                detail,
            }
        }
        Outcome::Failed => {
            let reason = after.trim_start_matches([':', ' ']).trim();
            PhoneEvent::Failed {
                action,
                reason: if reason.is_empty() {
                    "no reason given".into()
                } else {
                    reason.to_string()
                },
            }
        }
    };
    Some(PhoneReport { model, mac, event })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac() -> Mac {
        "00:0e:08:aa:bb:cc".parse().unwrap()
    }

    #[test]
    fn framing_5424() {
        let m = parse(
            "<134>1 2026-11-26T23:59:01.123Z spa504g provision 42 ID47 [ex@32473 a=\"x\\]y\"] \u{feff}SPA504G 000e08aabbcc -- Requesting resync http://198.18.0.1/spa.cfg",
        );
        assert_eq!(m.pri, Some(134));
        assert_eq!(m.hostname.as_deref(), Some("spa504g"));
        assert_eq!(m.app.as_deref(), Some("provision"));
        assert_eq!(
            m.msg,
            "SPA504G 000e08aabbcc -- Requesting resync http://198.18.0.1/spa.cfg"
        );
        let m = parse("<13>1 - - - - - - hello");
        assert_eq!(m.hostname, None);
        assert_eq!(m.msg, "hello");
    }

    #[test]
    fn framing_3164() {
        let m = parse("<13>Nov  6 23:59:01 bench-host SPA504G: 000e08aabbcc -- x\n");
        assert_eq!(m.pri, Some(13));
        assert_eq!(m.hostname.as_deref(), Some("bench-host"));
        assert_eq!(m.app.as_deref(), Some("SPA504G"));
        assert_eq!(m.msg, "000e08aabbcc -- x");
        // logger --rfc3164 with a tag carrying a pid
        let m = parse("<13>Nov 26 23:59:01 host provbox-test[123]: hello world");
        assert_eq!(m.app.as_deref(), Some("provbox-test"));
        assert_eq!(m.msg, "hello world");
        // What many phones send: PRI and text, nothing else.
        let m = parse("<134>SPA504G 000e08aabbcc -- Resync failed: timeout");
        assert_eq!(m.hostname, None);
        assert_eq!(m.msg, "SPA504G 000e08aabbcc -- Resync failed: timeout");
        // No PRI at all, and a bogus one.
        assert_eq!(parse("plain text").msg, "plain text");
        assert_eq!(parse("<999>x").msg, "<999>x");
        assert_eq!(parse("").msg, "");
    }

    fn rec(s: &str) -> PhoneReport {
        recognise(s).unwrap_or_else(|| panic!("not recognised: {s}"))
    }

    /// The event a success line must give.
    fn succeeded(action: Action, url: &str, detail: Option<&str>) -> PhoneEvent {
        PhoneEvent::Succeeded {
            action,
            url: url.into(),
            detail: detail.map(Into::into),
        }
    }

    /// The event a failure line must give.
    fn failed(action: Action, reason: &str) -> PhoneEvent {
        PhoneEvent::Failed {
            action,
            reason: reason.into(),
        }
    }

    #[test]
    fn requesting_resync_every_dash_with_and_without_port() {
        for dash in ["--", "–", "–-", "-", "—"] {
            for url in [
                "http://198.18.0.1/spa504g.cfg",
                "https://198.18.0.1:8443/spa504g.cfg",
                "tftp://198.18.0.1:69/spa504g.cfg",
            ] {
                let r = rec(&format!(
                    "SPA504G 000e08aabbcc {dash} Requesting resync {url}"
                ));
                assert_eq!(r.mac, mac());
                assert_eq!(r.model.as_deref(), Some("SPA504G"));
                assert_eq!(
                    r.event,
                    PhoneEvent::Requested {
                        action: Action::Resync,
                        url: url.into()
                    },
                    "{dash} {url}"
                );
            }
        }
    }

    #[test]
    fn successful_resync_with_and_without_err() {
        let r = rec("SPA504G 000e08aabbcc – Successful resync http://198.18.0.1/spa504g.cfg");
        let url = "http://198.18.0.1/spa504g.cfg";
        assert_eq!(r.event, succeeded(Action::Resync, url, None));
        let r = rec("SPA504G 000e08aabbcc –- Successful resync http://198.18.0.1:8080/a.cfg -- ");
        assert_eq!(r.event.kind(), "resync_ok");
        let r = rec("SPA504G 00:0e:08:AA:BB:CC -- Successful resync http://h/a.cfg -- cached");
        assert_eq!(r.mac, mac());
        let ok = succeeded(Action::Resync, "http://h/a.cfg", Some("cached"));
        assert_eq!(r.event, ok);
    }

    #[test]
    fn failures_keep_the_reason() {
        let r = rec("CP-8841-3PCC 0004f2aabbcc -- Resync failed: HTTP 404 Not Found");
        assert_eq!(r.model.as_deref(), Some("CP-8841-3PCC"));
        assert_eq!(r.event, failed(Action::Resync, "HTTP 404 Not Found"));
        let r = rec("SPA504G 000e08aabbcc – Upgrade failed: image corrupt");
        assert_eq!(r.event, failed(Action::Upgrade, "image corrupt"));
        let r = rec("SPA504G 000e08aabbcc -- Resync failed");
        assert_eq!(r.event.detail(), "no reason given");
    }

    #[test]
    fn upgrade_lines() {
        let r = rec("SPA504G 000e08aabbcc -- Requesting upgrade tftp://198.18.0.1/fw.bin");
        assert_eq!(r.event.kind(), "upgrade_requested");
        let r =
            rec("SPA504G 000e08aabbcc –- Successful upgrade http://198.18.0.1:80/fw.bin -- 7.6.2");
        let url = "http://198.18.0.1:80/fw.bin";
        assert_eq!(r.event, succeeded(Action::Upgrade, url, Some("7.6.2")));
    }

    #[test]
    fn inside_a_full_frame_and_without_model() {
        let m = parse("<13>Nov 26 23:59:01 host phone: 000e08aabbcc -- Resync failed: bad xml");
        let r = rec(&m.msg);
        assert_eq!(r.model, None, "the tag is not the model");
        assert_eq!(r.event.detail(), "bad xml");
        // lowercase phrase, extra spaces
        let r = rec("SPA504G   000e08aabbcc   --   successful resync   http://h/a.cfg");
        assert_eq!(r.event.kind(), "resync_ok");
    }

    #[test]
    fn not_provisioning_lines() {
        assert!(recognise("Registration succeeded for 1001").is_none());
        assert!(
            recognise("Requesting resync http://h/a.cfg").is_none(),
            "no MAC"
        );
        assert!(recognise("SPA504G notamac -- Requesting resync http://h").is_none());
        assert!(recognise("").is_none());
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    fn token() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9._-]{1,16}"
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// An RFC 5424 line gives back its priority, host, app and message.
        #[test]
        fn rfc5424_fields_come_back(pri in 0u8..=191, host in token(), app in token(), msg in "[^\r\n\u{0}]{0,60}") {
            prop_assume!(host != "-" && app != "-" && !msg.starts_with('\u{feff}'));
            let line = format!("<{pri}>1 2026-01-01T00:00:00Z {host} {app} 12 - - {msg}\n");
            let m = parse(&line);
            prop_assert_eq!(m.pri, Some(pri));
            prop_assert_eq!(m.hostname, Some(host));
            prop_assert_eq!(m.app, Some(app));
            prop_assert_eq!(m.msg, msg.trim_end_matches(['\r', '\n', '\0']).to_string());
        }

        /// Any text: a message that is part of the line, a priority ≤ 191, fields without
        /// spaces, and the report recogniser never panics on it.
        #[test]
        fn any_line_parses(line in "\\PC{0,80}") {
            let m = parse(&line);
            prop_assert!(m.pri.is_none_or(|p| p <= 191));
            prop_assert!(line.contains(m.msg.as_str()));
            for f in [&m.hostname, &m.app].into_iter().flatten() {
                prop_assert!(!f.is_empty() && !f.contains(' '));
            }
            let _ = recognise(&m.msg);
        }
    }
}
