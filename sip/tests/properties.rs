//! Property tests of the SIP message layer, driven by proptest.
//!
//! What is checked:
//!
//! - **No input panics** ([`exercise_bytes`]): arbitrary bytes, SIP-shaped noise, and random
//!   edits of the RFC 4475 torture messages go through [`Message::parse`], through
//!   [`StreamDecoder`] fed in random chunk sizes, and, for whatever parses, through every typed
//!   header of `p2psip_sip::header` (with `typed_all`), the Request-URI, `check_request`,
//!   `check_response` and the rejection responses; for whatever does not parse, through
//!   [`Rejection::from_error`] and [`Rejection::response_to_raw`].
//! - **print -> parse -> print is the identity** ([`assert_round_trip`]) for every message that
//!   parses (corpus, mutated corpus, generated, noise), for the responses built by
//!   [`Rejection`], and after proxy-like edits of a parsed request; `encoded_len` is the length
//!   printed, and parsing the print gives back an equal message.
//! - **Stream framing equals datagram parsing**: every message a [`StreamDecoder`] yields is
//!   what [`Message::parse`] makes of the bytes it consumed; feeding in chunks gives the same
//!   frames as feeding at once; generated messages with a correct Content-Length, concatenated
//!   with keepalives and split anywhere, come out as the datagram parser reads each one.
//! - **Generated well-formed messages** ([`gen_msg`]) parse to what was generated (start line,
//!   Via branches and hosts, tags, Call-ID, CSeq, extension headers, body) and pass
//!   `check_request` / `check_response`.
//!
//! Each property runs a modest number of cases (the file takes a few seconds in debug mode);
//! set `PROPTEST_CASES` to run more. Failures are not persisted to disk (shrunk inputs are
//! printed instead).
//!
//! Bugs these properties found in the library are kept at the end of the file as plain tests
//! named `regression_*`, each with its minimal input.
//!
//! The checks that read a parsed message (and the round trip) are in [`support`], shared with
//! the fuzz targets of `sip/fuzz`; the generators, the stream runs and the regressions are here.

#![allow(clippy::unwrap_used)]

use std::fmt::Debug;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::ops::Range;
use std::sync::OnceLock;

use bytes::Bytes;
use p2psip_sip::header::{self as h, TypedHeader};
use p2psip_sip::{
    Error, Frame, HeaderName, Headers, Limits, Message, Method, Policy, Rejection, Request,
    Response, Role, StatusCode, StreamDecoder, check_request, check_response,
};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::{Index, select};

// Shared with the fuzz targets (sip/fuzz/src/lib.rs), which re-export its `pub` items; `pub`
// here too, as a private module would make them unreachable `pub` items.
pub mod support;

use support::{
    assert_round_trip, check_frame, exercise_datagram, exercise_message, exercise_uri, show,
    typed_direct, visit_error,
};

/// The RFC 4475 torture messages (cargo runs tests in their package's directory).
const CORPUS_DIR: &str = "tests/data/rfc4475";

fn corpus() -> &'static [(String, Vec<u8>)] {
    static CORPUS: OnceLock<Vec<(String, Vec<u8>)>> = OnceLock::new();
    CORPUS.get_or_init(|| {
        let mut files: Vec<_> = std::fs::read_dir(CORPUS_DIR)
            .unwrap_or_else(|e| panic!("reading {CORPUS_DIR}: {e}"))
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "dat"))
            .collect();
        files.sort();
        files
            .into_iter()
            .map(|p| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read(&p).unwrap())
            })
            .collect()
    })
}

fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        cases,
        // Only sip/tests/properties.rs belongs to these tests: no regression files.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// The no-panic checks of one input: the datagram checks of [`exercise_datagram`], and the
/// stream decoder in the given chunks, which must frame the same as when fed all at once.
fn exercise_bytes(input: &[u8], chunks: &[usize]) {
    exercise_datagram(input);
    let chunked = run_stream(input, chunks, &Limits::default());
    let whole = run_stream(input, &[usize::MAX], &Limits::default());
    assert_same_stream(&chunked, &whole, input);
}

// ------------------------------------------------------------------------------------------
// The stream decoder.
// ------------------------------------------------------------------------------------------

/// What a stream decoder made of an input: the frames with the byte range each consumed,
/// and the error that stopped it, if any.
#[derive(Debug)]
struct StreamRun {
    frames: Vec<(Frame, Range<usize>)>,
    error: Option<Error>,
}

/// Feeds `input` to a decoder in chunks of the given sizes (cycled; 0 counts as 1), decoding
/// after each until it needs more bytes or fails. Checks that every message it yields is what
/// the datagram parser makes of the bytes it consumed.
fn run_stream(input: &[u8], chunks: &[usize], limits: &Limits) -> StreamRun {
    let mut d = StreamDecoder::new(limits.clone());
    let _ = format!("{d:?}");
    let mut run = StreamRun {
        frames: Vec::new(),
        error: None,
    };
    let (mut fed, mut consumed) = (0, 0);
    let mut sizes = chunks.iter().cycle();
    'feed: while fed < input.len() {
        let n = (*sizes.next().unwrap()).clamp(1, input.len() - fed);
        d.extend(&input[fed..fed + n]);
        fed += n;
        loop {
            let result = d.decode();
            let now = fed - d.buffered();
            assert!(now >= consumed, "the decoder gave bytes back");
            let range = consumed..now;
            consumed = now;
            match result {
                Ok(None) => break,
                Ok(Some(frame)) => {
                    assert!(!range.is_empty(), "{frame:?} consumed nothing");
                    check_frame(&frame, &input[range.clone()], limits);
                    run.frames.push((frame, range));
                    assert!(run.frames.len() <= input.len(), "more frames than bytes");
                }
                Err(e) => {
                    visit_error(&e);
                    run.error = Some(e);
                    break 'feed;
                }
            }
        }
    }
    run
}

fn assert_same_stream(a: &StreamRun, b: &StreamRun, input: &[u8]) {
    let frames = |r: &StreamRun| r.frames.iter().map(|(f, _)| f.clone()).collect::<Vec<_>>();
    assert_eq!(
        frames(a),
        frames(b),
        "chunking changed the frames of {}",
        show(input)
    );
    assert_eq!(
        a.error.is_some(),
        b.error.is_some(),
        "chunking changed the outcome of {}: {:?} vs {:?}",
        show(input),
        a.error,
        b.error
    );
}

// ------------------------------------------------------------------------------------------
// Random edits.
// ------------------------------------------------------------------------------------------

