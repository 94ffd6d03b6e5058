//! The lease table and address allocation: pure data, no I/O, times in Unix seconds
//! passed in by the caller (so tests can move the clock).
//!
//! Rules: a client keeps the address it had (even after its lease ran out, as long as
//! nobody else took it); a reservation wins; an address is never handed out when it is
//! the server's, reserved for another device, declined (quarantined) or held by another
//! client's live offer or lease.

use std::collections::{HashMap, HashSet};
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
    /// Next address to try per subnet (index), so allocation does not rescan from the start.
    cursor: HashMap<usize, u32>,
}

/// Addresses never handed out from the pool of one subnet.
pub struct Excluded<'a> {
    pub server: &'a [Ipv4Addr],
    pub reserved: &'a HashSet<Ipv4Addr>,
}

impl Leases {
    pub fn get(&self, ip: Ipv4Addr) -> Option<&Lease> {
        self.by_ip.get(&ip)
    }

    pub fn of_client(&self, client: &ClientKey) -> Option<&Lease> {
        self.by_client.get(client).and_then(|ip| self.by_ip.get(ip))
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
        match self.by_ip.get(&ip) {
            None => true,
            Some(l) if matches!(l.state, State::Declined { .. }) => !l.is_live(now),
            Some(l) => l.client == *client || !l.is_live(now),
        }
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
        let size = subnet.pool_size();
        if size == 0 {
            return None;
        }
        // Walk the pools from the cursor: first pass takes never-used addresses, second
        // pass reclaims expired/released ones of other clients (oldest knowledge lost last).
        let start = *self.cursor.get(&idx).unwrap_or(&0) as u64 % size;
        for pass in 0..2 {
            for k in 0..size {
                let off = (start + k) % size;
                let ip = nth(subnet, off);
                let fresh = !self.by_ip.contains_key(&ip);
                if (pass == 0 && !fresh) || !usable(self, ip) {
                    continue;
                }
                self.cursor.insert(idx, ((off + 1) % size) as u32);
                return Some(ip);
            }
        }
        None
    }

    /// Record `lease` at its address, dropping whatever other client had it before.
    pub fn put(&mut self, lease: Lease) {
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

fn nth(subnet: &Subnet, mut off: u64) -> Ipv4Addr {
    for &(a, b) in &subnet.pools {
        let len = (b - a) as u64 + 1;
        if off < len {
            return Ipv4Addr::from(a + off as u32);
        }
        off -= len;
    }
    unreachable!("offset within pool_size")
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
        Lease {
            ip,
            client,
            mac,
            hostname: None,
            vendor_class: None,
            state,
        }
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn never_hands_out_server_reserved_or_declined_addresses() {
        let sn = subnet(("198.18.0.10", "198.18.0.14"));
        let mut t = Leases::default();
        let reserved: HashSet<_> = [ip("198.18.0.11")].into();
        let server = [ip("198.18.0.10")];
        let ex = Excluded {
            server: &server,
            reserved: &reserved,
        };
        t.put(lease(
            ip("198.18.0.12"),
            99,
            State::Declined { until: 1000 },
        ));
        let mut got = Vec::new();
        for n in 1..=2 {
            let (c, mac) = key(n);
            let a = t.pick(0, &sn, &c, None, &ex, 100).unwrap();
            t.put(Lease {
                ip: a,
                client: c,
                mac,
                hostname: None,
                vendor_class: None,
                state: State::Bound { expires: 5000 },
            });
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
        let sn = subnet(("198.18.0.10", "198.18.0.11"));
        let mut t = Leases::default();
        let reserved = HashSet::new();
        let ex = Excluded {
            server: &[],
            reserved: &reserved,
        };
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
        let sn = subnet(("198.18.0.10", "198.18.0.50"));
        let mut t = Leases::default();
        let reserved = HashSet::new();
        let ex = Excluded {
            server: &[],
            reserved: &reserved,
        };
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
        let sn = subnet(("198.18.0.10", "198.18.0.10"));
        let mut t = Leases::default();
        let reserved = HashSet::new();
        let ex = Excluded {
            server: &[],
            reserved: &reserved,
        };
        t.put(lease(ip("198.18.0.10"), 1, State::Offered { until: 30 }));
        let (c2, _) = key(2);
        assert_eq!(t.pick(0, &sn, &c2, None, &ex, 10), None);
        t.sweep(31);
        assert!(t.get(ip("198.18.0.10")).is_none());
        assert_eq!(t.pick(0, &sn, &c2, None, &ex, 31), Some(ip("198.18.0.10")));
    }
}
