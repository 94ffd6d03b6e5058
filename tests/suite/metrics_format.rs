//! Issue 13, item 8: `/metrics` speaks what the scraper asks for. OpenMetrics only when
//! `Accept` names it; plain clients (curl, Python's `prometheus_client.parser`, older
//! agents) get Prometheus text 0.0.4.

use crate::support::{Provbox, free_tcp_port, http_and_metrics, require, run};

use std::process::Command;

/// curl /metrics with extra args: (content type, body).
fn scrape(port: u16, args: &[&str]) -> (String, String) {
    let mut a = vec!["-s", "-w", "\n%{content_type}"];
    a.extend_from_slice(args);
    let url = format!("http://127.0.0.1:{port}/metrics");
    a.push(&url);
    let out = run("curl", &a);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, ctype) = text.rsplit_once('\n').unwrap();
    (ctype.to_string(), body.to_string())
}

/// Parse with Python's prometheus_client: one `name type [sample value]...` line per family.
fn python_parse(module: &str, text: &str) -> Result<String, String> {
    require("python3");
    let script = format!(
        "import sys\nfrom {module} import text_string_to_metric_families as parse\n\
         for f in parse(sys.stdin.read()):\n\
         \x20   print(f.name, f.type, ' '.join(f'{{s.name}}{{sorted(s.labels.items())}}={{float(s.value)}}' for s in f.samples))\n"
    );
    let child = crate::support::spawn_with_stdin(
        Command::new("python3").args(["-c", &script]),
        text.as_bytes(),
    );
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if stderr.contains("No module named 'prometheus_client'") {
        panic!("Python's prometheus_client is not installed: pip install prometheus_client");
    }
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(stderr)
    }
}

#[test]
fn metrics_speak_text_004_unless_openmetrics_is_asked_for() {
    crate::support::needs!("curl", "python3");
    let (http, metrics) = (free_tcp_port(), free_tcp_port());
    let dir = Provbox::serving(&[("a.cfg", "x")]);
    let _p = Provbox::start(
        dir,
        &format!("data_dir: data\n{}", http_and_metrics(http, metrics)),
    );
    run("curl", &["-s", &format!("http://127.0.0.1:{http}/a.cfg")]);
    run(
        "curl",
        &["-s", &format!("http://127.0.0.1:{http}/nope.cfg")],
    );

    for args in [&["-H", "Accept: text/plain"][..], &[][..]] {
        let (ctype, text) = scrape(metrics, args);
        assert_eq!(
            ctype, "text/plain; version=0.0.4; charset=utf-8",
            "{args:?}"
        );
        assert!(
            !text.contains("# EOF") && !text.contains("# UNIT"),
            "{text}"
        );
        let families = python_parse("prometheus_client.parser", &text)
            .unwrap_or_else(|e| panic!("prometheus_client cannot read it: {e}\n{text}"));
        let family = |name: &str| {
            families
                .lines()
                .find(|l| l.split(' ').next() == Some(name))
                .unwrap_or_else(|| panic!("no family {name}: {families}"))
                .to_string()
        };
        let build = family("provbox_build_info");
        assert!(
            build.starts_with("provbox_build_info gauge provbox_build_info[('version', '"),
            "{build}"
        );
        assert!(build.ends_with("=1.0"), "{build}");
        let requests = family("provbox_requests");
        assert!(
            requests.starts_with("provbox_requests counter "),
            "{requests}"
        );
        assert!(
            requests
                .contains("provbox_requests_total[('outcome', 'ok'), ('protocol', 'http')]=1.0"),
            "{requests}"
        );
        let refusals = family("provbox_refusals");
        assert!(
            refusals.contains("[('protocol', 'http'), ('reason', 'not_found')]=1.0"),
            "{refusals}"
        );
        let sent = family("provbox_sent_bytes");
        assert!(
            sent.starts_with(
                "provbox_sent_bytes counter provbox_sent_bytes_total[('protocol', 'http')]="
            ),
            "{sent}"
        );
        let hist = family("provbox_request_duration_seconds");
        assert!(
            hist.starts_with("provbox_request_duration_seconds histogram "),
            "{hist}"
        );
    }

    // What Prometheus sends: OpenMetrics, as before, readable by the OpenMetrics parser.
    let (ctype, text) = scrape(
        metrics,
        &[
            "-H",
            "Accept: application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
        ],
    );
    assert_eq!(
        ctype,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert!(text.contains("# TYPE provbox_build info\n"), "{text}");
    let families = python_parse("prometheus_client.openmetrics.parser", &text)
        .unwrap_or_else(|e| panic!("not OpenMetrics: {e}\n{text}"));
    assert!(families.contains("provbox_build info "), "{families}");
}
