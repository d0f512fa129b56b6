//! STUN in the lab: a coturn server in a namespace, Binding requests from
//! one socket, and the small RFC 8489 codec they need.

use anyhow::{bail, Context, Result};
use std::fs;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::*;

/// Seeds STUN transaction ids ([`Lab::stun_binding`]).
static STUN_SEQ: AtomicU64 = AtomicU64::new(0);
/// The STUN port coturn listens on ([`Lab::coturn`]).
pub const STUN_PORT: u16 = 3478;
/// How long [`Lab::coturn`] waits for the server's first answer.
const COTURN_START: Duration = Duration::from_secs(20);
/// STUN magic cookie (RFC 8489 section 5).
const STUN_COOKIE: u32 = 0x2112_a442;

impl Lab {
    /// Starts coturn (`turnserver`) in `ns` as a plain STUN server (RFC 8489
    /// Binding only: `stun-only`, no authentication, no TLS/DTLS, no CLI)
    /// listening on `addr:3478`, with a generated config and its log in the
    /// lab directory. Returns once the server answers a Binding request sent
    /// from inside `ns`; fails (with the log) if it exits or stays silent.
    pub fn coturn(&self, ns: &Ns, addr: IpAddr) -> Result<Proc> {
        if which("turnserver").is_none() {
            bail!("`turnserver` not found: install coturn (tests/run-all.sh does)");
        }
        let short = ns.name().strip_prefix(&self.prefix).unwrap_or(ns.name());
        let name = format!("coturn-{short}");
        let dir = self.dir.join(&name);
        fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let conf = dir.join("turnserver.conf");
        let text = format!(
            "# ringlan-lab: STUN only, no auth, one listener, nothing else.\n\
             listening-ip={addr}\n\
             listening-port={STUN_PORT}\n\
             stun-only\n\
             no-auth\n\
             no-cli\n\
             no-tls\n\
             no-dtls\n\
             no-rfc5780\n\
             no-software-attribute\n\
             simple-log\n\
             log-file={log}\n\
             pidfile={pid}\n\
             userdb={db}\n",
            log = dir.join("turnserver.log").display(),
            pid = dir.join("turnserver.pid").display(),
            db = dir.join("turndb").display(),
        );
        fs::write(&conf, text).with_context(|| format!("write {}", conf.display()))?;
        let conf_s = conf.to_string_lossy().into_owned();
        let p = self.spawn(ns, &name, &["turnserver", "-c", &conf_s])?;
        let server = SocketAddr::new(addr, STUN_PORT);
        let bind = SocketAddr::new(addr, 0);
        let r = wait_for(COTURN_START, "coturn answers STUN", || {
            if let Some(st) = self.try_status(&p)? {
                bail!("turnserver exited ({st}):\n{}", self.log(&p));
            }
            match self.stun_binding(ns, bind, &[server], Duration::from_millis(300)) {
                Ok(m) => Ok(Some(m)),
                Err(_) => Ok(None),
            }
        });
        if let Err(e) = r {
            let _ = self.kill(&p);
            return Err(e.context(format!(
                "coturn in {ns} at {server}: log:\n{}",
                self.log(&p)
            )));
        }
        Ok(p)
    }

    /// From ONE UDP socket bound to `bind` in `ns`, sends a STUN Binding
    /// request (RFC 8489 section 6, no attributes) to each server in turn and
    /// returns the mapped address each reports (XOR-MAPPED-ADDRESS, or
    /// MAPPED-ADDRESS from old servers). Retries each request every 200 ms
    /// until `timeout`.
    pub fn stun_binding(
        &self,
        ns: &Ns,
        bind: SocketAddr,
        servers: &[SocketAddr],
        timeout: Duration,
    ) -> Result<Vec<SocketAddr>> {
        let seed = (u64::from(std::process::id()) << 32) ^ STUN_SEQ.fetch_add(1, Ordering::SeqCst);
        let mut rng = SplitMix64(seed);
        self.udp_ask(ns, bind, servers, timeout, "STUN", move |_| {
            let mut txid = [0u8; 12];
            rng.fill(&mut txid);
            let parse: AnswerParser =
                Box::new(move |b: &[u8]| parse_stun_binding_response(b, &txid));
            (stun_binding_request(&txid).to_vec(), parse)
        })
    }
}

/// A STUN Binding request without attributes (RFC 8489 sections 5 and 6):
/// type 0x0001, length 0, the magic cookie, the transaction id.
pub fn stun_binding_request(txid: &[u8; 12]) -> [u8; 20] {
    let mut m = [0u8; 20];
    m[0..2].copy_from_slice(&0x0001u16.to_be_bytes());
    m[4..8].copy_from_slice(&STUN_COOKIE.to_be_bytes());
    m[8..20].copy_from_slice(txid);
    m
}

/// The mapped address of a STUN Binding success response (type 0x0101) to
/// the request with `txid`: XOR-MAPPED-ADDRESS (0x0020), else MAPPED-ADDRESS
/// (0x0001). `None` for anything else or anything malformed (total: checked
/// lengths, no panics).
pub fn parse_stun_binding_response(msg: &[u8], txid: &[u8; 12]) -> Option<SocketAddr> {
    let header = msg.get(..20)?;
    if u16::from_be_bytes([header[0], header[1]]) != 0x0101
        || header.get(4..8)? != STUN_COOKIE.to_be_bytes()
        || header.get(8..20)? != txid
    {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
    let mut attrs = msg.get(20..20usize.checked_add(len)?)?;
    let mut mapped = None;
    while attrs.len() >= 4 {
        let ty = u16::from_be_bytes([attrs[0], attrs[1]]);
        let alen = usize::from(u16::from_be_bytes([attrs[2], attrs[3]]));
        let value = attrs.get(4..4usize.checked_add(alen)?)?;
        match ty {
            0x0020 => return stun_address(value, true, txid),
            0x0001 => mapped = stun_address(value, false, txid),
            _ => {}
        }
        // Attributes are padded to 4 bytes.
        let next = 4usize.checked_add(alen.checked_add(3)? & !3)?;
        attrs = attrs.get(next..).unwrap_or(&[]);
    }
    mapped
}

/// An address attribute value: reserved, family, port, address (RFC 8489
/// sections 14.1 and 14.2), XOR-ed with the cookie (and txid for IPv6).
fn stun_address(v: &[u8], xor: bool, txid: &[u8; 12]) -> Option<SocketAddr> {
    let family = *v.get(1)?;
    let mut port = u16::from_be_bytes([*v.get(2)?, *v.get(3)?]);
    let cookie = STUN_COOKIE.to_be_bytes();
    if xor {
        port ^= u16::from_be_bytes([cookie[0], cookie[1]]);
    }
    let ip = match family {
        0x01 => {
            let mut a: [u8; 4] = v.get(4..8)?.try_into().ok()?;
            if xor {
                for (b, k) in a.iter_mut().zip(cookie) {
                    *b ^= k;
                }
            }
            IpAddr::from(a)
        }
        0x02 => {
            let mut a: [u8; 16] = v.get(4..20)?.try_into().ok()?;
            if xor {
                for (b, k) in a.iter_mut().zip(cookie.iter().chain(txid.iter())) {
                    *b ^= k;
                }
            }
            IpAddr::from(a)
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}
