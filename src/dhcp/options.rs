//! Option values: typed config entries become the exact bytes sent, once, at start-up.
//!
//! Everything is kept as raw bytes because dhcproto 0.15 types some provisioning options
//! wrongly for phones (150 is a single address there; phones need a list).

use super::config::{OptionEntry, parse_hex};

/// One option as sent: code, payload, and whether it goes out even when not requested.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptValue {
    pub code: u8,
    pub data: Vec<u8>,
    pub force: bool,
}

impl OptValue {
    pub fn new(code: u8, data: Vec<u8>) -> OptValue {
        OptValue {
            code,
            data,
            force: false,
        }
    }
}

/// Codes provbox fills in itself per message; configuring them would be a mistake.
const OWN: &[(u8, &str)] = &[
    (0, "pad"),
    (50, "requested address"),
    (51, "lease time"),
    (52, "option overload"),
    (53, "message type"),
    (54, "server identifier"),
    (55, "parameter request list"),
    (57, "maximum message size"),
    (58, "renewal time"),
    (59, "rebinding time"),
    (61, "client identifier"),
    (82, "relay agent information"),
    (255, "end"),
];

/// Longest payload accepted (RFC 3396 splits anything over 255 bytes into several
/// instances; clients' buffers are the real limit).
const MAX_LEN: usize = 1024;

pub fn from_entry(e: &OptionEntry) -> Result<OptValue, String> {
    let code = e.code.value;
    if let Some((_, what)) = OWN.iter().find(|(c, _)| *c == code) {
        return Err(format!(
            "option {code} ({what}) is set by provbox itself; expected another option code"
        ));
    }
    let data = value(e, &format!("option {code}"))?;
    if data.is_empty() || data.len() > MAX_LEN {
        return Err(format!(
            "option {code} is {} bytes long; expected 1 to {MAX_LEN}",
            data.len()
        ));
    }
    Ok(OptValue {
        code,
        data,
        force: e.force,
    })
}

/// The bytes of an entry's one typed value (`what` names it in errors).
fn value(e: &OptionEntry, what: &str) -> Result<Vec<u8>, String> {
    let mut vals: Vec<Vec<u8>> = Vec::new();
    if let Some(ip) = e.ip {
        vals.push(ip.octets().to_vec());
    }
    if let Some(ips) = &e.ips {
        if ips.is_empty() {
            return Err(format!(
                "{what}: `ips` is empty; expected one or more addresses"
            ));
        }
        vals.push(ips.iter().flat_map(|a| a.octets()).collect());
    }
    if let Some(s) = &e.string {
        vals.push(s.as_bytes().to_vec());
    }
    if let Some(h) = &e.hex {
        vals.push(parse_hex(h).ok_or_else(|| {
            format!("{what}: `{h}` is not hex; expected pairs of hex digits like 01:04:c6:12:00:01")
        })?);
    }
    if let Some(v) = e.v_u8 {
        vals.push(vec![v]);
    }
    if let Some(v) = e.v_u16 {
        vals.push(v.to_be_bytes().to_vec());
    }
    if let Some(v) = e.v_u32 {
        vals.push(v.to_be_bytes().to_vec());
    }
    if let Some(v) = e.v_i32 {
        vals.push(v.to_be_bytes().to_vec());
    }
    if let Some(v) = e.v_bool {
        vals.push(vec![v as u8]);
    }
    if let Some(subs) = &e.suboptions {
        vals.push(suboptions(subs, what)?);
    }
    if vals.len() != 1 {
        return Err(format!(
            "{what} has {} values; expected exactly one of ip, ips, string, hex, u8, u16, u32, i32, bool, suboptions",
            vals.len()
        ));
    }
    Ok(vals.pop().unwrap_or_default())
}

/// Sub-options as TLVs: code, length, value (each value 1 to 255 bytes).
fn suboptions(subs: &[OptionEntry], what: &str) -> Result<Vec<u8>, String> {
    if subs.is_empty() {
        return Err(format!(
            "{what}: `suboptions` is empty; expected one or more {{code, value}}"
        ));
    }
    let mut out = Vec::new();
    for s in subs {
        let code = s.code.value;
        let sw = format!("{what} sub-option {code}");
        if code == 0 || code == 255 {
            return Err(format!(
                "{sw}: codes 0 and 255 are pad and end; expected 1 to 254"
            ));
        }
        if s.force {
            return Err(format!(
                "{sw}: `force` belongs on the option, not its sub-options"
            ));
        }
        if s.suboptions.is_some() {
            return Err(format!(
                "{sw}: sub-options cannot nest; expected a typed value"
            ));
        }
        let v = value(s, &sw)?;
        if v.is_empty() || v.len() > 255 {
            return Err(format!("{sw} is {} bytes long; expected 1 to 255", v.len()));
        }
        out.push(code);
        out.push(v.len() as u8);
        out.extend_from_slice(&v);
    }
    Ok(out)
}

/// Overlay `more` on `base`: same code replaces, new codes are appended in order.
pub fn merge(base: &mut Vec<OptValue>, more: &[OptValue]) {
    for m in more {
        match base.iter_mut().find(|b| b.code == m.code) {
            Some(b) => *b = m.clone(),
            None => base.push(m.clone()),
        }
    }
}

