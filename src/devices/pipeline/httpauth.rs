//! `http_auth`: HTTP Basic and Digest (RFC 7616: MD5 and SHA-256, `qop=auth`) as one more
//! way a device is proven, with `devices.trust.http_auth`. A device's own credentials
//! (`http_user`, `http_password` in its inventory record) prove that device; an account's
//! (`devices.http_auth.accounts`) prove the MAC the request already names (lease,
//! User-Agent or path). It runs before `authorize`, when what was found says whether a
//! proven device is needed: a per-device answer without credentials gets a 401 with the
//! challenges; wrong ones get a 401 too, counted and throttled like PIN guesses.
//!
//! Nonces are `base64url(time ‖ HMAC(secret, time ‖ realm))`: checking one needs no table.
//! Replays are refused by a bounded table of the highest `nc` seen per nonce; a nonce
//! pushed out of a full table counts as stale, so the bound never lets a replay in.
//! Passwords are never logged, and every comparison of a secret is constant-time.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use md5::Md5;
use sha2::{Digest as _, Sha256};

use super::{Ctx, Flow, Found, Stage};
use crate::catalog::Refusal;
use crate::devices::access::Owner;
use crate::devices::binding::{GUESS_WINDOW, MAX_WRONG_PINS};
use crate::devices::config::{Config, DigestAlgorithm};
use crate::devices::{Mac, ResultLabels, Source};
use crate::limit::{Guesses, Throttle};
use crate::secret::{ct_eq, hex, hmac_sha256, same_secret};

/// Nonces whose `nc` is tracked at once; beyond it the oldest is dropped (and its
/// generation counts as stale).
const NONCE_TABLE: usize = 4096;
/// The longest header value parsed; longer ones are malformed.
const MAX_HEADER: usize = 4096;
/// A nonce's time may run this far ahead of ours (clock steps), no further.
const CLOCK_SKEW: u64 = 5;

/// What the HTTP front end knows beyond the path: the method and target (Digest hashes
/// them) and the `Authorization` header. Debug never shows the header.
#[derive(Clone, Copy)]
pub struct HttpFacts<'a> {
    pub method: &'a str,
    /// The request target as sent (`/cfg/x.xml?a=b`).
    pub uri: &'a str,
    pub authorization: Option<&'a str>,
}

impl<'a> HttpFacts<'a> {
    /// What an HTTP request says for the credential check (read, never copied).
    pub fn of<B>(req: &'a http::Request<B>) -> HttpFacts<'a> {
        HttpFacts {
            method: req.method().as_str(),
            uri: req
                .uri()
                .path_and_query()
                .map_or(req.uri().path(), |p| p.as_str()),
            authorization: req
                .headers()
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok()),
        }
    }
}

impl std::fmt::Debug for HttpFacts<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpFacts")
            .field("method", &self.method)
            .field("uri", &self.uri)
            .field("authorization", &self.authorization.map(|_| "<hidden>"))
            .finish()
    }
}

/// What a client's `Authorization` header says.
#[derive(PartialEq, Eq)]
pub enum Credentials {
    Basic { user: String, password: String },
    Digest(DigestParams),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Basic { user, .. } => write!(f, "Basic({user:?}, <hidden>)"),
            Credentials::Digest(d) => write!(f, "Digest({d:?})"),
        }
    }
}

/// The parameters of a Digest `Authorization` header (RFC 7616 section 3.4).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DigestParams {
    pub username: String,
    pub realm: String,
    pub nonce: String,
    pub uri: String,
    pub response: String,
    pub algorithm: Option<String>,
    pub cnonce: Option<String>,
    pub opaque: Option<String>,
    pub qop: Option<String>,
    pub nc: Option<String>,
    pub userhash: bool,
}

