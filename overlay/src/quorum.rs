//! Reading an AOR from its replicas: every answer checked, the majority decides.
//!
//! A node that looks an AOR up cannot trust any one replica: a replica may lie (answer a
//! validly signed claim of its own key, or forged entries), be stale (miss an update), or be
//! silent. [`decide`] is the sans-IO decision over the answers of the replica set, and
//! [`crate::node::Overlay::fetch_verified`] is the driver that collects them (all `r` members of
//! the replica set, a silent one replaced by the next closest peer).
//!
//! # The rules
//!
//! 1. Every entry of every answer goes through [`check_store`] with the fetching node's own
//!    [`AccessPolicy`] (signature, the kind's limits, expiry, delegation, enrollment CA): what
//!    a storing node would refuse is discarded and reported in [`Verified::rejected`].
//! 2. The claim: each answer votes for the user key of its valid AOR-CLAIM (or for "no
//!    claim"); an answer that holds valid claims of two keys votes for nothing. The key held by
//!    a majority of the replica set (`set / 2 + 1`) wins, and its newest entry is the claim;
//!    when "no claim" has the majority, there is none. Otherwise the lookup fails with
//!    [`NoMajority`] rather than trusting a minority. A self-certifying AOR needs no claim
//!    (only its own key can sign for it): without a majority it is read without one.
//! 3. The registrations: every valid entry of every answer is kept (signatures cannot be
//!    forged, so a registration one replica holds is real even when the others miss it), the
//!    newest generation per device; an entry is valid only under the winning claim's user key
//!    (or the AOR's own key, for a self-certifying AOR). An empty answer hides nothing.
//!
//! So one lying, stale or silent replica out of three changes nothing, and a minority can
//! neither take an AOR over nor hide a device.

use libp2p::PeerId;

use crate::access::{AccessPolicy, check_store};
use crate::data::{self, AorClaim, Entries, Kind, StoredData, precedence};
use crate::id::ResourceId;

/// The most rejected entries [`decide`] reports one by one (the rest are only counted).
pub const MAX_REPORTED: usize = 16;

/// What one replica answered to the two fetches of an AOR.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The replica.
    pub peer: PeerId,
    /// Its AOR-CLAIM entries, as received.
    pub claims: Vec<(Vec<u8>, StoredData)>,
    /// Its SIP-REGISTRATION entries, as received.
    pub registrations: Vec<(Vec<u8>, StoredData)>,
}

/// What a majority of the replica set holds, every entry checked.
#[derive(Debug, Clone, Default)]
pub struct Verified {
    /// The winning claim (its entry and decoded value), when the majority holds one.
    pub claim: Option<(StoredData, AorClaim)>,
    /// The valid registrations, newest generation per device, by dictionary key.
    pub registrations: Entries,
    /// How many replicas answered.
    pub answered: usize,
    /// Entries refused by the checks, with the replica and the reason (the first
    /// [`MAX_REPORTED`]).
    pub rejected: Vec<(PeerId, String)>,
    /// How many entries were refused by the checks in all.
    pub rejected_count: u64,
    /// Replicas whose claim lost the vote (held by a minority).
    pub outvoted: Vec<PeerId>,
}

/// The replicas did not agree: no claim, and no absence of one, is held by a majority.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the replicas of this AOR disagree: {answered} of {set} answered, {needed} must agree, and {votes}; try again later"
)]
pub struct NoMajority {
    /// The size of the replica set.
    pub set: usize,
    /// How many must agree.
    pub needed: usize,
    /// How many answered.
    pub answered: usize,
    /// The votes, in words (e.g. "2 hold no claim, 1 holds a claim of key ...").
    pub votes: String,
}

