//! STUN interoperability with a real STUN server: coturn (`turnserver`,
//! Debian package coturn) runs in a lab namespace on two ports; a client
//! behind an nftables NAT router asks both through a real tokio
//! [`Driver`] (`Endpoint::stun_query`) and classifies the NAT's mapping:
//! `masquerade` is endpoint-independent, `masquerade fully-random` is
//! endpoint-dependent. Needs root (skipped with RINGLAN_SKIP_ROOT_TESTS=1)
//! and `turnserver`.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use ringlan_lab::{Lab, NatKind, Natted};
use ringlan_tunnel::crypto::{Identity, NetworkName, NetworkSecret};
use ringlan_tunnel::driver::Driver;
use ringlan_tunnel::{classify_mapping, NatMapping};
use ringlan_tunnel::{EndpointConfig, Event};

const STUN_IP: &str = "198.51.100.10";

fn turnserver() -> Option<&'static str> {
    ["/usr/bin/turnserver", "/usr/sbin/turnserver"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
}

/// Ask every server once through one Driver bound to `bind`; retried
/// while coturn starts. Returns (server, mapped) per server.
fn query_all(
    bind: SocketAddr,
    servers: Vec<SocketAddr>,
) -> anyhow::Result<Vec<(SocketAddr, SocketAddr)>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let name = NetworkName::new("stun").unwrap();
        let cfg = EndpointConfig::new(
            Identity::from_secret_key_bytes([5; 32], &name),
            name,
            NetworkSecret::from_bytes([6; 32]),
        );
        let mut d = Driver::bind(bind, cfg).await?;
        let mut got: Vec<(SocketAddr, SocketAddr)> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(40);
        while got.len() < servers.len() {
            anyhow::ensure!(Instant::now() < deadline, "no STUN answers: {got:?}");
            for s in &servers {
                if !got.iter().any(|(g, _)| g == s) {
                    d.endpoint().stun_query(Instant::now(), *s)?;
                }
            }
            d.flush();
            let mut outstanding = servers.len() - got.len();
            while outstanding > 0 {
                match tokio::time::timeout(Duration::from_secs(10), d.next_event()).await {
                    Ok(Event::StunResult { server, mapped, .. }) => {
                        got.push((server, mapped));
                        outstanding -= 1;
                    }
                    Ok(Event::StunFailed { .. }) => outstanding -= 1,
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        }
        Ok(got)
    })
}

fn run(kind: NatKind) -> Option<(Vec<(SocketAddr, SocketAddr)>, IpAddr)> {
    let lab = Lab::for_test()?;
    let Some(bin) = turnserver() else {
        panic!("turnserver not found: install the Debian package coturn");
    };
    let Natted {
        wan,
        router,
        host: client,
        ..
    } = lab
        .natted_host(kind, "10.0.0.1/24", "198.51.100.1/24", "10.0.0.2/24")
        .unwrap();
    let stun = lab
        .host("stun", &wan, &format!("{STUN_IP}/24"), None)
        .unwrap();
    for port in ["3478", "3479"] {
        lab.spawn(
            &stun.ns,
            &format!("coturn-{port}"),
            &[
                bin,
                "-n",
                "--listening-ip",
                STUN_IP,
                "--listening-port",
                port,
                "--no-auth",
                "--no-tls",
                "--no-dtls",
                "--stun-only",
                "--no-cli",
                "--log-file",
                "stdout",
                "--pidfile",
                &lab.dir()
                    .join(format!("coturn-{port}.pid"))
                    .display()
                    .to_string(),
            ],
        )
        .unwrap();
    }
    let servers: Vec<SocketAddr> = [3478u16, 3479]
        .iter()
        .map(|p| SocketAddr::new(STUN_IP.parse().unwrap(), *p))
        .collect();
    let h = lab
        .in_ns(&client.ns, move || {
            query_all("0.0.0.0:4910".parse().unwrap(), servers)
        })
        .unwrap();
    let got = match h.join().unwrap() {
        Ok(g) => g,
        Err(e) => {
            lab.dump_logs();
            panic!("{e:#}");
        }
    };
    Some((got, router.public_addr()))
}

/// Both coturn ports see the router's public address, and the mapping
/// classifies as `want`.
fn check(kind: NatKind, want: NatMapping) {
    let Some((got, public)) = run(kind) else {
        return;
    };
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got.iter().all(|(_, m)| m.ip() == public), "{got:?}");
    assert_eq!(classify_mapping(&got), want, "{got:?}");
}

#[test]
fn coturn_sees_the_masquerade_address_and_the_mapping_is_endpoint_independent() {
    check(NatKind::Masquerade, NatMapping::EndpointIndependent);
}

#[test]
fn coturn_through_fully_random_masquerade_is_endpoint_dependent() {
    check(NatKind::FullyRandom, NatMapping::EndpointDependent);
}
