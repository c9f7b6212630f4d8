//! RFC 4475 §3.3: application layer semantics. Each message parses; the element then answers
//! as the RFC names.

use p2psip_sip::header::{Authorization, Contact, From, To, Via};
use p2psip_sip::{HeaderName, Host, Role, Uri, check_request};

use super::{answer, assert_refused, assert_valid, parse, request};

/// §3.3.1 Missing mandatory header fields: 400 naming them.
#[test]
fn s3_3_1_insuf() {
    let resp = assert_refused("insuf", 400, "Missing Call-ID, From, To");
    assert!(!resp.headers().contains(HeaderName::CallId));
}

/// §3.3.2 Request-URI with unknown scheme: 416.
#[test]
fn s3_3_2_unkscm() {
    assert_refused("unkscm", 416, "Unsupported URI Scheme");
}

/// §3.3.3 Request-URI with known but atypical scheme: 416 where it is not served.
#[test]
fn s3_3_3_novelsc() {
    assert_refused("novelsc", 416, "Unsupported URI Scheme");
    assert_eq!(request("novelsc").uri().unwrap().scheme(), "soap.beep");
}

/// §3.3.4 Unknown URI schemes in header fields: legal, and they parse as opaque URIs (the
/// registrar's refusal of the binding is step 3's).
#[test]
fn s3_3_4_unksm2() {
    assert_valid("unksm2");
    let req = request("unksm2");
    let h = req.headers();
    assert_eq!(h.typed::<To>().unwrap().unwrap().0.uri().scheme(), "isbn");
    assert_eq!(h.typed::<From>().unwrap().unwrap().0.uri().scheme(), "http");
    let contact = h.typed::<Contact>().unwrap().unwrap();
    assert!(
        matches!(contact.address().unwrap().uri(), Uri::Other(o) if o.as_str() == "name:John_Smith")
    );
}

/// §3.3.5 Proxy-Require and Require for extensions: 420 with Unsupported listing them.
#[test]
fn s3_3_5_bext01() {
    let uas = answer("bext01", Role::Uas).unwrap();
    assert_eq!(uas.status().as_u16(), 420);
    assert_eq!(
        uas.headers().get(HeaderName::Unsupported),
        Some(&b"nothingSupportsThis, nothingSupportsThisEither"[..])
    );
    let proxy = answer("bext01", Role::Proxy).unwrap();
    assert_eq!(proxy.status().as_u16(), 420);
    assert_eq!(
        proxy.headers().get(HeaderName::Unsupported),
        Some(&b"noProxiesSupportThis, norDoAnyProxiesSupportThis"[..])
    );
}

/// §3.3.6 Unknown Content-Type: a UAS answers 415 with Accept.
#[test]
fn s3_3_6_invut() {
    let resp = answer("invut", Role::Uas).unwrap();
    assert_eq!(resp.status().as_u16(), 415);
    assert_eq!(
        resp.headers().get(HeaderName::Accept),
        Some(&b"application/sdp, text/plain"[..])
    );
    assert!(
        answer("invut", Role::Proxy).is_none(),
        "a proxy forwards any body"
    );
}

/// §3.3.7 Unknown authorization scheme: parsed and ignored (the 401 challenge where auth is
/// required is step 3's registrar).
#[test]
fn s3_3_7_regaut01() {
    assert_valid("regaut01");
    let req = request("regaut01");
    let auth = req.headers().typed::<Authorization>().unwrap().unwrap();
    assert!(!auth.0.is_digest());
    assert_eq!(auth.0.scheme(), "NoOneKnowsThisScheme");
}

/// §3.3.8 Multiple values in single-value required fields: 400.
#[test]
fn s3_3_8_multi01() {
    assert_refused("multi01", 400, "Multiple Call-ID headers");
}

/// §3.3.9 Multiple Content-Length values: 400.
#[test]
fn s3_3_9_mcl01() {
    assert_refused("mcl01", 400, "Bad Content-Length");
}

/// §3.3.10 200 OK response with broadcast Via header field value: parses; the broadcast hop
/// is recognisable so that it is never used as a destination.
#[test]
fn s3_3_10_bcast() {
    assert_valid("bcast");
    let m = parse("bcast");
    let vias: Vec<_> = m.headers().typed_all::<Via>().map(|v| v.unwrap()).collect();
    assert!(matches!(vias[1].host(), Host::Ipv4(a) if a.is_broadcast()));
    assert!(
        answer("bcast", Role::Proxy).is_none(),
        "a response is never answered"
    );
}

/// §3.3.11 Max-Forwards of zero: a proxy answers 483; a UAS (an OPTIONS aimed at it) may
/// answer 200.
#[test]
fn s3_3_11_zeromf() {
    assert_refused_as_proxy_only("zeromf", 483);
}

fn assert_refused_as_proxy_only(name: &str, status: u16) {
    assert_eq!(answer(name, Role::Proxy).unwrap().status().as_u16(), status);
    assert!(check_request(&request(name), &p2psip_sip::Policy::with_role(Role::Uas)).is_ok());
}

/// §3.3.12 REGISTER with a contact header parameter.
#[test]
fn s3_3_12_cparam01() {
    assert_valid("cparam01");
    assert_eq!(where_is_unknownparam("cparam01"), Where::Header);
}

/// §3.3.13 REGISTER with a URL parameter.
#[test]
fn s3_3_13_cparam02() {
    assert_valid("cparam02");
    assert_eq!(where_is_unknownparam("cparam02"), Where::Uri);
}

#[derive(Debug, PartialEq)]
enum Where {
    Header,
    Uri,
}

/// Whether the Contact's `unknownparam` was read as a header parameter or a URI parameter
/// (never both).
fn where_is_unknownparam(name: &str) -> Where {
    let req = request(name);
    let contact = req.headers().typed::<Contact>().unwrap().unwrap();
    let a = contact.address().unwrap();
    let in_uri = a.uri().as_sip().unwrap().params().contains("unknownparam");
    match (a.params().contains("unknownparam"), in_uri) {
        (true, false) => Where::Header,
        (false, true) => Where::Uri,
        other => panic!("{name}: header/URI parameter: {other:?}"),
    }
}

/// §3.3.14 REGISTER with a URL escaped header: the escaped Route survives.
#[test]
fn s3_3_14_regescrt() {
    assert_valid("regescrt");
    let req = request("regescrt");
    let contact = req.headers().typed::<Contact>().unwrap().unwrap();
    let uri = contact.address().unwrap().uri().as_sip().unwrap().clone();
    assert_eq!(
        uri.headers().collect::<Vec<_>>(),
        [("Route", "%3Csip:sip.example.com%3E")]
    );
}

/// §3.3.15 Unacceptable Accept offering: a UAS answers 406.
#[test]
fn s3_3_15_sdp01() {
    assert_eq!(answer("sdp01", Role::Uas).unwrap().status().as_u16(), 406);
}
