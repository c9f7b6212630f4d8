//! What the overlay stores: kinds, signed entries, their values, and how replicas merge them.
//!
//! # Model
//!
//! A resource ([`ResourceId`]) holds, per [`Kind`], a dictionary of entries
//! ([`Entries`]): dictionary key -> [`StoredData`].
//!
//! - [`Kind::SIP_REGISTRATION`]: one entry per registered device, keyed by the device node's
//!   Node-ID (`PeerId` bytes); the value is a [`RegistrationValue`]: the node to route to, the
//!   contacts, and the [`Delegation`] by which the AOR's user key lets that node publish.
//! - [`Kind::AOR_CLAIM`]: one entry, under the empty key; the value is an [`AorClaim`] that
//!   binds the AOR to a user key (optionally certified by the overlay's enrollment CA).
//!
//! # Signatures
//!
//! Every entry is signed by its `signer` (a libp2p public key in protobuf encoding; ed25519 in
//! practice). The signature covers [`StoredData::signed_bytes`], a canonical encoding that does
//! not depend on the wire codec, so a change of codec never invalidates a signature. All
//! integers are big-endian; `bytes(x)` is `u32 length || x`:
//!
//! ```text
//! entry:       "p2psip stored data v1\0" || resource (32) || kind u32 || bytes(key)
//!              || storage_time u64 || lifetime u32 || generation u64 || bytes(value)
//! delegation:  "p2psip delegation v1\0" || resource (32) || bytes(user_key)
//!              || bytes(device_key) || expires_ms u64
//! certificate: "p2psip aor certificate v1\0" || bytes(normalized aor) || bytes(user_key)
//!              || expires_ms u64
//! ```
//!
//! The tags keep one kind of signature from ever being taken for another; the resource in
//! the entry and the delegation keeps a signature from being replayed under another AOR.
//!
//! # Merging
//!
//! Replicas converge with [`merge`]: entry by entry, the entry that wins [`precedence`] (higher
//! generation, then later storage time, then a fixed order of the remaining fields so that ties
//! are decided the same everywhere) is kept, and expired entries are ignored. An expired
//! entry hides nothing: to withdraw a registration before it expires, store a newer entry with
//! no contacts whose lifetime outlasts the one it replaces. `merge` judges age only: entries
//! must have passed [`crate::access::check_store`] before they are merged.
//!
//! One exception makes `merge` first-come-first-served across signers: a live entry is never
//! replaced by an entry of **another signer**, whatever its generation (the held side, the
//! first argument and the earlier entries of each side, wins). Only AOR-CLAIM entries can
//! differ in signer for one key (a registration's key is its signer's Node-ID), and without
//! this rule a claim by another key, validly signed with a higher generation, would take over
//! the AOR wherever it was merged. Hence the algebra: `merge` is idempotent always, and
//! commutative and associative over entries whose keys each have one signer (every
//! SIP-REGISTRATION set, and claims of one owner); between two live claims by different keys
//! it is deliberately not commutative, since which one came first is history, not a property
//! of the entries. A node that reads an AOR does not merge claims: it takes the claim that a
//! majority of the replica set holds ([`crate::quorum`]).

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;

use libp2p::PeerId;
use libp2p::identity::{Keypair, PublicKey};
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::id::{ResourceId, normalize_aor};
use crate::identity::{from_hex, to_hex};
use crate::message::{decode_value, encode_value};

/// A kind of stored data (RELOAD's Kind-ID).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Kind(pub u32);

impl Kind {
    /// Registrations of the devices of an AOR (RFC 7904's SIP-REGISTRATION): a dictionary keyed
    /// by Node-ID, values [`RegistrationValue`].
    pub const SIP_REGISTRATION: Kind = Kind(1);
    /// The claim that binds an AOR to a user key: a single entry under the empty key, value
    /// [`AorClaim`].
    pub const AOR_CLAIM: Kind = Kind(2);
    /// Every kind this version knows.
    pub const KNOWN: [Kind; 2] = [Kind::SIP_REGISTRATION, Kind::AOR_CLAIM];

