//! URIs: `sip:` and `sips:` (RFC 3261 §19.1), `tel:` (RFC 3966), and any other scheme kept
//! as an opaque absolute URI (RFC 3261 §25.1 `absoluteURI`).
//!
//! A [`Uri`] borrows the text it was parsed from; parameters and headers are checked when the
//! URI is parsed and read on demand. `%`-escapes are kept as written; [`crate::unescape`]
//! decodes them for comparison (§19.1.4).

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::text::{
    Expected, Lex, is_escaped_run, is_header_char, is_host, is_param_char, is_password, is_user,
};
use crate::{Error, Params};

/// A parsed URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Uri<'a> {
    /// `sip:` or `sips:`.
    Sip(SipUri<'a>),
    /// `tel:`.
    Tel(TelUri<'a>),
    /// Any other scheme, opaque.
    Other(OtherUri<'a>),
}

/// A `sip:` or `sips:` URI: `sip:user:password@host:port;params?headers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipUri<'a> {
    raw: &'a str,
    secure: bool,
    /// `user[:password]`, without the `@`; empty when there is none.
    userinfo: &'a str,
    host: Host<'a>,
    port: Option<u16>,
    /// `;params?headers` after the host and port.
    tail: &'a str,
    /// Where `?headers` starts in `tail` (its length if there are none).
    headers_at: u32,
}

/// A `tel:` URI: the number and its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelUri<'a> {
    raw: &'a str,
    number: &'a str,
    params: &'a str,
}

/// A URI of a scheme this crate does not interpret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtherUri<'a> {
    raw: &'a str,
    scheme: &'a str,
}

/// The host of a SIP URI or Via.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Host<'a> {
    /// A domain name, as written.
    Domain(&'a str),
    /// An IPv4 address.
    Ipv4(Ipv4Addr),
    /// An IPv6 reference (written in brackets).
    Ipv6(Ipv6Addr),
}

impl<'a> Uri<'a> {
    /// Parses a whole URI.
    pub fn parse(s: &'a str) -> Result<Uri<'a>, Error> {
        parse(s).map_err(|e| Error::field("URI", e))
    }

    /// The URI as written.
    pub fn as_str(&self) -> &'a str {
        match self {
            Uri::Sip(u) => u.raw,
            Uri::Tel(u) => u.raw,
            Uri::Other(u) => u.raw,
        }
    }

    /// The scheme, lower-case for the known ones, as written otherwise.
    pub fn scheme(&self) -> &'a str {
        match self {
            Uri::Sip(u) if u.secure => "sips",
            Uri::Sip(_) => "sip",
            Uri::Tel(_) => "tel",
            Uri::Other(u) => u.scheme,
        }
    }

    /// The SIP URI, if this is one.
    pub fn as_sip(&self) -> Option<&SipUri<'a>> {
        match self {
            Uri::Sip(u) => Some(u),
            _ => None,
        }
    }
}

impl<'a> SipUri<'a> {
    /// `true` for `sips:`.
    pub fn is_secure(&self) -> bool {
        self.secure
    }

    /// The user part, escapes kept.
    pub fn user(&self) -> Option<&'a str> {
        let user = self
            .userinfo
            .split_once(':')
            .map_or(self.userinfo, |(u, _)| u);
        (!user.is_empty()).then_some(user)
    }

    /// The password, if the URI (unwisely) carries one.
    pub fn password(&self) -> Option<&'a str> {
        self.userinfo.split_once(':').map(|(_, p)| p)
    }

    /// The host.
    pub fn host(&self) -> Host<'a> {
        self.host
    }

    /// The port, if given.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// The URI parameters (`;transport=tcp;lr`).
    pub fn params(&self) -> Params<'a> {
        Params::new(sub(self.tail, 0, self.headers_at as usize))
    }

    /// The URI headers (`?Route=...&Subject=...`), escapes kept.
    pub fn headers(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        let raw = self.headers_raw();
        raw.split('&')
            .filter(|h| !h.is_empty())
            .map(|h| h.split_once('=').unwrap_or((h, "")))
    }

    /// Whether the URI carries headers (not allowed in a Request-URI, §19.1.1).
    pub fn has_headers(&self) -> bool {
        !self.headers_raw().is_empty()
    }

    fn headers_raw(&self) -> &'a str {
        sub(self.tail, self.headers_at as usize + 1, self.tail.len())
    }

    /// The URI as written.
    pub fn as_str(&self) -> &'a str {
        self.raw
    }
}

impl<'a> TelUri<'a> {
    /// The number, visual separators kept.
    pub fn number(&self) -> &'a str {
        self.number
    }

    /// The parameters.
    pub fn params(&self) -> Params<'a> {
        Params::new(self.params)
    }
}

