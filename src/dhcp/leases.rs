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
//! Boxes sharing one store (`store.backend: postgres`) each allocate new addresses from
//! their own share of the pool ([`Share`]: address `n` is box `n % of`'s), as DHCP
//! failover peers keep their own free addresses, so two boxes answering the same
//! DISCOVER storm never pick one address for two clients. The caller may let a client
//! that has waited long have any share's address; the database still decides.
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
    /// This box's share of every pool (all of it, alone).
    share: Share,
    /// Addresses looked at by the pool walk of [`Leases::pick`] (tests count them).
    pub probes: u64,
}

/// Which addresses this box offers new leases from: those with `n % of == slot`. One box
/// alone (or the embedded store) has the whole pool: `slot 0 of 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    pub slot: u32,
    pub of: u32,
}

impl Default for Share {
    fn default() -> Share {
        Share { slot: 0, of: 1 }
    }
}

impl Share {
    /// Box `me`'s share among the live `boxes` (sorted the same way on every box).
    pub fn among(boxes: &[String], me: &str) -> Share {
        match boxes.iter().position(|b| b == me) {
            Some(i) if boxes.len() > 1 => Share {
                slot: i as u32,
                of: boxes.len().min(u32::MAX as usize) as u32,
            },
            _ => Share::default(),
        }
    }
}

/// Disjoint inclusive ranges of numbers, start → end, and how many numbers they hold.
#[derive(Default)]
struct Ranges {
    map: BTreeMap<u32, u32>,
    len: u64,
}

impl Ranges {
    /// Add `a..=b`, touching none of the ranges held (it may adjoin them).
    fn insert_range(&mut self, a: u32, b: u32) {
        let mut start = a;
        let mut end = b;
        if let Some((&s, &e)) = self.map.range(..a).next_back()
            && e.checked_add(1) == Some(a)
        {
            self.map.remove(&s);
            start = s;
        }
        if let Some(e) = b.checked_add(1).and_then(|m| self.map.remove(&m)) {
            end = e;
        }
        self.map.insert(start, end);
        self.len += u64::from(b - a) + 1;
    }

    fn insert(&mut self, n: u32) {
        if !self.contains(n) {
            self.insert_range(n, n);
        }
    }

    fn contains(&self, n: u32) -> bool {
        matches!(self.map.range(..=n).next_back(), Some((_, &e)) if e >= n)
    }

    fn remove(&mut self, n: u32) -> bool {
        let Some((&s, &e)) = self.map.range(..=n).next_back() else {
            return false;
        };
        if e < n {
            return false;
        }
        self.map.remove(&s);
        if s < n {
            self.map.insert(s, n - 1);
        }
        if n < e {
            self.map.insert(n + 1, e);
        }
        self.len -= 1;
        true
    }

    /// The number at or after `c`, wrapping round.
    fn next_from(&self, c: u32) -> Option<u32> {
        if self.contains(c) {
            return Some(c);
        }
        self.map
            .range(c..)
            .next()
            .or_else(|| self.map.iter().next())
            .map(|(&s, _)| s)
    }
}

/// The free addresses of one subnet's pools.
struct PoolIndex {
    ranges: Vec<(u32, u32)>,
    /// Addresses with no lease record, by share: address `n` is kept as `n / of` in
    /// `fresh[n % of]`, so each share is a few long ranges, not one number in `of`.
    fresh: Vec<Ranges>,
    share: Share,
    /// Addresses whose lease is released or expired (the owner gets it back first, but
    /// anyone may have it), by share like `fresh`; taken only when no fresh address is
    /// left.
    reclaim: Vec<BTreeSet<u32>>,
    /// Where the next walk starts, so addresses are used round the pool.
    cursor: u32,
}

impl PoolIndex {
    fn covers(&self, n: u32) -> bool {
        self.ranges.iter().any(|&(a, b)| a <= n && n <= b)
    }

    fn class(&self, n: u32) -> (usize, u32) {
        ((n % self.share.of) as usize, n / self.share.of)
    }

