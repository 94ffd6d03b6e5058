//! Configuration reports: `provbox resync --report` sends SIP NOTIFY `Event: report` to
//! sipp playing a Cisco phone, the phone's report (a flat-profile XML in the shipped sample
//! profile's format) is POSTed with curl, and the device is `verified`, or in `drift` with
//! the parameters that differ.

use crate::support;

use std::time::Duration;

use support::dedupe::profile_dir;
use support::fixtures::{CISCO as MAC, CISCO_UA as UA, YEALINK, YEALINK_UA};
use support::fixtures::{assert_labelled, provbox_with, serve_files};
use support::sipp::Sipp;
use support::{Provbox, free_tcp_port};

const TOKEN: &str = "verify-token-0123456789";

/// What a Cisco 3PCC phone POSTs to its Report_Rule: its whole flat profile, the
/// parameters it was served among many others, its password masked.
fn report(display_name: &str, user_id: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<flat-profile>
<Restricted_Access_Domains ua="na"></Restricted_Access_Domains>
<Enable_Web_Server ua="na">Yes</Enable_Web_Server>
<Station_Display_Name_ ua="na">Alice Example</Station_Display_Name_>
<Display_Name_1_ ua="na">{display_name}</Display_Name_1_>
<User_ID_1_ ua="na">{user_id}</User_ID_1_>
<Password_1_ ua="na">*************</Password_1_>
<Short_Name_1_ ua="na">1001</Short_Name_1_>
<Profile_Rule ua="na">https://prov.lab.test:8443/cfg/{MAC}.xml</Profile_Rule>
<Report_Rule ua="na">http://127.0.0.1/report/$MA.xml</Report_Rule>
<Primary_DNS ua="na">198.18.0.1</Primary_DNS>
</flat-profile>
"#
    )
}

/// The inventory: phone `mac` is Alice's, extension and SIP user 1001.
fn alice(mac: &str) -> String {
    format!(
        "devices:\n  - mac: {mac}\n    display_name: Alice Example\n    sip_user: \"1001\"\n    sip_password: s3cret\n    extension: \"1001\"\n"
    )
}

fn curl(args: &[&str], url: &str) -> (u16, String) {
    let r = support::curl(10, args, url);
    (r.code, String::from_utf8_lossy(&r.body).into_owned())
}

/// The dashboard's view of device `mac`: (status, body).
fn device_view(dash: u16, mac: &str) -> (u16, String) {
    curl(
        &["-H", &format!("Authorization: Bearer {TOKEN}")],
        &format!("http://127.0.0.1:{dash}/api/devices/{mac}"),
    )
}

/// Asserts that `dev` (the dashboard's device view) is in drift on exactly `params`
/// (name, expected, reported), in its verification and in the last drift event of its
/// timeline; its timeline's events.
fn assert_drift<'a>(
    dev: &'a serde_json::Value,
    params: &[(&str, &str, &str)],
) -> &'a Vec<serde_json::Value> {
    let v = &dev["verification"];
    assert_eq!(v["result"], "drift", "{dev:#}");
    assert_eq!(v["summary"], format!("drift: {} parameters", params.len()));
    let drift: Vec<serde_json::Value> = params
        .iter()
        .map(|(name, expected, reported)| {
            serde_json::json!({"name": name, "expected": expected, "reported": reported})
        })
        .collect();
    assert_eq!(v["drift"], serde_json::Value::from(drift));
    let events = dev["events"].as_array().unwrap();
    let last = events.iter().rev().find(|e| e["kind"] == "drift").unwrap();
    let detail = last["detail"].as_str().unwrap();
    for (name, expected, reported) in params {
        assert!(
            detail.contains(&format!(
                "{name}: expected `{expected}`, reported `{reported}`"
            )),
            "{detail}"
        );
    }
    events
}

