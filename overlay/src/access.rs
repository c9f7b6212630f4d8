//! Who may store what: the checks a storing peer makes before it accepts an entry.
//!
//! [`check_store`] is a plain function of the request, what the peer already holds and its
//! clock. Every peer that stores (replicas included, and a replica taking over data) runs it,
//! so no peer on the way can forge or alter an entry: every entry is signed over its resource,
//! kind, key and content, and only the AOR's owner (or a device it delegated to) can produce
//! a signature that passes.
//!
//! # The rules
//!
//! For every kind, in this order:
//! 1. the kind is known ([`Error::UnknownKind`]);
//! 2. the value, lifetime and storage time are within the kind's [`KindLimits`]
//!    ([`Error::DataTooLarge`]; a storage time further ahead of this peer's clock than
//!    [`AccessPolicy::max_clock_skew_ms`] is an [`Error::InvalidMessage`]), and the entry has
//!    not expired ([`Error::Expired`]);
//! 3. the signature verifies for this resource, kind and key (else [`Error::Forbidden`],
//!    "bad signature");
//! 4. the kind's ownership rules, below ([`Error::Forbidden`] or [`Error::Expired`]);
//! 5. against the entry already held for the key: the very same entry again is accepted (a
//!    replica may receive an entry twice); otherwise the generation must be higher
//!    ([`Error::GenerationTooLow`]) and the storage time not older ([`Error::DataTooOld`]).
//!
//! AOR-CLAIM (one entry, empty key): the value decodes as an [`AorClaim`]; the resource is
//! `blake3` of the claimed AOR; the entry is signed by the claim's user key; the claim has not
//! expired; a self-certifying AOR ([`crate::identity`]) can only be claimed by its own key; in
//! an overlay with an enrollment CA ([`AccessPolicy::enrollment_ca`]) any other AOR needs the
//! CA's signature over (aor, user key, expiry) — the CA, like RELOAD's enrollment server,
//! decides who gets which AOR, and peers only check its signature; a live claim held by another
//! user key cannot be replaced ("AOR is owned by another key") until it expires.
//!
//! SIP-REGISTRATION (one entry per device, keyed by the device's Node-ID): the key is the
//! Node-ID of the signing key; the value decodes as a [`RegistrationValue`] whose destination
//! is that same node; its delegation names the signing key as the device key, is signed by a
//! user key for this resource, and has not expired; and that user key owns the AOR: the
//! resource is the hash of the user key's self-certifying AOR, or the resource's live claim
//! names that user key.

use std::collections::BTreeMap;

use libp2p::PeerId;
use libp2p::identity::PublicKey;

use crate::data::{AorClaim, Kind, RegistrationValue, Slot, StoredData};
use crate::error::Error;
use crate::id::ResourceId;
use crate::identity::{is_self_certified_by, is_self_certifying, self_certifying_aor};

/// Limits on the entries of one kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindLimits {
    /// The largest value of one entry, in bytes.
    pub max_value_bytes: u64,
    /// The most entries one resource may hold for the kind (enforced by
    /// [`crate::store::Store`], which sees all of the resource's entries).
    pub max_entries: u64,
    /// The longest lifetime of an entry, in seconds.
    pub max_lifetime_s: u32,
}

/// What a storing peer accepts.
#[derive(Debug, Clone)]
pub struct AccessPolicy {
    /// Limits per kind; a known kind without limits here uses [`KindLimits::default_for`].
    pub limits: BTreeMap<Kind, KindLimits>,
    /// The overlay's enrollment CA: when set, AOR claims (other than self-certifying AORs)
    /// must carry its signature.
    pub enrollment_ca: Option<PublicKey>,
    /// How far ahead of this peer's clock a storage time may be, in ms.
    pub max_clock_skew_ms: u64,
}

impl KindLimits {
    /// The default limits of a kind: a registration value of 4 KiB, 32 devices per AOR and a
    /// day's lifetime; a claim of 2 KiB, one entry and 30 days; 4 KiB, 16 entries and a day
    /// for kinds this version does not know.
    pub fn default_for(kind: Kind) -> KindLimits {
        match kind {
            Kind::SIP_REGISTRATION => KindLimits {
                max_value_bytes: 4096,
                max_entries: 32,
                max_lifetime_s: 86_400,
            },
            Kind::AOR_CLAIM => KindLimits {
                max_value_bytes: 2048,
                max_entries: 1,
                max_lifetime_s: 30 * 86_400,
            },
            _ => KindLimits {
                max_value_bytes: 4096,
                max_entries: 16,
                max_lifetime_s: 86_400,
            },
        }
    }
}

impl Default for AccessPolicy {
    /// Default limits, no enrollment CA, a minute of clock skew.
    fn default() -> AccessPolicy {
        AccessPolicy {
            limits: Kind::KNOWN
                .iter()
                .map(|&kind| (kind, KindLimits::default_for(kind)))
                .collect(),
            enrollment_ca: None,
            max_clock_skew_ms: 60_000,
        }
    }
}

impl AccessPolicy {
    /// The limits of `kind`.
    pub fn limits(&self, kind: Kind) -> KindLimits {
        self.limits
            .get(&kind)
            .copied()
            .unwrap_or_else(|| KindLimits::default_for(kind))
    }

    /// This policy with an enrollment CA.
    pub fn with_enrollment_ca(mut self, ca: PublicKey) -> AccessPolicy {
        self.enrollment_ca = Some(ca);
        self
    }

    /// This policy with other limits for `kind`.
    pub fn with_limits(mut self, kind: Kind, limits: KindLimits) -> AccessPolicy {
        self.limits.insert(kind, limits);
        self
    }
}

