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
//!
//! # Admission: Node-ID certificates and Node-ID work
//!
//! Two ways for an overlay to make Node-IDs costly, so that one party cannot cheaply place
//! many nodes next to a resource (a Sybil attack) or fill a node's routing table (eclipse):
//!
//! - **An enrollment CA** (RELOAD's model, RFC 6940 §11.3): the CA signs each Node-ID it
//!   admits, a [`NodeCertificate`]; peers of such an overlay take a node into their routing
//!   table and replica sets only with a valid certificate. The CA decides who joins.
//! - **Node-ID work** (S/Kademlia's static puzzle): a Node-ID counts only when
//!   `blake3::derive_key(WORK_CONTEXT, PeerId bytes)` starts with at least the overlay's
//!   number of zero bits ([`node_id_work`]); [`NodeKey::load_or_create_with_work`] grinds keys
//!   until one has it. Each bit doubles what a Node-ID costs its maker; an honest node pays
//!   once, an attacker for every key it places.
//!
//! The certificate is signed over a canonical layout (big-endian, `bytes(x)` is
//! `u32 length || x`):
//!
//! ```text
//! node certificate: "p2psip node certificate v1\0" || bytes(PeerId bytes) || expires_ms u64
//! ```

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

/// The blake3 key-derivation context of Node-ID work ([`node_id_work`]).
const WORK_CONTEXT: &str = "p2psip 2026 node-id work v1";

/// The most Node-ID work an overlay may ask for: 2^24 keys on average is already minutes of
/// one core; more would make honest nodes wait too long to join.
pub const MAX_NODE_ID_WORK: u32 = 24;

/// The tag of the text form of a [`NodeCertificate`].
const CERTIFICATE_TEXT_TAG: &str = "p2psip-node-cert-v1:";

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

    /// Loads `<dir>/node.key`, or creates it with a fresh key whose Node-ID has at least
    /// `work` bits of work ([`node_id_work`]). A key that is there but has less work is an
    /// [`Error::Key`] that says so: such a node would not be admitted by the overlay.
    pub fn load_or_create_with_work(dir: &Path, work: u32) -> Result<NodeKey, Error> {
        let path = dir.join(Self::FILE);
        let key = load_or_create_from(&path, || NodeKey::generate_with_work(work).0)?;
        let found = node_id_work(&key.public().to_peer_id());
        if found < work {
            return Err(Error::Key {
                what: path.display().to_string(),
                reason: format!(
                    "its Node-ID has {found} bits of work and this overlay asks for {work}; \
                     move the file away to make a new key (the node gets a new Node-ID)"
                ),
            });
        }
        Ok(NodeKey(key))
    }

    /// A fresh key, not saved anywhere (tests, throw-away nodes).
    pub fn generate() -> NodeKey {
        NodeKey(Keypair::generate_ed25519())
    }

    /// A fresh key whose Node-ID has at least `work` bits of work (at most
    /// [`MAX_NODE_ID_WORK`]): 2^`work` keys are made on average.
    pub fn generate_with_work(work: u32) -> NodeKey {
        let work = work.min(MAX_NODE_ID_WORK);
        loop {
            let key = Keypair::generate_ed25519();
            if node_id_work(&key.public().to_peer_id()) >= work {
                return NodeKey(key);
            }
        }
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

/// How much work a Node-ID carries: the number of leading zero bits of
/// `blake3::derive_key(WORK_CONTEXT, PeerId bytes)` (S/Kademlia's static puzzle, see the
/// [module docs](self)).
pub fn node_id_work(node: &PeerId) -> u32 {
    let hash = blake3::derive_key(WORK_CONTEXT, &node.to_bytes());
    let mut bits = 0;
    for byte in hash {
        bits += byte.leading_zeros();
        if byte != 0 {
            break;
        }
    }
    bits
}

/// An enrollment CA's certificate for one Node-ID: the CA admits that node to its overlay
/// until `expires_ms` (see the [module docs](self)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeCertificate {
    /// The certified Node-ID.
    pub node: PeerId,
    /// When the certificate ends, in ms since the Unix epoch.
    pub expires_ms: u64,
    /// The CA's signature over [`NodeCertificate::signed_bytes`].
    pub signature: Vec<u8>,
}

