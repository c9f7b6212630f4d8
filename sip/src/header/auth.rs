//! Authentication headers: WWW-Authenticate, Proxy-Authenticate, Authorization and
//! Proxy-Authorization (RFC 3261 §20.7, §20.27, §20.28, §20.44; RFC 8760 for SHA-256).

use std::borrow::Cow;

use super::typed_header;
use crate::text::{Lex, Scanner, ascii, trim_lws, unquote};

/// A challenge or credentials: a scheme and a comma-separated list of `name=value` pairs,
/// `Digest realm="atlanta.com", nonce="84a4cc6f3082121f32b42a2187831a9e"`. Any scheme
/// parses; a scheme the element does not know is for it to ignore (RFC 4475 §3.3.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Auth<'a> {
    scheme: &'a str,
    params: &'a str,
}

impl<'a> Auth<'a> {
    /// The scheme (`Digest`).
    pub fn scheme(&self) -> &'a str {
        self.scheme
    }

    /// Whether the scheme is Digest.
    pub fn is_digest(&self) -> bool {
        self.scheme.eq_ignore_ascii_case("digest")
    }

    /// The parameters as (name, value) pairs; values keep their quotes.
    pub fn params(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        crate::text::split_list(self.params.as_bytes()).filter_map(|p| {
            let eq = memchr::memchr(b'=', p)?;
            Some((ascii(trim_lws(&p[..eq])), ascii(trim_lws(&p[eq + 1..]))))
        })
    }

    /// The value of parameter `name`, quotes removed.
    pub fn param(&self, name: &str) -> Option<Cow<'a, str>> {
        self.params()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| unquote(v))
    }
}

/// `WWW-Authenticate`: a challenge from a UAS or registrar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WwwAuthenticate<'a>(pub Auth<'a>);

/// `Proxy-Authenticate`: a challenge from a proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyAuthenticate<'a>(pub Auth<'a>);

/// `Authorization`: credentials for a UAS or registrar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Authorization<'a>(pub Auth<'a>);

/// `Proxy-Authorization`: credentials for a proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyAuthorization<'a>(pub Auth<'a>);

fn auth(s: &str) -> Lex<Auth<'_>> {
    let mut sc = Scanner::new(s);
    sc.skip_lws();
    let scheme = sc.token("an authentication scheme")?;
    if !sc.skip_lws() {
        return sc.fail("white space after the authentication scheme");
    }
    let start = sc.pos();
    loop {
        sc.token("a parameter name")?;
        sc.expect_sep(b'=', "'=' after the parameter name")?;
        if sc.peek() == Some(b'"') {
            sc.quoted()?;
        } else {
            // Digest values such as uri may hold more than token chars when unquoted by
            // lenient peers; accept anything up to the next comma or white space.
            let v = sc
                .take_while(|b| b.is_ascii() && b != b',' && !crate::text::is_lws(b) && b != b'"');
            if v.is_empty() {
                return sc.fail("a parameter value");
            }
        }
        if !sc.eat_sep(b',') {
            break;
        }
    }
    let end = sc.pos();
    sc.finish("',' and another parameter, or the end of the value")?;
    let params = sc.slice(start, end);
    Ok(Auth { scheme, params })
}

typed_header!(WwwAuthenticate, WwwAuthenticate, |s| auth(s)
    .map(WwwAuthenticate));
typed_header!(ProxyAuthenticate, ProxyAuthenticate, |s| auth(s)
    .map(ProxyAuthenticate));
typed_header!(Authorization, Authorization, |s| auth(s).map(Authorization));
typed_header!(ProxyAuthorization, ProxyAuthorization, |s| auth(s)
    .map(ProxyAuthorization));

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::TypedHeader;

    #[test]
    fn digest_challenge_and_credentials() {
        let c = WwwAuthenticate::parse(
            b"Digest realm=\"atlanta.com\",\r\n domain=\"sip:boxesbybob.com\", qop=\"auth\",\r\n nonce=\"f84f1cec41e6cbe5aea9c8e88d359\", opaque=\"\", stale=FALSE, algorithm=SHA-256",
        )
        .unwrap()
        .0;
        assert!(c.is_digest());
        assert_eq!(c.param("realm").as_deref(), Some("atlanta.com"));
        assert_eq!(c.param("algorithm").as_deref(), Some("SHA-256"));
        assert_eq!(c.param("opaque").as_deref(), Some(""));
        let a = Authorization::parse(b"Digest username=\"bob\", realm=\"b.com\", nonce=\"x\", uri=\"sip:b.com\", response=\"42ce3cef44b22f50c6a6071bc8\", nc=00000001").unwrap().0;
        assert_eq!(a.param("nc").as_deref(), Some("00000001"));
        assert_eq!(a.param("uri").as_deref(), Some("sip:b.com"));
    }

    #[test]
    fn unknown_schemes_parse() {
        let a = Authorization::parse(b"NoOneKnowsThisScheme opaque-data=here")
            .unwrap()
            .0;
        assert!(!a.is_digest());
        assert_eq!(a.param("opaque-data").as_deref(), Some("here"));
        assert!(Authorization::parse(b"Digest").is_err());
        assert!(Authorization::parse(b"Digest realm=\"unterminated").is_err());
    }
}
