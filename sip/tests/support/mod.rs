//! Checks shared by the property tests (`sip/tests/properties.rs`, as `mod support`) and the
//! fuzz targets (`sip/fuzz/src/lib.rs`, through `#[path]`): read everything a parsed message
//! offers, and check that printing it and parsing the print gives it back.
//!
//! Both crates compile this file, so it must not need more than they share: `p2psip_sip` and
//! `std` (no proptest, no `bytes`). The entry points are `pub` so that the fuzz crate can
//! re-export them; the helpers behind them stay private.

use p2psip_sip::header::{self as h, TypedHeader};
use p2psip_sip::{
    Error, Frame, HeaderName, Headers, Host, Limits, Message, Method, Params, Policy, Rejection,
    Request, Role, Uri, check_request, check_response, unescape, unquote,
};

/// Bytes as escaped ASCII, for assertion messages.
pub fn show(b: &[u8]) -> String {
    b.escape_ascii().to_string()
}

/// The policies requests are checked against: the default (a proxy), a UAS, and a strict
/// UAS that supports extensions, accepts only SDP, and takes `tel` URIs.
pub fn policies() -> [Policy; 3] {
    let strict = Policy {
        role: Role::Uas,
        schemes: vec!["sip".into(), "sips".into(), "tel".into()],
        supported: vec!["100rel".into(), "timer".into()],
        accept: vec!["application/sdp".into()],
        agent: "test-agent".into(),
    };
    [Policy::default(), Policy::with_role(Role::Uas), strict]
}

/// Prints `m`, parses the print, prints again: the same bytes, an equal message, and
/// `encoded_len` and `encode` agreeing with `to_bytes`.
pub fn assert_round_trip(m: &Message) {
    let p1 = m.to_bytes();
    assert_eq!(
        m.encoded_len(),
        p1.len(),
        "encoded_len differs from the printed length of {}",
        show(&p1)
    );
    // A `BytesMut`, named by inference: the fuzz crate does not depend on `bytes`.
    let mut out = Default::default();
    m.encode(&mut out);
    assert_eq!(&out[..], &p1[..], "encode and to_bytes differ");
    let m2 = Message::parse(p1.clone())
        .unwrap_or_else(|e| panic!("the print of a message does not parse ({e}): {}", show(&p1)));
    let p2 = m2.to_bytes();
    assert_eq!(
        show(&p2),
        show(&p1),
        "print -> parse -> print is not the identity"
    );
    assert_eq!(&m2, m, "parse(print(m)) != m for {}", show(&p1));
}

/// Reads an error, and checks that the rejection it makes is an error response.
pub fn visit_error(e: &Error) {
    let _ = (e.to_string(), format!("{e:?}"));
    let rej = Rejection::from_error(e);
    assert!(rej.status.as_u16() >= 400, "{e:?} -> {rej:?}");
}

/// One datagram: if it parses, the round trip, everything readable from it, and the answer to
/// its raw bytes under every policy that rejects it; if not, the error and the answer to the
/// raw bytes.
pub fn exercise_datagram(input: &[u8]) {
    match Message::parse(input.to_vec()) {
        Ok(m) => {
            assert_round_trip(&m);
            exercise_message(&m);
            if let Some(r) = m.as_request() {
                for policy in policies() {
                    if let Err(rej) = check_request(r, &policy) {
                        answer_raw(&rej, input, &policy);
                    }
                }
            }
        }
        Err(e) => {
            visit_error(&e);
            let rej = Rejection::from_error(&e);
            for policy in policies() {
                answer_raw(&rej, input, &policy);
            }
        }
    }
}

/// The answer to raw bytes, if there is one, is a response with a Via that prints and parses
/// back.
pub fn answer_raw(rej: &Rejection, input: &[u8], policy: &Policy) {
    if let Some(resp) = rej.response_to_raw(input, Some("t1"), policy) {
        assert!(resp.headers().contains(HeaderName::Via));
        assert_round_trip(&Message::Response(resp.clone()));
        let _ = check_response(&resp);
    }
}

