//! RFC 3261 §16.4 and §16.6 (with RFC 5658) for a proxy that listens on UDP and TCP and
//! forwards between them, as a node does between local softphones and other nodes: Route
//! processing that removes every consecutive Route of ours, the double Record-Route, the
//! Record-Route parameters, and the transaction user's next-hop resolver.
//!
//! The simulated network delivers a packet only to whoever listens on its transport and
//! address: a UDP datagram sent to the proxy's TCP port is lost, as it would be.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use p2psip_sip::proxy::{self, Proxy, Target};
use p2psip_sip::transaction::Transmit;
use p2psip_sip::ua::{self, Call, UserAgent};
use p2psip_sip::{HeaderName, Message, Peer, Request, Transport};

use super::addr;

const ALICE: &str = "127.0.0.1:5070";
const BOB: &str = "127.0.0.1:5081";
const CAROL: &str = "127.0.0.1:5082";
const PROXY_UDP: &str = "127.0.0.1:5060";
const PROXY_TCP: &str = "127.0.0.1:5062";

fn udp(a: &str) -> Peer {
    Peer::new(Transport::Udp, addr(a))
}

fn tcp(a: &str) -> Peer {
    Peer::new(Transport::Tcp, addr(a))
}

/// A proxy on UDP and TCP, with `config` changed by `edit`.
fn proxy_with(edit: impl FnOnce(&mut proxy::Config)) -> Proxy {
    let mut config = proxy::Config {
        listen: vec![udp(PROXY_UDP), tcp(PROXY_TCP)],
        ..proxy::Config::default()
    };
    edit(&mut config);
    Proxy::new(config, 5)
}

/// Alice on UDP calls Bob through the proxy; Bob listens on `bob` (UDP or TCP) and answers.
struct Net {
    now: Instant,
    proxy: Proxy,
    /// The agents, by where they listen.
    agents: Vec<(Peer, UserAgent)>,
    /// Where the proxy sends out-of-dialog requests.
    location: Vec<Target>,
    /// (from, to, message) of every packet delivered.
    wire: Vec<(Peer, Peer, Message)>,
    /// Packets nobody listens for: (to, first line).
    lost: Vec<(Peer, String)>,
    events: HashMap<SocketAddr, Vec<ua::Event>>,
    /// The proxy's events other than Locate and Answered (with `screen_routed`), each let
    /// through.
    screened: Vec<proxy::Event>,
}

impl Net {
    fn new(proxy: Proxy, bob: Peer, location: Vec<Target>) -> Net {
        let agent = |listen: Peer, auto: bool, seed: u64| {
            UserAgent::new(
                ua::Config {
                    listen: vec![listen],
                    auto_answer: auto,
                    sdp: Some("v=0\r\n".into()),
                    ..ua::Config::default()
                },
                seed,
            )
        };
        let now = Instant::now();
        Net {
            now,
            proxy,
            agents: vec![
                (udp(ALICE), agent(udp(ALICE), false, 1)),
                (bob, agent(bob, true, 2)),
            ],
            location,
            wire: Vec::new(),
            lost: Vec::new(),
            events: HashMap::new(),
            screened: Vec::new(),
        }
    }

    fn deliver(&mut self) {
        for _ in 0..10_000 {
            while let Some(e) = self.proxy.poll_event() {
                match &e {
                    proxy::Event::Locate { context, .. } => {
                        let targets = self.location.clone();
                        self.proxy.forward(self.now, *context, targets).unwrap();
                        continue;
                    }
                    proxy::Event::Routed { context, .. } => {
                        self.proxy.forward_routed(self.now, *context).unwrap();
                    }
                    proxy::Event::Ack { request, next, .. } => {
                        self.proxy.send_ack(request, *next);
                    }
                    _ => {}
                }
                if !matches!(e, proxy::Event::Answered { .. }) {
                    self.screened.push(e);
                }
            }
            let mut packets: Vec<(SocketAddr, Transmit)> = Vec::new();
            let listen = [udp(PROXY_UDP), tcp(PROXY_TCP)];
            while let Some(t) = self.proxy.poll_transmit() {
                let from = listen.iter().find(|p| p.transport == t.to.transport);
                packets.push((from.unwrap().addr, t));
            }
            for (at, agent) in &mut self.agents {
                while let Some(t) = agent.poll_transmit() {
                    packets.push((at.addr, t));
                }
                while let Some(e) = agent.poll_event() {
                    self.events.entry(at.addr).or_default().push(e);
                }
            }
            if packets.is_empty() {
                return;
            }
            for (from, t) in packets {
                let msg = Message::parse(t.bytes.clone()).unwrap();
                let source = Peer::new(t.to.transport, from);
                let to = Peer::new(t.to.transport, t.to.addr);
                if listen.contains(&to) {
                    self.proxy.handle(self.now, msg.clone(), source).unwrap();
                } else if let Some((_, agent)) = self.agents.iter_mut().find(|(p, _)| *p == to) {
                    agent.handle(self.now, msg.clone(), source).unwrap();
                } else {
                    self.lost.push((to, first_line(&msg)));
                    continue;
                }
                self.wire.push((source, to, msg));
            }
        }
        panic!("the network never went quiet");
    }

