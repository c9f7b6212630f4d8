//! RFC 3261 §8 and §13 to §15: the user agent core, two agents on a simulated network and a
//! virtual clock (a `Pair`, after quinn-proto's tests).

use std::time::{Duration, Instant};

use p2psip_sip::ua::{Call, Config, Event, UserAgent};
use p2psip_sip::{HeaderName, Message, Peer, StatusCode, Transport};

use super::addr;

const ALICE: &str = "127.0.0.1:5070";
const BOB: &str = "127.0.0.1:5080";

/// Two user agents, the packets between them, and a clock.
struct Pair {
    alice: UserAgent,
    bob: UserAgent,
    now: Instant,
    start: Instant,
    /// (from alice?, bytes), the first line of every packet, for assertions.
    wire: Vec<(bool, String)>,
    alice_events: Vec<Event>,
    bob_events: Vec<Event>,
    /// Drop the next packet whose first line starts with this.
    drop_next: Option<&'static str>,
}

fn agent(at: &str, auto_answer: bool, seed: u64) -> UserAgent {
    let config = Config {
        listen: vec![Peer::new(Transport::Udp, addr(at)), Peer::new(Transport::Tcp, addr(at))],
        auto_answer,
        sdp: Some("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n".into()),
        ..Config::default()
    };
    UserAgent::new(config, seed)
}

impl Pair {
    fn new() -> Pair {
        Pair::with_bob(agent(BOB, true, 2))
    }

    fn with_bob(bob: UserAgent) -> Pair {
        let now = Instant::now();
        Pair {
            alice: agent(ALICE, false, 1),
            bob,
            now,
            start: now,
            wire: Vec::new(),
            alice_events: Vec::new(),
            bob_events: Vec::new(),
            drop_next: None,
        }
    }

    /// Delivers packets until both sides are quiet.
    fn deliver(&mut self) {
        loop {
            let mut moved = false;
            while let Some(t) = self.alice.poll_transmit() {
                moved = true;
                self.carry(true, t.to, t.bytes);
            }
            while let Some(t) = self.bob.poll_transmit() {
                moved = true;
                self.carry(false, t.to, t.bytes);
            }
            while let Some(e) = self.alice.poll_event() {
                self.alice_events.push(e);
            }
            while let Some(e) = self.bob.poll_event() {
                self.bob_events.push(e);
            }
            if !moved {
                break;
            }
        }
    }

    fn carry(&mut self, from_alice: bool, to: Peer, bytes: bytes::Bytes) {
        let line = String::from_utf8_lossy(
            &bytes[..bytes
                .iter()
                .position(|&b| b == b'\r')
                .unwrap_or(bytes.len())],
        )
        .into_owned();
        self.wire.push((from_alice, line.clone()));
        if let Some(prefix) = self.drop_next
            && line.starts_with(prefix)
        {
            self.drop_next = None;
            return;
        }
        let msg = Message::parse(bytes).unwrap();
        let (receiver, source) = if from_alice {
            assert_eq!(to.addr, addr(BOB), "alice sends to bob");
            (&mut self.bob, Peer::new(to.transport, addr(ALICE)))
        } else {
            assert_eq!(to.addr, addr(ALICE), "bob sends to alice");
            (&mut self.alice, Peer::new(to.transport, addr(BOB)))
        };
        receiver.handle(self.now, msg, source).unwrap();
    }

    /// Runs the clock to `until` (from the start), delivering as it goes.
    fn run_to(&mut self, until: Duration) {
        let end = self.start + until;
        self.deliver();
        loop {
            let next = [self.alice.poll_timeout(), self.bob.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(at) if at <= end => {
                    self.now = self.now.max(at);
                    self.alice.handle_timeout(self.now);
                    self.bob.handle_timeout(self.now);
                    self.deliver();
                }
                _ => break,
            }
        }
        self.now = end;
    }

    fn call(&mut self) -> Call {
        let call = self
            .alice
            .invite(self.now, &format!("sip:bob@{BOB}"))
            .unwrap();
        self.deliver();
        call
    }

    fn lines(&self) -> Vec<String> {
        self.wire
            .iter()
            .map(|(a, l)| format!("{}{}", if *a { "A> " } else { "B> " }, l))
            .collect()
    }
}