impl NodeCertificate {
    /// The CA's certificate for `node`, valid until `expires_ms`.
    pub fn issue(ca: &Keypair, node: PeerId, expires_ms: u64) -> Result<NodeCertificate, Error> {
        let mut certificate = NodeCertificate {
            node,
            expires_ms,
            signature: Vec::new(),
        };
        certificate.signature =
            ca.sign(&certificate.signed_bytes())
                .map_err(|error| Error::Key {
                    what: "the enrollment CA key".into(),
                    reason: error.to_string(),
                })?;
        Ok(certificate)
    }

    /// The canonical bytes the CA signs.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let node = self.node.to_bytes();
        let tag: &[u8] = b"p2psip node certificate v1\0";
        let mut out = Vec::with_capacity(tag.len() + 4 + node.len() + 8);
        out.extend_from_slice(tag);
        out.extend_from_slice(&(node.len() as u32).to_be_bytes());
        out.extend_from_slice(&node);
        out.extend_from_slice(&self.expires_ms.to_be_bytes());
        out
    }

    /// Checks that this certificate admits `node` at `now_ms` on behalf of `ca`; the error
    /// ([`Error::Forbidden`] or [`Error::Expired`]) says what is wrong.
    pub fn verify(&self, ca: &PublicKey, node: &PeerId, now_ms: u64) -> Result<(), Error> {
        if self.node != *node {
            return Err(Error::forbidden(
                "the Node-ID certificate is for another Node-ID",
            ));
        }
        if !ca.verify(&self.signed_bytes(), &self.signature) {
            return Err(Error::forbidden(
                "the Node-ID certificate is not signed by this overlay's enrollment CA",
            ));
        }
        if now_ms >= self.expires_ms {
            return Err(Error::Expired {
                what: "the Node-ID certificate",
                expired_at_ms: self.expires_ms,
                now_ms,
            });
        }
        Ok(())
    }

    /// The certificate as one line of text, `p2psip-node-cert-v1:<hex>` (a file, and what
    /// identify announces).
    pub fn to_text(&self) -> String {
        let mut bytes = self.signed_bytes();
        bytes.extend_from_slice(&self.signature);
        format!("{CERTIFICATE_TEXT_TAG}{}", to_hex(&bytes))
    }

    /// Reads [`NodeCertificate::to_text`]'s form (surrounding white space allowed); an
    /// [`Error::InvalidMessage`] says what is wrong. It does not verify the signature.
    pub fn from_text(text: &str) -> Result<NodeCertificate, Error> {
        let bad = |why: &str| Error::invalid(format!("not a Node-ID certificate: {why}"));
        let hex = text
            .trim()
            .strip_prefix(CERTIFICATE_TEXT_TAG)
            .ok_or_else(|| bad("it does not start with p2psip-node-cert-v1:"))?;
        if hex.len() > 1024 {
            return Err(bad("it is too long"));
        }
        let bytes = from_hex(hex).ok_or_else(|| bad("it is not hexadecimal"))?;
        let tag: &[u8] = b"p2psip node certificate v1\0";
        let rest = bytes
            .strip_prefix(tag)
            .ok_or_else(|| bad("its tag is wrong"))?;
        let (len, rest) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| bad("it is cut short"))?;
        let len = u32::from_be_bytes(*len) as usize;
        if rest.len() < len + 8 {
            return Err(bad("it is cut short"));
        }
        let (node, rest) = rest.split_at(len);
        let (expires, signature) = rest.split_at(8);
        let node = PeerId::from_bytes(node).map_err(|_| bad("its Node-ID does not decode"))?;
        let expires_ms = u64::from_be_bytes(expires.try_into().map_err(|_| bad("cut short"))?);
        Ok(NodeCertificate {
            node,
            expires_ms,
            signature: signature.to_vec(),
        })
    }
}

/// `bytes` in lower-case hexadecimal.
pub fn to_hex(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(char::from(b"0123456789abcdef"[usize::from(byte >> 4)]));
        text.push(char::from(b"0123456789abcdef"[usize::from(byte & 15)]));
    }
    text
}

/// The bytes of [`to_hex`]'s form (either case); `None` when `text` is not hexadecimal.
pub fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.as_bytes()
        .chunks(2)
        .map(|pair| {
            let digit = |c: u8| char::from(c).to_digit(16);
            Some((digit(pair[0])? * 16 + digit(pair[1])?) as u8)
        })
        .collect()
}