/// Parse an `Authorization` header value: `Basic <base64>` or `Digest k=v, k="v", ...`.
/// `None` for anything else or anything malformed; never panics.
pub fn parse_authorization(h: &str) -> Option<Credentials> {
    if h.len() > MAX_HEADER {
        return None;
    }
    let h = h.trim();
    let (scheme, rest) = h.split_once([' ', '\t']).unwrap_or((h, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(rest.trim())
            .ok()?;
        let text = String::from_utf8(raw).ok()?;
        let (user, password) = text.split_once(':')?;
        return Some(Credentials::Basic {
            user: user.to_string(),
            password: password.to_string(),
        });
    }
    if !scheme.eq_ignore_ascii_case("digest") {
        return None;
    }
    let mut d = DigestParams::default();
    let mut seen = Vec::new();
    for (k, v) in parse_params(rest)? {
        let k = k.to_ascii_lowercase();
        if seen.contains(&k) {
            return None; // a repeated parameter is ambiguous
        }
        seen.push(k.clone());
        match k.as_str() {
            "username" => d.username = v,
            "realm" => d.realm = v,
            "nonce" => d.nonce = v,
            "uri" => d.uri = v,
            "response" => d.response = v,
            "algorithm" => d.algorithm = Some(v),
            "cnonce" => d.cnonce = Some(v),
            "opaque" => d.opaque = Some(v),
            "qop" => d.qop = Some(v),
            "nc" => d.nc = Some(v),
            "userhash" => d.userhash = v.eq_ignore_ascii_case("true"),
            // `username*` (RFC 8187) and extensions: not used by phones; ignored.
            _ => {}
        }
    }
    for needed in ["username", "realm", "nonce", "uri", "response"] {
        if !seen.iter().any(|k| k == needed) {
            return None;
        }
    }
    Some(Credentials::Digest(d))
}

/// `k=token` or `k="quoted \"string\""`, separated by commas and optional white space.
fn parse_params(s: &str) -> Option<Vec<(String, String)>> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let skip = |i: &mut usize, also_comma: bool| {
        while *i < b.len() && (b[*i] == b' ' || b[*i] == b'\t' || (also_comma && b[*i] == b',')) {
            *i += 1;
        }
    };
    loop {
        skip(&mut i, true);
        if i >= b.len() {
            return Some(out);
        }
        let start = i;
        while i < b.len() && is_tchar(b[i]) {
            i += 1;
        }
        if i == start {
            return None;
        }
        let key = &s[start..i];
        skip(&mut i, false);
        if b.get(i) != Some(&b'=') {
            return None;
        }
        i += 1;
        skip(&mut i, false);
        let value = if b.get(i) == Some(&b'"') {
            i += 1;
            let mut v = Vec::new();
            loop {
                match b.get(i)? {
                    b'"' => {
                        i += 1;
                        break;
                    }
                    b'\\' => {
                        v.push(*b.get(i + 1)?);
                        i += 2;
                    }
                    &c => {
                        v.push(c);
                        i += 1;
                    }
                }
            }
            String::from_utf8(v).ok()?
        } else {
            let st = i;
            while i < b.len() && is_tchar(b[i]) {
                i += 1;
            }
            if i == st {
                return None;
            }
            s[st..i].to_string()
        };
        out.push((key.to_string(), value));
        skip(&mut i, false);
        match b.get(i) {
            None => return Some(out),
            Some(b',') => i += 1,
            Some(_) => return None,
        }
        if out.len() > 32 {
            return None;
        }
    }
}

fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~/:".contains(&c)
}

fn h(alg: DigestAlgorithm, data: &str) -> String {
    match alg {
        DigestAlgorithm::Md5 => hex(&Md5::digest(data.as_bytes())),
        DigestAlgorithm::Sha256 => hex(&Sha256::digest(data.as_bytes())),
    }
}

/// The algorithm a Digest header names (absent: MD5, as RFC 7616 says).
pub fn algorithm_of(name: Option<&str>) -> Option<DigestAlgorithm> {
    match name {
        None => Some(DigestAlgorithm::Md5),
        Some(n) if n.eq_ignore_ascii_case("MD5") => Some(DigestAlgorithm::Md5),
        Some(n) if n.eq_ignore_ascii_case("SHA-256") => Some(DigestAlgorithm::Sha256),
        _ => None,
    }
}

fn algorithm_name(a: DigestAlgorithm) -> &'static str {
    match a {
        DigestAlgorithm::Md5 => "MD5",
        DigestAlgorithm::Sha256 => "SHA-256",
    }
}

