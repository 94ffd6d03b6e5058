//! Option negotiation (RFC 2347): blksize (RFC 2348), timeout and tsize (RFC 2349),
//! windowsize (RFC 7440). Only options the client sent and the server accepts appear in
//! the OACK; a request whose options are all ignored gets plain DATA, as RFC 1350 wants.

use std::time::Duration;

/// RFC 1350's fixed block size, used when no blksize is negotiated.
pub const DEFAULT_BLKSIZE: u16 = 512;
/// RFC 2348's bounds for blksize.
pub const MIN_BLKSIZE: u16 = 8;
pub const MAX_BLKSIZE: u16 = 65464;

/// What the server allows, from the config.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_blksize: u16,
    pub max_window: u16,
    /// Largest timeout acknowledged; a larger request is left out of the OACK.
    pub max_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    pub blksize: u16,
    pub windowsize: u16,
    /// The client's retransmission timeout, when it asked for one.
    pub timeout: Option<Duration>,
    /// Options to acknowledge, in the client's order, with the values the server uses.
    pub oack: Vec<(String, String)>,
}

impl Negotiated {
    /// Option names that were acknowledged (a metric label each).
    pub fn used(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.oack.iter().filter_map(|(k, _)| match k.as_str() {
            "blksize" => Some("blksize"),
            "tsize" => Some("tsize"),
            "timeout" => Some("timeout"),
            "windowsize" => Some("windowsize"),
            _ => None,
        })
    }
}