impl<'a> OtherUri<'a> {
    /// The scheme as written.
    pub fn scheme(&self) -> &'a str {
        self.scheme
    }

    /// The URI as written.
    pub fn as_str(&self) -> &'a str {
        self.raw
    }
}

impl fmt::Display for Uri<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Host<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Domain(d) => f.write_str(d),
            Host::Ipv4(a) => write!(f, "{a}"),
            Host::Ipv6(a) => write!(f, "[{a}]"),
        }
    }
}

/// Parses a URI that is the whole of `s`.
pub(crate) fn parse(s: &str) -> Lex<Uri<'_>> {
    let b = s.as_bytes();
    let Some(colon) = find(b, b':') else {
        return Err(Expected {
            what: "a URI scheme followed by ':'",
            at: 0,
        });
    };
    let scheme = &b[..colon];
    if scheme.is_empty()
        || !scheme[0].is_ascii_alphabetic()
        || !scheme
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'))
    {
        return Err(Expected {
            what: "a URI scheme (a letter, then letters, digits, + - .)",
            at: 0,
        });
    }
    if scheme.eq_ignore_ascii_case(b"sip") {
        sip(s, false, colon + 1).map(Uri::Sip)
    } else if scheme.eq_ignore_ascii_case(b"sips") {
        sip(s, true, colon + 1).map(Uri::Sip)
    } else if scheme.eq_ignore_ascii_case(b"tel") {
        tel(s, colon + 1).map(Uri::Tel)
    } else {
        let rest = &b[colon + 1..];
        if let Some(i) = rest.iter().position(|&c| !is_uric(c)) {
            return Err(Expected {
                what: "URI characters",
                at: colon + 1 + i,
            });
        }
        if rest.is_empty() {
            return Err(Expected {
                what: "something after the URI scheme",
                at: colon + 1,
            });
        }
        Ok(Uri::Other(OtherUri {
            raw: s,
            scheme: sub(s, 0, colon),
        }))
    }
}

/// Characters of an opaque absolute URI: printable ASCII but for the delimiters that cannot
/// stand in one unescaped.
fn is_uric(c: u8) -> bool {
    (0x21..0x7f).contains(&c)
        && !matches!(
            c,
            b'<' | b'>' | b'"' | b'{' | b'}' | b'|' | b'\\' | b'^' | b'`'
        )
}

fn sip(s: &str, secure: bool, start: usize) -> Lex<SipUri<'_>> {
    let b = s.as_bytes();
    let mut pos = start;
    let mut userinfo = "";
    if let Some(at) = find(&b[pos..], b'@').map(|i| i + pos) {
        let info = &b[pos..at];
        let (u, p) = match find(info, b':') {
            Some(c) => (&info[..c], Some(&info[c + 1..])),
            None => (info, None),
        };
        if u.is_empty() || !is_escaped_run(u, is_user) {
            return Err(Expected {
                what: "a user part of user characters or %-escapes",
                at: pos,
            });
        }
        if let Some(p) = p
            && !is_escaped_run(p, is_password)
        {
            return Err(Expected {
                what: "a password of allowed characters",
                at: pos + u.len() + 1,
            });
        }
        userinfo = sub(s, pos, at);
        pos = at + 1;
    }
    let (host, after) = host(s, pos)?;
    pos = after;
    let mut port = None;
    if b.get(pos) == Some(&b':') {
        let digits = b[pos + 1..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        port = Some(port_number(&b[pos + 1..pos + 1 + digits]).ok_or(Expected {
            what: "a port number from 0 to 65535",
            at: pos + 1,
        })?);
        pos += 1 + digits;
    }
    let params_start = pos;
    while b.get(pos) == Some(&b';') {
        pos += 1;
        let name = run(b, pos, is_param_char);
        if name == 0 || !is_escaped_run(&b[pos..pos + name], is_param_char) {
            return Err(Expected {
                what: "a URI parameter name after ';'",
                at: pos,
            });
        }
        pos += name;
        if b.get(pos) == Some(&b'=') {
            pos += 1;
            let value = run(b, pos, is_param_char);
            if value == 0 || !is_escaped_run(&b[pos..pos + value], is_param_char) {
                return Err(Expected {
                    what: "a URI parameter value after '='",
                    at: pos,
                });
            }
            pos += value;
        }
    }
    let mut headers_at = pos;
    if b.get(pos) == Some(&b'?') {
        let h_start = pos + 1;
        loop {
            pos += 1;
            let name = run(b, pos, is_header_char);
            if name == 0 || !is_escaped_run(&b[pos..pos + name], is_header_char) {
                return Err(Expected {
                    what: "a URI header name",
                    at: pos,
                });
            }
            pos += name;
            if b.get(pos) != Some(&b'=') {
                return Err(Expected {
                    what: "'=' after the URI header name",
                    at: pos,
                });
            }
            pos += 1;
            let value = run(b, pos, is_header_char);
            if !is_escaped_run(&b[pos..pos + value], is_header_char) {
                return Err(Expected {
                    what: "a URI header value of allowed characters",
                    at: pos,
                });
            }
            pos += value;
            if b.get(pos) != Some(&b'&') {
                break;
            }
        }
        headers_at = h_start - 1;
    }
    if pos != b.len() {
        return Err(Expected {
            what: "the end of the URI",
            at: pos,
        });
    }
    Ok(SipUri {
        raw: s,
        secure,
        userinfo,
        host,
        port,
        tail: sub(s, params_start, s.len()),
        headers_at: u32::try_from(headers_at - params_start).unwrap_or(u32::MAX),
    })
}

