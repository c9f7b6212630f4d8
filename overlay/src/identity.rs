//! Keys: the node's key (its Node-ID), the user's key (owner of AORs), and self-certifying
//! AORs.
//!
//! # Key files
//!
//! A key lives in one file of a data directory, `node.key` ([`NodeKey`]) or `user.key`
//! ([`UserKey`]), holding the libp2p `Keypair` protobuf encoding of an ed25519 key. The first
//! [`NodeKey::load_or_create`] writes a fresh key there and every later one reads it back, so a
//! node keeps its Node-ID across restarts. On unix the file is created with mode 0600 (set when
//! the file is created, never widened afterwards) in a directory created with mode 0700; a key
//! file that others can read is still used, with a warning in the log. The key is written to a
//! temporary file, synced, then hard-linked to its name, so a crash or a second process never
//! leaves a half-written key: whoever links first wins and the other reads its key.
//!
//! # Self-certifying AORs
//!
//! A self-certifying AOR is derived from a user public key, so no one else can ever hold it:
//!
//! ```text
//! sip:<base32(h[..20])>@key.p2psip
//! h = blake3::derive_key("p2psip 2025 self-certifying AOR v1", protobuf(public key))
//! ```
//!
//! `base32` is RFC 4648's alphabet in lower case without padding: 20 bytes give exactly 32
//! characters. [`is_self_certifying`] recognizes that shape; only the key it was derived from
//! can claim such an AOR or delegate registrations under it
//! ([`crate::access::check_store`]), and it needs no claim to be registered.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};

use libp2p::PeerId;
use libp2p::identity::{Keypair, PublicKey};

use crate::error::Error;
use crate::id::normalize_aor;

/// The domain of self-certifying AORs.
pub const SELF_CERTIFYING_DOMAIN: &str = "key.p2psip";

/// The blake3 key-derivation context of self-certifying AORs.
const SELF_CERTIFYING_CONTEXT: &str = "p2psip 2025 self-certifying AOR v1";

/// A node's ed25519 key; its `PeerId` is the node's Node-ID.
#[derive(Clone, Debug)]
pub struct NodeKey(Keypair);

/// A user's ed25519 key: it claims AORs and delegates registrations to the user's nodes.
#[derive(Clone, Debug)]
pub struct UserKey(Keypair);

impl NodeKey {
    /// The key file's name in the data directory.
    pub const FILE: &'static str = "node.key";

    /// Loads `<dir>/node.key`, or creates it (and `dir`) with a fresh key.
    pub fn load_or_create(dir: &Path) -> Result<NodeKey, Error> {
        load_or_create(&dir.join(Self::FILE)).map(NodeKey)
    }

    /// A fresh key, not saved anywhere (tests, throw-away nodes).
    pub fn generate() -> NodeKey {
        NodeKey(Keypair::generate_ed25519())
    }

    /// The key pair, for libp2p and for signing entries.
    pub fn keypair(&self) -> &Keypair {
        &self.0
    }

    /// The public key.
    pub fn public(&self) -> PublicKey {
        self.0.public()
    }

    /// The node's Node-ID.
    pub fn node_id(&self) -> PeerId {
        self.0.public().to_peer_id()
    }
}

impl UserKey {
    /// The key file's name in the data directory.
    pub const FILE: &'static str = "user.key";

    /// Loads `<dir>/user.key`, or creates it (and `dir`) with a fresh key.
    pub fn load_or_create(dir: &Path) -> Result<UserKey, Error> {
        load_or_create(&dir.join(Self::FILE)).map(UserKey)
    }

    /// A fresh key, not saved anywhere.
    pub fn generate() -> UserKey {
        UserKey(Keypair::generate_ed25519())
    }

    /// The key pair, for signing claims and delegations.
    pub fn keypair(&self) -> &Keypair {
        &self.0
    }

    /// The public key.
    pub fn public(&self) -> PublicKey {
        self.0.public()
    }

    /// The self-certifying AOR of this key.
    pub fn self_certifying_aor(&self) -> String {
        self_certifying_aor(&self.0.public())
    }
}

impl From<Keypair> for NodeKey {
    fn from(keypair: Keypair) -> NodeKey {
        NodeKey(keypair)
    }
}

impl From<Keypair> for UserKey {
    fn from(keypair: Keypair) -> UserKey {
        UserKey(keypair)
    }
}

/// The self-certifying AOR of a public key, `sip:<32 base32 characters>@key.p2psip` (see the
/// [module docs](self)).
pub fn self_certifying_aor(key: &PublicKey) -> String {
    let hash = blake3::derive_key(SELF_CERTIFYING_CONTEXT, &key.encode_protobuf());
    format!("sip:{}@{SELF_CERTIFYING_DOMAIN}", base32_lower(&hash[..20]))
}