/// The `response` a client with `password` sends for `d`, with `qop=auth` (RFC 7616
/// section 3.4.1): `H(H(user:realm:password):nonce:nc:cnonce:qop:H(method:uri))`.
pub fn digest_response(
    alg: DigestAlgorithm,
    d: &DigestParams,
    password: &str,
    method: &str,
) -> String {
    let ha1 = h(alg, &format!("{}:{}:{password}", d.username, d.realm));
    let ha2 = h(alg, &format!("{method}:{}", d.uri));
    h(
        alg,
        &format!(
            "{ha1}:{}:{}:{}:{}:{ha2}",
            d.nonce,
            d.nc.as_deref().unwrap_or(""),
            d.cnonce.as_deref().unwrap_or(""),
            d.qop.as_deref().unwrap_or(""),
        ),
    )
}

/// `user:password` lines (`#` comments, blank lines) of an accounts file.
pub fn parse_accounts(text: &str) -> Result<HashMap<String, String>, String> {
    let mut out = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let l = line.trim_end_matches('\r');
        if l.trim().is_empty() || l.trim_start().starts_with('#') {
            continue;
        }
        let Some((user, pw)) = l.split_once(':') else {
            return Err(format!("line {}: no `:` between user and password", n + 1));
        };
        if user.is_empty() || user.contains(['"', '\\']) || pw.is_empty() {
            return Err(format!(
                "line {}: an empty user or password, or a user with quotes",
                n + 1
            ));
        }
        if out.insert(user.to_string(), pw.to_string()).is_some() {
            return Err(format!("line {}: user `{user}` is listed twice", n + 1));
        }
    }
    Ok(out)
}

/// What a nonce is worth now.
#[derive(Debug, PartialEq, Eq)]
enum NonceState {
    Fresh(u64),
    /// Ours but too old (or its `nc` record was pushed out).
    Stale,
    /// Not ours (another secret: a restart; or made up).
    Unknown,
}

#[derive(Default)]
struct NcTable {
    /// Nonce → (its time, the highest `nc` used with it).
    seen: HashMap<String, (u64, u32)>,
    /// Nonces of this time or older that are not in `seen` are stale: their record was
    /// dropped to keep the table bounded.
    floor: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Guesser {
    User(String),
    Address(IpAddr),
}

/// HTTP authentication's state: the nonce secret, the accounts, the `nc` table and the
/// wrong-password limits.
pub struct HttpAuth {
    secret: [u8; 32],
    realm: String,
    /// The Digest `opaque`: fixed for the process (the realm's MAC), made once.
    opaque: String,
    algorithms: Vec<DigestAlgorithm>,
    basic: bool,
    lifetime: u64,
    accounts: HashMap<String, String>,
    nc: Mutex<NcTable>,
    /// Nonces handed out (each one's unique part).
    issued: AtomicU64,
    guesses: Guesses<Guesser>,
}

/// Why a request's credentials were not taken (the `result` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    Malformed,
    Wrong,
    Stale,
    Replayed,
}

impl Rejected {
    fn label(self) -> &'static str {
        match self {
            Rejected::Malformed => "malformed",
            Rejected::Wrong => "wrong_credentials",
            Rejected::Stale => "stale_nonce",
            Rejected::Replayed => "replayed_nonce",
        }
    }
}

