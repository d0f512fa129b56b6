//! `ringlan ca ...` and `ringlan cert show`: the network CA's offline tools
//! (`docs/membership.md` 5). The codec and the checks live in
//! [`ringlan_node::membership`]; this module reads and writes the files.
//!
//! Files:
//! - the CA key: the CA's Ed25519 secret key, in the node key format
//!   ([`crate::identity`]: 64 hex characters, mode 0600);
//! - the CA register, `<CA key>.issued` beside it (not secret): the
//!   network name, then one line per certificate the CA signed, so that
//!   `ringlan ca revoke NAME` can find the keys signed under a name;
//! - certificates and revocation lists: armoured text
//!   ([`ringlan_node::membership::armor`]), mode 0644.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use ed25519_dalek::SigningKey;
use ringlan_node::membership::cert::valid_node_name;
use ringlan_node::membership::{
    armor, format_utc, hex, parse_hex, CaKey, CertBody, IpNet, Kind, ListBody, MacPolicy, NodeCert,
    RevocationList, Revoked, Roles, SignedBody,
};
use ringlan_tunnel::crypto::{Certificate, NetworkName};
use ringlan_tunnel::SuiteSet;

use crate::identity::{self, IdentityError, NodeKey};
use crate::tap::{derive_mac, format_mac};

/// Seconds since the Unix epoch, from the system clock.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

/// `365d`, `12h`, `30m`, `90s`, `2w`: a positive duration.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let expected = "expected a number and a unit s, m, h, d or w (e.g. 365d, 12h)";
    let (num, unit) = s.split_at(s.len().saturating_sub(1));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration, {expected}"))?;
    let unit_secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(format!("`{s}` is not a duration, {expected}")),
    };
    let secs = n
        .checked_mul(unit_secs)
        .ok_or_else(|| format!("`{s}` is too long"))?;
    if secs == 0 {
        return Err(format!("`{s}` is zero, {expected}"));
    }
    Ok(Duration::from_secs(secs))
}

/// The register beside a CA key.
pub fn register_path(ca_key: &Path) -> PathBuf {
    let mut p = ca_key.as_os_str().to_owned();
    p.push(".issued");
    PathBuf::from(p)
}

/// What the register holds.
struct Register {
    path: PathBuf,
    network: NetworkName,
    /// (node key, name) of every certificate signed.
    issued: Vec<([u8; 32], String)>,
}

impl Register {
    fn read(ca_key: &Path) -> anyhow::Result<Register> {
        let path = register_path(ca_key);
        let text = fs::read_to_string(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                anyhow!(
                    "{}: missing; `ringlan ca init` writes it beside the CA key (it names the network)",
                    path.display()
                )
            } else {
                anyhow!("{}: {e}", path.display())
            }
        })?;
        let mut network = None;
        let mut issued = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let bad = || anyhow!("{}:{}: malformed line `{line}`", path.display(), i + 1);
            let mut words = line.split_whitespace();
            match words.next() {
                None => {}
                Some(w) if w.starts_with('#') => {}
                Some("network") => {
                    let n = words.next().ok_or_else(bad)?;
                    network = Some(NetworkName::new(n).map_err(|e| {
                        anyhow!("{}:{}: network `{n}`: {e}", path.display(), i + 1)
                    })?);
                }
                Some("issued") => {
                    let key = words.next().and_then(parse_hex::<32>).ok_or_else(bad)?;
                    let _expiry = words.next().ok_or_else(bad)?;
                    let name = words.next().ok_or_else(bad)?;
                    issued.push((key, name.to_string()));
                }
                Some(_) => return Err(bad()),
            }
        }
        let network =
            network.ok_or_else(|| anyhow!("{}: no `network NAME` line", path.display()))?;
        Ok(Register {
            path,
            network,
            issued,
        })
    }

    fn append_issued(&self, cert: &CertBody) -> anyhow::Result<()> {
        let mut f = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .with_context(|| self.path.display().to_string())?;
        writeln!(
            f,
            "issued {} {} {}",
            hex(&cert.node_key),
            cert.not_after,
            cert.name
        )
        .with_context(|| self.path.display().to_string())
    }
}

fn read_ca_key(path: &Path) -> anyhow::Result<SigningKey> {
    match identity::read_key(path) {
        Ok(k) => Ok(SigningKey::from_bytes(k.secret_bytes())),
        Err(IdentityError::Missing { .. }) => bail!(
            "{}: CA key does not exist (create it with `ringlan ca init --network NAME --out {}`)",
            path.display(),
            path.display()
        ),
        Err(e) => Err(e.into()),
    }
}