/// §13: a whole call: INVITE, 100, 200, ACK, then BYE and its 200; both sides see it.
#[test]
fn s13_call_setup_and_teardown() {
    let mut p = Pair::new();
    let call = p.call();
    assert!(
        p.alice_events.contains(&Event::Established { call }),
        "{:?}",
        p.alice_events
    );
    assert!(
        p.bob_events
            .iter()
            .any(|e| matches!(e, Event::Established { .. })),
        "{:?}",
        p.bob_events
    );
    p.alice.hangup(p.now, call).unwrap();
    p.deliver();
    assert!(p.alice_events.contains(&Event::Ended {
        call,
        by_peer: false
    }));
    assert!(
        p.bob_events
            .iter()
            .any(|e| matches!(e, Event::Ended { by_peer: true, .. }))
    );
    assert_eq!(
        p.lines(),
        [
            "A> INVITE sip:bob@127.0.0.1:5080 SIP/2.0",
            // Bob rings within 200 ms: his transaction layer sends no 100 Trying (§17.2.1).
            "B> SIP/2.0 180 Ringing",
            "B> SIP/2.0 200 OK",
            "A> ACK sip:p2psip@127.0.0.1:5080 SIP/2.0",
            "A> BYE sip:p2psip@127.0.0.1:5080 SIP/2.0",
            "B> SIP/2.0 200 OK",
        ]
    );
    p.run_to(Duration::from_secs(60));
    assert_eq!(p.alice.calls() + p.bob.calls(), 0);
}

/// §13.3.1.4: the UAS retransmits its 2xx until the ACK comes; the UAC ACKs each copy.
#[test]
fn s13_3_1_4_2xx_retransmitted_until_ack() {
    let mut p = Pair::new();
    p.drop_next = Some("ACK");
    let call = p.call();
    p.run_to(Duration::from_secs(2));
    let oks = p
        .wire
        .iter()
        .filter(|(a, l)| !*a && l.starts_with("SIP/2.0 200"))
        .count();
    let acks = p
        .wire
        .iter()
        .filter(|(a, l)| *a && l.starts_with("ACK"))
        .count();
    assert_eq!((oks, acks), (2, 2), "{:?}", p.lines());
    assert!(
        p.bob_events
            .iter()
            .any(|e| matches!(e, Event::Established { .. }))
    );
    p.run_to(Duration::from_secs(40));
    let oks_later = p
        .wire
        .iter()
        .filter(|(a, l)| !*a && l.starts_with("SIP/2.0 200"))
        .count();
    assert_eq!(oks_later, 2, "no retransmission after the ACK");
    assert!(p.alice_events.contains(&Event::Established { call }));
}

/// §13.3.1.4: a 2xx never ACKed ends the session with a BYE after 64*T1.
#[test]
fn s13_3_1_4_no_ack_means_bye() {
    // A lone UAS whose 2xx is never ACKed.
    let mut bob = agent(BOB, true, 9);
    let now = Instant::now();
    let invite = format!(
        "INVITE sip:bob@{BOB} SIP/2.0\r\nVia: SIP/2.0/UDP {ALICE};branch=z9hG4bKlone\r\nMax-Forwards: 70\r\n\
         From: <sip:alice@{ALICE}>;tag=x1\r\nTo: <sip:bob@{BOB}>\r\nCall-ID: lone@x\r\nCSeq: 1 INVITE\r\n\
         Contact: <sip:alice@{ALICE}>\r\nContent-Length: 0\r\n\r\n"
    );
    bob.handle(
        now,
        Message::parse(invite.into_bytes()).unwrap(),
        Peer::new(Transport::Udp, addr(ALICE)),
    )
    .unwrap();
    let mut sent = Vec::new();
    let mut t = now;
    for _ in 0..100 {
        while let Some(x) = bob.poll_transmit() {
            sent.push((
                t - now,
                String::from_utf8_lossy(&x.bytes[..12]).into_owned(),
            ));
        }
        let Some(next) = bob.poll_timeout() else {
            break;
        };
        if next - now > Duration::from_secs(40) {
            break;
        }
        t = next;
        bob.handle_timeout(t);
    }
    let bye = sent
        .iter()
        .find(|(_, l)| l.starts_with("BYE"))
        .expect("a BYE");
    assert_eq!(bye.0, Duration::from_secs(32), "after 64*T1: {sent:?}");
}

