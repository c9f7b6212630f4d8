//! RFC 4475, "SIP Torture Test Messages": one test per section, named after it, checking each
//! message as `tests/data/rfc4475/README.md` and the shared conformance notes say: valid
//! messages parse with every typed header; invalid ones are refused with the response the RFC
//! names (a request) or dropped (a response).

// Test helpers panic to fail the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod s3_1_1_valid;
mod s3_1_2_invalid;
mod s3_2_transaction;
mod s3_3_application;
mod s3_4_backward;

use bytes::Bytes;
use p2psip_sip::header::{
    Accept, Allow, Authorization, CSeq, CallId, Contact, ContentLength, ContentType, Date, Event,
    Expires, From, MaxForwards, MinExpires, ProxyAuthenticate, ProxyAuthorization, ProxyRequire,
    RecordRoute, Require, Route, SubscriptionState, Supported, To, TypedHeader, Unsupported, Via,
    WwwAuthenticate,
};
use p2psip_sip::{
    Error, HeaderName, Headers, Message, Policy, Rejection, Request, Response, Role, StatusCode,
    check_request, check_response,
};

/// Every message of the corpus, so that a file nobody checks is noticed.
const CORPUS: [&str; 49] = [
    "badaspec",
    "badbranch",
    "baddate",
    "baddn",
    "badinv01",
    "badvers",
    "bcast",
    "bext01",
    "bigcode",
    "clerr",
    "cparam01",
    "cparam02",
    "dblreq",
    "esc01",
    "esc02",
    "escnull",
    "escruri",
    "insuf",
    "intmeth",
    "inv2543",
    "invut",
    "longreq",
    "ltgtruri",
    "lwsdisp",
    "lwsruri",
    "lwsstart",
    "mcl01",
    "mismatch01",
    "mismatch02",
    "mpart01",
    "multi01",
    "ncl",
    "noreason",
    "novelsc",
    "quotbal",
    "regaut01",
    "regbadct",
    "regescrt",
    "scalar02",
    "scalarlg",
    "sdp01",
    "semiuri",
    "transports",
    "trws",
    "unkscm",
    "unksm2",
    "unreason",
    "wsinv",
    "zeromf",
];