/// Byte sequences worth inserting: SIP delimiters and fragments.
const SNIPPETS: &[&[u8]] = &[
    b"\r\n",
    b"\r\n ",
    b"\r\n\t",
    b"\n",
    b"\r",
    b" ",
    b"\t",
    b":",
    b";",
    b",",
    b"<",
    b">",
    b"\"",
    b"\\",
    b"%",
    b"%4",
    b"%41",
    b"%00",
    b"@",
    b"=",
    b"?",
    b"&",
    b"[",
    b"]",
    b"[::1]",
    b"/",
    b"*",
    b"sip:",
    b"sips:",
    b"tel:",
    b"SIP/2.0",
    b"SIP/2.0/UDP ",
    b"\r\n\r\n",
    b"\r\nContent-Length: 0",
    b"\r\nl: 4294967296",
    b"\r\nVia: SIP/2.0/UDP [::1]:5060;branch=z9hG4bK1",
    b";tag=",
    b";branch=z9hG4bK",
    b";q=1.0",
    b";expires=",
    b"Digest realm=\"a\", nonce=\"b\"",
    b"Sat, 13 Nov 2010 23:29:00 GMT",
    b"\xc3\xa9",
    b"\xff",
    b"\x00",
    b"\x7f",
    b"99999999999999999999",
];

#[derive(Debug, Clone)]
enum Edit {
    Flip(Index, u8),
    Set(Index, u8),
    Insert(Index, Vec<u8>),
    Delete(Index, usize),
    Duplicate(Index, usize, Index),
    Truncate(Index),
}

fn edit() -> impl Strategy<Value = Edit> {
    let insert = prop_oneof![
        vec(any::<u8>(), 1..8),
        select(SNIPPETS).prop_map(<[u8]>::to_vec),
    ];
    prop_oneof![
        3 => (any::<Index>(), 1..=255u8).prop_map(|(i, m)| Edit::Flip(i, m)),
        2 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Edit::Set(i, b)),
        4 => (any::<Index>(), insert).prop_map(|(i, b)| Edit::Insert(i, b)),
        3 => (any::<Index>(), 1..32usize).prop_map(|(i, n)| Edit::Delete(i, n)),
        2 => (any::<Index>(), 1..64usize, any::<Index>())
            .prop_map(|(i, n, to)| Edit::Duplicate(i, n, to)),
        1 => any::<Index>().prop_map(Edit::Truncate),
    ]
}

fn apply(buf: &mut Vec<u8>, e: &Edit) {
    let len = buf.len();
    match e {
        Edit::Insert(at, bytes) => {
            let at = at.index(len + 1);
            buf.splice(at..at, bytes.iter().copied());
        }
        _ if len == 0 => {}
        Edit::Flip(at, mask) => buf[at.index(len)] ^= mask,
        Edit::Set(at, b) => buf[at.index(len)] = *b,
        Edit::Delete(at, n) => {
            let at = at.index(len);
            buf.drain(at..(at + n).min(len));
        }
        Edit::Duplicate(at, n, to) => {
            let at = at.index(len);
            let slice = buf[at..(at + n).min(len)].to_vec();
            let to = to.index(len + 1);
            buf.splice(to..to, slice);
        }
        Edit::Truncate(at) => buf.truncate(at.index(len)),
    }
}

fn chunk_sizes() -> impl Strategy<Value = Vec<usize>> {
    prop_oneof![Just(vec![1]), vec(1..16usize, 1..8), vec(1..600usize, 1..4),]
}

/// Bytes over an alphabet of SIP delimiters and a few letters and digits, for the typed
/// parsers to chew on.
fn sip_noise(max: usize) -> impl Strategy<Value = Vec<u8>> {
    const ALPHABET: &[u8] = b"aAzZsSiIpP019.-_+*!%~'`()<>@\",;:=/?&[]\\ \t\r\n\xc3\xa9";
    prop_oneof![
        3 => vec(select(ALPHABET), 0..max),
        1 => vec(
            prop_oneof![
                select(SNIPPETS).prop_map(<[u8]>::to_vec),
                vec(select(ALPHABET), 1..6),
            ],
            0..max / 4
        )
        .prop_map(|parts| parts.concat()),
    ]
}

/// Names of every typed header, compact forms included, and an extension header.
const TYPED_NAMES: &[&str] = &[
    "Accept",
    "Allow",
    "Authorization",
    "CSeq",
    "Call-ID",
    "i",
    "Contact",
    "m",
    "Content-Length",
    "l",
    "Content-Type",
    "c",
    "Date",
    "Event",
    "o",
    "Expires",
    "From",
    "f",
    "Max-Forwards",
    "Min-Expires",
    "Proxy-Authenticate",
    "Proxy-Authorization",
    "Proxy-Require",
    "Record-Route",
    "Require",
    "Route",
    "Subscription-State",
    "Supported",
    "k",
    "To",
    "t",
    "Unsupported",
    "Via",
    "v",
    "WWW-Authenticate",
    "X-Ext",
];

/// Valid values of the typed headers (and URIs), to edit.
const VALID_VALUES: &[&[u8]] = &[
    b"SIP/2.0/UDP pc33.atlanta.com:5060;branch=z9hG4bK776asdhds;received=192.0.2.1;rport=5060",
    b"SIP / 2.0 / TCP [2001:db8::9:1];branch=z9hG4bKkdjuw;maddr=224.2.0.1;ttl=16, SIP/2.0/UDP h",
    b"\"J Rosenberg \\\"\"  <sip:jdrosen@example.com;lr>  ;  tag = 98asjd8",
    b"Bob <sips:bob:pw@biloxi.example.com:5061;transport=tcp?Subject=hi&X=%41>;tag=a6c85cf",
    b"sip:+12125551212@server.phone2net.com;tag=887s",
    b"<tel:+1-201-555-0123;ext=1>;tag=x",
    b"<urn:service:sos>",
    b"*",
    b"<sip:alice@pc33.atlanta.com>;expires=3600;q=0.7, \"A\" <sip:a@[::1]:5070>;q=1",
    b"Digest username=\"bob\", realm=\"b.com\", nonce=\"x\", uri=\"sip:b.com\", response=\"42ce\", nc=00000001",
    b"NoOneKnowsThisScheme opaque-data=here",
    b"63104 OPTIONS",
    b"0009\r\n  INVITE",
    b"a84b4c76e66710@pc33.atlanta.com",
    b"0068",
    b"4294967295",
    b"application/sdp;charset=\"utf-8\";level=1",
    b"multipart/mixed;boundary=unique-boundary-1, text/*, */*",
    b"Sat, 13 Nov 2010 23:29:00 GMT",
    b"presence.winfo;id=42",
    b"terminated;reason=timeout;retry-after=30;expires=600",
    b"100rel, timer, path",
    b"INVITE, ACK, OPTIONS, CANCEL, BYE, FOO",
    b"sip:user@example.com;maddr=239.255.255.1;ttl=15;transport=udp;lr?h=v",
];

