//! Lists of tokens: Allow, Supported, Require, Proxy-Require, Unsupported.

use super::typed_header;
use crate::text::{Lex, Scanner, utf8};
use crate::{HeaderName, Method};

/// Implements a list header whose elements are tokens (option tags, RFC 3261 §19.2).
macro_rules! token_list {
    ($(#[$doc:meta])* $ty:ident, $name:ident, $empty:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub struct $ty<'a>(pub &'a str);
        typed_header!($ty, $name, |s| one_token(s, "an option tag").map($ty), may_be_empty = $empty);
    };
}

token_list!(
    /// `Supported`: one option tag this element supports (the field may be empty).
    Supported, Supported, true
);
token_list!(
    /// `Require`: one option tag the sender requires the receiver to support.
    Require, Require, false
);
token_list!(
    /// `Proxy-Require`: one option tag the sender requires proxies to support.
    ProxyRequire, ProxyRequire, false
);
token_list!(
    /// `Unsupported`: one option tag this element does not support.
    Unsupported, Unsupported, false
);

/// `Allow`: one method the sender supports (the field may be empty).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Allow(pub Method);

impl<'a> super::TypedHeader<'a> for Allow {
    const NAME: HeaderName = HeaderName::Allow;
    const MAY_BE_EMPTY: bool = true;
    fn parse(value: &'a [u8]) -> Result<Self, crate::Error> {
        utf8(value)
            .and_then(|s| one_token(s, "a method"))
            .map(|m| Allow(Method::from_token(m.as_bytes()).unwrap_or(Method::Extension(m.into()))))
            .map_err(|e| crate::Error::field(Self::NAME.as_str(), e))
    }
}

fn one_token<'a>(s: &'a str, what: &'static str) -> Lex<&'a str> {
    let mut sc = Scanner::new(s);
    sc.skip_lws();
    let t = sc.token(what)?;
    sc.finish("',' between tokens")?;
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Message;

    #[test]
    fn lists_across_lines_and_commas() {
        let m = Message::parse(&b"OPTIONS sip:a@b SIP/2.0\r\nRequire: a, b\r\nRequire: c\r\nSupported:\r\nAllow: INVITE, FOO\r\n\r\n"[..]).unwrap();
        let req: Vec<_> = m
            .headers()
            .typed_all::<Require>()
            .map(|r| r.unwrap().0)
            .collect();
        assert_eq!(req, ["a", "b", "c"]);
        assert_eq!(m.headers().typed_all::<Supported>().count(), 0);
        let allow: Vec<_> = m
            .headers()
            .typed_all::<Allow>()
            .map(|r| r.unwrap().0)
            .collect();
        assert_eq!(allow, [Method::Invite, Method::Extension("FOO".into())]);
    }

    #[test]
    fn empty_elements_are_errors() {
        let m = Message::parse(&b"OPTIONS sip:a@b SIP/2.0\r\nRequire: a,,b\r\n\r\n"[..]).unwrap();
        assert!(m.headers().typed_all::<Require>().any(|r| r.is_err()));
    }
}