    /// Runs the clock `d` on, firing every timer on the way.
    fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        self.deliver();
        loop {
            let next = self
                .agents
                .iter()
                .filter_map(|(_, a)| a.poll_timeout())
                .chain(self.proxy.poll_timeout())
                .min();
            match next {
                Some(at) if at <= end => {
                    self.now = self.now.max(at);
                    self.proxy.handle_timeout(self.now);
                    for (_, agent) in &mut self.agents {
                        agent.handle_timeout(self.now);
                    }
                    self.deliver();
                }
                _ => break,
            }
        }
        self.now = end;
    }

    fn agent(&mut self, at: &str) -> &mut UserAgent {
        let at = addr(at);
        &mut self
            .agents
            .iter_mut()
            .find(|(p, _)| p.addr == at)
            .unwrap()
            .1
    }

    /// Alice calls `sip:bob@PROXY_UDP`.
    fn call(&mut self) -> Call {
        let now = self.now;
        let call = self
            .agent(ALICE)
            .invite(now, &format!("sip:bob@{PROXY_UDP}"))
            .unwrap();
        self.deliver();
        call
    }

    fn events(&self, at: &str) -> &[ua::Event] {
        self.events.get(&addr(at)).map_or(&[], Vec::as_slice)
    }

    /// The requests with `method` delivered to `to`.
    fn requests_to(&self, to: Peer, method: &str) -> Vec<&Request> {
        self.wire
            .iter()
            .filter(|(_, t, _)| *t == to)
            .filter_map(|(_, _, m)| match m {
                Message::Request(r) if r.method().as_str() == method => Some(r),
                _ => None,
            })
            .collect()
    }

    /// Every packet, one line each, for assertion messages.
    fn trace(&self) -> Vec<String> {
        self.wire
            .iter()
            .map(|(f, t, m)| format!("{f} -> {t}: {}", first_line(m)))
            .collect()
    }
}

