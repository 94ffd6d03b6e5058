//! The lease table and address allocation: pure data, no I/O, times in Unix seconds
//! passed in by the caller (so tests can move the clock).
//!
//! Rules: a client keeps the address it had (even after its lease ran out, as long as
//! nobody else took it); a reservation wins; an address is never handed out when it is
//! the server's, reserved for another device, declined (quarantined) or held by another
//! client's live offer or lease.
//!
//! Allocation does not scan: each subnet's pools keep an index of the addresses nobody
//! holds (ranges never used or forgotten, plus addresses whose lease was released or
//! expired), built once and kept up to date as leases change. A full pool is answered
//! without looking at any address, so a flood of DISCOVERs costs O(log n) each.
//!
//! A MAC may hold one live lease: a second client id arriving with the same `chaddr`
//! is someone else claiming that hardware ([`Leases::mac_leased_to_other`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::Ipv4Addr;

use crate::devices::Mac;

use super::config::Subnet;

/// Who a lease belongs to: the client identifier (61) when sent, else the MAC.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientKey(pub Vec<u8>);

impl ClientKey {
    pub fn new(client_id: Option<&[u8]>, mac: &Mac) -> ClientKey {
        match client_id {
            Some(id) if !id.is_empty() => {
                let mut v = vec![b'i'];
                v.extend_from_slice(id);
                ClientKey(v)
            }
            _ => {
                let mut v = vec![b'm'];
                v.extend_from_slice(&mac.0);
                ClientKey(v)
            }
        }
    }

    /// The same hardware: equal keys, or keys both made from `mac` alone (no client id,
    /// or the RFC 2132 form `01 ‖ mac` that udhcpc and most phones send). A boot ROM
    /// without a client id and the phone's OS with one are one device.
    pub fn same_device(&self, other: &ClientKey, mac: &Mac) -> bool {
        self == other || (self.is_of_mac(mac) && other.is_of_mac(mac))
    }