/// A valid header value (or URI) with a few random edits.
fn edited_value() -> impl Strategy<Value = Vec<u8>> {
    (select(VALID_VALUES), vec(edit(), 0..4)).prop_map(|(v, edits)| {
        let mut v = v.to_vec();
        for e in &edits {
            apply(&mut v, e);
        }
        v
    })
}

/// Pieces of the header grammars, strung together at random.
fn grammar_pieces() -> impl Strategy<Value = Vec<u8>> {
    const PIECES: &[&[u8]] = &[
        b";",
        b",",
        b"=",
        b"/",
        b":",
        b"@",
        b" ",
        b"\r\n ",
        b"<",
        b">",
        b"\"",
        b"\\",
        b"*",
        b".",
        b"?",
        b"&",
        b"%41",
        b"SIP/2.0/UDP ",
        b"z9hG4bK",
        b"Digest ",
        b"realm=",
        b";tag=",
        b";q=0.5",
        b";q=",
        b";expires=",
        b";branch=",
        b";received=",
        b";rport",
        b";lr",
        b"Sat, 13 Nov 2010 23:29:00 GMT",
        b"application/sdp",
        b"INVITE",
        b"[::1]",
        b"[2001:db8::1]",
        b"192.0.2.1",
        b"sip:",
        b"sips:",
        b"tel:+1",
        b"example.com",
        b"alice",
    ];
    vec(
        prop_oneof![
            4 => select(PIECES).prop_map(<[u8]>::to_vec),
            2 => "[a-z]{1,5}".prop_map(String::into_bytes),
            1 => "[0-9]{1,12}".prop_map(String::into_bytes),
            1 => sip_uri().prop_map(|u| u.text.into_bytes()),
        ],
        1..12,
    )
    .prop_map(|pieces| pieces.concat())
}

/// A header value worth parsing: edited valid values, grammar pieces, or noise.
fn header_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => edited_value(),
        2 => grammar_pieces(),
        1 => sip_noise(64),
    ]
}

const NOISY_STARTS: &[&[u8]] = &[b"OPTIONS ", b"SIP/2.0 "];

/// A message of known header names with noisy values.
fn noisy_message() -> impl Strategy<Value = Vec<u8>> {
    let start = prop_oneof![
        Just(b"INVITE sip:bob@example.com SIP/2.0\r\n".to_vec()),
        Just(b"REGISTER sips:example.com:5061;transport=tls SIP/2.0\r\n".to_vec()),
        Just(b"SIP/2.0 200 OK\r\n".to_vec()),
        (select(NOISY_STARTS), sip_noise(24)).prop_map(|(a, b)| [a, &b[..], &b"\r\n"[..]].concat()),
    ];
    let field = (select(TYPED_NAMES), header_value())
        .prop_map(|(n, v)| [n.as_bytes(), &b": "[..], &v, &b"\r\n"[..]].concat());
    (start, vec(field, 0..8), vec(any::<u8>(), 0..16))
        .prop_map(|(s, fields, body)| [s, fields.concat(), b"\r\n".to_vec(), body].concat())
}

// ------------------------------------------------------------------------------------------
// The generator of well-formed messages.
// ------------------------------------------------------------------------------------------

const TOKEN: &str = "[A-Za-z0-9.!%*_+`'~-]{1,10}";
const KNOWN_METHODS: &[&str] = &[
    "INVITE",
    "ACK",
    "BYE",
    "CANCEL",
    "OPTIONS",
    "REGISTER",
    "PRACK",
    "SUBSCRIBE",
    "NOTIFY",
    "PUBLISH",
    "INFO",
    "REFER",
    "MESSAGE",
    "UPDATE",
];

fn method() -> impl Strategy<Value = String> {
    prop_oneof![select(KNOWN_METHODS).prop_map(String::from), TOKEN]
}

fn domain() -> impl Strategy<Value = String> {
    (
        vec("[a-z0-9]([a-z0-9-]{0,5}[a-z0-9])?", 0..3),
        "[a-zA-Z]([a-zA-Z0-9-]{0,5}[a-zA-Z0-9])?",
        prop::bool::weighted(0.1),
    )
        .prop_map(|(labels, top, dot)| {
            let mut s = String::new();
            for l in labels {
                s.push_str(&l);
                s.push('.');
            }
            s.push_str(&top);
            if dot {
                s.push('.');
            }
            s
        })
}

fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => domain(),
        1 => any::<[u8; 4]>().prop_map(|o| Ipv4Addr::from(o).to_string()),
        1 => any::<[u16; 8]>().prop_map(|s| format!("[{}]", Ipv6Addr::from(s))),
    ]
}

/// A generated SIP URI and its parts.
#[derive(Debug, Clone)]
struct GenUri {
    text: String,
    user: Option<String>,
    host: String,
    port: Option<u16>,
    /// No parameters and a plain user: may stand without angle brackets.
    simple: bool,
}

fn sip_uri() -> impl Strategy<Value = GenUri> {
    let user = prop_oneof![
        "[a-zA-Z0-9]{1,10}",
        r"([A-Za-z0-9_.!~*'()&=+$,?/-]|%[0-9A-Fa-f]{2}){1,10}",
    ];
    let param = (
        "[a-z][a-z0-9-]{0,6}",
        option::of(r"([A-Za-z0-9_.!~*'()\[\]/:&+$-]|%[0-9A-F]{2}){1,8}"),
    )
        .prop_map(|(n, v)| match v {
            Some(v) => format!(";{n}={v}"),
            None => format!(";{n}"),
        });
    (
        select(&["sip", "sips", "SIP"][..]),
        option::of(user),
        host(),
        option::of(any::<u16>()),
        vec(param, 0..3),
    )
        .prop_map(|(scheme, user, host, port, params)| {
            let mut text = format!("{scheme}:");
            if let Some(u) = &user {
                text.push_str(u);
                text.push('@');
            }
            text.push_str(&host);
            if let Some(p) = port {
                text.push_str(&format!(":{p}"));
            }
            text.push_str(&params.concat());
            let simple = params.is_empty()
                && user
                    .as_deref()
                    .is_none_or(|u| u.bytes().all(|b| b.is_ascii_alphanumeric()));
            GenUri {
                text,
                user,
                host,
                port,
                simple,
            }
        })
}

