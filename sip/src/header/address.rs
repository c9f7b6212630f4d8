//! name-addr / addr-spec headers: From, To, Contact, Route, Record-Route (RFC 3261 §20).

use super::typed_header;
use crate::Params;
use crate::text::{Expected, Lex, Scanner, is_lws, is_token};
use crate::uri::{self, Uri};

/// An address with an optional display name and header parameters:
/// `"Alice" <sip:alice@example.com>;tag=1928301774`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address<'a> {
    display: Option<&'a str>,
    uri: Uri<'a>,
    params: Params<'a>,
    bracketed: bool,
    /// The `tag` parameter, found while the parameters were checked.
    tag: Option<&'a str>,
}

impl<'a> Address<'a> {
    /// The display name as written (quoted string with its quotes, or tokens); see
    /// [`crate::unquote`].
    pub fn display_name(&self) -> Option<&'a str> {
        self.display
    }

    /// The URI.
    pub fn uri(&self) -> &Uri<'a> {
        &self.uri
    }

    /// The header parameters (after the URI, outside the angle brackets).
    pub fn params(&self) -> Params<'a> {
        self.params
    }

    /// Whether the URI was written in angle brackets (name-addr form).
    pub fn is_bracketed(&self) -> bool {
        self.bracketed
    }

    /// The `tag` parameter.
    pub fn tag(&self) -> Option<&'a str> {
        self.tag
    }
}

/// `From`: the initiator of the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct From<'a>(pub Address<'a>);

/// `To`: the logical recipient of the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct To<'a>(pub Address<'a>);

/// `Route`: one element of the route set (always in angle brackets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route<'a>(pub Address<'a>);

/// `Record-Route`: one element (always in angle brackets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordRoute<'a>(pub Address<'a>);

/// `Contact`: one element, or `*` (a REGISTER that removes every binding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contact<'a> {
    /// `Contact: *`
    Star,
    /// An address with its parameters (`q`, `expires`, ...).
    Address(Address<'a>),
}

impl<'a> From<'a> {
    /// The `tag` parameter.
    pub fn tag(&self) -> Option<&'a str> {
        self.0.tag()
    }
}

impl<'a> To<'a> {
    /// The `tag` parameter.
    pub fn tag(&self) -> Option<&'a str> {
        self.0.tag()
    }
}

impl<'a> Contact<'a> {
    /// The address, unless this is `*`.
    pub fn address(&self) -> Option<&Address<'a>> {
        match self {
            Contact::Star => None,
            Contact::Address(a) => Some(a),
        }
    }

    /// The `expires` parameter, if present and a number of seconds; an out-of-range value
    /// reads as `None` (RFC 3261 §10.3 treats it as absent).
    pub fn expires(&self) -> Option<u32> {
        self.address()?
            .params
            .get("expires")
            .flatten()?
            .parse()
            .ok()
    }

    /// The `q` parameter in thousandths (0 to 1000), if present and well formed.
    pub fn q(&self) -> Option<u16> {
        qvalue(self.address()?.params.get("q").flatten()?)
    }
}

/// `qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )`, in thousandths.
fn qvalue(s: &str) -> Option<u16> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths = format!("{frac:0<3}").parse::<u16>().ok()?;
    match int {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// Parses `( name-addr / addr-spec ) *( SEMI generic-param )`.
pub(crate) fn address(s: &str, addr_spec_allowed: bool) -> Lex<Address<'_>> {
    let mut sc = Scanner::new(s);
    sc.skip_lws();
    let mut display = None;
    let bracketed = if sc.peek() == Some(b'"') {
        display = Some(sc.quoted()?);
        sc.skip_lws();
        if !sc.eat(b'<') {
            return sc.fail("'<' after the display name");
        }
        true
    } else {
        // display-name = *(token LWS): tokens followed by '<', or else an addr-spec.
        let start = sc.pos();
        let mut end = start;
        while !sc.take_while(is_token).is_empty() {
            end = sc.pos();
            sc.skip_lws();
        }
        if sc.eat(b'<') {
            if end > start {
                display = Some(sc.slice(start, end));
            }
            true
        } else {
            sc.set_pos(start);
            false
        }
    };
    let from = sc.pos();
    let uri = if bracketed {
        let close = sc.rest().bytes().position(|b| b == b'>').ok_or(Expected {
            what: "'>' closing the URI",
            at: from,
        })? + from;
        let uri = parse_uri(sc.slice(from, close), from)?;
        sc.set_pos(close + 1);
        uri
    } else {
        if !addr_spec_allowed {
            return sc.fail("a URI in angle brackets");
        }
        let len = sc
            .rest()
            .bytes()
            .take_while(|&b| b != b';' && b != b',' && !is_lws(b))
            .count();
        let uri = parse_uri(sc.slice(from, from + len), from).map_err(|e| {
            // Text that is no URI but comes before a '<' was meant as a display name.
            if sc.rest().contains('<') {
                Expected {
                    what: "a display name of tokens, or quoted (\"Bell, Alexander\")",
                    at: from,
                }
            } else {
                e
            }
        })?;
        if let Uri::Sip(u) = &uri
            && u.has_headers()
        {
            return Err(Expected {
                what: "angle brackets around a URI with headers (RFC 3261 §20)",
                at: from,
            });
        }
        sc.set_pos(from + len);
        uri
    };
    let mut tag = None;
    let params = Params::new(sc.header_params(|name, value| {
        if tag.is_none() && name.eq_ignore_ascii_case("tag") {
            tag = Some(value);
        }
        Ok(())
    })?);
    sc.finish("';' and a parameter, or the end of the value")?;
    Ok(Address {
        display,
        uri,
        params,
        bracketed,
        tag: tag.flatten(),
    })
}