impl HttpAuth {
    /// From the `devices:` section; reads the accounts file.
    pub fn new(cfg: &Config) -> anyhow::Result<HttpAuth> {
        let ha = &cfg.http_auth;
        let accounts = match &ha.accounts {
            Some(p) => {
                let text = std::fs::read_to_string(&p.value).map_err(|e| {
                    anyhow::anyhow!("devices.http_auth.accounts: {}: {e}", p.display())
                })?;
                parse_accounts(&text).map_err(|e| {
                    anyhow::anyhow!("devices.http_auth.accounts: {}: {e}", p.display())
                })?
            }
            None => HashMap::new(),
        };
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| anyhow::anyhow!("no random bits: {e}"))?;
        let opaque = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(&hmac_sha256(&secret, format!("opaque:{}", ha.realm.value).as_bytes())[..18]);
        Ok(HttpAuth {
            secret,
            realm: ha.realm.value.clone(),
            opaque,
            algorithms: ha.digest.iter().map(|a| a.value).collect(),
            basic: ha.basic,
            lifetime: ha.nonce_lifetime.0.as_secs().max(1),
            accounts,
            nc: Mutex::default(),
            issued: AtomicU64::new(0),
            guesses: Guesses::new(
                MAX_WRONG_PINS,
                cfg.binding.wrong_pins_budget.value,
                GUESS_WINDOW,
                "devices.binding.wrong_pins_budget (wrong HTTP passwords)",
            ),
        })
    }

    fn mac_of(&self, data: &[u8]) -> [u8; 32] {
        hmac_sha256(&self.secret, data)
    }

    /// A new nonce of time `t`: unique (a counter), so clients challenged in the same
    /// second do not share one `nc` sequence.
    fn nonce_at(&self, t: u64) -> String {
        self.nonce_with(t, self.issued.fetch_add(1, Ordering::Relaxed))
    }

    fn nonce_with(&self, t: u64, n: u64) -> String {
        let mut raw = t.to_be_bytes().to_vec();
        raw.extend_from_slice(&n.to_be_bytes());
        let mut signed = raw.clone();
        signed.extend_from_slice(self.realm.as_bytes());
        raw.extend_from_slice(&self.mac_of(&signed)[..18]);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    }

    fn check_nonce(&self, nonce: &str, now: u64) -> NonceState {
        let Ok(raw) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(nonce) else {
            return NonceState::Unknown;
        };
        if raw.len() != 34 {
            return NonceState::Unknown;
        }
        let t = u64::from_be_bytes(raw[..8].try_into().expect("8 bytes"));
        let n = u64::from_be_bytes(raw[8..16].try_into().expect("8 bytes"));
        if !ct_eq(self.nonce_with(t, n).as_bytes(), nonce.as_bytes()) || t > now + CLOCK_SKEW {
            return NonceState::Unknown;
        }
        if now.saturating_sub(t) > self.lifetime {
            return NonceState::Stale;
        }
        NonceState::Fresh(t)
    }

    /// Take `nc` for a fresh nonce of time `t`: refused when it is not above every `nc`
    /// already used with it.
    fn take_nc(&self, nonce: &str, t: u64, nc: u32, now: u64) -> Result<(), Rejected> {
        let mut tab = self.nc.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, max)) = tab.seen.get_mut(nonce) {
            if nc <= *max {
                return Err(Rejected::Replayed);
            }
            *max = nc;
            return Ok(());
        }
        if t <= tab.floor {
            return Err(Rejected::Stale);
        }
        if tab.seen.len() >= NONCE_TABLE {
            let lifetime = self.lifetime;
            let mut dropped = tab.floor;
            tab.seen.retain(|_, (t, _)| {
                let keep = now.saturating_sub(*t) <= lifetime;
                if !keep {
                    dropped = dropped.max(*t);
                }
                keep
            });
            // Expired anyway; the floor keeps this check right on its own.
            tab.floor = dropped;
        }
        if tab.seen.len() >= NONCE_TABLE
            && let Some((k, old)) = tab
                .seen
                .iter()
                .min_by_key(|(_, (t, _))| *t)
                .map(|(k, (t, _))| (k.clone(), *t))
        {
            tab.seen.remove(&k);
            tab.floor = tab.floor.max(old);
            if t <= tab.floor {
                return Err(Rejected::Stale);
            }
        }
        tab.seen.insert(nonce.to_string(), (t, nc));
        Ok(())
    }

    /// `WWW-Authenticate` values for a 401: one Digest challenge per configured
    /// algorithm, then Basic when enabled.
    pub fn challenges(&self, stale: bool) -> Vec<String> {
        self.challenges_at(stale, now())
    }

    fn challenges_at(&self, stale: bool, t: u64) -> Vec<String> {
        let nonce = self.nonce_at(t);
        let opaque = &self.opaque;
        let mut v: Vec<String> = self
            .algorithms
            .iter()
            .map(|a| {
                format!(
                    "Digest realm=\"{}\", qop=\"auth\", algorithm={}, nonce=\"{nonce}\", opaque=\"{opaque}\"{}",
                    self.realm,
                    algorithm_name(*a),
                    if stale { ", stale=true" } else { "" }
                )
            })
            .collect();
        if self.basic {
            v.push(format!("Basic realm=\"{}\", charset=\"UTF-8\"", self.realm));
        }
        v
    }

    /// Check `creds` against `password` at time `now`: `Ok` or why not. Counts as
    /// nothing; the caller counts and throttles.
    fn verify(
        &self,
        creds: &Credentials,
        password: &str,
        method: &str,
        uri: &str,
        now: u64,
    ) -> Result<(), Rejected> {
        match creds {
            Credentials::Basic {
                password: given, ..
            } => {
                if !self.basic {
                    return Err(Rejected::Malformed);
                }
                // Hashed first: equal lengths, so the compare says nothing of the length.
                let ok = same_secret(given.as_bytes(), password.as_bytes());
                if ok { Ok(()) } else { Err(Rejected::Wrong) }
            }
            Credentials::Digest(d) => {
                let alg = algorithm_of(d.algorithm.as_deref())
                    .filter(|a| self.algorithms.contains(a))
                    .ok_or(Rejected::Malformed)?;
                let nc =
                    d.nc.as_deref()
                        .filter(|n| n.len() == 8)
                        .and_then(|n| u32::from_str_radix(n, 16).ok());
                let (Some(nc), Some("auth"), Some(_)) = (nc, d.qop.as_deref(), &d.cnonce) else {
                    return Err(Rejected::Malformed);
                };
                if d.userhash
                    || d.realm != self.realm
                    || !uri_matches(&d.uri, uri)
                    || d.opaque.as_deref().is_some_and(|o| o != self.opaque)
                {
                    return Err(Rejected::Malformed);
                }
                let want = digest_response(alg, d, password, method);
                if !ct_eq(want.as_bytes(), d.response.to_ascii_lowercase().as_bytes()) {
                    return Err(Rejected::Wrong);
                }
                // The password is right; the nonce decides between ok and stale.
                match self.check_nonce(&d.nonce, now) {
                    NonceState::Fresh(t) => self.take_nc(&d.nonce, t, nc, now),
                    NonceState::Stale | NonceState::Unknown => Err(Rejected::Stale),
                }
            }
        }
    }
}

