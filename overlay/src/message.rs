//! The wire format of the overlay's RELOAD-style protocol (`/p2psip/<overlay>/reload/1`).
//!
//! One message is one [`Envelope`], encoded with bincode 2's standard configuration (varint
//! integers, little-endian) through serde. Its first byte is the version ([`VERSION`], a `u8`
//! is one raw byte), so a peer can name a version it does not speak before decoding the rest.
//! [`decode`] refuses a message over its size limit ([`Error::MessageTooLarge`]), one that does
//! not decode or leaves bytes over ([`Error::InvalidMessage`]), and one of another version
//! ([`Error::InvalidMessage`] naming it); no input makes it panic, and what it holds at once
//! is bounded whatever lengths the message announces: the message's size a few times over,
//! plus up to a MiB per nested sequence (2 MiB measured) that serde reserves for what a
//! sequence announces before reading it (`overlay/tests/fuzz_props.rs`; fuzzed by
//! `overlay/fuzz`).
//!
//! Routing fields: a request starts with `ttl` [`DEFAULT_TTL`] and an empty `via`; each peer
//! that forwards it calls [`Envelope::hop`], which refuses a message whose TTL ran out
//! ([`Error::TtlExceeded`]) or that already went through the peer ([`Error::LoopDetected`]),
//! and otherwise appends the peer to `via` and decrements `ttl`. The answer
//! ([`Envelope::reply`]) carries the request's `via` list and retraces it: each peer on the
//! way back pops the last entry ([`Envelope::next_hop_back`]) and sends the answer there.

use libp2p::PeerId;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::auth::{self, Nonce, RouteId};
use crate::data::{Kind, StoredData, StoredMeta};
use crate::error::{Error, ErrorCode};
use crate::id::ResourceId;

/// The protocol version this code speaks. Version 2 signs Route messages and their answers
/// end to end ([`crate::auth`]); a version-1 peer could not check them, and a version-1
/// Route would be refused anyway, so the version says plainly why two such peers cannot talk.
/// Version 3 adds [`Request::FetchKinds`] and [`Response::FetchedKinds`], and
/// [`Response::Stored`] says whether the storing peer is a replica of the resource: a
/// version-2 peer would fail to decode these answers, and the version says so before it tries.
/// Version 4 adds the membership exchange ([`Request::Members`], [`Response::Members`]).
pub const VERSION: u8 = 4;

/// The TTL of a new request: `log2(N) + 5` covers overlays of a hundred million nodes and
/// stays under RELOAD's initial 100.
pub const DEFAULT_TTL: u8 = 32;

/// The largest TTL a peer forwards; a larger one is lowered to this.
pub const MAX_TTL: u8 = 100;

/// The default size limit of a message, in bytes.
pub const DEFAULT_MAX_MESSAGE: usize = 64 * 1024;

/// The largest size limit [`decode`] accepts; larger limits are lowered to it.
pub const MAX_MESSAGE_LIMIT: usize = 1024 * 1024;

/// One message: the routing header and a request or a response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The protocol version, [`VERSION`].
    pub version: u8,
    /// Matches a response to its request; chosen by the requester.
    pub transaction: u64,
    /// How many more peers may forward the message.
    pub ttl: u8,
    /// The peers (`PeerId` bytes) the message went through, in order.
    pub via: Vec<Vec<u8>>,
    /// The peer (`PeerId` bytes) the message is for, when it is not for the next peer.
    pub destination: Option<Vec<u8>>,
    /// The request or response.
    pub body: Body,
}

/// What a message carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// A request.
    Request(Request),
    /// The answer to a request.
    Response(Response),
}