fn display_name() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        "[A-Za-z0-9]{1,8}( [A-Za-z0-9]{1,8}){0,2}".prop_map(Some),
        r#"([A-Za-z0-9 ,;:<>@.éü日]|\\"|\\\\){0,12}"#.prop_map(|s| Some(format!("\"{s}\""))),
    ]
}

/// A name-addr or addr-spec with an optional tag and other parameters.
#[derive(Debug, Clone)]
struct GenAddr {
    text: String,
    tag: Option<String>,
    uri: GenUri,
}

fn address(tag: impl Strategy<Value = Option<String>>) -> impl Strategy<Value = GenAddr> {
    let generic = (
        "[a-z][a-z0-9-]{0,6}",
        option::of(prop_oneof![
            TOKEN.prop_map(|t| t),
            "[A-Za-z0-9 ]{0,8}".prop_map(|s| format!("\"{s}\"")),
        ]),
    )
        .prop_map(|(n, v)| match v {
            Some(v) => format!(";{n}={v}"),
            None => format!(";{n}"),
        })
        .prop_filter("tag and q are generated apart", |p| {
            !p.starts_with(";tag") && p != ";q" && !p.starts_with(";q=")
        });
    (
        display_name(),
        sip_uri(),
        any::<bool>(),
        tag,
        vec(generic, 0..2),
        select(&[";", " ;", " ; "][..]),
    )
        .prop_map(|(display, uri, brackets, tag, generic, semi)| {
            let mut text = match &display {
                Some(d) => format!("{d} <{}>", uri.text),
                None if brackets || !uri.simple => format!("<{}>", uri.text),
                None => uri.text.clone(),
            };
            if let Some(t) = &tag {
                text.push_str(&format!("{semi}tag={t}"));
            }
            text.push_str(&generic.concat());
            GenAddr { text, tag, uri }
        })
}

#[derive(Debug, Clone)]
struct GenVia {
    text: String,
    transport: String,
    host: String,
    port: Option<u16>,
    branch: String,
}

fn via() -> impl Strategy<Value = GenVia> {
    (
        select(&["UDP", "TCP", "TLS", "SCTP", "WS", "udp"][..]),
        select(&["SIP/2.0/", "SIP / 2.0 / "][..]),
        host(),
        option::of(any::<u16>()),
        TOKEN,
        vec(
            select(
                &[
                    ";rport",
                    ";received=192.0.2.1",
                    ";ttl=16",
                    ";maddr=224.2.0.1",
                ][..],
            ),
            0..3,
        ),
    )
        .prop_map(|(transport, proto, host, port, branch, extra)| {
            let branch = format!("z9hG4bK{branch}");
            let port_text = port.map(|p| format!(":{p}")).unwrap_or_default();
            GenVia {
                text: format!(
                    "{proto}{transport} {host}{port_text};branch={branch}{}",
                    extra.concat()
                ),
                transport: transport.into(),
                host,
                port,
                branch,
            }
        })
}

#[derive(Debug, Clone)]
enum GenStart {
    Request { method: String, uri: GenUri },
    Response { code: u16, reason: String },
}

fn start() -> impl Strategy<Value = GenStart> {
    prop_oneof![
        3 => (method(), sip_uri()).prop_map(|(method, uri)| GenStart::Request { method, uri }),
        2 => (100..700u16, "[A-Za-z0-9 .,éü日-]{0,20}")
            .prop_map(|(code, reason)| GenStart::Response { code, reason }),
    ]
}

/// An extension header: a name that no known header has, a printable value, maybe folded.
fn ext_header() -> impl Strategy<Value = (String, Vec<String>)> {
    (
        "X-[A-Za-z0-9.!%*_+`'~-]{1,10}",
        vec("[!-~]([ -~]{0,16}[!-~])?", 1..3),
    )
}

/// A well-formed message, its wire form and what it should parse to.
#[derive(Debug, Clone)]
struct GenMsg {
    wire: Vec<u8>,
    start: GenStart,
    vias: Vec<GenVia>,
    from: GenAddr,
    to: GenAddr,
    call_id: String,
    cseq: (u32, String),
    max_forwards: Option<u8>,
    ext: Vec<(String, String)>,
    body: Vec<u8>,
    content_length: bool,
}

/// How the generator writes a message: line ends, name spellings, separators, order.
#[derive(Debug, Clone)]
struct Style {
    eol: &'static str,
    names: Vec<Index>,
    seps: Vec<Index>,
    order: Vec<u32>,
    via_one_line: bool,
    cl_zeros: usize,
}

fn style() -> impl Strategy<Value = Style> {
    (
        prop_oneof![4 => Just("\r\n"), 1 => Just("\n")],
        vec(any::<Index>(), 32),
        vec(any::<Index>(), 32),
        vec(any::<u32>(), 32),
        any::<bool>(),
        0..3usize,
    )
        .prop_map(|(eol, names, seps, order, via_one_line, cl_zeros)| Style {
            eol,
            names,
            seps,
            order,
            via_one_line,
            cl_zeros,
        })
}

/// Header name spellings that must all be read as the same header.
const SPELLINGS: &[(&str, &[&str])] = &[
    ("Via", &["Via", "v", "VIA", "via"]),
    ("From", &["From", "f", "from"]),
    ("To", &["To", "t", "TO"]),
    ("Call-ID", &["Call-ID", "i", "call-id", "CALL-ID"]),
    ("CSeq", &["CSeq", "cseq", "CSEQ"]),
    ("Max-Forwards", &["Max-Forwards", "max-forwards"]),
    ("Content-Length", &["Content-Length", "l", "content-length"]),
    ("Content-Type", &["Content-Type", "c", "content-TYPE"]),
    ("Contact", &["Contact", "m"]),
];

fn spelling(name: &str, pick: &Index) -> &'static str {
    let (_, forms) = SPELLINGS.iter().find(|(n, _)| *n == name).unwrap();
    forms[pick.index(forms.len())]
}