/// Length of the run of bytes from `pos` that are `%` or satisfy `f` (escapes are checked
/// separately).
fn run(b: &[u8], pos: usize, f: fn(u8) -> bool) -> usize {
    b[pos..].iter().take_while(|&&c| c == b'%' || f(c)).count()
}

/// `port = 1*DIGIT` that fits in 16 bits.
pub(crate) fn port_number(d: &[u8]) -> Option<u16> {
    if d.is_empty() || d.len() > 5 || !d.iter().all(u8::is_ascii_digit) {
        return None;
    }
    u16::try_from(d.iter().fold(0u32, |n, c| n * 10 + u32::from(c - b'0'))).ok()
}

/// `host = hostname / IPv4address / IPv6reference`, starting at `pos`. Returns the host and
/// the position after it.
pub(crate) fn host(s: &str, pos: usize) -> Lex<(Host<'_>, usize)> {
    let b = s.as_bytes();
    let bad = Expected {
        what: "a host name or IP address",
        at: pos,
    };
    if b.get(pos) == Some(&b'[') {
        let end = find(&b[pos..], b']').map(|i| i + pos).ok_or(Expected {
            what: "']' closing the IPv6 reference",
            at: pos,
        })?;
        let addr = sub(s, pos + 1, end)
            .parse::<Ipv6Addr>()
            .map_err(|_| Expected {
                what: "an IPv6 address in brackets",
                at: pos + 1,
            })?;
        return Ok((Host::Ipv6(addr), end + 1));
    }
    // One pass: the extent, whether it is all digits and dots, and the label rules
    // (hostname = *( domainlabel "." ) toplabel [ "." ]; no label is empty or starts or
    // ends with '-').
    let mut end = pos;
    let mut numeric = true;
    let mut bad_label = false;
    let mut prev = b'.';
    while let Some(&c) = b.get(end) {
        if !is_host(c) {
            break;
        }
        numeric &= c.is_ascii_digit() || c == b'.';
        bad_label |= (c == b'.' && (prev == b'.' || prev == b'-')) || (c == b'-' && prev == b'.');
        prev = c;
        end += 1;
    }
    if end == pos {
        return Err(bad);
    }
    if numeric {
        return ipv4(sub(s, pos, end))
            .map(|a| (Host::Ipv4(a), end))
            .ok_or(bad);
    }
    if bad_label || prev == b'-' {
        return Err(bad);
    }
    Ok((Host::Domain(sub(s, pos, end)), end))
}

/// `IPv4address = 1*3DIGIT "." 1*3DIGIT "." 1*3DIGIT "." 1*3DIGIT`, each at most 255.
fn ipv4(s: &str) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let (mut n, mut value, mut digits) = (0, 0u16, 0);
    for c in s.bytes() {
        if c == b'.' {
            if digits == 0 || n == 3 {
                return None;
            }
            octets[n] = u8::try_from(value).ok()?;
            (n, value, digits) = (n + 1, 0, 0);
        } else if c.is_ascii_digit() && digits < 3 {
            value = value * 10 + u16::from(c - b'0');
            digits += 1;
        } else {
            return None;
        }
    }
    if n != 3 || digits == 0 {
        return None;
    }
    octets[3] = u8::try_from(value).ok()?;
    Some(Ipv4Addr::from(octets))
}

/// An IPv4 or IPv6 address (the `received` of a Via).
pub(crate) fn ip_address(s: &str) -> Option<std::net::IpAddr> {
    match ipv4(s) {
        Some(a) => Some(a.into()),
        None => s.parse::<Ipv6Addr>().ok().map(Into::into),
    }
}

/// The first `c` in `b`: URIs are short, and a plain loop beats a vectorised search there.
fn find(b: &[u8], c: u8) -> Option<usize> {
    b.iter().position(|&x| x == c)
}

/// `s[from..to]`, or "" where that would not fall on character boundaries (never panics).
fn sub(s: &str, from: usize, to: usize) -> &str {
    s.get(from..to).unwrap_or_default()
}

