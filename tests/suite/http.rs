//! HTTP delivery, hot reload, limits, metrics and shutdown, driven with real `curl`.

use crate::support;

use std::io::{Read, Seek, SeekFrom, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::dedupe::{assert_contains_all, assert_mentions};
use support::*;

struct Ports {
    http: u16,
    metrics: u16,
}

fn config(p: &Ports, extra: &str) -> String {
    format!(
        "data_dir: data\ncatalog:\n  roots: [files, more]\nhttp:\n  enabled: true\n  listen: [\"127.0.0.1:{}\"]\nmetrics:\n  enabled: true\n  listen: \"127.0.0.1:{}\"\n{extra}",
        p.http, p.metrics
    )
}

/// provbox serving [`served_dir`] with [`config`] on fresh ports, nothing extra.
fn serve() -> (Ports, Provbox) {
    let p = ports();
    let pb = Provbox::start(served_dir(), &config(&p, ""));
    (p, pb)
}

fn ports() -> Ports {
    Ports {
        http: free_tcp_port(),
        metrics: free_tcp_port(),
    }
}

/// `curl` returning (status, headers, body). Extra args go before the URL.
fn curl(url: &str, args: &[&str]) -> (u16, String, Vec<u8>) {
    let r = support::curl(60, args, url);
    (r.code, r.headers, r.body)
}

/// One response header's value, as sent (curl() lowercases its header text for matching).
fn header(url: &str, name: &str) -> String {
    let out = Command::new("curl").args(["-sSI", url]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no {name} header from {url}"))
}

fn served_dir() -> tempfile::TempDir {
    let d = Provbox::dir();
    std::fs::create_dir_all(d.path().join("more/sub")).unwrap();
    std::fs::write(d.path().join("files/CP-8831-3PCC.cfg"), "<flat-profile/>\n").unwrap();
    std::fs::write(d.path().join("files/shadowed.cfg"), "first root wins").unwrap();
    std::fs::write(d.path().join("more/shadowed.cfg"), "second root").unwrap();
    let fw: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(d.path().join("more/fw.bin"), &fw).unwrap();
    std::fs::write(d.path().join("more/sub/phone.cnf.xml"), "<device/>").unwrap();
    std::fs::write(d.path().join("files/.secret"), "hidden").unwrap();
    std::fs::write(d.path().join("files/half.bin.part"), "partial").unwrap();
    std::fs::write(d.path().join("files/notes.txt~"), "backup").unwrap();
    d
}

/// Poll `f` until it returns true, for at most `limit`; returns whether it did.
fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    wait_until(limit, || f().then_some(())).is_some()
}

#[test]
fn get_head_ranges_conditionals_and_refusals() {
    crate::support::needs!("curl");
    let (p, pb) = serve();
    let base = format!("http://127.0.0.1:{}", p.http);
    let fw = std::fs::read(pb.path().join("more/fw.bin")).unwrap();

    // Byte-exact bodies from both roots; the first root wins.
    let (code, h, body) = curl(&format!("{base}/CP-8831-3PCC.cfg"), &[]);
    assert_eq!((code, &body[..]), (200, &b"<flat-profile/>\n"[..]));
    assert!(h.contains("content-type: text/plain"), "{h}");
    let (code, h, body) = curl(&format!("{base}/fw.bin"), &[]);
    assert_eq!(code, 200);
    assert_eq!(body, fw);
    assert!(h.contains("content-type: application/octet-stream"), "{h}");
    assert!(h.contains("accept-ranges: bytes"));
    assert_eq!(
        curl(&format!("{base}/shadowed.cfg"), &[]).2,
        b"first root wins"
    );
    assert_eq!(curl(&format!("{base}/sub/phone.cnf.xml"), &[]).0, 200);
    assert_eq!(curl(&format!("{base}/sub//./phone.cnf.xml"), &[]).0, 200);

    // HEAD: same headers, no body.
    let (code, h, body) = curl(&format!("{base}/fw.bin"), &["-I"]);
    assert_eq!(code, 200);
    assert!(h.contains("content-length: 300000"), "{h}");
    assert!(body.len() < 1000, "HEAD sent a body"); // with -I, curl writes the head there

    // Ranges.
    let (code, h, body) = curl(&format!("{base}/fw.bin"), &["-r", "100-199"]);
    assert_eq!(code, 206);
    assert_eq!(body, &fw[100..200]);
    assert!(h.contains("content-range: bytes 100-199/300000"), "{h}");
    let (code, _, body) = curl(&format!("{base}/fw.bin"), &["-r", "-10"]);
    assert_eq!((code, body), (206, fw[fw.len() - 10..].to_vec()));
    let (code, h, _) = curl(&format!("{base}/fw.bin"), &["-r", "400000-"]);
    assert_eq!(code, 416);
    assert!(h.contains("content-range: bytes */300000"), "{h}");

    // Validators: ETag and Last-Modified give 304.
    let etag = header(&format!("{base}/fw.bin"), "etag");
    let lm = header(&format!("{base}/fw.bin"), "last-modified");
    let inm = format!("If-None-Match: {etag}");
    assert_eq!(curl(&format!("{base}/fw.bin"), &["-H", &inm]).0, 304);
    let ims = format!("If-Modified-Since: {lm}");
    assert_eq!(curl(&format!("{base}/fw.bin"), &["-H", &ims]).0, 304);
    assert_eq!(
        curl(
            &format!("{base}/fw.bin"),
            &["-H", "If-None-Match: \"nope\""]
        )
        .0,
        200
    );
    // If-Range with a stale validator: whole file.
    let (code, _, body) = curl(
        &format!("{base}/fw.bin"),
        &["-r", "0-9", "-H", "If-Range: \"stale\""],
    );
    assert_eq!((code, body.len()), (200, fw.len()));

    // Refusals.
    assert_eq!(curl(&format!("{base}/nothing.cfg"), &[]).0, 404);
    assert_eq!(curl(&format!("{base}/.secret"), &[]).0, 404);
    assert_eq!(curl(&format!("{base}/half.bin.part"), &[]).0, 404);
    assert_eq!(curl(&format!("{base}/notes.txt~"), &[]).0, 404);
    assert_eq!(
        curl(&format!("{base}/sub/"), &[]).0,
        404,
        "no directory listing"
    );
    assert_eq!(curl(&format!("{base}/"), &[]).0, 400);
    for evil in [
        "/../etc/passwd",
        "/sub/../../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/..%5c..%5cetc%5cpasswd",
        "/C:/windows/win.ini",
    ] {
        let (code, _, body) = curl(&format!("{base}{evil}"), &["--path-as-is"]);
        assert_eq!(code, 403, "{evil}");
        assert!(body.is_empty());
    }
    assert_eq!(curl(&format!("{base}/a%00b"), &[]).0, 400);
    let long = format!("{base}/{}", "a".repeat(2000));
    assert_eq!(curl(&long, &[]).0, 414);
    let (code, h, _) = curl(&format!("{base}/fw.bin"), &["-X", "POST", "-d", "x"]);
    assert_eq!(code, 405);
    assert!(h.contains("allow: get, head"), "{h}");
    assert_eq!(curl(&format!("{base}/fw.bin"), &["-X", "DELETE"]).0, 405);

    // Keep-alive: two requests on one connection.
    let out = Command::new("curl")
        .args(["-sS", "-v", "-o", "/dev/null", "-o", "/dev/null"])
        .arg(format!("{base}/CP-8831-3PCC.cfg"))
        .arg(format!("{base}/fw.bin"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Re-using existing connection"), "{err}");

    // Every refusal is counted with its reason; the access log has a line per request.
    let (_, _, m) = curl(&format!("http://127.0.0.1:{}/metrics", p.metrics), &[]);
    let m = String::from_utf8(m).unwrap();
    assert_contains_all(
        &m,
        &[
            "provbox_refusals_total{protocol=\"http\",reason=\"traversal\"} 5",
            "provbox_refusals_total{protocol=\"http\",reason=\"not_found\"}",
            "provbox_refusals_total{protocol=\"http\",reason=\"method\"} 2",
            "provbox_requests_total{protocol=\"http\",outcome=\"not_modified\"} 2",
            "provbox_requests_total{protocol=\"http\",outcome=\"partial\"} 2",
            "provbox_catalog_files 4",
            "provbox_build_info{version=\"",
            "provbox_request_duration_seconds_bucket",
            "provbox_transfers_in_flight{protocol=\"http\"} 0",
        ],
    );
    assert!(
        pb.log().contains("path=/fw.bin status=206 bytes=100"),
        "{}",
        pb.log()
    );
}

#[test]
fn metrics_health_and_readiness() {
    crate::support::needs!("curl");
    let (p, _pb) = serve();
    let base = format!("http://127.0.0.1:{}", p.metrics);
    let (code, _, body) = curl(&format!("{base}/healthz"), &[]);
    assert_eq!((code, &body[..]), (200, &b"ok\n"[..]));
    assert_eq!(curl(&format!("{base}/readyz"), &[]).0, 200);
    assert_eq!(curl(&format!("{base}/nope"), &[]).0, 404);
    curl(&format!("http://127.0.0.1:{}/fw.bin", p.http), &[]);
    // OpenMetrics when asked for (plain clients get text 0.0.4: tests/suite/metrics_format.rs).
    let (code, h, body) = curl(
        &format!("{base}/metrics"),
        &["-H", "Accept: application/openmetrics-text; version=1.0.0"],
    );
    assert_eq!(code, 200);
    assert!(h.contains("openmetrics-text"), "{h}");
    let text = String::from_utf8(body).unwrap();
    assert_contains_all(
        &text,
        &[
            "provbox_sent_bytes_total{protocol=\"http\"} 300000",
            "provbox_requests_total{protocol=\"http\",outcome=\"ok\"} 1",
            "# EOF",
        ],
    );
}

#[test]
fn hot_reload_adds_replaces_and_removes_files() {
    crate::support::needs!("curl");
    let (p, pb) = serve();
    let url = |f: &str| format!("http://127.0.0.1:{}/{f}", p.http);
    let files = pb.path().join("files");

    // Added (written and closed): served.
    std::fs::write(files.join("new.cfg"), "v1").unwrap();
    assert!(eventually(Duration::from_secs(5), || curl(
        &url("new.cfg"),
        &[]
    )
    .2 == b"v1"));
    // Added in a new directory.
    std::fs::create_dir(files.join("dir")).unwrap();
    std::fs::write(files.join("dir/inner.xml"), "inner").unwrap();
    assert!(eventually(Duration::from_secs(5), || curl(
        &url("dir/inner.xml"),
        &[]
    )
    .0 == 200));
    // Replaced by rename (the safe way): served whole.
    std::fs::write(files.join("new.cfg.tmp"), "v2").unwrap();
    std::fs::rename(files.join("new.cfg.tmp"), files.join("new.cfg")).unwrap();
    assert!(eventually(Duration::from_secs(5), || curl(
        &url("new.cfg"),
        &[]
    )
    .2 == b"v2"));
    // A file still open for writing is not offered until it is closed.
    let mut open = std::fs::File::create(files.join("slow.bin")).unwrap();
    open.write_all(b"first half ").unwrap();
    open.flush().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        curl(&url("slow.bin"), &[]).0,
        404,
        "half-written file offered"
    );
    open.write_all(b"second half").unwrap();
    drop(open);
    assert!(eventually(Duration::from_secs(5), || {
        curl(&url("slow.bin"), &[]).2 == b"first half second half"
    }));
    // Removed: 404. A removed shadowing file uncovers the second root's.
    std::fs::remove_file(files.join("new.cfg")).unwrap();
    assert!(eventually(Duration::from_secs(5), || curl(
        &url("new.cfg"),
        &[]
    )
    .0 == 404));
    std::fs::remove_file(files.join("shadowed.cfg")).unwrap();
    assert!(eventually(Duration::from_secs(5), || {
        curl(&url("shadowed.cfg"), &[]).2 == b"second root"
    }));
    // A directory moved away takes its files with it.
    std::fs::rename(files.join("dir"), pb.path().join("gone")).unwrap();
    assert!(eventually(Duration::from_secs(5), || curl(
        &url("dir/inner.xml"),
        &[]
    )
    .0 == 404));
    // Partial names never become visible.
    std::fs::write(files.join("x.part"), "p").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(curl(&url("x.part"), &[]).0, 404);
    // A symlink out of the root is not served.
    std::os::unix::fs::symlink("/etc/hostname", files.join("leak")).unwrap();
    std::fs::write(files.join("after-leak.cfg"), "x").unwrap();
    assert!(eventually(Duration::from_secs(5), || curl(
        &url("after-leak.cfg"),
        &[]
    )
    .0 == 200));
    assert_eq!(curl(&url("leak"), &[]).0, 404);
}

fn version(k: u8, len: usize) -> Vec<u8> {
    // Each version differs in every 4 KiB block, so a mix of two is never equal to either.
    (0..len)
        .map(|i| (i / 4096) as u8 ^ k.wrapping_mul(37) ^ (i as u8))
        .collect()
}

/// The foundation's integrity promise: a 40 MiB firmware rewritten in place, slowly, while
/// clients fetch it in a loop. Every completed fetch is exactly one whole version.
#[test]
fn slow_in_place_rewrite_never_delivers_a_torn_file() {
    crate::support::needs!("curl");
    const LEN: usize = 40 << 20;
    let p = ports();
    let dir = served_dir();
    let fw = dir.path().join("files/firmware.bin");
    let versions: Vec<Vec<u8>> = (0..3).map(|k| version(k, LEN)).collect();
    std::fs::write(&fw, &versions[0]).unwrap();
    let pb = Provbox::start(dir, &config(&p, ""));
    let url = format!("http://127.0.0.1:{}/firmware.bin", p.http);

    let writer = {
        let fw = fw.clone();
        let versions = versions.clone();
        std::thread::spawn(move || {
            for v in &versions[1..] {
                // In place: same inode, no truncation, 1 MiB at a time with pauses.
                let mut f = std::fs::OpenOptions::new().write(true).open(&fw).unwrap();
                f.seek(SeekFrom::Start(0)).unwrap();
                for chunk in v.chunks(1 << 20) {
                    f.write_all(chunk).unwrap();
                    f.flush().unwrap();
                    std::thread::sleep(Duration::from_millis(40));
                }
                drop(f);
                std::thread::sleep(Duration::from_millis(300));
            }
        })
    };
    let mut seen = [0usize; 3];
    let mut fetches = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while (!writer.is_finished() || fetches < 2) && Instant::now() < deadline && fetches < 400 {
        let (code, _, body) = curl(&url, &[]);
        assert_eq!(code, 200);
        let which = versions.iter().position(|v| *v == body);
        assert!(
            which.is_some(),
            "fetch {fetches} delivered {} bytes matching no whole version",
            body.len()
        );
        seen[which.unwrap()] += 1;
        fetches += 1;
    }
    writer.join().unwrap();
    assert!(fetches >= 4, "only {fetches} fetches completed");
    // Once the writer is done, the last version is what phones get.
    assert!(eventually(Duration::from_secs(5), || curl(&url, &[]).2 == versions[2]));
    eprintln!("fetches per version: {seen:?}");
    assert!(
        pb.log()
            .contains("published file=firmware.bin bytes=41943040")
    );
}

#[test]
fn connection_limit_and_timeouts() {
    crate::support::needs!("curl");
    let p = ports();
    let extra = "";
    let cfg = config(&p, extra).replace(
        "  listen: [\"127.0.0.1",
        "  limits:\n    max_connections: 2\n    header_timeout: 1s\n    idle_timeout: 2s\n  listen: [\"127.0.0.1",
    );
    let pb = Provbox::start(served_dir(), &cfg);
    let addr = format!("127.0.0.1:{}", p.http);
    let a = TcpStream::connect(&addr).unwrap();
    let b = TcpStream::connect(&addr).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let mut c = TcpStream::connect(&addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut answer = String::new();
    let _ = c.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer:?}");
    // A client that sends half a request head is cut off by the header timeout, and the
    // silent ones by the idle timeout, which frees their slots.
    for mut s in [a, b] {
        let _ = s.write_all(b"GET /fw.bin HTTP/1.1\r\nHost: x\r\n");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut buf = Vec::new();
        let r = s.read_to_end(&mut buf);
        assert!(r.is_ok() || r.unwrap_err().kind() != std::io::ErrorKind::WouldBlock);
    }
    assert!(eventually(Duration::from_secs(10), || {
        curl(&format!("http://{addr}/CP-8831-3PCC.cfg"), &[]).0 == 200
    }));
    let (_, _, m) = curl(&format!("http://127.0.0.1:{}/metrics", p.metrics), &[]);
    let m = String::from_utf8(m).unwrap();
    assert!(
        m.contains(&format!(
            "provbox_connections_refused_total{{listener=\"http:{addr}\",reason=\"limit\"}} 1"
        )),
        "{m}"
    );
    drop(pb);
}

#[test]
fn sigterm_lets_a_transfer_in_flight_finish() {
    crate::support::needs!("curl");
    let p = ports();
    let dir = served_dir();
    let big = version(5, 64 << 20);
    std::fs::write(dir.path().join("files/big.bin"), &big).unwrap();
    let mut pb = Provbox::start(dir, &config(&p, "shutdown_grace: 60s\n"));
    let out = pb.path().join("got.bin");
    // 64 MiB at 16 MiB/s: about four seconds, far more than socket buffers hold.
    let mut slow = Command::new("curl")
        .args(["-sS", "--limit-rate", "16M", "-o"])
        .arg(&out)
        .arg(format!("http://127.0.0.1:{}/big.bin", p.http))
        .spawn()
        .unwrap();
    let metrics = format!("http://127.0.0.1:{}/metrics", p.metrics);
    assert!(eventually(Duration::from_secs(10), || {
        String::from_utf8_lossy(&curl(&metrics, &[]).2)
            .contains("provbox_transfers_in_flight{protocol=\"http\"} 1")
    }));
    let code = pb.signal_and_wait("TERM");
    assert_eq!(code, Some(0));
    assert!(slow.wait().unwrap().success());
    assert_eq!(std::fs::read(&out).unwrap(), big);
    // After shutdown nothing listens.
    assert!(TcpStream::connect(("127.0.0.1", p.http)).is_err());
}

#[test]
fn bad_configs_are_refused_with_field_and_line() {
    let d = served_dir();
    let write = |name: &str, text: &str| {
        let p = d.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "catalog:\n  roots: [files]\nhttp:\n  enabled: true\n  lisen: [\"127.0.0.1:1\"]\n",
            ":5:",
            &["lisen"],
        ),
        (
            "catalog:\n  roots: [files]\nhttp:\n  enabled: yes please\n",
            ":4:",
            &["enabled"],
        ),
        (
            "catalog:\n  roots: [files]\nhttp:\n  enabled: true\n  listen: [\"300.1.1.1:80\"]\n",
            ":5:",
            &[],
        ),
        (
            "catalog:\n  roots:\n    - files\n    - /nonexistent/firmware\n",
            ":4:",
            &["catalog.roots[1]", "expected an existing directory"],
        ),
        (
            "catalog:\n  roots: [files]\nhttp:\n  enabled: true\n  listen: [\"127.0.0.1:8080\"]\nmetrics:\n  enabled: true\n  listen: 127.0.0.1:8080\n",
            ":8:",
            &["metrics.listen", "already used by http.listen[0]"],
        ),
        (
            "catalog:\n  roots: [files]\nshutdown_grace: forever\n",
            ":3:",
            &["duration"],
        ),
        ("catalog:\n  roots: [files\n", ":", &[]),
    ];
    for (i, (yaml, line, words)) in cases.iter().enumerate() {
        let path = write(&format!("bad{i}.yaml"), yaml);
        let path = path.to_str().unwrap();
        let (code, out) = provbox(&["check", "--config", path]);
        assert_eq!(code, 1, "case {i} accepted:\n{out}");
        assert!(
            out.contains(&format!("bad{i}.yaml{line}")),
            "case {i}: {out}"
        );
        for w in *words {
            assert!(out.contains(w), "case {i} lacks {w:?}: {out}");
        }
        // `serve` refuses the same way, before binding anything.
        let (code, out2) = provbox(&["serve", "--config", path]);
        assert_eq!(code, 1, "serve accepted case {i}");
        assert_eq!(out, out2, "check and serve disagree on case {i}");
    }
    let (code, out) = provbox(&["check", "--config", "/nonexistent.yaml"]);
    assert_eq!(code, 1);
    assert!(out.contains("cannot read"), "{out}");
}

#[test]
fn shipped_config_checks_and_lists_listeners() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cfg = root.join("config.yaml");
    let (code, out) = provbox(&["check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert_mentions(
        &out,
        &[
            ("http.listen[0]", "0.0.0.0:8080"),
            ("https.listen[0]", "0.0.0.0:8443"),
            ("metrics.listen", "9100"),
            ("files/profiles", "files/firmware"),
        ],
    );
    let (code, out) = provbox(&["--version"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("provbox "), "{out}");
}
