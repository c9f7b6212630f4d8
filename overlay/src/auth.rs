//! End-to-end authentication of Route messages.
//!
//! A Route message crosses peers that may lie. So that its destination knows for certain who
//! sent it and what they sent, and its origin knows the answer really comes from the
//! destination:
//!
//! - the **origin signs** each Route request with its node key (ed25519; the Node-ID is the
//!   libp2p `PeerId`, which embeds the public key, so the Node-ID alone verifies it):
//!
//!   ```text
//!   "p2psip route request v1" | origin | destination | nonce (16) | timestamp_ms (u64 LE)
//!       | blake3(payload)
//!   ```
//!
//!   (each Node-ID prefixed by its length as a `u16` LE). The destination checks it
//!   ([`verify_request`]) before anything else; the origin the route handler is given is the
//!   one this signature proves, never a Via entry. A payload changed on the way, or an origin
//!   claimed by another node, fails it: [`Error::Forbidden`].
//! - the **destination signs its answer**, binding it to the request:
//!
//!   ```text
//!   "p2psip route answer v1" | origin | destination | nonce | timestamp_ms
//!       | blake3(request payload) | blake3(answer payload)
//!   ```
//!
//!   and the origin refuses an answer whose signature fails ([`verify_answer`]): a peer on
//!   the way cannot fake a delivery or change the answer. (It can still drop the message or
//!   answer with an error: no signature stops a peer from not forwarding.)
//! - **replays** are refused at the destination by a [`ReplayCache`]: a message is fresh when
//!   its timestamp is within a window of the destination's clock ([`Error::Stale`] otherwise)
//!   and its (origin, nonce) was not seen within that window ([`Error::Replayed`]). The cache
//!   holds only messages whose signature verified and is bounded: when full, it forgets the
//!   oldest entry and from then on refuses everything signed at or before it as stale, so a
//!   full cache never lets a replay through.
//!
//! Everything here is a plain function of its inputs (`now_ms` is given); the node calls it.

use std::collections::BTreeSet;

use libp2p::PeerId;
use libp2p::identity::{Keypair, PublicKey};

use crate::error::Error;

/// The length of a Route nonce, in bytes.
pub const NONCE_LEN: usize = 16;

/// The nonce of a Route message: random (from the OS RNG), unique per origin.
pub type Nonce = [u8; NONCE_LEN];

/// The domain tag of what an origin signs.
const REQUEST_TAG: &[u8] = b"p2psip route request v1";
/// The domain tag of what a destination signs.
const ANSWER_TAG: &[u8] = b"p2psip route answer v1";

/// The public key of a Node-ID: ed25519 Node-IDs embed it (an identity multihash of its
/// protobuf encoding). `None` for a Node-ID that does not (a hashed key).
pub fn public_key(node: &PeerId) -> Option<PublicKey> {
    let multihash: &libp2p::multihash::Multihash<64> = node.as_ref();
    if multihash.code() != 0 {
        return None;
    }
    let key = PublicKey::try_decode_protobuf(multihash.digest()).ok()?;
    (key.to_peer_id() == *node).then_some(key)
}

/// What identifies one Route request: who sent it to whom, its nonce and when it was signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteId {
    /// The node that signed the request.
    pub origin: PeerId,
    /// The node it is for.
    pub destination: PeerId,
    /// Its nonce.
    pub nonce: Nonce,
    /// When the origin signed it, in ms since the Unix epoch.
    pub timestamp_ms: u64,
}

impl RouteId {
    fn signed_bytes(&self, tag: &[u8], hashes: &[&[u8]]) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(tag.len() + 2 * 40 + NONCE_LEN + 8 + 64);
        bytes.extend_from_slice(tag);
        for node in [self.origin, self.destination] {
            let node = node.to_bytes();
            bytes.extend_from_slice(&(node.len() as u16).to_le_bytes());
            bytes.extend_from_slice(&node);
        }
        bytes.extend_from_slice(&self.nonce);
        bytes.extend_from_slice(&self.timestamp_ms.to_le_bytes());
        for payload in hashes {
            bytes.extend_from_slice(blake3::hash(payload).as_bytes());
        }
        bytes
    }
}

