//! RFC 3261 §16: the proxy core, between user agents on a simulated network and a virtual
//! clock. Every packet is routed by its destination address; the proxy's `Locate` events are
//! answered from a location table, as a registrar would.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use p2psip_sip::proxy::{self, Proxy, Target};
use p2psip_sip::ua::{self, Call, UserAgent};
use p2psip_sip::{Message, Peer, StatusCode, Transport};

use super::addr;

const ALICE: &str = "127.0.0.1:5070";
const PROXY: &str = "127.0.0.1:5060";
const BOB1: &str = "127.0.0.1:5081";
const BOB2: &str = "127.0.0.1:5082";

enum Answer {
    Auto,
    Reject(u16),
    Ring,
    /// Only the transaction layer's 100 Trying.
    Nothing,
}

struct Net {
    now: Instant,
    start: Instant,
    proxy: Proxy,
    agents: HashMap<SocketAddr, UserAgent>,
    behaviour: HashMap<SocketAddr, Answer>,
    /// Where the proxy sends requests for `sip:bob@PROXY`.
    location: Vec<Target>,
    /// (from, to, first line) of every packet.
    wire: Vec<(SocketAddr, SocketAddr, String)>,
    events: HashMap<SocketAddr, Vec<ua::Event>>,
    answered: Vec<StatusCode>,
    /// Answer `Locate` with 302 and the location's Contacts instead of forwarding.
    redirect: bool,
    /// Addresses whose packets are lost from now on (a device gone silent).
    deaf: HashSet<SocketAddr>,
    /// Addresses the proxy cannot send to: each send is a transport error (§16.9).
    unreachable: HashSet<SocketAddr>,
}

fn ua_at(at: &str, auto: bool, seed: u64) -> UserAgent {
    UserAgent::new(
        ua::Config {
            listen: vec![Peer::new(Transport::Udp, addr(at))],
            auto_answer: auto,
            sdp: Some("v=0\r\n".into()),
            ..ua::Config::default()
        },
        seed,
    )
}

impl Net {
    fn new(bobs: Vec<(&str, Answer)>, location: Vec<Target>) -> Net {
        let now = Instant::now();
        let proxy = Proxy::new(
            proxy::Config {
                listen: vec![Peer::new(Transport::Udp, addr(PROXY))],
                ..proxy::Config::default()
            },
            7,
        );
        let mut agents = HashMap::new();
        let mut behaviour = HashMap::new();
        agents.insert(addr(ALICE), ua_at(ALICE, false, 1));
        for (n, (at, answer)) in bobs.into_iter().enumerate() {
            agents.insert(
                addr(at),
                ua_at(at, matches!(answer, Answer::Auto), 10 + n as u64),
            );
            behaviour.insert(addr(at), answer);
        }
        Net {
            now,
            start: now,
            proxy,
            agents,
            behaviour,
            location,
            wire: Vec::new(),
            events: HashMap::new(),
            answered: Vec::new(),
            redirect: false,
            deaf: HashSet::new(),
            unreachable: HashSet::new(),
        }
    }

    /// The same network, with a proxy that answers `unanswered` when no branch got an
    /// answer (`proxy::Config::unanswered`), and Timer C at `timer_c`.
    fn with_proxy(mut self, unanswered: Option<proxy::Reply>, timer_c: Duration) -> Net {
        self.proxy = Proxy::new(
            proxy::Config {
                listen: vec![Peer::new(Transport::Udp, addr(PROXY))],
                unanswered,
                timer_c,
                ..proxy::Config::default()
            },
            7,
        );
        self
    }

