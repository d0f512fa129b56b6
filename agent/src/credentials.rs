//! The node's membership files (`docs/membership.md` 4 and 12):
//!
//! - the CA public key (`network.ca`): the 64 hex characters `ringlan ca
//!   pub` prints, on a line of their own; blank lines and `#` comment lines
//!   are ignored, so the file may say where the key came from;
//! - the node's certificate (`node.certificate_file`): armoured, as `ringlan
//!   ca sign` writes it;
//! - the newest revocation list this node has seen, kept in its state
//!   directory (the directory of `node.key_file`) as
//!   `<network>.revocations`, armoured as `ringlan ca revoke` writes it, and
//!   replaced atomically (a temporary file renamed over it, mode 0644) each
//!   time a newer list arrives.
//!
//! The checks themselves live in [`ringlan_node::membership`]; this module
//! reads and writes the files and words what it finds for people.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use ringlan_node::membership::{format_utc, hex, parse_hex, CaKey, NodeCert, RevocationList};
use ringlan_tunnel::crypto::NetworkName;

use crate::ca;
use crate::config::{Config, Membership};

/// How long before its certificate expires a node starts warning (log,
/// `check-config`, status).
pub use ringlan_node::admission::EXPIRY_WARNING;

/// Reads the CA public key file (`network.ca`).
pub fn read_ca_key(path: &Path) -> Result<CaKey, String> {
    let text = fs::read_to_string(path).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            format!(
                "{}: file does not exist (write the CA's public key into it: \
                 `ringlan ca pub CA_KEY > {}`)",
                path.display(),
                path.display()
            )
        } else {
            format!("{}: {e}", path.display())
        }
    })?;
    let mut lines = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'));
    let key = match (lines.next(), lines.next()) {
        (Some(line), None) => parse_hex::<32>(line),
        _ => None,
    };
    key.map(CaKey).ok_or_else(|| {
        format!(
            "{}: expected the CA's public key, 64 hex characters on one line \
             (what `ringlan ca pub` prints)",
            path.display()
        )
    })
}

/// Reads the node's certificate file.
pub fn read_certificate(path: &Path) -> Result<NodeCert, String> {
    if !path.exists() {
        return Err(format!(
            "{}: file does not exist (have the CA sign this node's public key: \
             `ringlan ca sign --ca CA_KEY --name NODE --key PUBLIC_KEY --out {}`)",
            path.display(),
            path.display()
        ));
    }
    ca::read_cert(path).map_err(|e| format!("{e:#}"))
}

/// Where a node keeps the newest revocation list of `network`: beside its
/// key file.
pub fn revocations_path(key_file: &Path, network: &str) -> PathBuf {
    key_file
        .parent()
        .unwrap_or(Path::new("/"))
        .join(format!("{network}.revocations"))
}

/// The persisted revocation list, if there is one. A list that does not
/// decode, or that `ca` did not sign for `network`, is an error: the caller
/// decides whether to go on without it.
pub fn read_revocations(
    path: &Path,
    ca: &CaKey,
    network: &NetworkName,
) -> Result<Option<RevocationList>, String> {
    if !path.exists() {
        return Ok(None);
    }
    let list = ca::read_list(path).map_err(|e| format!("{e:#}"))?;
    list.check(ca, network)
        .map_err(|e| format!("{}: refused: {e}", path.display()))?;
    Ok(Some(list))
}

/// Replaces the persisted revocation list with `list` (atomically, mode
/// 0644).
pub fn write_revocations(path: &Path, list: &RevocationList) -> anyhow::Result<()> {
    ca::write_public(path, &ca::list_text(list), true)
}