/// §11: OPTIONS gets 200 with Allow, Accept and Supported; §8.2.1: an unknown method gets
/// 405 with Allow; §8.2.2.2: a BYE outside any dialog gets 481.
#[test]
fn s11_options_and_s8_2_1_unknown_methods() {
    for (method, status) in [("OPTIONS", 200), ("FROBNICATE", 405), ("BYE", 481)] {
        let mut bob = agent(BOB, true, 3);
        let now = Instant::now();
        let text = format!(
            "{method} sip:bob@{BOB} SIP/2.0\r\nVia: SIP/2.0/UDP {ALICE};branch=z9hG4bK{method}\r\nMax-Forwards: 70\r\n\
             From: <sip:alice@{ALICE}>;tag=x1\r\nTo: <sip:bob@{BOB}>\r\nCall-ID: o@x\r\nCSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"
        );
        bob.handle(
            now,
            Message::parse(text.into_bytes()).unwrap(),
            Peer::new(Transport::Udp, addr(ALICE)),
        )
        .unwrap();
        let t = bob.poll_transmit().unwrap();
        let Message::Response(r) = Message::parse(t.bytes).unwrap() else {
            panic!()
        };
        assert_eq!(r.status().as_u16(), status, "{method}");
        if status != 481 {
            assert!(
                r.headers()
                    .get(HeaderName::Allow)
                    .is_some_and(|a| a.starts_with(b"INVITE")),
                "{method}"
            );
        }
        if method == "OPTIONS" {
            assert!(
                r.headers().contains(HeaderName::Accept)
                    && r.headers().contains(HeaderName::Supported)
            );
        }
    }
}

/// RFC 4475 §3.3: the application-layer answers come from the real UAS.
#[test]
fn rfc4475_application_layer_answers_from_the_uas() {
    for (file, status) in [
        ("invut", 415),
        ("sdp01", 406),
        ("bext01", 420),
        ("unkscm", 416),
        ("novelsc", 416),
        ("badvers", 505),
        ("insuf", 400),
    ] {
        let mut bob = agent(BOB, true, 4);
        let bytes = std::fs::read(format!("tests/data/rfc4475/{file}.dat")).unwrap();
        let result = bob.handle(
            Instant::now(),
            Message::parse(bytes).unwrap(),
            Peer::new(Transport::Udp, addr(ALICE)),
        );
        if file == "insuf" {
            // No Call-ID: no transaction can be keyed; the transport answers it (check_request).
            assert!(result.is_err() || bob.poll_transmit().is_some());
            continue;
        }
        result.unwrap();
        let answer = std::iter::from_fn(|| bob.poll_transmit())
            .map(|t| match Message::parse(t.bytes).unwrap() {
                Message::Response(r) => r.status(),
                Message::Request(_) => panic!(),
            })
            .find(|s| *s != StatusCode::TRYING);
        assert_eq!(answer.map(|s| s.as_u16()), Some(status), "{file}");
    }
}

/// §9.1, §9.2: hanging up a ringing call sends CANCEL; the UAS answers it 200 and the INVITE
/// 487, which the UAC's transaction ACKs; the call fails with 487.
#[test]
fn s9_cancel_a_ringing_call() {
    let mut p = Pair::with_bob(agent(BOB, false, 5));
    let call = p.call();
    let incoming = p.bob_events.iter().find_map(|e| match e {
        Event::Incoming { call, .. } => Some(*call),
        _ => None,
    });
    p.bob.ring(p.now, incoming.unwrap()).unwrap();
    p.deliver();
    assert!(p.alice_events.contains(&Event::Ringing { call }));
    p.alice.hangup(p.now, call).unwrap();
    p.deliver();
    assert!(
        p.alice_events.contains(&Event::Failed {
            call,
            status: StatusCode::REQUEST_TERMINATED
        }),
        "{:?}",
        p.alice_events
    );
    let lines = p.lines();
    for expected in [
        "A> CANCEL sip:bob@127.0.0.1:5080 SIP/2.0",
        "B> SIP/2.0 487 Request Terminated",
        "A> ACK sip:bob@127.0.0.1:5080 SIP/2.0",
    ] {
        assert!(
            lines.iter().any(|l| l == expected),
            "{expected} in {lines:?}"
        );
    }
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.starts_with("B> SIP/2.0 200"))
            .count(),
        1,
        "the CANCEL's 200"
    );
    p.run_to(Duration::from_secs(60));
    assert_eq!(p.alice.calls() + p.bob.calls(), 0);
}