/// A Digest `uri` names the request's target: the same origin-form, or an absolute URI
/// ending in it.
fn uri_matches(given: &str, target: &str) -> bool {
    if given == target {
        return true;
    }
    let rest = given
        .strip_prefix("http://")
        .or_else(|| given.strip_prefix("https://"));
    rest.and_then(|r| r.find('/').map(|i| &r[i..])) == Some(target)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

pub struct HttpAuthStage;

impl Stage for HttpAuthStage {
    fn name(&self) -> &'static str {
        "http_auth"
    }

    fn run(&self, ctx: &mut Ctx<'_>) -> Flow {
        if ctx.pv.http_auth.is_none() || ctx.req.http.is_none() {
            return Flow::Continue;
        }
        // Only an answer that goes to a proven device asks for credentials.
        let needed = match (&ctx.found, &ctx.owner) {
            (None, _) | (Some(Found::File(_)), Owner::Public) => false,
            _ => ctx.device.is_none(),
        };
        if !needed {
            return Flow::Continue;
        }
        authenticate(ctx)
    }
}

/// Prove the requester by its credentials (a 401 without or with wrong ones), unless it
/// is proven already; for any request that must come from a proven device.
pub fn authenticate(ctx: &mut Ctx<'_>) -> Flow {
    let pv = ctx.pv;
    let (Some(auth), Some(facts)) = (pv.http_auth.as_ref(), ctx.req.http) else {
        return Flow::Continue;
    };
    let count = |result: &'static str| {
        pv.metrics
            .http_auth
            .get_or_create(&ResultLabels { result })
            .inc();
    };
    let Some(header) = facts.authorization else {
        if ctx.id.proven {
            return Flow::Continue;
        }
        count("challenged");
        return Flow::Refuse(Refusal::Unauthorized { stale: false });
    };
    let ip = ctx.req.peer.ip().to_canonical();
    let Some(creds) = parse_authorization(header) else {
        count("malformed");
        return Flow::Refuse(unauthorized(ctx, Rejected::Malformed, None));
    };
    let user = match &creds {
        Credentials::Basic { user, .. } => user.clone(),
        Credentials::Digest(d) => d.username.clone(),
    };
    let keys = [Guesser::User(user.clone()), Guesser::Address(ip)];
    if let Err(t) = auth.guesses.try_attempt(&keys) {
        let reason = match t {
            Throttle::Guesser => "http_auth_attempts_exceeded",
            Throttle::Global => "http_auth_budget_exhausted",
        };
        count("throttled");
        return Flow::Refuse(
            ctx.refuse(reason, "too many wrong HTTP credentials; try again later"),
        );
    }
    // A device's own credentials name it; an account's prove who the request names.
    let inv = ctx.inventory();
    let own = inv
        .records
        .iter()
        .find(|r| r.mac.is_some() && r.var("http_user") == Some(user.as_str()));
    let (password, proves): (Option<&str>, Option<Mac>) = match own {
        Some(r) => (r.var("http_password"), r.mac),
        None => (auth.accounts.get(&user).map(String::as_str), ctx.id.mac),
    };
    // An unknown user is checked against a throwaway password: same work, same answer.
    let result = auth.verify(
        &creds,
        password.unwrap_or("\u{0}no such user"),
        facts.method,
        facts.uri,
        now(),
    );
    let result = match (result, password) {
        (Ok(()), None) => Err(Rejected::Wrong),
        (r, _) => r,
    };
    if let Err(why) = result {
        if why == Rejected::Stale {
            // The password was right: the attempt is given back.
            auth.guesses.right(&[], &keys);
        }
        count(why.label());
        return Flow::Refuse(unauthorized(ctx, why, Some(&user)));
    }
    auth.guesses
        .right(&[Guesser::User(user.clone())], &[Guesser::Address(ip)]);
    count("ok");
    match (ctx.id.proven, ctx.id.mac, proves) {
        // Proven already (a certificate, a trusted lease): the credentials must agree.
        (true, Some(had), Some(m)) if had != m => {
            return Flow::Refuse(ctx.refuse(
                "http_auth_conflict",
                "the HTTP credentials name another device than the request's proven one",
            ));
        }
        (true, _, _) => {}
        (false, _, m) => {
            ctx.id.mac = m;
            ctx.id.source = Source::http_auth;
            ctx.id.proven = m.is_some();
            ctx.id.doubt = None;
        }
    }
    // The name is the client's: escaped, so it cannot forge log lines.
    tracing::debug!(peer = %ctx.req.peer, user = %user.escape_debug(), mac = ?ctx.id.mac, "HTTP credentials proved the device");
    Flow::Continue
}