fn tel(s: &str, start: usize) -> Lex<TelUri<'_>> {
    let b = s.as_bytes();
    let len = b[start..]
        .iter()
        .take_while(|&&c| {
            c.is_ascii_hexdigit() || matches!(c, b'+' | b'*' | b'#' | b'-' | b'.' | b'(' | b')')
        })
        .count();
    if len == 0 {
        return Err(Expected {
            what: "a telephone number",
            at: start,
        });
    }
    let mut pos = start + len;
    let params_start = pos;
    while b.get(pos) == Some(&b';') {
        pos += 1;
        let n = run(b, pos, |c| is_param_char(c) || c == b'=');
        if n == 0 || !is_escaped_run(&b[pos..pos + n], |c| is_param_char(c) || c == b'=') {
            return Err(Expected {
                what: "a tel URI parameter",
                at: pos,
            });
        }
        pos += n;
    }
    if pos != b.len() {
        return Err(Expected {
            what: "the end of the tel URI",
            at: pos,
        });
    }
    Ok(TelUri {
        raw: s,
        number: sub(s, start, start + len),
        params: sub(s, params_start, pos),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sip_uri(s: &str) -> SipUri<'_> {
        match Uri::parse(s) {
            Ok(Uri::Sip(u)) => u,
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn rfc3261_19_1_3_examples() {
        let u = sip_uri("sip:alice:secretword@atlanta.com;transport=tcp");
        assert_eq!(
            (u.user(), u.password()),
            (Some("alice"), Some("secretword"))
        );
        assert_eq!(u.host(), Host::Domain("atlanta.com"));
        assert_eq!(u.params().get("transport"), Some(Some("tcp")));
        let u = sip_uri("sips:alice@atlanta.com?subject=project%20x&priority=urgent");
        assert!(u.is_secure());
        assert_eq!(
            u.headers().collect::<Vec<_>>(),
            [("subject", "project%20x"), ("priority", "urgent")]
        );
        let u = sip_uri("sip:+1-212-555-1212:1234@gateway.com;user=phone");
        assert_eq!(u.user(), Some("+1-212-555-1212"));
        let u = sip_uri("sips:1212@gateway.com");
        assert_eq!(u.port(), None);
        let u = sip_uri("sip:alice@192.0.2.4:5061");
        assert_eq!(
            (u.host(), u.port()),
            (Host::Ipv4(Ipv4Addr::new(192, 0, 2, 4)), Some(5061))
        );
        let u = sip_uri("sip:atlanta.com;method=REGISTER?to=alice%40atlanta.com");
        assert_eq!(u.user(), None);
        let u = sip_uri("sip:alice;day=tuesday@atlanta.com");
        assert_eq!(u.user(), Some("alice;day=tuesday"));
    }

    #[test]
    fn ipv6_references() {
        let u = sip_uri("sip:[2001:db8::10]:5070;lr");
        assert_eq!(u.host(), Host::Ipv6("2001:db8::10".parse().unwrap()));
        assert_eq!(u.port(), Some(5070));
        assert!(u.params().contains("lr"));
        assert!(Uri::parse("sip:[2001:db8::10:5070").is_err());
        assert!(Uri::parse("sip:[::1]x").is_err());
    }

    #[test]
    fn other_schemes_are_opaque() {
        assert_eq!(
            Uri::parse("soap.beep://192.0.2.103:3002").unwrap().scheme(),
            "soap.beep"
        );
        assert_eq!(
            Uri::parse("nobodyKnowsThisScheme:totallyopaquecontent")
                .unwrap()
                .scheme(),
            "nobodyKnowsThisScheme"
        );
        let tel = Uri::parse("tel:+1-201-555-0123;phone-context=example.com").unwrap();
        assert!(matches!(tel, Uri::Tel(ref t) if t.number() == "+1-201-555-0123"));
    }

    #[test]
    fn malformed_uris_say_what_was_expected() {
        for (s, what) in [
            ("sip:", "a host name or IP address"),
            ("sip:@host", "a user part of user characters or %-escapes"),
            ("sip:a@host:99999", "a port number from 0 to 65535"),
            ("sip:a@host;", "a URI parameter name after ';'"),
            ("sip:a@host?x", "'=' after the URI header name"),
            (
                "sip:a b@host",
                "a user part of user characters or %-escapes",
            ),
            ("sip:user@example.com>", "the end of the URI"),
            (
                "sip:a%4@host",
                "a user part of user characters or %-escapes",
            ),
            (
                "<sip:a@b>",
                "a URI scheme (a letter, then letters, digits, + - .)",
            ),
            ("sip:-bad-.com", "a host name or IP address"),
            ("sip:1.2.3.400", "a host name or IP address"),
        ] {
            match Uri::parse(s) {
                Err(Error::Field { expected, .. }) => assert_eq!(expected, what, "{s}"),
                other => panic!("{s}: {other:?}"),
            }
        }
    }
}