/// Whether a peer may store `incoming` under `resource`, `kind`, `key`, given the live entry it
/// holds for that key (`current`) and the resource's live AOR claim (`claim`, the decoded
/// value of its AOR-CLAIM entry). The rules are in the [module docs](self).
#[allow(clippy::too_many_arguments)]
pub fn check_store(
    resource: &ResourceId,
    kind: Kind,
    key: &[u8],
    current: Option<&StoredData>,
    claim: Option<&AorClaim>,
    incoming: &StoredData,
    now_ms: u64,
    policy: &AccessPolicy,
) -> Result<(), Error> {
    if !kind.is_known() {
        return Err(Error::UnknownKind { kind });
    }
    check_limits(
        incoming,
        policy.limits(kind),
        now_ms,
        policy.max_clock_skew_ms,
    )?;
    let signer = incoming.verify(&Slot {
        resource,
        kind,
        key,
    })?;
    match kind {
        Kind::AOR_CLAIM => check_claim(resource, key, claim, incoming, &signer, now_ms, policy)?,
        Kind::SIP_REGISTRATION => {
            check_registration(resource, key, claim, incoming, &signer, now_ms)?
        }
        _ => return Err(Error::UnknownKind { kind }),
    }
    match current {
        Some(current) if current == incoming => Ok(()),
        Some(current) if incoming.generation <= current.generation => {
            Err(Error::GenerationTooLow {
                current: current.generation,
                offered: incoming.generation,
            })
        }
        Some(current) if incoming.storage_time < current.storage_time => Err(Error::DataTooOld {
            current: current.storage_time,
            offered: incoming.storage_time,
        }),
        _ => Ok(()),
    }
}

fn check_limits(
    incoming: &StoredData,
    limits: KindLimits,
    now_ms: u64,
    max_skew_ms: u64,
) -> Result<(), Error> {
    let size = incoming.value.len() as u64;
    if size > limits.max_value_bytes {
        return Err(Error::DataTooLarge {
            what: "the value (bytes)",
            size,
            limit: limits.max_value_bytes,
        });
    }
    if incoming.lifetime > limits.max_lifetime_s {
        return Err(Error::DataTooLarge {
            what: "the lifetime (seconds)",
            size: u64::from(incoming.lifetime),
            limit: u64::from(limits.max_lifetime_s),
        });
    }
    if incoming.storage_time > now_ms.saturating_add(max_skew_ms) {
        return Err(Error::invalid(format!(
            "the storage time is {} ms ahead of this peer's clock; check the signer's clock",
            incoming.storage_time - now_ms
        )));
    }
    if incoming.is_expired(now_ms) {
        return Err(Error::Expired {
            what: "the entry",
            expired_at_ms: incoming.expires_at_ms(),
            now_ms,
        });
    }
    Ok(())
}

fn check_claim(
    resource: &ResourceId,
    key: &[u8],
    held: Option<&AorClaim>,
    incoming: &StoredData,
    signer: &PublicKey,
    now_ms: u64,
    policy: &AccessPolicy,
) -> Result<(), Error> {
    if !key.is_empty() {
        return Err(Error::invalid(
            "an AOR-CLAIM entry is stored under the empty key",
        ));
    }
    let claim = AorClaim::decode(&incoming.value)?;
    if claim.resource()? != *resource {
        return Err(Error::forbidden(
            "the claimed AOR does not hash to this resource",
        ));
    }
    if claim.user_key != incoming.signer {
        return Err(Error::forbidden(
            "the claim is not signed by the user key it names",
        ));
    }
    if !claim.is_live(now_ms) {
        return Err(Error::Expired {
            what: "the AOR claim",
            expired_at_ms: claim.expires_ms,
            now_ms,
        });
    }
    if is_self_certifying(&claim.aor) {
        if !is_self_certified_by(&claim.aor, signer) {
            return Err(Error::forbidden(
                "a self-certifying AOR can only be claimed by its own key",
            ));
        }
    } else if let Some(ca) = &policy.enrollment_ca
        && !claim.verify_certificate(ca)
    {
        return Err(Error::forbidden(
            "the claim has no valid certificate from this overlay's enrollment CA",
        ));
    }
    if let Some(held) = held
        && held.is_live(now_ms)
        && held.user_key != claim.user_key
    {
        return Err(Error::forbidden("AOR is owned by another key"));
    }
    Ok(())
}

fn check_registration(
    resource: &ResourceId,
    key: &[u8],
    claim: Option<&AorClaim>,
    incoming: &StoredData,
    signer: &PublicKey,
    now_ms: u64,
) -> Result<(), Error> {
    let device = signer.to_peer_id();
    if PeerId::from_bytes(key).ok() != Some(device) {
        return Err(Error::forbidden(
            "a registration is stored under the Node-ID of the device that signs it",
        ));
    }
    let value = RegistrationValue::decode(&incoming.value)?;
    if value.destination_id()? != device {
        return Err(Error::forbidden(
            "a registration's destination must be the node that signs it",
        ));
    }
    let delegation = &value.delegation;
    if delegation.device_key != incoming.signer {
        return Err(Error::forbidden(
            "the delegation is for another device key than the signer's",
        ));
    }
    let user = delegation.verify(resource, now_ms)?;
    let self_certified = ResourceId::for_aor(&self_certifying_aor(&user)).ok() == Some(*resource);
    if self_certified {
        return Ok(());
    }
    match claim {
        Some(claim) if claim.is_live(now_ms) && claim.user_key == delegation.user_key => Ok(()),
        Some(claim) if claim.is_live(now_ms) => {
            Err(Error::forbidden("AOR is owned by another key"))
        }
        _ => Err(Error::forbidden(
            "nobody has claimed this AOR; claim it with the user key before registering",
        )),
    }
}