    fn fresh_insert(&mut self, n: u32) {
        let (k, q) = self.class(n);
        self.fresh[k].insert(q);
    }

    /// Add the pool range `a..=b` (disjoint from what is there) to every share.
    fn fresh_insert_range(&mut self, a: u32, b: u32) {
        let of = self.share.of;
        for (k, share) in self.fresh.iter_mut().enumerate() {
            let k = k as u32;
            // The first and last q with a <= q * of + k <= b.
            let lo = if a <= k { 0 } else { (a - k).div_ceil(of) };
            if b < k || u64::from(lo) * u64::from(of) + u64::from(k) > u64::from(b) {
                continue;
            }
            share.insert_range(lo, (b - k) / of);
        }
    }

    fn fresh_remove(&mut self, n: u32) -> bool {
        let (k, q) = self.class(n);
        self.fresh[k].remove(q)
    }

    /// The shares a pick may take from, this box's first; `any`: the others' too.
    fn shares(&self, any: bool) -> impl Iterator<Item = u32> + use<> {
        let Share { slot, of } = self.share;
        let n = if any { of } else { 1 };
        (0..n).map(move |i| (slot + i) % of)
    }

    /// The first number of share `k` at or after the cursor, as that share stores it.
    fn start_in(&self, k: u32) -> u32 {
        let (c, of) = (self.cursor, self.share.of);
        if c <= k { 0 } else { (c - k).div_ceil(of) }
    }

    /// The fresh address at or after the cursor, wrapping round, from the shares `any`
    /// allows.
    fn next_fresh(&self, any: bool) -> Option<u32> {
        let of = self.share.of;
        self.shares(any).find_map(|k| {
            let q = self.fresh[k as usize].next_from(self.start_in(k))?;
            Some(q * of + k)
        })
    }

    fn next_reclaim(&self, any: bool) -> Option<u32> {
        self.shares(any).find_map(|k| {
            let set = &self.reclaim[k as usize];
            set.range(self.cursor..)
                .next()
                .or_else(|| set.iter().next())
                .copied()
        })
    }

    fn reclaim_insert(&mut self, n: u32) {
        let (k, _) = self.class(n);
        self.reclaim[k].insert(n);
    }

    fn reclaim_remove(&mut self, n: u32) {
        let (k, _) = self.class(n);
        self.reclaim[k].remove(&n);
    }

    /// What this address now is: free (fresh or reclaimable) or held.
    fn note(&mut self, n: u32, lease: Option<&Lease>) {
        match lease {
            None => {
                self.reclaim_remove(n);
                self.fresh_insert(n);
            }
            Some(l) if l.state == State::Free => {
                self.fresh_remove(n);
                self.reclaim_insert(n);
            }
            Some(_) => {
                self.fresh_remove(n);
                self.reclaim_remove(n);
            }
        }
    }