    fn deliver(&mut self) {
        for _ in 0..10_000 {
            while let Some(e) = self.proxy.poll_event() {
                match e {
                    proxy::Event::Locate { context, .. } if self.redirect => {
                        let contacts: Vec<_> = self
                            .location
                            .iter()
                            .map(|t| (p2psip_sip::HeaderName::Contact, format!("<{}>", t.uri)))
                            .collect();
                        self.proxy
                            .respond(
                                self.now,
                                context,
                                StatusCode::MOVED_TEMPORARILY,
                                "Moved Temporarily",
                                &contacts,
                            )
                            .unwrap();
                    }
                    proxy::Event::Locate { context, .. } => {
                        let targets = self.location.clone();
                        self.proxy.forward(self.now, context, targets).unwrap();
                    }
                    proxy::Event::Answered { status, .. } => self.answered.push(status),
                    _ => {}
                }
            }
            let mut packets = Vec::new();
            let mut failed = Vec::new();
            while let Some(t) = self.proxy.poll_transmit() {
                if self.unreachable.contains(&t.to.addr) {
                    failed.extend(t.transaction);
                    continue;
                }
                packets.push((addr(PROXY), t.to, t.bytes));
            }
            for txn in &failed {
                self.proxy.transport_error(self.now, *txn);
            }
            let addrs: Vec<SocketAddr> = self.agents.keys().copied().collect();
            for a in addrs {
                let agent = self.agents.get_mut(&a).unwrap();
                let mut new_events = Vec::new();
                while let Some(e) = agent.poll_event() {
                    new_events.push(e);
                }
                for e in new_events {
                    if let ua::Event::Incoming { call, .. } = &e {
                        match self.behaviour.get(&a) {
                            Some(Answer::Reject(code)) => agent
                                .reject(self.now, *call, StatusCode::new(*code).unwrap())
                                .unwrap(),
                            Some(Answer::Ring) => agent.ring(self.now, *call).unwrap(),
                            _ => {}
                        }
                    }
                    self.events.entry(a).or_default().push(e);
                }
                // After the events: what the agent sent in answer to them goes out now.
                while let Some(t) = agent.poll_transmit() {
                    packets.push((a, t.to, t.bytes));
                }
            }
            if packets.is_empty() && failed.is_empty() {
                return;
            }
            for (from, to, bytes) in packets {
                let line = String::from_utf8_lossy(
                    &bytes[..bytes.iter().position(|&b| b == b'\r').unwrap_or(0)],
                )
                .into_owned();
                self.wire.push((from, to.addr, line));
                let msg = Message::parse(bytes).unwrap();
                let source = Peer::new(Transport::Udp, from);
                if self.deaf.contains(&to.addr) {
                    continue;
                }
                if to.addr == addr(PROXY) {
                    self.proxy.handle(self.now, msg, source).unwrap();
                } else if let Some(agent) = self.agents.get_mut(&to.addr) {
                    agent.handle(self.now, msg, source).unwrap();
                }
            }
        }
        panic!("the network never went quiet");
    }

    fn run_to(&mut self, until: Duration) {
        let end = self.start + until;
        self.deliver();
        loop {
            let next = self
                .agents
                .values()
                .filter_map(UserAgent::poll_timeout)
                .chain(self.proxy.poll_timeout())
                .min();
            match next {
                Some(at) if at <= end => {
                    self.now = self.now.max(at);
                    self.proxy.handle_timeout(self.now);
                    for agent in self.agents.values_mut() {
                        agent.handle_timeout(self.now);
                    }
                    self.deliver();
                }
                _ => break,
            }
        }
        self.now = end;
    }

    fn call(&mut self) -> Call {
        let alice = self.agents.get_mut(&addr(ALICE)).unwrap();
        let call = alice.invite(self.now, &format!("sip:bob@{PROXY}")).unwrap();
        self.deliver();
        call
    }

    fn alice_events(&self) -> &[ua::Event] {
        self.events.get(&addr(ALICE)).map_or(&[], Vec::as_slice)
    }

    /// The status of `call`'s failure at Alice, if it failed.
    fn failure(&self, call: Call) -> Option<StatusCode> {
        self.alice_events().iter().find_map(|e| match e {
            ua::Event::Failed { call: c, status } if *c == call => Some(*status),
            _ => None,
        })
    }

    fn lines(&self, from: &str, to: &str) -> Vec<&str> {
        self.wire
            .iter()
            .filter(|(f, t, _)| *f == addr(from) && *t == addr(to))
            .map(|(_, _, l)| l.as_str())
            .collect()
    }
}