fn raw(name: &str) -> Bytes {
    let path = format!("tests/data/rfc4475/{name}.dat");
    Bytes::from(std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
}

fn parse(name: &str) -> Message {
    Message::parse(raw(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn request(name: &str) -> Request {
    match parse(name) {
        Message::Request(r) => r,
        Message::Response(_) => panic!("{name} is a response"),
    }
}

fn response(name: &str) -> Response {
    match parse(name) {
        Message::Response(r) => r,
        Message::Request(_) => panic!("{name} is a request"),
    }
}

/// Parses every header of every type this crate knows; panics naming the first failure.
fn all_typed_ok(name: &str, h: &Headers) {
    fn each<'a, H: TypedHeader<'a>>(name: &str, h: &'a Headers) {
        for v in h.typed_all::<H>() {
            if let Err(e) = v {
                panic!("{name}: {e}");
            }
        }
    }
    each::<Via>(name, h);
    each::<From>(name, h);
    each::<To>(name, h);
    each::<CallId>(name, h);
    each::<CSeq>(name, h);
    each::<Contact>(name, h);
    each::<MaxForwards>(name, h);
    each::<ContentLength>(name, h);
    each::<ContentType>(name, h);
    each::<Route>(name, h);
    each::<RecordRoute>(name, h);
    each::<Expires>(name, h);
    each::<MinExpires>(name, h);
    each::<Accept>(name, h);
    each::<Allow>(name, h);
    each::<Supported>(name, h);
    each::<Require>(name, h);
    each::<ProxyRequire>(name, h);
    each::<Unsupported>(name, h);
    each::<Authorization>(name, h);
    each::<ProxyAuthorization>(name, h);
    each::<WwwAuthenticate>(name, h);
    each::<ProxyAuthenticate>(name, h);
    each::<Event>(name, h);
    each::<SubscriptionState>(name, h);
    each::<Date>(name, h);
}

/// What the element answers to `name` in `role`: the response to send, or `None` when the
/// message is accepted (a request) or dropped (a response).
fn answer(name: &str, role: Role) -> Option<Response> {
    let policy = Policy::with_role(role);
    let bytes = raw(name);
    match Message::parse(bytes.clone()) {
        Err(e) => Rejection::from_error(&e).response_to_raw(&bytes, Some("t4475"), &policy),
        Ok(Message::Request(req)) => check_request(&req, &policy)
            .err()
            .map(|r| r.response(&req, Some("t4475"), &policy)),
        Ok(Message::Response(_)) => None,
    }
}

/// Asserts that `name` is refused with `status` and a reason phrase starting with `reason`,
/// as both a proxy and a UAS, and that the response is a well-formed answer to it.
fn assert_refused(name: &str, status: u16, reason: &str) -> Response {
    let mut last = None;
    for role in [Role::Proxy, Role::Uas] {
        let resp = answer(name, role).unwrap_or_else(|| panic!("{name} was accepted as {role:?}"));
        assert_eq!(resp.status().as_u16(), status, "{name} as {role:?}: {resp}");
        assert!(
            resp.reason().starts_with(reason),
            "{name}: reason {:?}",
            resp.reason()
        );
        assert_well_formed_answer(name, &resp);
        last = Some(resp);
    }
    last.unwrap()
}

/// The response reparses, carries the request's Via, Call-ID and CSeq, a To tag, and a
/// Content-Length; it never echoes a broken start line.
fn assert_well_formed_answer(name: &str, resp: &Response) {
    let again = Message::parse(resp.to_bytes())
        .unwrap_or_else(|e| panic!("{name}: answer does not reparse: {e}"));
    assert_eq!(again.headers(), resp.headers());
    let h = resp.headers();
    assert!(h.contains(HeaderName::Via), "{name}: answer has no Via");
    assert_eq!(h.get(HeaderName::ContentLength), Some(&b"0"[..]));
    let raw = raw(name);
    let req = std::str::from_utf8(&raw).unwrap_or_default();
    if let Some(call_id) = h.get(HeaderName::CallId) {
        assert!(
            req.contains(std::str::from_utf8(call_id).unwrap()),
            "{name}: Call-ID not copied"
        );
    }
    if let Some(to) = h.get(HeaderName::To) {
        assert!(
            to.windows(5).any(|w| w == b";tag="),
            "{name}: the answer's To has no tag"
        );
    }
}

/// Asserts that `name`, a response, is dropped: it does not parse or fails its checks, and
/// nothing is ever sent back.
fn assert_dropped(name: &str) -> Error {
    let err = match Message::parse(raw(name)) {
        Ok(Message::Response(r)) => check_response(&r).expect_err(name),
        Ok(Message::Request(_)) => panic!("{name} is a request"),
        Err(e) => e,
    };
    assert!(
        answer(name, Role::Proxy).is_none(),
        "{name}: a response was answered"
    );
    err
}

/// Asserts that `name` parses fully and that neither role refuses it with 400 or 505.
fn assert_valid(name: &str) -> Message {
    let m = parse(name);
    all_typed_ok(name, m.headers());
    match &m {
        Message::Request(req) => {
            for role in [Role::Proxy, Role::Uas] {
                if let Err(r) = check_request(req, &Policy::with_role(role)) {
                    assert!(
                        ![StatusCode::BAD_REQUEST, StatusCode::VERSION_NOT_SUPPORTED]
                            .contains(&r.status),
                        "{name} refused as {role:?}: {r:?}"
                    );
                }
            }
        }
        Message::Response(resp) => check_response(resp).unwrap_or_else(|e| panic!("{name}: {e}")),
    }
    let printed = m.to_bytes();
    assert_eq!(printed.len(), m.encoded_len(), "{name}: encoded_len");
    let again = Message::parse(printed.clone()).unwrap_or_else(|e| panic!("{name}: reparse: {e}"));
    assert_eq!(again.to_bytes(), printed, "{name}: print -> parse -> print");
    m
}

#[test]
fn every_corpus_file_is_checked() {
    let dir = "tests/data/rfc4475";
    let mut found: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter_map(|f| f.strip_suffix(".dat").map(String::from))
        .collect();
    found.sort();
    assert_eq!(found, CORPUS);
}
