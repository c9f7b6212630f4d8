//! The one error type of the overlay, and the compact code that carries it on the wire.
//!
//! [`Error`] is what every function of this crate returns. The typed variants follow RELOAD's
//! error codes (RFC 6940 §6.3.3.1): a storing peer that refuses a request answers
//! [`Response::Error`](crate::message::Response::Error) with the [`ErrorCode`] of its error and
//! the error's sentence; the requester turns that answer back into an [`Error::Remote`] whose
//! [`Error::code`] is the same code, so callers branch on the code whichever side failed:
//!
//! ```
//! use p2psip_overlay::error::{Error, ErrorCode};
//!
//! let refused = Error::GenerationTooLow { current: 7, offered: 7 };
//! let (code, message) = (refused.code(), refused.to_string());
//! let received = Error::from((code, message));
//! assert_eq!(received.code(), ErrorCode::GenerationTooLow);
//! assert!(received.to_string().contains("generation 7"));
//! ```

use std::path::PathBuf;

use libp2p::PeerId;
use serde::{Deserialize, Serialize};

use crate::data::Kind;
use crate::id::ResourceId;

/// Why an overlay operation failed.
///
/// Each variant says what went wrong in a sentence a user can act on. The ones a peer can
/// answer over the network map to an [`ErrorCode`] ([`Error::code`]); local failures (files,
/// the store, keys) map to [`ErrorCode::Internal`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request is not allowed: the signer may not write this entry, or a signature does
    /// not verify. Nobody but the owner of an address-of-record can store under it.
    #[error("refused: {reason}")]
    Forbidden {
        /// What rule the request broke, e.g. "AOR is owned by another key".
        reason: String,
    },
    /// Nothing is stored under this resource for this kind (or all of it has expired).
    #[error("nothing is stored under resource {resource} for kind {kind}")]
    NotFound {
        /// The Resource-ID that was asked for.
        resource: ResourceId,
        /// The kind that was asked for.
        kind: Kind,
    },
    /// No answer arrived in time; the peer may have left the overlay. Trying again usually
    /// reaches another replica.
    #[error(
        "no answer to request {transaction} within {after_ms} ms; the peer may have left the overlay, try again"
    )]
    RequestTimeout {
        /// The transaction id of the request.
        transaction: u64,
        /// How long the requester waited, in milliseconds.
        after_ms: u64,
    },
    /// The entry's generation is not higher than the one already stored: an older or replayed
    /// update. Store again with a higher generation.
    #[error(
        "generation {offered} is not higher than the stored generation {current}; store again with a higher generation"
    )]
    GenerationTooLow {
        /// The generation of the entry already stored.
        current: u64,
        /// The generation of the refused entry.
        offered: u64,
    },
    /// Something is larger than this peer accepts: a value, the number of entries of a
    /// resource, a lifetime, or the peer's whole storage.
    #[error("{what} is {size}, over the limit of {limit}")]
    DataTooLarge {
        /// What was measured, with its unit, e.g. "the value (bytes)".
        what: &'static str,
        /// The measured size.
        size: u64,
        /// The limit it exceeds.
        limit: u64,
    },
    /// The entry's storage time is older than the entry already stored (or its clock is
    /// behind); check the clock of the device that signed it.
    #[error(
        "storage time {offered} ms is older than the stored entry's {current} ms; check the signer's clock"
    )]
    DataTooOld {
        /// The storage time of the entry already stored, in ms since the Unix epoch.
        current: u64,
        /// The storage time of the refused entry, in ms since the Unix epoch.
        offered: u64,
    },
    /// The entry, claim or delegation had already expired when it arrived.
    #[error(
        "{what} expired at {expired_at_ms} ms, before it arrived at {now_ms} ms; sign it again"
    )]
    Expired {
        /// What expired: "the entry", "the AOR claim", "the delegation".
        what: &'static str,
        /// When it expired, in ms since the Unix epoch.
        expired_at_ms: u64,
        /// The receiving peer's clock, in ms since the Unix epoch.
        now_ms: u64,
    },
    /// The message went through as many peers as its TTL allowed without reaching its
    /// destination; the overlay may be partitioned or still converging.
    #[error("the message's TTL ran out after {hops} hops without reaching its destination")]
    TtlExceeded {
        /// How many peers the message went through.
        hops: usize,
    },
    /// A message is larger than the receiver accepts.
    #[error("the message is {size} bytes, over the limit of {limit}")]
    MessageTooLarge {
        /// The message's size in bytes.
        size: usize,
        /// The receiver's limit in bytes.
        limit: usize,
    },
    /// The kind is not one this peer knows, so it cannot check or store it.
    #[error("kind {kind} is unknown to this peer")]
    UnknownKind {
        /// The unknown kind.
        kind: Kind,
    },
    /// A message or a stored value could not be decoded, or breaks the protocol's rules.
    #[error("invalid message: {reason}")]
    InvalidMessage {
        /// What is wrong with it.
        reason: String,
    },
    /// A message came back to a peer it already went through (its Via list names the peer).
    #[error("routing loop: the message already went through {peer}")]
    LoopDetected {
        /// The peer that saw the message twice.
        peer: PeerId,
    },
    /// The text is not an address-of-record this overlay can store (see
    /// [`crate::id::normalize_aor`]).
    #[error("{aor:?} is not a usable address-of-record: {reason}")]
    InvalidAor {
        /// The text that was given (at most 200 characters of it).
        aor: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// This node is not among the replicas of the resource as far as it knows (the `replicas`
    /// peers closest to it, this node included): it does not take the store. Store at the
    /// resource's replica set (a lookup of the closest peers finds it).
    #[error(
        "this node is not one of the {replicas} peers closest to resource {resource} that it knows; store at the resource's replicas"
    )]
    NotReplica {
        /// The resource.
        resource: ResourceId,
        /// The replication factor of this node.
        replicas: usize,
    },
    /// A Route message arrived a second time (same origin, same nonce): a replay, refused.
    #[error(
        "a Route message from {origin} with this nonce was already delivered: a replay, refused"
    )]
    Replayed {
        /// The node that signed the message.
        origin: PeerId,
    },
    /// A Route message was signed too long ago (or too far in the future) for the receiver
    /// to tell it from a replay.
    #[error(
        "the Route message was signed at {timestamp_ms} ms, outside this node's window ({now_ms} ms \
         ± {window_ms} ms, nothing older than {floor_ms} ms); check the sender's clock"
    )]
    Stale {
        /// When the origin signed it, in ms since the Unix epoch.
        timestamp_ms: u64,
        /// The receiver's clock, in ms since the Unix epoch.
        now_ms: u64,
        /// The freshness window, in ms.
        window_ms: u64,
        /// The oldest signing time still accepted (raised when the replay cache is full).
        floor_ms: u64,
    },
    /// The peer refused a request because the sender already has too many requests waiting
    /// or sends them too fast; slow down and try again.
    #[error("busy: {reason}; slow down and try again")]
    Busy {
        /// Which limit was reached.
        reason: String,
    },
    /// A remote peer answered with an error; `message` is its sentence.
    #[error("peer answered: {message}")]
    Remote {
        /// The error's code, as sent by the peer.
        code: ErrorCode,
        /// The peer's sentence (at most [`MAX_MESSAGE_LEN`] bytes of it).
        message: String,
    },
    /// A file or directory could not be read or written.
    #[error("cannot use {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The embedded database failed; check the disk and the data directory's permissions.
    #[error("the local store failed: {0}; check the disk and the data directory")]
    Store(#[from] sled::Error),
    /// Data in the local store cannot be decoded; the data directory is damaged or was
    /// written by an incompatible version.
    #[error(
        "the local store holds damaged data ({what}); move the data directory away to start afresh"
    )]
    Corrupt {
        /// What could not be decoded.
        what: String,
    },
    /// A key file cannot be decoded or a key cannot sign.
    #[error("key {what} cannot be used: {reason}")]
    Key {
        /// Which key, e.g. the file it came from.
        what: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Longest error sentence kept from a remote peer, in bytes.
pub const MAX_MESSAGE_LEN: usize = 1024;

/// The compact code of an [`Error`] that travels in an error response.
///
/// The codes follow RELOAD's (RFC 6940 §6.3.3.1, [`ErrorCode::reload_code`]); the few that
/// RELOAD does not have are ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ErrorCode {
    /// [`Error::Forbidden`].
    Forbidden,
    /// [`Error::NotFound`].
    NotFound,
    /// [`Error::RequestTimeout`].
    RequestTimeout,
    /// [`Error::GenerationTooLow`].
    GenerationTooLow,
    /// [`Error::DataTooLarge`].
    DataTooLarge,
    /// [`Error::DataTooOld`].
    DataTooOld,
    /// [`Error::TtlExceeded`].
    TtlExceeded,
    /// [`Error::MessageTooLarge`].
    MessageTooLarge,
    /// [`Error::UnknownKind`].
    UnknownKind,
    /// [`Error::InvalidMessage`] and [`Error::InvalidAor`].
    InvalidMessage,
    /// [`Error::LoopDetected`].
    LoopDetected,
    /// [`Error::Expired`].
    Expired,
    /// A failure inside the answering peer (its disk, its store, its keys).
    Internal,
    /// [`Error::NotReplica`].
    NotReplica,
    /// [`Error::Replayed`].
    Replayed,
    /// [`Error::Stale`].
    Stale,
    /// [`Error::Busy`].
    Busy,
}

