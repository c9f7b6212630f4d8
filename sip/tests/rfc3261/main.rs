//! RFC 3261 conformance tests of the sans-IO state machines, one file per section, on
//! virtual time: a test jumps the clock from one deadline to the next instead of sleeping.

// Test helpers panic to fail the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod s10_2_ua_registration;
mod s10_registrar;
mod s12_dialogs;
mod s13_ua_core;
mod s16_proxy;
mod s16_proxy_multi_transport;
mod s17_1_1_invite_client;
mod s17_1_2_non_invite_client;
mod s17_1_3_response_matching;
mod s17_2_1_invite_server;
mod s17_2_2_non_invite_server;
mod s17_2_3_request_matching;
mod s18_2_received_and_rport;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use p2psip_sip::transaction::{Config, Event, TransactionId, Transactions, Transmit};
use p2psip_sip::{Message, Peer, Request, Response, Transport};

/// The client's address in these tests.
const CLIENT: &str = "127.0.0.1:5070";
/// The server's address in these tests.
const SERVER: &str = "127.0.0.1:5060";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn peer(transport: Transport, a: &str) -> Peer {
    Peer::new(transport, addr(a))
}

/// A transaction layer on a virtual clock, recording what it sends and reports, and when.
struct Run {
    tx: Transactions,
    start: Instant,
    now: Instant,
    sent: Vec<(Duration, Transmit)>,
    events: Vec<(Duration, Event)>,
}

impl Run {
    fn new() -> Run {
        Run::with(Config::default())
    }

    fn with(config: Config) -> Run {
        let start = Instant::now();
        Run {
            tx: Transactions::new(config),
            start,
            now: start,
            sent: Vec::new(),
            events: Vec::new(),
        }
    }

    fn at(&self) -> Duration {
        self.now - self.start
    }

    /// Collects what the layer has to say.
    fn drain(&mut self) {
        let at = self.at();
        while let Some(t) = self.tx.poll_transmit() {
            self.sent.push((at, t));
        }
        while let Some(e) = self.tx.poll_event() {
            self.events.push((at, e));
        }
    }

    /// Runs the clock to `until`, firing every timer on the way.
    fn advance_to(&mut self, until: Duration) {
        let end = self.start + until;
        while let Some(at) = self.tx.poll_timeout() {
            if at > end {
                break;
            }
            self.now = self.now.max(at);
            self.tx.handle_timeout(self.now);
            self.drain();
        }
        self.now = end;
    }

    /// Runs the clock until no timer is left (at most `limit`).
    fn run_out(&mut self, limit: Duration) {
        self.advance_to(limit);
        assert!(self.tx.is_empty(), "transactions left at {limit:?}");
    }

    fn start_client(&mut self, request: Request, to: Peer) -> TransactionId {
        let id = self.tx.start_client(self.now, request, to).unwrap();
        self.drain();
        id
    }

    fn receive(&mut self, text: &str, from: Peer) {
        let msg = Message::parse(text.as_bytes().to_vec()).unwrap();
        self.tx.handle(self.now, msg, from).unwrap();
        self.drain();
    }

    fn respond(&mut self, id: TransactionId, response: Response) {
        self.tx.respond(self.now, id, response).unwrap();
        self.drain();
    }

    /// Send times, in milliseconds, of every transmission whose first line starts with
    /// `start`.
    fn sent_ms(&self, start: &str) -> Vec<u128> {
        self.sent
            .iter()
            .filter(|(_, t)| t.bytes.starts_with(start.as_bytes()))
            .map(|(at, _)| at.as_millis())
            .collect()
    }

    /// Times, in milliseconds, of the events that `pick` accepts.
    fn events_ms(&self, pick: impl Fn(&Event) -> bool) -> Vec<u128> {
        self.events
            .iter()
            .filter(|(_, e)| pick(e))
            .map(|(at, _)| at.as_millis())
            .collect()
    }

    /// The last event that `pick` accepts.
    fn last_event(&self, pick: impl Fn(&Event) -> bool) -> Option<&Event> {
        self.events.iter().rev().map(|(_, e)| e).find(|e| pick(e))
    }
}

fn request(text: &str) -> Request {
    match Message::parse(text.as_bytes().to_vec()).unwrap() {
        Message::Request(r) => r,
        Message::Response(_) => panic!("not a request"),
    }
}

/// A request from the client with the given method, branch and transport.
fn req(method: &str, branch: &str, transport: &str) -> String {
    format!(
        "{method} sip:bob@127.0.0.1:5060 SIP/2.0\r\n\
         Via: SIP/2.0/{transport} 127.0.0.1:5070;branch={branch}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:alice@127.0.0.1>;tag=a1\r\n\
         To: <sip:bob@127.0.0.1>\r\n\
         Call-ID: call-1@127.0.0.1\r\n\
         CSeq: 1 {method}\r\n\
         Contact: <sip:alice@127.0.0.1:5070>\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// A response to [`req`] with the given status, branch, CSeq method and To tag.
fn resp(status: u16, branch: &str, method: &str, to_tag: Option<&str>) -> String {
    let tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
    format!(
        "SIP/2.0 {status} Whatever\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:5070;branch={branch}\r\n\
         From: <sip:alice@127.0.0.1>;tag=a1\r\n\
         To: <sip:bob@127.0.0.1>{tag}\r\n\
         Call-ID: call-1@127.0.0.1\r\n\
         CSeq: 1 {method}\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// The server's response to the request of `Event::Request`, built from it.
fn answer(req: &Request, status: u16) -> Response {
    p2psip_sip::Rejection::new(p2psip_sip::StatusCode::new(status).unwrap(), "Test").response(
        req,
        Some("b1"),
        &p2psip_sip::Policy::default(),
    )
}

/// The request of the first `Event::Request`.
fn first_request(run: &Run) -> (TransactionId, Request) {
    run.events
        .iter()
        .find_map(|(_, e)| match e {
            Event::Request {
                transaction,
                request,
                ..
            } => Some((*transaction, request.clone())),
            _ => None,
        })
        .expect("a request event")
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

/// A 200 to [`req`]'s INVITE with no To tag.
fn response_no_tag() -> Response {
    match Message::parse(resp(200, "z9hG4bKnashds8", "INVITE", None).into_bytes()).unwrap() {
        Message::Response(r) => r,
        Message::Request(_) => panic!("not a response"),
    }
}