fn first_line(msg: &Message) -> String {
    let bytes = msg.to_bytes();
    let end = bytes
        .iter()
        .position(|&b| b == b'\r')
        .unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// The elements of every `name` header of `request`, in order.
fn elements(request: &Request, name: HeaderName) -> Vec<String> {
    request
        .headers()
        .get_all(name)
        .flat_map(|f| {
            String::from_utf8_lossy(f.value)
                .split(',')
                .map(|e| e.trim().to_owned())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// A request of the dialog between Alice and Bob, from Alice, with `routes` (whole header
/// lines) above From.
fn in_dialog(method: &str, uri: &str, routes: &str, branch: &str) -> Message {
    let seq = if method == "ACK" { 1 } else { 2 };
    let text = format!(
        "{method} {uri} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {ALICE};branch={branch}\r\n\
         Max-Forwards: 70\r\n\
         {routes}\
         From: <sip:alice@127.0.0.1>;tag=a1\r\n\
         To: <sip:bob@127.0.0.1>;tag=b1\r\n\
         Call-ID: multi@127.0.0.1\r\n\
         CSeq: {seq} {method}\r\n\
         Content-Length: 0\r\n\r\n"
    );
    Message::parse(text.into_bytes()).unwrap()
}

/// What the proxy sends, parsed.
fn sent(proxy: &mut Proxy) -> Vec<(Peer, Request)> {
    std::iter::from_fn(|| proxy.poll_transmit())
        .filter_map(|t| match Message::parse(t.bytes).unwrap() {
            Message::Request(r) => Some((t.to, r)),
            Message::Response(_) => None,
        })
        .collect()
}

/// §16.4, RFC 5658: a double Record-Route leaves two Routes of ours in a row; both go,
/// on the stateful path (a BYE, Routes in two header fields) and on the stateless one (the
/// ACK of a 2xx, Routes in one field), and the request reaches the Request-URI.
#[test]
fn s16_4_consecutive_routes_of_ours_are_all_removed() {
    let mut proxy = proxy_with(|_| {});
    let now = Instant::now();
    let bob = format!("sip:bob@{BOB};transport=tcp");
    let routes =
        format!("Route: <sip:{PROXY_UDP};lr>\r\nRoute: <sip:{PROXY_TCP};transport=tcp;lr>\r\n");
    let bye = in_dialog("BYE", &bob, &routes, "z9hG4bKbye1");
    proxy.handle(now, bye, udp(ALICE)).unwrap();
    let routes = format!("Route: <sip:{PROXY_UDP};lr>, <sip:{PROXY_TCP};transport=tcp;lr>\r\n");
    let ack = in_dialog("ACK", &bob, &routes, "z9hG4bKack1");
    proxy.handle(now, ack, udp(ALICE)).unwrap();
    let out = sent(&mut proxy);
    let summary: Vec<String> = out
        .iter()
        .map(|(to, r)| format!("{to}: {} {}", r.method().as_str(), r.uri_str()))
        .collect();
    assert_eq!(out.len(), 2, "{summary:?}");
    for (method, (to, request)) in ["BYE", "ACK"].into_iter().zip(&out) {
        assert_eq!(request.method().as_str(), method, "{summary:?}");
        assert_eq!(*to, tcp(BOB), "{summary:?}");
        assert!(
            !request.headers().contains(HeaderName::Route),
            "no Route left: {:?}",
            elements(request, HeaderName::Route)
        );
    }
}

/// RFC 5658 §3.2 (§16.6 step 4): an INVITE that comes in over UDP and leaves over TCP gets
/// two Record-Routes, the TCP one on top; each side then reaches the proxy over its own
/// transport (Alice's ACK over UDP, Bob's BYE over TCP), and both Routes of ours go.
#[test]
fn rfc5658_3_2_double_record_route_across_transports() {
    let proxy = proxy_with(|_| {});
    let target = Target::new(format!("sip:bob@{BOB};transport=tcp"));
    let mut net = Net::new(proxy, tcp(BOB), vec![target]);
    let call = net.call();
    assert!(
        net.events(ALICE).contains(&ua::Event::Established { call }),
        "{:#?}",
        net.trace()
    );
    let invites = net.requests_to(tcp(BOB), "INVITE");
    assert_eq!(
        elements(invites[0], HeaderName::RecordRoute),
        [
            format!("<sip:{PROXY_TCP};transport=tcp;lr>"),
            format!("<sip:{PROXY_UDP};lr>")
        ]
    );
    // Alice's ACK reaches the proxy over UDP, and Bob with no Route.
    assert_eq!(net.requests_to(udp(PROXY_UDP), "ACK").len(), 1);
    let acks = net.requests_to(tcp(BOB), "ACK");
    assert_eq!(acks.len(), 1, "{:#?} lost {:?}", net.trace(), net.lost);
    assert!(!acks[0].headers().contains(HeaderName::Route));
    // Bob hangs up: his BYE reaches the proxy over TCP, and Alice with no Route.
    let bob_call = net
        .events(BOB)
        .iter()
        .find_map(|e| match e {
            ua::Event::Incoming { call, .. } => Some(*call),
            _ => None,
        })
        .unwrap();
    let now = net.now;
    net.agent(BOB).hangup(now, bob_call).unwrap();
    net.deliver();
    assert_eq!(net.requests_to(tcp(PROXY_TCP), "BYE").len(), 1);
    let byes = net.requests_to(udp(ALICE), "BYE");
    assert_eq!(byes.len(), 1, "{:#?} lost {:?}", net.trace(), net.lost);
    assert!(!byes[0].headers().contains(HeaderName::Route));
    assert!(net.events(ALICE).contains(&ua::Event::Ended {
        call,
        by_peer: true
    }));
    assert!(net.lost.is_empty(), "{:?}", net.lost);
    net.run_for(Duration::from_secs(120));
    assert_eq!(net.proxy.contexts(), 0, "nothing left behind");
}

/// RFC 5658 §3.2: in and out over the same transport and address, one Record-Route.
#[test]
fn rfc5658_3_2_one_record_route_on_the_same_transport() {
    let proxy = proxy_with(|_| {});
    let mut net = Net::new(proxy, udp(BOB), vec![Target::new(format!("sip:bob@{BOB}"))]);
    let call = net.call();
    assert!(net.events(ALICE).contains(&ua::Event::Established { call }));
    let invites = net.requests_to(udp(BOB), "INVITE");
    assert_eq!(
        elements(invites[0], HeaderName::RecordRoute),
        [format!("<sip:{PROXY_UDP};lr>")]
    );
}

/// §16.6 step 4: `Config::record_route_params` go on every Record-Route URI the proxy writes,
/// both of a double one, with `lr` kept; the Routes that come back with them are still
/// recognised as ours. A missing leading `;` is added.
#[test]
fn s16_6_4_record_route_params_on_every_entry() {
    let proxy = proxy_with(|c| c.record_route_params = ";node=12D3KooWtest".into());
    let target = Target::new(format!("sip:bob@{BOB};transport=tcp"));
    let mut net = Net::new(proxy, tcp(BOB), vec![target]);
    let call = net.call();
    assert!(
        net.events(ALICE).contains(&ua::Event::Established { call }),
        "{:#?}",
        net.trace()
    );
    let invites = net.requests_to(tcp(BOB), "INVITE");
    assert_eq!(
        elements(invites[0], HeaderName::RecordRoute),
        [
            format!("<sip:{PROXY_TCP};transport=tcp;node=12D3KooWtest;lr>"),
            format!("<sip:{PROXY_UDP};node=12D3KooWtest;lr>")
        ]
    );
    let acks = net.requests_to(tcp(BOB), "ACK");
    assert_eq!(acks.len(), 1, "{:#?} lost {:?}", net.trace(), net.lost);
    assert!(!acks[0].headers().contains(HeaderName::Route));

    let proxy = proxy_with(|c| c.record_route_params = "node=x".into());
    let mut net = Net::new(proxy, udp(BOB), vec![Target::new(format!("sip:bob@{BOB}"))]);
    net.call();
    let invites = net.requests_to(udp(BOB), "INVITE");
    assert_eq!(
        elements(invites[0], HeaderName::RecordRoute),
        [format!("<sip:{PROXY_UDP};node=x;lr>")]
    );
}

/// §16.6 step 7: the next hop of a URI comes from the transaction user's resolver first: for
/// a Request-URI with a host name (which the proxy cannot resolve itself), for a top Route on
/// the stateful path and on the stateless one (ACK); a `Target::peer` still wins when the
/// request has no Route.
#[test]
fn s16_6_7_resolver_gives_the_next_hop() {
    let resolver = |uri: &str| {
        if uri.contains("@bob.invalid") {
            Some(tcp(BOB))
        } else if uri.contains("relay.invalid") {
            Some(udp(CAROL))
        } else {
            None
        }
    };
    // A Request-URI the proxy cannot resolve: the call goes through the resolver's answer.
    let mut proxy = proxy_with(|_| {});
    proxy.set_resolver(Box::new(resolver));
    let target = Target::new("sip:bob@bob.invalid;transport=tcp");
    let mut net = Net::new(proxy, tcp(BOB), vec![target]);
    let call = net.call();
    assert!(
        net.events(ALICE).contains(&ua::Event::Established { call }),
        "{:#?}",
        net.trace()
    );
    assert_eq!(net.requests_to(tcp(BOB), "INVITE").len(), 1);

    // A Route to a name: the BYE (stateful) and the ACK (stateless) go where the resolver
    // says.
    let mut proxy = proxy_with(|_| {});
    proxy.set_resolver(Box::new(resolver));
    let now = Instant::now();
    let routes = format!("Route: <sip:{PROXY_UDP};lr>, <sip:relay.invalid;lr>\r\n");
    let uri = format!("sip:bob@{BOB}");
    let bye = in_dialog("BYE", &uri, &routes, "z9hG4bKbye2");
    proxy.handle(now, bye, udp(ALICE)).unwrap();
    let ack = in_dialog("ACK", &uri, &routes, "z9hG4bKack2");
    proxy.handle(now, ack, udp(ALICE)).unwrap();
    let out = sent(&mut proxy);
    let to: Vec<(Peer, &str)> = out
        .iter()
        .map(|(to, r)| (*to, r.method().as_str()))
        .collect();
    assert_eq!(to, [(udp(CAROL), "BYE"), (udp(CAROL), "ACK")]);

    // No Route, and the transaction user gave the peer: it wins over the resolver.
    let mut proxy = proxy_with(|_| {});
    proxy.set_resolver(Box::new(resolver));
    let text = format!(
        "OPTIONS sip:bob@{PROXY_UDP} SIP/2.0\r\nVia: SIP/2.0/UDP {ALICE};branch=z9hG4bKopt\r\n\
         Max-Forwards: 70\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:bob@{PROXY_UDP}>\r\n\
         Call-ID: opt@x\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    );
    let options = Message::parse(text.into_bytes()).unwrap();
    proxy.handle(now, options, udp(ALICE)).unwrap();
    let Some(proxy::Event::Locate { context, .. }) = proxy.poll_event() else {
        panic!("a Locate event");
    };
    let target = Target {
        peer: Some(udp(CAROL)),
        ..Target::new("sip:bob@bob.invalid")
    };
    proxy.forward(now, context, vec![target]).unwrap();
    let out = sent(&mut proxy);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, udp(CAROL));
}

/// §16.4: a Route URI names this proxy only if it carries this proxy's own
/// `record_route_params`. Two P2PSIP nodes on two hosts may both listen on 127.0.0.1:5060 and
/// tell their Record-Routes apart by `;node=`: the second Route, with the other node's
/// parameter, is the next hop, not a second Route of ours.
#[test]
fn s16_4_a_route_with_another_proxys_parameters_is_not_ours() {
    let mut proxy = proxy_with(|c| c.record_route_params = ";node=me".into());
    proxy.set_resolver(Box::new(|uri: &str| {
        uri.contains("node=other").then_some(udp(CAROL))
    }));
    let now = Instant::now();
    let routes =
        format!("Route: <sip:{PROXY_UDP};node=me;lr>, <sip:{PROXY_UDP};node=other;lr>\r\n");
    let uri = format!("sip:bob@{BOB}");
    let bye = in_dialog("BYE", &uri, &routes, "z9hG4bKbye3");
    proxy.handle(now, bye, udp(ALICE)).unwrap();
    let out = sent(&mut proxy);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, udp(CAROL), "the BYE goes to the other node");
    assert_eq!(
        elements(&out[0].1, HeaderName::Route),
        [format!("<sip:{PROXY_UDP};node=other;lr>")],
        "only our own Route is removed"
    );
}

/// §16.3 step 4 and §16.6 step 8: loop detection looks at the Vias with this proxy's sent-by,
/// and another proxy may have the same one (two P2PSIP nodes, each on its own host's
/// 127.0.0.1:5060). A BYE that crossed the first proxy is not a loop at the second; it is at
/// the first, when it comes back unchanged.
#[test]
fn s16_3_4_another_proxy_at_the_same_address_is_not_a_loop() {
    let mut first = proxy_with(|c| c.record_route_params = ";node=a".into());
    let mut second = Proxy::new(
        proxy::Config {
            listen: vec![udp(PROXY_UDP), tcp(PROXY_TCP)],
            record_route_params: ";node=b".into(),
            ..proxy::Config::default()
        },
        6,
    );
    let now = Instant::now();
    let routes = format!("Route: <sip:{PROXY_UDP};node=a;lr>, <sip:{PROXY_UDP};node=b;lr>\r\n");
    let bye = in_dialog("BYE", &format!("sip:bob@{BOB}"), &routes, "z9hG4bKloop1");
    first.handle(now, bye, udp(ALICE)).unwrap();
    let out = sent(&mut first);
    assert_eq!(out.len(), 1, "the first proxy forwards the BYE");
    let forwarded = out[0].1.clone();
    let again = Message::Request(forwarded.clone());
    second.handle(now, again, udp(PROXY_UDP)).unwrap();
    let out = sent(&mut second);
    assert_eq!(out.len(), 1, "the second proxy forwards it too, no 482");
    assert_eq!(out[0].1.method().as_str(), "BYE");
    assert_eq!(out[0].0, udp(BOB));
}

/// With `screen_routed` (a proxy at the edge, which must not relay to anyone's choice of
/// URI), a request with a Route left or a To tag waits for the transaction user: here a BYE
/// with a Route to a third host is refused 403, and nothing reaches that host; an ACK goes
/// only through `send_ack`.
#[test]
fn s16_5_screened_routed_requests_wait_for_the_transaction_user() {
    let mut proxy = proxy_with(|c| c.screen_routed = true);
    let now = Instant::now();
    let routes = format!("Route: <sip:{PROXY_UDP};lr>, <sip:{CAROL};lr>\r\n");
    let uri = format!("sip:bob@{BOB}");
    proxy
        .handle(
            now,
            in_dialog("BYE", &uri, &routes, "z9hG4bKbye9"),
            udp(ALICE),
        )
        .unwrap();
    let Some(proxy::Event::Routed {
        context,
        request,
        source,
        next,
    }) = proxy.poll_event()
    else {
        panic!("a Routed event");
    };
    assert_eq!((source, next), (udp(ALICE), Some(udp(CAROL))));
    assert_eq!(request.method().as_str(), "BYE");
    assert!(
        sent(&mut proxy).is_empty(),
        "forwarded before the TU said so"
    );
    proxy
        .respond(
            now,
            context,
            p2psip_sip::StatusCode::FORBIDDEN,
            "Forbidden",
            &[],
        )
        .unwrap();
    let out: Vec<Peer> = std::iter::from_fn(|| proxy.poll_transmit())
        .map(|t| t.to)
        .collect();
    assert_eq!(out, [udp(ALICE)], "only the 403 goes, back to Alice");

    proxy
        .handle(
            now,
            in_dialog("ACK", &uri, &routes, "z9hG4bKack9"),
            udp(ALICE),
        )
        .unwrap();
    let ack = std::iter::from_fn(|| proxy.poll_event())
        .find_map(|e| match e {
            proxy::Event::Ack { request, next, .. } => Some((request, next)),
            _ => None,
        })
        .expect("an Ack event");
    assert_eq!(ack.1, udp(CAROL));
    assert!(sent(&mut proxy).is_empty(), "an ACK went by itself");
    proxy.send_ack(&ack.0, ack.1);
    assert_eq!(sent(&mut proxy).len(), 1);
}

/// With `screen_routed`, the dialog a call makes through the proxy is reported with both of
/// its sides, and its in-dialog requests (ACK, BYE) wait for the transaction user.
#[test]
fn s16_5_screened_proxy_reports_the_dialogs_it_sees_made() {
    let proxy = proxy_with(|c| c.screen_routed = true);
    let target = Target::new(format!("sip:bob@{BOB};transport=tcp"));
    let mut net = Net::new(proxy, tcp(BOB), vec![target]);
    let call = net.call();
    assert!(net.events(ALICE).contains(&ua::Event::Established { call }));
    let dialogs: Vec<(Peer, Peer, bool)> = net
        .screened
        .iter()
        .filter_map(|e| match e {
            proxy::Event::Dialog {
                upstream,
                downstream,
                confirmed,
                ..
            } => Some((*upstream, *downstream, *confirmed)),
            _ => None,
        })
        .collect();
    assert!(
        dialogs.contains(&(udp(ALICE), tcp(BOB), true)),
        "{dialogs:?}"
    );
    assert!(
        net.screened
            .iter()
            .any(|e| matches!(e, proxy::Event::Ack { next, .. } if *next == tcp(BOB))),
        "the ACK of the 2xx was screened"
    );
    let now = net.now;
    net.agent(ALICE).hangup(now, call).unwrap();
    net.deliver();
    assert!(
        net.screened.iter().any(|e| matches!(
            e,
            proxy::Event::Routed { request, .. } if request.method().as_str() == "BYE"
        )),
        "the BYE was screened"
    );
    assert_eq!(
        net.requests_to(tcp(BOB), "BYE").len(),
        1,
        "{:#?}",
        net.trace()
    );
}