/// A 401, logged with the user name (never the password).
fn unauthorized(ctx: &Ctx<'_>, why: Rejected, user: Option<&str>) -> Refusal {
    tracing::info!(
        peer = %ctx.req.peer,
        path = %ctx.pv.log_path(ctx.req.path),
        user = %user.unwrap_or("-").escape_debug(),
        result = why.label(),
        "HTTP credentials refused"
    );
    Refusal::Unauthorized {
        stale: why == Rejected::Stale,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::At;
    use proptest::prelude::*;

    /// RFC 7616 section 3.9.1's example.
    fn rfc_params(alg: &str, response: &str) -> DigestParams {
        DigestParams {
            username: "Mufasa".into(),
            realm: "http-auth@example.org".into(),
            nonce: "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v".into(),
            uri: "/dir/index.html".into(),
            response: response.into(),
            algorithm: Some(alg.into()),
            cnonce: Some("f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ".into()),
            opaque: Some("FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS".into()),
            qop: Some("auth".into()),
            nc: Some("00000001".into()),
            userhash: false,
        }
    }

    #[test]
    fn rfc_7616_example_vectors() {
        let md5 = rfc_params("MD5", "8ca523f5e9506fed4657c9700eebdbec");
        assert_eq!(
            digest_response(DigestAlgorithm::Md5, &md5, "Circle of Life", "GET"),
            md5.response
        );
        let sha = rfc_params(
            "SHA-256",
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
        );
        assert_eq!(
            digest_response(DigestAlgorithm::Sha256, &sha, "Circle of Life", "GET"),
            sha.response
        );
        // The header as the RFC writes it parses to the same parameters.
        let header = r#"Digest username="Mufasa",
            realm="http-auth@example.org",
            uri="/dir/index.html",
            algorithm=SHA-256,
            nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
            nc=00000001,
            cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
            qop=auth,
            response="753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
            opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS""#
            .replace(['\n'], "");
        assert_eq!(parse_authorization(&header), Some(Credentials::Digest(sha)));
    }

    #[test]
    fn basic_and_malformed_headers() {
        assert_eq!(
            parse_authorization("Basic YWxpY2U6czNjcjN0OndpdGg6Y29sb25z"),
            Some(Credentials::Basic {
                user: "alice".into(),
                password: "s3cr3t:with:colons".into()
            })
        );
        for bad in [
            "",
            "Basic",
            "Basic !!!",
            "Bearer abc",
            "Digest",
            "Digest username=\"a\"",
            "Digest username=\"a\", username=\"b\", realm=r, nonce=n, uri=/, response=x",
            "Digest username=\"a, realm=r",
            "Digest username==a",
        ] {
            assert_eq!(parse_authorization(bad), None, "{bad}");
        }
        // Escapes in quoted strings.
        let Some(Credentials::Digest(d)) = parse_authorization(
            r#"Digest username="a\"b", realm=r, nonce=n, uri="/x", response=0"#,
        ) else {
            panic!()
        };
        assert_eq!(d.username, "a\"b");
        // Debug never shows a Basic password.
        let c = parse_authorization("Basic YWxpY2U6czNjcjN0").unwrap();
        assert!(!format!("{c:?}").contains("s3cr3t"));
    }

    fn auth(lifetime: u64) -> HttpAuth {
        let mut c = Config::default();
        c.http_auth.basic = true;
        c.http_auth.nonce_lifetime = At::new(crate::config::Dur(Duration::from_secs(lifetime)));
        HttpAuth::new(&c).unwrap()
    }

    fn client(a: &HttpAuth, nonce: &str, nc: u32, pw: &str, alg: DigestAlgorithm) -> Credentials {
        let mut d = DigestParams {
            username: "alice".into(),
            realm: a.realm.clone(),
            nonce: nonce.into(),
            uri: "/cfg/a.xml".into(),
            algorithm: Some(algorithm_name(alg).into()),
            cnonce: Some("c0ffee".into()),
            opaque: Some(a.opaque.clone()),
            qop: Some("auth".into()),
            nc: Some(format!("{nc:08x}")),
            ..Default::default()
        };
        d.response = digest_response(alg, &d, pw, "GET");
        Credentials::Digest(d)
    }

    #[test]
    fn nonces_expire_replays_are_refused_and_forgeries_are_unknown() {
        let a = auth(60);
        let t = 1_000_000;
        let n = a.nonce_at(t);
        let ok = |c: &Credentials, at| a.verify(c, "pw", "GET", "/cfg/a.xml", at);
        for alg in [DigestAlgorithm::Sha256, DigestAlgorithm::Md5] {
            let n = a.nonce_at(t + alg as u64);
            assert_eq!(ok(&client(&a, &n, 1, "pw", alg), t + 2), Ok(()));
            assert_eq!(
                ok(&client(&a, &n, 1, "pw", alg), t + 2),
                Err(Rejected::Replayed)
            );
            assert_eq!(ok(&client(&a, &n, 2, "pw", alg), t + 2), Ok(()));
            assert_eq!(
                ok(&client(&a, &n, 2, "bad", alg), t + 2),
                Err(Rejected::Wrong)
            );
        }
        // Older than the lifetime: stale, with the right password only.
        assert_eq!(
            ok(&client(&a, &n, 9, "pw", DigestAlgorithm::Md5), t + 61),
            Err(Rejected::Stale)
        );
        assert_eq!(
            ok(&client(&a, &n, 9, "no", DigestAlgorithm::Md5), t + 61),
            Err(Rejected::Wrong)
        );
        // Another secret's nonce (a restart) is stale too; a made-up one the same.
        let other = auth(60).nonce_at(t);
        assert_eq!(a.check_nonce(&other, t), NonceState::Unknown);
        assert_eq!(
            ok(&client(&a, &other, 1, "pw", DigestAlgorithm::Md5), t),
            Err(Rejected::Stale)
        );
        assert_eq!(a.check_nonce("AAAA", t), NonceState::Unknown);
        // From the future: not ours.
        assert_eq!(a.check_nonce(&a.nonce_at(t + 60), t), NonceState::Unknown);
        // Wrong target, realm or opaque; no qop: malformed.
        let Credentials::Digest(mut d) = client(&a, &n, 20, "pw", DigestAlgorithm::Md5) else {
            panic!()
        };
        assert_eq!(
            a.verify(&Credentials::Digest(d.clone()), "pw", "GET", "/other", t),
            Err(Rejected::Malformed)
        );
        d.qop = None;
        assert_eq!(ok(&Credentials::Digest(d), t), Err(Rejected::Malformed));
    }

    #[test]
    fn the_nc_table_is_bounded_and_never_lets_a_replay_in() {
        let a = auth(3600);
        let t = 5_000_000;
        let mut issued = Vec::new();
        for i in 0..NONCE_TABLE as u64 + 10 {
            let n = a.nonce_at(t + i);
            assert_eq!(a.take_nc(&n, t + i, 1, t + i), Ok(()));
            issued.push(n);
        }
        assert!(a.nc.lock().unwrap().seen.len() <= NONCE_TABLE);
        // The first nonces were pushed out: replaying them is stale, not accepted.
        assert_eq!(
            a.take_nc(&issued[0], t, 1, t + 20_000),
            Err(Rejected::Stale)
        );
        let last = issued.last().unwrap();
        assert_eq!(
            a.take_nc(last, t + NONCE_TABLE as u64 + 9, 1, t + 20_000),
            Err(Rejected::Replayed)
        );
    }

    #[test]
    fn challenges_name_every_algorithm_and_basic() {
        let a = auth(60);
        let c = a.challenges_at(true, 42);
        assert_eq!(c.len(), 3);
        assert!(
            c[0].starts_with("Digest realm=\"provbox\", qop=\"auth\", algorithm=SHA-256, nonce=\""),
            "{}",
            c[0]
        );
        assert!(c[0].ends_with(", stale=true"));
        assert!(c[1].contains("algorithm=MD5"));
        assert_eq!(c[2], "Basic realm=\"provbox\", charset=\"UTF-8\"");
        // A challenge's nonce is one the server takes.
        let Some(Credentials::Digest(d)) =
            parse_authorization(&format!("{}, username=u, uri=/, response=0", c[0]))
        else {
            panic!("{}", c[0])
        };
        assert_eq!(a.check_nonce(&d.nonce, 42), NonceState::Fresh(42));
        // Two challenges in one second: two nonces, each with its own `nc` sequence.
        assert_ne!(a.nonce_at(42), a.nonce_at(42));
    }

    #[test]
    fn accounts_files() {
        let a = parse_accounts("# phones\nalice:pw:with:colons\n\nbob:x\r\n").unwrap();
        assert_eq!(a["alice"], "pw:with:colons");
        assert_eq!(a["bob"], "x");
        assert!(parse_accounts("alice\n").unwrap_err().starts_with("line 1"));
        assert!(
            parse_accounts("a:b\na:c\n")
                .unwrap_err()
                .starts_with("line 2")
        );
        assert!(parse_accounts(":b\n").is_err());
    }

    proptest! {
        #[test]
        fn the_header_parser_never_panics(s in ".{0,300}") {
            let _ = parse_authorization(&s);
            let _ = parse_authorization(&format!("Digest {s}"));
        }

        #[test]
        fn digest_params_survive_quoting(user in "[ -~]{0,20}", uri in "/[!-~]{0,30}") {
            let q = |v: &str| v.replace('\\', "\\\\").replace('"', "\\\"");
            let h = format!(
                "Digest username=\"{}\", realm=\"r\", nonce=\"n\", uri=\"{}\", response=\"0\"",
                q(&user),
                q(&uri)
            );
            let Some(Credentials::Digest(d)) = parse_authorization(&h) else {
                panic!("{h}")
            };
            prop_assert_eq!(d.username, user);
            prop_assert_eq!(d.uri, uri);
        }
    }
}