/// Everything a parsed message offers: its header fields, every typed header (with `typed`
/// and `typed_all`), the start line and Request-URI, the checks under every policy and the
/// responses they build, and proxy-like edits of a request.
pub fn exercise_message(m: &Message) {
    let hs = m.headers();
    assert_eq!(hs.iter().count(), hs.len());
    assert_eq!(hs.is_empty(), hs.iter().next().is_none());
    for f in hs.iter() {
        let _ = (f.value_str(), f.line, format!("{f:?}"));
        assert!(hs.contains(f.name));
        assert!(hs.get(f.name).is_some());
        assert!(hs.count(f.name) >= 1);
        assert!(hs.get_by_name(f.name_str()).is_some());
    }
    typed_in_headers(hs);
    let _ = (m.body().len(), m.to_string(), format!("{m:?}"));
    match m {
        Message::Request(r) => {
            assert!(m.as_request().is_some() && m.as_response().is_none());
            let _ = (r.method().to_string(), r.uri_str(), r.version().to_string());
            match r.uri() {
                Ok(u) => {
                    visit_uri(&u);
                    assert_eq!(u.as_str(), r.uri_str());
                }
                Err(e) => visit_error(&e),
            }
            for policy in policies() {
                if let Err(rej) = check_request(r, &policy) {
                    assert!(rej.status.as_u16() >= 400, "{rej:?}");
                    let resp = rej.response(r, Some("t0"), &policy);
                    assert_round_trip(&Message::Response(resp.clone()));
                    let _ = check_response(&resp);
                }
            }
            proxy_edits_round_trip(r);
        }
        Message::Response(r) => {
            assert!(m.as_response().is_some() && m.as_request().is_none());
            let _ = (r.status().as_u16(), r.reason(), r.version().to_string());
            if let Err(e) = check_response(r) {
                visit_error(&e);
            }
        }
    }
}

/// What a proxy does to a request it forwards keeps the request printable and parseable.
fn proxy_edits_round_trip(r: &Request) {
    let mut fwd = r.clone();
    let hs = fwd.headers_mut();
    hs.push_front(
        HeaderName::Via,
        b"SIP/2.0/TCP proxy.example.net;branch=z9hG4bKproxy1",
    );
    hs.set(HeaderName::MaxForwards, b"69");
    hs.remove_first(HeaderName::Route);
    hs.push_named("X-Forwarded-By", b"proptest");
    hs.push(HeaderName::RecordRoute, b"<sip:p.example.net;lr>");
    let via = fwd.headers().typed::<h::Via>();
    assert_eq!(
        via.map(|v| v.map(|v| v.branch().map(String::from))),
        Some(Ok(Some("z9hG4bKproxy1".into())))
    );
    assert_eq!(
        fwd.headers().typed::<h::MaxForwards>(),
        Some(Ok(h::MaxForwards(69)))
    );
    assert_round_trip(&Message::Request(fwd.clone()));
    // Retargeting and replacing the body keep it printable too.
    let target = "sip:retarget@192.0.2.7:5070;transport=tcp";
    assert_eq!(fwd.set_uri(target), Ok(()));
    fwd.set_body("text/plain", &b"new body\r\n"[..]);
    assert_eq!(fwd.uri_str(), target);
    assert_eq!(
        fwd.headers().typed::<h::ContentLength>(),
        Some(Ok(h::ContentLength(10)))
    );
    assert_round_trip(&Message::Request(fwd));
}

/// A frame a stream decoder yielded, from the bytes it consumed for it: a keepalive is what
/// it says, and a message is what the datagram parser (under the same limits) makes of the
/// bytes, and survives everything.
pub fn check_frame(frame: &Frame, bytes: &[u8], limits: &Limits) {
    // Stray LFs, and CRs not followed by LF, before a frame are dropped by the decoder, as
    // the datagram parser skips them.
    let mut start = 0;
    while match bytes.get(start) {
        Some(b'\n') => true,
        Some(b'\r') => bytes.get(start + 1).is_some_and(|&b| b != b'\n'),
        _ => false,
    } {
        start += 1;
    }
    let bytes = &bytes[start..];
    match frame {
        Frame::Ping => assert_eq!(bytes, Frame::PING),
        Frame::Pong => assert_eq!(bytes, Frame::PONG),
        Frame::Message(m) => {
            let datagram = Message::parse_with(bytes.to_vec(), limits).unwrap_or_else(|e| {
                panic!(
                    "the stream framed {} but the datagram parser says {e}",
                    show(bytes)
                )
            });
            assert_eq!(
                &datagram,
                m,
                "stream and datagram disagree on {}",
                show(bytes)
            );
            exercise_message(m);
            assert_round_trip(m);
        }
    }
}

/// A URI as text: if it parses, every accessor, and a request to it that prints and parses
/// back; if not, the error.
pub fn exercise_uri(s: &str) {
    match Uri::parse(s) {
        Ok(u) => {
            visit_uri(&u);
            assert_eq!(u.as_str(), s);
            let req = Request::new(Method::Options, s)
                .unwrap_or_else(|e| panic!("the URI {s:?} parses but is no Request-URI: {e}"));
            assert_eq!(req.uri_str(), s);
            assert_round_trip(&Message::Request(req));
        }
        Err(e) => visit_error(&e),
    }
}

