//! Shared checks of the fuzz targets: read everything a parsed message offers, and check
//! that printing it and parsing the print gives it back.

use p2psip_sip::header::{self as h, TypedHeader};
use p2psip_sip::{
    Error, HeaderName, Headers, Host, Message, Method, Params, Policy, Rejection, Role, Uri,
    check_request, check_response, unescape, unquote,
};

/// The policies requests are checked against.
pub fn policies() -> [Policy; 2] {
    [Policy::with_role(Role::Proxy), Policy::with_role(Role::Uas)]
}

/// Prints `m`, parses the print, prints again: same bytes, equal message, and `encoded_len`
/// equal to the printed length.
pub fn assert_round_trip(m: &Message) {
    let p1 = m.to_bytes();
    assert_eq!(m.encoded_len(), p1.len(), "encoded_len != printed length");
    let m2 = match Message::parse(p1.clone()) {
        Ok(m2) => m2,
        Err(e) => panic!("the print does not parse ({e}): {}", p1.escape_ascii()),
    };
    assert_eq!(
        m2.to_bytes(),
        p1,
        "print -> parse -> print is not the identity"
    );
    assert_eq!(&m2, m, "parse(print(m)) != m");
}

/// Everything a parsed message offers: every typed header, the Request-URI, the checks, and
/// the responses the checks build.
pub fn exercise_message(m: &Message) {
    let hs = m.headers();
    for f in hs.iter() {
        let _ = (f.value_str(), f.name_str(), hs.get_by_name(f.name_str()));
    }
    typed_in_headers(hs);
    let _ = m.to_string();
    match m {
        Message::Request(r) => {
            if let Ok(u) = r.uri() {
                visit_uri(&u);
            }
            for policy in policies() {
                if let Err(rej) = check_request(r, &policy) {
                    let resp = rej.response(r, Some("fuzz"), &policy);
                    assert_round_trip(&Message::Response(resp.clone()));
                    let _ = check_response(&resp);
                }
            }
        }
        Message::Response(r) => {
            let _ = (r.reason(), check_response(r));
        }
    }
}

/// The answer to bytes that did not parse (or did not pass the checks).
pub fn answer_raw(e: &Error, raw: &[u8]) {
    let _ = e.to_string();
    let rej = Rejection::from_error(e);
    for policy in policies() {
        if let Some(resp) = rej.response_to_raw(raw, Some("fuzz"), &policy) {
            assert!(resp.headers().contains(HeaderName::Via));
            assert_round_trip(&Message::Response(resp));
        }
    }
}

/// Calls every accessor of a typed header value.
pub trait Visit {
    /// Reads everything.
    fn visit(&self);
}

fn visit_params(p: Params<'_>) {
    let _ = format!("{p:?}");
    for (name, value) in p.iter() {
        assert!(p.contains(name));
        let _ = p.value(name);
        if let Some(v) = value {
            let _ = (unquote(v), unescape(v));
        }
    }
}

fn visit_host(host: Host<'_>) {
    let _ = host.to_string();
}

/// Every accessor of a URI.
pub fn visit_uri(u: &Uri<'_>) {
    let _ = (u.as_str(), u.scheme(), u.to_string());
    match u {
        Uri::Sip(s) => {
            let _ = (
                s.is_secure(),
                s.password(),
                s.port(),
                s.user().map(unescape),
            );
            visit_host(s.host());
            visit_params(s.params());
            assert_eq!(s.has_headers(), s.headers().next().is_some());
            for (n, v) in s.headers() {
                let _ = (unescape(n), unescape(v));
            }
        }
        Uri::Tel(t) => {
            let _ = t.number();
            visit_params(t.params());
        }
        Uri::Other(o) => {
            let _ = o.scheme();
        }
    }
}

fn visit_address(a: &h::Address<'_>) {
    let _ = (a.display_name().map(unquote), a.is_bracketed(), a.tag());
    visit_uri(a.uri());
    visit_params(a.params());
}

fn visit_auth(a: &h::Auth<'_>) {
    let _ = (a.scheme(), a.is_digest());
    for (n, v) in a.params() {
        assert!(a.param(n).is_some());
        let _ = unquote(v);
    }
}

fn visit_media(m: &h::MediaType<'_>) {
    let _ = (m.ty(), m.subtype(), m.is("application", "sdp"));
    let _ = m.covers("application", "sdp");
    visit_params(m.params());
}

macro_rules! visit_impls {
    ($($ty:ty => |$v:ident| $body:block)*) => {$(
        impl Visit for $ty {
            fn visit(&self) {
                let $v = self;
                let _ = format!("{:?}", $v);
                $body
            }
        }
    )*};
}