/// Decides what the replica set of `resource` holds from the `answers` of its members. `set`
/// is the size of the replica set (`r`, or fewer when the overlay knows fewer peers);
/// `self_certifying` says whether the AOR is self-certifying (it then needs no claim). The
/// rules are in the [module docs](self).
pub fn decide(
    resource: &ResourceId,
    self_certifying: bool,
    set: usize,
    answers: &[Answer],
    now_ms: u64,
    policy: &AccessPolicy,
) -> Result<Verified, NoMajority> {
    let set = set.max(1);
    let needed = set / 2 + 1;
    let mut verified = Verified {
        answered: answers.len(),
        ..Verified::default()
    };
    // Replicas mostly hold the same entries: each distinct one is checked once (a signature
    // check is the costly part of a lookup).
    let mut checked = Checked::default();
    // Rule 1 and 2: each answer's valid claim, and its vote.
    let mut votes: Vec<(Vec<u8>, usize, StoredData)> = Vec::new();
    let mut none = 0;
    let mut voters: Vec<(PeerId, Option<Vec<u8>>)> = Vec::new();
    for answer in answers {
        let mut held: Option<StoredData> = None;
        let mut split = false;
        for (key, data) in &answer.claims {
            if let Err(error) = checked.check(Kind::AOR_CLAIM, key, data, |data| {
                check_store(
                    resource,
                    Kind::AOR_CLAIM,
                    key,
                    None,
                    None,
                    data,
                    now_ms,
                    policy,
                )
            }) {
                verified.reject(answer.peer, format!("a claim: {error}"));
                continue;
            }
            match &held {
                Some(other) if other.signer != data.signer => split = true,
                Some(other) if precedence(other, data).is_ge() => {}
                _ => held = Some(data.clone()),
            }
        }
        match held {
            Some(_) if split => {
                verified.reject(answer.peer, "valid claims of two keys in one answer".into());
                voters.push((answer.peer, None));
            }
            Some(data) => {
                voters.push((answer.peer, Some(data.signer.clone())));
                match votes.iter_mut().find(|(key, _, _)| *key == data.signer) {
                    Some((_, count, best)) => {
                        *count += 1;
                        if precedence(&data, best).is_gt() {
                            *best = data;
                        }
                    }
                    None => votes.push((data.signer.clone(), 1, data)),
                }
            }
            None => {
                none += 1;
                voters.push((answer.peer, None));
            }
        }
    }
    let winner = votes.iter().find(|(_, count, _)| *count >= needed);
    let claim = match winner {
        Some((key, _, data)) => {
            verified.outvoted = voters
                .iter()
                .filter(|(_, vote)| vote.as_ref().is_some_and(|vote| vote != key))
                .map(|(peer, _)| *peer)
                .collect();
            AorClaim::decode(&data.value)
                .ok()
                .map(|claim| (data.clone(), claim))
        }
        None if none >= needed || self_certifying => None,
        None => {
            let mut words = vec![format!("{none} hold no claim")];
            words.extend(votes.iter().map(|(key, count, _)| {
                let key = blake3::hash(key).to_hex();
                format!("{count} hold a claim of key {}", &key[..12])
            }));
            return Err(NoMajority {
                set,
                needed,
                answered: answers.len(),
                votes: words.join(", "),
            });
        }
    };
    // Rule 3: every valid registration, newest per device.
    let mut valid = Vec::new();
    for answer in answers {
        for (key, data) in &answer.registrations {
            let held_claim = claim.as_ref().map(|(_, claim)| claim);
            match checked.check(Kind::SIP_REGISTRATION, key, data, |data| {
                check_store(
                    resource,
                    Kind::SIP_REGISTRATION,
                    key,
                    None,
                    held_claim,
                    data,
                    now_ms,
                    policy,
                )
            }) {
                Ok(()) => valid.push((key.clone(), data.clone())),
                Err(error) => verified.reject(answer.peer, format!("a registration: {error}")),
            }
        }
    }
    verified.registrations = data::merge(Vec::new(), valid, now_ms);
    verified.claim = claim;
    Ok(verified)
}

impl Verified {
    fn reject(&mut self, peer: PeerId, reason: String) {
        self.rejected_count += 1;
        if self.rejected.len() < MAX_REPORTED {
            self.rejected.push((peer, reason));
        }
    }
}

/// The verdicts on the distinct entries of one decision, so that an entry several replicas
/// hold is checked once.
#[derive(Default)]
struct Checked<'a> {
    verdicts: Vec<(Kind, &'a [u8], &'a StoredData, Verdict)>,
}

/// A check's outcome: the refusal's sentence.
type Verdict = Result<(), String>;

