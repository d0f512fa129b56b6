//! Node key and network secret files.
//!
//! Both files hold 32 bytes written as 64 lowercase hex characters and a
//! newline (see `agent/README.md`):
//!
//! - the node key file holds the Ed25519 secret key (the seed `k` of
//!   RFC 8032 5.1.5); the public key and the node id are derived from it;
//! - the network secret file holds the 32-byte network membership secret.
//!
//! Keys are created with mode 0600, secrets with 0640 (their directory 0700
//! when it is missing). A file is refused when others may access it or its
//! group may write or execute it: group read is allowed so that the
//! service, which runs as the unprivileged user `ringlan`, reads a secret
//! owned by root with group `ringlan` (`/etc/ringlan` is setgid `ringlan`,
//! so files created there get that group; see `packaging/README.md`).

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use zeroize::{Zeroize, Zeroizing};

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{0}: file does not exist (create it with `ringlan {1} -o {0}`)", .path.display(), .tool)]
    Missing { path: PathBuf, tool: &'static str },
    #[error(
        "{}: is accessible by others or writable by its group (mode {mode:04o}); it must be private: run `chmod 640 {}`",
        .path.display(), .path.display()
    )]
    WorldReadable { path: PathBuf, mode: u32 },
    #[error("{}: not a regular file", .path.display())]
    NotAFile { path: PathBuf },
    #[error("{}: expected 64 hex characters and a newline", .path.display())]
    Malformed { path: PathBuf },
    #[error("{}: already exists (use --force to overwrite)", .path.display())]
    Exists { path: PathBuf },
    #[error("{}: {error}", .path.display())]
    Io { path: PathBuf, error: io::Error },
    #[error("the operating system's random number generator failed: {0}")]
    Random(String),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> IdentityError + '_ {
    move |error| IdentityError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// A node's Ed25519 identity key. The secret bytes are wiped on drop.
pub struct NodeKey {
    secret: Zeroizing<[u8; 32]>,
}

impl NodeKey {
    pub fn from_secret_bytes(secret: [u8; 32]) -> Self {
        NodeKey {
            secret: Zeroizing::new(secret),
        }
    }

    /// A new key from the OS random number generator.
    pub fn generate() -> Result<Self, IdentityError> {
        Ok(Self::from_secret_bytes(os_random()?))
    }

    /// The 32-byte Ed25519 secret key (seed).
    pub fn secret_bytes(&self) -> &[u8; 32] {
        &self.secret
    }

    /// The 32-byte Ed25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        SigningKey::from_bytes(&self.secret)
            .verifying_key()
            .to_bytes()
    }
}

impl std::fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NodeKey(public {})", hex(&self.public_key()))
    }
}

/// The network membership secret. Wiped on drop.
pub struct NetworkSecret(Zeroizing<[u8; 32]>);

impl NetworkSecret {
    pub fn from_bytes(b: [u8; 32]) -> Self {
        NetworkSecret(Zeroizing::new(b))
    }

    pub fn generate() -> Result<Self, IdentityError> {
        Ok(Self::from_bytes(os_random()?))
    }

    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for NetworkSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NetworkSecret(..)")
    }
}

/// 32 bytes from the OS random number generator (getrandom(2)).
pub fn os_random() -> Result<[u8; 32], IdentityError> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| IdentityError::Random(e.to_string()))?;
    Ok(b)
}

/// Lowercase hex.
pub fn hex(b: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for &x in b {
        s.push(DIGITS[usize::from(x >> 4)] as char);
        s.push(DIGITS[usize::from(x & 15)] as char);
    }
    s
}

/// Parses exactly 64 hex characters.
pub fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    let s = s.as_bytes();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        *o = (hi * 16 + lo) as u8;
    }
    Some(out)
}

/// Text of a key or secret file.
pub fn file_text(b: &[u8; 32]) -> Zeroizing<String> {
    let mut s = hex(b);
    s.push('\n');
    Zeroizing::new(s)
}

