//! One file request as a chain of stages over one request context.
//!
//! [`Provisioner::fetch`] builds a [`Ctx`] and runs [`Chain::standard`]: each stage reads
//! and fills the context, then lets the request go on ([`Flow::Continue`]), answers it
//! ([`Flow::Answer`]) or refuses it ([`Flow::Refuse`]). When every stage has let it go
//! on, the answer is the entry the stages built. The order is `docs/devices.md`'s:
//!
//! 1. [`normalise`]: the catalog key, and whose file it is;
//!    [`bootstrap`] (`ca`): the CA certificate at its fixed keys;
//! 2. [`identify`]: who is asking, and whether that is proven;
//! 3. [`bind`] (`bind_pin`): a PIN request claims its account and the binding profile;
//! 4. [`resolve`]: a static file, else a template;
//! 5. [`httpauth`] (`http_auth`): HTTP Basic or Digest credentials prove a device, when
//!    the answer needs one (401 with the challenges when they are missing or wrong);
//! 6. [`authorize`]: public files are answered here; per-device ones go only to their
//!    proven device, whose variables are gathered;
//! 7. [`render`]: a template rendered with those variables;
//! 8. [`bind`] (`record_binding`): the claimed binding is recorded, once its profile
//!    rendered;
//! 9. [`encrypt`]: with the device's key, if it has one.
//!
//! A new stage (HTTP auth, uploads, verification) is one file here and one line in
//! [`Chain::standard`]; it reads what the stages before it found and leaves its own
//! findings in the context.

pub mod authorize;
pub mod bind;
pub mod bootstrap;
pub mod encrypt;
pub mod httpauth;
pub mod identify;
pub mod normalise;
pub mod render;
pub mod resolve;

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::catalog::{Entry, Refusal};

use super::access::Owner;
use super::identity::{Identity, Source};
use super::{FetchRequest, Inventory, Mac, Provisioner, Record, RefusalLabels};

/// What a stage says about the request.
#[derive(Debug)]
pub enum Flow {
    /// Go on to the next stage.
    Continue,
    /// This is the answer; later stages do not run.
    Answer(Arc<Entry>),
    /// No answer; later stages do not run.
    Refuse(Refusal),
}

/// One step of the device layer.
pub trait Stage: Send + Sync {
    /// Its name, as `docs/devices.md` lists it.
    fn name(&self) -> &'static str;
    fn run(&self, ctx: &mut Ctx<'_>) -> Flow;
}

/// What answers a request, once found: a file as it is, or a template to render.
#[derive(Debug, Clone)]
pub enum Found {
    File(Arc<Entry>),
    /// `key` is the key the rendered entry gets.
    Template {
        tmpl: Arc<Entry>,
        key: String,
    },
}

/// A PIN binding being made: recorded only after its profile rendered.
#[derive(Debug, Clone)]
pub struct Claim {
    pub pin: String,
    /// The inventory account holding the PIN.
    pub account: Record,
}

/// Everything known about one request so far. Stages fill it in chain order; each field
/// says which stage sets it.
pub struct Ctx<'a> {
    /// The device layer's shared parts (catalog, registry, settings, bindings, metrics).
    pub pv: &'a Provisioner,
    pub req: &'a FetchRequest<'a>,
    /// `normalise`: the catalog key.
    pub key: String,
    /// `normalise`: whose file the key is.
    pub owner: Owner,
    /// `identify`: who is asking (nobody, unproven, until then).
    pub id: Identity,
    /// `bind_pin`: the PIN binding this request makes.
    pub claim: Option<Claim>,
    /// `resolve` (or `bind_pin`): what answers the request.
    pub found: Option<Found>,
    /// `authorize` (or `bind_pin`): the proven device a per-device answer is for.
    pub device: Option<Mac>,
    /// `authorize`: that device's variables (macros, bound account, own record).
    pub vars: BTreeMap<String, String>,
    /// `render`, then `encrypt`: the answer being built.
    pub entry: Option<Arc<Entry>>,
    /// The inventory as this request first saw it: one version for the whole request.
    inventory: Option<Arc<Inventory>>,
}

