//! Single-valued headers: CSeq, Call-ID, Max-Forwards, Content-Length, Expires, Min-Expires.

use super::typed_header;
use crate::text::{Expected, Lex, Scanner, is_word};
use crate::{HeaderName, Method};

/// `CSeq`: a sequence number and the request method (RFC 3261 §20.16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CSeq<'a> {
    seq: u32,
    method: &'a str,
}

impl<'a> CSeq<'a> {
    /// The sequence number (at most 2^32 - 1).
    pub fn seq(&self) -> u32 {
        self.seq
    }

    /// The method as written.
    pub fn method_str(&self) -> &'a str {
        self.method
    }

    /// The method.
    pub fn method(&self) -> Method {
        Method::from_token(self.method.as_bytes()).unwrap_or(Method::Extension(self.method.into()))
    }

    /// Whether the method is `m` (methods are case-sensitive).
    pub fn is(&self, m: &Method) -> bool {
        self.method == m.as_str()
    }
}

/// `Call-ID`: `word [ "@" word ]` (RFC 3261 §20.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CallId<'a>(pub &'a str);

/// Implements a header whose value is a bounded decimal number.
macro_rules! number_header {
    ($(#[$doc:meta])* $ty:ident: $int:ty, $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $ty(pub $int);

        impl<'a> super::TypedHeader<'a> for $ty {
            const NAME: HeaderName = HeaderName::$name;
            fn parse(value: &'a [u8]) -> Result<Self, crate::Error> {
                number::<$int>(value, $what)
                    .map($ty)
                    .map_err(|e| crate::Error::field(Self::NAME.as_str(), e))
            }
        }
    };
}

number_header!(
    /// `Max-Forwards`: how many more hops the request may take, 0 to 255 (§20.22).
    MaxForwards: u8, MaxForwards, "a number of hops from 0 to 255"
);
number_header!(
    /// `Content-Length`: the body size in bytes (§20.14).
    ContentLength: u32, ContentLength, "a body length in bytes"
);
number_header!(
    /// `Expires`: seconds, 0 to 2^32 - 1 (§20.19).
    Expires: u32, Expires, "a number of seconds from 0 to 4294967295"
);
number_header!(
    /// `Min-Expires`: seconds (§20.23).
    MinExpires: u32, MinExpires, "a number of seconds from 0 to 4294967295"
);

/// `1*DIGIT` that fits in `T`; leading zeros are fine (`0068`).
fn number<T: TryFrom<u64>>(s: &[u8], what: &'static str) -> Lex<T> {
    let bad = Err(Expected { what, at: 0 });
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return bad;
    }
    let digits = &s[s
        .iter()
        .take_while(|&&d| d == b'0')
        .count()
        .min(s.len() - 1)..];
    if digits.len() > 19 {
        return bad;
    }
    let n = digits
        .iter()
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    T::try_from(n).or(bad)
}

fn cseq(s: &str) -> Lex<CSeq<'_>> {
    let mut sc = Scanner::new(s);
    sc.skip_lws();
    let at = sc.pos();
    let digits = sc.digits("a sequence number")?;
    let seq = number::<u32>(digits.as_bytes(), "a sequence number below 2^32")
        .map_err(|e| Expected { at, ..e })?;
    if !sc.skip_lws() {
        return sc.fail("white space after the sequence number");
    }
    let method = sc.token("the request method after the sequence number")?;
    sc.finish("the end of the CSeq value after the method")?;
    Ok(CSeq { seq, method })
}

fn call_id(s: &str) -> Lex<CallId<'_>> {
    let words = |w: &str| !w.is_empty() && w.bytes().all(is_word);
    let ok = match s.bytes().position(|b| b == b'@') {
        Some(at) => words(&s[..at]) && words(&s[at + 1..]),
        None => words(s),
    };
    if ok {
        Ok(CallId(s))
    } else {
        Err(Expected {
            what: "word [\"@\" word] with no white space",
            at: 0,
        })
    }
}

typed_header!(CSeq, CSeq, cseq);
typed_header!(CallId, CallId, call_id);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::TypedHeader;

    #[test]
    fn cseq_forms() {
        let c = CSeq::parse(b"0009\r\n  INVITE").unwrap();
        assert_eq!((c.seq(), c.method()), (9, Method::Invite));
        assert!(CSeq::parse(b"36893488147419103232 REGISTER").is_err());
        assert!(CSeq::parse(b"4294967295 ACK").is_ok());
        assert!(CSeq::parse(b"4294967296 ACK").is_err());
        assert!(CSeq::parse(b"1INVITE").is_err());
        assert!(CSeq::parse(b"1 INVITE x").is_err());
        assert!(CSeq::parse(b"-1 INVITE").is_err());
    }

    #[test]
    fn numbers() {
        assert_eq!(MaxForwards::parse(b"0068"), Ok(MaxForwards(68)));
        assert!(MaxForwards::parse(b"300").is_err());
        assert!(MaxForwards::parse(b"-3").is_err());
        assert!(Expires::parse(&[b'1'; 100]).is_err());
        assert_eq!(Expires::parse(b"4294967295"), Ok(Expires(u32::MAX)));
        assert_eq!(
            ContentLength::parse(b"0000000000000000000000000000150"),
            Ok(ContentLength(150))
        );
    }

    #[test]
    fn call_ids() {
        assert_eq!(
            CallId::parse(b"a84b4c76e66710@pc33.atlanta.com"),
            Ok(CallId("a84b4c76e66710@pc33.atlanta.com"))
        );
        assert!(CallId::parse(b"a b").is_err());
        assert!(CallId::parse(b"a@").is_err());
        assert!(CallId::parse(b"a@b@c").is_err());
        assert!(CallId::parse(b"").is_err());
    }
}