/// A request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Store one entry of a resource (RELOAD StoreReq, one entry at a time).
    Store {
        /// The resource.
        resource: ResourceId,
        /// The kind.
        kind: Kind,
        /// The dictionary key (empty for single-entry kinds).
        key: Vec<u8>,
        /// The signed entry.
        data: StoredData,
    },
    /// Fetch every live entry of a resource and kind.
    Fetch {
        /// The resource.
        resource: ResourceId,
        /// The kind.
        kind: Kind,
    },
    /// What is stored under a resource and kind, without the values.
    Stat {
        /// The resource.
        resource: ResourceId,
        /// The kind.
        kind: Kind,
    },
    /// An opaque payload (e.g. a SIP message) for the node `destination`, forwarded hop by
    /// hop, signed by its origin ([`crate::auth`]).
    Route {
        /// The destination node (`PeerId` bytes).
        destination: Vec<u8>,
        /// The payload, not read by the peers on the way.
        payload: Vec<u8>,
        /// The node that sent it and signed it (`PeerId` bytes).
        origin: Vec<u8>,
        /// Unique per origin, random: with `origin`, what the destination's replay cache
        /// remembers.
        nonce: Nonce,
        /// When the origin signed it, in ms since the Unix epoch.
        timestamp_ms: u64,
        /// The origin's ed25519 signature ([`crate::auth::sign_request`]).
        signature: Vec<u8>,
    },
    /// Is the peer alive?
    Ping,
    /// Which peers does a message to `destination` go through? (diagnostics)
    PathTrack {
        /// The destination node (`PeerId` bytes).
        destination: Vec<u8>,
    },
    /// Fetch every live entry of a resource for several kinds at once (RELOAD's FetchReq
    /// carries a list of kinds), and ask whether the peer is a replica of the resource: a
    /// lookup in one round trip ([`Response::FetchedKinds`]). At most [`MAX_KINDS`] kinds.
    FetchKinds {
        /// The resource.
        resource: ResourceId,
        /// The kinds, each at most once.
        kinds: Vec<Kind>,
    },
    /// The membership exchange: the members the requester learned lately, and a request for
    /// the peer's ([`Response::Members`]). At most [`MAX_MEMBERS`] members.
    Members {
        /// Members the requester learned lately.
        news: Vec<MemberInfo>,
        /// `Some(after)`: a page of the peer's whole directory after the Node-ID `after`
        /// (`PeerId` bytes; empty for the first page); `None`: the peer's news only.
        page: Option<Vec<u8>>,
    },
}

/// The most members one [`Request::Members`] or [`Response::Members`] carries; fewer when
/// their [`MemberInfo::size`]s would pass the sender's budget (see [`fitting`]).
pub const MAX_MEMBERS: usize = 128;

/// How many of `members`, from the first, fit in `budget` bytes of a message: a page of
/// members carrying certificates (up to 1 KiB each) must still fit in one frame.
pub fn fitting(members: &[MemberInfo], budget: usize) -> usize {
    let mut used = 0;
    members
        .iter()
        .take_while(|member| {
            used += member.size();
            used <= budget
        })
        .count()
}

/// A member of the overlay as the membership exchange passes it on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// Its Node-ID (`PeerId` bytes).
    pub peer: Vec<u8>,
    /// Where it can be dialled (`Multiaddr` bytes).
    pub addrs: Vec<Vec<u8>>,
    /// Its Node-ID certificate as it announces it, in an overlay with an enrollment CA.
    pub certificate: Option<String>,
}

impl MemberInfo {
    /// At least its encoded size, in bytes: its fields and a length prefix for each.
    pub fn size(&self) -> usize {
        let prefixed = |len: usize| len + 10;
        prefixed(self.peer.len())
            + prefixed(0)
            + self
                .addrs
                .iter()
                .map(|addr| prefixed(addr.len()))
                .sum::<usize>()
            + prefixed(self.certificate.as_ref().map_or(0, String::len))
    }
}

/// The entries of one resource and kind, by dictionary key.
pub type Entries = Vec<(Vec<u8>, StoredData)>;

/// The most kinds one [`Request::FetchKinds`] may name.
pub const MAX_KINDS: usize = 8;

/// The answer to a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The entry is stored; its generation now.
    Stored {
        /// The stored generation.
        generation: u64,
        /// Whether the storing node holds itself a member of the resource's replica set (it
        /// takes a store within a margin beyond it): a store that reached the replicas its
        /// sender believed closest is over in one round trip only when each says yes.
        replica: bool,
    },
    /// The live entries of the resource and kind.
    Fetched {
        /// The entries, by dictionary key.
        entries: Vec<(Vec<u8>, StoredData)>,
    },
    /// The live entries of the resource and kind, without their values.
    Stat {
        /// The entries' metadata, by dictionary key.
        entries: Vec<(Vec<u8>, StoredMeta)>,
    },
    /// The destination's answer to a Route request.
    Routed {
        /// The answer's payload.
        payload: Vec<u8>,
        /// The destination's ed25519 signature, binding the answer to the request
        /// ([`crate::auth::sign_answer`]).
        signature: Vec<u8>,
    },
    /// The answer to Ping.
    Pong,
    /// The peers (`PeerId` bytes) a PathTrack request went through, destination last.
    Path {
        /// The hops, in order.
        hops: Vec<Vec<u8>>,
    },
    /// The request failed.
    Error {
        /// The error's code.
        code: ErrorCode,
        /// The error's sentence, for people.
        message: String,
    },
    /// The answer to [`Request::FetchKinds`]: the live entries of each kind asked for, in
    /// the order asked.
    FetchedKinds {
        /// Each kind's entries, by dictionary key.
        kinds: Vec<(Kind, Entries)>,
        /// Whether the peer holds itself a member of the resource's replica set: among the
        /// `r` closest to it of itself and the live peers it knows. A lookup that asked the
        /// `r` peers it believes closest and heard `true` from each needs no other round trip.
        replica: bool,
    },
    /// The answer to [`Request::Members`]: the requested page of the peer's directory, or its
    /// news. At most [`MAX_MEMBERS`].
    Members {
        /// The members.
        members: Vec<MemberInfo>,
        /// Whether more pages follow this one.
        more: bool,
        /// How many of the request's news were new to the peer: a node keeps passing news on
        /// while its exchanges find peers that did not know it.
        fresh: u32,
    },
}