/// A public key as text: the hexadecimal of its libp2p protobuf encoding (what a user gives
/// an enrollment CA to certify an AOR for, see `p2psip ca aor`).
pub fn public_key_to_hex(key: &PublicKey) -> String {
    to_hex(&key.encode_protobuf())
}

/// Reads [`public_key_to_hex`]'s form; an [`Error::InvalidMessage`] says what is wrong.
pub fn public_key_from_hex(text: &str) -> Result<PublicKey, Error> {
    let text = text.trim();
    if text.len() > 512 {
        return Err(Error::invalid("not a public key: it is too long"));
    }
    let bytes =
        from_hex(text).ok_or_else(|| Error::invalid("not a public key: it is not hexadecimal"))?;
    PublicKey::try_decode_protobuf(&bytes)
        .map_err(|_| Error::invalid("not a public key: it does not decode"))
}

fn load_or_create(path: &Path) -> Result<Keypair, Error> {
    load_or_create_from(path, Keypair::generate_ed25519)
}

fn load_or_create_from(path: &Path, generate: impl FnOnce() -> Keypair) -> Result<Keypair, Error> {
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
    let keypair = generate();
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
    fn node_id_work_counts_leading_zero_bits() {
        let key = NodeKey::generate_with_work(6);
        assert!(node_id_work(&key.node_id()) >= 6);
        // About one key in 2^12 has 12 bits: a random key almost never does.
        let cheap = (0..16)
            .filter(|_| node_id_work(&NodeKey::generate().node_id()) >= 12)
            .count();
        assert!(cheap <= 1, "{cheap} of 16 random keys had 12 bits of work");
    }

    #[test]
    fn a_key_without_the_work_is_refused_with_a_sentence() {
        let dir = tempfile::tempdir().unwrap();
        let weak = loop {
            let key = NodeKey::generate();
            if node_id_work(&key.node_id()) < 4 {
                break key;
            }
        };
        let encoded = weak.keypair().to_protobuf_encoding().unwrap();
        write_private(&dir.path().join(NodeKey::FILE), &encoded).unwrap();
        let error = NodeKey::load_or_create_with_work(dir.path(), 4).unwrap_err();
        assert!(error.to_string().contains("bits of work"), "{error}");
        let fresh = tempfile::tempdir().unwrap();
        let key = NodeKey::load_or_create_with_work(fresh.path(), 4).unwrap();
        assert!(node_id_work(&key.node_id()) >= 4);
        let again = NodeKey::load_or_create_with_work(fresh.path(), 4).unwrap();
        assert_eq!(again.node_id(), key.node_id());
    }

    #[test]
    fn node_certificates_verify_only_for_their_ca_node_and_time() {
        let ca = Keypair::generate_ed25519();
        let node = NodeKey::generate().node_id();
        let certificate = NodeCertificate::issue(&ca, node, 2_000).unwrap();
        let text = certificate.to_text();
        let read = NodeCertificate::from_text(&format!(" {text}\n")).unwrap();
        assert_eq!(read, certificate);
        assert!(read.verify(&ca.public(), &node, 1_000).is_ok());
        let other_ca = Keypair::generate_ed25519().public();
        let other_node = NodeKey::generate().node_id();
        for (ca_key, peer, now, why) in [
            (&other_ca, &node, 1_000, "not signed by"),
            (&ca.public(), &other_node, 1_000, "another Node-ID"),
            (&ca.public(), &node, 2_000, "expired"),
        ] {
            let error = read.verify(ca_key, peer, now).unwrap_err().to_string();
            assert!(error.contains(why), "{error}");
        }
        let mut forged = certificate.clone();
        forged.expires_ms += 1;
        assert!(forged.verify(&ca.public(), &node, 1_000).is_err());
        for bad in [
            "",
            "p2psip-node-cert-v1:zz",
            "p2psip-node-cert-v1:00",
            &text[..text.len() - 3],
        ] {
            assert!(NodeCertificate::from_text(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn public_keys_read_back_from_hex() {
        let key = UserKey::generate().public();
        let text = public_key_to_hex(&key);
        assert_eq!(public_key_from_hex(&format!(" {text}\n")).unwrap(), key);
        assert_eq!(from_hex("0aFF"), Some(vec![10, 255]));
        for bad in ["", "0", "zz", "0a0b", &text[..text.len() - 2]] {
            assert!(public_key_from_hex(bad).is_err(), "{bad}");
        }
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
