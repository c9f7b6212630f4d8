//! The one error type of the SIP layer.

use thiserror::Error;

/// Why a SIP message or one of its fields could not be read.
///
/// Every variant names the fault: the line (1 is the start line), the header, and what the
/// grammar expected there. [`crate::Rejection::from_error`] turns one into the response a
/// SIP element must send.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum Error {
    /// The message (or the part received so far on a stream) is larger than allowed.
    #[error("the message is {size} bytes, over the limit of {limit}")]
    TooLarge {
        /// Size seen or announced, in bytes.
        size: usize,
        /// The configured limit ([`crate::Limits::max_message_size`]).
        limit: usize,
    },
    /// More header lines than allowed.
    #[error("the message has more than {limit} header fields")]
    TooManyHeaders {
        /// The configured limit ([`crate::Limits::max_headers`]).
        limit: usize,
    },
    /// One line is longer than allowed.
    #[error("line {line} is longer than {limit} bytes")]
    LineTooLong {
        /// The line number, 1 for the start line.
        line: u32,
        /// The configured limit ([`crate::Limits::max_line_length`]).
        limit: usize,
    },
    /// The first line is neither `Method SP Request-URI SP SIP-Version` nor
    /// `SIP-Version SP Status-Code SP Reason-Phrase`.
    #[error("line 1: {expected}")]
    StartLine {
        /// What the grammar expected.
        expected: &'static str,
    },
    /// A header line is not `name: value` (no colon, a bad name, a continuation line with
    /// nothing to continue).
    #[error("line {line}: {expected}")]
    HeaderLine {
        /// The line number.
        line: u32,
        /// What the grammar expected.
        expected: &'static str,
    },
    /// No empty line ends the header section.
    #[error("the header section does not end with an empty line")]
    Unterminated,
    /// The Content-Length header is missing where it is required (streams), malformed, or
    /// repeated.
    #[error("line {line}: {problem}")]
    ContentLength {
        /// The line of the offending header, or 0 when it is missing.
        line: u32,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// Content-Length announces more bytes than the datagram holds.
    #[error("Content-Length is {declared} but only {available} bytes of body follow")]
    Truncated {
        /// The announced body length.
        declared: usize,
        /// What the datagram really has after the header section.
        available: usize,
    },
    /// Header fields that every request and response must carry are absent (RFC 3261 §8.1.1).
    #[error("missing header fields: {}", names.join(", "))]
    MissingHeaders {
        /// The absent headers.
        names: Vec<&'static str>,
    },
    /// A header that takes a single value appears more than once (RFC 4475 §3.3.8).
    #[error("line {line}: a second {name} header; it takes one value")]
    RepeatedHeader {
        /// The header.
        name: &'static str,
        /// The line of the second one.
        line: u32,
    },
    /// A field does not follow its grammar (a typed header, the Request-URI, ...).
    #[error("line {line}: bad {field}: expected {expected} at byte {at} of the value")]
    Field {
        /// The header name, or "Request-URI".
        field: &'static str,
        /// The line number, 0 when the field was not parsed from a message.
        line: u32,
        /// What the grammar expected.
        expected: &'static str,
        /// Byte offset within the value.
        at: usize,
    },
    /// A request given to the transaction layer has no top Via with an RFC 3261 branch
    /// (`z9hG4bK...`), so no transaction can be keyed on it.
    #[error("the request has no top Via with an RFC 3261 branch (z9hG4bK...)")]
    NoBranch,
    /// A transaction with the same key already exists (a reused branch).
    #[error("a transaction with branch {branch} already exists")]
    DuplicateTransaction {
        /// The branch.
        branch: String,
    },
    /// The transaction layer holds as many transactions as allowed.
    #[error("too many transactions (limit {limit}); try again later")]
    TooManyTransactions {
        /// [`crate::transaction::Config::max_transactions`].
        limit: usize,
    },
    /// No transaction has this id (it ended, or never existed).
    #[error("no such transaction")]
    UnknownTransaction,
    /// What was asked does not fit the transaction's kind or state (a response to a client
    /// transaction, a provisional response after the final one, an ACK to start...).
    #[error("not allowed here: {0}")]
    NotAllowed(&'static str),
}

impl Error {
    pub(crate) fn field(field: &'static str, e: crate::text::Expected) -> Self {
        Error::Field {
            field,
            line: 0,
            expected: e.what,
            at: e.at,
        }
    }

    pub(crate) fn at_line(mut self, at: u32) -> Self {
        if let Error::Field { line, .. } = &mut self {
            *line = at;
        }
        self
    }
}
