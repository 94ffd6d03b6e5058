//! Retail PIN binding, persisted in the store: `GET <init_prefix>/<PIN>` from a proven
//! device binds it to the inventory account that holds the PIN. The check and the write
//! happen in one redb write transaction, so two phones racing for one PIN cannot both win.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use super::Mac;
use crate::limit::{self, Guesses};
use crate::store::Store;

/// PIN → bound MACs (`00562b043615,0015654aa937`).
const PIN_DEVICES: TableDefinition<&str, &str> = TableDefinition::new("devices_pin_bindings");
/// MAC (`00562b043615`) → the PIN it is bound to.
const DEVICE_PIN: TableDefinition<&str, &str> = TableDefinition::new("devices_bound_pin");

#[derive(Debug, PartialEq, Eq)]
pub enum Bound {
    /// Bound now.
    New,
    /// Was already bound to this PIN (a phone repeating its init request).
    Again,
}

#[derive(Debug, PartialEq, Eq)]
pub enum BindRefusal {
    /// The PIN already has its allowed number of devices.
    PinTaken,
    /// This device is bound to another PIN.
    BoundElsewhere,
    Store(String),
}

impl BindRefusal {
    pub fn reason(&self) -> &'static str {
        match self {
            BindRefusal::PinTaken => "pin_taken",
            BindRefusal::BoundElsewhere => "device_bound_elsewhere",
            BindRefusal::Store(_) => "store_error",
        }
    }
}

/// Wrong PINs allowed per device and per address within [`GUESS_WINDOW`]; beyond that,
/// binding attempts from it are refused until the window has passed. A PIN of a few
/// digits would otherwise fall to a loop of requests.
pub const MAX_WRONG_PINS: u32 = 5;
pub const GUESS_WINDOW: Duration = Duration::from_secs(15 * 60);

/// Who is guessing: counted both ways, so neither a new address nor a new MAC resets it.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
enum Guesser {
    Device(Mac),
    Address(IpAddr),
}

/// Why a binding attempt was not even tried (metric reason labels).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Throttle {
    /// This device or this address used up its [`MAX_WRONG_PINS`].
    Guesser,
    /// Everyone together used up `devices.binding.wrong_pins_budget`.
    Global,
}

impl Throttle {
    pub fn reason(self) -> &'static str {
        match self {
            Throttle::Guesser => "pin_attempts_exceeded",
            Throttle::Global => "pin_budget_exhausted",
        }
    }
}

pub struct Bindings {
    store: Arc<Store>,
    /// `store.backend: postgres`: bindings live there, shared by every box.
    shared: Option<Arc<crate::store::postgres::Pg>>,
    per_pin: usize,
    /// `init_prefix` as a catalog key, lower case (matched regardless of case).
    prefix: String,
    /// Wrong PINs per device, per address and from everyone together.
    guesses: Guesses<Guesser>,
}

impl Bindings {
    pub fn new(store: Arc<Store>, per_pin: usize, init_prefix: &str, budget: u32) -> Bindings {
        Bindings {
            store,
            shared: crate::store::shared(),
            per_pin,
            prefix: init_prefix.trim_matches('/').to_ascii_lowercase(),
            guesses: Guesses::new(
                MAX_WRONG_PINS,
                budget,
                GUESS_WINDOW,
                "devices.binding.wrong_pins_budget",
            ),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The rest of `key` (a normalized catalog key) after the init prefix, when it is a
    /// binding request: `""` or `"/<PIN>"`.
    pub fn route<'k>(&self, key: &'k str) -> Option<&'k str> {
        let n = self.prefix.len();
        let head = key.get(..n)?;
        let rest = &key[n..];
        (head.eq_ignore_ascii_case(&self.prefix) && (rest.is_empty() || rest.starts_with('/')))
            .then_some(rest)
    }

