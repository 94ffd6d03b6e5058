//! A command hook: the program runs without a shell in its own process group, gets the
//! event as JSON on stdin and as `PROVBOX_*` variables, and is killed with everything it
//! started (the whole group) when its time is up.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt as _;

use super::{Event, Outcome};

pub(crate) struct Command {
    pub name: String,
    pub argv: Vec<String>,
    pub timeout: Duration,
}

/// Environment values cannot hold NUL (the text may come from a phone's syslog line).
fn env_safe(s: &str) -> String {
    s.replace('\0', "")
}

impl Command {
    pub(crate) async fn run(&self, ev: &Event, body: &[u8]) -> Outcome {
        let mut cmd = tokio::process::Command::new(&self.argv[0]);
        cmd.args(&self.argv[1..])
            .env("PROVBOX_HOOK", &self.name)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            // Its complaints land where provbox's own log goes (the journal under systemd).
            .stderr(Stdio::inherit())
            // Its own group: the timeout kills what it started too (a `sleep &`, a pipeline).
            .process_group(0);
        for (k, v) in ev.env() {
            match v {
                Some(v) => cmd.env(k, env_safe(&v)),
                None => cmd.env_remove(k),
            };
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(hook = %self.name, program = %self.argv[0], "hook cannot start: {e}");
                return Outcome::Error;
            }
        };
        let pgid = child.id();
        let stdin = child.stdin.take();
        let finished = tokio::time::timeout(self.timeout, async {
            if let Some(mut s) = stdin {
                // A program that does not read stdin is fine: the pipe just closes.
                let _ = s.write_all(body).await;
            }
            child.wait().await
        })
        .await;
        match finished {
            Ok(Ok(status)) if status.success() => Outcome::Ok,
            Ok(Ok(status)) => {
                tracing::warn!(hook = %self.name, event = ev.event.as_str(), "hook failed: {status}");
                Outcome::Failed
            }
            Ok(Err(e)) => {
                tracing::warn!(hook = %self.name, "hook: cannot wait for the program: {e}");
                Outcome::Error
            }
            Err(_) => {
                // Not yet reaped, so the group id still names our group.
                if let Some(pgid) = pgid {
                    // SAFETY: kill(2) on a process group we created; no memory involved.
                    unsafe { libc::kill(-(pgid as i32), libc::SIGKILL) };
                }
                let _ = child.wait().await;
                tracing::warn!(
                    hook = %self.name,
                    event = ev.event.as_str(),
                    timeout_secs = self.timeout.as_secs_f64(),
                    "hook timed out: its process group was killed"
                );
                Outcome::Timeout
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hooks::Kind;

    fn event() -> Event {
        Event {
            event: Kind::Provisioned,
            at: 1,
            device: Some("00:0e:08:aa:bb:cc".into()),
            mac: Some("00:0e:08:aa:bb:cc".into()),
            ip: Some("198.18.0.7".parse().unwrap()),
            state: Some("provisioned"),
            previous_state: Some("configured"),
            reason: None,
            model: Some("SPA\u{0}504G".into()),
            vendor_class: None,
            hostname: None,
        }
    }

    fn cmd(script: &str, timeout_ms: u64) -> Command {
        Command {
            name: "t".into(),
            argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
            timeout: Duration::from_millis(timeout_ms),
        }
    }

    #[tokio::test]
    async fn stdin_and_environment_carry_the_event() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let script = format!(
            "cat > {0}.json; echo \"$PROVBOX_EVENT $PROVBOX_MAC $PROVBOX_IP $PROVBOX_MODEL ${{PROVBOX_REASON-unset}} $PROVBOX_HOOK\" > {0}.env",
            out.display()
        );
        let ev = event();
        let body = serde_json::to_vec(&ev).unwrap();
        assert_eq!(cmd(&script, 10_000).run(&ev, &body).await, Outcome::Ok);
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.with_extension("json")).unwrap()).unwrap();
        assert_eq!(json["event"], "provisioned");
        assert_eq!(json["previous_state"], "configured");
        assert_eq!(
            std::fs::read_to_string(out.with_extension("env")).unwrap(),
            "provisioned 00:0e:08:aa:bb:cc 198.18.0.7 SPA504G unset t\n"
        );
    }

    #[tokio::test]
    async fn exit_status_and_missing_program_are_told_apart() {
        let ev = event();
        assert_eq!(cmd("exit 3", 10_000).run(&ev, b"{}").await, Outcome::Failed);
        let missing = Command {
            name: "t".into(),
            argv: vec!["/nonexistent/hook".into()],
            timeout: Duration::from_secs(1),
        };
        assert_eq!(missing.run(&ev, b"{}").await, Outcome::Error);
    }
}