impl<'a> Ctx<'a> {
    pub fn new(pv: &'a Provisioner, req: &'a FetchRequest<'a>) -> Ctx<'a> {
        Ctx {
            pv,
            req,
            key: String::new(),
            owner: Owner::Public,
            id: Identity {
                mac: None,
                source: Source::none,
                proven: false,
                doubt: None,
                vendor: None,
                model: None,
                version: None,
                serial: None,
            },
            claim: None,
            found: None,
            device: None,
            vars: BTreeMap::new(),
            entry: None,
            inventory: None,
        }
    }

    /// The current inventory, loaded once per request.
    pub fn inventory(&mut self) -> Arc<Inventory> {
        self.inventory
            .get_or_insert_with(|| self.pv.inventory.load_full())
            .clone()
    }

    /// Refuse with `reason` (a metric label): counted and logged with who asked.
    pub fn refuse(&self, reason: &'static str, detail: &str) -> Refusal {
        let (req, id) = (self.req, &self.id);
        self.pv
            .metrics
            .refusals
            .get_or_create(&RefusalLabels { reason })
            .inc();
        tracing::info!(
            protocol = req.protocol.as_str(),
            peer = %req.peer,
            path = %self.pv.log_path(req.path),
            mac = ?id.mac,
            source = ?id.source,
            reason,
            "device request refused: {detail}"
        );
        Refusal::Forbidden(reason)
    }
}

/// The stages a request goes through, in order.
pub struct Chain {
    stages: Vec<Box<dyn Stage>>,
}

impl Chain {
    /// The device layer's chain, in `docs/devices.md`'s order.
    pub fn standard() -> Chain {
        Chain {
            stages: vec![
                Box::new(normalise::Normalise),
                Box::new(bootstrap::Ca),
                Box::new(identify::Identify),
                Box::new(bind::BindPin),
                Box::new(resolve::Resolve),
                Box::new(httpauth::HttpAuthStage),
                Box::new(authorize::Authorize),
                Box::new(render::Render),
                Box::new(bind::RecordBinding),
                Box::new(encrypt::Encrypt),
            ],
        }
    }

    /// The stage names, in order.
    pub fn names(&self) -> Vec<&'static str> {
        self.stages.iter().map(|s| s.name()).collect()
    }

    /// Put `stage` at the end of the chain.
    pub fn push(&mut self, stage: Box<dyn Stage>) {
        self.stages.push(stage);
    }

    /// Put `stage` before the stage named `before` (at the end if there is none).
    pub fn insert_before(&mut self, before: &str, stage: Box<dyn Stage>) {
        let at = self
            .stages
            .iter()
            .position(|s| s.name() == before)
            .unwrap_or(self.stages.len());
        self.stages.insert(at, stage);
    }

    /// Who is asking, as the stages before `bind_pin` find it (`normalise`, `identify` and
    /// any proof stage beside them): for a request that is not a fetch (an upload), which
    /// must be proven the same way. A refusal by one of them is the answer.
    pub fn prove(&self, pv: &Provisioner, req: &FetchRequest<'_>) -> Result<Identity, Refusal> {
        self.proving(pv, req).map(|ctx| ctx.id)
    }

    /// The context after the proving stages and HTTP credentials (in a fetch, `http_auth`
    /// runs later, once the file is known to need a proof).
    fn proving<'a>(
        &self,
        pv: &'a Provisioner,
        req: &'a FetchRequest<'a>,
    ) -> Result<Ctx<'a>, Refusal> {
        let mut ctx = Ctx::new(pv, req);
        for stage in self.stages.iter().take_while(|s| s.name() != "bind_pin") {
            if let Flow::Refuse(r) = stage.run(&mut ctx) {
                return Err(r);
            }
        }
        if let Flow::Refuse(r) = httpauth::authenticate(&mut ctx) {
            return Err(r);
        }
        Ok(ctx)
    }

    /// Run `req` through the chain: the first answer or refusal ends it; a request every
    /// stage let through gets the entry they built.
    pub fn run(&self, pv: &Provisioner, req: &FetchRequest<'_>) -> Result<Arc<Entry>, Refusal> {
        let mut ctx = Ctx::new(pv, req);
        for stage in &self.stages {
            match stage.run(&mut ctx) {
                Flow::Continue => {}
                Flow::Answer(e) => return Ok(e),
                Flow::Refuse(r) => return Err(r),
            }
        }
        ctx.entry.ok_or(Refusal::NotFound)
    }
}

/// Who is asking, proven, for a request that fetches no file (a configuration report):
/// the chain's proving stages and HTTP credentials, then the path's owner check. Err:
/// refused (a 401 asks for credentials).
pub fn prove(pv: &Provisioner, req: &FetchRequest<'_>) -> Result<Mac, Refusal> {
    let ctx = pv.chain.proving(pv, req)?;
    super::access::allow(&ctx.id, ctx.owner.mac())
        .map_err(|r| ctx.refuse(r, "configuration report"))
}

impl Default for Chain {
    fn default() -> Chain {
        Chain::standard()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::tests::{A, LEASED, get, lab, lease};
    use crate::metrics::Protocol;
    use bytes::Bytes;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::SystemTime;

    /// The numbered list under docs/devices.md's "The request path": one backticked
    /// stage name opening each item.
    fn documented_stages() -> Vec<String> {
        let doc = include_str!("../../../docs/devices.md");
        let section = doc
            .split("### The request path")
            .nth(1)
            .expect("docs/devices.md has a `### The request path` section");
        section
            .lines()
            .skip(1)
            .take_while(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (n, rest) = l.split_once(". `")?;
                n.trim().parse::<u32>().ok()?;
                Some(rest.split('`').next()?.to_string())
            })
            .collect()
    }

    #[test]
    fn the_chain_runs_in_the_documented_order() {
        assert_eq!(
            Chain::standard().names(),
            [
                "normalise",
                "ca",
                "identify",
                "bind_pin",
                "resolve",
                "http_auth",
                "authorize",
                "render",
                "record_binding",
                "encrypt"
            ]
        );
        assert_eq!(Chain::standard().names(), documented_stages());
    }