fn gen_msg(content_length: impl Strategy<Value = bool>) -> impl Strategy<Value = GenMsg> {
    (
        (start(), vec(via(), 1..4), address(option::of(TOKEN))),
        (
            address(TOKEN.prop_map(Some)),
            "[A-Za-z0-9.!%*_+~-]{1,16}(@[A-Za-z0-9.-]{1,10})?",
        ),
        (any::<u32>(), select(KNOWN_METHODS), option::of(1..=255u8)),
        (option::of(address(Just(None))), vec(ext_header(), 0..5)),
        (vec(any::<u8>(), 0..64), content_length, style()),
        (
            select(&["text/plain", "application/sdp", "text/plain;charset=utf-8"][..]),
            option::of(0..100_000u32),
        ),
    )
        .prop_map(
            |(
                (start, vias, to),
                (from, call_id),
                (seq, resp_method, max_forwards),
                (contact, ext),
                (body, content_length, style),
                (content_type, contact_expires),
            )| {
                let cseq_method = match &start {
                    GenStart::Request { method, .. } => method.clone(),
                    GenStart::Response { .. } => resp_method.to_string(),
                };
                let max_forwards = match start {
                    GenStart::Request { .. } => max_forwards,
                    GenStart::Response { .. } => None,
                };
                let ext: Vec<(String, String)> = ext
                    .into_iter()
                    .map(|(n, parts)| {
                        let fold = format!("{} ", style.eol);
                        (n, parts.join(&fold))
                    })
                    .collect();
                GenMsg {
                    wire: Vec::new(),
                    start,
                    vias,
                    from,
                    to,
                    call_id,
                    cseq: (seq, cseq_method),
                    max_forwards,
                    ext,
                    body,
                    content_length,
                }
                .wire_with(&style, contact, contact_expires, content_type)
            },
        )
}

/// Header lines in classes: lines of one class keep their relative order when shuffled.
struct Lines(Vec<(u8, String, String)>);

impl Lines {
    fn push(&mut self, class: u8, name: &str, value: String) {
        self.0.push((class, name.to_string(), value));
    }
}

impl GenMsg {
    fn wire_with(
        mut self,
        style: &Style,
        contact: Option<GenAddr>,
        contact_expires: Option<u32>,
        content_type: &str,
    ) -> GenMsg {
        const VIA: u8 = 0;
        const EXT: u8 = 1;
        const ONE: u8 = 2;
        let mut lines = Lines(Vec::new());
        if style.via_one_line {
            let all: Vec<_> = self.vias.iter().map(|v| v.text.as_str()).collect();
            lines.push(VIA, "Via", all.join(" , "));
        } else {
            for v in &self.vias {
                lines.push(VIA, "Via", v.text.clone());
            }
        }
        lines.push(ONE, "From", self.from.text.clone());
        lines.push(ONE + 1, "To", self.to.text.clone());
        lines.push(ONE + 2, "Call-ID", self.call_id.clone());
        lines.push(ONE + 3, "CSeq", format!("{} {}", self.cseq.0, self.cseq.1));
        if let Some(mf) = self.max_forwards {
            lines.push(ONE + 4, "Max-Forwards", mf.to_string());
        }
        if let Some(c) = &contact {
            let mut text = c.text.clone();
            if let Some(e) = contact_expires {
                text.push_str(&format!(";expires={e}"));
            }
            lines.push(ONE + 5, "Contact", text);
        }
        if !self.body.is_empty() {
            lines.push(ONE + 6, "Content-Type", content_type.to_string());
        }
        if self.content_length {
            let len = format!("{}{}", "0".repeat(style.cl_zeros), self.body.len());
            lines.push(ONE + 7, "Content-Length", len);
        }
        for (n, v) in &self.ext {
            lines.push(EXT, n, v.clone());
        }
        // Shuffle by the style's keys, then put each class's lines back in their order.
        let lines = lines.0;
        let mut idx: Vec<usize> = (0..lines.len()).collect();
        idx.sort_by_key(|&i| style.order[i % style.order.len()]);
        let mut slots: Vec<Option<usize>> = vec![None; lines.len()];
        for class in [VIA, EXT] {
            let members: Vec<usize> = (0..lines.len()).filter(|&i| lines[i].0 == class).collect();
            let places: Vec<usize> = (0..idx.len())
                .filter(|&p| lines[idx[p]].0 == class)
                .collect();
            for (p, m) in places.into_iter().zip(members) {
                slots[p] = Some(m);
            }
        }
        let order: Vec<usize> = (0..idx.len()).map(|p| slots[p].unwrap_or(idx[p])).collect();

        let eol = style.eol;
        let mut wire = match &self.start {
            GenStart::Request { method, uri } => format!("{method} {} SIP/2.0{eol}", uri.text),
            GenStart::Response { code, reason } if reason.is_empty() && code % 2 == 0 => {
                format!("SIP/2.0 {code}{eol}")
            }
            GenStart::Response { code, reason } => format!("SIP/2.0 {code} {reason}{eol}"),
        };
        const SEPS: &[&str] = &[": ", ":", " : ", ":\t", ":   ", ":FOLD"];
        for (k, &i) in order.iter().enumerate() {
            let (class, name, value) = &lines[i];
            let name = if *class == EXT {
                name.as_str()
            } else {
                spelling(name, &style.names[k % style.names.len()])
            };
            let sep = SEPS[style.seps[k % style.seps.len()].index(SEPS.len())];
            let sep = if sep == ":FOLD" {
                format!(":{eol} ")
            } else {
                sep.to_string()
            };
            wire.push_str(&format!("{name}{sep}{value}{eol}"));
        }
        wire.push_str(eol);
        let mut wire = wire.into_bytes();
        wire.extend_from_slice(&self.body);
        self.wire = wire;
        self
    }

    fn is_request(&self) -> bool {
        matches!(self.start, GenStart::Request { .. })
    }
}