// ------------------------------------------------------------------------------------------
// Reading every accessor.
// ------------------------------------------------------------------------------------------

/// Calls every accessor of a typed header value.
trait Visit {
    /// Reads everything.
    fn visit(&self);
}

fn visit_params(p: Params<'_>) {
    let _ = (p.as_str(), p.is_empty(), format!("{p:?}"));
    for (name, value) in p.iter() {
        assert!(p.contains(name), "{name:?} listed but not found in {p:?}");
        let _ = p.get(name);
        let _ = p.value(name);
        if let Some(v) = value {
            let _ = unquote(v);
            let _ = unescape(v);
        }
    }
}

fn visit_host(host: Host<'_>) {
    let _ = host.to_string();
}

/// Every accessor of a URI.
pub fn visit_uri(u: &Uri<'_>) {
    let _ = (u.as_str(), u.scheme(), u.to_string(), format!("{u:?}"));
    match u {
        Uri::Sip(s) => {
            assert_eq!(u.as_sip(), Some(s));
            let _ = (s.is_secure(), s.password(), s.port(), s.as_str());
            if let Some(user) = s.user() {
                let _ = unescape(user);
            }
            visit_host(s.host());
            visit_params(s.params());
            let headers = s.headers().count();
            assert_eq!(s.has_headers(), headers > 0);
            for (n, v) in s.headers() {
                let _ = (unescape(n), unescape(v));
            }
        }
        Uri::Tel(t) => {
            let _ = t.number();
            visit_params(t.params());
        }
        Uri::Other(o) => {
            let _ = (o.scheme(), o.as_str());
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
        assert!(
            a.param(n).is_some(),
            "auth param {n:?} listed but not found"
        );
        let _ = unquote(v);
    }
    let _ = (a.param("realm"), a.param("nonce"), a.param("uri"));
}

fn visit_media(m: &h::MediaType<'_>) {
    let _ = (m.ty(), m.subtype(), m.is("application", "sdp"));
    let _ = (m.covers("application", "sdp"), m.covers("*", "*"));
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
    h::From<'_> => |v| {
        assert_eq!(v.tag(), v.0.tag());
        visit_address(&v.0);
    }
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
    h::To<'_> => |v| {
        assert_eq!(v.tag(), v.0.tag());
        visit_address(&v.0);
    }
    h::Unsupported<'_> => |v| { let _ = v.0; }
    h::Via<'_> => |v| {
        let _ = (v.protocol(), v.version(), v.transport(), v.port(), v.branch());
        let _ = (v.has_rfc3261_branch(), v.received(), v.rport(), v.maddr(), v.ttl());
        visit_host(v.host());
        visit_params(v.params());
    }
    h::WwwAuthenticate<'_> => |v| { visit_auth(&v.0) }
}

/// Every typed header type of `p2psip_sip::header`, given to `$f::<Type>($arg)`.
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

/// Every typed header, with `typed` and `typed_all`, on a message's header section.
pub fn typed_in_headers(headers: &Headers) {
    for_each_typed_header!(one_type_in_headers, headers);
}

/// Every typed header parser on one value.
pub fn typed_direct(value: &[u8]) {
    for_each_typed_header!(one_type_direct, value);
}

/// Reads every value of header `H` from `headers`.
fn one_type_in_headers<'a, H: TypedHeader<'a> + Visit>(headers: &'a Headers) {
    match headers.typed::<H>() {
        None => assert_eq!(headers.typed_all::<H>().count(), 0),
        Some(Ok(v)) => v.visit(),
        Some(Err(e)) => visit_error(&e),
    }
    let mut n = 0;
    for r in headers.typed_all::<H>() {
        n += 1;
        match r {
            Ok(v) => v.visit(),
            Err(e) => visit_error(&e),
        }
    }
    let bound: usize = headers
        .get_all(H::NAME)
        .map(|f| f.value.iter().filter(|&&b| b == b',').count() + 1)
        .sum();
    assert!(
        n <= bound,
        "{n} values of {:?} from {bound} possible",
        H::NAME
    );
}

/// Parses `value` as one value of header `H`.
fn one_type_direct<'a, H: TypedHeader<'a> + Visit>(value: &'a [u8]) {
    match H::parse(value) {
        Ok(v) => v.visit(),
        Err(e) => visit_error(&e),
    }
}
