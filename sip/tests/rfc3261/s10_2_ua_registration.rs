//! RFC 3261 §10.2 and §8.1.2 from the user agent's side: an agent with an outbound proxy
//! registers an AOR at the crate's own registrar, refreshes it at half the granted interval,
//! asks again with Min-Expires after a 423, and unregisters; MESSAGE and OPTIONS go to the
//! outbound proxy with a loose route and end in [`Event::Completed`]. On a virtual clock.

use std::time::{Duration, Instant};

use p2psip_sip::registrar::{self, MemoryBindings, Registrar};
use p2psip_sip::ua::{Config, Event, UserAgent};
use p2psip_sip::{HeaderName, Message, Method, Peer, Request, Response, StatusCode, Transport};

use super::addr;

const AGENT: &str = "127.0.0.1:5070";
const PROXY: &str = "127.0.0.1:5060";
const AOR: &str = "sip:alice@example.p2p";

/// An agent whose outbound proxy is a registrar (and, for other requests, whatever the test
/// answers), on a virtual clock.
struct Setup {
    agent: UserAgent,
    registrar: Registrar,
    bindings: MemoryBindings,
    now: Instant,
    events: Vec<Event>,
}

impl Setup {
    fn new(registrar: registrar::Config) -> Setup {
        let proxy = Peer::new(Transport::Udp, addr(PROXY));
        let config = Config {
            listen: vec![Peer::new(Transport::Udp, addr(AGENT))],
            user: "alice".into(),
            outbound: Some(proxy),
            ..Config::default()
        };
        Setup {
            agent: UserAgent::new(config, 7),
            bindings: MemoryBindings::new(&registrar),
            registrar: Registrar::new(registrar, 8),
            now: Instant::now(),
            events: Vec::new(),
        }
    }

    /// The one request the agent sent since the last look, checked to go to the proxy.
    fn sent(&mut self) -> Request {
        let t = self.agent.poll_transmit().expect("a request was sent");
        assert_eq!(
            t.to.addr,
            addr(PROXY),
            "everything goes to the outbound proxy"
        );
        assert!(
            self.agent.poll_transmit().is_none(),
            "one request at a time"
        );
        match Message::parse(t.bytes.to_vec()).unwrap() {
            Message::Request(r) => r,
            Message::Response(r) => panic!("a response was sent: {r}"),
        }
    }

    /// The registrar answers `request`.
    fn registrar_answers(&mut self, request: &Request) -> StatusCode {
        let response = self
            .registrar
            .register(request, self.now, &mut self.bindings);
        let status = response.status();
        self.deliver(response);
        status
    }

    fn deliver(&mut self, response: Response) {
        self.agent
            .handle(
                self.now,
                Message::Response(response),
                Peer::new(Transport::Udp, addr(PROXY)),
            )
            .unwrap();
        while self
            .agent
            .poll_event()
            .map(|e| self.events.push(e))
            .is_some()
        {}
    }

    /// Runs the deadlines (the transaction's timers first) until the agent sends a request.
    fn next_request(&mut self) -> Request {
        loop {
            self.next_deadline();
            if let Some(t) = self.agent.poll_transmit() {
                assert_eq!(t.to.addr, addr(PROXY));
                let Message::Request(r) = Message::parse(t.bytes.to_vec()).unwrap() else {
                    panic!("a response was sent");
                };
                return r;
            }
        }
    }

    /// Jumps the clock to the agent's next deadline and runs it.
    fn next_deadline(&mut self) -> Duration {
        let at = self.agent.poll_timeout().expect("a deadline");
        let waited = at.saturating_duration_since(self.now);
        self.now = at;
        self.agent.handle_timeout(at);
        while self
            .agent
            .poll_event()
            .map(|e| self.events.push(e))
            .is_some()
        {}
        waited
    }
}

fn header(request: &Request, name: HeaderName) -> String {
    String::from_utf8_lossy(request.headers().get(name).unwrap_or_default()).into_owned()
}

#[test]
fn s10_2_register_refresh_and_unregister() {
    let mut s = Setup::new(registrar::Config::default());
    s.agent.register(s.now, AOR, 600).unwrap();
    let first = s.sent();
    assert_eq!(*first.method(), Method::Register);
    assert_eq!(
        first.uri_str(),
        "sip:example.p2p",
        "§10.2: the domain, no user part"
    );
    assert_eq!(header(&first, HeaderName::To), format!("<{AOR}>"));
    assert!(header(&first, HeaderName::From).starts_with(&format!("<{AOR}>;tag=")));
    assert_eq!(
        header(&first, HeaderName::Route),
        format!("<sip:{PROXY};lr>")
    );
    assert_eq!(header(&first, HeaderName::Expires), "600");
    assert_eq!(
        header(&first, HeaderName::Contact),
        format!("<sip:alice@{AGENT}>")
    );
    assert_eq!(s.registrar_answers(&first), StatusCode::OK);
    assert_eq!(
        s.events,
        [Event::Registered {
            aor: AOR.into(),
            expires: Duration::from_secs(600)
        }]
    );

    // §10.2.4: the refresh goes before the binding expires, with the same Call-ID and the
    // next CSeq.
    let registered_at = s.now;
    let refresh = s.next_request();
    assert_eq!(
        s.now - registered_at,
        Duration::from_secs(300),
        "refreshed at half the granted interval"
    );
    assert_eq!(
        header(&refresh, HeaderName::CallId),
        header(&first, HeaderName::CallId)
    );
    assert_eq!(header(&refresh, HeaderName::CSeq), "2 REGISTER");
    assert_eq!(s.registrar_answers(&refresh), StatusCode::OK);
    assert!(s.bindings_of(AOR) == 1, "still one binding");

    s.agent.unregister(s.now, AOR).unwrap();
    let gone = s.sent();
    assert_eq!(header(&gone, HeaderName::Expires), "0");
    assert_eq!(header(&gone, HeaderName::CSeq), "3 REGISTER");
    assert_eq!(s.registrar_answers(&gone), StatusCode::OK);
    assert_eq!(
        s.events.last(),
        Some(&Event::Unregistered { aor: AOR.into() })
    );
    assert_eq!(s.bindings_of(AOR), 0);
    assert_eq!(s.agent.registrations().count(), 0);
    s.quiet();
}