/// The origin's signature of a Route request (`key` must be the origin's node key).
pub fn sign_request(key: &Keypair, id: &RouteId, payload: &[u8]) -> Result<Vec<u8>, Error> {
    sign(key, &id.signed_bytes(REQUEST_TAG, &[payload]))
}

/// Checks the origin's signature of a Route request: [`Error::Forbidden`] when it fails (a
/// forged origin or a payload changed on the way).
pub fn verify_request(id: &RouteId, payload: &[u8], signature: &[u8]) -> Result<(), Error> {
    let key = public_key(&id.origin).ok_or_else(|| {
        Error::forbidden(format!(
            "the origin {} of the Route message is not an ed25519 Node-ID",
            id.origin
        ))
    })?;
    if key.verify(&id.signed_bytes(REQUEST_TAG, &[payload]), signature) {
        Ok(())
    } else {
        Err(Error::forbidden(format!(
            "the Route message's signature does not verify with the key of its origin {}: \
             a forged origin or a payload changed on the way",
            id.origin
        )))
    }
}

/// The destination's signature of its answer to a Route request (`key` must be the
/// destination's node key).
pub fn sign_answer(
    key: &Keypair,
    id: &RouteId,
    request: &[u8],
    answer: &[u8],
) -> Result<Vec<u8>, Error> {
    sign(key, &id.signed_bytes(ANSWER_TAG, &[request, answer]))
}

/// Checks the destination's signature of an answer: [`Error::Forbidden`] when it fails (a
/// peer on the way faked the delivery or changed the answer).
pub fn verify_answer(
    id: &RouteId,
    request: &[u8],
    answer: &[u8],
    signature: &[u8],
) -> Result<(), Error> {
    let valid = public_key(&id.destination)
        .is_some_and(|key| key.verify(&id.signed_bytes(ANSWER_TAG, &[request, answer]), signature));
    if valid {
        Ok(())
    } else {
        Err(Error::forbidden(format!(
            "the answer to the Route message is not signed by its destination {}: a node on \
             the path faked the delivery or changed the answer",
            id.destination
        )))
    }
}

fn sign(key: &Keypair, bytes: &[u8]) -> Result<Vec<u8>, Error> {
    key.sign(bytes).map_err(|error| Error::Key {
        what: "the node key".into(),
        reason: error.to_string(),
    })
}

/// The Route messages a destination delivered recently, to refuse replays. See the
/// [module docs](self).
#[derive(Debug)]
pub struct ReplayCache {
    /// (timestamp, origin, nonce) of the messages delivered within the window.
    seen: BTreeSet<(u64, PeerId, Nonce)>,
    window_ms: u64,
    capacity: usize,
    /// Messages signed at or before this are refused as stale (raised when the cache is full).
    floor_ms: u64,
}

impl ReplayCache {
    /// A cache accepting timestamps within `window_ms` of the clock, remembering at most
    /// `capacity` messages (at least 1).
    pub fn new(window_ms: u64, capacity: usize) -> ReplayCache {
        ReplayCache {
            seen: BTreeSet::new(),
            window_ms,
            capacity: capacity.max(1),
            floor_ms: 0,
        }
    }

    /// Records a message whose signature verified: [`Error::Stale`] when its timestamp is out
    /// of the window (or at or before the floor), [`Error::Replayed`] when it was seen.
    pub fn check(&mut self, id: &RouteId, now_ms: u64) -> Result<(), Error> {
        let oldest = now_ms.saturating_sub(self.window_ms);
        while let Some(first) = self.seen.first()
            && first.0 < oldest
        {
            self.seen.pop_first();
        }
        let ts = id.timestamp_ms;
        if ts < oldest || ts > now_ms.saturating_add(self.window_ms) || ts <= self.floor_ms {
            return Err(Error::Stale {
                timestamp_ms: ts,
                now_ms,
                window_ms: self.window_ms,
                floor_ms: self.floor_ms.max(oldest),
            });
        }
        if !self.seen.insert((ts, id.origin, id.nonce)) {
            return Err(Error::Replayed { origin: id.origin });
        }
        while self.seen.len() > self.capacity {
            if let Some((forgotten, _, _)) = self.seen.pop_first() {
                self.floor_ms = self.floor_ms.max(forgotten);
            }
        }
        Ok(())
    }

