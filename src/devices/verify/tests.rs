use super::parse::{self, Format};
use super::*;

/// The shipped sample profile (files/profiles/cfg/$MA.xml.tmpl), rendered.
const SERVED: &str = r#"<!-- Sample per-device profile (Cisco 3PCC flat profile). -->
<flat-profile>
  <Station_Display_Name_ ua="na">Alice</Station_Display_Name_>
  <Display_Name_1_ ua="na">Alice</Display_Name_1_>
  <User_ID_1_ ua="na">1001</User_ID_1_>
  <Password_1_ ua="na">s3cret &amp; more</Password_1_>
  <Short_Name_1_ ua="na">1001</Short_Name_1_>
  <Profile_Rule ua="na">https://prov.lab.test:8443/cfg/00562b043615.xml</Profile_Rule>
  <!-- rendered for 00:56:2b:04:36:15 -->
</flat-profile>
"#;

/// What a phone reports: every parameter it has, passwords masked, in its own order.
fn report(display: &str, user: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<flat-profile>
<Restricted_Access_Domains ua="na"></Restricted_Access_Domains>
<Enable_Web_Server ua="na">Yes</Enable_Web_Server>
<Profile_Rule ua="na">https://prov.lab.test:8443/cfg/00562b043615.xml</Profile_Rule>
<Station_Display_Name_ ua="na">{display}</Station_Display_Name_>
<Display_Name_1_ ua="na">Alice</Display_Name_1_>
<User_ID_1_ ua="na">{user}</User_ID_1_>
<Password_1_ ua="na">*************</Password_1_>
<Empty_One ua="na"/>
</flat-profile>
"#
    )
}

#[test]
fn cisco_flat_profiles_parse() {
    let p = parse::cisco(SERVED).unwrap();
    assert_eq!(p.len(), 6);
    assert_eq!(p["Password_1_"], "s3cret & more");
    assert_eq!(p["User_ID_1_"], "1001");
    let r = parse::cisco(&report("Alice", "1001")).unwrap();
    assert_eq!(r["Empty_One"], "");
    assert_eq!(r["Restricted_Access_Domains"], "");
    assert!(!r.contains_key("flat-profile"));
    assert!(parse::cisco("<flat-profile><A>x").is_ok());
    assert!(parse::cisco("<flat-profile><A ua=\"na>x</A>").is_err());
    assert!(parse::cisco("just text").is_err());
    assert_eq!(parse::sniff(SERVED), Format::CiscoFlat);
}

#[test]
fn polycom_attributes_parse() {
    let t = r#"<?xml version="1.0" standalone="yes"?>
<!-- Polycom -->
<polycomConfig>
  <reg reg.1.address="1001" reg.1.label='Alice &amp; Bob'
       reg.1.auth.password="x"/>
  <device device.set="1" />
</polycomConfig>"#;
    let p = parse::polycom(t).unwrap();
    assert_eq!(p["reg.1.address"], "1001");
    assert_eq!(p["reg.1.label"], "Alice & Bob");
    assert_eq!(p["device.set"], "1");
    assert_eq!(p.len(), 4);
    assert_eq!(parse::sniff(t), Format::PolycomXml);
    assert!(parse::polycom("<reg a=1/>").is_err());
    assert!(parse::polycom("<reg a=\"1/>").is_err());
}

#[test]
fn yealink_key_values_parse() {
    let t = "#!version:1.0.0.1\n# comment\naccount.1.label = Alice\naccount.1.user_name=1001\n\nstatic.auto_provision.server.url = http://x/y?a=b\nnot a parameter\n";
    let p = parse::key_value(t);
    assert_eq!(p.len(), 3);
    assert_eq!(p["account.1.label"], "Alice");
    assert_eq!(p["static.auto_provision.server.url"], "http://x/y?a=b");
    assert_eq!(parse::sniff(t), Format::KeyValue);
}

#[test]
fn compare_verifies_and_lists_drift() {
    let v = compare(
        "cisco",
        SERVED.as_bytes(),
        report("Alice", "1001").as_bytes(),
    );
    // Masked password not judged; parameters the phone does not report not judged.
    assert_eq!(v, Verdict::Verified { checked: 4 });
    assert_eq!(v.summary(), "verified (4 parameters)");
    let v = compare(
        "cisco",
        SERVED.as_bytes(),
        report("Mallory", "6666").as_bytes(),
    );
    let Verdict::Drift { count, params, .. } = &v else {
        panic!("{v:?}")
    };
    assert_eq!(*count, 2);
    assert_eq!(
        params,
        &vec![
            Drift {
                name: "Station_Display_Name_".into(),
                expected: "Alice".into(),
                reported: "Mallory".into()
            },
            Drift {
                name: "User_ID_1_".into(),
                expected: "1001".into(),
                reported: "6666".into()
            },
        ]
    );
    assert_eq!(v.summary(), "drift: 2 parameters");
    // Yealink and Polycom the same way.
    let y = compare(
        "yealink",
        b"account.1.label = Alice\naccount.1.user_name = 1001\n",
        b"#!version:1.0.0.1\naccount.1.label=Bob\naccount.1.user_name = 1001\nother=1\n",
    );
    assert_eq!(y.result(), "drift");
    let p = compare(
        "polycom",
        br#"<c><reg reg.1.address="1001"/></c>"#,
        br#"<c><reg reg.1.address=" 1001 " reg.1.x="y"/></c>"#,
    );
    assert_eq!(p, Verdict::Verified { checked: 1 });
    // Nothing in common: not judged.
    assert_eq!(
        compare("cisco", SERVED.as_bytes(), b"<flat-profile></flat-profile>").result(),
        "unreadable"
    );
}

#[test]
fn report_paths_name_a_mac() {
    let c = Config {
        path: Some(At::new("/report/$MA.xml".into())),
    };
    let m: Mac = "00562b043615".parse().unwrap();
    assert_eq!(c.mac_of("/report/00562b043615.xml"), Some(m));
    assert_eq!(c.mac_of("/report/00562B043615.xml"), Some(m));
    assert_eq!(c.mac_of("/report/00562b04361.xml"), None);
    assert_eq!(c.mac_of("/cfg/00562b043615.xml"), None);
    assert_eq!(Config::default().mac_of("/report/00562b043615.xml"), None);
}

#[test]
fn served_profiles_are_bounded() {
    let s = Served::default();
    let m = |i: u32| Mac([2, 0, 0, (i >> 16) as u8, (i >> 8) as u8, i as u8]);
    for i in 0..MAX_DEVICES as u32 + 5 {
        s.remember(m(i), "k", &Bytes::from_static(b"x"));
    }
    assert_eq!(s.len(), MAX_DEVICES);
    assert!(s.last(m(0)).is_none(), "the oldest was forgotten");
    assert!(s.last(m(MAX_DEVICES as u32 + 4)).is_some());
    // Only the last profile; one over the cap is not kept (nor the older one).
    s.remember(m(7), "a", &Bytes::from_static(b"first"));
    s.remember(m(7), "b", &Bytes::from_static(b"second"));
    assert_eq!(&s.last(m(7)).unwrap().body[..], b"second");
    s.remember(m(7), "c", &Bytes::from(vec![0u8; MAX_PROFILE + 1]));
    assert!(s.last(m(7)).is_none());
}

proptest::proptest! {
    #[test]
    fn parsers_never_panic(s in ".{0,400}") {
        let _ = parse::cisco(&s);
        let _ = parse::polycom(&s);
        let _ = parse::key_value(&s);
        let _ = parse::decode(&s);
        let _ = compare("x", s.as_bytes(), s.as_bytes());
    }
}