    /// Take one binding attempt for this device and address: refused when either has used
    /// up its [`MAX_WRONG_PINS`] in this window, or everyone together the global budget.
    /// Checked and counted under one lock, so parallel requests cannot all slip past the
    /// check; a right PIN gives its attempt back ([`Bindings::bound_ok`]).
    pub fn try_attempt(&self, mac: Mac, ip: IpAddr) -> Result<(), Throttle> {
        let keys = [Guesser::Device(mac), Guesser::Address(ip)];
        self.guesses.try_attempt(&keys).map_err(|t| match t {
            limit::Throttle::Guesser => Throttle::Guesser,
            limit::Throttle::Global => Throttle::Global,
        })
    }

    /// A right PIN: the device starts over, and its address gets this attempt back (others
    /// may share the address).
    pub fn bound_ok(&self, mac: Mac, ip: IpAddr) {
        self.guesses
            .right(&[Guesser::Device(mac)], &[Guesser::Address(ip)]);
    }

    /// The PIN `mac` is bound to, if any.
    pub fn pin_of(&self, mac: Mac) -> Option<String> {
        if let Some(pg) = &self.shared {
            // Unreachable database: unknown, like an unbound device (binding answers 503).
            return on_shared(pg.pin_of(mac)).and_then(|r| r.ok()).flatten();
        }
        let tx = self.store.db().begin_read().ok()?;
        let t = tx.open_table(DEVICE_PIN).ok()?;
        let v = t.get(mac.to_hex().as_str()).ok()??;
        Some(v.value().to_string())
    }

    /// Every PIN with the devices (`00562b043615`) bound to it, by PIN.
    pub fn list(&self) -> Result<Vec<(String, Vec<String>)>, String> {
        match &self.shared {
            Some(pg) => shared_answer(on_shared(pg.list_bindings())),
            None => list_in(&self.store),
        }
    }

    /// Free `pin`: the devices bound to it are unbound and the PIN can bind another
    /// phone. Returns the devices it had (none: it was not bound).
    pub fn unbind(&self, pin: &str) -> Result<Vec<String>, String> {
        match &self.shared {
            Some(pg) => shared_answer(on_shared(pg.unbind_pin(pin))),
            None => unbind_in(&self.store, pin),
        }
    }

    pub fn bind(&self, pin: &str, mac: Mac) -> Result<Bound, BindRefusal> {
        let st = |e: &dyn std::fmt::Display| BindRefusal::Store(e.to_string());
        if let Some(pg) = &self.shared {
            return on_shared(pg.bind(pin, mac, self.per_pin))
                .unwrap_or_else(|| Err(st(&"PostgreSQL did not answer in time")));
        }
        let hex = mac.to_hex();
        let tx = self.store.db().begin_write().map_err(|e| st(&e))?;
        let outcome = {
            let mut by_dev = tx.open_table(DEVICE_PIN).map_err(|e| st(&e))?;
            let mut by_pin = tx.open_table(PIN_DEVICES).map_err(|e| st(&e))?;
            let current = by_dev
                .get(hex.as_str())
                .map_err(|e| st(&e))?
                .map(|v| v.value().to_string());
            match current {
                Some(p) if p == pin => Bound::Again,
                Some(_) => return Err(BindRefusal::BoundElsewhere),
                None => {
                    let mut macs: Vec<String> = by_pin
                        .get(pin)
                        .map_err(|e| st(&e))?
                        .map(|v| v.value().split(',').map(str::to_string).collect())
                        .unwrap_or_default();
                    macs.retain(|m| !m.is_empty());
                    if macs.len() >= self.per_pin {
                        return Err(BindRefusal::PinTaken);
                    }
                    macs.push(hex.clone());
                    by_pin
                        .insert(pin, macs.join(",").as_str())
                        .map_err(|e| st(&e))?;
                    by_dev.insert(hex.as_str(), pin).map_err(|e| st(&e))?;
                    Bound::New
                }
            }
        };
        // A refusal above drops `tx`, which aborts it: nothing is bound.
        tx.commit().map_err(|e| st(&e))?;
        Ok(outcome)
    }
}