/// §16.6 step 4, §16.12: with Record-Route, the ACK and the BYE of the dialog go through the
/// proxy, and the call works end to end.
#[test]
fn s16_6_record_route_keeps_the_proxy_in_the_dialog() {
    let mut net = Net::new(
        vec![(BOB1, Answer::Auto)],
        vec![Target::new(format!("sip:bob@{BOB1}"))],
    );
    let call = net.call();
    assert!(
        net.alice_events()
            .contains(&ua::Event::Established { call }),
        "{:?}",
        net.wire
    );
    let alice = net.agents.get_mut(&addr(ALICE)).unwrap();
    alice.hangup(net.now, call).unwrap();
    net.deliver();
    assert!(net.alice_events().contains(&ua::Event::Ended {
        call,
        by_peer: false
    }));
    let to_proxy = net.lines(ALICE, PROXY);
    assert!(
        to_proxy.iter().any(|l| l.starts_with("ACK")),
        "{to_proxy:?}"
    );
    assert!(to_proxy.iter().any(|l| l.starts_with("BYE")));
    assert!(
        net.lines(ALICE, BOB1).is_empty(),
        "nothing bypasses the proxy"
    );
    let from_proxy = net.lines(PROXY, BOB1);
    assert_eq!(
        from_proxy.iter().filter(|l| l.starts_with("ACK")).count(),
        1
    );
    assert_eq!(
        from_proxy.iter().filter(|l| l.starts_with("BYE")).count(),
        1
    );
    net.run_to(Duration::from_secs(120));
    assert_eq!(net.proxy.contexts(), 0, "nothing left behind");
}

/// §16.7: parallel forking; the 2xx goes upstream at once and the other (ringing) branch is
/// cancelled (§16.10).
#[test]
fn s16_7_parallel_forking_first_2xx_wins() {
    let mut net = Net::new(
        vec![(BOB1, Answer::Ring), (BOB2, Answer::Auto)],
        vec![
            Target::new(format!("sip:bob@{BOB1}")),
            Target::new(format!("sip:bob@{BOB2}")),
        ],
    );
    let call = net.call();
    assert!(
        net.alice_events()
            .contains(&ua::Event::Established { call })
    );
    assert!(
        net.lines(PROXY, BOB1)
            .iter()
            .any(|l| l.starts_with("CANCEL")),
        "{:?}",
        net.wire
    );
    assert_eq!(net.answered.first(), Some(&StatusCode::OK));
}

/// §16.7 step 6: with every branch failed, the best response goes upstream: here 404 (lowest
/// 4xx) over 486; a 6xx ends the search.
#[test]
fn s16_7_best_final_response() {
    let mut net = Net::new(
        vec![(BOB1, Answer::Reject(486)), (BOB2, Answer::Reject(404))],
        vec![
            Target::new(format!("sip:bob@{BOB1}")),
            Target::new(format!("sip:bob@{BOB2}")),
        ],
    );
    let call = net.call();
    assert!(
        net.alice_events().contains(&ua::Event::Failed {
            call,
            status: StatusCode::NOT_FOUND
        }),
        "{:?}",
        net.alice_events()
    );
    let mut net = Net::new(
        vec![(BOB1, Answer::Reject(603)), (BOB2, Answer::Ring)],
        vec![
            Target::new(format!("sip:bob@{BOB1}")),
            Target::new(format!("sip:bob@{BOB2}")),
        ],
    );
    let call = net.call();
    assert!(net.alice_events().contains(&ua::Event::Failed {
        call,
        status: StatusCode::DECLINE
    }));
    assert!(
        net.lines(PROXY, BOB2)
            .iter()
            .any(|l| l.starts_with("CANCEL")),
        "a 6xx cancels the rest"
    );
}

