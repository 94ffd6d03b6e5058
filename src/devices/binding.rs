//! Retail PIN binding, persisted in the store: `GET <init_prefix>/<PIN>` from a proven
//! device binds it to the inventory account that holds the PIN. The check and the write
//! happen in one redb write transaction, so two phones racing for one PIN cannot both win.

use std::sync::Arc;

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

pub struct Bindings {
    store: Arc<Store>,
    per_pin: usize,
}

impl Bindings {
    pub fn new(store: Arc<Store>, per_pin: usize) -> Bindings {
        Bindings { store, per_pin }
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
}