/// Writes a public file (0644): a new file unless `replace`; a replaced
/// file is written beside it and renamed over it.
fn write_public(path: &Path, text: &str, replace: bool) -> anyhow::Result<()> {
    let ctx = || path.display().to_string();
    if !replace {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(path)
            .map_err(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    anyhow!(
                        "{}: already exists (use --force to overwrite)",
                        path.display()
                    )
                } else {
                    anyhow!("{}: {e}", path.display())
                }
            })?;
        return f.write_all(text.as_bytes()).with_context(ctx);
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&tmp)
        .with_context(|| tmp.display().to_string())?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| tmp.display().to_string())?;
    fs::rename(&tmp, path).with_context(ctx)
}

/// `ringlan ca init`: a new CA key (0600) and its register. Returns the
/// public key.
pub fn init(network: &str, out: &Path, force: bool) -> anyhow::Result<[u8; 32]> {
    let network = NetworkName::new(network).map_err(|e| anyhow!("--network `{network}`: {e}"))?;
    let register = register_path(out);
    if !force && register.exists() {
        bail!(
            "{}: already exists (use --force to overwrite)",
            register.display()
        );
    }
    let key = NodeKey::generate()?;
    identity::write_private(out, key.secret_bytes(), identity::KEY_MODE, force)?;
    let public = key.public_key();
    let text = format!(
        "# ringlan CA register (not secret): the CA's network and every certificate it\n\
         # signed (`issued NODE_KEY EXPIRY NAME`), for `ringlan ca revoke NAME`.\n\
         # CA public key {}\n\
         network {network}\n",
        hex(&public)
    );
    write_public(&register, &text, force)?;
    Ok(public)
}

/// `ringlan ca pub`.
pub fn public(ca_key: &Path) -> anyhow::Result<[u8; 32]> {
    Ok(read_ca_key(ca_key)?.verifying_key().to_bytes())
}

/// What `ringlan ca sign` is asked for.
pub struct SignRequest<'a> {
    pub name: &'a str,
    pub key: &'a str,
    pub ips: &'a [String],
    pub bridge: bool,
    pub roles: Roles,
    pub expires: Duration,
}

/// `ringlan ca sign`: signs, writes `out`, records it in the register.
pub fn sign(
    ca_key: &Path,
    req: &SignRequest<'_>,
    out: &Path,
    force: bool,
    now: u64,
) -> anyhow::Result<NodeCert> {
    let ca = read_ca_key(ca_key)?;
    let register = Register::read(ca_key)?;
    if !valid_node_name(req.name.as_bytes()) {
        bail!(
            "--name `{}`: expected 1-63 characters of A-Z, a-z, 0-9, ., _ and -",
            req.name
        );
    }
    let node_key = parse_hex::<32>(req.key)
        .ok_or_else(|| anyhow!("--key `{}`: expected the node's public key, 64 hex characters (`ringlan keygen` prints it)", req.key))?;
    let mut ips = Vec::new();
    for s in req.ips {
        ips.push(s.parse::<IpNet>().map_err(|e| anyhow!("--ip {e}"))?);
    }
    ips.sort();
    ips.dedup();
    let body = CertBody {
        network: register.network.clone(),
        issuer: CaKey([0; 32]),
        node_key,
        name: req.name.to_string(),
        ips,
        mac: if req.bridge {
            MacPolicy::Any
        } else {
            MacPolicy::Auto
        },
        roles: req.roles,
        not_before: now,
        not_after: now.saturating_add(req.expires.as_secs()),
    };
    let cert = body.sign(&ca).map_err(|e| anyhow!("{e}"))?;
    // The decoder is the judge: a key it refuses is refused here.
    NodeCert::decode(cert.as_bytes()).map_err(|e| anyhow!("--key {}: {e}", req.key))?;
    let summary = format!(
        "node {} in network {}, expires {}",
        req.name,
        register.network,
        format_utc(cert.body().not_after)
    );
    write_public(
        out,
        &armor::encode(Kind::Certificate, cert.as_bytes(), &[summary]),
        force,
    )?;
    register.append_issued(cert.body())?;
    Ok(cert)
}