    fn is_of_mac(&self, mac: &Mac) -> bool {
        match self.0.split_first() {
            Some((b'm', rest)) => rest == mac.0,
            Some((b'i', [1, rest @ ..])) => rest == mac.0,
            _ => false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Offered, not yet requested; held until then (not persisted).
    Offered { until: u64 },
    /// Acknowledged; the client may use it until `expires`.
    Bound { expires: u64 },
    /// Released or expired: free, but remembered so the client gets it back.
    Free,
    /// Declined (in use by someone unknown): out of the pool until `until`.
    Declined { until: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub ip: Ipv4Addr,
    pub client: ClientKey,
    pub mac: Mac,
    pub hostname: Option<String>,
    pub vendor_class: Option<String>,
    pub state: State,
}

impl Lease {
    /// Whether the address is taken right now (by this lease's client or quarantine).
    pub fn is_live(&self, now: u64) -> bool {
        match self.state {
            State::Offered { until } | State::Declined { until } => until > now,
            State::Bound { expires } => expires > now,
            State::Free => false,
        }
    }
}

#[derive(Default)]
pub struct Leases {
    by_ip: HashMap<Ipv4Addr, Lease>,
    by_client: HashMap<ClientKey, Ipv4Addr>,
    /// The address of each MAC's latest bound lease (checked against `by_ip` when read).
    by_mac: HashMap<Mac, Ipv4Addr>,
    /// Free-address index per subnet (by index in the settings), built at its first
    /// allocation; dropped by [`Leases::forget_pools`] when the settings change.
    pools: HashMap<usize, PoolIndex>,
    /// Addresses looked at by the pool walk of [`Leases::pick`] (tests count them).
    pub probes: u64,
}

/// The free addresses of one subnet's pools.
struct PoolIndex {
    ranges: Vec<(u32, u32)>,
    /// Addresses with no lease record: disjoint inclusive ranges, start → end.
    fresh: BTreeMap<u32, u32>,
    fresh_len: u64,
    /// Addresses whose lease is released or expired (the owner gets it back first, but
    /// anyone may have it); taken only when no fresh address is left.
    reclaim: BTreeSet<u32>,
    /// Where the next walk starts, so addresses are used round the pool.
    cursor: u32,
}

impl PoolIndex {
    fn covers(&self, n: u32) -> bool {
        self.ranges.iter().any(|&(a, b)| a <= n && n <= b)
    }

    fn fresh_insert(&mut self, n: u32) {
        if self.fresh_contains(n) {
            return;
        }
        let mut start = n;
        let mut end = n;
        if let Some((&s, &e)) = self.fresh.range(..n).next_back()
            && e.checked_add(1) == Some(n)
        {
            self.fresh.remove(&s);
            start = s;
        }
        if let Some(e) = n.checked_add(1).and_then(|m| self.fresh.remove(&m)) {
            end = e;
        }
        self.fresh.insert(start, end);
        self.fresh_len += 1;
    }

    fn fresh_contains(&self, n: u32) -> bool {
        matches!(self.fresh.range(..=n).next_back(), Some((_, &e)) if e >= n)
    }

    fn fresh_remove(&mut self, n: u32) -> bool {
        let Some((&s, &e)) = self.fresh.range(..=n).next_back() else {
            return false;
        };
        if e < n {
            return false;
        }
        self.fresh.remove(&s);
        if s < n {
            self.fresh.insert(s, n - 1);
        }
        if n < e {
            self.fresh.insert(n + 1, e);
        }
        self.fresh_len -= 1;
        true
    }

    /// The fresh address at or after the cursor, wrapping round.
    fn next_fresh(&self) -> Option<u32> {
        let c = self.cursor;
        if let Some((_, &e)) = self.fresh.range(..=c).next_back()
            && e >= c
        {
            return Some(c);
        }
        self.fresh
            .range(c..)
            .next()
            .or_else(|| self.fresh.iter().next())
            .map(|(&s, _)| s)
    }

    fn next_reclaim(&self) -> Option<u32> {
        self.reclaim
            .range(self.cursor..)
            .next()
            .or_else(|| self.reclaim.iter().next())
            .copied()
    }

    /// What this address now is: free (fresh or reclaimable) or held.
    fn note(&mut self, n: u32, lease: Option<&Lease>) {
        match lease {
            None => {
                self.reclaim.remove(&n);
                self.fresh_insert(n);
            }
            Some(l) if l.state == State::Free => {
                self.fresh_remove(n);
                self.reclaim.insert(n);
            }
            Some(_) => {
                self.fresh_remove(n);
                self.reclaim.remove(&n);
            }
        }
    }

    fn free(&self) -> u64 {
        self.fresh_len + self.reclaim.len() as u64
    }
}

/// Addresses never handed out from the pool of one subnet.
pub struct Excluded<'a> {
    pub server: &'a [Ipv4Addr],
    pub reserved: &'a HashSet<Ipv4Addr>,
}

impl Leases {
    /// Every lease record, in no order.
    pub fn all(&self) -> impl Iterator<Item = &Lease> {
        self.by_ip.values()
    }

    pub fn get(&self, ip: Ipv4Addr) -> Option<&Lease> {
        self.by_ip.get(&ip)
    }

    pub fn of_client(&self, client: &ClientKey) -> Option<&Lease> {
        self.by_client.get(client).and_then(|ip| self.by_ip.get(ip))
    }

    /// Does `mac` hold a live bound lease under a client that is not `client` (see
    /// [`ClientKey::same_device`])? Then a request from `client` with that `chaddr` is
    /// another host claiming the hardware, and gets no second lease.
    pub fn mac_leased_to_other(&self, mac: &Mac, client: &ClientKey, now: u64) -> bool {
        let Some(l) = self.by_mac.get(mac).and_then(|ip| self.by_ip.get(ip)) else {
            return false;
        };
        l.mac == *mac
            && matches!(l.state, State::Bound { .. })
            && l.is_live(now)
            && !l.client.same_device(client, mac)
    }

    /// Free addresses in the pools of subnet `idx` as its index knows them (`None` before
    /// the first allocation there). Offers and quarantines lapse at the next sweep.
    pub fn free_in(&self, idx: usize) -> Option<u64> {
        self.pools.get(&idx).map(PoolIndex::free)
    }

    /// The settings changed (pools, reservations, our addresses): indexes are rebuilt at
    /// the next allocation.
    pub fn forget_pools(&mut self) {
        self.pools.clear();
    }

    fn index<'a>(
        by_ip: &HashMap<Ipv4Addr, Lease>,
        pools: &'a mut HashMap<usize, PoolIndex>,
        idx: usize,
        subnet: &Subnet,
        ex: &Excluded<'_>,
    ) -> &'a mut PoolIndex {
        pools.entry(idx).or_insert_with(|| {
            let mut p = PoolIndex {
                ranges: subnet.pools.clone(),
                fresh: BTreeMap::new(),
                fresh_len: 0,
                reclaim: BTreeSet::new(),
                cursor: 0,
            };
            // Pools may overlap or touch in config: merge them into disjoint ranges.
            let mut ranges = subnet.pools.clone();
            ranges.sort_unstable();
            for (a, b) in ranges {
                let last = p.fresh.iter().next_back().map(|(&s, &e)| (s, e));
                match last {
                    Some((s, e)) if a <= e.saturating_add(1) => {
                        if b > e {
                            p.fresh_len += (b - e) as u64;
                            p.fresh.insert(s, b);
                        }
                    }
                    _ => {
                        p.fresh.insert(a, b);
                        p.fresh_len += (b - a) as u64 + 1;
                    }
                }
            }
            for (ip, l) in by_ip {
                let n = u32::from(*ip);
                if p.covers(n) {
                    p.note(n, Some(l));
                }
            }
            for ip in ex.server.iter().chain(ex.reserved.iter()) {
                let n = u32::from(*ip);
                p.fresh_remove(n);
                p.reclaim.remove(&n);
            }
            p
        })
    }