/// §16.6 (q-values): targets are tried by decreasing q, the next group when the first fails.
#[test]
fn s16_6_sequential_forking_by_q() {
    let mut net = Net::new(
        vec![(BOB1, Answer::Reject(486)), (BOB2, Answer::Auto)],
        vec![
            Target {
                q: Some(500),
                ..Target::new(format!("sip:bob@{BOB2}"))
            },
            Target {
                q: Some(1000),
                ..Target::new(format!("sip:bob@{BOB1}"))
            },
        ],
    );
    let call = net.call();
    assert!(
        net.alice_events()
            .contains(&ua::Event::Established { call })
    );
    let first_invite = net
        .wire
        .iter()
        .position(|(_, t, l)| *t == addr(BOB1) && l.starts_with("INVITE"))
        .unwrap();
    let second_invite = net
        .wire
        .iter()
        .position(|(_, t, l)| *t == addr(BOB2) && l.starts_with("INVITE"))
        .unwrap();
    assert!(first_invite < second_invite, "q=1.0 before q=0.5");
}

/// §16.10: a CANCEL from upstream is answered 200, the branches are cancelled, and the INVITE
/// ends 487.
#[test]
fn s16_10_cancel_from_upstream() {
    let mut net = Net::new(
        vec![(BOB1, Answer::Ring)],
        vec![Target::new(format!("sip:bob@{BOB1}"))],
    );
    let call = net.call();
    let alice = net.agents.get_mut(&addr(ALICE)).unwrap();
    alice.hangup(net.now, call).unwrap();
    net.deliver();
    assert!(
        net.alice_events().contains(&ua::Event::Failed {
            call,
            status: StatusCode::REQUEST_TERMINATED
        }),
        "{:?}",
        net.wire
    );
    assert!(
        net.lines(PROXY, BOB1)
            .iter()
            .any(|l| l.starts_with("CANCEL"))
    );
    net.run_to(Duration::from_secs(120));
    assert_eq!(net.proxy.contexts(), 0);
}

/// §16.8: Timer C cancels a branch that rings for too long, and the caller gets a final
/// answer (408: see `s16_8_timer_c_answers_408_not_487`).
#[test]
fn s16_8_timer_c() {
    let mut net = Net::new(
        vec![(BOB1, Answer::Ring)],
        vec![Target::new(format!("sip:bob@{BOB1}"))],
    );
    let call = net.call();
    net.run_to(Duration::from_secs(200));
    assert!(
        net.lines(PROXY, BOB1)
            .iter()
            .any(|l| l.starts_with("CANCEL")),
        "Timer C at 180 s"
    );
    let failed = net
        .alice_events()
        .iter()
        .any(|e| matches!(e, ua::Event::Failed { call: c, .. } if *c == call));
    assert!(failed, "{:?}", net.alice_events());
}