/// The parsed message says what the generator wrote.
fn check_generated(g: &GenMsg, m: &Message) {
    assert_eq!(&m.body()[..], &g.body[..], "body");
    let hs = m.headers();
    let vias: Vec<_> = hs.typed_all::<h::Via>().map(Result::unwrap).collect();
    assert_eq!(vias.len(), g.vias.len(), "Via count");
    for (v, gv) in vias.iter().zip(&g.vias) {
        assert_eq!(v.branch(), Some(gv.branch.as_str()));
        assert!(v.has_rfc3261_branch());
        assert_eq!(v.host().to_string(), gv.host);
        assert_eq!(v.port(), gv.port);
        assert_eq!(v.transport(), gv.transport);
        assert_eq!((v.protocol(), v.version()), ("SIP", "2.0"));
    }
    let from = hs.typed::<h::From>().unwrap().unwrap();
    assert_eq!(from.tag(), g.from.tag.as_deref());
    assert_eq!(from.0.uri().as_str(), g.from.uri.text);
    let to = hs.typed::<h::To>().unwrap().unwrap();
    assert_eq!(to.tag(), g.to.tag.as_deref());
    let to_uri = to.0.uri().as_sip().unwrap();
    assert_eq!(to_uri.user(), g.to.uri.user.as_deref());
    assert_eq!(to_uri.host().to_string(), g.to.uri.host);
    assert_eq!(to_uri.port(), g.to.uri.port);
    assert_eq!(
        hs.typed::<h::CallId>().unwrap().unwrap().0,
        g.call_id.as_str()
    );
    let cseq = hs.typed::<h::CSeq>().unwrap().unwrap();
    assert_eq!(
        (cseq.seq(), cseq.method_str()),
        (g.cseq.0, g.cseq.1.as_str())
    );
    assert_eq!(
        hs.typed::<h::MaxForwards>().map(Result::unwrap),
        g.max_forwards.map(h::MaxForwards)
    );
    if g.content_length {
        assert_eq!(
            hs.typed::<h::ContentLength>(),
            Some(Ok(h::ContentLength(g.body.len() as u32)))
        );
    }
    let ext: Vec<(String, String)> = hs
        .iter()
        .filter(|f| f.name == HeaderName::Other)
        .map(|f| (f.name_str().to_string(), f.value_str().unwrap().to_string()))
        .collect();
    assert_eq!(ext, g.ext, "extension headers");
    match (&g.start, m) {
        (GenStart::Request { method, uri }, Message::Request(r)) => {
            assert_eq!(r.method().as_str(), method);
            assert_eq!(r.uri_str(), uri.text);
            let u = r.uri().unwrap();
            let sip = u.as_sip().unwrap();
            assert_eq!(sip.user(), uri.user.as_deref());
            assert_eq!(sip.host().to_string(), uri.host);
            assert_eq!(sip.port(), uri.port);
            for role in [Role::Proxy, Role::Uas] {
                assert_eq!(
                    check_request(r, &Policy::with_role(role)),
                    Ok(()),
                    "{role:?}"
                );
            }
            // The response a UAS builds (RFC 3261 §8.2.6) copies the dialog headers.
            let resp = Rejection::new(StatusCode::NOT_FOUND, "Not Found").response(
                r,
                Some("uas"),
                &Policy::default(),
            );
            assert_eq!(check_response(&resp), Ok(()));
            let rh = resp.headers();
            let branches = |hs: &Headers| {
                hs.typed_all::<h::Via>()
                    .map(|v| v.unwrap().branch().map(String::from))
                    .collect::<Vec<_>>()
            };
            assert_eq!(branches(rh), branches(hs));
            let tag = rh
                .typed::<h::To>()
                .unwrap()
                .unwrap()
                .tag()
                .map(String::from);
            assert_eq!(tag.as_deref(), Some(g.to.tag.as_deref().unwrap_or("uas")));
            assert_eq!(rh.get(HeaderName::CallId), hs.get(HeaderName::CallId));
            assert_eq!(rh.get(HeaderName::CSeq), hs.get(HeaderName::CSeq));
            assert_eq!(rh.get(HeaderName::From), hs.get(HeaderName::From));
            assert_round_trip(&Message::Response(resp));
        }
        (GenStart::Response { code, reason }, Message::Response(r)) => {
            assert_eq!(r.status().as_u16(), *code);
            assert_eq!(r.reason(), reason);
            assert_eq!(check_response(r), Ok(()));
        }
        (g, m) => panic!("generated {g:?}, parsed {m:?}"),
    }
}

/// What `HeaderName::from_bytes` should say: the known name or compact form equal to `name`
/// without regard to case, or `Other`.
fn classify_by_reference(name: &[u8]) -> HeaderName {
    HeaderName::ALL
        .iter()
        .copied()
        .find(|h| {
            name.eq_ignore_ascii_case(h.as_str().as_bytes())
                || h.compact()
                    .is_some_and(|c| name.eq_ignore_ascii_case(c.as_bytes()))
        })
        .unwrap_or(HeaderName::Other)
}

/// A header name near a known one: a known name or compact form in random case, with a few
/// edits that keep it a token (a case flip, a changed, dropped or added character).
fn name_near_known() -> impl Strategy<Value = Vec<u8>> {
    const TOKEN_CHARS: &[u8] =
        b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~";
    let spelled = (
        select(HeaderName::ALL),
        any::<bool>(),
        vec(any::<bool>(), 20),
    )
        .prop_map(|(h, compact, upper)| {
            let base = match h.compact() {
                Some(c) if compact => c,
                _ => h.as_str(),
            };
            base.bytes()
                .zip(upper.iter().cycle())
                .map(|(b, &u)| {
                    if u {
                        b.to_ascii_uppercase()
                    } else {
                        b.to_ascii_lowercase()
                    }
                })
                .collect::<Vec<u8>>()
        });
    let edit = (any::<Index>(), 0..4u8, select(TOKEN_CHARS));
    (spelled, vec(edit, 0..3)).prop_map(|(mut name, edits)| {
        for (at, kind, c) in edits {
            let i = at.index(name.len() + 1);
            match kind {
                0 if i < name.len() && name[i].is_ascii_alphabetic() => name[i] ^= 0x20,
                1 if i < name.len() => name[i] = c,
                2 if i < name.len() && name.len() > 1 => {
                    name.remove(i);
                }
                _ => name.insert(i, c),
            }
        }
        name
    })
}

/// What may come between messages on a stream.
#[derive(Debug, Clone, Copy)]
enum Sep {
    None,
    Ping,
    Pong,
}

fn sep() -> impl Strategy<Value = Sep> {
    prop_oneof![3 => Just(Sep::None), 1 => Just(Sep::Ping), 1 => Just(Sep::Pong)]
}

/// Concatenates messages and keepalives into one stream, split at the given points, and
/// checks that the decoder yields exactly the expected frames.
fn assert_stream_frames(parts: &[(Vec<u8>, Sep)], splits: &[Index]) {
    let mut stream = Vec::new();
    let mut expected = Vec::new();
    for (k, (bytes, sep)) in parts.iter().enumerate() {
        stream.extend_from_slice(bytes);
        expected.push(Frame::Message(Message::parse(bytes.clone()).unwrap()));
        let last = k + 1 == parts.len();
        match sep {
            Sep::Ping => {
                stream.extend_from_slice(Frame::PING);
                expected.push(Frame::Ping);
            }
            // A pong shows only once the next byte arrives.
            Sep::Pong if !last => {
                stream.extend_from_slice(Frame::PONG);
                expected.push(Frame::Pong);
            }
            Sep::Pong | Sep::None => {}
        }
    }
    let mut cuts: Vec<usize> = splits.iter().map(|i| i.index(stream.len() + 1)).collect();
    cuts.push(stream.len());
    cuts.sort_unstable();
    let mut sizes = Vec::new();
    let mut prev = 0;
    for c in cuts {
        if c > prev {
            sizes.push(c - prev);
            prev = c;
        }
    }
    let run = run_stream(&stream, &sizes, &Limits::default());
    assert_eq!(run.error, None, "stream error on {}", show(&stream));
    let frames: Vec<Frame> = run.frames.into_iter().map(|(f, _)| f).collect();
    assert_eq!(frames, expected, "stream {}", show(&stream));
}

