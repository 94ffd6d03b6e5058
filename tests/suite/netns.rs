//! The network-namespace test helper itself: namespaces appear, traffic flows across a
//! veth pair and across a bridge, there is no default route, and everything is gone after
//! drop, including when the test panics.
use crate::support;

use support::netns::{Lab, list};

#[test]
fn veth_pair_pings_and_is_torn_down() {
    crate::support::needs!(root, "busybox", "ip");
    let lab = Lab::new();
    let a = lab.ns("a");
    let b = lab.ns("b");
    lab.link(&a, "198.18.0.1/24", &b, "198.18.0.2/24");
    let names = lab.names();
    assert!(names.iter().all(|n| list().contains(n)), "{names:?}");
    a.exec(&["busybox", "ping", "-c", "1", "-W", "3", "198.18.0.2"]);
    let routes = a.exec(&["ip", "route"]);
    assert!(
        !routes.contains("default"),
        "unexpected default route: {routes}"
    );
    // Something still running inside must not keep the namespace alive.
    let _sleeper = b.spawn(&["sleep", "60"]);
    drop(lab);
    let now = list();
    for n in &names {
        assert!(!now.contains(n), "{n} still exists: {now:?}");
    }
}

#[test]
fn bridge_joins_several_clients() {
    crate::support::needs!(root, "busybox", "ip");
    let lab = Lab::new();
    let srv = lab.ns("s");
    let c1 = lab.ns("c1");
    let c2 = lab.ns("c2");
    lab.bridge(&srv, Some("198.18.0.1/24"));
    let m1 = lab.attach(&srv, &c1, Some("198.18.0.11/24"));
    lab.attach(&srv, &c2, Some("198.18.0.12/24"));
    assert_eq!(m1.len(), 17, "{m1}");
    c1.exec(&["busybox", "ping", "-c", "1", "-W", "3", "198.18.0.1"]);
    c1.exec(&["busybox", "ping", "-c", "1", "-W", "3", "198.18.0.12"]);
}

#[test]
fn teardown_runs_on_panic() {
    crate::support::needs!(root, "ip");
    let mut names = Vec::new();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let lab = Lab::new();
        lab.ns("p");
        names = lab.names();
        panic!("test failure inside the lab");
    }));
    assert!(r.is_err());
    assert_eq!(names.len(), 1);
    assert!(!list().contains(&names[0]), "{names:?} survived a panic");
}
