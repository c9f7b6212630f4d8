//! Typed header fields, parsed on demand from a message's raw header index.
//!
//! Every type here borrows from the message it was read from, so typed access costs no
//! allocation. Read them with [`crate::Headers::typed`] (the first value) or
//! [`crate::Headers::typed_all`] (every value, across lines and commas):
//!
//! ```
//! use p2psip_sip::{Message, header::{CSeq, Via}};
//!
//! let msg = Message::parse(&b"OPTIONS sip:bob@example.com SIP/2.0\r\n\
//!     Via: SIP/2.0/UDP pc33.example.com;branch=z9hG4bK776asdhds\r\n\
//!     CSeq: 63104 OPTIONS\r\n\r\n"[..])?;
//! let via = msg.headers().typed::<Via>().expect("present")?;
//! assert_eq!(via.branch(), Some("z9hG4bK776asdhds"));
//! let cseq = msg.headers().typed::<CSeq>().expect("present")?;
//! assert_eq!(cseq.seq(), 63104);
//! # Ok::<(), p2psip_sip::Error>(())
//! ```

mod address;
mod auth;
mod date;
mod event;
mod media;
mod scalar;
mod tokens;
mod via;

pub use address::{Address, Contact, From, RecordRoute, Route, To};
pub use auth::{Auth, Authorization, ProxyAuthenticate, ProxyAuthorization, WwwAuthenticate};
pub use date::Date;
pub use event::{Event, SubscriptionState};
pub use media::{Accept, ContentType, MediaType};
pub use scalar::{CSeq, CallId, ContentLength, Expires, MaxForwards, MinExpires};
pub use tokens::{Allow, ProxyRequire, Require, Supported, Unsupported};
pub use via::{MAGIC_COOKIE, Via};

use crate::{Error, HeaderName};

/// A header field type that can be parsed from one value.
///
/// For list headers ([`HeaderName::is_list`]) `parse` receives one comma-separated element;
/// for the others, the whole field value.
pub trait TypedHeader<'a>: Sized {
    /// The header this type parses.
    const NAME: HeaderName;
    /// Whether the field may have an empty value meaning "no elements" (Accept, Supported,
    /// Allow...).
    const MAY_BE_EMPTY: bool = false;

    /// Parses one value.
    fn parse(value: &'a [u8]) -> Result<Self, Error>;
}

/// Implements [`TypedHeader`] from a lexer function `fn(&str) -> Lex<T>`; the value is
/// checked to be UTF-8 once, first.
macro_rules! typed_header {
    ($ty:ident, $name:ident, $lexer:expr $(, may_be_empty = $empty:expr)?) => {
        impl<'a> $crate::header::TypedHeader<'a> for $ty<'a> {
            const NAME: $crate::HeaderName = $crate::HeaderName::$name;
            $(const MAY_BE_EMPTY: bool = $empty;)?
            fn parse(value: &'a [u8]) -> Result<Self, $crate::Error> {
                $crate::text::utf8(value)
                    .and_then($lexer)
                    .map_err(|e| $crate::Error::field(Self::NAME.as_str(), e))
            }
        }
    };
}
pub(crate) use typed_header;