    /// Tell every pool index covering `ip` what the address now is.
    fn note(&mut self, ip: Ipv4Addr) {
        let n = u32::from(ip);
        let lease = self.by_ip.get(&ip);
        for p in self.pools.values_mut() {
            if p.covers(n) {
                p.note(n, lease);
            }
        }
    }

    /// Is `ip` leased to `client` right now (a renewal, not a new grant)?
    pub fn bound_to(&self, ip: Ipv4Addr, client: &ClientKey, now: u64) -> bool {
        matches!(self.by_ip.get(&ip), Some(l) if l.client == *client
            && matches!(l.state, State::Bound { .. })
            && l.is_live(now))
    }

    /// May `client` be given `ip` from the pool of `subnet`: in a pool, not excluded, and
    /// free for it?
    pub fn usable(
        &self,
        subnet: &Subnet,
        ex: &Excluded<'_>,
        ip: Ipv4Addr,
        client: &ClientKey,
        now: u64,
    ) -> bool {
        subnet.in_pool(ip)
            && !ex.server.contains(&ip)
            && !ex.reserved.contains(&ip)
            && self.available_to(ip, client, now)
    }

    /// Can `client` have `ip` (pool membership and exclusions are the caller's)?
    pub fn available_to(&self, ip: Ipv4Addr, client: &ClientKey, now: u64) -> bool {
        free_for(&self.by_ip, ip, client, now)
    }

    /// Choose an address for `client` in subnet `idx`: its previous one, the one it asks
    /// for, or the next free one in the pools.
    pub fn pick(
        &mut self,
        idx: usize,
        subnet: &Subnet,
        client: &ClientKey,
        requested: Option<Ipv4Addr>,
        ex: &Excluded<'_>,
        now: u64,
    ) -> Option<Ipv4Addr> {
        let usable = |s: &Self, ip: Ipv4Addr| s.usable(subnet, ex, ip, client, now);
        if let Some(prev) = self.by_client.get(client).copied()
            && usable(self, prev)
        {
            return Some(prev);
        }
        if let Some(r) = requested
            && usable(self, r)
        {
            return Some(r);
        }
        // The pool index: fresh addresses first, then released/expired ones of other
        // clients (a client's own old address was offered above). Each candidate is
        // checked; one that fails is dropped from the index (it is excluded or held and
        // comes back through `note` when that changes), so the loop ends.
        let Leases {
            by_ip,
            pools,
            probes,
            ..
        } = self;
        let p = Self::index(by_ip, pools, idx, subnet, ex);
        loop {
            let (n, fresh) = match p.next_fresh() {
                Some(n) => (n, true),
                None => (p.next_reclaim()?, false),
            };
            *probes += 1;
            let ip = Ipv4Addr::from(n);
            let ok = subnet.in_pool(ip)
                && !ex.server.contains(&ip)
                && !ex.reserved.contains(&ip)
                && free_for(by_ip, ip, client, now);
            if fresh {
                p.fresh_remove(n);
            } else {
                p.reclaim.remove(&n);
            }
            if ok {
                p.cursor = n.wrapping_add(1);
                // Not yet recorded: put it back until the caller records the offer, so
                // the index stays true if it does not.
                p.note(n, by_ip.get(&ip));
                return Some(ip);
            }
        }
    }