// ------------------------------------------------------------------------------------------
// The properties.
// ------------------------------------------------------------------------------------------

#[test]
fn corpus_is_complete_and_survives_everything() {
    let corpus = corpus();
    assert_eq!(corpus.len(), 49, "RFC 4475 has 49 test messages");
    let mut parsed = 0;
    for (name, bytes) in corpus {
        parsed += usize::from(Message::parse(bytes.clone()).is_ok());
        for chunks in [&[1][..], &[7, 3, 100], &[usize::MAX]] {
            let run = std::panic::catch_unwind(|| exercise_bytes(bytes, chunks));
            if let Err(panic) = run {
                eprintln!("torture message {name} failed with chunks {chunks:?}");
                std::panic::resume_unwind(panic);
            }
        }
    }
    assert!(parsed > 20, "only {parsed} torture messages parse");
    let all: Vec<u8> = corpus.iter().flat_map(|(_, b)| b.iter().copied()).collect();
    let _ = run_stream(&all, &[13], &Limits::default());
}

proptest! {
    #![proptest_config(config(1000))]

    /// a. Arbitrary bytes panic nothing, in one datagram or a stream in any chunks.
    #[test]
    fn arbitrary_bytes_do_not_panic(input in vec(any::<u8>(), 0..2048), chunks in chunk_sizes()) {
        exercise_bytes(&input, &chunks);
    }

    /// a. SIP-shaped noise reaches deeper: known header names with values made of the
    /// grammar's delimiters.
    #[test]
    fn noisy_messages_do_not_panic(input in noisy_message(), chunks in chunk_sizes()) {
        exercise_bytes(&input, &chunks);
    }

    /// a. Every typed header parser, and the URI parser, on any value.
    #[test]
    fn typed_parsers_do_not_panic(value in header_value()) {
        typed_direct(&value);
        if let Ok(s) = std::str::from_utf8(&value) {
            exercise_uri(s);
        }
    }

    /// b. Random edits of the RFC 4475 messages panic nothing, and whatever still parses
    /// prints back to itself.
    #[test]
    fn mutated_corpus_does_not_panic(
        pick in any::<Index>(),
        edits in vec(edit(), 1..8),
        chunks in chunk_sizes(),
    ) {
        let corpus = corpus();
        let mut bytes = corpus[pick.index(corpus.len())].1.clone();
        for e in &edits {
            apply(&mut bytes, e);
        }
        exercise_bytes(&bytes, &chunks);
    }

}

// Properties over generated messages: their generator is slower, so fewer cases.
proptest! {
    #![proptest_config(config(250))]

    /// b. Random edits of generated messages, likewise.
    #[test]
    fn mutated_generated_does_not_panic(
        g in gen_msg(any::<bool>()),
        edits in vec(edit(), 1..6),
        chunks in chunk_sizes(),
    ) {
        let mut bytes = g.wire.clone();
        for e in &edits {
            apply(&mut bytes, e);
        }
        exercise_bytes(&bytes, &chunks);
    }

    /// a. Tight limits: no panic, and what parses under them parses the same without them.
    #[test]
    fn limits_are_monotonic(
        input in prop_oneof![
            vec(any::<u8>(), 0..512),
            noisy_message(),
            gen_msg(Just(true)).prop_map(|g| g.wire),
        ],
        size in 0..1200usize,
        headers in 0..20usize,
        line in 0..200usize,
        chunks in chunk_sizes(),
    ) {
        let limits = Limits::default().max_message_size(size).max_headers(headers).max_line_length(line);
        if let Ok(m) = Message::parse_with(input.clone(), &limits) {
            assert_eq!(Message::parse(input.clone()), Ok(m));
        }
        let chunked = run_stream(&input, &chunks, &limits);
        let whole = run_stream(&input, &[usize::MAX], &limits);
        assert_same_stream(&chunked, &whole, &input);
    }

    /// c, e. A generated message parses to what was generated, passes the checks, and prints
    /// back to itself.
    #[test]
    fn generated_messages_parse_as_generated(g in gen_msg(any::<bool>())) {
        let m = Message::parse(g.wire.clone())
            .unwrap_or_else(|e| panic!("generated message does not parse ({e}): {}", show(&g.wire)));
        assert_eq!(m.as_request().is_some(), g.is_request());
        check_generated(&g, &m);
        assert_round_trip(&m);
        exercise_message(&m);
        // Content-Length cuts the datagram: trailing bytes are not part of the message.
        if g.content_length {
            let mut longer = g.wire.clone();
            longer.extend_from_slice(b"trailing junk\r\n\r\n");
            assert_eq!(Message::parse(longer), Ok(m));
        }
    }

    /// d. Messages with a correct Content-Length, concatenated with keepalives and split
    /// anywhere, come out of the stream decoder as the datagram parser reads each; so do
    /// their prints.
    #[test]
    fn stream_framing_equals_datagram_parsing(
        msgs in vec((gen_msg(Just(true)), sep()), 1..5),
        splits in vec(any::<Index>(), 0..10),
    ) {
        let wire: Vec<_> = msgs.iter().map(|(g, s)| (g.wire.clone(), *s)).collect();
        assert_stream_frames(&wire, &splits);
        let printed: Vec<_> = msgs
            .iter()
            .map(|(g, s)| (Message::parse(g.wire.clone()).unwrap().to_bytes().to_vec(), *s))
            .collect();
        assert_stream_frames(&printed, &splits);
    }

}