fn read_private_32(path: &Path, tool: &'static str) -> Result<[u8; 32], IdentityError> {
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(IdentityError::Missing {
                path: path.to_path_buf(),
                tool,
            })
        }
        Err(e) => return Err(io_err(path)(e)),
    };
    if !meta.is_file() {
        return Err(IdentityError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & NOT_PRIVATE != 0 {
        return Err(IdentityError::WorldReadable {
            path: path.to_path_buf(),
            mode,
        });
    }
    let mut text = Zeroizing::new(fs::read_to_string(path).map_err(io_err(path))?);
    let trimmed = text.strip_suffix('\n').unwrap_or(&text);
    let r = parse_hex32(trimmed).ok_or_else(|| IdentityError::Malformed {
        path: path.to_path_buf(),
    });
    text.zeroize();
    r
}

/// Permission bits that make a key or secret file not private: any bit for
/// others, group write or execute, set-id and sticky bits.
const NOT_PRIVATE: u32 = 0o7037;

/// Mode of a node key file the agent creates: only its owner (the service
/// user) reads it.
pub const KEY_MODE: u32 = 0o600;
/// Mode of a network secret file `ringlan secret` creates: its group (the
/// service's group `ringlan` in a setgid `/etc/ringlan`) may read it.
pub const SECRET_MODE: u32 = 0o640;

/// Reads the network secret file (must exist and be private).
pub fn read_secret(path: &Path) -> Result<NetworkSecret, IdentityError> {
    read_private_32(path, "secret").map(NetworkSecret::from_bytes)
}

/// Reads a node key file (must exist and be private).
pub fn read_key(path: &Path) -> Result<NodeKey, IdentityError> {
    read_private_32(path, "keygen").map(NodeKey::from_secret_bytes)
}

/// Reads the node key, creating a new one ([`KEY_MODE`], parent directory
/// 0700) when the file does not exist. Returns the key and whether it was
/// created.
pub fn load_or_create_key(path: &Path) -> Result<(NodeKey, bool), IdentityError> {
    if path.exists() {
        return Ok((read_key(path)?, false));
    }
    let key = NodeKey::generate()?;
    write_private(path, key.secret_bytes(), KEY_MODE, false)?;
    Ok((key, true))
}

/// Writes 32 bytes as a private file with `mode` ([`KEY_MODE`] or
/// [`SECRET_MODE`]). The parent directory is created with mode 0700 if
/// missing. Without `force` an existing file is left alone and
/// [`IdentityError::Exists`] returned.
pub fn write_private(
    path: &Path,
    bytes: &[u8; 32],
    mode: u32,
    force: bool,
) -> Result<(), IdentityError> {
    debug_assert_eq!(mode & NOT_PRIVATE, 0, "a private mode");
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(io_err(parent))?;
        }
    }
    let mut opts = OpenOptions::new();
    opts.write(true).mode(mode);
    if force {
        opts.create(true).truncate(true);
    } else {
        opts.create_new(true);
    }
    let mut f = opts.open(path).map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            IdentityError::Exists {
                path: path.to_path_buf(),
            }
        } else {
            io_err(path)(e)
        }
    })?;
    // `mode` only applies when the file is created; an overwritten file
    // keeps its old mode unless we set it.
    f.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(io_err(path))?;
    f.write_all(file_text(bytes).as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(io_err(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ringlan-id-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn hex_round_trip() {
        let b: [u8; 32] = core::array::from_fn(|i| (i * 7 + 3) as u8);
        assert_eq!(parse_hex32(&hex(&b)), Some(b));
        assert_eq!(parse_hex32(&hex(&b).to_uppercase()), Some(b));
        assert_eq!(parse_hex32("00"), None);
        assert_eq!(parse_hex32(&"g".repeat(64)), None);
    }

    #[test]
    fn public_key_matches_rfc8032_test_1() {
        // RFC 8032 7.1, TEST 1.
        let sk = parse_hex32("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
            .unwrap();
        let k = NodeKey::from_secret_bytes(sk);
        assert_eq!(
            hex(&k.public_key()),
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
        );
    }

    #[test]
    fn create_then_load_key_and_permissions() {
        let d = tmp("key");
        let p = d.join("sub/home.key");
        let (k1, created) = load_or_create_key(&p).unwrap();
        assert!(created);
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            fs::metadata(p.parent().unwrap())
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o700
        );
        let text = fs::read_to_string(&p).unwrap();
        assert_eq!(text.len(), 65);
        assert!(text.ends_with('\n'));
        let (k2, created) = load_or_create_key(&p).unwrap();
        assert!(!created);
        assert_eq!(k1.public_key(), k2.public_key());

        // no overwrite without force; force resets the mode
        let e = write_private(&p, &[1; 32], KEY_MODE, false).unwrap_err();
        assert!(matches!(e, IdentityError::Exists { .. }), "{e}");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_key(&p).unwrap_err();
        assert!(
            e.to_string()
                .contains("accessible by others or writable by its group (mode 0644)"),
            "{e}"
        );
        write_private(&p, &[1; 32], KEY_MODE, true).unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(read_key(&p).unwrap().secret_bytes(), &[1; 32]);
        fs::remove_dir_all(&d).unwrap();
    }

    /// The service reads secrets through its group: group read passes,
    /// anything for others, group write or execute does not.
    #[test]
    fn group_read_is_private_enough() {
        let d = tmp("modes");
        let p = d.join("home.secret");
        write_private(&p, &[3; 32], SECRET_MODE, false).unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o640
        );
        assert_eq!(read_secret(&p).unwrap().bytes(), &[3; 32]);
        for ok in [0o400, 0o600, 0o640, 0o440] {
            fs::set_permissions(&p, fs::Permissions::from_mode(ok)).unwrap();
            assert!(read_secret(&p).is_ok(), "mode {ok:o}");
        }
        for bad in [0o644, 0o660, 0o650, 0o604, 0o601, 0o4640] {
            fs::set_permissions(&p, fs::Permissions::from_mode(bad)).unwrap();
            let e = read_secret(&p).unwrap_err();
            assert!(
                matches!(e, IdentityError::WorldReadable { .. }),
                "mode {bad:o}: {e}"
            );
        }
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn secret_errors() {
        let d = tmp("secret");
        let p = d.join("x.secret");
        let e = read_secret(&p).unwrap_err();
        assert!(matches!(e, IdentityError::Missing { .. }));
        assert!(e.to_string().contains("ringlan secret -o"), "{e}");
        fs::create_dir_all(&d).unwrap();
        fs::write(&p, "abc\n").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            read_secret(&p).unwrap_err(),
            IdentityError::Malformed { .. }
        ));
        fs::remove_dir_all(&d).unwrap();
    }
}