/// One `NODE` argument of `ringlan ca revoke`.
fn resolve(node: &str, register: &Register) -> anyhow::Result<Vec<Revoked>> {
    let path = Path::new(node);
    if path.is_file() {
        let cert = read_cert(path)?;
        return Ok(vec![Revoked::Key(cert.body().node_key)]);
    }
    if let Some(k) = parse_hex::<32>(node) {
        return Ok(vec![Revoked::Key(k)]);
    }
    if let Some(id) = parse_hex::<16>(node) {
        return Ok(vec![Revoked::NodeId(id)]);
    }
    let keys: Vec<Revoked> = register
        .issued
        .iter()
        .filter(|(_, n)| n == node)
        .map(|(k, _)| Revoked::Key(*k))
        .collect();
    if keys.is_empty() {
        bail!(
            "{node}: not a certificate file, a public key (64 hex), a node id (32 hex), \
             or a name in {}",
            register.path.display()
        );
    }
    Ok(keys)
}

/// `ringlan ca revoke`: creates `out` (version 1) or extends it (version
/// + 1), signed by the CA.
pub fn revoke(
    ca_key: &Path,
    out: &Path,
    nodes: &[String],
    now: u64,
) -> anyhow::Result<RevocationList> {
    let ca = read_ca_key(ca_key)?;
    let ca_pub = CaKey(ca.verifying_key().to_bytes());
    let register = Register::read(ca_key)?;
    let mut add = Vec::new();
    for n in nodes {
        add.extend(resolve(n, &register)?);
    }
    let body = if out.exists() {
        let old = read_list(out)?;
        if old.body().issuer != ca_pub {
            bail!(
                "{}: signed by another CA ({}), not {} ({})",
                out.display(),
                hex(&old.body().issuer.0),
                ca_key.display(),
                hex(&ca_pub.0)
            );
        }
        old.check(&ca_pub, &register.network)
            .map_err(|e| anyhow!("{}: refused: {e}", out.display()))?;
        old.body()
            .next(add, now)
            .ok_or_else(|| anyhow!("{}: the version cannot grow", out.display()))?
    } else {
        let mut first = ListBody::first(register.network.clone(), now);
        add.sort();
        add.dedup();
        first.revoked = add;
        first
    };
    let list = body
        .sign(&ca)
        .map_err(|e| anyhow!("{}: {e}", out.display()))?;
    let summary = format!(
        "revocation list of network {}, version {}, {} revoked, issued {}",
        list.body().network,
        list.body().version,
        list.body().revoked.len(),
        format_utc(list.body().issued_at)
    );
    write_public(
        out,
        &armor::encode(Kind::RevocationList, list.as_bytes(), &[summary]),
        true,
    )?;
    Ok(list)
}

/// A decoded armoured file.
pub enum Object {
    Cert(NodeCert),
    List(RevocationList),
}

/// Reads a certificate or revocation list file.
pub fn read_object(path: &Path) -> anyhow::Result<Object> {
    let text = fs::read_to_string(path).with_context(|| path.display().to_string())?;
    let (kind, bytes) = armor::decode(&text).map_err(|e| {
        anyhow!(
            "{}: not a ringlan certificate or revocation list: {e}",
            path.display()
        )
    })?;
    match kind {
        Kind::Certificate => NodeCert::decode(&bytes)
            .map(Object::Cert)
            .map_err(|e| anyhow!("{}: {e}", path.display())),
        Kind::RevocationList => RevocationList::decode(&bytes)
            .map(Object::List)
            .map_err(|e| anyhow!("{}: {e}", path.display())),
    }
}

fn read_cert(path: &Path) -> anyhow::Result<NodeCert> {
    match read_object(path)? {
        Object::Cert(c) => Ok(c),
        Object::List(_) => bail!(
            "{}: a revocation list, expected a certificate",
            path.display()
        ),
    }
}

fn read_list(path: &Path) -> anyhow::Result<RevocationList> {
    match read_object(path)? {
        Object::List(l) => Ok(l),
        Object::Cert(_) => bail!(
            "{}: a certificate, expected a revocation list",
            path.display()
        ),
    }
}

fn node_id_hex(key: &[u8; 32], network: &NetworkName) -> String {
    Certificate::for_public_key(key, network, SuiteSet::ALL)
        .map(|c| hex(&c.node_id().to_bytes()))
        .unwrap_or_else(|_| "- (not a usable key)".into())
}

fn days(n: u64) -> String {
    if n == 1 {
        "1 day".into()
    } else {
        format!("{n} days")
    }
}

/// `valid` line: the period and how much of it is left at `now`.
fn validity(not_before: u64, not_after: u64, now: u64) -> String {
    let state = if now < not_before {
        format!(
            "not yet valid, starts in {}",
            days((not_before - now).div_ceil(86_400))
        )
    } else if now > not_after {
        format!("EXPIRED {} ago", days((now - not_after) / 86_400))
    } else {
        format!("{} left", days((not_after - now) / 86_400))
    };
    format!(
        "{} to {} ({state})",
        format_utc(not_before),
        format_utc(not_after)
    )
}