/// The configured options a client gets: those it asked for (in its order), then the
/// forced ones. A client that sends no request list gets all of them.
pub fn select<'a>(configured: &'a [OptValue], prl: Option<&[u8]>) -> Vec<&'a OptValue> {
    let Some(prl) = prl else {
        return configured.iter().collect();
    };
    let mut out: Vec<&OptValue> = prl
        .iter()
        .filter_map(|c| configured.iter().find(|o| o.code == *c))
        .collect();
    for o in configured {
        if o.force && !prl.contains(&o.code) {
            out.push(o);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::confkit::At;

    fn entry(code: u8) -> OptionEntry {
        OptionEntry {
            code: At::new(code),
            ip: None,
            ips: None,
            string: None,
            hex: None,
            v_u8: None,
            v_u16: None,
            v_u32: None,
            v_i32: None,
            v_bool: None,
            suboptions: None,
            force: false,
        }
    }

    #[test]
    fn typed_values_encode_to_wire_bytes() {
        let mut e = entry(150);
        e.ips = Some(vec![
            "198.18.0.1".parse().unwrap(),
            "198.18.0.2".parse().unwrap(),
        ]);
        assert_eq!(from_entry(&e).unwrap().data, [198, 18, 0, 1, 198, 18, 0, 2]);
        let mut e = entry(66);
        e.string = Some("prov.lab.test".into());
        assert_eq!(from_entry(&e).unwrap().data, b"prov.lab.test");
        let mut e = entry(43);
        e.hex = Some("01:04:c6:12:00:01".into());
        assert_eq!(from_entry(&e).unwrap().data, [1, 4, 0xc6, 0x12, 0, 1]);
        let mut e = entry(2);
        e.v_i32 = Some(-3600);
        assert_eq!(from_entry(&e).unwrap().data, (-3600i32).to_be_bytes());
        let mut e = entry(19);
        e.v_bool = Some(true);
        assert_eq!(from_entry(&e).unwrap().data, [1]);
        let mut e = entry(26);
        e.v_u16 = Some(1500);
        assert_eq!(from_entry(&e).unwrap().data, [5, 0xdc]);
        // Vendor data (43) from typed sub-options: code, length, value, in order.
        let mut e = entry(43);
        let mut s1 = entry(1);
        s1.string = Some("http://p/".into());
        let mut s2 = entry(2);
        s2.ip = Some("198.18.0.1".parse().unwrap());
        e.suboptions = Some(vec![s1, s2]);
        let mut want = vec![1, 9];
        want.extend_from_slice(b"http://p/");
        want.extend_from_slice(&[2, 4, 198, 18, 0, 1]);
        assert_eq!(from_entry(&e).unwrap().data, want);
    }

    #[test]
    fn bad_entries_are_refused() {
        assert!(from_entry(&entry(66)).unwrap_err().contains("0 values"));
        let mut e = entry(53);
        e.v_u8 = Some(1);
        assert!(from_entry(&e).unwrap_err().contains("set by provbox"));
        let mut e = entry(43);
        e.hex = Some("zz".into());
        assert!(from_entry(&e).is_err());
        let mut e = entry(66);
        e.string = Some("a".into());
        e.v_u8 = Some(1);
        assert!(from_entry(&e).unwrap_err().contains("2 values"));
        // Sub-options: no value, nested, forced, too long, or a pad code are refused.
        let sub = |f: &dyn Fn(&mut OptionEntry)| {
            let mut e = entry(43);
            let mut s = entry(1);
            s.string = Some("x".into());
            f(&mut s);
            e.suboptions = Some(vec![s]);
            from_entry(&e).unwrap_err()
        };
        assert!(sub(&|s| s.string = None).contains("sub-option 1 has 0 values"));
        assert!(sub(&|s| s.suboptions = Some(vec![])).contains("cannot nest"));
        assert!(sub(&|s| s.force = true).contains("`force` belongs on the option"));
        assert!(sub(&|s| s.string = Some("x".repeat(256))).contains("expected 1 to 255"));
        assert!(sub(&|s| s.code.value = 0).contains("pad and end"));
        let mut e = entry(43);
        e.suboptions = Some(vec![]);
        assert!(from_entry(&e).unwrap_err().contains("is empty"));
    }

    #[test]
    fn selection_follows_request_list_and_force() {
        let mut forced = OptValue::new(150, vec![1, 2, 3, 4]);
        forced.force = true;
        let conf = vec![
            OptValue::new(3, vec![1, 1, 1, 1]),
            OptValue::new(66, b"x".to_vec()),
            forced,
        ];
        let codes = |v: Vec<&OptValue>| v.iter().map(|o| o.code).collect::<Vec<_>>();
        assert_eq!(codes(select(&conf, Some(&[66, 3, 1]))), [66, 3, 150]);
        assert_eq!(codes(select(&conf, None)), [3, 66, 150]);
        let mut base = conf.clone();
        merge(&mut base, &[OptValue::new(66, b"y".to_vec())]);
        assert_eq!(base[1].data, b"y");
        assert_eq!(base.len(), 3);
    }
}