impl<'a> Checked<'a> {
    fn check(
        &mut self,
        kind: Kind,
        key: &'a [u8],
        data: &'a StoredData,
        check: impl FnOnce(&StoredData) -> Result<(), crate::error::Error>,
    ) -> Result<(), String> {
        if let Some((.., verdict)) = self
            .verdicts
            .iter()
            .find(|(k, held_key, held, _)| *k == kind && *held_key == key && *held == data)
        {
            return verdict.clone();
        }
        let verdict = check(data).map_err(|error| error.to_string());
        self.verdicts.push((kind, key, data, verdict.clone()));
        verdict
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use libp2p::identity::Keypair;

    use super::*;
    use crate::data::{Delegation, RegistrationValue};
    use crate::identity::self_certifying_aor;

    const NOW: u64 = 1_700_000_000_000;
    const AOR: &str = "sip:alice@example.org";

    fn resource() -> ResourceId {
        ResourceId::for_aor(AOR).unwrap()
    }

    fn claim(user: &Keypair, generation: u64) -> (Vec<u8>, StoredData) {
        AorClaim::new(AOR, &user.public(), NOW + 3_600_000)
            .unwrap()
            .entry(user, NOW, 3600, generation)
            .unwrap()
    }

    fn certified_claim(user: &Keypair, ca: &Keypair) -> (Vec<u8>, StoredData) {
        AorClaim::new(AOR, &user.public(), NOW + 3_600_000)
            .unwrap()
            .certified(ca)
            .unwrap()
            .entry(user, NOW, 3600, 1)
            .unwrap()
    }

    fn registration(
        user: &Keypair,
        device: &Keypair,
        resource: &ResourceId,
        generation: u64,
    ) -> (Vec<u8>, StoredData) {
        RegistrationValue {
            destination: device.public().to_peer_id().to_bytes(),
            contacts: Vec::new(),
            delegation: Delegation::sign(user, resource, &device.public(), NOW + 3_600_000)
                .unwrap(),
        }
        .entry(device, resource, NOW, 3600, generation)
        .unwrap()
    }

    fn answer(
        claims: Vec<(Vec<u8>, StoredData)>,
        registrations: Vec<(Vec<u8>, StoredData)>,
    ) -> Answer {
        Answer {
            peer: PeerId::random(),
            claims,
            registrations,
        }
    }

    fn decide3(answers: &[Answer]) -> Result<Verified, NoMajority> {
        decide(
            &resource(),
            false,
            3,
            answers,
            NOW + 1000,
            &AccessPolicy::default(),
        )
    }

    struct World {
        owner: Keypair,
        thief: Keypair,
        phone: Keypair,
        evil: Keypair,
    }

    fn world() -> World {
        World {
            owner: Keypair::generate_ed25519(),
            thief: Keypair::generate_ed25519(),
            phone: Keypair::generate_ed25519(),
            evil: Keypair::generate_ed25519(),
        }
    }

    #[test]
    fn one_lying_replica_neither_takes_the_aor_nor_hides_a_device() {
        let w = world();
        let honest = || {
            answer(
                vec![claim(&w.owner, 1)],
                vec![registration(&w.owner, &w.phone, &resource(), 1)],
            )
        };
        // The liar: a validly signed claim of its own key with a far higher generation, its
        // own device under that claim, and the owner's device left out.
        let liar = answer(
            vec![claim(&w.thief, 1_000_000)],
            vec![registration(&w.thief, &w.evil, &resource(), 1_000_000)],
        );
        let liar_id = liar.peer;
        let verified = decide3(&[honest(), liar, honest()]).unwrap();
        let (_, claim) = verified.claim.unwrap();
        assert_eq!(claim.user_key, w.owner.public().encode_protobuf());
        let devices: Vec<_> = verified.registrations.keys().cloned().collect();
        assert_eq!(devices, vec![w.phone.public().to_peer_id().to_bytes()]);
        assert_eq!(verified.outvoted, vec![liar_id]);
        assert_eq!(verified.rejected_count, 1, "{:?}", verified.rejected);
        assert!(verified.rejected[0].1.contains("owned by another key"));
    }

    #[test]
    fn stale_and_empty_answers_hide_nothing() {
        let w = world();
        let fresh = registration(&w.owner, &w.phone, &resource(), 7);
        let old = registration(&w.owner, &w.phone, &resource(), 3);
        let verified = decide3(&[
            answer(vec![claim(&w.owner, 2)], vec![old]),
            answer(vec![claim(&w.owner, 1)], vec![]),
            answer(vec![], vec![fresh.clone()]),
        ])
        .unwrap();
        let (entry, _) = verified.claim.unwrap();
        assert_eq!(entry.generation, 2, "the newest entry of the winning key");
        assert_eq!(verified.registrations.get(&fresh.0), Some(&fresh.1));
        assert_eq!(verified.rejected_count, 0);
    }

    #[test]
    fn without_a_majority_the_lookup_fails() {
        let w = world();
        let error = decide3(&[
            answer(vec![claim(&w.owner, 1)], vec![]),
            answer(vec![claim(&w.thief, 9)], vec![]),
            answer(vec![], vec![]),
        ])
        .unwrap_err();
        assert_eq!((error.set, error.needed, error.answered), (3, 2, 3));
        assert!(error.to_string().contains("disagree"), "{error}");
        // Two answers of three: both must agree.
        let error = decide3(&[
            answer(vec![claim(&w.owner, 1)], vec![]),
            answer(vec![], vec![]),
        ])
        .unwrap_err();
        assert_eq!(error.answered, 2);
        // A lone answer of a set of three decides nothing either.
        assert!(decide3(&[answer(vec![claim(&w.owner, 1)], vec![])]).is_err());
    }

    #[test]
    fn a_majority_without_a_claim_is_no_claim() {
        let w = world();
        let verified = decide3(&[
            answer(vec![], vec![]),
            answer(
                vec![claim(&w.thief, 1)],
                vec![registration(&w.thief, &w.evil, &resource(), 1)],
            ),
            answer(vec![], vec![]),
        ])
        .unwrap();
        assert!(verified.claim.is_none());
        assert!(verified.registrations.is_empty(), "no claim, no device");
    }

    #[test]
    fn every_check_of_a_storing_node_applies() {
        let w = world();
        let ca = Keypair::generate_ed25519();
        let policy = AccessPolicy::default().with_enrollment_ca(ca.public());
        let certified = certified_claim(&w.owner, &ca);
        // Forged signature, expired entry, an uncertified claim of the thief.
        let mut forged = registration(&w.owner, &w.phone, &resource(), 2);
        forged.1.value.push(0);
        let expired = {
            let (key, data) = registration(&w.owner, &w.evil, &resource(), 1);
            let mut data = data;
            data.lifetime = 1;
            (key, data)
        };
        let answers = [
            answer(vec![certified.clone()], vec![forged]),
            answer(vec![certified.clone(), claim(&w.thief, 5)], vec![expired]),
            answer(vec![claim(&w.thief, 5)], vec![]),
        ];
        let verified = decide(&resource(), false, 3, &answers, NOW + 5000, &policy).unwrap();
        assert_eq!(verified.claim.unwrap().0, certified.1);
        assert!(verified.registrations.is_empty());
        assert_eq!(verified.rejected_count, 4, "{:?}", verified.rejected);
        // Without the CA, the same uncertified claims would have split the vote.
        let open = decide(
            &resource(),
            false,
            3,
            &answers,
            NOW + 5000,
            &AccessPolicy::default(),
        );
        assert!(open.is_err());
    }

    #[test]
    fn a_self_certifying_aor_needs_no_claim_majority() {
        let user = Keypair::generate_ed25519();
        let device = Keypair::generate_ed25519();
        let aor = self_certifying_aor(&user.public());
        let resource = ResourceId::for_aor(&aor).unwrap();
        let own = registration(&user, &device, &resource, 1);
        let claim = AorClaim::new(&aor, &user.public(), NOW + 3_600_000)
            .unwrap()
            .entry(&user, NOW, 3600, 1)
            .unwrap();
        let answers = [
            answer(vec![claim], vec![own.clone()]),
            answer(vec![], vec![]),
        ];
        let verified = decide(
            &resource,
            true,
            3,
            &answers,
            NOW + 1000,
            &AccessPolicy::default(),
        )
        .unwrap();
        assert_eq!(verified.registrations.get(&own.0), Some(&own.1));
    }
}