/// The signature line, and whether the signature is good (against `ca`
/// when given, else against the issuer key the object names).
fn signature_line(
    issuer: &CaKey,
    signed_by: impl Fn(&CaKey) -> bool,
    ca: Option<&CaKey>,
) -> (String, bool) {
    match ca {
        Some(ca) if issuer != ca => (
            format!("BAD: issued by another CA, not {}", hex(&ca.0)),
            false,
        ),
        Some(ca) if signed_by(ca) => ("OK (signed by the given CA)".into(), true),
        Some(_) => ("BAD: does not verify".into(), false),
        None if signed_by(issuer) => (
            "matches the issuer key; pass --ca CA_PUBLIC_KEY to check it is your CA".into(),
            true,
        ),
        None => ("BAD: does not verify against the issuer key".into(), false),
    }
}

/// `ringlan cert show`: the human form, and whether the signature is good.
pub fn show(obj: &Object, ca: Option<&CaKey>, now: u64) -> (String, bool) {
    let mut s = String::new();
    let ok = match obj {
        Object::Cert(c) => {
            let b = c.body();
            let ips = if b.ips.is_empty() {
                "any (the certificate lists none)".to_string()
            } else {
                b.ips
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let mac = match b.mac {
                MacPolicy::Auto => format!("auto ({})", format_mac(&derive_mac(&b.node_key))),
                MacPolicy::Any => "any (bridge)".into(),
            };
            let mut roles = Vec::new();
            if b.roles.introducer {
                roles.push("introducer");
            }
            if b.roles.relay {
                roles.push("relay");
            }
            let roles = if roles.is_empty() {
                "none".into()
            } else {
                roles.join(", ")
            };
            let (sig, ok) = signature_line(&b.issuer, |k| c.signed_by(k), ca);
            s += &format!("certificate ({} bytes, format 1)\n", c.as_bytes().len());
            s += &format!("  name:      {}\n", b.name);
            s += &format!("  network:   {}\n", b.network);
            s += &format!("  key:       {}\n", hex(&b.node_key));
            s += &format!("  node id:   {}\n", node_id_hex(&b.node_key, &b.network));
            s += &format!("  IPs:       {ips}\n");
            s += &format!("  MAC:       {mac}\n");
            s += &format!("  roles:     {roles}\n");
            s += &format!(
                "  valid:     {}\n",
                validity(b.not_before, b.not_after, now)
            );
            s += &format!("  issuer:    {}\n", hex(&b.issuer.0));
            s += &format!("  signature: {sig}\n");
            ok
        }
        Object::List(l) => {
            let b = l.body();
            let (sig, ok) = signature_line(&b.issuer, |k| l.signed_by(k), ca);
            s += &format!("revocation list ({} bytes, format 1)\n", l.as_bytes().len());
            s += &format!("  network:   {}\n", b.network);
            s += &format!("  version:   {}\n", b.version);
            s += &format!("  issued at: {}\n", format_utc(b.issued_at));
            s += &format!("  issuer:    {}\n", hex(&b.issuer.0));
            s += &format!("  signature: {sig}\n");
            s += &format!("  revoked:   {}\n", b.revoked.len());
            for r in &b.revoked {
                match r {
                    Revoked::Key(k) => {
                        s += &format!(
                            "    key {} (node id {})\n",
                            hex(k),
                            node_id_hex(k, &b.network)
                        );
                    }
                    Revoked::NodeId(id) => s += &format!("    node id {}\n", hex(id)),
                }
            }
            ok
        }
    };
    (s, ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("365d"),
            Ok(Duration::from_secs(365 * 86_400))
        );
        assert_eq!(parse_duration("12h"), Ok(Duration::from_secs(12 * 3600)));
        assert_eq!(parse_duration("2w"), Ok(Duration::from_secs(14 * 86_400)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        for bad in ["", "d", "0d", "-1d", "1y", "1.5d", "99999999999999999999w"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert!(parse_duration("3000000000000000w")
            .unwrap_err()
            .contains("too long"));
    }

    #[test]
    fn validity_text() {
        let d = 86_400;
        assert!(validity(10 * d, 20 * d, 15 * d).ends_with("(5 days left)"));
        assert!(validity(10 * d, 20 * d, 23 * d).ends_with("(EXPIRED 3 days ago)"));
        assert!(validity(10 * d, 20 * d, 9 * d).ends_with("(not yet valid, starts in 1 day)"));
    }
}
