//! The HTTP, HTTPS and admin (metrics/health) listeners as three restartable groups.
//!
//! A reload compares each group's settings with what it runs now. An unchanged group is
//! left alone. A changed one is started again beside the old: sockets on addresses it
//! already had are reused (a duplicate of the same file descriptor, so no connection is
//! refused while the switch happens), new addresses are bound, and only then does the old
//! generation stop:
//! - on an address the new one keeps, its accept loop is simply dropped (accept is
//!   cancel-safe); its connections live on untouched, so even a connection accepted an
//!   instant before, whose request is not read yet, is answered;
//! - on an address that goes away, it is told to shut down: no more accepts, the response
//!   in flight finishes, then the connection closes and the socket with it.
//!
//! Connection tasks stay on the process tracker, so a later shutdown still waits for them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::confkit::{HttpConfig, HttpLimits, HttpsConfig, MetricsConfig};
use crate::frontend::{Context, bind_tcp};
use crate::http::{self, AdminHandler, FileHandler, Handler};
use crate::metrics::Protocol;
use crate::supervisor::Supervisor;
use crate::tls;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Http,
    Https,
    Metrics,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Http => "http",
            Kind::Https => "https",
            Kind::Metrics => "metrics",
        }
    }
    const ALL: [Kind; 3] = [Kind::Http, Kind::Https, Kind::Metrics];
}

/// What a group is configured with; two equal settings mean nothing to restart.
#[derive(Clone, Debug, PartialEq)]
struct Settings {
    listen: Vec<SocketAddr>,
    limits: HttpLimits,
    tls: Option<tls::TlsFiles>,
    /// `https.ca_cert`: the CA the HTTPS bootstrap serves, when not the lab CA.
    ca_cert: Option<PathBuf>,
}

struct Group {
    settings: Settings,
    /// Duplicates of the bound sockets, kept to hand to the next generation.
    sockets: Vec<(SocketAddr, std::net::TcpListener)>,
    /// Per listener: its shutdown token and its accept loop.
    loops: Vec<(SocketAddr, CancellationToken, tokio::task::AbortHandle)>,
    /// Lives as long as the generation (the TLS file watcher).
    stop: CancellationToken,
}

/// One generation of a group, bound but not yet accepting.
struct Prepared {
    kind: Kind,
    settings: Settings,
    listeners: Vec<http::Listener>,
    sockets: Vec<(SocketAddr, std::net::TcpListener)>,
    stop: CancellationToken,
    banner: Vec<String>,
}

pub(crate) struct Web {
    ctx_shutdown: CancellationToken,
    tracker: TaskTracker,
    registry: Arc<Registry>,
    /// Owns the accept loops; also answers `/readyz`.
    supervisor: Arc<Supervisor>,
    metrics: Arc<crate::metrics::Metrics>,
    files_http: Arc<FileHandler>,
    files_https: Arc<FileHandler>,
    data_dir: PathBuf,
    groups: Mutex<Vec<(Kind, Group)>>,
    pending: std::sync::Mutex<Vec<Prepared>>,
    /// The lab CA certificate, when HTTPS serves a certificate provbox made itself.
    pub lab_ca: std::sync::Mutex<Option<PathBuf>>,
}

/// The sections the group serves (http, https, metrics), passed in: `web` does not read
/// the aggregate configuration.
#[derive(Clone, Copy)]
pub(crate) struct Sections<'a> {
    pub http: &'a HttpConfig,
    pub https: &'a HttpsConfig,
    pub metrics: &'a MetricsConfig,
}

fn settings(cfg: Sections<'_>, kind: Kind, data_dir: &std::path::Path) -> Result<Option<Settings>> {
    Ok(match kind {
        Kind::Http if cfg.http.enabled => Some(Settings {
            listen: cfg.http.listen.iter().map(|a| a.value).collect(),
            limits: cfg.http.limits.clone(),
            tls: None,
            ca_cert: None,
        }),
        Kind::Https if cfg.https.enabled => Some(Settings {
            listen: cfg.https.listen.iter().map(|a| a.value).collect(),
            limits: cfg.https.limits.clone(),
            tls: Some(tls_files(cfg, data_dir)?),
            ca_cert: cfg.https.ca_cert.as_ref().map(|c| c.value.clone()),
        }),
        Kind::Metrics if cfg.metrics.enabled => Some(Settings {
            listen: vec![cfg.metrics.listen.value],
            limits: HttpLimits::default(),
            tls: None,
            ca_cert: None,
        }),
        _ => None,
    })
}