    /// Whether this version knows how to check and store the kind.
    pub fn is_known(self) -> bool {
        Kind::KNOWN.contains(&self)
    }

    /// The kind's name, for known kinds.
    pub fn name(self) -> Option<&'static str> {
        match self {
            Kind::SIP_REGISTRATION => Some("SIP-REGISTRATION"),
            Kind::AOR_CLAIM => Some("AOR-CLAIM"),
            _ => None,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "{}", self.0),
        }
    }
}

impl fmt::Debug for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Kind({self})")
    }
}

/// Where an entry lives: part of what its signature covers.
#[derive(Debug, Clone, Copy)]
pub struct Slot<'a> {
    /// The resource.
    pub resource: &'a ResourceId,
    /// The kind.
    pub kind: Kind,
    /// The dictionary key (the device's Node-ID bytes for SIP-REGISTRATION, empty for
    /// AOR-CLAIM).
    pub key: &'a [u8],
}

/// One signed entry, as stored and as carried in Store and Fetch.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StoredData {
    /// When the signer made the entry, in ms since the Unix epoch.
    pub storage_time: u64,
    /// How long the entry lives after `storage_time`, in seconds.
    pub lifetime: u32,
    /// Increases with every update of the entry; a store must offer a higher one.
    pub generation: u64,
    /// The kind's value, encoded (e.g. [`RegistrationValue::encode`]).
    pub value: Vec<u8>,
    /// The signer's public key, protobuf-encoded (libp2p's `PublicKey::encode_protobuf`).
    pub signer: Vec<u8>,
    /// The signer's signature over [`StoredData::signed_bytes`].
    pub signature: Vec<u8>,
}

/// An entry without its value and signature: what Stat answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMeta {
    /// As in [`StoredData::storage_time`].
    pub storage_time: u64,
    /// As in [`StoredData::lifetime`].
    pub lifetime: u32,
    /// As in [`StoredData::generation`].
    pub generation: u64,
    /// The value's length in bytes.
    pub value_len: u64,
    /// blake3 of the value.
    pub value_hash: [u8; 32],
}

/// The entries of one resource and kind, by dictionary key.
pub type Entries = BTreeMap<Vec<u8>, StoredData>;

impl StoredData {
    /// An unsigned entry; [`StoredData::sign`] signs it.
    pub fn new(storage_time: u64, lifetime: u32, generation: u64, value: Vec<u8>) -> StoredData {
        StoredData {
            storage_time,
            lifetime,
            generation,
            value,
            signer: Vec::new(),
            signature: Vec::new(),
        }
    }

    /// Signs the entry for `slot` with `signer`, setting `signer` and `signature`.
    pub fn sign(mut self, signer: &Keypair, slot: &Slot<'_>) -> Result<StoredData, Error> {
        self.signer = signer.public().encode_protobuf();
        self.signature = sign(signer, &self.signed_bytes(slot))?;
        Ok(self)
    }

    /// The canonical bytes the signature covers (see the [module docs](self)).
    pub fn signed_bytes(&self, slot: &Slot<'_>) -> Vec<u8> {
        let mut out = Canonical::new(b"p2psip stored data v1\0");
        out.raw(slot.resource.as_bytes());
        out.u32(slot.kind.0);
        out.bytes(slot.key);
        out.u64(self.storage_time);
        out.u32(self.lifetime);
        out.u64(self.generation);
        out.bytes(&self.value);
        out.0
    }

    /// Checks the signature for `slot`; gives the signer's key when it verifies, and
    /// [`Error::Forbidden`] ("bad signature") when it does not.
    pub fn verify(&self, slot: &Slot<'_>) -> Result<PublicKey, Error> {
        let signer = self.signer_key()?;
        if signer.verify(&self.signed_bytes(slot), &self.signature) {
            Ok(signer)
        } else {
            Err(Error::forbidden("bad signature"))
        }
    }