    /// Answers `/hello`, refuses `/nope`, lets everything else through.
    struct Gate;
    impl Stage for Gate {
        fn name(&self) -> &'static str {
            "gate"
        }
        fn run(&self, ctx: &mut Ctx<'_>) -> Flow {
            match ctx.key.as_str() {
                "hello" => Flow::Answer(Arc::new(crate::devices::generated(
                    "hello".into(),
                    Bytes::from_static(b"from the gate\n"),
                    SystemTime::UNIX_EPOCH,
                ))),
                "nope" => Flow::Refuse(ctx.refuse("gate", "the test gate says no")),
                _ => Flow::Continue,
            }
        }
    }

    /// Counts the requests that reach it.
    struct Tail(Arc<AtomicUsize>);
    impl Stage for Tail {
        fn name(&self) -> &'static str {
            "tail"
        }
        fn run(&self, _: &mut Ctx<'_>) -> Flow {
            self.0.fetch_add(1, Ordering::SeqCst);
            Flow::Continue
        }
    }

    #[test]
    fn a_stage_can_answer_or_refuse_and_later_stages_do_not_run() {
        let mut l = lab(|c| c.trust.lease = true);
        lease(&l.p, LEASED, A);
        let reached = Arc::new(AtomicUsize::new(0));
        l.p.chain.insert_before("resolve", Box::new(Gate));
        l.p.chain.push(Box::new(Tail(reached.clone())));
        assert_eq!(
            &l.p.chain.names()[..5],
            ["normalise", "ca", "identify", "bind_pin", "gate"]
        );
        assert_eq!(l.p.chain.names().last(), Some(&"tail"));
        let get = |path: &str| get(&l.p, Protocol::http, LEASED, path);

        // Answered by the gate: nothing of that name is in the catalog.
        assert_eq!(&get("/hello").unwrap().body[..], b"from the gate\n");
        // Refused by the gate (without it: 404, there is no such file).
        assert_eq!(get("/nope").unwrap_err(), Refusal::Forbidden("gate"));
        assert_eq!(reached.load(Ordering::SeqCst), 0);

        // A public file is answered by `authorize`: the tail is not reached either.
        assert_eq!(&get("/common.cfg").unwrap().body[..], b"for everyone\n");
        assert_eq!(reached.load(Ordering::SeqCst), 0);

        // A per-device profile goes through every stage, the tail included.
        let e = get("/cfg/00562b043615.xml").unwrap();
        assert_eq!(
            &e.body[..],
            b"<device mac=\"00:56:2b:04:36:15\" ext=\"1001\" name=\"Alice\"/>\n"
        );
        assert_eq!(reached.load(Ordering::SeqCst), 1);
        // A refusal by a standard stage ends the chain too.
        assert_eq!(
            get("/cfg/0015654aa937.xml").unwrap_err(),
            Refusal::Forbidden("other_device")
        );
        assert_eq!(reached.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_pin_binding_is_recorded_only_after_its_profile_rendered() {
        use crate::confkit::At;
        use crate::devices::{Config, DeviceMetrics, Registry};
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("files");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("init.cfg.tmpl"), "ext=$extension\n").unwrap();
        let inv = d.path().join("inventory.yaml");
        // 1111's account has no extension: its profile cannot render.
        std::fs::write(
            &inv,
            "devices:\n  - pin: \"1111\"\n    account: broken\n  - pin: \"2222\"\n    account: ok\n    extension: \"2002\"\n",
        )
        .unwrap();
        let cat = crate::catalog::Catalog::for_tests(&[root], false, &d.path().join("data"));
        cat.start().unwrap();
        let mut c = Config {
            inventory: Some(At::new(inv)),
            ..Config::default()
        };
        c.trust.lease = true;
        c.binding.init_prefix = Some(At::new("/init".into()));
        let store = crate::store::Store::open(d.path()).unwrap();
        let reg = Arc::new(Registry::default());
        let lan = reg.clone();
        let p = Provisioner::new(cat, reg)
            .with_devices(&c, Some(store), DeviceMetrics::default())
            .unwrap()
            .with_neighbours(Arc::new(move |ip| lan.by_ip(ip).map(|l| l.mac)));
        lease(&p, LEASED, A);
        let mac: Mac = A.parse().unwrap();
        let get = |path: &str| get(&p, Protocol::http, LEASED, path);
        let bindings = p.bindings.as_ref().unwrap();

        // Claimed, but the profile does not render: nothing is bound.
        assert_eq!(get("/init/1111").unwrap_err(), Refusal::NotFound);
        assert_eq!(bindings.pin_of(mac), None);
        // A profile that renders: bound, and the answer is that profile.
        assert_eq!(&get("/init/2222").unwrap().body[..], b"ext=2002\n");
        assert_eq!(bindings.pin_of(mac).as_deref(), Some("2222"));
    }
}