/// The configured certificate, or one from the lab CA under data_dir/tls (made on first use).
fn tls_files(cfg: Sections<'_>, data_dir: &std::path::Path) -> Result<tls::TlsFiles> {
    let client_ca = cfg.https.client_ca.as_ref().map(|p| p.value.clone());
    let client_auth = cfg.https.client_auth.value;
    Ok(match (&cfg.https.cert, &cfg.https.key) {
        (Some(c), Some(k)) => tls::TlsFiles {
            cert: c.value.clone(),
            key: k.value.clone(),
            client_auth,
            client_ca,
        },
        _ => {
            let lab =
                tls::LabCa::ensure(&data_dir.join("tls"), &tls::machine_names(&cfg.https.names))
                    .context("https: creating the lab certificate")?;
            tls::TlsFiles {
                cert: lab.server_cert,
                key: lab.server_key,
                client_auth,
                client_ca,
            }
        }
    })
}

impl Web {
    /// Bind every enabled group's sockets; nothing accepts until [`Web::start`].
    pub(crate) async fn bind(
        ctx: &Context,
        cfg: Sections<'_>,
        registry: Arc<Registry>,
        banner: &mut Vec<String>,
    ) -> Result<Arc<Web>> {
        let handler = |protocol| {
            Arc::new(FileHandler {
                provisioner: ctx.provisioner.clone(),
                metrics: ctx.metrics.clone(),
                protocol,
                uploads: ctx.uploads.clone(),
            })
        };
        let web = Arc::new(Web {
            ctx_shutdown: ctx.shutdown.clone(),
            tracker: ctx.tracker.clone(),
            registry,
            supervisor: ctx.supervisor.clone(),
            metrics: ctx.metrics.clone(),
            files_http: handler(Protocol::http),
            files_https: handler(Protocol::https),
            data_dir: ctx.data_dir.clone(),
            groups: Mutex::new(Vec::new()),
            pending: std::sync::Mutex::new(Vec::new()),
            lab_ca: std::sync::Mutex::new(None),
        });
        for kind in Kind::ALL {
            if let Some(s) = settings(cfg, kind, &web.data_dir)? {
                let p = web.prepare(kind, s, &[]).await?;
                banner.extend(p.banner.iter().cloned());
                web.pending.lock().unwrap().push(p);
            }
        }
        Ok(web)
    }

    /// Start accepting on everything [`Web::bind`] bound.
    pub(crate) async fn start(&self) {
        let pending: Vec<Prepared> = std::mem::take(&mut *self.pending.lock().unwrap());
        let mut groups = self.groups.lock().await;
        for p in pending {
            let (kind, group) = self.launch(p);
            groups.push((kind, group));
        }
    }