/// [`Bindings::list`] on a store (also for the CLI while no server holds it).
pub fn list_in(store: &Store) -> Result<Vec<(String, Vec<String>)>, String> {
    let tx = store.db().begin_read().map_err(|e| e.to_string())?;
    let t = match tx.open_table(PIN_DEVICES) {
        Ok(t) => t,
        // Nothing was ever bound.
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(e.to_string()),
    };
    let mut out = Vec::new();
    for row in t.iter().map_err(|e| e.to_string())? {
        let (k, v) = row.map_err(|e| e.to_string())?;
        let macs: Vec<String> = v
            .value()
            .split(',')
            .filter(|m| !m.is_empty())
            .map(str::to_string)
            .collect();
        if !macs.is_empty() {
            out.push((k.value().to_string(), macs));
        }
    }
    Ok(out)
}

/// [`Bindings::unbind`] on a store, in one write transaction.
pub fn unbind_in(store: &Store, pin: &str) -> Result<Vec<String>, String> {
    let st = |e: &dyn std::fmt::Display| e.to_string();
    let tx = store.db().begin_write().map_err(|e| st(&e))?;
    let macs = {
        let mut by_dev = tx.open_table(DEVICE_PIN).map_err(|e| st(&e))?;
        let mut by_pin = tx.open_table(PIN_DEVICES).map_err(|e| st(&e))?;
        let macs: Vec<String> = by_pin
            .remove(pin)
            .map_err(|e| st(&e))?
            .map(|v| v.value().split(',').map(str::to_string).collect())
            .unwrap_or_default();
        let macs: Vec<String> = macs.into_iter().filter(|m| !m.is_empty()).collect();
        for m in &macs {
            by_dev.remove(m.as_str()).map_err(|e| st(&e))?;
        }
        macs
    };
    tx.commit().map_err(|e| st(&e))?;
    Ok(macs)
}

/// A shared-store answer as the redb paths give theirs.
fn shared_answer<T>(r: Option<anyhow::Result<T>>) -> Result<T, String> {
    match r {
        Some(r) => r.map_err(|e| format!("{e:#}")),
        None => Err("PostgreSQL did not answer in time".into()),
    }
}