/// §13.2.2.4: a forked INVITE answered 2xx twice: both are ACKed, the second dialog is ended
/// with a BYE, and the call is established once.
#[test]
fn s13_2_2_4_extra_2xx_are_acked_and_ended() {
    let mut alice = agent(ALICE, false, 6);
    let now = Instant::now();
    let call = alice.invite(now, &format!("sip:bob@{BOB}")).unwrap();
    let invite = alice.poll_transmit().unwrap();
    let Message::Request(invite) = Message::parse(invite.bytes).unwrap() else {
        panic!()
    };
    for (tag, contact) in [("fork-a", "127.0.0.1:5080"), ("fork-b", "127.0.0.1:5080")] {
        let mut ok = p2psip_sip::Response::for_request(&invite, StatusCode::OK, "OK", Some(tag));
        ok.headers_mut()
            .push(HeaderName::Contact, format!("<sip:bob@{contact}>"));
        ok.headers_mut().push(HeaderName::ContentLength, "0");
        alice
            .handle(
                now,
                Message::Response(ok),
                Peer::new(Transport::Udp, addr(BOB)),
            )
            .unwrap();
    }
    let sent: Vec<String> = std::iter::from_fn(|| alice.poll_transmit())
        .map(|t| {
            let Message::Request(r) = Message::parse(t.bytes).unwrap() else {
                panic!()
            };
            let to = String::from_utf8_lossy(r.headers().get(HeaderName::To).unwrap()).into_owned();
            format!("{} {}", r.method(), to.rsplit("tag=").next().unwrap())
        })
        .collect();
    assert_eq!(sent, ["ACK fork-a", "ACK fork-b", "BYE fork-b"]);
    let established: Vec<_> = std::iter::from_fn(|| alice.poll_event())
        .filter(|e| matches!(e, Event::Established { .. }))
        .collect();
    assert_eq!(established, [Event::Established { call }]);
}

/// §18.1.1: a request over 1300 bytes goes over TCP instead of UDP, and its Via says so.
#[test]
fn s18_1_1_large_requests_go_over_tcp() {
    let mut config = Config {
        listen: vec![
            Peer::new(Transport::Udp, addr(ALICE)),
            Peer::new(Transport::Tcp, addr(ALICE)),
        ],
        ..Config::default()
    };
    config.sdp = Some(format!("v=0\r\n{}", "a=x-padding:0123456789abcdef\r\n".repeat(50)).into());
    let mut alice = UserAgent::new(config, 8);
    alice
        .invite(Instant::now(), &format!("sip:bob@{BOB}"))
        .unwrap();
    let t = alice.poll_transmit().unwrap();
    assert!(t.bytes.len() > 1300);
    assert_eq!(t.to.transport, Transport::Tcp);
    let Message::Request(r) = Message::parse(t.bytes).unwrap() else {
        panic!()
    };
    assert!(
        r.headers()
            .get(HeaderName::Via)
            .unwrap()
            .starts_with(b"SIP/2.0/TCP 127.0.0.1:5070;")
    );
}

/// RFC 4475 §3.4.1 (inv2543): an RFC 2543 INVITE without Contact, branch or From tag is
/// answered normally; the dialog's target is its From.
#[test]
fn rfc4475_3_4_1_rfc2543_invite_is_answered() {
    let mut bob = agent(BOB, true, 11);
    let bytes = std::fs::read("tests/data/rfc4475/inv2543.dat").unwrap();
    bob.handle(
        Instant::now(),
        Message::parse(bytes).unwrap(),
        Peer::new(Transport::Udp, addr(ALICE)),
    )
    .unwrap();
    let statuses: Vec<u16> = std::iter::from_fn(|| bob.poll_transmit())
        .map(|t| match Message::parse(t.bytes).unwrap() {
            Message::Response(r) => r.status().as_u16(),
            Message::Request(_) => 0,
        })
        .collect();
    // No 100 Trying: the UA rings at once, within §17.2.1's 200 ms.
    assert_eq!(statuses, [180, 200], "auto-answer rings first");
}