/// Decide the transfer parameters. `size` is the number of bytes that will be sent (after
/// netascii conversion), reported as tsize. Out-of-range or unparsable values drop just
/// that option (the RFCs let a server ignore an option); blksize and windowsize above the
/// server's caps are lowered to the caps, which RFC 2348 and 7440 allow.
pub fn negotiate(requested: &[(String, String)], limits: Limits, size: u64) -> Negotiated {
    let mut n = Negotiated {
        blksize: DEFAULT_BLKSIZE,
        windowsize: 1,
        timeout: None,
        oack: Vec::new(),
    };
    let mut seen: Vec<&str> = Vec::new();
    for (name, value) in requested {
        // A repeated option is answered once, from its first occurrence.
        if seen.contains(&name.as_str()) {
            continue;
        }
        seen.push(name);
        let num = value.trim().parse::<u64>().ok();
        let accepted = match (name.as_str(), num) {
            ("blksize", Some(v)) if v >= MIN_BLKSIZE as u64 => {
                n.blksize = v.min(limits.max_blksize as u64) as u16;
                Some(n.blksize.to_string())
            }
            ("windowsize", Some(v)) if v >= 1 => {
                n.windowsize = v.min(limits.max_window as u64) as u16;
                Some(n.windowsize.to_string())
            }
            // RFC 2349: 1..=255 seconds, and the server must not change it. So a value
            // above our cap cannot be lowered, only left unacknowledged: the client then
            // knows the server's default applies (and the slot is not held for minutes).
            ("timeout", Some(v))
                if (1..=255).contains(&v) && Duration::from_secs(v) <= limits.max_timeout =>
            {
                n.timeout = Some(Duration::from_secs(v));
                Some(v.to_string())
            }
            // In a read request the client sends 0 and the server answers the size. Some
            // clients send other text (atftp sends "enable"): the value means nothing here.
            ("tsize", _) => Some(size.to_string()),
            _ => None,
        };
        if let Some(v) = accepted {
            n.oack.push((name.clone(), v));
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Limits = Limits {
        max_blksize: 1468,
        max_window: 64,
        max_timeout: Duration::from_secs(5),
    };

    fn req(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn no_options_no_oack() {
        let n = negotiate(&[], L, 10);
        assert_eq!(n.blksize, 512);
        assert_eq!(n.windowsize, 1);
        assert!(n.oack.is_empty());
    }

    #[test]
    fn only_requested_options_are_acknowledged() {
        let n = negotiate(&req(&[("tsize", "0")]), L, 12345);
        assert_eq!(n.oack, req(&[("tsize", "12345")]));
        assert_eq!(n.blksize, 512);
    }

    #[test]
    fn caps_and_bounds() {
        let n = negotiate(&req(&[("blksize", "100000"), ("windowsize", "1000")]), L, 0);
        assert_eq!(n.blksize, 1468);
        assert_eq!(n.windowsize, 64);
        assert_eq!(n.oack, req(&[("blksize", "1468"), ("windowsize", "64")]));
        let n = negotiate(&req(&[("blksize", "1024")]), L, 0);
        assert_eq!(n.blksize, 1024);
    }

    #[test]
    fn bad_values_drop_the_option() {
        let n = negotiate(
            &req(&[
                ("blksize", "7"),
                ("windowsize", "0"),
                ("timeout", "0"),
                ("timeout", "300"),
                ("blksize", "x"),
                ("multicast", ""),
            ]),
            L,
            9,
        );
        assert!(n.oack.is_empty(), "{:?}", n.oack);
        assert_eq!((n.blksize, n.windowsize, n.timeout), (512, 1, None));
    }

    #[test]
    fn tsize_value_is_ignored() {
        let n = negotiate(&req(&[("tsize", "enable")]), L, 77);
        assert_eq!(n.oack, req(&[("tsize", "77")]));
    }

    #[test]
    fn first_occurrence_wins() {
        let n = negotiate(&req(&[("blksize", "1024"), ("blksize", "800")]), L, 0);
        assert_eq!(n.oack, req(&[("blksize", "1024")]));
    }

    #[test]
    fn a_timeout_above_the_cap_is_left_out_and_the_rest_acknowledged() {
        let n = negotiate(
            &req(&[("blksize", "1024"), ("timeout", "255"), ("tsize", "0")]),
            L,
            42,
        );
        assert_eq!(n.timeout, None);
        assert_eq!(n.oack, req(&[("blksize", "1024"), ("tsize", "42")]));
        let n = negotiate(&req(&[("timeout", "5")]), L, 0);
        assert_eq!(n.timeout, Some(Duration::from_secs(5)));
        assert_eq!(n.oack, req(&[("timeout", "5")]));
    }

    proptest::proptest! {
        /// Whatever is asked, a timeout above the cap is never acknowledged (nor used),
        /// and the cap changes nothing else in the answer.
        #[test]
        fn the_timeout_cap_only_ever_removes_the_timeout(
            asked in proptest::collection::vec(
                (
                    proptest::sample::select(vec!["blksize", "timeout", "tsize", "windowsize", "x"]),
                    0u64..400,
                ),
                0..6,
            ),
            cap in 1u64..=255,
        ) {
            let asked: Vec<(String, String)> =
                asked.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            let capped = Limits { max_timeout: Duration::from_secs(cap), ..L };
            let open = Limits { max_timeout: Duration::from_secs(255), ..L };
            let a = negotiate(&asked, capped, 7);
            let b = negotiate(&asked, open, 7);
            proptest::prop_assert!(a.timeout.is_none_or(|t| t <= Duration::from_secs(cap)));
            for (k, v) in &a.oack {
                if k == "timeout" {
                    proptest::prop_assert!(v.parse::<u64>().unwrap() <= cap);
                }
            }
            let without = |n: &Negotiated| -> Vec<(String, String)> {
                n.oack.iter().filter(|(k, _)| k != "timeout").cloned().collect()
            };
            proptest::prop_assert_eq!(without(&a), without(&b));
            proptest::prop_assert_eq!((a.blksize, a.windowsize), (b.blksize, b.windowsize));
        }
    }

    #[test]
    fn timeout_is_kept_as_asked() {
        let n = negotiate(&req(&[("timeout", "3")]), L, 0);
        assert_eq!(n.timeout, Some(Duration::from_secs(3)));
        assert_eq!(n.used().collect::<Vec<_>>(), vec!["timeout"]);
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    fn name() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("blksize".to_string()),
            Just("tsize".to_string()),
            Just("timeout".to_string()),
            Just("windowsize".to_string()),
            "[a-z]{1,8}",
        ]
    }

    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            (0u32..70_000).prop_map(|n| n.to_string()),
            "[0-9a-z -]{0,8}",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Whatever a client asks, the transfer stays inside the server's limits and the
        /// OACK names only options the client sent, once each.
        #[test]
        fn negotiation_stays_inside_the_limits(
            asked in proptest::collection::vec((name(), value()), 0..8),
            max_blksize in MIN_BLKSIZE..=MAX_BLKSIZE,
            max_window in 1u16..64,
            size in any::<u32>(),
        ) {
            let limits = Limits {
                max_blksize,
                max_window,
                max_timeout: Duration::from_secs(5),
            };
            let n = negotiate(&asked, limits, u64::from(size));
            if n.oack.iter().any(|(k, _)| k == "blksize") {
                prop_assert!((MIN_BLKSIZE..=max_blksize).contains(&n.blksize));
            } else {
                prop_assert_eq!(n.blksize, DEFAULT_BLKSIZE);
            }
            prop_assert!((1..=max_window).contains(&n.windowsize));
            let mut seen = Vec::new();
            for (k, v) in &n.oack {
                prop_assert!(asked.iter().any(|(a, _)| a == k), "unasked {}", k);
                prop_assert!(!seen.contains(k), "{} twice", k);
                seen.push(k.clone());
                match k.as_str() {
                    "blksize" => prop_assert_eq!(v, &n.blksize.to_string()),
                    "windowsize" => prop_assert_eq!(v, &n.windowsize.to_string()),
                    "tsize" => prop_assert_eq!(v, &size.to_string()),
                    _ => {}
                }
            }
            prop_assert_eq!(n.used().count(), n.oack.len());
        }
    }
}
