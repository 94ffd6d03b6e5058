//! Retail PIN binding, persisted in the store: `GET <init_prefix>/<PIN>` from a proven
//! device binds it to the inventory account that holds the PIN. The check and the write
//! happen in one redb write transaction, so two phones racing for one PIN cannot both win.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use super::Mac;
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

pub struct Bindings {
    store: Arc<Store>,
    per_pin: usize,
    /// Wrong PINs: first failure of the window, count.
    wrong: Mutex<HashMap<Guesser, (Instant, u32)>>,
}

impl Bindings {
    pub fn new(store: Arc<Store>, per_pin: usize) -> Bindings {
        Bindings {
            store,
            per_pin,
            wrong: Mutex::default(),
        }
    }

    fn wrong(&self) -> std::sync::MutexGuard<'_, HashMap<Guesser, (Instant, u32)>> {
        self.wrong.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Has this device or address used up its wrong PINs for now?
    pub fn locked_out(&self, mac: Mac, ip: IpAddr) -> bool {
        let now = Instant::now();
        let w = self.wrong();
        [Guesser::Device(mac), Guesser::Address(ip)]
            .iter()
            .any(|g| matches!(w.get(g), Some((t, n)) if *n >= MAX_WRONG_PINS && now.duration_since(*t) < GUESS_WINDOW))
    }

    /// Count a wrong (unknown or taken) PIN against the device and the address.
    pub fn wrong_pin(&self, mac: Mac, ip: IpAddr) {
        let now = Instant::now();
        let mut w = self.wrong();
        if w.len() > 10_000 {
            // Bounded memory: forget windows that are over.
            w.retain(|_, (t, _)| now.duration_since(*t) < GUESS_WINDOW);
        }
        for g in [Guesser::Device(mac), Guesser::Address(ip)] {
            let e = w.entry(g).or_insert((now, 0));
            if now.duration_since(e.0) >= GUESS_WINDOW {
                *e = (now, 0);
            }
            e.1 += 1;
        }
    }

    /// A device that bound starts over (its address keeps its count: others may share it).
    pub fn bound_ok(&self, mac: Mac) {
        self.wrong().remove(&Guesser::Device(mac));
    }

    /// The PIN `mac` is bound to, if any.
    pub fn pin_of(&self, mac: Mac) -> Option<String> {
        let tx = self.store.db().begin_read().ok()?;
        let t = tx.open_table(DEVICE_PIN).ok()?;
        let v = t.get(mac.to_hex().as_str()).ok()??;
        Some(v.value().to_string())
    }

    pub fn bind(&self, pin: &str, mac: Mac) -> Result<Bound, BindRefusal> {
        let st = |e: &dyn std::fmt::Display| BindRefusal::Store(e.to_string());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_device_per_pin_and_persistence() {
        let d = tempfile::tempdir().unwrap();
        let a: Mac = "00562b043615".parse().unwrap();
        let b: Mac = "0015654aa937".parse().unwrap();
        {
            let b1 = Bindings::new(Store::open(d.path()).unwrap(), 1);
            assert_eq!(b1.pin_of(a), None);
            assert_eq!(b1.bind("1234", a), Ok(Bound::New));
            assert_eq!(b1.bind("1234", a), Ok(Bound::Again));
            assert_eq!(b1.bind("1234", b), Err(BindRefusal::PinTaken));
            assert_eq!(b1.bind("9999", a), Err(BindRefusal::BoundElsewhere));
            assert_eq!(b1.pin_of(b), None);
        }
        let b2 = Bindings::new(Store::open(d.path()).unwrap(), 2);
        assert_eq!(b2.pin_of(a).as_deref(), Some("1234"));
        // With two allowed, a second device may join.
        assert_eq!(b2.bind("1234", b), Ok(Bound::New));
        assert_eq!(b2.pin_of(b).as_deref(), Some("1234"));
    }

    #[test]
    fn wrong_pins_lock_out_the_device_and_the_address() {
        let d = tempfile::tempdir().unwrap();
        let b = Bindings::new(Store::open(d.path()).unwrap(), 1);
        let (a, other): (Mac, Mac) = (
            "00562b043615".parse().unwrap(),
            "0015654aa937".parse().unwrap(),
        );
        let (ip, ip2): (IpAddr, IpAddr) =
            ("198.18.0.7".parse().unwrap(), "198.18.0.8".parse().unwrap());
        for _ in 0..MAX_WRONG_PINS - 1 {
            b.wrong_pin(a, ip);
        }
        assert!(!b.locked_out(a, ip));
        b.wrong_pin(a, ip);
        assert!(b.locked_out(a, ip));
        // A new MAC from the same address, or the same MAC from a new address: still out.
        assert!(b.locked_out(other, ip));
        assert!(b.locked_out(a, ip2));
        assert!(!b.locked_out(other, ip2));
        // A device that binds clears its own count, not its address's.
        b.bound_ok(a);
        assert!(!b.locked_out(a, ip2));
        assert!(b.locked_out(a, ip));
    }
}