    /// The signer's public key ([`Error::Forbidden`] when it cannot be decoded).
    pub fn signer_key(&self) -> Result<PublicKey, Error> {
        PublicKey::try_decode_protobuf(&self.signer)
            .map_err(|_| Error::forbidden("bad signature: the signer's key cannot be decoded"))
    }

    /// When the entry expires, in ms since the Unix epoch.
    pub fn expires_at_ms(&self) -> u64 {
        self.storage_time
            .saturating_add(u64::from(self.lifetime).saturating_mul(1000))
    }

    /// Whether the entry has expired at `now_ms`.
    pub fn is_expired(&self, now_ms: u64) -> bool {
        now_ms >= self.expires_at_ms()
    }

    /// The entry without its value and signature.
    pub fn meta(&self) -> StoredMeta {
        StoredMeta {
            storage_time: self.storage_time,
            lifetime: self.lifetime,
            generation: self.generation,
            value_len: self.value.len() as u64,
            value_hash: *blake3::hash(&self.value).as_bytes(),
        }
    }
}

/// Which of two entries for one key wins: `Greater` when `a` does. Higher generation first,
/// then later storage time, then (to decide ties the same on every replica) longer lifetime
/// and the byte order of value, signer and signature. Equal only for identical entries.
pub fn precedence(a: &StoredData, b: &StoredData) -> Ordering {
    rank(a).cmp(&rank(b))
}

fn rank(d: &StoredData) -> (u64, u64, u32, &[u8], &[u8], &[u8]) {
    (
        d.generation,
        d.storage_time,
        d.lifetime,
        &d.value,
        &d.signer,
        &d.signature,
    )
}

/// Merges two sets of entries of one resource and kind: for each key, the live entry that wins
/// [`precedence`] among the entries of the signer of the first live entry seen for the key
/// (`existing` first, then `incoming`); expired entries are dropped, and a live entry is never
/// replaced by one of another signer (see the [module docs](self)). Idempotent; commutative
/// and associative when each key has entries of one signer. A key repeated within one side is
/// merged the same way.
pub fn merge(
    existing: impl IntoIterator<Item = (Vec<u8>, StoredData)>,
    incoming: impl IntoIterator<Item = (Vec<u8>, StoredData)>,
    now_ms: u64,
) -> Entries {
    let mut merged = Entries::new();
    for (key, data) in existing.into_iter().chain(incoming) {
        if data.is_expired(now_ms) {
            continue;
        }
        match merged.get(&key) {
            Some(held) if held.signer != data.signer => {}
            Some(held) if precedence(held, &data) != Ordering::Less => {}
            _ => {
                merged.insert(key, data);
            }
        }
    }
    merged
}

/// One contact of a registered device, as its REGISTER gave it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    /// The contact URI, e.g. `sip:bob@192.0.2.4:5062;transport=tcp`.
    pub uri: String,
    /// The q-value in thousandths (`q=0.5` is 500), when given.
    pub q: Option<u16>,
}

/// The value of a SIP-REGISTRATION entry: where one device of the AOR can be reached.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrationValue {
    /// The Node-ID (`PeerId` bytes) of the node the device is registered at: where Route
    /// messages for the AOR go. It is the node that signs the entry.
    pub destination: Vec<u8>,
    /// The device's contacts, as registered at that node.
    pub contacts: Vec<Contact>,
    /// The AOR's user key's permission for that node to publish.
    pub delegation: Delegation,
}

/// A user key's permission for a device (node) key to publish registrations under one AOR
/// until `expires_ms`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delegation {
    /// The user's public key, protobuf-encoded.
    pub user_key: Vec<u8>,
    /// The device's (node's) public key, protobuf-encoded.
    pub device_key: Vec<u8>,
    /// When the permission ends, in ms since the Unix epoch.
    pub expires_ms: u64,
    /// The user key's signature over [`Delegation::signed_bytes`].
    pub signature: Vec<u8>,
}

/// The tag of the text form of a certified [`AorClaim`].
const AOR_CERTIFICATE_TEXT_TAG: &str = "p2psip-aor-cert-v1:";