/// Run a shared-store call from the (synchronous) pipeline: the runtime's worker steps
/// aside while it waits, bounded so an unreachable database cannot hold a request.
fn on_shared<T>(f: impl std::future::Future<Output = T>) -> Option<T> {
    let rt = tokio::runtime::Handle::try_current().ok()?;
    tokio::task::block_in_place(|| {
        rt.block_on(tokio::time::timeout(Duration::from_secs(3), f))
            .ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_device_per_pin_and_persistence() {
        let d = tempfile::tempdir().unwrap();
        let a: Mac = "00562b043615".parse().unwrap();
        let b: Mac = "0015654aa937".parse().unwrap();
        {
            let b1 = Bindings::new(Store::open(d.path()).unwrap(), 1, "/init", 50);
            assert_eq!(b1.pin_of(a), None);
            assert_eq!(b1.bind("1234", a), Ok(Bound::New));
            assert_eq!(b1.bind("1234", a), Ok(Bound::Again));
            assert_eq!(b1.bind("1234", b), Err(BindRefusal::PinTaken));
            assert_eq!(b1.bind("9999", a), Err(BindRefusal::BoundElsewhere));
            assert_eq!(b1.pin_of(b), None);
        }
        let b2 = Bindings::new(Store::open(d.path()).unwrap(), 2, "/init", 50);
        assert_eq!(b2.pin_of(a).as_deref(), Some("1234"));
        // With two allowed, a second device may join.
        assert_eq!(b2.bind("1234", b), Ok(Bound::New));
        assert_eq!(b2.pin_of(b).as_deref(), Some("1234"));
        assert_eq!(
            b2.list().unwrap(),
            vec![("1234".to_string(), vec![a.to_hex(), b.to_hex()])]
        );
        // Unbound: the PIN takes another device, the old ones may bind elsewhere.
        assert_eq!(b2.unbind("1234").unwrap(), vec![a.to_hex(), b.to_hex()]);
        assert_eq!(b2.unbind("1234").unwrap(), Vec::<String>::new());
        assert_eq!(b2.pin_of(a), None);
        assert!(b2.list().unwrap().is_empty());
        assert_eq!(b2.bind("9999", a), Ok(Bound::New));
    }

    #[test]
    fn wrong_pins_lock_out_the_device_and_the_address() {
        let d = tempfile::tempdir().unwrap();
        let b = Bindings::new(Store::open(d.path()).unwrap(), 1, "init", 50);
        let (a, other): (Mac, Mac) = (
            "00562b043615".parse().unwrap(),
            "0015654aa937".parse().unwrap(),
        );
        let (ip, ip2): (IpAddr, IpAddr) =
            ("198.18.0.7".parse().unwrap(), "198.18.0.8".parse().unwrap());
        for _ in 0..MAX_WRONG_PINS {
            assert!(b.try_attempt(a, ip).is_ok());
        }
        assert_eq!(b.try_attempt(a, ip), Err(Throttle::Guesser));
        // A new MAC from the same address, or the same MAC from a new address: still out.
        assert_eq!(b.try_attempt(other, ip), Err(Throttle::Guesser));
        assert_eq!(b.try_attempt(a, ip2), Err(Throttle::Guesser));
        assert!(b.try_attempt(other, ip2).is_ok());
        // A right PIN clears the device's count and gives its address the attempt back.
        b.bound_ok(a, ip);
        assert!(b.try_attempt(a, ip2).is_ok());
        assert!(
            b.try_attempt(a, ip).is_ok(),
            "the address had one attempt returned"
        );
        assert_eq!(b.try_attempt(other, ip), Err(Throttle::Guesser));
    }

    #[test]
    fn route_matches_the_prefix_in_any_case() {
        let d = tempfile::tempdir().unwrap();
        let b = Bindings::new(Store::open(d.path()).unwrap(), 1, "/Init/", 50);
        assert_eq!(b.prefix(), "init");
        assert_eq!(b.route("INIT/1234"), Some("/1234"));
        assert_eq!(b.route("init"), Some(""));
        assert_eq!(b.route("initial/1234"), None);
        assert_eq!(b.route("in"), None);
    }

    #[test]
    fn rotating_macs_and_addresses_share_one_global_budget() {
        let d = tempfile::tempdir().unwrap();
        let budget = 12;
        let b = Bindings::new(Store::open(d.path()).unwrap(), 1, "init", budget);
        let mac = |i: u32| Mac([2, 0, 0, 0, (i >> 8) as u8, i as u8]);
        let ip = |i: u32| IpAddr::from([198, 18, (i >> 8) as u8, i as u8]);
        // Each guess from a fresh MAC and a fresh address: no per-guesser limit is near.
        for i in 0..budget {
            assert_eq!(b.try_attempt(mac(i), ip(i)), Ok(()), "guess {i}");
        }
        assert_eq!(
            b.try_attempt(mac(1000), ip(1000)),
            Err(Throttle::Global),
            "the budget is spent for everyone"
        );
        assert_eq!(b.try_attempt(mac(1001), ip(1001)), Err(Throttle::Global));
        // A device that did bind gives its attempt back: one more may try.
        b.bound_ok(mac(3), ip(3));
        assert_eq!(b.try_attempt(mac(1002), ip(1002)), Ok(()));
        assert_eq!(b.try_attempt(mac(1003), ip(1003)), Err(Throttle::Global));
        // A per-guesser refusal is not counted against the budget.
        let d2 = tempfile::tempdir().unwrap();
        let b = Bindings::new(Store::open(d2.path()).unwrap(), 1, "init", budget);
        for _ in 0..MAX_WRONG_PINS {
            assert_eq!(b.try_attempt(mac(1), ip(1)), Ok(()));
        }
        for _ in 0..20 {
            assert_eq!(b.try_attempt(mac(1), ip(1)), Err(Throttle::Guesser));
        }
        for i in 0..budget - MAX_WRONG_PINS {
            assert_eq!(b.try_attempt(mac(100 + i), ip(100 + i)), Ok(()));
        }
        assert_eq!(b.try_attempt(mac(999), ip(999)), Err(Throttle::Global));
    }
}
