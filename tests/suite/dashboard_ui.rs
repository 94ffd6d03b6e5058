//! The dashboard's actions, live stream and chart in headless Chromium (driven over
//! DevTools with the helper of `dashboard.rs`): each action asks first, a cancel sends
//! nothing, a confirm sends the request with the login cookie and the page's own origin
//! (the server's gate lets it through: neither 401 nor 403).

use crate::bench_kit::Bench;
use crate::dashboard::Browser;
use crate::support;

use serde_json::{Value, json};

const TOKEN: &str = "ui-bench-token-0123456789";
const PHONE: &str = "00:0e:08:00:17:01";

fn start() -> Bench {
    Bench::start(
        &[
            ("spa504g.cfg", "<flat-profile/>"),
            ("spa-7.6.2.bin", "firmware image"),
        ],
        &format!("  token: {TOKEN}\nupgrade:\n  firmware:\n    cisco: spa-7.6.2.bin\n"),
    )
}

fn open(b: &Bench) -> Browser {
    let mut br = Browser::start();
    let url = format!("http://127.0.0.1:{}/?token={TOKEN}", b.dash);
    br.call("Page.navigate", json!({"url": url}));
    br
}

/// SPA504G number `n` (MAC 00:0e:08:00:17:0`n`) fetches its profile and gets it.
fn phone_fetches(b: &Bench, n: u8) {
    let ua = format!("Cisco/SPA504G-7.5.5 (000E080017{n:02X})");
    assert_eq!(b.fetch("/spa504g.cfg", &ua), 200, "{ua}");
}

fn row(mac: &str) -> String {
    format!("!!document.querySelector('tr[data-key=\"{mac}\"]')")
}

/// The requests the page made for its actions: (method, path, status).
fn actions(br: &mut Browser) -> Vec<Value> {
    br.eval("JSON.stringify(window.__actions)")
        .as_str()
        .map(|s| serde_json::from_str::<Vec<Value>>(s).unwrap())
        .unwrap_or_default()
}

/// Click `button`, answer the page's own confirm dialog with `yes`, and return the
/// request it sent (None when it sent nothing).
fn confirm(br: &mut Browser, button: &str, yes: bool) -> Option<Value> {
    let before = actions(br).len();
    br.eval(&format!("document.getElementById('{button}').click()"));
    br.wait_for(
        "document.getElementById('confirm').classList.contains('open')",
        true.into(),
    );
    let which = if yes { "confirm-yes" } else { "confirm-no" };
    br.eval(&format!("document.getElementById('{which}').click()"));
    br.wait_for(
        "document.getElementById('confirm').classList.contains('open')",
        false.into(),
    );
    if !yes {
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert_eq!(actions(br).len(), before, "a cancel sends nothing");
        return None;
    }
    br.wait_for(&format!("window.__actions.length > {before}"), true.into());
    let a = actions(br).pop().unwrap();
    let status = a["status"].as_u64().unwrap();
    assert!(
        status != 401 && status != 403 && status != 0,
        "the token and the page's origin are accepted: {a}"
    );
    Some(a)
}

/// Clicks `button`, says yes, and asserts the request the page sent: `method` on `path`;
/// the recorded request.
fn confirmed(br: &mut Browser, button: &str, method: &str, path: &str) -> Value {
    let a = confirm(br, button, true).unwrap();
    assert_eq!(
        (a["method"].as_str(), a["path"].as_str()),
        (Some(method), Some(path)),
        "{a}"
    );
    a
}