    /// Record `lease` at its address, dropping whatever other client had it before.
    pub fn put(&mut self, lease: Lease) {
        let ip = lease.ip;
        if matches!(lease.state, State::Bound { .. }) {
            self.by_mac.insert(lease.mac, ip);
        }
        self.put_inner(lease);
        self.note(ip);
    }

    fn put_inner(&mut self, lease: Lease) {
        if let Some(old) = self.by_ip.get(&lease.ip)
            && old.client != lease.client
            && self.by_client.get(&old.client) == Some(&lease.ip)
        {
            self.by_client.remove(&old.client);
        }
        if !matches!(lease.state, State::Declined { .. }) {
            if let Some(prev_ip) = self.by_client.insert(lease.client.clone(), lease.ip)
                && prev_ip != lease.ip
                && let Some(prev) = self.by_ip.get(&prev_ip)
                && prev.client == lease.client
                && !matches!(prev.state, State::Bound { .. })
            {
                // The client moved on: its old, unused address goes back to the pool.
                self.by_ip.remove(&prev_ip);
                self.note(prev_ip);
            }
        } else if self.by_client.get(&lease.client) == Some(&lease.ip) {
            self.by_client.remove(&lease.client);
        }
        self.by_ip.insert(lease.ip, lease);
    }

    pub fn remove(&mut self, ip: Ipv4Addr) -> Option<Lease> {
        let l = self.by_ip.remove(&ip)?;
        if self.by_client.get(&l.client) == Some(&ip) {
            self.by_client.remove(&l.client);
        }
        if self.by_mac.get(&l.mac) == Some(&ip) {
            self.by_mac.remove(&l.mac);
        }
        self.note(ip);
        Some(l)
    }

    /// Bound leases whose time ran out become Free (returned, to be announced); stale
    /// offers and finished quarantines are forgotten.
    pub fn sweep(&mut self, now: u64) -> Vec<Lease> {
        let mut ended = Vec::new();
        let mut forget = Vec::new();
        for l in self.by_ip.values_mut() {
            match l.state {
                State::Bound { expires } if expires <= now => {
                    l.state = State::Free;
                    ended.push(l.clone());
                    let n = u32::from(l.ip);
                    for p in self.pools.values_mut() {
                        if p.covers(n) {
                            p.note(n, Some(l));
                        }
                    }
                }
                State::Offered { until } if until <= now => forget.push(l.ip),
                State::Declined { until } if until <= now => forget.push(l.ip),
                _ => {}
            }
        }
        for ip in forget {
            // An offer that was never taken leaves nothing worth remembering.
            self.remove(ip);
        }
        ended
    }

    /// Bound (unexpired) leases in `subnet`.
    pub fn active_in(&self, subnet: &Subnet, now: u64) -> u64 {
        self.by_ip
            .values()
            .filter(|l| matches!(l.state, State::Bound { expires } if expires > now))
            .filter(|l| subnet.contains(l.ip))
            .count() as u64
    }
}