    /// How many messages it remembers.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether it remembers none.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    fn id(origin: &Keypair, nonce: u8, timestamp_ms: u64) -> RouteId {
        RouteId {
            origin: origin.public().to_peer_id(),
            destination: Keypair::generate_ed25519().public().to_peer_id(),
            nonce: [nonce; NONCE_LEN],
            timestamp_ms,
        }
    }

    #[test]
    fn a_node_id_gives_its_key() {
        let key = Keypair::generate_ed25519();
        assert_eq!(public_key(&key.public().to_peer_id()), Some(key.public()));
        assert_eq!(public_key(&PeerId::random()), None);
    }

    #[test]
    fn requests_verify_only_unchanged_and_from_their_origin() {
        let origin = Keypair::generate_ed25519();
        let route = id(&origin, 1, 1000);
        let signature = sign_request(&origin, &route, b"INVITE").unwrap();
        verify_request(&route, b"INVITE", &signature).unwrap();
        let changed = verify_request(&route, b"INVITE sdp=evil", &signature).unwrap_err();
        assert_eq!(changed.code(), ErrorCode::Forbidden);
        let other = Keypair::generate_ed25519();
        let forged = sign_request(&other, &route, b"INVITE").unwrap();
        assert!(verify_request(&route, b"INVITE", &forged).is_err());
        let moved = RouteId {
            nonce: [2; NONCE_LEN],
            ..route
        };
        assert!(verify_request(&moved, b"INVITE", &signature).is_err());
    }

    #[test]
    fn answers_verify_only_from_the_destination_and_bound_to_the_request() {
        let origin = Keypair::generate_ed25519();
        let destination = Keypair::generate_ed25519();
        let route = RouteId {
            destination: destination.public().to_peer_id(),
            ..id(&origin, 3, 5)
        };
        let signature = sign_answer(&destination, &route, b"req", b"200 OK").unwrap();
        verify_answer(&route, b"req", b"200 OK", &signature).unwrap();
        assert!(verify_answer(&route, b"req", b"486 Busy", &signature).is_err());
        assert!(verify_answer(&route, b"other", b"200 OK", &signature).is_err());
        let middle = Keypair::generate_ed25519();
        let faked = sign_answer(&middle, &route, b"req", b"200 OK").unwrap();
        assert!(verify_answer(&route, b"req", b"200 OK", &faked).is_err());
    }

    #[test]
    fn replays_and_stale_messages_are_refused() {
        let origin = Keypair::generate_ed25519();
        let mut cache = ReplayCache::new(1000, 100);
        let first = id(&origin, 1, 10_000);
        cache.check(&first, 10_000).unwrap();
        let replay = cache.check(&first, 10_500).unwrap_err();
        assert_eq!(replay.code(), ErrorCode::Replayed);
        // After the window the entry is forgotten, and the message is then stale.
        let stale = cache.check(&first, 11_001).unwrap_err();
        assert_eq!(stale.code(), ErrorCode::Stale);
        assert!(cache.is_empty());
        let future = cache.check(&id(&origin, 2, 20_000), 11_001).unwrap_err();
        assert_eq!(future.code(), ErrorCode::Stale);
    }

    #[test]
    fn a_full_cache_refuses_what_it_forgot_as_stale() {
        let origin = Keypair::generate_ed25519();
        let mut cache = ReplayCache::new(60_000, 2);
        for n in 0..3 {
            cache
                .check(&id(&origin, n, 1000 + u64::from(n)), 1000)
                .unwrap();
        }
        assert_eq!(cache.len(), 2);
        let replay = cache.check(&id(&origin, 0, 1000), 1000).unwrap_err();
        assert_eq!(replay.code(), ErrorCode::Stale);
        cache.check(&id(&origin, 9, 1005), 1005).unwrap();
    }
}