#[test]
fn chromium_actions_ask_first_and_send_what_the_api_expects() {
    crate::support::needs!("chromium", "curl");
    let b = start();
    phone_fetches(&b, 1);
    b.wait_device(PHONE, "known", |_| true);
    let mut br = open(&b);
    br.wait_for(&row(PHONE), true.into());
    br.eval(&format!(
        "document.querySelector('tr[data-key=\"{PHONE}\"]').click()"
    ));
    br.wait_for(
        "getComputedStyle(document.getElementById('timeline')).display",
        "block".into(),
    );
    let enc = "00%3A0e%3A08%3A00%3A17%3A01";

    // Forget: cancelled first (nothing sent), then confirmed.
    assert!(confirm(&mut br, "act-forget", false).is_none());
    assert_eq!(
        br.eval("document.getElementById('confirm-text').textContent.includes('Forget 00:0e:08:00:17:01')"),
        true
    );

    // "Resync all" asks in the same dialog.
    assert!(confirm(&mut br, "all", false).is_none());
    assert_eq!(
        br.eval("document.getElementById('confirm-text').textContent"),
        "Resync every phone?"
    );

    // Ask it for its configuration report: a POST the server takes (202), not a 501.
    let a = confirmed(
        &mut br,
        "act-report",
        "POST",
        &format!("api/v1/devices/{enc}/report"),
    );
    assert_eq!(a["status"], 202, "{a}");

    // Release the lease of its address.
    confirmed(&mut br, "act-release", "DELETE", "api/v1/leases/127.0.0.1");

    // Edit its inventory row in the form, then save: a PUT of column -> value.
    br.eval("document.getElementById('act-inventory').click()");
    br.wait_for(
        "document.getElementById('inv-form').style.display",
        "block".into(),
    );
    br.eval("document.querySelector('#inv-fields .inv-k').value = 'extension'; document.querySelector('#inv-fields .inv-v').value = '2101'");
    br.eval("document.getElementById('inv-add').click()");
    br.eval("const r = document.querySelectorAll('#inv-fields > div')[1]; r.querySelector('.inv-k').value = 'display_name'; r.querySelector('.inv-v').value = 'Bench 1'");
    // The form's submit opens the confirm like a button does.
    let a = confirmed(
        &mut br,
        "inv-save",
        "PUT",
        &format!("api/v1/inventory/{enc}"),
    );
    assert_eq!(
        a["body"],
        json!({"extension": "2101", "display_name": "Bench 1"})
    );

    // Unbind a PIN.
    br.eval("document.getElementById('pin').value = '4711'");
    confirmed(&mut br, "unbind", "DELETE", "api/v1/bindings/4711");

    // Upgrade: this build's own endpoint answers with the run, which the page follows.
    let a = confirmed(
        &mut br,
        "act-upgrade",
        "POST",
        &format!("api/v1/devices/{enc}/upgrade"),
    );
    assert_eq!(a["status"], 202, "{a}");
    br.wait_for(
        &format!("!!document.querySelector('#upgrades li[data-key=\"{PHONE}\"]')"),
        true.into(),
    );
    let (code, body) = b.dash_get("/api/v1/upgrades");
    assert_eq!(code, 200);
    let runs: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        runs["runs"][0]["phones"][0]["url"],
        format!("http://127.0.0.1:{}/spa-7.6.2.bin", b.http),
        "{runs}"
    );

    // Forget, confirmed: a DELETE of the device.
    confirmed(
        &mut br,
        "act-forget",
        "DELETE",
        &format!("api/v1/devices/{enc}"),
    );

    // A cross-site page cannot do the same: the server refuses the request itself.
    let url = format!("http://127.0.0.1:{}/api/v1/devices/{enc}/upgrade", b.dash);
    let auth = format!("Authorization: Bearer {TOKEN}");
    let code = support::http_code(
        &["-X", "POST", "-H", &auth, "-H", "Origin: http://evil.test"],
        &url,
    );
    assert_eq!(code.trim(), "403");
}