/// Whether `aor` has the shape of a self-certifying AOR: once normalized, 32 base32 characters
/// at `key.p2psip` with no port.
pub fn is_self_certifying(aor: &str) -> bool {
    let Ok(normalized) = normalize_aor(aor) else {
        return false;
    };
    normalized
        .strip_suffix(SELF_CERTIFYING_DOMAIN)
        .and_then(|rest| rest.strip_suffix('@'))
        .is_some_and(|user| {
            user.len() == 32
                && user
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
        })
}

/// Whether `aor` is the self-certifying AOR of `key`.
pub fn is_self_certified_by(aor: &str, key: &PublicKey) -> bool {
    match (normalize_aor(aor), normalize_aor(&self_certifying_aor(key))) {
        (Ok(given), Ok(own)) => given == own,
        _ => false,
    }
}

fn load_or_create(path: &Path) -> Result<Keypair, Error> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    match File::open(path) {
        Ok(file) => return read_key(path, file),
        Err(error) if error.kind() == ErrorKind::NotFound => {}
        Err(error) => return Err(io(error)),
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    create_private_dir(dir)?;
    let keypair = Keypair::generate_ed25519();
    let encoded = keypair.to_protobuf_encoding().map_err(|error| Error::Key {
        what: path.display().to_string(),
        reason: error.to_string(),
    })?;
    let temporary = temporary_path(path);
    let written = write_private(&temporary, &encoded);
    let linked = written.and_then(|()| fs::hard_link(&temporary, path));
    let _ = fs::remove_file(&temporary);
    match linked {
        Ok(()) => {
            sync_dir(dir);
            tracing::info!(path = %path.display(), peer = %keypair.public().to_peer_id(), "created a key");
            Ok(keypair)
        }
        // Another process created the key first: use its key.
        Err(error) if error.kind() == ErrorKind::AlreadyExists => {
            read_key(path, File::open(path).map_err(io)?)
        }
        Err(error) => Err(io(error)),
    }
}

fn read_key(path: &Path, mut file: File) -> Result<Keypair, Error> {
    warn_if_readable_by_others(path, &file);
    let mut bytes = Vec::new();
    // A key is about 68 bytes; read a little more to notice a wrong file.
    Read::by_ref(&mut file)
        .take(4096)
        .read_to_end(&mut bytes)
        .map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
    Keypair::from_protobuf_encoding(&bytes).map_err(|error| Error::Key {
        what: path.display().to_string(),
        reason: format!("{error}; it is not a libp2p key file (delete it to make a new key)"),
    })
}

fn temporary_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}", std::process::id()));
    path.with_file_name(name)
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let result = options.open(path).and_then(|mut file| {
        file.write_all(bytes)?;
        file.sync_all()
    });
    if result.is_err() {
        let _ = fs::remove_file(path);
    }
    result
}

fn create_private_dir(dir: &Path) -> Result<(), Error> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        source,
    })
}

/// Makes the new name durable (unix); failures only weaken durability, so they are ignored.
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(handle) = File::open(dir) {
        let _ = handle.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

fn warn_if_readable_by_others(path: &Path, file: &File) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(metadata) = file.metadata() {
            let mode = metadata.permissions().mode();
            if mode & 0o077 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    mode = format_args!("{:o}", mode & 0o777),
                    "the key file can be read by other users; chmod 600 it"
                );
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (path, file);
}

/// RFC 4648 base32, lower case, no padding.
fn base32_lower(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let mut buffer = 0u16;
    let mut bits = 0;
    for &byte in bytes {
        buffer = (buffer << 8) | u16::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[usize::from((buffer >> bits) & 31)]));
        }
        buffer &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(char::from(
            ALPHABET[usize::from((buffer << (5 - bits)) & 31)],
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base32_follows_rfc4648() {
        // RFC 4648 §10, lower-cased, padding removed.
        assert_eq!(base32_lower(b""), "");
        assert_eq!(base32_lower(b"f"), "my");
        assert_eq!(base32_lower(b"fo"), "mzxq");
        assert_eq!(base32_lower(b"foo"), "mzxw6");
        assert_eq!(base32_lower(b"foob"), "mzxw6yq");
        assert_eq!(base32_lower(b"fooba"), "mzxw6ytb");
        assert_eq!(base32_lower(b"foobar"), "mzxw6ytboi");
    }

    #[test]
    fn self_certifying_aors_have_their_shape() {
        let user = UserKey::generate();
        let aor = user.self_certifying_aor();
        assert!(aor.starts_with("sip:") && aor.ends_with("@key.p2psip"));
        assert_eq!(aor.len(), "sip:".len() + 32 + "@key.p2psip".len());
        assert!(is_self_certifying(&aor));
        assert!(is_self_certifying(
            &aor.replace("sip:", "SIPS:")
                .replace("key.p2psip", "KEY.p2psip")
        ));
        assert!(is_self_certified_by(&aor, &user.public()));
        assert!(!is_self_certifying("sip:bob@key.p2psip"));
        assert!(!is_self_certifying(&format!("{aor}:5070")));
        assert!(!is_self_certifying("sip:bob@example.org"));
    }
}