/// The value of an AOR-CLAIM entry: the AOR belongs to `user_key` until `expires_ms`
/// (and while the entry is refreshed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AorClaim {
    /// The AOR, normalized ([`normalize_aor`]).
    pub aor: String,
    /// The claiming user's public key, protobuf-encoded; it signs the claim's entry.
    pub user_key: Vec<u8>,
    /// When the claim ends, in ms since the Unix epoch (bounded by the certificate's
    /// validity when a CA certifies it).
    pub expires_ms: u64,
    /// The enrollment CA's signature over [`AorClaim::certificate_bytes`], in overlays that
    /// have one.
    pub ca_signature: Option<Vec<u8>>,
}

impl RegistrationValue {
    /// The value's bytes, for [`StoredData::value`].
    pub fn encode(&self) -> Vec<u8> {
        encode_value(self)
    }

    /// Reads a value ([`Error::InvalidMessage`] when it does not decode).
    pub fn decode(bytes: &[u8]) -> Result<RegistrationValue, Error> {
        decode_value(bytes, "SIP-REGISTRATION value")
    }

    /// The destination as a `PeerId`.
    pub fn destination_id(&self) -> Result<PeerId, Error> {
        PeerId::from_bytes(&self.destination)
            .map_err(|_| Error::invalid("the registration's destination is not a Node-ID"))
    }

    /// A signed entry for this value, made by `device` at `now_ms`: the dictionary key (the
    /// device's Node-ID bytes) and the entry.
    pub fn entry(
        &self,
        device: &Keypair,
        resource: &ResourceId,
        now_ms: u64,
        lifetime_s: u32,
        generation: u64,
    ) -> Result<(Vec<u8>, StoredData), Error> {
        let key = device.public().to_peer_id().to_bytes();
        let slot = Slot {
            resource,
            kind: Kind::SIP_REGISTRATION,
            key: &key,
        };
        let data =
            StoredData::new(now_ms, lifetime_s, generation, self.encode()).sign(device, &slot)?;
        Ok((key, data))
    }
}

impl Delegation {
    /// `user` lets `device` publish registrations under `resource` until `expires_ms`.
    pub fn sign(
        user: &Keypair,
        resource: &ResourceId,
        device: &PublicKey,
        expires_ms: u64,
    ) -> Result<Delegation, Error> {
        let mut delegation = Delegation {
            user_key: user.public().encode_protobuf(),
            device_key: device.encode_protobuf(),
            expires_ms,
            signature: Vec::new(),
        };
        delegation.signature = sign(user, &delegation.signed_bytes(resource))?;
        Ok(delegation)
    }

    /// The canonical bytes the user key signs (see the [module docs](self)).
    pub fn signed_bytes(&self, resource: &ResourceId) -> Vec<u8> {
        let mut out = Canonical::new(b"p2psip delegation v1\0");
        out.raw(resource.as_bytes());
        out.bytes(&self.user_key);
        out.bytes(&self.device_key);
        out.u64(self.expires_ms);
        out.0
    }

    /// Checks the user key's signature for `resource` and the expiry; gives the user key.
    pub fn verify(&self, resource: &ResourceId, now_ms: u64) -> Result<PublicKey, Error> {
        let user = PublicKey::try_decode_protobuf(&self.user_key)
            .map_err(|_| Error::forbidden("the delegation's user key cannot be decoded"))?;
        if !user.verify(&self.signed_bytes(resource), &self.signature) {
            return Err(Error::forbidden(
                "bad signature on the delegation from the user key",
            ));
        }
        if now_ms >= self.expires_ms {
            return Err(Error::Expired {
                what: "the delegation",
                expired_at_ms: self.expires_ms,
                now_ms,
            });
        }
        Ok(user)
    }
}

impl AorClaim {
    /// A claim of `aor` (normalized here) by `user_key` until `expires_ms`, without a
    /// certificate.
    pub fn new(aor: &str, user_key: &PublicKey, expires_ms: u64) -> Result<AorClaim, Error> {
        Ok(AorClaim {
            aor: normalize_aor(aor)?,
            user_key: user_key.encode_protobuf(),
            expires_ms,
            ca_signature: None,
        })
    }