    async fn prepare(
        &self,
        kind: Kind,
        settings: Settings,
        reuse: &[(SocketAddr, std::net::TcpListener)],
    ) -> Result<Prepared> {
        let stop = self.ctx_shutdown.child_token();
        let (handler, protocol, tls): (Arc<dyn Handler>, Protocol, _) = match kind {
            Kind::Http => (self.files_http.clone(), Protocol::http, None),
            Kind::Https => {
                let files = settings
                    .tls
                    .clone()
                    .expect("https settings carry TLS files");
                let reloading = tls::Reloading::new(files.clone()).context("https")?;
                // The file watcher lives as long as this generation.
                reloading
                    .clone()
                    .watch(std::time::Duration::from_secs(2), stop.clone());
                let lab = self.data_dir.join("tls").join("server.pem");
                *self.lab_ca.lock().unwrap() =
                    (files.cert == lab).then(|| self.data_dir.join("tls").join("ca.pem"));
                // The HTTPS bootstrap points phones at these listeners and serves this CA.
                let ca = (settings.ca_cert.clone()).or_else(|| self.lab_ca.lock().unwrap().clone());
                let bootstrap = &self.files_https.provisioner.bootstrap;
                bootstrap.publish(settings.listen.clone(), ca.as_deref());
                (self.files_https.clone(), Protocol::https, Some(reloading))
            }
            Kind::Metrics => (
                Arc::new(AdminHandler {
                    registry: self.registry.clone(),
                    ready: self.supervisor.clone(),
                }) as Arc<dyn Handler>,
                Protocol::http,
                None,
            ),
        };
        let mut listeners = Vec::new();
        let mut sockets = Vec::new();
        let mut banner = Vec::new();
        for (i, addr) in settings.listen.iter().enumerate() {
            let field = match kind {
                Kind::Metrics => "metrics.listen".to_string(),
                _ => format!("{}.listen[{i}]", kind.name()),
            };
            let socket = match reuse.iter().find(|(a, _)| a == addr) {
                Some((_, s)) => TcpListener::from_std(
                    s.try_clone()
                        .with_context(|| format!("{field}: duplicating {addr}"))?,
                )?,
                None => bind_tcp(&field, *addr).await?,
            };
            let local = socket.local_addr()?;
            banner.push(match kind {
                Kind::Http => format!("http    http://{local}/"),
                Kind::Https => format!("https   https://{local}/"),
                Kind::Metrics => format!("metrics http://{local}/metrics"),
            });
            let std_socket = socket.into_std()?;
            sockets.push((*addr, std_socket.try_clone()?));
            listeners.push(http::Listener {
                name: format!("{}:{addr}", kind.name()),
                socket: TcpListener::from_std(std_socket)?,
                tls: tls.clone().map(http::TlsDoor::Rustls),
                limits: settings.limits.clone(),
                protocol,
                handler: handler.clone(),
                metrics: self.metrics.clone(),
            });
        }
        Ok(Prepared {
            kind,
            settings,
            listeners,
            sockets,
            stop,
            banner,
        })
    }

    fn launch(&self, p: Prepared) -> (Kind, Group) {
        let mut loops = Vec::new();
        for (l, (addr, _)) in p.listeners.into_iter().zip(&p.sockets) {
            let token = self.ctx_shutdown.child_token();
            let name = l.name.clone();
            let accept =
                self.supervisor
                    .spawn_once("web", name, l.run(token.clone(), self.tracker.clone()));
            loops.push((*addr, token, accept));
        }
        (
            p.kind,
            Group {
                settings: p.settings,
                sockets: p.sockets,
                loops,
                stop: p.stop,
            },
        )
    }

    /// Stop an old generation; see the module comment for the two cases.
    fn retire(old: Group, keeps: &[SocketAddr]) {
        for (addr, token, accept) in old.loops {
            if keeps.contains(&addr) {
                accept.abort();
            } else {
                token.cancel();
            }
        }
        old.stop.cancel();
    }

    /// Bring every group in line with `cfg`. Returns the groups that could not be changed
    /// (they keep running as they were), each with the reason, and the groups restarted.
    pub(crate) async fn apply(&self, cfg: Sections<'_>) -> (Vec<(Kind, anyhow::Error)>, Vec<Kind>) {
        let mut failed = Vec::new();
        let mut changed = Vec::new();
        let mut groups = self.groups.lock().await;
        for kind in Kind::ALL {
            let want = match settings(cfg, kind, &self.data_dir) {
                Ok(w) => w,
                Err(e) => {
                    failed.push((kind, e));
                    continue;
                }
            };
            let idx = groups.iter().position(|(k, _)| *k == kind);
            let have = idx.map(|i| &groups[i].1.settings);
            if have == want.as_ref() {
                continue;
            }
            let next = match want {
                None => None,
                Some(s) => {
                    let reuse: &[_] = idx.map(|i| &groups[i].1.sockets[..]).unwrap_or(&[]);
                    match self.prepare(kind, s, reuse).await {
                        Ok(p) => Some(p),
                        Err(e) => {
                            failed.push((kind, e));
                            continue;
                        }
                    }
                }
            };
            // New generation accepting first, then the old one stops.
            let keeps: Vec<SocketAddr> = next
                .as_ref()
                .map(|p| p.settings.listen.clone())
                .unwrap_or_default();
            if let Some(p) = next {
                for line in &p.banner {
                    tracing::info!("listening: {line}");
                }
                groups.push(self.launch(p));
            }
            if let Some(i) = idx {
                let (_, old) = groups.remove(i);
                Self::retire(old, &keeps);
            }
            tracing::info!(group = kind.name(), "restarted with the new settings");
            changed.push(kind);
        }
        (failed, changed)
    }
}