    fn free(&self) -> u64 {
        let fresh: u64 = self.fresh.iter().map(|r| r.len).sum();
        fresh + self.reclaim.iter().map(|r| r.len() as u64).sum::<u64>()
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

    /// This box's share of the pools changed (boxes joined or left the store): the
    /// indexes are rebuilt for it at the next allocation.
    pub fn set_share(&mut self, share: Share) -> bool {
        if self.share == share {
            return false;
        }
        self.share = share;
        self.pools.clear();
        true
    }

    fn index<'a>(
        by_ip: &HashMap<Ipv4Addr, Lease>,
        pools: &'a mut HashMap<usize, PoolIndex>,
        share: Share,
        idx: usize,
        subnet: &Subnet,
        ex: &Excluded<'_>,
    ) -> &'a mut PoolIndex {
        pools.entry(idx).or_insert_with(|| {
            let mut p = PoolIndex {
                ranges: subnet.pools.clone(),
                fresh: (0..share.of).map(|_| Ranges::default()).collect(),
                share,
                reclaim: (0..share.of).map(|_| BTreeSet::new()).collect(),
                cursor: 0,
            };
            // Pools may overlap or touch in config: merge them into disjoint ranges.
            let mut ranges = subnet.pools.clone();
            ranges.sort_unstable();
            let mut merged: Vec<(u32, u32)> = Vec::new();
            for (a, b) in ranges {
                match merged.last_mut() {
                    Some((_, e)) if a <= e.saturating_add(1) => *e = (*e).max(b),
                    _ => merged.push((a, b)),
                }
            }
            for (a, b) in merged {
                p.fresh_insert_range(a, b);
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
                p.reclaim_remove(n);
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
    /// for, or the next free one in this box's share of the pools (`any`: in any share).
    #[allow(clippy::too_many_arguments)]
    pub fn pick(
        &mut self,
        idx: usize,
        subnet: &Subnet,
        client: &ClientKey,
        requested: Option<Ipv4Addr>,
        ex: &Excluded<'_>,
        any: bool,
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
            share,
            probes,
            ..
        } = self;
        let p = Self::index(by_ip, pools, *share, idx, subnet, ex);
        loop {
            let (n, fresh) = match p.next_fresh(any) {
                Some(n) => (n, true),
                None => (p.next_reclaim(any)?, false),
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
                p.reclaim_remove(n);
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
            let a = t.pick(0, &sn, &c, None, &ex, false, 100).unwrap();
            t.put(held(a, c, mac, State::Bound { expires: 5000 }));
            got.push(a);
        }
        got.sort();
        // Only .13 and .14 are allocatable: the third client finds nothing.
        assert_eq!(got, [ip("198.18.0.13"), ip("198.18.0.14")]);
        let (c3, _) = key(3);
        assert_eq!(
            t.pick(0, &sn, &c3, Some(ip("198.18.0.12")), &ex, false, 100),
            None
        );
        // Once the quarantine is over, .12 is usable again.
        t.sweep(1000);
        assert_eq!(
            t.pick(0, &sn, &c3, None, &ex, false, 1000),
            Some(ip("198.18.0.12"))
        );
    }

    #[test]
    fn exhaustion_returns_none() {
        let (sn, mut t, sets) = empty_pool(("198.18.0.10", "198.18.0.11"));
        let ex = sets.excluded();
        for n in 1..=2 {
            let (c, _) = key(n);
            let a = t.pick(0, &sn, &c, None, &ex, false, 0).unwrap();
            t.put(lease(a, n, State::Bound { expires: 100 }));
        }
        let (c3, _) = key(3);
        assert_eq!(t.pick(0, &sn, &c3, None, &ex, false, 50), None);
        // After expiry the address is reclaimed for the newcomer.
        let ended = t.sweep(100);
        assert_eq!(ended.len(), 2);
        assert!(t.pick(0, &sn, &c3, None, &ex, false, 100).is_some());
    }

    #[test]
    fn client_gets_its_previous_or_requested_address() {
        let (sn, mut t, sets) = empty_pool(("198.18.0.10", "198.18.0.50"));
        let ex = sets.excluded();
        let (c1, _) = key(1);
        assert_eq!(
            t.pick(0, &sn, &c1, Some(ip("198.18.0.40")), &ex, false, 0),
            Some(ip("198.18.0.40"))
        );
        t.put(lease(ip("198.18.0.40"), 1, State::Bound { expires: 10 }));
        // Expired and released, nobody else took it: same address again.
        t.sweep(20);
        assert_eq!(
            t.pick(0, &sn, &c1, None, &ex, false, 30),
            Some(ip("198.18.0.40"))
        );
        // Another client may not take a live lease even by asking for it.
        let (c2, _) = key(2);
        t.put(lease(ip("198.18.0.40"), 1, State::Bound { expires: 100 }));
        assert_ne!(
            t.pick(0, &sn, &c2, Some(ip("198.18.0.40")), &ex, false, 30),
            Some(ip("198.18.0.40"))
        );
        // Outside the pool is never chosen.
        assert_ne!(
            t.pick(0, &sn, &c2, Some(ip("198.18.0.200")), &ex, false, 30),
            Some(ip("198.18.0.200"))
        );
    }

    #[test]
    fn offers_hold_then_lapse() {
        let (sn, mut t, sets) = empty_pool(("198.18.0.10", "198.18.0.10"));
        let ex = sets.excluded();
        t.put(lease(ip("198.18.0.10"), 1, State::Offered { until: 30 }));
        let (c2, _) = key(2);
        assert_eq!(t.pick(0, &sn, &c2, None, &ex, false, 10), None);
        t.sweep(31);
        assert!(t.get(ip("198.18.0.10")).is_none());
        assert_eq!(
            t.pick(0, &sn, &c2, None, &ex, false, 31),
            Some(ip("198.18.0.10"))
        );
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
            let a = t
                .pick(0, &sn, &c, None, &ex, false, 0)
                .expect("pool has room");
            assert!(got.insert(a), "{a} handed out twice");
            t.put(held(a, c, mac, State::Offered { until: 100 }));
        }
        assert!(!got.contains(&ip("198.18.0.10")) && !got.contains(&ip("198.18.0.20")));
        assert_eq!(t.free_in(0), Some(0));
        // Each allocation looked at one address, and a full pool at none.
        assert_eq!(t.probes, 198);
        let (c, _) = key(250);
        for _ in 0..1000 {
            assert_eq!(t.pick(0, &sn, &c, None, &ex, false, 50), None);
        }
        assert_eq!(t.probes, 198, "a full pool was scanned");
        // Lapsed offers come back at the sweep, and are found without a scan.
        t.sweep(100);
        assert_eq!(t.free_in(0), Some(198));
        assert!(t.pick(0, &sn, &c, None, &ex, false, 100).is_some());
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
            let a = t.pick(0, &sn, &c, None, &ex, false, 0).unwrap();
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

    /// Two boxes with the same (empty) view of one pool, each from its own share.
    #[test]
    fn two_boxes_take_disjoint_shares_then_whatever_is_free() {
        let (sn, _, sets) = empty_pool(("198.18.0.10", "198.18.0.19"));
        let ex = sets.excluded();
        let mut boxes: Vec<Leases> = (0..2)
            .map(|slot| {
                let mut t = Leases::default();
                assert!(t.set_share(Share { slot, of: 2 }));
                t
            })
            .collect();
        let mut picked: Vec<Vec<Ipv4Addr>> = vec![Vec::new(), Vec::new()];
        for n in 0..5u8 {
            for (b, t) in boxes.iter_mut().enumerate() {
                let (c, mac) = key(n * 2 + b as u8);
                let a = t.pick(0, &sn, &c, None, &ex, false, 0).unwrap();
                t.put(held(a, c, mac, State::Bound { expires: 100 }));
                picked[b].push(a);
            }
        }
        // Neither box knows of the other's leases, yet no address was picked twice:
        // box 0 took the even addresses, box 1 the odd ones.
        let even: Vec<Ipv4Addr> = (10..=18)
            .step_by(2)
            .map(|d| Ipv4Addr::new(198, 18, 0, d))
            .collect();
        let odd: Vec<Ipv4Addr> = (11..=19)
            .step_by(2)
            .map(|d| Ipv4Addr::new(198, 18, 0, d))
            .collect();
        assert_eq!(picked, [even.clone(), odd]);
        // Its share used up, box 0 offers nothing from the other's, unless the client
        // has been waiting (then what is free there, onward from where it was).
        let (c, _) = key(50);
        assert_eq!(boxes[0].pick(0, &sn, &c, None, &ex, false, 0), None);
        assert_eq!(
            boxes[0].pick(0, &sn, &c, None, &ex, true, 0),
            Some(ip("198.18.0.19"))
        );
        // Alone again (the other box gone), one box has the whole pool.
        assert!(boxes[0].set_share(Share::default()));
        assert!(!boxes[0].set_share(Share::default()));
        assert_eq!(boxes[0].free_in(0), None, "the index is rebuilt");
        assert_eq!(
            boxes[0].pick(0, &sn, &c, None, &ex, false, 0),
            Some(ip("198.18.0.11"))
        );
        assert_eq!(boxes[0].free_in(0), Some(5));
    }

    #[test]
    fn a_share_is_the_place_among_the_live_boxes() {
        let boxes = ["a".to_string(), "b".to_string(), "c".to_string()];
        assert_eq!(Share::among(&boxes, "b"), Share { slot: 1, of: 3 });
        assert_eq!(Share::among(&boxes[..1], "a"), Share::default());
        // Not (yet) listed: the whole pool, as alone.
        assert_eq!(Share::among(&boxes, "z"), Share::default());
    }

    /// Shares of a pool whose ranges touch, overlap and do not start at a multiple of
    /// `of`: every address is in exactly one share.
    #[test]
    fn the_shares_cover_the_pool_once() {
        let mut sn = subnet(("198.18.0.7", "198.18.0.20"));
        sn.pools
            .push((u32::from(ip("198.18.0.15")), u32::from(ip("198.18.0.30"))));
        sn.pools
            .push((u32::from(ip("198.18.0.33")), u32::from(ip("198.18.0.33"))));
        let sets = Sets::new(&[], &[]);
        let ex = sets.excluded();
        for of in 1..=4 {
            let mut all = Vec::new();
            for slot in 0..of {
                let mut t = Leases::default();
                t.set_share(Share { slot, of });
                let mut mine = Vec::new();
                for n in 0..25u8 {
                    let (c, mac) = key(n);
                    let Some(a) = t.pick(0, &sn, &c, None, &ex, false, 0) else {
                        break;
                    };
                    t.put(held(a, c, mac, State::Bound { expires: 100 }));
                    mine.push(a);
                }
                // Its own share, in order; the rest only for a client that waited.
                assert!(
                    mine.iter().all(|a| u32::from(*a) % of == slot),
                    "of {of} slot {slot}: {mine:?}"
                );
                assert!(mine.is_sorted());
                let (c, _) = key(99);
                let other = t.pick(0, &sn, &c, None, &ex, true, 0);
                assert_eq!(other.is_some(), of > 1, "of {of} slot {slot}");
                assert!(other.is_none_or(|a| u32::from(a) % of != slot));
                all.extend(mine);
            }
            all.sort();
            let want: Vec<Ipv4Addr> = (7..=30)
                .chain([33])
                .map(|d| Ipv4Addr::new(198, 18, 0, d))
                .collect();
            assert_eq!(all, want, "of {of}");
        }
    }

    proptest::proptest! {
        /// The index agrees with the table after any sequence of grants, releases,
        /// removals and sweeps: it counts exactly the pool addresses (not excluded) that
        /// have no record or a free one, and a pick succeeds exactly when there is one.
        #[test]
        /// Under any share of the pool, and with the share changing as boxes come and go.
        fn the_free_index_agrees_with_the_table(
            ops in proptest::collection::vec((0u8..6, 0u8..24, 0u64..40), 1..120)
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
                        if let Some(a) = t.pick(0, &sn, &c, None, &ex, false, now) {
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
                    4 => {
                        t.sweep(now);
                    }
                    _ => {
                        let of = u32::from(n % 4) + 1;
                        t.set_share(Share { slot: (dt as u32) % of, of });
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
                let share = t.share;
                let mine = (10..=24u8)
                    .map(|d| Ipv4Addr::new(198, 18, 0, d))
                    .filter(|a| u32::from(*a) % share.of == share.slot)
                    .filter(|a| !server.contains(a) && !reserved.contains(a))
                    .filter(|a| t.get(*a).is_none_or(|l| l.state == State::Free))
                    .count();
                let own = t.pick(0, &sn, &stranger, None, &ex, false, now);
                proptest::prop_assert_eq!(own.is_some(), mine > 0);
                proptest::prop_assert!(own.is_none_or(|a| u32::from(a) % share.of == share.slot));
                let got = t.pick(0, &sn, &stranger, None, &ex, true, now);
                proptest::prop_assert_eq!(got.is_some(), naive > 0);
                if let Some(a) = got {
                    proptest::prop_assert!(sn.in_pool(a) && !server.contains(&a) && !reserved.contains(&a));
                    proptest::prop_assert!(t.get(a).is_none_or(|l| !l.is_live(now)));
                }
            }
        }
    }
}