impl Setup {
    /// Runs every remaining deadline (the transactions' own timers) and checks that no
    /// request goes out any more: nothing is left to refresh.
    fn quiet(&mut self) {
        while self.agent.poll_timeout().is_some() {
            self.next_deadline();
            assert!(
                self.agent.poll_transmit().is_none(),
                "nothing is sent any more"
            );
        }
    }
}

impl Setup {
    fn bindings_of(&mut self, aor: &str) -> usize {
        use p2psip_sip::registrar::Bindings as _;
        self.bindings.get(aor, self.now).unwrap().len()
    }
}

#[test]
fn s10_2_8_interval_too_brief_asks_again_with_min_expires() {
    let config = registrar::Config::default().min_expires(Duration::from_secs(120));
    let mut s = Setup::new(config);
    s.agent.register(s.now, AOR, 30).unwrap();
    let brief = s.sent();
    assert_eq!(s.registrar_answers(&brief).as_u16(), 423);
    let again = s.sent();
    assert_eq!(header(&again, HeaderName::Expires), "120");
    assert_eq!(header(&again, HeaderName::CSeq), "2 REGISTER");
    assert_eq!(s.registrar_answers(&again), StatusCode::OK);
    assert_eq!(
        s.events,
        [Event::Registered {
            aor: AOR.into(),
            expires: Duration::from_secs(120)
        }]
    );
}

#[test]
fn s10_2_refused_registration_is_reported_with_its_reason_and_not_retried() {
    let mut s = Setup::new(registrar::Config::default());
    s.agent.register(s.now, AOR, 600).unwrap();
    let request = s.sent();
    let refusal = Response::for_request(
        &request,
        StatusCode::FORBIDDEN,
        "AOR is owned by another key",
        Some("x"),
    );
    s.deliver(refusal);
    assert_eq!(
        s.events,
        [Event::RegistrationFailed {
            aor: AOR.into(),
            status: StatusCode::FORBIDDEN,
            reason: "AOR is owned by another key".into(),
        }]
    );
    assert_eq!(s.agent.registrations().count(), 0);
    // Only the transaction's own timers remain: a refused AOR is not asked again.
    s.quiet();
}

#[test]
fn rfc3428_message_and_s11_options_complete_or_time_out() {
    let mut s = Setup::new(registrar::Config::default());
    s.agent.register(s.now, AOR, 600).unwrap();
    let register = s.sent();
    s.registrar_answers(&register);
    s.events.clear();

    let bob = "sip:bob@example.p2p";
    let id = s
        .agent
        .message(s.now, bob, "text/plain", "hello bob".into())
        .unwrap();
    let message = s.sent();
    assert_eq!(*message.method(), Method::Message);
    assert_eq!(message.uri_str(), bob);
    assert!(
        header(&message, HeaderName::From).starts_with(&format!("<{AOR}>;tag=")),
        "From is the registered AOR"
    );
    assert_eq!(
        header(&message, HeaderName::Route),
        format!("<sip:{PROXY};lr>")
    );
    assert_eq!(header(&message, HeaderName::ContentType), "text/plain");
    assert_eq!(&message.body()[..], b"hello bob");
    assert!(
        message.headers().get(HeaderName::Contact).is_none(),
        "MESSAGE makes no dialog"
    );
    s.deliver(Response::for_request(
        &message,
        StatusCode::OK,
        "OK",
        Some("b"),
    ));
    assert_eq!(
        s.events,
        [Event::Completed {
            request: id,
            method: Method::Message,
            status: StatusCode::OK,
            reason: "OK".into(),
        }]
    );

    // Nobody answers the OPTIONS: Timer F ends it with 408 after 64*T1.
    s.events.clear();
    let ping = s.agent.options(s.now, bob).unwrap();
    assert_eq!(*s.sent().method(), Method::Options);
    let start = s.now;
    while !s
        .events
        .iter()
        .any(|e| matches!(e, Event::Completed { .. }))
    {
        s.next_deadline();
        while s.agent.poll_transmit().is_some() {}
    }
    assert_eq!(
        s.events,
        [Event::Completed {
            request: ping,
            method: Method::Options,
            status: StatusCode::REQUEST_TIMEOUT,
            reason: "Request Timeout".into(),
        }]
    );
    assert_eq!(s.now - start, Duration::from_secs(32), "Timer F is 64*T1");
}

#[test]
fn s8_1_2_without_an_outbound_proxy_a_host_name_cannot_be_reached() {
    let config = Config {
        listen: vec![Peer::new(Transport::Udp, addr(AGENT))],
        ..Config::default()
    };
    let mut agent = UserAgent::new(config, 1);
    let now = Instant::now();
    assert!(agent.options(now, "sip:bob@example.p2p").is_err());
    assert!(agent.register(now, AOR, 0).is_err(), "0 s is an unregister");
    assert!(agent.options(now, "sip:bob@127.0.0.1:5080").is_ok());
}
