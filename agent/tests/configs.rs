//! Every example in `configs/` parses and validates (step 1 only: the
//! secret and key files they name need not exist here).

use std::path::Path;

use ringlan_agent::config::{Config, Role};

#[test]
fn every_example_config_is_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let c = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
        for p in [&c.network.secret_file, &c.node.key_file, &c.control.socket] {
            assert!(p.is_absolute(), "{}: {}", path.display(), p.display());
        }
        assert!(
            c.role == Role::Introducer || !c.introducers.is_empty(),
            "{}",
            path.display()
        );
        n += 1;
    }
    assert!(n >= 4, "expected at least 4 example configs, found {n}");
}

#[test]
fn ipv6_metrics_example_has_what_it_says() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/node-ipv6-metrics.yaml");
    let c = Config::load(&path).unwrap();
    assert!(c.interface.addresses.iter().any(|a| a.addr.is_ipv6()));
    assert!(c.listen.address.is_ipv6());
    assert_eq!(c.metrics.unwrap().listen.to_string(), "127.0.0.1:9910");
    assert_eq!(c.stun_servers.len(), 1);
}

#[test]
fn ca_example_has_what_it_says() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/node-ca.yaml");
    let c = Config::load(&path).unwrap();
    let files = [c.network.ca, c.node.certificate_file].map(Option::unwrap);
    assert_eq!(
        files.map(|f| f.display().to_string()),
        ["/etc/ringlan/home-ca.pub", "/etc/ringlan/laptop.cert"]
    );
    assert!(!c.interface.bridge);
}