impl Envelope {
    /// A new request to `destination` (or to the next peer), with [`DEFAULT_TTL`] and no
    /// hops yet.
    pub fn request(transaction: u64, destination: Option<&PeerId>, request: Request) -> Envelope {
        Envelope {
            version: VERSION,
            transaction,
            ttl: DEFAULT_TTL,
            via: Vec::new(),
            destination: destination.map(|peer| peer.to_bytes()),
            body: Body::Request(request),
        }
    }

    /// The answer to this message: same transaction, addressed to the first peer of `via`
    /// (the requester), carrying `via` to retrace.
    pub fn reply(&self, response: Response) -> Envelope {
        Envelope {
            version: VERSION,
            transaction: self.transaction,
            ttl: DEFAULT_TTL,
            via: self.via.clone(),
            destination: self.via.first().cloned(),
            body: Body::Response(response),
        }
    }

    /// Records that peer `me` forwards the message: refuses it when its TTL ran out or when it
    /// already went through `me`; otherwise appends `me` to `via` and decrements `ttl` (a TTL
    /// over [`MAX_TTL`] is first lowered to it).
    pub fn hop(&mut self, me: &PeerId) -> Result<(), Error> {
        let me_bytes = me.to_bytes();
        if self.via.contains(&me_bytes) {
            return Err(Error::LoopDetected { peer: *me });
        }
        if self.ttl == 0 {
            return Err(Error::TtlExceeded {
                hops: self.via.len(),
            });
        }
        self.ttl = self.ttl.min(MAX_TTL) - 1;
        self.via.push(me_bytes);
        Ok(())
    }

    /// For an answer on its way back: removes and gives the peer to send it to next, or `None`
    /// when it has arrived. Entries that are not `PeerId`s are an [`Error::InvalidMessage`].
    pub fn next_hop_back(&mut self) -> Result<Option<PeerId>, Error> {
        match self.via.pop() {
            None => Ok(None),
            Some(bytes) => PeerId::from_bytes(&bytes)
                .map(Some)
                .map_err(|_| Error::invalid("a Via entry is not a Node-ID")),
        }
    }

    /// The destination as a `PeerId`, when there is one.
    pub fn destination_id(&self) -> Result<Option<PeerId>, Error> {
        self.destination
            .as_deref()
            .map(PeerId::from_bytes)
            .transpose()
            .map_err(|_| Error::invalid("the destination is not a Node-ID"))
    }
}

impl Request {
    /// A Route request from the owner of `key` to `destination`, signed over `nonce`,
    /// `timestamp_ms` and `payload` ([`crate::auth::sign_request`]).
    pub fn route(
        key: &libp2p::identity::Keypair,
        destination: &PeerId,
        nonce: Nonce,
        timestamp_ms: u64,
        payload: Vec<u8>,
    ) -> Result<Request, Error> {
        let origin = key.public().to_peer_id();
        let id = RouteId {
            origin,
            destination: *destination,
            nonce,
            timestamp_ms,
        };
        let signature = auth::sign_request(key, &id, &payload)?;
        Ok(Request::Route {
            destination: destination.to_bytes(),
            payload,
            origin: origin.to_bytes(),
            nonce,
            timestamp_ms,
            signature,
        })
    }
}

impl Response {
    /// The error response for `error`: its code and its sentence.
    pub fn error(error: &Error) -> Response {
        Response::Error {
            code: error.code(),
            message: error.to_string(),
        }
    }

    /// An error response as an [`Error::Remote`], any other response as itself.
    pub fn into_result(self) -> Result<Response, Error> {
        match self {
            Response::Error { code, message } => Err(Error::from((code, message))),
            other => Ok(other),
        }
    }
}

/// Encodes a message. Our types always encode (every sequence has a known length); check the
/// length against the receiver's limit before sending.
pub fn encode(envelope: &Envelope) -> Vec<u8> {
    encode_value(envelope)
}

