//! A cache of encoded answers for the common case, so repeated queries for local names
//! skip hickory's parse/build/encode: a phone fleet asks the same few questions over and
//! over. The key is the query itself minus its ID (flags, question, EDNS options), so an
//! answer is replayed only for a byte-identical question. Entries are filled by the normal
//! path: for a multi-address answer, one variant per rotation is collected before the
//! cache serves it, and replays cycle through them, so answers keep rotating. A change of
//! any health state (a global epoch) or a reload (a new `ZoneData`, a new cache) retires
//! every entry. Lease names and forwarded answers are never cached.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

/// Bumped whenever any address changes health: cached answers from before are stale.
pub(super) static HEALTH_EPOCH: AtomicU64 = AtomicU64::new(0);

pub(super) fn current_epoch() -> u64 {
    HEALTH_EPOCH.load(Ordering::Acquire)
}

/// Bounded so random names (each a cached NXDOMAIN or REFUSED) cannot grow memory.
const MAX_ENTRIES: usize = 4096;

struct Entry {
    epoch: u64,
    /// Encoded answers (ID bytes left as they were), one per rotation.
    variants: Vec<Vec<u8>>,
    /// How many distinct variants make the set complete.
    period: usize,
    next: AtomicUsize,
}

#[derive(Default)]
pub(super) struct Cache {
    map: RwLock<HashMap<Vec<u8>, Arc<Entry>>>,
}

/// What a replayed answer reports to metrics.
pub(super) struct Replay {
    pub bytes: Vec<u8>,
    pub qtype: u16,
    pub rcode: u8,
}

/// The cache key of a query in the plain shape the cache handles (one IN question, no
/// answers or authority, at most an option-less EDNS OPT record), with its qtype. Anything
/// else (and anything odd) returns `None` and takes the normal path.
pub(super) fn key(pkt: &[u8], tcp: bool) -> Option<(Vec<u8>, u16)> {
    if pkt.len() < 17 || pkt[2] & 0x80 != 0 || (pkt[2] >> 3) & 0x0f != 0 {
        return None;
    }
    let count = |i: usize| u16::from_be_bytes([pkt[i], pkt[i + 1]]);
    if count(4) != 1 || count(6) != 0 || count(8) != 0 || count(10) > 1 {
        return None;
    }
    let mut i = 12;
    loop {
        let len = *pkt.get(i)? as usize;
        if len == 0 {
            i += 1;
            break;
        }
        // Compression pointers and over-long labels are for the real parser to judge.
        if len > 63 || i - 12 + len > 254 {
            return None;
        }
        i += 1 + len;
    }
    let qtype = u16::from_be_bytes([*pkt.get(i)?, *pkt.get(i + 1)?]);
    if u16::from_be_bytes([*pkt.get(i + 2)?, *pkt.get(i + 3)?]) != 1 {
        return None;
    }
    i += 4;
    if count(10) == 1 {
        // Root owner, type OPT, any payload size, extended rcode 0, version 0, no options.
        let opt = pkt.get(i..i + 11)?;
        if opt[0] != 0 || opt[1..3] != [0, 41] || opt[5] != 0 || opt[6] != 0 || opt[9..11] != [0, 0]
        {
            return None;
        }
        i += 11;
    }
    if i != pkt.len() {
        return None;
    }
    let mut k = Vec::with_capacity(pkt.len() - 1);
    k.push(tcp as u8);
    k.extend_from_slice(&pkt[2..]);
    Some((k, qtype))
}

impl Cache {
    /// The cached answer for `key`, with the query's ID, if the set is complete and fresh.
    pub(super) fn answer(&self, key: &[u8], id: [u8; 2]) -> Option<Replay> {
        let entry = self
            .map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()?;
        if entry.epoch != HEALTH_EPOCH.load(Ordering::Acquire)
            || entry.variants.len() < entry.period
        {
            return None;
        }
        let n = entry.next.fetch_add(1, Ordering::Relaxed) % entry.variants.len();
        let mut bytes = entry.variants[n].clone();
        bytes[0..2].copy_from_slice(&id);
        let qtype = key_qtype(key);
        Some(Replay {
            rcode: bytes[3] & 0x0f,
            bytes,
            qtype,
        })
    }