/// §16.3: Max-Forwards 0 is refused 483; §16.3 step 4: a request that comes back unchanged is
/// a loop, 482.
#[test]
fn s16_3_too_many_hops_and_loops() {
    let mut net = Net::new(vec![], vec![]);
    let zero = format!(
        "OPTIONS sip:bob@{PROXY} SIP/2.0\r\nVia: SIP/2.0/UDP {ALICE};branch=z9hG4bKmf0\r\nMax-Forwards: 0\r\n\
         From: <sip:a@x>;tag=1\r\nTo: <sip:bob@{PROXY}>\r\nCall-ID: mf@x\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    );
    net.proxy
        .handle(
            net.now,
            Message::parse(zero.into_bytes()).unwrap(),
            Peer::new(Transport::Udp, addr(ALICE)),
        )
        .unwrap();
    net.deliver();
    assert!(
        net.lines(PROXY, ALICE)
            .iter()
            .any(|l| l.starts_with("SIP/2.0 483"))
    );
    // The proxy's targets point back at itself: the second pass is a loop.
    let mut net = Net::new(vec![], vec![Target::new(format!("sip:bob@{PROXY}"))]);
    let call = net.call();
    assert!(net.alice_events().iter().any(|e| matches!(e, ua::Event::Failed { call: c, status } if *c == call && status.as_u16() == 482)), "{:?}", net.wire);
}

/// §8.3 / §21.3.3: a redirect server answers 302 with the contacts; the UAC follows the 3xx
/// (§8.1.3.4) and reaches the callee directly.
#[test]
fn s8_1_3_4_uac_follows_a_302() {
    let mut net = Net::new(
        vec![(BOB1, Answer::Auto)],
        vec![Target::new(format!("sip:bob@{BOB1}"))],
    );
    net.redirect = true;
    let call = net.call();
    assert!(
        net.alice_events()
            .contains(&ua::Event::Established { call }),
        "{:?}",
        net.wire
    );
    assert_eq!(
        net.lines(PROXY, ALICE)
            .iter()
            .filter(|l| l.starts_with("SIP/2.0 302"))
            .count(),
        1
    );
    assert!(
        net.lines(ALICE, BOB1)
            .iter()
            .any(|l| l.starts_with("INVITE sip:bob@127.0.0.1:5081"))
    );
    assert!(
        net.lines(PROXY, BOB1).is_empty(),
        "the redirect server forwards nothing"
    );
}

/// §21.5.4: when the proxy's own transaction table is full, a request it cannot forward gets
/// 503 with Retry-After, not a 480 that would blame the callee.
#[test]
fn s21_5_4_own_limit_is_503_with_retry_after() {
    let mut net = Net::new(
        vec![(BOB1, Answer::Auto)],
        vec![Target::new(format!("sip:bob@{BOB1}"))],
    );
    let mut config = proxy::Config {
        listen: vec![Peer::new(Transport::Udp, addr(PROXY))],
        ..proxy::Config::default()
    };
    config.transactions.max_transactions = 1;
    net.proxy = Proxy::new(config, 9);
    let call = net.call();
    assert!(
        net.alice_events().contains(&ua::Event::Failed {
            call,
            status: StatusCode::SERVICE_UNAVAILABLE
        }),
        "{:?}",
        net.wire
    );
    assert!(
        net.lines(PROXY, ALICE)
            .iter()
            .any(|l| l.starts_with("SIP/2.0 503 Too Many Transactions"))
    );
}

/// §16.6: a method the proxy does not know is forwarded like any other; the UAS's 405 comes
/// back.
#[test]
fn s16_6_unknown_methods_are_forwarded() {
    let mut net = Net::new(
        vec![(BOB1, Answer::Auto)],
        vec![Target::new(format!("sip:bob@{BOB1}"))],
    );
    let text = format!(
        "FROBNICATE sip:bob@{PROXY} SIP/2.0\r\nVia: SIP/2.0/UDP {ALICE};branch=z9hG4bKfrob\r\nMax-Forwards: 70\r\n\
         From: <sip:a@x>;tag=1\r\nTo: <sip:bob@{PROXY}>\r\nCall-ID: frob@x\r\nCSeq: 1 FROBNICATE\r\nContent-Length: 0\r\n\r\n"
    );
    net.proxy
        .handle(
            net.now,
            Message::parse(text.into_bytes()).unwrap(),
            Peer::new(Transport::Udp, addr(ALICE)),
        )
        .unwrap();
    net.deliver();
    assert!(
        net.lines(PROXY, BOB1)
            .iter()
            .any(|l| l.starts_with("FROBNICATE sip:bob@127.0.0.1:5081")),
        "{:?}",
        net.wire
    );
    assert!(
        net.lines(PROXY, ALICE)
            .iter()
            .any(|l| l.starts_with("SIP/2.0 405"))
    );
}

/// The node's choice for requests nobody answered (`proxy::Config::unanswered`).
fn temporarily_unavailable() -> Option<proxy::Reply> {
    Some(proxy::Reply::new(
        StatusCode::TEMPORARILY_UNAVAILABLE,
        "Temporarily Unavailable (no device answered)",
    ))
}

/// §16.8: Timer C cancels a branch that rings for too long; the branch answers the CANCEL
/// with 487, but the caller learns that the request timed out: 408, not 487.
#[test]
fn s16_8_timer_c_answers_408_not_487() {
    let mut net = Net::new(
        vec![(BOB1, Answer::Ring)],
        vec![Target::new(format!("sip:bob@{BOB1}"))],
    )
    .with_proxy(None, Duration::from_secs(10));
    let call = net.call();
    assert!(
        net.alice_events().contains(&ua::Event::Ringing { call }),
        "{:?}",
        net.wire
    );
    net.run_to(Duration::from_secs(9));
    assert_eq!(net.failure(call), None, "Timer C has not fired yet");
    net.run_to(Duration::from_secs(11));
    assert_eq!(
        net.lines(PROXY, BOB1)
            .iter()
            .filter(|l| l.starts_with("CANCEL"))
            .count(),
        1
    );
    assert!(
        net.lines(BOB1, PROXY)
            .iter()
            .any(|l| l.starts_with("SIP/2.0 487")),
        "{:?}",
        net.wire
    );
    assert_eq!(
        net.failure(call),
        Some(StatusCode::REQUEST_TIMEOUT),
        "{:?} {:?}",
        net.wire,
        net.alice_events()
    );
    assert!(
        net.lines(PROXY, ALICE)
            .iter()
            .all(|l| !l.starts_with("SIP/2.0 487")),
        "{:?}",
        net.lines(PROXY, ALICE)
    );
    assert_eq!(net.answered, vec![StatusCode::REQUEST_TIMEOUT]);
    // The same holds with `unanswered` set: the device rang, so it answered.
    let mut net = Net::new(
        vec![(BOB1, Answer::Ring)],
        vec![Target::new(format!("sip:bob@{BOB1}"))],
    )
    .with_proxy(temporarily_unavailable(), Duration::from_secs(10));
    let call = net.call();
    net.run_to(Duration::from_secs(11));
    assert_eq!(net.failure(call), Some(StatusCode::REQUEST_TIMEOUT));
}

/// §9.1: a branch that rings, is cancelled by Timer C and then says nothing more is given up
/// 64*T1 after the CANCEL: the caller still gets 408.
#[test]
fn s9_1_a_cancelled_branch_that_never_answers_is_given_up() {
    let mut net = Net::new(
        vec![(BOB1, Answer::Ring)],
        vec![Target::new(format!("sip:bob@{BOB1}"))],
    )
    .with_proxy(None, Duration::from_secs(10));
    let call = net.call();
    assert!(net.alice_events().contains(&ua::Event::Ringing { call }));
    net.deaf.insert(addr(BOB1));
    // Timer C at 10 s, then 64*T1 = 32 s of waiting for the final response.
    net.run_to(Duration::from_secs(41));
    assert_eq!(net.failure(call), None, "{:?}", net.wire);
    net.run_to(Duration::from_secs(43));
    assert_eq!(net.failure(call), Some(StatusCode::REQUEST_TIMEOUT));
    assert!(
        net.lines(PROXY, BOB1)
            .iter()
            .any(|l| l.starts_with("CANCEL")),
        "Timer C sent a CANCEL (retransmitted: nobody answers it)"
    );
}

/// §16.7 (Timer B) and `proxy::Config::unanswered`: a target that never answers gets the
/// stand-in 408 (RFC 3261's default), or the configured 480 with its reason.
#[test]
fn s16_7_a_silent_target_is_408_or_the_configured_480() {
    let silent = vec![Target::new(format!("sip:bob@{BOB1}"))];
    let mut net = Net::new(vec![], silent.clone());
    let call = net.call();
    net.run_to(Duration::from_secs(40));
    assert_eq!(net.failure(call), Some(StatusCode::REQUEST_TIMEOUT));

    let mut net =
        Net::new(vec![], silent).with_proxy(temporarily_unavailable(), Duration::from_secs(180));
    let call = net.call();
    net.run_to(Duration::from_secs(31));
    assert_eq!(net.failure(call), None, "Timer B is 64*T1 = 32 s");
    net.run_to(Duration::from_secs(40));
    assert_eq!(net.failure(call), Some(StatusCode::TEMPORARILY_UNAVAILABLE));
    assert!(
        net.lines(PROXY, ALICE)
            .contains(&"SIP/2.0 480 Temporarily Unavailable (no device answered)"),
        "{:?}",
        net.lines(PROXY, ALICE)
    );
    assert_eq!(net.proxy.contexts(), 0, "nothing left behind");
}

/// §16.9: a transport error counts as a 503 (sent upstream as 500); with every branch failed
/// that way or timed out, the configured answer goes instead.
#[test]
fn s16_9_unreachable_and_silent_targets_are_the_configured_480() {
    let targets = vec![
        Target::new(format!("sip:bob@{BOB1}")),
        Target::new(format!("sip:bob@{BOB2}")),
    ];
    let mut net = Net::new(vec![], targets.clone());
    net.unreachable.insert(addr(BOB1));
    net.unreachable.insert(addr(BOB2));
    let call = net.call();
    assert_eq!(net.failure(call), Some(StatusCode::SERVER_INTERNAL_ERROR));

    let mut net =
        Net::new(vec![], targets).with_proxy(temporarily_unavailable(), Duration::from_secs(180));
    net.unreachable.insert(addr(BOB1));
    let call = net.call();
    assert_eq!(net.failure(call), None, "BOB2 may still answer");
    net.run_to(Duration::from_secs(40));
    assert_eq!(net.failure(call), Some(StatusCode::TEMPORARILY_UNAVAILABLE));
}

/// §16.7 step 6: when one device answers (486) and another is silent, the device's answer
/// goes upstream, not the stand-in 408, and not the configured 480.
#[test]
fn s16_7_6_a_device_answer_beats_a_silent_branch() {
    let targets = vec![
        Target::new(format!("sip:bob@{BOB1}")),
        Target::new(format!("sip:bob@{BOB2}")),
    ];
    for unanswered in [None, temporarily_unavailable()] {
        let mut net = Net::new(vec![(BOB2, Answer::Reject(486))], targets.clone())
            .with_proxy(unanswered, Duration::from_secs(180));
        let call = net.call();
        net.run_to(Duration::from_secs(40));
        assert_eq!(net.failure(call), StatusCode::new(486), "{:?}", net.wire);
    }
}

/// §16.10 with `unanswered` set: a CANCEL from upstream ends a request whose branches never
/// answered with 487, not with the 480 meant for callees that did not answer.
#[test]
fn s16_10_cancelled_requests_are_487_even_when_unanswered() {
    let mut net = Net::new(vec![], vec![Target::new(format!("sip:bob@{BOB1}"))])
        .with_proxy(temporarily_unavailable(), Duration::from_secs(180));
    let call = net.call();
    // The proxy's own 100 Trying, 200 ms on (§17.2.1): Alice may CANCEL from then (§9.1).
    net.run_to(Duration::from_millis(300));
    let alice = net.agents.get_mut(&addr(ALICE)).unwrap();
    alice.hangup(net.now, call).unwrap();
    net.deliver();
    assert!(
        net.lines(PROXY, ALICE)
            .iter()
            .any(|l| l.starts_with("SIP/2.0 200")),
        "the CANCEL is answered: {:?}",
        net.wire
    );
    net.run_to(Duration::from_secs(40));
    assert_eq!(
        net.failure(call),
        Some(StatusCode::REQUEST_TERMINATED),
        "{:?}",
        net.wire
    );
}

/// §16.8 and `proxy::Config::unanswered`: a branch whose only answer was the next hop's 100
/// Trying is cancelled by Timer C like a ringing one, but nobody behind that hop answered:
/// 408 by default, the configured 480 when set.
#[test]
fn s16_8_timer_c_after_only_100_counts_as_unanswered() {
    for (unanswered, want) in [
        (None, StatusCode::REQUEST_TIMEOUT),
        (
            temporarily_unavailable(),
            StatusCode::TEMPORARILY_UNAVAILABLE,
        ),
    ] {
        let mut net = Net::new(
            vec![(BOB1, Answer::Nothing)],
            vec![Target::new(format!("sip:bob@{BOB1}"))],
        )
        .with_proxy(unanswered, Duration::from_secs(10));
        let call = net.call();
        // Bob's transaction layer says 100 Trying for him once 200 ms have passed (§17.2.1).
        net.run_to(Duration::from_millis(300));
        assert!(
            net.lines(BOB1, PROXY)
                .iter()
                .any(|l| l.starts_with("SIP/2.0 100")),
            "{:?}",
            net.wire
        );
        net.run_to(Duration::from_secs(11));
        assert!(
            net.lines(PROXY, BOB1)
                .iter()
                .any(|l| l.starts_with("CANCEL")),
            "{:?}",
            net.wire
        );
        assert_eq!(net.failure(call), Some(want), "{:?}", net.wire);
    }
}