proptest! {
    #![proptest_config(config(1000))]

    /// c. A request built through the API from any URI the URI parser accepts prints and
    /// parses back.
    #[test]
    fn built_requests_round_trip(
        uri in prop_oneof![
            sip_uri().prop_map(|u| u.text),
            sip_noise(40).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
            "[a-z][a-z0-9+.-]{0,5}:[!-~]{1,20}",
            "tel:[0-9A-F+*#().-]{1,12}(;[a-z]{1,5}(=[a-z0-9]{1,4})?){0,2}",
        ],
        method in method(),
        body in vec(any::<u8>(), 0..32),
    ) {
        let m = Method::from_token(method.as_bytes()).unwrap();
        if let Ok(mut req) = Request::new(m, &uri) {
            assert_eq!(req.uri_str(), uri);
            req.headers_mut().push(HeaderName::Via, Bytes::from_static(b"SIP/2.0/UDP h;branch=z9hG4bKx"));
            req.set_body("text/plain", body);
            assert_round_trip(&Message::Request(req));
        }
    }
    /// The fast header-name classifier agrees with a plain case-insensitive comparison on
    /// every token (what the parser gives it), near-misses of the known names included.
    #[test]
    fn header_names_classify_like_the_reference(
        name in prop_oneof![3 => name_near_known(), 1 => TOKEN.prop_map(String::into_bytes)],
    ) {
        assert_eq!(
            HeaderName::from_bytes(&name),
            classify_by_reference(&name),
            "{}",
            show(&name)
        );
    }
}

/// Feeds `bytes`, if they parse, to an auto-answering user agent, then runs its clock out:
/// nothing panics, and no call or transaction is left behind.
fn user_agent_leaves_nothing_behind(bytes: &[u8]) {
    let Ok(message) = Message::parse(bytes.to_vec()) else {
        return;
    };
    let listen = |t| p2psip_sip::Peer::new(t, "127.0.0.1:5060".parse().unwrap());
    let config = p2psip_sip::ua::Config {
        listen: vec![
            listen(p2psip_sip::Transport::Udp),
            listen(p2psip_sip::Transport::Tcp),
        ],
        auto_answer: true,
        ..p2psip_sip::ua::Config::default()
    };
    let mut ua = p2psip_sip::ua::UserAgent::new(config, 1);
    let start = std::time::Instant::now();
    let from = p2psip_sip::Peer::new(
        p2psip_sip::Transport::Udp,
        "127.0.0.1:5070".parse().unwrap(),
    );
    let _ = ua.handle(start, message, from);
    let end = start + std::time::Duration::from_secs(200);
    while let Some(at) = ua.poll_timeout().filter(|at| *at <= end) {
        ua.handle_timeout(at);
        while ua.poll_transmit().is_some() {}
        while ua.poll_event().is_some() {}
    }
    assert_eq!(ua.calls(), 0, "a call is left behind");
    assert_eq!(ua.poll_timeout().filter(|at| *at <= end), None);
}

proptest! {
    #![proptest_config(config(250))]

    /// RFC 4475 messages, edited at random, through the transaction layer and the UA core.
    #[test]
    fn user_agent_survives_mutated_corpus(pick in any::<Index>(), edits in vec(edit(), 0..6)) {
        let corpus = corpus();
        let mut bytes = corpus[pick.index(corpus.len())].1.clone();
        for e in &edits {
            apply(&mut bytes, e);
        }
        user_agent_leaves_nothing_behind(&bytes);
    }
}

// ------------------------------------------------------------------------------------------
// Regressions: bugs these properties found, fixed, and kept with their minimal inputs.
// ------------------------------------------------------------------------------------------

/// Regression: the Request-URI and the reason phrase are spans into the text of `Headers`, so
/// replacing a message's header section through `headers_mut()` (assignment, `mem::take`,
/// `mem::swap`) makes the start line read the *other* header section's bytes: the URI below
/// becomes `x@y SIP/2.0\r\nTo: <sip:bob@bil` and the print is a different, injected message.
#[test]
fn regression_start_line_survives_replacing_the_headers() {
    let a = Message::parse(&b"OPTIONS sip:alice@atlanta.example.com SIP/2.0\r\n\r\n"[..]).unwrap();
    let b = Message::parse(&b"BYE sip:x@y SIP/2.0\r\nTo: <sip:bob@biloxi.example.com>\r\n\r\n"[..])
        .unwrap();
    let mut r = a.as_request().unwrap().clone();
    *r.headers_mut() = b.headers().clone();
    assert_eq!(r.uri_str(), "sip:alice@atlanta.example.com");

    let mut r = a.as_request().unwrap().clone();
    let _ = std::mem::take(r.headers_mut());
    assert_eq!(r.uri_str(), "sip:alice@atlanta.example.com");

    let mut resp = Response::new(StatusCode::OK, "OK");
    *resp.headers_mut() = Headers::new();
    assert_eq!(resp.reason(), "OK");
}

/// Regression: the stream decoder refuses a message preceded by `\r\r\n\r\n` (or
/// `\r\r\n\n`), which the datagram parser reads (RFC 3261 §7.5 leading CRLFs): the
/// keepalive check does not match, and the "blank line" inside the junk ends an empty header
/// section (Error::Unterminated).
#[test]
fn regression_stream_skips_leading_crlf_like_datagrams() {
    let msg = b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 0\r\n\r\n";
    let input = [&b"\r\r\n\r\n"[..], msg].concat();
    assert!(Message::parse(input.clone()).is_ok());
    let run = run_stream(&input, &[usize::MAX], &Limits::default());
    assert_eq!(run.error, None);
}

/// Regression: `Response::new` replaces CR and LF in the reason phrase but keeps the
/// other control characters, which the status-line parser refuses: the print does not parse.
#[test]
fn regression_built_response_with_control_characters_parses() {
    let r = Response::new(StatusCode::OK, "a\u{1}b");
    assert_round_trip(&Message::Response(r));
}

/// Regression: `HeaderName::from_bytes` folds case with `b | 0x20`, which also maps
/// CR (0x0D) to '-' (0x2D): non-token names such as `Call\rID` classify as known headers.
/// The parser only passes tokens, but `Rejection::response_to_raw` does not check, and copies
/// a `Call\rID: abc` line of a broken request into its response as `Call-ID: abc`.
#[test]
fn regression_header_names_with_cr_are_not_known() {
    for name in [&b"Call\rID"[..], b"Max\rForwards", b"Content\rLength"] {
        assert_eq!(
            HeaderName::from_bytes(name),
            HeaderName::Other,
            "{}",
            show(name)
        );
    }
}

/// Regression: with a `tag` flag before `tag=x`, `tag()` says
/// `x` (the first tag with a value) while `params().get("tag")` says the flag.
#[test]
fn regression_tag_agrees_with_params() {
    let f = h::From::parse(b"<sip:a@b>;tag;tag=x").unwrap();
    assert_eq!(f.tag(), f.0.params().get("tag").flatten());
}