    /// Remember an answer the normal path produced for `key`, given the health epoch read
    /// before it was made (an answer made across a health change is not kept). Truncated
    /// answers are not kept either (the client retries over TCP, which has its own key).
    pub(super) fn learn(&self, key: Vec<u8>, qtype: u16, answer: &[u8], epoch: u64) {
        if answer.len() < 12 || answer[2] & 0x02 != 0 || epoch != current_epoch() {
            return;
        }
        // A and AAAA answers rotate: one variant per order of their addresses (an alias's
        // CNAME records come first and do not rotate).
        let period = if qtype == 1 || qtype == 28 {
            match answers_of_type(answer, qtype) {
                Some(n) => n.max(1),
                None => return,
            }
        } else {
            1
        };
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        let mut variants = match map.get(&key) {
            Some(e) if e.epoch == epoch && e.period == period => {
                if e.variants.len() >= period || e.variants.iter().any(|v| v[2..] == answer[2..]) {
                    return;
                }
                e.variants.clone()
            }
            Some(_) => Vec::new(),
            None => {
                if map.len() >= MAX_ENTRIES {
                    // Full (a scan of names, or stale epochs piling up): start over rather
                    // than stop learning until the next reload.
                    map.clear();
                }
                Vec::new()
            }
        };
        variants.push(answer.to_vec());
        map.insert(
            key,
            Arc::new(Entry {
                epoch,
                variants,
                period,
                next: AtomicUsize::new(0),
            }),
        );
    }
}

/// How many records of `qtype` the answer section of an encoded answer holds; `None` when
/// it does not parse (then it is not cached).
fn answers_of_type(answer: &[u8], qtype: u16) -> Option<usize> {
    let count = |i: usize| u16::from_be_bytes([answer[i], answer[i + 1]]) as usize;
    let (qdcount, ancount) = (count(4), count(6));
    // A name: labels ending in a zero byte or in a compression pointer.
    let skip_name = |mut i: usize| -> Option<usize> {
        loop {
            let len = *answer.get(i)?;
            if len & 0xc0 == 0xc0 {
                return Some(i + 2);
            }
            i += 1 + len as usize;
            if len == 0 {
                return Some(i);
            }
        }
    };
    let mut i = 12;
    for _ in 0..qdcount {
        i = skip_name(i)? + 4;
    }
    let mut n = 0;
    for _ in 0..ancount {
        i = skip_name(i)?;
        let fixed = answer.get(i..i + 10)?;
        if u16::from_be_bytes([fixed[0], fixed[1]]) == qtype {
            n += 1;
        }
        i += 10 + u16::from_be_bytes([fixed[8], fixed[9]]) as usize;
    }
    (i <= answer.len()).then_some(n)
}