visit_impls! {
    h::Accept<'_> => |v| { visit_media(&v.0) }
    h::Allow => |v| { let _ = v.0.as_str(); }
    h::Authorization<'_> => |v| { visit_auth(&v.0) }
    h::CSeq<'_> => |v| { let _ = (v.seq(), v.method_str(), v.method(), v.is(&Method::Invite)); }
    h::CallId<'_> => |v| { let _ = v.0; }
    h::Contact<'_> => |v| {
        let _ = (v.expires(), v.q());
        if let Some(a) = v.address() {
            visit_address(a);
        }
    }
    h::ContentLength => |v| { let _ = v.0; }
    h::ContentType<'_> => |v| { visit_media(&v.0) }
    h::Date => |v| { let _ = (v.year, v.month, v.day, v.hour, v.minute, v.second); }
    h::Event<'_> => |v| {
        let _ = (v.package(), v.id());
        visit_params(v.params());
    }
    h::Expires => |v| { let _ = v.0; }
    h::From<'_> => |v| { visit_address(&v.0) }
    h::MaxForwards => |v| { let _ = v.0; }
    h::MinExpires => |v| { let _ = v.0; }
    h::ProxyAuthenticate<'_> => |v| { visit_auth(&v.0) }
    h::ProxyAuthorization<'_> => |v| { visit_auth(&v.0) }
    h::ProxyRequire<'_> => |v| { let _ = v.0; }
    h::RecordRoute<'_> => |v| { visit_address(&v.0) }
    h::Require<'_> => |v| { let _ = v.0; }
    h::Route<'_> => |v| { visit_address(&v.0) }
    h::SubscriptionState<'_> => |v| {
        let _ = (v.state(), v.expires(), v.reason(), v.retry_after());
        visit_params(v.params());
    }
    h::Supported<'_> => |v| { let _ = v.0; }
    h::To<'_> => |v| { visit_address(&v.0) }
    h::Unsupported<'_> => |v| { let _ = v.0; }
    h::Via<'_> => |v| {
        let _ = (v.protocol(), v.version(), v.transport(), v.port(), v.branch());
        let _ = (v.has_rfc3261_branch(), v.received(), v.rport(), v.maddr(), v.ttl());
        visit_host(v.host());
        visit_params(v.params());
    }
    h::WwwAuthenticate<'_> => |v| { visit_auth(&v.0) }
}

/// Calls `$f::<Type>($arg)` for every typed header type of `p2psip_sip::header`.
macro_rules! for_each_typed_header {
    ($f:ident, $arg:expr) => {{
        $f::<h::Accept<'_>>($arg);
        $f::<h::Allow>($arg);
        $f::<h::Authorization<'_>>($arg);
        $f::<h::CSeq<'_>>($arg);
        $f::<h::CallId<'_>>($arg);
        $f::<h::Contact<'_>>($arg);
        $f::<h::ContentLength>($arg);
        $f::<h::ContentType<'_>>($arg);
        $f::<h::Date>($arg);
        $f::<h::Event<'_>>($arg);
        $f::<h::Expires>($arg);
        $f::<h::From<'_>>($arg);
        $f::<h::MaxForwards>($arg);
        $f::<h::MinExpires>($arg);
        $f::<h::ProxyAuthenticate<'_>>($arg);
        $f::<h::ProxyAuthorization<'_>>($arg);
        $f::<h::ProxyRequire<'_>>($arg);
        $f::<h::RecordRoute<'_>>($arg);
        $f::<h::Require<'_>>($arg);
        $f::<h::Route<'_>>($arg);
        $f::<h::SubscriptionState<'_>>($arg);
        $f::<h::Supported<'_>>($arg);
        $f::<h::To<'_>>($arg);
        $f::<h::Unsupported<'_>>($arg);
        $f::<h::Via<'_>>($arg);
        $f::<h::WwwAuthenticate<'_>>($arg);
    }};
}

fn one_type_in_headers<'a, H: TypedHeader<'a> + Visit>(headers: &'a Headers) {
    if let Some(Ok(v)) = headers.typed::<H>() {
        v.visit();
    }
    for r in headers.typed_all::<H>() {
        match r {
            Ok(v) => v.visit(),
            Err(e) => {
                let _ = (e.to_string(), Rejection::from_error(&e));
            }
        }
    }
}

fn one_type_direct<'a, H: TypedHeader<'a> + Visit>(value: &'a [u8]) {
    match H::parse(value) {
        Ok(v) => v.visit(),
        Err(e) => {
            let _ = (e.to_string(), Rejection::from_error(&e));
        }
    }
}

/// Every typed header, with `typed` and `typed_all`, on a message's header section.
pub fn typed_in_headers(headers: &Headers) {
    for_each_typed_header!(one_type_in_headers, headers);
}

/// Every typed header parser on one value.
pub fn typed_direct(value: &[u8]) {
    for_each_typed_header!(one_type_direct, value);
}
