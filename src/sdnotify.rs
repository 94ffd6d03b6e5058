//! The systemd notification protocol (`sd_notify(3)`), which is one datagram of
//! `KEY=value` lines to the unix socket named in `$NOTIFY_SOCKET`. Small enough to write
//! here rather than depend on a crate for it. Outside systemd (no `$NOTIFY_SOCKET`) every
//! call does nothing.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// Where to send notifications; `None` when not started by systemd (or the socket is gone).
pub(crate) struct Notifier {
    socket: Option<(UnixDatagram, SocketAddr)>,
}

fn target(path: &str) -> std::io::Result<SocketAddr> {
    // `@name` is an abstract-namespace socket (systemd uses these in containers).
    if let Some(name) = path.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        SocketAddr::from_abstract_name(name.as_bytes())
    } else {
        SocketAddr::from_pathname(path)
    }
}

impl Notifier {
    pub(crate) fn from_env() -> Notifier {
        let socket = std::env::var("NOTIFY_SOCKET").ok().and_then(|path| {
            let addr = target(&path)
                .inspect_err(|e| tracing::warn!("NOTIFY_SOCKET={path} is unusable: {e}"))
                .ok()?;
            let sock = UnixDatagram::unbound().ok()?;
            Some((sock, addr))
        });
        Notifier { socket }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.socket.is_some()
    }

    /// Send `state` (newline-separated `KEY=value`); failures are logged, never fatal.
    pub(crate) fn notify(&self, state: &str) {
        if let Some((sock, addr)) = &self.socket
            && let Err(e) = sock.send_to_addr(state.as_bytes(), addr)
        {
            tracing::warn!("sd_notify({}) failed: {e}", state.replace('\n', " "));
        }
    }

    pub(crate) fn ready(&self) {
        self.notify("READY=1\nSTATUS=serving");
    }

    /// systemd ≥ 253 wants the monotonic clock with RELOADING=1 to match the reload.
    pub(crate) fn reloading(&self) {
        self.notify(&format!(
            "RELOADING=1\nMONOTONIC_USEC={}\nSTATUS=reloading configuration",
            monotonic_usec()
        ));
    }

    pub(crate) fn stopping(&self) {
        self.notify("STOPPING=1\nSTATUS=finishing transfers");
    }

    /// Ping the watchdog at half the interval systemd asked for, if it asked. Pinging from
    /// a runtime task proves the runtime still schedules work; `healthy` (every service
    /// loop beating, none restarting) must hold too, else the ping is withheld and
    /// systemd restarts a process that stays wedged.
    pub(crate) fn spawn_watchdog(
        &self,
        shutdown: tokio_util::sync::CancellationToken,
        healthy: impl Fn() -> Result<(), String> + Send + 'static,
    ) {
        let Some(every) = self.watchdog_interval() else {
            return;
        };
        Notifier::from_env().ping_while_healthy(every / 2, shutdown, healthy);
    }

    fn ping_while_healthy(
        self,
        every: Duration,
        shutdown: tokio_util::sync::CancellationToken,
        healthy: impl Fn() -> Result<(), String> + Send + 'static,
    ) {
        tokio::spawn(async move {
            let mut withheld = false;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(every) => match healthy() {
                        Ok(()) => {
                            if withheld {
                                tracing::info!("watchdog: every service runs again; pinging");
                                withheld = false;
                            }
                            self.notify("WATCHDOG=1");
                        }
                        Err(why) => {
                            if !withheld {
                                tracing::warn!("watchdog: not pinging while {}", why.replace('\n', "; "));
                                withheld = true;
                            }
                        }
                    },
                }
            }
        });
    }

    /// The watchdog interval systemd asked for (`WatchdogSec=`), if any, for this process.
    pub(crate) fn watchdog_interval(&self) -> Option<Duration> {
        if !self.enabled() {
            return None;
        }
        let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
        if let Ok(pid) = std::env::var("WATCHDOG_PID")
            && pid.parse::<u32>().ok() != Some(std::process::id())
        {
            return None;
        }
        (usec > 0).then(|| Duration::from_micros(usec))
    }
}

fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A notifier sending to `to` (a path, or `@name` for an abstract socket).
    fn notifier_to(to: &str) -> Notifier {
        Notifier {
            socket: Some((UnixDatagram::unbound().unwrap(), target(to).unwrap())),
        }
    }

    #[test]
    fn sends_to_path_and_abstract_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let rx = UnixDatagram::bind(&path).unwrap();
        let n = notifier_to(path.to_str().unwrap());
        n.ready();
        let mut buf = [0u8; 256];
        let len = rx.recv(&mut buf).unwrap();
        assert!(
            std::str::from_utf8(&buf[..len])
                .unwrap()
                .starts_with("READY=1")
        );

        use std::os::linux::net::SocketAddrExt;
        let name = format!("provbox-test-{}", std::process::id());
        let rx = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(&name).unwrap()).unwrap();
        let n = notifier_to(&format!("@{name}"));
        n.stopping();
        let len = rx.recv(&mut buf).unwrap();
        assert!(
            std::str::from_utf8(&buf[..len])
                .unwrap()
                .starts_with("STOPPING=1")
        );
    }

    #[tokio::test]
    async fn watchdog_pings_are_withheld_while_a_service_is_unhealthy() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let rx = UnixDatagram::bind(&path).unwrap();
        let n = notifier_to(path.to_str().unwrap());
        let ok = Arc::new(AtomicBool::new(false));
        let o = ok.clone();
        let stop = tokio_util::sync::CancellationToken::new();
        n.ping_while_healthy(Duration::from_millis(10), stop.clone(), move || {
            if o.load(Ordering::SeqCst) {
                Ok(())
            } else {
                Err("tftp: tftp listener is restarting".into())
            }
        });
        let rx = tokio::net::UnixDatagram::from_std({
            rx.set_nonblocking(true).unwrap();
            rx
        })
        .unwrap();
        let mut buf = [0u8; 64];
        // Unhealthy: nothing arrives over many intervals.
        let quiet = tokio::time::timeout(Duration::from_millis(300), rx.recv(&mut buf)).await;
        assert!(quiet.is_err(), "a ping was sent while unhealthy");
        ok.store(true, Ordering::SeqCst);
        let len = tokio::time::timeout(Duration::from_secs(5), rx.recv(&mut buf))
            .await
            .expect("pings resume once healthy")
            .unwrap();
        assert_eq!(&buf[..len], b"WATCHDOG=1");
        stop.cancel();
    }

    #[test]
    fn silent_without_socket() {
        let n = Notifier { socket: None };
        assert!(!n.enabled());
        n.ready();
        assert_eq!(n.watchdog_interval(), None);
    }
}
