//! `encrypt`: a per-device answer for a device with a `key` (and `devices.encryption`
//! on) is encrypted in OpenSSL's salted format ([`crypt`]), with the device's own
//! `digest` if it names one.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;

use super::{Ctx, Flow, Stage};
use crate::devices::{config, crypt, generated};

pub struct Encrypt;

impl Stage for Encrypt {
    fn name(&self) -> &'static str {
        "encrypt"
    }

    fn run(&self, ctx: &mut Ctx<'_>) -> Flow {
        let pv = ctx.pv;
        let cfg = &pv.cfg.encryption;
        let Some(key) = ctx.vars.get("key").filter(|_| cfg.enabled) else {
            return Flow::Continue;
        };
        let Some(entry) = ctx.entry.clone() else {
            return Flow::Continue;
        };
        let digest = match ctx.vars.get("digest").map(String::as_str) {
            Some("sha256") => config::Digest::Sha256,
            Some("md5") => config::Digest::Md5,
            _ => cfg.digest,
        };
        let body = crypt::encrypt(&entry.body, key, digest, cfg.gzip);
        pv.metrics.encrypted.inc();
        let inv_modified = ctx.inventory().modified;
        let modified = entry
            .modified
            .max(inv_modified.unwrap_or(SystemTime::UNIX_EPOCH));
        ctx.entry = Some(Arc::new(generated(
            entry.key.clone(),
            Bytes::from(body),
            modified,
        )));
        Flow::Continue
    }
}
