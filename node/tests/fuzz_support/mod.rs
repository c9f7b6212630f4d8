//! Checks shared by the property tests (`node/tests/fuzz_props.rs`, as `mod fuzz_support`)
//! and the fuzz targets (`node/fuzz/src/lib.rs`, through `#[path]`): feed the node's parsers
//! bytes a peer or a client could send and check what they make of them.
//!
//! - [`exercise_payload`]: [`unframe`] of a Route payload (the SIP messages another node
//!   sends); what it reads, printed and framed again ([`frame`]), unframes to the same.
//! - [`exercise_control_line`]: [`Hello::parse`] of a control client's first line, and the
//!   reply a client reads ([`Reply`]); what parses prints as JSON that parses back to it.
//!
//! Both crates compile this file, so it needs only `p2psip_node`, `p2psip_sip`, `serde_json`
//! and `std`. The entry points are `pub` so that the fuzz crate can re-export them.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use p2psip_node::control::{Hello, Reply, Request};
use p2psip_node::p2p::{frame, unframe};
use p2psip_overlay::error::ErrorCode;
use p2psip_sip::Message;

/// One Route payload as the node's Route handler reads it.
pub fn exercise_payload(input: &[u8]) {
    match unframe(input) {
        Ok(messages) => {
            assert!(!messages.is_empty(), "an empty payload read as messages");
            assert!(
                messages.len() <= input.len() / 5,
                "{} messages from {} bytes",
                messages.len(),
                input.len()
            );
            let printed: Vec<_> = messages.iter().map(Message::to_bytes).collect();
            let payload = frame(printed.iter().map(|m| m.as_ref()));
            let again = unframe(&payload).unwrap_or_else(|e| {
                panic!("the framed print of SIP messages does not unframe: {e}")
            });
            assert_eq!(
                again, messages,
                "unframe(frame(print(messages))) != messages"
            );
            let reprinted: Vec<_> = again.iter().map(Message::to_bytes).collect();
            assert_eq!(frame(reprinted.iter().map(|m| m.as_ref())), payload);
        }
        Err(error) => {
            assert_eq!(error.code(), ErrorCode::InvalidMessage, "{error}");
            assert!(!error.to_string().is_empty());
        }
    }
}

/// One control line: as a client's hello (the node's side), and as a reply (the client's).
pub fn exercise_control_line(input: &[u8]) {
    match Hello::parse(input) {
        Ok(hello) => {
            if let Request::Call {
                duration_s: Some(seconds),
                ..
            } = hello.request
            {
                assert!(
                    Duration::try_from_secs_f64(seconds).is_ok(),
                    "a call duration of {seconds} s accepted"
                );
            }
            let line = serde_json::to_string(&hello).expect("a hello prints");
            let again = Hello::parse(line.as_bytes())
                .unwrap_or_else(|e| panic!("the print of a hello does not parse ({e}): {line}"));
            assert_eq!(again.token, hello.token, "{line}");
            assert_eq!(again.request, hello.request, "{line}");
        }
        Err(message) => assert!(!message.is_empty(), "a refusal without a reason"),
    }
    if let Ok(text) = std::str::from_utf8(input)
        && let Ok(reply) = serde_json::from_str::<Reply>(text.trim_end())
    {
        let line = serde_json::to_string(&reply).expect("a reply prints");
        let again: Reply = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("the print of a reply does not parse ({e}): {line}"));
        assert_eq!(again, reply, "{line}");
    }
}

/// SIP messages as another node sends them.
pub fn sip_messages() -> Vec<&'static [u8]> {
    vec![
        b"INVITE sip:bob@example.org SIP/2.0\r\n\
Via: SIP/2.0/TCP 100::1;branch=z9hG4bKfuzz1\r\n\
Max-Forwards: 69\r\n\
To: <sip:bob@example.org>\r\n\
From: <sip:alice@example.org>;tag=a1\r\n\
Call-ID: fuzz-1@example.org\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:alice@192.0.2.1:5062>\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 29\r\n\
\r\n\
v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\n",
        b"SIP/2.0 200 OK\r\n\
Via: SIP/2.0/TCP 100::1;branch=z9hG4bKfuzz1\r\n\
To: <sip:bob@example.org>;tag=b1\r\n\
From: <sip:alice@example.org>;tag=a1\r\n\
Call-ID: fuzz-1@example.org\r\n\
CSeq: 1 INVITE\r\n\
Content-Length: 0\r\n\
\r\n",
        b"BYE sip:alice@192.0.2.1:5062 SIP/2.0\r\n\
Via: SIP/2.0/TCP 100::2;branch=z9hG4bKfuzz2\r\n\
Max-Forwards: 70\r\n\
To: <sip:alice@example.org>;tag=a1\r\n\
From: <sip:bob@example.org>;tag=b1\r\n\
Call-ID: fuzz-1@example.org\r\n\
CSeq: 2 BYE\r\n\
Content-Length: 0\r\n\
\r\n",
    ]
}

/// Hello lines of every request a client may make.
pub fn hello_lines() -> Vec<String> {
    let token = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    [
        Request::Status,
        Request::Peers,
        Request::Lookup {
            aor: "sip:bob@example.p2p".into(),
        },
        Request::Register {
            aor: "sip:alice@example.p2p".into(),
        },
        Request::Unregister {
            aor: "sip:alice@example.p2p".into(),
        },
        Request::Call {
            target: "sip:bob@example.p2p".into(),
            duration_s: Some(2.5),
        },
        Request::Call {
            target: "sip:bob@192.0.2.7:5070".into(),
            duration_s: None,
        },
        Request::Hangup,
        Request::Message {
            target: "sip:bob@example.p2p".into(),
            text: "hello \"bob\"\n\u{e9}".into(),
        },
        Request::Options {
            target: "sip:bob@example.p2p".into(),
        },
    ]
    .into_iter()
    .map(|request| {
        serde_json::to_string(&Hello {
            token: token.into(),
            request,
        })
        .expect("a hello prints")
    })
    .collect()
}

/// Valid inputs of each target, to seed the fuzzers' corpora and to mutate in the property
/// tests: `(target, input)`.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let messages = sip_messages();
    let mut seeds: Vec<(&'static str, Vec<u8>)> = messages
        .iter()
        .map(|m| ("route_payload", frame([*m].into_iter())))
        .collect();
    seeds.push(("route_payload", frame(messages.iter().copied())));
    seeds.extend(
        hello_lines()
            .into_iter()
            .map(|line| ("control_line", line.into_bytes())),
    );
    for reply in [
        r#"{"reply":"error","message":"the control token is wrong"}"#,
        r#"{"reply":"registered","aor":"sip:alice@example.p2p","expires_s":3600,"elapsed_ms":12.5}"#,
        r#"{"reply":"call","state":"ended","status":null,"ringing_ms":10.0,"answered_ms":20.0,"duration_ms":1000.0,"by_peer":true}"#,
        r#"{"reply":"completed","status":200,"reason":"OK","elapsed_ms":3.25}"#,
    ] {
        seeds.push(("control_line", reply.as_bytes().to_vec()));
    }
    seeds
}