/// How a certificate stands at `now` (seconds since the Unix epoch), for
/// people: one line, and whether it is a warning (expired, not yet valid,
/// or expiring within [`EXPIRY_WARNING`]).
pub fn describe(cert: &NodeCert, now: u64) -> (String, bool) {
    let b = cert.body();
    let expires = format_utc(b.not_after);
    if now < b.not_before {
        return (
            format!(
                "certificate {} is not valid before {} (check this machine's clock)",
                b.name,
                format_utc(b.not_before)
            ),
            true,
        );
    }
    if now > b.not_after {
        return (
            format!(
                "certificate {} EXPIRED at {expires}: members refuse this node; \
                 have the CA sign a new one",
                b.name
            ),
            true,
        );
    }
    let left = b.not_after - now;
    let days = left / 86_400;
    let days = if days == 1 {
        "1 day".to_string()
    } else {
        format!("{days} days")
    };
    if left < EXPIRY_WARNING.as_secs() {
        (
            format!(
                "certificate {} expires in {days} ({expires}): have the CA sign a new one",
                b.name
            ),
            true,
        )
    } else {
        (
            format!("certificate {}, expires {expires} ({days} left)", b.name),
            false,
        )
    }
}

/// What `ringlan check-config` says about membership besides `OK`: notes,
/// and warnings (`true`).
pub fn notes(config: &Config, membership: Option<&Membership>, now: u64) -> Vec<(bool, String)> {
    let Some(m) = membership else {
        let mut out = vec![(
            false,
            "membership: shared secret (no per-node revocation); set network.ca to admit \
             nodes by certificate"
                .to_string(),
        )];
        if config.node.certificate_file.is_some() {
            out.push((
                false,
                "node.certificate_file is not used without network.ca".to_string(),
            ));
        }
        return out;
    };
    let (cert, warn) = describe(&m.certificate, now);
    let mut out = vec![(
        false,
        format!(
            "membership: network CA {} (nodes admitted by certificate)",
            hex(&m.ca.0)
        ),
    )];
    out.push((warn, cert));
    let path = config.revocations_path();
    match read_revocations(&path, &m.ca, &m.network) {
        Ok(None) => out.push((
            false,
            format!("no revocation list yet ({})", path.display()),
        )),
        Ok(Some(list)) => out.push((
            false,
            format!(
                "revocation list version {}, {} revoked ({})",
                list.body().version,
                list.body().revoked.len(),
                path.display()
            ),
        )),
        Err(e) => out.push((true, format!("{e}; the agent starts without it"))),
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use ringlan_node::membership::{CertBody, ListBody, MacPolicy, Revoked, Roles, SignedBody};

    pub(crate) fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ringlan-cred-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    pub(crate) fn home() -> NetworkName {
        NetworkName::new("home").unwrap()
    }

    /// A certificate for `node_key` in `network` signed by CA `ca_seed`.
    pub(crate) fn cert(
        ca_seed: u8,
        network: &NetworkName,
        node_key: [u8; 32],
        mac: MacPolicy,
        not_before: u64,
        not_after: u64,
    ) -> NodeCert {
        CertBody {
            network: network.clone(),
            issuer: CaKey([0; 32]),
            node_key,
            name: "laptop".into(),
            ips: Vec::new(),
            mac,
            roles: Roles::default(),
            not_before,
            not_after,
        }
        .sign(&SigningKey::from_bytes(&[ca_seed; 32]))
        .unwrap()
    }

    pub(crate) fn ca_pub(seed: u8) -> CaKey {
        CaKey(
            SigningKey::from_bytes(&[seed; 32])
                .verifying_key()
                .to_bytes(),
        )
    }

    #[test]
    fn ca_key_file_forms() {
        let d = tmp("cakey");
        let p = d.join("home-ca.pub");
        let key = ca_pub(7);
        let hex = crate::identity::hex(&key.0);
        fs::write(&p, format!("{hex}\n")).unwrap();
        assert_eq!(read_ca_key(&p), Ok(key));
        fs::write(&p, format!("# home CA\n\n  {}  \r\n", hex.to_uppercase())).unwrap();
        assert_eq!(read_ca_key(&p), Ok(key));
        for bad in [String::new(), "abc\n".into(), format!("{hex}\n{hex}\n")] {
            fs::write(&p, bad).unwrap();
            let e = read_ca_key(&p).unwrap_err();
            assert!(e.contains("expected the CA's public key"), "{e}");
        }
        let e = read_ca_key(&d.join("none.pub")).unwrap_err();
        assert!(e.contains("none.pub: file does not exist"), "{e}");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn certificate_and_list_files() {
        let d = tmp("files");
        let c = cert(7, &home(), ca_pub(9).0, MacPolicy::Auto, 10, 20);
        let cp = d.join("laptop.cert");
        let e = read_certificate(&cp).unwrap_err();
        assert!(e.contains("file does not exist (have the CA sign"), "{e}");
        fs::write(
            &cp,
            ringlan_node::membership::armor::encode(
                ringlan_node::membership::Kind::Certificate,
                c.as_bytes(),
                &[],
            ),
        )
        .unwrap();
        assert_eq!(read_certificate(&cp), Ok(c));

        // The list beside the key file: absent, written, read back, replaced.
        let lp = revocations_path(&d.join("home.key"), "home");
        assert_eq!(lp, d.join("home.revocations"));
        assert_eq!(read_revocations(&lp, &ca_pub(7), &home()), Ok(None));
        let ca = SigningKey::from_bytes(&[7; 32]);
        let v1 = ListBody::first(home(), 100).sign(&ca).unwrap();
        write_revocations(&lp, &v1).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&lp).unwrap().permissions().mode() & 0o777,
            0o644
        );
        assert_eq!(
            read_revocations(&lp, &ca_pub(7), &home()),
            Ok(Some(v1.clone()))
        );
        let v2 = v1
            .body()
            .next([Revoked::Key([5; 32])], 200)
            .unwrap()
            .sign(&ca)
            .unwrap();
        write_revocations(&lp, &v2).unwrap();
        assert_eq!(read_revocations(&lp, &ca_pub(7), &home()), Ok(Some(v2)));
        assert!(!d.join("home.revocations.tmp").exists());
        // Another CA's list, or another network's, is refused.
        let e = read_revocations(&lp, &ca_pub(8), &home()).unwrap_err();
        assert!(e.contains("refused: issued by another CA"), "{e}");
        let e = read_revocations(&lp, &ca_pub(7), &NetworkName::new("work").unwrap()).unwrap_err();
        assert!(e.contains("refused: for another network"), "{e}");
        // A certificate where a list belongs.
        fs::copy(&cp, &lp).unwrap();
        let e = read_revocations(&lp, &ca_pub(7), &home()).unwrap_err();
        assert!(
            e.contains("a certificate, expected a revocation list"),
            "{e}"
        );
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn notes_without_a_ca() {
        let text = "network: {name: home, secret_file: /s/home.secret}\n\
                    node: {certificate_file: /s/laptop.cert}\n\
                    interface: {name: rl-home}\nrole: introducer\n";
        let c = Config::parse(text, Path::new("/s/home.yaml")).unwrap();
        let notes = notes(&c, None, 0);
        assert_eq!(
            notes,
            [
                (
                    false,
                    "membership: shared secret (no per-node revocation); set network.ca to \
                     admit nodes by certificate"
                        .to_string()
                ),
                (
                    false,
                    "node.certificate_file is not used without network.ca".to_string()
                ),
            ]
        );
    }

    #[test]
    fn expiry_descriptions() {
        let day = 86_400;
        let c = cert(
            7,
            &home(),
            ca_pub(9).0,
            MacPolicy::Auto,
            10 * day,
            100 * day,
        );
        let (s, warn) = describe(&c, 20 * day);
        assert!(!warn);
        assert!(
            s.starts_with("certificate laptop, expires 1970-04-11"),
            "{s}"
        );
        assert!(s.ends_with("(80 days left)"), "{s}");
        let (s, warn) = describe(&c, 99 * day);
        assert!(warn);
        assert!(
            s.starts_with("certificate laptop expires in 1 day ("),
            "{s}"
        );
        let (s, warn) = describe(&c, 100 * day + 1);
        assert!(warn);
        assert!(s.contains("EXPIRED at 1970-04-11"), "{s}");
        let (s, warn) = describe(&c, 9 * day);
        assert!(warn);
        assert!(s.contains("is not valid before 1970-01-11"), "{s}");
        // 30 days is the threshold.
        assert!(!describe(&c, 70 * day).1);
        assert!(describe(&c, 70 * day + 1).1);
    }
}