    /// The claim certified by the enrollment CA `ca`.
    pub fn certified(mut self, ca: &Keypair) -> Result<AorClaim, Error> {
        self.ca_signature = Some(sign(ca, &self.certificate_bytes())?);
        Ok(self)
    }

    /// The canonical bytes the CA signs (see the [module docs](self)).
    pub fn certificate_bytes(&self) -> Vec<u8> {
        let mut out = Canonical::new(b"p2psip aor certificate v1\0");
        out.bytes(self.aor.as_bytes());
        out.bytes(&self.user_key);
        out.u64(self.expires_ms);
        out.0
    }

    /// The certified claim as one line of text, `p2psip-aor-cert-v1:<hex>` (the file a CA
    /// hands a user, named by `overlay.aor_certificates` in a node's config).
    pub fn to_text(&self) -> String {
        format!("{AOR_CERTIFICATE_TEXT_TAG}{}", to_hex(&self.encode()))
    }

    /// Reads [`AorClaim::to_text`]'s form (surrounding white space allowed); an
    /// [`Error::InvalidMessage`] says what is wrong. The claim must carry a CA signature; it
    /// is not verified here.
    pub fn from_text(text: &str) -> Result<AorClaim, Error> {
        let bad = |why: &str| Error::invalid(format!("not an AOR certificate: {why}"));
        let hex = text
            .trim()
            .strip_prefix(AOR_CERTIFICATE_TEXT_TAG)
            .ok_or_else(|| bad("it does not start with p2psip-aor-cert-v1:"))?;
        if hex.len() > 4096 {
            return Err(bad("it is too long"));
        }
        let bytes = from_hex(hex).ok_or_else(|| bad("it is not hexadecimal"))?;
        let claim = AorClaim::decode(&bytes).map_err(|_| bad("it does not decode"))?;
        if claim.ca_signature.is_none() {
            return Err(bad("it carries no CA signature"));
        }
        Ok(claim)
    }

    /// Whether the claim carries a valid certificate from `ca`.
    pub fn verify_certificate(&self, ca: &PublicKey) -> bool {
        self.ca_signature
            .as_deref()
            .is_some_and(|signature| ca.verify(&self.certificate_bytes(), signature))
    }

    /// The resource the claim is about: `blake3` of the claimed AOR, normalized.
    pub fn resource(&self) -> Result<ResourceId, Error> {
        ResourceId::for_aor(&self.aor)
    }

    /// Whether the claim itself is still valid at `now_ms` (its entry may expire sooner).
    pub fn is_live(&self, now_ms: u64) -> bool {
        now_ms < self.expires_ms
    }

    /// The value's bytes, for [`StoredData::value`].
    pub fn encode(&self) -> Vec<u8> {
        encode_value(self)
    }

    /// Reads a value ([`Error::InvalidMessage`] when it does not decode).
    pub fn decode(bytes: &[u8]) -> Result<AorClaim, Error> {
        decode_value(bytes, "AOR-CLAIM value")
    }

    /// A signed entry for this claim, made by `user` (whose key the claim names) at `now_ms`:
    /// the dictionary key (empty) and the entry.
    pub fn entry(
        &self,
        user: &Keypair,
        now_ms: u64,
        lifetime_s: u32,
        generation: u64,
    ) -> Result<(Vec<u8>, StoredData), Error> {
        let resource = self.resource()?;
        let slot = Slot {
            resource: &resource,
            kind: Kind::AOR_CLAIM,
            key: &[],
        };
        let data =
            StoredData::new(now_ms, lifetime_s, generation, self.encode()).sign(user, &slot)?;
        Ok((Vec::new(), data))
    }
}

fn sign(key: &Keypair, message: &[u8]) -> Result<Vec<u8>, Error> {
    key.sign(message).map_err(|error| Error::Key {
        what: key.public().to_peer_id().to_string(),
        reason: error.to_string(),
    })
}