/// Decodes a message of at most `limit` bytes (at most [`MAX_MESSAGE_LIMIT`]).
pub fn decode(bytes: &[u8], limit: usize) -> Result<Envelope, Error> {
    let limit = limit.min(MAX_MESSAGE_LIMIT);
    if bytes.len() > limit {
        return Err(Error::MessageTooLarge {
            size: bytes.len(),
            limit,
        });
    }
    match bytes.first() {
        None => return Err(Error::invalid("the message is empty")),
        Some(&version) if version != VERSION => {
            return Err(Error::invalid(format!(
                "protocol version {version}; this peer speaks version {VERSION}"
            )));
        }
        Some(_) => {}
    }
    decode_value(bytes, "message")
}

/// The transaction id of an encoded message of this version, read from its first bytes
/// without decoding the rest (to answer a request refused before it is decoded).
pub fn peek_transaction(bytes: &[u8]) -> Option<u64> {
    match bincode::serde::decode_from_slice::<(u8, u64), _>(bytes, CONFIG) {
        Ok(((VERSION, transaction), _)) => Some(transaction),
        _ => None,
    }
}

/// The bincode configuration of messages and stored values: standard, with a hard limit on
/// what one decode may read.
const CONFIG: bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<MAX_MESSAGE_LIMIT>,
> = bincode::config::standard().with_limit::<MAX_MESSAGE_LIMIT>();

/// Encodes a message or a stored value.
pub(crate) fn encode_value<T: Serialize>(value: &T) -> Vec<u8> {
    match bincode::serde::encode_to_vec(value, CONFIG) {
        Ok(bytes) => bytes,
        // Only unknown-length sequences, borrowed cells and writers fail, none of which our
        // types hold.
        Err(error) => unreachable!("encoding an overlay type failed: {error}"),
    }
}

/// Decodes a message or a stored value that must fill `bytes` exactly.
pub(crate) fn decode_value<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, Error> {
    match bincode::serde::decode_from_slice::<T, _>(bytes, CONFIG) {
        Ok((value, read)) if read == bytes.len() => Ok(value),
        Ok((_, read)) => Err(Error::invalid(format!(
            "{} bytes follow the {what}",
            bytes.len() - read
        ))),
        Err(bincode::error::DecodeError::LimitExceeded) => Err(Error::MessageTooLarge {
            size: bytes.len(),
            limit: MAX_MESSAGE_LIMIT,
        }),
        Err(error) => Err(Error::invalid(format!(
            "the {what} does not decode: {error}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_that_fit_a_budget_fit_a_message_of_that_size() {
        let member = MemberInfo {
            peer: PeerId::random().to_bytes(),
            addrs: vec![vec![0xab; 60]; 4],
            certificate: Some("c".repeat(1024)),
        };
        let members = vec![member; MAX_MEMBERS];
        let budget = DEFAULT_MAX_MESSAGE / 2;
        let fit = fitting(&members, budget);
        assert!(fit > 0 && fit < MAX_MEMBERS, "{fit}");
        let envelope = Envelope::request(1, None, Request::Ping).reply(Response::Members {
            members: members[..fit].to_vec(),
            more: true,
            fresh: 0,
        });
        let encoded = encode(&envelope);
        assert!(encoded.len() <= budget, "{} > {budget}", encoded.len());
        assert!(decode(&encoded, DEFAULT_MAX_MESSAGE).is_ok());
    }

    #[test]
    fn hop_counts_down_and_detects_loops() {
        let (a, b) = (PeerId::random(), PeerId::random());
        let mut message = Envelope::request(7, Some(&b), Request::Ping);
        message.ttl = 2;
        message.hop(&a).unwrap();
        assert_eq!((message.ttl, message.via.len()), (1, 1));
        assert!(matches!(message.hop(&a), Err(Error::LoopDetected { peer }) if peer == a));
        message.hop(&b).unwrap();
        let c = PeerId::random();
        assert!(matches!(
            message.hop(&c),
            Err(Error::TtlExceeded { hops: 2 })
        ));
    }

    #[test]
    fn replies_retrace_the_via_list() {
        let (a, b) = (PeerId::random(), PeerId::random());
        let mut request = Envelope::request(9, None, Request::Ping);
        request.hop(&a).unwrap();
        request.hop(&b).unwrap();
        let mut reply = request.reply(Response::Pong);
        assert_eq!(reply.transaction, 9);
        assert_eq!(reply.destination_id().unwrap(), Some(a));
        assert_eq!(reply.next_hop_back().unwrap(), Some(b));
        assert_eq!(reply.next_hop_back().unwrap(), Some(a));
        assert_eq!(reply.next_hop_back().unwrap(), None);
    }

    #[test]
    fn error_responses_become_remote_errors() {
        let refused = Response::error(&Error::forbidden("bad signature"));
        let error = refused.into_result().unwrap_err();
        assert_eq!(error.code(), ErrorCode::Forbidden);
        assert!(Response::Pong.into_result().is_ok());
    }
}
