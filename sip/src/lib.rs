//! # p2psip-sip: the SIP layer
//!
//! The bottom layer of p2psip, and sans-IO: no sockets, no clock, no runtime. It reads and
//! writes SIP messages (RFC 3261) and, in later steps, holds the transaction, dialog, proxy
//! and registrar state machines.
//!
//! ## Entry points
//! - [`Message::parse`] reads one datagram; [`StreamDecoder`] cuts a TCP/TLS byte stream
//!   into messages and CRLF keepalives. Both are bounded by [`Limits`].
//! - [`Headers`] is the ordered, zero-copy index of a message's header fields;
//!   [`Headers::typed`] and [`Headers::typed_all`] parse the types of [`header`] on demand,
//!   borrowing from the message. [`Uri`] parses `sip:`, `sips:`, `tel:` and opaque URIs.
//! - [`Request::encode`] / [`Response::encode`] print a message; printing a parsed message
//!   and parsing the output gives the same message.
//! - [`check_request`] applies the checks of RFC 3261 §8.2 and §16.3 and says which
//!   response to send ([`Rejection`]); [`Rejection::from_error`] and
//!   [`Rejection::response_to_raw`] answer a message that did not parse.
//!
//! ## Invariants
//! - No input panics the parser or makes it allocate beyond [`Limits`]: the header index
//!   holds at most [`Limits::max_headers`] entries and every other structure borrows.
//! - Header fields keep their order and, for extension headers, their bytes.
//! - Errors name the line, the header and what the grammar expected ([`Error`]).

pub mod auth;
mod check;
pub mod dialog;
mod error;
pub mod header;
mod header_name;
mod headers;
mod ids;
mod message;
mod method;
mod params;
mod parse;
pub mod proxy;
pub mod registrar;
mod status;
mod stream;
mod text;
pub mod transaction;
mod transport;
pub mod ua;
mod uri;

pub use check::{Policy, Rejection, Role, check_request, check_response};
pub use dialog::{Dialog, DialogId, DialogState};
pub use error::Error;
pub use header_name::HeaderName;
pub use headers::{Field, Headers, TypedIter};
pub use ids::Ids;
pub use message::{Message, Request, Response, Version};
pub use method::Method;
pub use params::Params;
pub use parse::Limits;
pub use status::StatusCode;
pub use stream::{Frame, StreamDecoder};
pub use text::{unescape, unquote};
pub use transport::{ConnectionId, Peer, Transport, UDP_REQUEST_LIMIT};
pub use uri::{Host, OtherUri, SipUri, TelUri, Uri};
