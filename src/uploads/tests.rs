use super::*;
use proptest::prelude::*;

const A: &str = "0004f2abcdef";

fn mac(s: &str) -> Mac {
    s.parse().unwrap()
}

fn store(f: impl FnOnce(&mut Config)) -> (tempfile::TempDir, Uploads) {
    let d = tempfile::tempdir().unwrap();
    let mut c = Config {
        enabled: true,
        ..Config::default()
    };
    f(&mut c);
    let up = Uploads::open(d.path(), &c, Metrics::default()).unwrap();
    (d, up)
}

fn put(up: &Uploads, key: &str, body: &[u8]) -> Result<Stored, Refused> {
    let t = up.target(key).ok_or(Refused::NotUpload)?;
    let mut w = up.begin(t, Some(body.len() as u64))?;
    for c in body.chunks(7) {
        w.write(c)?;
    }
    w.finish()
}

fn read(up: &Uploads, name: &str) -> Vec<u8> {
    std::fs::read(up.root().join(A).join(name)).unwrap()
}

#[test]
fn patterns_match_a_mac_in_any_case_and_nothing_else() {
    let p = Pattern::parse("$MA-phone.cfg").unwrap();
    assert_eq!(p.matches("0004f2abcdef-phone.cfg"), Some(mac(A)));
    assert_eq!(p.matches("0004F2ABCDEF-PHONE.CFG"), Some(mac(A)));
    assert_eq!(p.file_name(mac(A)), "0004f2abcdef-phone.cfg");
    for no in [
        "0004f2abcde-phone.cfg",
        "0004f2abcdefa-phone.cfg",
        "0004f2abcdeg-phone.cfg",
        "0004f2abcdef-phone.cfg.bak",
        "x0004f2abcdef-phone.cfg",
        "0004f2abcdef-app.log",
        "",
    ] {
        assert_eq!(p.matches(no), None, "{no}");
    }
    let p = Pattern::parse("logs_$MA").unwrap();
    assert_eq!(p.matches("LOGS_0004f2abcdef"), Some(mac(A)));
    // Multi-byte text around where the MAC would be is no match, not a panic.
    assert_eq!(p.matches("logs_é0004f2abcde"), None);
    for bad in [
        "$MA/x.cfg",
        "../$MA.cfg",
        ".$MA",
        "a.cfg",
        "$MA-$MA.cfg",
        "a\\$MA",
    ] {
        assert!(Pattern::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn targets_come_from_the_file_name_whatever_the_directory() {
    let (_d, up) = store(|_| {});
    let t = up.target("logs/0004F2ABCDEF-app.log").unwrap();
    assert_eq!(t.mac, mac(A));
    assert_eq!(t.name, "0004f2abcdef-app.log");
    assert_eq!(up.target("0004f2abcdef.cfg"), None);
    assert_eq!(
        up.target("0015654aa937-local.cfg").unwrap().name,
        "0015654aa937-local.cfg"
    );
}

#[test]
fn overrides_are_replaced_and_a_cut_upload_leaves_the_previous_version() {
    let (_d, up) = store(|_| {});
    let key = "0004f2abcdef-phone.cfg";
    assert_eq!(put(&up, key, b"one\n").unwrap().how, "created");
    assert_eq!(put(&up, key, b"two\n").unwrap().how, "replaced");
    assert_eq!(read(&up, key), b"two\n");
    {
        let mut w = up.begin(up.target(key).unwrap(), Some(100)).unwrap();
        w.write(b"half of a new ver").unwrap();
        // Dropped: the client went away.
    }
    assert_eq!(read(&up, key), b"two\n");
    let names: Vec<String> = list(up.root(), mac(A))
        .unwrap()
        .into_iter()
        .map(|f| f.name)
        .collect();
    assert_eq!(names, [key]);
    let left = std::fs::read_dir(up.root().join(A)).unwrap().count();
    assert_eq!(left, 1, "no temporary file left");
}

#[test]
fn logs_are_appended_then_rotated_keeping_n() {
    let (_d, up) = store(|c| {
        c.log_rotate.value = crate::confkit::Size(1024);
        c.log_keep.value = 2;
    });
    let key = "0004f2abcdef-app.log";
    let line = |i: usize| format!("{i:0>99}\n").into_bytes();
    assert_eq!(put(&up, key, &line(0)).unwrap().how, "created");
    for i in 1..10 {
        assert_eq!(put(&up, key, &line(i)).unwrap().how, "appended");
    }
    assert_eq!(read(&up, key).len(), 1000);
    assert_eq!(put(&up, key, &line(10)).unwrap().how, "rotated");
    assert_eq!(read(&up, key), line(10));
    assert_eq!(read(&up, &format!("{key}.1")).len(), 1000);
    for i in 11..40 {
        put(&up, key, &line(i)).unwrap();
    }
    let names: Vec<String> = list(up.root(), mac(A))
        .unwrap()
        .into_iter()
        .map(|f| f.name)
        .collect();
    assert_eq!(
        names,
        [key.to_string(), format!("{key}.1"), format!("{key}.2")]
    );
    // The newest lines are in the current file, the ones before in .1.
    assert!(read(&up, key).ends_with(&line(39)));
    assert!(read(&up, &format!("{key}.1")).ends_with(&line(29)));
    assert_eq!(
        tail(up.root(), mac(A), key, 2).unwrap().unwrap(),
        format!("{:0>99}\n{:0>99}", 38, 39)
    );
    assert_eq!(
        tail(up.root(), mac(A), "../../etc/passwd", 2).unwrap(),
        None
    );
}

#[test]
fn quotas_file_device_and_store() {
    let (_d, up) = store(|c| {
        c.max_file.value = crate::confkit::Size(100);
        c.max_device.value = crate::confkit::Size(250);
        c.max_total.value = crate::confkit::Size(400);
    });
    let k = |m: &str, f: &str| format!("{m}-{f}");
    // Declared too large: refused before a byte is written.
    let t = up.target(&k(A, "phone.cfg")).unwrap();
    assert!(matches!(
        up.begin(t.clone(), Some(101)),
        Err(Refused::TooLarge("file"))
    ));
    // Undeclared, found while streaming.
    let mut w = up.begin(t, None).unwrap();
    w.write(&[b'x'; 60]).unwrap();
    assert!(matches!(
        w.write(&[b'x'; 60]),
        Err(Refused::TooLarge("file"))
    ));
    drop(w);
    put(&up, &k(A, "phone.cfg"), &[b'a'; 100]).unwrap();
    put(&up, &k(A, "calls.xml"), &[b'b'; 100]).unwrap();
    let third = put(&up, &k(A, "directory.xml"), &[b'c'; 100]);
    assert_eq!(third.unwrap_err().reason(), "device_quota");
    // Replacing a file counts only the difference.
    put(&up, &k(A, "phone.cfg"), &[b'd'; 100]).unwrap();
    put(&up, &k(A, "directory.xml"), &[b'c'; 50]).unwrap();
    // Another device: its own quota, but the store's total is reached.
    let b = "0004f2000001";
    put(&up, &k(b, "phone.cfg"), &[b'e'; 100]).unwrap();
    let r = put(&up, &k(b, "calls.xml"), &[b'f'; 100]);
    assert_eq!(r.unwrap_err().reason(), "store_quota");
}

#[test]
fn a_stray_file_in_the_store_counts_but_breaks_nothing() {
    let (_d, up) = store(|c| c.max_total.value = crate::confkit::Size(100 << 20));
    std::fs::write(up.root().join("README"), vec![b'r'; 1000]).unwrap();
    put(&up, "0004f2abcdef-phone.cfg", b"ok\n").unwrap();
    assert_eq!(usage_all(up.root()).unwrap(), 1003);
}

#[test]
fn a_leftover_temporary_file_is_removed_at_open() {
    let d = tempfile::tempdir().unwrap();
    let dev = dir(d.path()).join(A);
    std::fs::create_dir_all(&dev).unwrap();
    std::fs::write(dev.join(format!("{PARTIAL}x-1-0")), b"junk").unwrap();
    std::fs::write(dev.join("0004f2abcdef-phone.cfg"), b"kept").unwrap();
    let up = Uploads::open(d.path(), &Config::default(), Metrics::default()).unwrap();
    let names: Vec<String> = list(up.root(), mac(A))
        .unwrap()
        .into_iter()
        .map(|f| f.name)
        .collect();
    assert_eq!(names, ["0004f2abcdef-phone.cfg"]);
    assert_eq!(std::fs::read_dir(&dev).unwrap().count(), 1);
}

proptest! {
    /// Whatever path a client sends, an accepted upload lands directly in
    /// `uploads/<its mac>/`, under a name the pattern made.
    #[test]
    fn no_path_escapes_the_upload_directory(
        parts in proptest::collection::vec(
            prop_oneof![
                Just("..".to_string()),
                Just(".".to_string()),
                Just("".to_string()),
                Just("0004f2abcdef-phone.cfg".to_string()),
                Just("0004F2ABCDEF-app.log".to_string()),
                Just("%2e%2e".to_string()),
                "[a-zA-Z0-9._%/\\\\-]{0,16}",
            ],
            0..6,
        ),
        pattern in prop_oneof![
            Just("$MA-phone.cfg".to_string()),
            Just("$MA".to_string()),
            "[a-z._-]{0,4}\\$MA[a-z._-]{0,4}",
        ],
    ) {
        let path = format!("/{}", parts.join("/"));
        let (d, up) = store(|c| c.patterns = Some(vec![crate::confkit::At::new(pattern.clone())]));
        let Some(key) = crate::catalog::path::normalize(&path).ok() else { return Ok(()) };
        if let Some(t) = up.target(&key) {
            prop_assert!(!t.name.contains('/') && !t.name.starts_with('.'));
            let mut w = up.begin(t.clone(), None).unwrap();
            w.write(b"x").unwrap();
            w.finish().unwrap();
            let stored = up.root().join(t.mac.to_hex()).join(&t.name);
            let canon = stored.canonicalize().unwrap();
            let root = dir(d.path()).canonicalize().unwrap();
            prop_assert_eq!(canon.parent().unwrap().parent().unwrap(), root.as_path());
        }
    }
}

#[test]
fn a_vendors_active_configuration_upload_is_a_report_and_nothing_else_is() {
    assert_eq!(report_vendor("0004f2abcdef-phone.cfg"), Some("polycom"));
    assert_eq!(report_vendor("0015654AA937-local.cfg"), Some("yealink"));
    for no in [
        "0004f2abcdef-app.log",
        "0004f2abcdef-directory.xml",
        "0015654aa937-sys.log",
        "0004f2abcdef.cfg",
        "x-phone.cfg",
    ] {
        assert_eq!(report_vendor(no), None, "{no}");
    }
    // A report can only arrive as an upload: each one is among the vendor's uploads.
    for v in crate::vendors::VENDORS {
        for (vendor, p) in config_reports() {
            if vendor == v.name {
                assert!(
                    v.uploads.contains(&p.to_string().as_str()),
                    "{vendor}: {p} is not an upload"
                );
            }
        }
    }
}