/// The qtype inside a key (after the transport byte, header rest and question name).
fn key_qtype(key: &[u8]) -> u16 {
    let mut i = 11; // 1 transport byte + 10 header bytes after the ID
    while let Some(&len) = key.get(i) {
        if len == 0 {
            i += 1;
            break;
        }
        i += 1 + len as usize;
    }
    key.get(i..i + 2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &str, qtype: u16, edns: bool) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, edns as u8];
        for label in name.split('.') {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&[0, 1]);
        if edns {
            q.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
        }
        q
    }

    /// An answer with no question and `ancount` A records (owner: the root), the first
    /// one's address ending in `tail`: different tails are different rotations.
    fn answer(id: [u8; 2], ancount: u16, tail: u8) -> Vec<u8> {
        let mut a = vec![id[0], id[1], 0x85, 0x00, 0, 0];
        a.extend_from_slice(&ancount.to_be_bytes());
        a.extend_from_slice(&[0, 0, 0, 0]);
        if ancount == 0 {
            a.push(tail);
        }
        for i in 0..ancount as u8 {
            a.extend_from_slice(&[0, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 0, 0]);
            a.push(tail.wrapping_add(i));
        }
        a
    }

    #[test]
    fn a_full_cache_starts_over_and_keeps_learning() {
        let cache = Cache::default();
        // Other tests move the global health epoch concurrently; `learn` ignores an answer
        // made across a move, so retry until it is in.
        let learn = |name: &str| {
            let (k, t) = key(&query(name, 16, false), false).unwrap();
            for _ in 0..100 {
                cache.learn(k.clone(), t, &answer([0, 0], 0, 1), current_epoch());
                if cache.map.read().unwrap().contains_key(&k) {
                    return;
                }
            }
            panic!("{name} never learned");
        };
        for i in 0..MAX_ENTRIES {
            learn(&format!("n{i}.lab.test"));
        }
        assert_eq!(cache.map.read().unwrap().len(), MAX_ENTRIES);
        learn("late.lab.test");
        assert_eq!(cache.map.read().unwrap().len(), 1, "started over");
    }

    #[test]
    fn plain_queries_have_keys_odd_ones_do_not() {
        let (k, t) = key(&query("prov.lab.test", 1, true), false).unwrap();
        assert_eq!(t, 1);
        assert_eq!(key_qtype(&k), 1);
        assert!(key(&query("prov.lab.test", 28, false), true).is_some());
        let mut resp = query("prov.lab.test", 1, false);
        resp[2] |= 0x80;
        assert!(key(&resp, false).is_none(), "a response");
        let mut two = query("prov.lab.test", 1, false);
        two[5] = 2;
        assert!(key(&two, false).is_none(), "two questions");
        let mut ptr = query("prov.lab.test", 1, false);
        ptr[12] = 0xc0;
        assert!(key(&ptr, false).is_none(), "compression pointer");
        let mut trailing = query("prov.lab.test", 1, false);
        trailing.push(0);
        assert!(key(&trailing, false).is_none(), "trailing bytes");
        assert!(key(&query("prov.lab.test", 1, false)[..15], false).is_none());
    }

    #[test]
    fn serves_only_complete_rotation_sets_and_cycles_them() {
        let cache = Cache::default();
        let (k, t) = key(&query("prov.lab.test", 1, false), false).unwrap();
        cache.learn(k.clone(), t, &answer([0, 0], 2, 1), current_epoch());
        assert!(
            cache.answer(&k, [9, 9]).is_none(),
            "one of two rotations known"
        );
        cache.learn(k.clone(), t, &answer([0, 0], 2, 1), current_epoch());
        assert!(
            cache.answer(&k, [9, 9]).is_none(),
            "duplicates do not count"
        );
        cache.learn(k.clone(), t, &answer([0, 0], 2, 2), current_epoch());
        let a = cache.answer(&k, [9, 9]).unwrap();
        let b = cache.answer(&k, [7, 7]).unwrap();
        assert_eq!(&a.bytes[0..2], &[9, 9]);
        assert_eq!(&b.bytes[0..2], &[7, 7]);
        assert_ne!(a.bytes[2..], b.bytes[2..], "replays rotate");
        assert_eq!((a.qtype, a.rcode), (1, 0));
        // A health change retires the entry.
        HEALTH_EPOCH.fetch_add(1, Ordering::AcqRel);
        assert!(cache.answer(&k, [9, 9]).is_none());
    }

    #[test]
    fn an_alias_answer_rotates_by_its_addresses_only() {
        // prov-alias CNAME prov, then prov's two addresses: two rotations, not three.
        let alias = |first: u8| {
            let mut a = vec![0, 0, 0x85, 0x00, 0, 1, 0, 3, 0, 0, 0, 0];
            a.extend_from_slice(b"\x05alias\x03lab\x04test\x00\x00\x01\x00\x01");
            a.extend_from_slice(&[0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 60, 0, 7]);
            a.extend_from_slice(b"\x04prov\xc0\x12");
            for last in [first, 3 - first] {
                a.extend_from_slice(&[0xc0, 39, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 0, 0, last]);
            }
            a
        };
        assert_eq!(answers_of_type(&alias(1), 1), Some(2));
        assert_eq!(answers_of_type(&alias(1), 5), Some(1));
        assert_eq!(answers_of_type(&alias(1)[..50], 1), None, "cut short");
        let cache = Cache::default();
        let (k, t) = key(&query("alias.lab.test", 1, false), false).unwrap();
        for _ in 0..100 {
            let epoch = current_epoch();
            cache.learn(k.clone(), t, &alias(1), epoch);
            cache.learn(k.clone(), t, &alias(2), epoch);
            if cache.answer(&k, [1, 1]).is_some() {
                return;
            }
        }
        panic!("two rotations of an alias never made a complete set");
    }

    #[test]
    fn truncated_answers_are_not_learned() {
        let cache = Cache::default();
        let (k, t) = key(&query("big.lab.test", 16, false), false).unwrap();
        let mut tc = answer([0, 0], 1, 0);
        tc[2] |= 0x02;
        cache.learn(k.clone(), t, &tc, current_epoch());
        assert!(cache.answer(&k, [1, 1]).is_none());
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    fn query(id: u16, labels: &[String], qtype: u16, edns: Option<u16>) -> Vec<u8> {
        let mut q = id.to_be_bytes().to_vec();
        q.extend_from_slice(&[1, 0, 0, 1, 0, 0, 0, 0, 0, u8::from(edns.is_some())]);
        for l in labels {
            q.push(l.len() as u8);
            q.extend_from_slice(l.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&[0, 1]);
        if let Some(size) = edns {
            q.extend_from_slice(&[0, 0, 41]);
            q.extend_from_slice(&size.to_be_bytes());
            q.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        }
        q
    }

    fn labels() -> impl Strategy<Value = Vec<String>> {
        proptest::collection::vec("[a-z0-9-]{1,20}", 1..5)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// A plain query has a key with its qtype; the key ignores the ID only, tells UDP
        /// from TCP, and differs for another name or type. A replay carries the new ID.
        #[test]
        fn the_key_is_the_question_without_its_id(
            a in labels(), b in labels(), qtype in 1u16..300, id1 in any::<u16>(), id2 in any::<u16>(),
            edns in proptest::option::of(512u16..4096),
        ) {
            let (k1, t) = key(&query(id1, &a, qtype, edns), false).expect("plain query has a key");
            prop_assert_eq!(t, qtype);
            prop_assert_eq!(key_qtype(&k1), qtype);
            let (k2, _) = key(&query(id2, &a, qtype, edns), false).unwrap();
            prop_assert_eq!(&k1, &k2);
            prop_assert_ne!(&k1, &key(&query(id1, &a, qtype, edns), true).unwrap().0);
            if a != b {
                prop_assert_ne!(&k1, &key(&query(id1, &b, qtype, edns), false).unwrap().0);
            }
            prop_assert_ne!(&k1, &key(&query(id1, &a, qtype + 1, edns), false).unwrap().0);

            let cache = Cache::default();
            let mut answer = query(id1, &a, qtype, edns);
            answer[2] |= 0x80;
            answer[7] = 1; // one answer: a period of 1 for every type
            let epoch = current_epoch();
            cache.learn(k1.clone(), 16, &answer, epoch);
            match cache.answer(&k1, id2.to_be_bytes()) {
                Some(r) => {
                    prop_assert_eq!(&r.bytes[..2], &id2.to_be_bytes()[..]);
                    prop_assert_eq!(&r.bytes[2..], &answer[2..]);
                }
                // A health test elsewhere moved the epoch: the entry is stale, rightly.
                None => prop_assert_ne!(epoch, current_epoch()),
            }
        }

        /// Any bytes: a key or none, never a panic; a key always starts with the
        /// transport byte and carries the query minus its ID.
        #[test]
        fn any_bytes_give_a_key_or_none(pkt in proptest::collection::vec(any::<u8>(), 0..80), tcp in any::<bool>()) {
            if let Some((k, _)) = key(&pkt, tcp) {
                prop_assert_eq!(k[0], u8::from(tcp));
                prop_assert_eq!(&k[1..], &pkt[2..]);
            }
        }
    }
}