fn parse_uri(s: &str, offset: usize) -> Lex<Uri<'_>> {
    uri::parse(s).map_err(|e| Expected {
        what: e.what,
        at: e.at + offset,
    })
}

fn contact(s: &str) -> Lex<Contact<'_>> {
    if s == "*" {
        return Ok(Contact::Star);
    }
    let a = address(s, true)?;
    if let Some(q) = a.params.get("q")
        && q.and_then(qvalue).is_none()
    {
        return Err(Expected {
            what: "a q value from 0 to 1 with at most 3 decimals",
            at: 0,
        });
    }
    Ok(Contact::Address(a))
}

typed_header!(From, From, |s| address(s, true).map(From));
typed_header!(To, To, |s| address(s, true).map(To));
typed_header!(Route, Route, |s| address(s, false).map(Route));
typed_header!(RecordRoute, RecordRoute, |s| address(s, false)
    .map(RecordRoute));
typed_header!(Contact, Contact, contact);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::TypedHeader;

    #[test]
    fn name_addr_and_addr_spec() {
        let a = address(
            r#""J Rosenberg \\\""       <sip:jdrosen@example.com>  ;  tag = 98asjd8"#,
            true,
        )
        .unwrap();
        assert_eq!(a.display_name(), Some(r#""J Rosenberg \\\"""#));
        assert_eq!(a.tag(), Some("98asjd8"));
        let a = address("caller<sip:caller@example.com>;tag=323", true).unwrap();
        assert_eq!(a.display_name(), Some("caller"));
        let a = address("sip:+19725552222@gw1.example.net;unknownparam", true).unwrap();
        assert!(a.params().contains("unknownparam"));
        assert!(a.uri().as_sip().unwrap().params().is_empty());
        let a = address("<sip:+19725552222@gw1.example.net;unknownparam>", true).unwrap();
        assert!(a.params().is_empty());
        assert!(a.uri().as_sip().unwrap().params().contains("unknownparam"));
    }

    #[test]
    fn rfc4475_address_faults() {
        for (s, what) in [
            (
                r#""Mr. J. User <sip:j.user@example.com>"#,
                "a closing quote",
            ),
            (
                "Bell, Alexander <sip:a.g.bell@example.com>;tag=43",
                "a display name of tokens, or quoted (\"Bell, Alexander\")",
            ),
            (
                r#""Watson, Thomas" < sip:t.watson@example.org >"#,
                "a URI scheme (a letter, then letters, digits, + - .)",
            ),
            (
                "sip:user@example.com?Route=%3Csip:sip.example.com%3E",
                "angle brackets around a URI with headers (RFC 3261 §20)",
            ),
            (
                "\"Joe\" <sip:joe@example.org>;;;;",
                "a parameter name after ';'",
            ),
        ] {
            match address(s, true) {
                Err(e) => assert_eq!(e.what, what, "{s}"),
                Ok(a) => panic!("{s} parsed: {a:?}"),
            }
        }
    }

    #[test]
    fn contact_forms() {
        assert_eq!(Contact::parse(b"*").unwrap(), Contact::Star);
        let c = Contact::parse(b"\"Quoted string \\\"\\\"\" <sip:jdrosen@example.com> ; newparam =\r\n      newvalue ;\r\n  secondparam ; q = 0.33").unwrap();
        assert_eq!(c.q(), Some(330));
        assert_eq!(
            c.address().unwrap().params().get("newparam"),
            Some(Some("newvalue"))
        );
        assert!(Contact::parse(b"<sip:a@b>;q=1.5").is_err());
        assert_eq!(
            Contact::parse(b"<sip:a@b>;expires=280297596632815")
                .unwrap()
                .expires(),
            None
        );
        assert!(
            Route::parse(b"sip:a@b").is_err(),
            "Route needs angle brackets"
        );
    }

    #[test]
    fn qvalues() {
        assert_eq!(qvalue("0"), Some(0));
        assert_eq!(qvalue("0.7"), Some(700));
        assert_eq!(qvalue("1.000"), Some(1000));
        assert_eq!(qvalue("1.001"), None);
        assert_eq!(qvalue("0.1234"), None);
        assert_eq!(qvalue("2"), None);
    }
}