#[test]
fn chromium_follows_the_bench_live_and_draws_the_chart() {
    crate::support::needs!("chromium", "curl");
    let b = start();
    phone_fetches(&b, 1);
    let mut br = open(&b);
    br.wait_for(&row(PHONE), true.into());

    // The chart: one SVG path per state over the sampled minutes (and now).
    br.wait_for(
        "document.querySelectorAll('#chart path.series').length",
        5.into(),
    );
    let d = br.eval(
        "document.querySelector('#chart path.series[data-state=\"configured\"]').getAttribute('d')",
    );
    let d = d.as_str().unwrap();
    assert!(
        d.starts_with('M') && d.contains('L'),
        "a line, not a dot: {d}"
    );
    let (code, body) = b.dash_get("/api/v1/history");
    assert_eq!(code, 200);
    let h: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        h["samples"].as_array().unwrap().last().unwrap()["configured"],
        1,
        "{h}"
    );

    // Live: the event stream when the server has one, else polling; either way a fetch
    // made by curl shows up in the open page without a reload.
    let auth = format!("Authorization: Bearer {TOKEN}");
    let events = format!("http://127.0.0.1:{}/api/v1/events", b.dash);
    let stream = support::http_code(&["-m", "2", "-H", &auth], &events).trim() == "200";
    br.wait_for(
        "document.getElementById('live').dataset.mode",
        if stream { "sse" } else { "poll" }.into(),
    );
    if !stream {
        eprintln!(
            "note: /api/v1/events is not served by this build; the page fell back to polling"
        );
    }
    br.eval("window.__marker = 7");
    let other = "00:0e:08:00:17:02";
    phone_fetches(&b, 2);
    br.wait_for(&row(other), true.into());
    assert_eq!(br.eval("window.__marker"), 7, "the page was not reloaded");
    if stream {
        assert!(br.eval("window.__sseEvents").as_u64().unwrap() > 0);
    }
}

/// The stream path itself, whatever this build serves: the page's `EventSource` is
/// replaced (before the page runs) by one the test drives. While the stream is open the
/// page does not poll, so a new device shows only when an event arrives; when the stream
/// is refused, the page polls again.
#[test]
fn chromium_updates_on_stream_events_and_polls_when_the_stream_fails() {
    crate::support::needs!("chromium", "curl");
    let b = start();
    phone_fetches(&b, 1);
    let mut br = Browser::start();
    br.call("Page.enable", json!({}));
    br.call(
        "Page.addScriptToEvaluateOnNewDocument",
        json!({"source": "window.EventSource = class { \
            constructor(url) { this.url = url; this.readyState = 0; this.on = {}; window.__fakeEs = this; \
              setTimeout(() => { this.readyState = 1; this.onopen && this.onopen(); }, 0); } \
            addEventListener(name, f) { this.on[name] = f; } \
            close() { this.readyState = 2; } }; \
            window.EventSource.CLOSED = 2;"}),
    );
    let url = format!("http://127.0.0.1:{}/?token={TOKEN}", b.dash);
    br.call("Page.navigate", json!({"url": url}));
    br.wait_for(&row(PHONE), true.into());
    br.wait_for("document.getElementById('live').dataset.mode", "sse".into());
    assert_eq!(
        br.eval("window.__fakeEs.url"),
        "api/v1/events",
        "the page subscribes to the API's stream"
    );

    // A fetch by curl: nothing polls, so it shows only with the stream's `device` event
    // (named, as the API sends it).
    let other = "00:0e:08:00:17:02";
    phone_fetches(&b, 2);
    b.wait_device(other, "known", |_| true);
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert_eq!(
        br.eval(&row(other)),
        false,
        "no polling while the stream is open"
    );
    br.eval(&format!(
        "window.__fakeEs.on.device({{data: JSON.stringify({{mac: '{other}', state: 'configured'}})}})"
    ));
    br.wait_for(&row(other), true.into());
    assert_eq!(br.eval("window.__sseEvents"), 1);

    // The stream is refused: polling takes over and the next fetch shows by itself.
    br.eval("window.__fakeEs.readyState = 2; window.__fakeEs.onerror({})");
    br.wait_for(
        "document.getElementById('live').dataset.mode",
        "poll".into(),
    );
    let third = "00:0e:08:00:17:03";
    phone_fetches(&b, 3);
    br.wait_for(&row(third), true.into());
}