/// The canonical signed encodings: a tag, then fixed-width big-endian integers and
/// length-prefixed byte strings.
struct Canonical(Vec<u8>);

impl Canonical {
    fn new(tag: &[u8]) -> Canonical {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(tag);
        Canonical(out)
    }

    fn raw(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
    }

    fn u32(&mut self, value: u32) {
        self.0.extend_from_slice(&value.to_be_bytes());
    }

    fn u64(&mut self, value: u64) {
        self.0.extend_from_slice(&value.to_be_bytes());
    }

    /// Length-prefixed; values longer than `u32::MAX` cannot reach here (message limits).
    fn bytes(&mut self, bytes: &[u8]) {
        self.u32(u32::try_from(bytes.len()).unwrap_or(u32::MAX));
        self.0.extend_from_slice(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(generation: u64, storage_time: u64, lifetime: u32) -> StoredData {
        StoredData::new(storage_time, lifetime, generation, vec![1, 2, 3])
    }

    #[test]
    fn aor_certificates_read_back_and_need_a_ca_signature() {
        let ca = Keypair::generate_ed25519();
        let user = Keypair::generate_ed25519();
        let claim = AorClaim::new("sip:Alice@Example.org", &user.public(), 5_000).unwrap();
        let certified = claim.clone().certified(&ca).unwrap();
        let text = certified.to_text();
        let read = AorClaim::from_text(&format!("{text}\n")).unwrap();
        assert_eq!(read, certified);
        assert_eq!(read.aor, normalize_aor("sip:Alice@example.ORG").unwrap());
        assert!(read.verify_certificate(&ca.public()));
        assert!(!read.verify_certificate(&user.public()));
        let error = AorClaim::from_text(&claim.to_text())
            .unwrap_err()
            .to_string();
        assert!(error.contains("no CA signature"), "{error}");
        for bad in [
            "",
            "p2psip-aor-cert-v1:zz",
            "p2psip-aor-cert-v1:00",
            &text[..text.len() - 2],
        ] {
            assert!(AorClaim::from_text(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn signatures_cover_the_slot() {
        let key = Keypair::generate_ed25519();
        let resource = ResourceId::for_normalized("bob@example.org");
        let slot = Slot {
            resource: &resource,
            kind: Kind::SIP_REGISTRATION,
            key: b"k",
        };
        let data = entry(1, 1000, 60).sign(&key, &slot).unwrap();
        assert_eq!(data.verify(&slot).unwrap(), key.public());
        let other = ResourceId::for_normalized("eve@example.org");
        for moved in [
            Slot {
                resource: &other,
                ..slot
            },
            Slot {
                kind: Kind::AOR_CLAIM,
                ..slot
            },
            Slot { key: b"x", ..slot },
        ] {
            assert!(matches!(data.verify(&moved), Err(Error::Forbidden { .. })));
        }
    }

    #[test]
    fn precedence_is_generation_then_time() {
        assert_eq!(
            precedence(&entry(2, 0, 60), &entry(1, 9, 60)),
            Ordering::Greater
        );
        assert_eq!(
            precedence(&entry(1, 9, 60), &entry(1, 8, 60)),
            Ordering::Greater
        );
        assert_eq!(
            precedence(&entry(1, 9, 60), &entry(1, 9, 60)),
            Ordering::Equal
        );
    }

    #[test]
    fn expiry_is_storage_time_plus_lifetime() {
        let data = entry(1, 1000, 2);
        assert_eq!(data.expires_at_ms(), 3000);
        assert!(!data.is_expired(2999));
        assert!(data.is_expired(3000));
        assert_eq!(entry(1, u64::MAX, u32::MAX).expires_at_ms(), u64::MAX);
    }

    #[test]
    fn kinds_have_names() {
        assert_eq!(Kind::SIP_REGISTRATION.to_string(), "SIP-REGISTRATION");
        assert_eq!(Kind(77).to_string(), "77");
        assert!(!Kind(77).is_known());
    }
}