impl Error {
    /// The code this error travels as in an error response.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::Forbidden { .. } => ErrorCode::Forbidden,
            Error::NotFound { .. } => ErrorCode::NotFound,
            Error::RequestTimeout { .. } => ErrorCode::RequestTimeout,
            Error::GenerationTooLow { .. } => ErrorCode::GenerationTooLow,
            Error::DataTooLarge { .. } => ErrorCode::DataTooLarge,
            Error::DataTooOld { .. } => ErrorCode::DataTooOld,
            Error::Expired { .. } => ErrorCode::Expired,
            Error::TtlExceeded { .. } => ErrorCode::TtlExceeded,
            Error::MessageTooLarge { .. } => ErrorCode::MessageTooLarge,
            Error::UnknownKind { .. } => ErrorCode::UnknownKind,
            Error::InvalidMessage { .. } | Error::InvalidAor { .. } => ErrorCode::InvalidMessage,
            Error::LoopDetected { .. } => ErrorCode::LoopDetected,
            Error::NotReplica { .. } => ErrorCode::NotReplica,
            Error::Replayed { .. } => ErrorCode::Replayed,
            Error::Stale { .. } => ErrorCode::Stale,
            Error::Busy { .. } => ErrorCode::Busy,
            Error::Remote { code, .. } => *code,
            Error::Io { .. } | Error::Store(_) | Error::Corrupt { .. } | Error::Key { .. } => {
                ErrorCode::Internal
            }
        }
    }

    /// A [`Error::Forbidden`] with this reason.
    pub fn forbidden(reason: impl Into<String>) -> Error {
        Error::Forbidden {
            reason: reason.into(),
        }
    }

    /// A [`Error::InvalidMessage`] with this reason.
    pub fn invalid(reason: impl Into<String>) -> Error {
        Error::InvalidMessage {
            reason: reason.into(),
        }
    }
}