fn free_for(by_ip: &HashMap<Ipv4Addr, Lease>, ip: Ipv4Addr, client: &ClientKey, now: u64) -> bool {
    match by_ip.get(&ip) {
        None => true,
        Some(l) if matches!(l.state, State::Declined { .. }) => !l.is_live(now),
        Some(l) => l.client == *client || !l.is_live(now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn subnet(pool: (&str, &str)) -> Subnet {
        Subnet {
            network: "198.18.0.0".parse().unwrap(),
            prefix: 24,
            pools: vec![(
                u32::from(pool.0.parse::<Ipv4Addr>().unwrap()),
                u32::from(pool.1.parse::<Ipv4Addr>().unwrap()),
            )],
            server_address: None,
            lease: Duration::from_secs(3600),
            renew: Duration::from_secs(1800),
            rebind: Duration::from_secs(3150),
            options: vec![],
            dns_default: true,
            reservations: vec![],
        }
    }

    fn key(n: u8) -> (ClientKey, Mac) {
        let mac = Mac([0, 0x0e, 8, 0, 0, n]);
        (ClientKey::new(None, &mac), mac)
    }

    fn lease(ip: Ipv4Addr, n: u8, state: State) -> Lease {
        let (client, mac) = key(n);
        held(ip, client, mac, state)
    }

    /// A lease with no hostname or vendor class.
    fn held(ip: Ipv4Addr, client: ClientKey, mac: Mac, state: State) -> Lease {
        Lease {
            ip,
            client,
            mac,
            hostname: None,
            vendor_class: None,
            state,
        }
    }

    /// The server's own and the reserved addresses a test keeps out of its pool.
    struct Sets {
        server: Vec<Ipv4Addr>,
        reserved: HashSet<Ipv4Addr>,
    }

    /// A fresh pool `lo..=hi` with no leases and nothing kept out of it.
    fn empty_pool(pool: (&str, &str)) -> (Subnet, Leases, Sets) {
        (subnet(pool), Leases::default(), Sets::new(&[], &[]))
    }

    impl Sets {
        fn new(server: &[Ipv4Addr], reserved: &[Ipv4Addr]) -> Sets {
            Sets {
                server: server.to_vec(),
                reserved: reserved.iter().copied().collect(),
            }
        }

        fn excluded(&self) -> Excluded<'_> {
            Excluded {
                server: &self.server,
                reserved: &self.reserved,
            }
        }
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn never_hands_out_server_reserved_or_declined_addresses() {
        let sn = subnet(("198.18.0.10", "198.18.0.14"));
        let mut t = Leases::default();
        let sets = Sets::new(&[ip("198.18.0.10")], &[ip("198.18.0.11")]);
        let ex = sets.excluded();
        t.put(lease(
            ip("198.18.0.12"),
            99,
            State::Declined { until: 1000 },
        ));
        let mut got = Vec::new();
        for n in 1..=2 {
            let (c, mac) = key(n);
            let a = t.pick(0, &sn, &c, None, &ex, 100).unwrap();
            t.put(held(a, c, mac, State::Bound { expires: 5000 }));
            got.push(a);
        }
        got.sort();
        // Only .13 and .14 are allocatable: the third client finds nothing.
        assert_eq!(got, [ip("198.18.0.13"), ip("198.18.0.14")]);
        let (c3, _) = key(3);
        assert_eq!(t.pick(0, &sn, &c3, Some(ip("198.18.0.12")), &ex, 100), None);
        // Once the quarantine is over, .12 is usable again.
        t.sweep(1000);
        assert_eq!(
            t.pick(0, &sn, &c3, None, &ex, 1000),
            Some(ip("198.18.0.12"))
        );
    }

    #[test]
    fn exhaustion_returns_none() {
        let (sn, mut t, sets) = empty_pool(("198.18.0.10", "198.18.0.11"));
        let ex = sets.excluded();
        for n in 1..=2 {
            let (c, _) = key(n);
            let a = t.pick(0, &sn, &c, None, &ex, 0).unwrap();
            t.put(lease(a, n, State::Bound { expires: 100 }));
        }
        let (c3, _) = key(3);
        assert_eq!(t.pick(0, &sn, &c3, None, &ex, 50), None);
        // After expiry the address is reclaimed for the newcomer.
        let ended = t.sweep(100);
        assert_eq!(ended.len(), 2);
        assert!(t.pick(0, &sn, &c3, None, &ex, 100).is_some());
    }

    #[test]
    fn client_gets_its_previous_or_requested_address() {
        let (sn, mut t, sets) = empty_pool(("198.18.0.10", "198.18.0.50"));
        let ex = sets.excluded();
        let (c1, _) = key(1);
        assert_eq!(
            t.pick(0, &sn, &c1, Some(ip("198.18.0.40")), &ex, 0),
            Some(ip("198.18.0.40"))
        );
        t.put(lease(ip("198.18.0.40"), 1, State::Bound { expires: 10 }));
        // Expired and released, nobody else took it: same address again.
        t.sweep(20);
        assert_eq!(t.pick(0, &sn, &c1, None, &ex, 30), Some(ip("198.18.0.40")));
        // Another client may not take a live lease even by asking for it.
        let (c2, _) = key(2);
        t.put(lease(ip("198.18.0.40"), 1, State::Bound { expires: 100 }));
        assert_ne!(
            t.pick(0, &sn, &c2, Some(ip("198.18.0.40")), &ex, 30),
            Some(ip("198.18.0.40"))
        );
        // Outside the pool is never chosen.
        assert_ne!(
            t.pick(0, &sn, &c2, Some(ip("198.18.0.200")), &ex, 30),
            Some(ip("198.18.0.200"))
        );
    }

    #[test]
    fn offers_hold_then_lapse() {
        let (sn, mut t, sets) = empty_pool(("198.18.0.10", "198.18.0.10"));
        let ex = sets.excluded();
        t.put(lease(ip("198.18.0.10"), 1, State::Offered { until: 30 }));
        let (c2, _) = key(2);
        assert_eq!(t.pick(0, &sn, &c2, None, &ex, 10), None);
        t.sweep(31);
        assert!(t.get(ip("198.18.0.10")).is_none());
        assert_eq!(t.pick(0, &sn, &c2, None, &ex, 31), Some(ip("198.18.0.10")));
    }

    #[test]
    fn allocation_on_a_full_pool_looks_at_no_address() {
        let sn = subnet(("198.18.0.10", "198.18.0.209"));
        let mut t = Leases::default();
        let sets = Sets::new(&[ip("198.18.0.10")], &[ip("198.18.0.20")]);
        let ex = sets.excluded();
        let mut got = HashSet::new();
        for n in 0..198u32 {
            let mac = Mac([2, 0, 0, 0, (n >> 8) as u8, n as u8]);
            let c = ClientKey::new(None, &mac);
            let a = t.pick(0, &sn, &c, None, &ex, 0).expect("pool has room");
            assert!(got.insert(a), "{a} handed out twice");
            t.put(held(a, c, mac, State::Offered { until: 100 }));
        }
        assert!(!got.contains(&ip("198.18.0.10")) && !got.contains(&ip("198.18.0.20")));
        assert_eq!(t.free_in(0), Some(0));
        // Each allocation looked at one address, and a full pool at none.
        assert_eq!(t.probes, 198);
        let (c, _) = key(250);
        for _ in 0..1000 {
            assert_eq!(t.pick(0, &sn, &c, None, &ex, 50), None);
        }
        assert_eq!(t.probes, 198, "a full pool was scanned");
        // Lapsed offers come back at the sweep, and are found without a scan.
        t.sweep(100);
        assert_eq!(t.free_in(0), Some(198));
        assert!(t.pick(0, &sn, &c, None, &ex, 100).is_some());
        assert_eq!(t.probes, 199);
    }

    #[test]
    fn released_addresses_are_reclaimed_after_fresh_ones() {
        let (sn, mut t, sets) = empty_pool(("198.18.0.10", "198.18.0.12"));
        let ex = sets.excluded();
        t.put(lease(ip("198.18.0.10"), 1, State::Free));
        let mut got = Vec::new();
        for n in 2..=4 {
            let (c, mac) = key(n);
            let a = t.pick(0, &sn, &c, None, &ex, 0).unwrap();
            t.put(Lease {
                mac,
                client: c,
                ..lease(a, n, State::Bound { expires: 100 })
            });
            got.push(a);
        }
        // .10 was client 1's: the fresh ones go first, then .10 is taken over.
        assert_eq!(
            got,
            [ip("198.18.0.11"), ip("198.18.0.12"), ip("198.18.0.10")]
        );
        assert_eq!(t.free_in(0), Some(0));
        // Release and removal give addresses back to the index.
        let mut l = t.get(ip("198.18.0.11")).unwrap().clone();
        l.state = State::Free;
        t.put(l);
        t.remove(ip("198.18.0.12"));
        assert_eq!(t.free_in(0), Some(2));
    }

    #[test]
    fn a_leased_mac_is_refused_to_another_client_id_but_not_to_itself() {
        let mut t = Leases::default();
        let mac = Mac([2, 0, 0, 0, 0, 9]);
        let phone = ClientKey::new(Some(&[1, 2, 0, 0, 0, 0, 9]), &mac);
        t.put(held(
            ip("198.18.0.10"),
            phone.clone(),
            mac,
            State::Bound { expires: 100 },
        ));
        let thief = ClientKey::new(Some(b"evil"), &mac);
        assert!(t.mac_leased_to_other(&mac, &thief, 50));
        assert!(!t.mac_leased_to_other(&mac, &phone, 50));
        // The same hardware without a client id (a boot ROM) is the same device.
        assert!(!t.mac_leased_to_other(&mac, &ClientKey::new(None, &mac), 50));
        // Other MACs are not affected, and an expired lease holds nothing.
        assert!(!t.mac_leased_to_other(&Mac([2, 0, 0, 0, 0, 8]), &thief, 50));
        assert!(!t.mac_leased_to_other(&mac, &thief, 100));
    }

    proptest::proptest! {
        /// The index agrees with the table after any sequence of grants, releases,
        /// removals and sweeps: it counts exactly the pool addresses (not excluded) that
        /// have no record or a free one, and a pick succeeds exactly when there is one.
        #[test]
        fn the_free_index_agrees_with_the_table(
            ops in proptest::collection::vec((0u8..5, 0u8..24, 0u64..40), 1..120)
        ) {
            let mut sn = subnet(("198.18.0.10", "198.18.0.19"));
            sn.pools.push((u32::from(ip("198.18.0.15")), u32::from(ip("198.18.0.24"))));
            let mut t = Leases::default();
            let reserved: HashSet<_> = [ip("198.18.0.12")].into();
            let server = [ip("198.18.0.20")];
            let ex = Excluded { server: &server, reserved: &reserved };
            let mut now = 0;
            for (op, n, dt) in ops {
                now += dt;
                let (c, mac) = key(n);
                match op {
                    0 | 1 => {
                        if let Some(a) = t.pick(0, &sn, &c, None, &ex, now) {
                            let state = if op == 0 {
                                State::Offered { until: now + 30 }
                            } else {
                                State::Bound { expires: now + 50 }
                            };
                            t.put(Lease { ip: a, client: c, mac, hostname: None, vendor_class: None, state });
                        }
                    }
                    2 => {
                        if let Some(mut l) = t.of_client(&c).cloned() {
                            l.state = State::Free;
                            t.put(l);
                        }
                    }
                    3 => {
                        if let Some(a) = t.of_client(&c).map(|l| l.ip) {
                            t.remove(a);
                        }
                    }
                    _ => {
                        t.sweep(now);
                    }
                }
                let naive = (10..=24u8)
                    .map(|d| Ipv4Addr::new(198, 18, 0, d))
                    .filter(|a| !server.contains(a) && !reserved.contains(a))
                    .filter(|a| t.get(*a).is_none_or(|l| l.state == State::Free))
                    .count() as u64;
                if let Some(free) = t.free_in(0) {
                    proptest::prop_assert_eq!(free, naive);
                }
                let (stranger, _) = key(200);
                let got = t.pick(0, &sn, &stranger, None, &ex, now);
                proptest::prop_assert_eq!(got.is_some(), naive > 0);
                if let Some(a) = got {
                    proptest::prop_assert!(sn.in_pool(a) && !server.contains(&a) && !reserved.contains(&a));
                    proptest::prop_assert!(t.get(a).is_none_or(|l| !l.is_live(now)));
                }
            }
        }
    }
}