/// Asserts `provbox_devices_verification` on the metrics port for each `(result, count)`.
fn assert_verdicts(metrics: u16, want: &[(&str, f64)]) {
    let m = support::scrape(metrics);
    assert_labelled(&m, "provbox_devices_verification", "result", want);
}

#[test]
fn a_cisco_report_after_notify_is_verified_then_drift_lists_both_parameters() {
    crate::support::needs!("chromium", "curl", "sipp");
    // The shipped sample profile, as it is.
    let d = profile_dir(
        include_str!("../../files/profiles/cfg/$MA.xml.tmpl"),
        &alice(MAC),
    );
    let hooked = d.path().join("hooked.txt");
    let work = tempfile::tempdir().unwrap();
    let sipp = Sipp::start(work.path(), "report");
    let (http, dash, metrics) = (free_tcp_port(), free_tcp_port(), free_tcp_port());
    let cfg = format!(
        "{}dashboard:\n  enabled: true\n  listen: 127.0.0.1:{dash}\n  token: {TOKEN}\n  resync:\n    sip_port: {}\n\
devices:\n  inventory: inventory.yaml\n  trust:\n    user_agent: true\n  reports:\n    path: /report/$MA.xml\n\
hooks:\n  - name: verdicts\n    events: [verified, drift]\n    command: [/bin/sh, -c, 'echo \"$PROVBOX_EVENT $PROVBOX_MAC\" >> {}']\n",
        support::http_and_metrics(http, metrics),
        sipp.port,
        hooked.display()
    );
    let pb = Provbox::start(d, &cfg);
    let base = format!("http://127.0.0.1:{http}");
    let report_url = format!("{base}/report/{MAC}.xml");

    // The phone fetches its profile: that is what its report is compared with.
    let (code, served) = curl(&["-A", UA], &format!("{base}/cfg/{MAC}.xml"));
    assert_eq!(code, 200, "{served}");
    assert!(
        served.contains("<User_ID_1_ ua=\"na\">1001</User_ID_1_>"),
        "{served}"
    );

    // provbox asks the phone (sipp) for its report.
    let config = pb.path().join("config.yaml");
    let (code, out) = provbox_with(&config, &["resync", "--report", "127.0.0.1"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("SIP NOTIFY Event: report → SIP/2.0 200 OK"),
        "{out}"
    );
    let log = sipp.finish();
    assert!(
        log.contains("Event:[report]") || log.contains("Event: report"),
        "{log}"
    );

    // The phone POSTs its report: every served parameter it reports matches.
    let same = report("Alice Example", "1001");
    let (code, body) = curl(&["-A", UA, "--data-binary", &same], &report_url);
    assert_eq!(code, 200, "{body}");
    assert_eq!(body, "verified (5 parameters)\n");
    let api = || {
        let (c, b) = device_view(dash, "00:56:2b:04:36:15");
        assert_eq!(c, 200, "{b}");
        serde_json::from_str::<serde_json::Value>(&b).unwrap()
    };
    let dev = api();
    assert_eq!(dev["verification"]["result"], "verified", "{dev:#}");
    assert_verdicts(metrics, &[("verified", 1.0)]);

    // The same report with two parameters changed on the phone (PUT this time).
    let changed = report("Bob", "6666");
    let (code, body) = curl(
        &["-A", UA, "-X", "PUT", "--data-binary", &changed],
        &report_url,
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(body, "drift: 2 parameters\n");
    // The timeline says it too, with both parameters.
    // (The report's own request follows it on the timeline as a transfer.)
    assert_drift(
        &api(),
        &[
            ("Display_Name_1_", "Alice Example", "Bob"),
            ("User_ID_1_", "1001", "6666"),
        ],
    );
    assert_verdicts(metrics, &[("verified", 0.0), ("drift", 1.0)]);

    // The hooks heard both verdicts.
    support::eventually("both hook runs", Duration::from_secs(10), || {
        std::fs::read_to_string(&hooked)
            .is_ok_and(|t| t == "verified 00:56:2b:04:36:15\ndrift 00:56:2b:04:36:15\n")
    });

    // The dashboard's device view shows the drift, in headless Chromium.
    let mut br = crate::dashboard::Browser::start();
    let url = format!("http://127.0.0.1:{dash}/?token={TOKEN}");
    br.call("Page.navigate", serde_json::json!({"url": url}));
    br.wait_for(
        "!!document.querySelector('tr[data-key=\"00:56:2b:04:36:15\"]')",
        true.into(),
    );
    br.eval("document.querySelector('tr[data-key=\"00:56:2b:04:36:15\"]').click()");
    br.wait_for(
        "(document.getElementById('tl-verify') || {innerText: ''}).innerText",
        "drift: 2 parameters\nDisplay_Name_1_: expected Alice Example, reported Bob\nUser_ID_1_: expected 1001, reported 6666".into(),
    );
    drop(br);

    // Not from the device the path names: refused, and nothing changes.
    let other = "Cisco-CP-8831-3PCC/9.3.3 (0015654aa937)";
    let (code, _) = curl(&["-A", other, "--data-binary", &same], &report_url);
    assert_eq!(code, 403);
    let (code, _) = curl(&["--data-binary", &same], &report_url);
    assert_eq!(code, 403);
    let dev = api();
    assert_eq!(dev["verification"]["result"], "drift");
    // A GET of a report path is an ordinary (missing) file; POST elsewhere is still 405.
    let (code, _) = curl(
        &["-A", UA, "--data-binary", "x"],
        &format!("{base}/cfg/{MAC}.xml"),
    );
    assert_eq!(code, 405);
}

/// A Yealink `$MA-local.cfg` as the phone uploads it: the served account parameters
/// (`label`, `user_name` as given), the password masked, and settings the profile never
/// set (not judged).
fn local_cfg(label: &str, user_name: &str) -> String {
    format!(
        "#!version:1.0.0.1\n\
lang.gui = English\n\
account.1.enable = 1\n\
account.1.label = {label}\n\
account.1.display_name = Alice Example\n\
account.1.user_name = {user_name}\n\
account.1.password = ********\n\
phone_setting.backlight_time = 60\n"
    )
}

#[test]
fn a_yealink_upload_of_its_local_config_is_verified_then_drift_lists_both_parameters() {
    crate::support::needs!("curl");
    let d = Provbox::dir();
    serve_files(
        d.path(),
        &[(
            "$MA.cfg.tmpl",
            "#!version:1.0.0.1\n\
account.1.enable = 1\n\
account.1.label = $extension\n\
account.1.display_name = $(display_name)\n\
account.1.user_name = $sip_user\n\
account.1.password = $sip_password\n\
account.1.sip_server.1.address = 198.18.0.1\n",
        )],
    );
    std::fs::write(d.path().join("inventory.yaml"), alice(YEALINK)).unwrap();
    let (http, dash, metrics) = (free_tcp_port(), free_tcp_port(), free_tcp_port());
    let cfg = format!(
        "{}dashboard:\n  enabled: true\n  listen: 127.0.0.1:{dash}\n  token: {TOKEN}\n\
devices:\n  inventory: inventory.yaml\n  trust:\n    user_agent: true\n\
uploads:\n  enabled: true\n",
        support::http_and_metrics(http, metrics)
    );
    let pb = Provbox::start(d, &cfg);
    let base = format!("http://127.0.0.1:{http}");
    let api = || {
        let (c, b) = device_view(dash, "00:15:65:4a:a9:37");
        assert_eq!(c, 200, "{b}");
        serde_json::from_str::<serde_json::Value>(&b).unwrap()
    };
    let put = |body: &str| {
        let f = pb.path().join("local.cfg");
        std::fs::write(&f, body).unwrap();
        support::curl(
            10,
            &["-A", YEALINK_UA, "-T", f.to_str().unwrap()],
            &format!("{base}/{YEALINK}-local.cfg"),
        )
        .code
    };

    // The phone fetches its rendered profile: what its upload is compared with.
    let (code, served) = curl(&["-A", YEALINK_UA], &format!("{base}/{YEALINK}.cfg"));
    assert_eq!(code, 200, "{served}");
    assert!(served.contains("account.1.user_name = 1001"), "{served}");

    // It uploads its local configuration, matching what it was served: verified, on the
    // parameters both name (label, display_name, user_name, enable; the masked password
    // and the settings the profile never set are not judged).
    assert_eq!(put(&local_cfg("1001", "1001")), 201);
    let dev = api();
    assert_eq!(dev["verification"]["result"], "verified", "{dev:#}");
    assert_eq!(dev["verification"]["summary"], "verified (4 parameters)");
    assert_verdicts(metrics, &[("verified", 1.0)]);

    // Two parameters changed on the phone, uploaded again: drift, listing both.
    assert_eq!(put(&local_cfg("Front desk", "6666")), 204);
    let dev = api();
    let events = assert_drift(
        &dev,
        &[
            ("account.1.label", "1001", "Front desk"),
            ("account.1.user_name", "1001", "6666"),
        ],
    );
    assert!(
        events.iter().any(|e| e["kind"] == "upload"),
        "the upload is on the timeline too: {dev:#}"
    );
    assert_verdicts(metrics, &[("drift", 1.0)]);

    // Its logs are uploads too, but no configuration: the verdict stays.
    let f = pb.path().join("sys.log");
    std::fs::write(&f, "boot ok\n").unwrap();
    let r = support::curl(
        10,
        &["-A", YEALINK_UA, "-T", f.to_str().unwrap()],
        &format!("{base}/{YEALINK}-sys.log"),
    );
    assert_eq!(r.code, 201);
    assert_eq!(api()["verification"]["result"], "drift");
}

#[test]
fn an_oversize_report_is_refused_with_413_and_judges_nothing() {
    crate::support::needs!("curl");
    let d = Provbox::dir();
    let (http, dash) = (free_tcp_port(), free_tcp_port());
    let cfg = format!(
        "catalog:\n  roots: [files]\nhttp:\n  enabled: true\n  listen: [\"127.0.0.1:{http}\"]\n\
dashboard:\n  enabled: true\n  listen: 127.0.0.1:{dash}\n  token: {TOKEN}\n\
devices:\n  trust:\n    user_agent: true\n  reports:\n    path: /report/$MA.xml\n"
    );
    let pb = Provbox::start(d, &cfg);
    let url = format!("http://127.0.0.1:{http}/report/{MAC}.xml");
    // A flat profile just over the 1 MiB cap (a real phone's is a few KiB).
    let mut big = String::from("<flat-profile>\n");
    while big.len() <= 1 << 20 {
        big.push_str("<Display_Name_1_ ua=\"na\">padding padding padding</Display_Name_1_>\n");
    }
    big.push_str("</flat-profile>\n");
    let f = pb.path().join("big.xml");
    std::fs::write(&f, &big).unwrap();
    let at = format!("@{}", f.display());
    for method in ["POST", "PUT"] {
        let (code, _) = curl(&["-A", UA, "-X", method, "--data-binary", &at], &url);
        assert_eq!(code, 413, "{method}");
    }
    // Nothing was judged: the device has no verdict.
    let (c, b) = device_view(dash, "00:56:2b:04:36:15");
    if c == 200 {
        let dev: serde_json::Value = serde_json::from_str(&b).unwrap();
        assert!(dev["verification"].is_null(), "{dev:#}");
    } else {
        assert_eq!(c, 404, "{b}");
    }
    // A report under the cap is taken (nothing served yet, which the answer says).
    let small = report("Alice Example", "1001");
    let (code, text) = curl(&["-A", UA, "--data-binary", &small], &url);
    assert_eq!(code, 200, "{text}");
    assert!(
        text.starts_with("not verified: no profile was rendered"),
        "{text}"
    );
}