impl From<&Error> for ErrorCode {
    fn from(error: &Error) -> ErrorCode {
        error.code()
    }
}

/// An error answer received from a peer: its code and sentence become an [`Error::Remote`]
/// (the sentence cut to [`MAX_MESSAGE_LEN`] bytes).
impl From<(ErrorCode, String)> for Error {
    fn from((code, mut message): (ErrorCode, String)) -> Error {
        if message.len() > MAX_MESSAGE_LEN {
            let mut end = MAX_MESSAGE_LEN;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        Error::Remote { code, message }
    }
}

impl ErrorCode {
    /// The RELOAD error code (RFC 6940 §14.9) this code corresponds to; codes RELOAD does not
    /// have use its private range (`Error_Exp_A` = 18 for [`ErrorCode::LoopDetected`],
    /// `Error_Exp_B` = 19 for [`ErrorCode::Expired`]), 21 (unassigned by RELOAD) for
    /// [`ErrorCode::NotReplica`], RELOAD's private-use range (0x8000
    /// [`ErrorCode::Replayed`], 0x8001 [`ErrorCode::Stale`], 0x8002 [`ErrorCode::Busy`]) or 0
    /// for [`ErrorCode::Internal`].
    pub fn reload_code(self) -> u16 {
        match self {
            ErrorCode::Forbidden => 2,
            ErrorCode::NotFound => 3,
            ErrorCode::RequestTimeout => 4,
            ErrorCode::GenerationTooLow => 5,
            ErrorCode::DataTooLarge => 8,
            ErrorCode::DataTooOld => 9,
            ErrorCode::TtlExceeded => 10,
            ErrorCode::MessageTooLarge => 11,
            ErrorCode::UnknownKind => 12,
            ErrorCode::InvalidMessage => 20,
            ErrorCode::LoopDetected => 18,
            ErrorCode::Expired => 19,
            ErrorCode::NotReplica => 21,
            ErrorCode::Internal => 0,
            ErrorCode::Replayed => 0x8000,
            ErrorCode::Stale => 0x8001,
            ErrorCode::Busy => 0x8002,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            ErrorCode::Forbidden => "Forbidden",
            ErrorCode::NotFound => "NotFound",
            ErrorCode::RequestTimeout => "RequestTimeout",
            ErrorCode::GenerationTooLow => "GenerationTooLow",
            ErrorCode::DataTooLarge => "DataTooLarge",
            ErrorCode::DataTooOld => "DataTooOld",
            ErrorCode::TtlExceeded => "TtlExceeded",
            ErrorCode::MessageTooLarge => "MessageTooLarge",
            ErrorCode::UnknownKind => "UnknownKind",
            ErrorCode::InvalidMessage => "InvalidMessage",
            ErrorCode::LoopDetected => "LoopDetected",
            ErrorCode::Expired => "Expired",
            ErrorCode::NotReplica => "NotReplica",
            ErrorCode::Internal => "Internal",
            ErrorCode::Replayed => "Replayed",
            ErrorCode::Stale => "Stale",
            ErrorCode::Busy => "Busy",
        };
        f.write_str(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_errors_keep_their_code_and_sentence() {
        let local = Error::forbidden("AOR is owned by another key");
        let remote = Error::from((local.code(), local.to_string()));
        assert_eq!(remote.code(), ErrorCode::Forbidden);
        assert_eq!(
            remote.to_string(),
            "peer answered: refused: AOR is owned by another key"
        );
    }

    #[test]
    fn long_remote_sentences_are_cut_on_a_char_boundary() {
        let remote = Error::from((ErrorCode::InvalidMessage, "é".repeat(MAX_MESSAGE_LEN)));
        let Error::Remote { message, .. } = remote else {
            panic!("not remote");
        };
        assert!(message.len() <= MAX_MESSAGE_LEN);
        assert!(message.chars().all(|c| c == 'é'));
    }

    #[test]
    fn local_failures_are_internal() {
        let io = Error::Io {
            path: PathBuf::from("/nonexistent"),
            source: std::io::Error::other("boom"),
        };
        assert_eq!(ErrorCode::from(&io), ErrorCode::Internal);
        assert!(io.to_string().starts_with("cannot use /nonexistent"));
    }
}
