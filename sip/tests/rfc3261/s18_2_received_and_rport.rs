//! RFC 3261 §18.2.1 and §18.2.2 with RFC 3581: a server stamps the top Via with `received`
//! (and fills `rport`), and sends responses where they will be heard.

use p2psip_sip::header::Via;
use p2psip_sip::transaction::Event;
use p2psip_sip::{Peer, Transport};

use super::{Run, addr, answer, first_request, req};

/// RFC 3581 §4: `rport` is filled with the source port and `received` added; the response
/// goes to the source address and port.
#[test]
fn rfc3581_4_rport_is_filled_and_used() {
    let mut run = Run::new();
    let source = Peer::new(Transport::Udp, addr("127.0.0.9:40000"));
    let text =
        req("OPTIONS", "z9hG4bKr1", "UDP").replace(";branch=z9hG4bKr1", ";branch=z9hG4bKr1;rport");
    run.receive(&text, source);
    let (id, options) = first_request(&run);
    let via = options.headers().typed::<Via>().unwrap().unwrap();
    assert_eq!(via.rport(), Some(Some(40000)));
    assert_eq!(via.received(), Some("127.0.0.9"));
    run.respond(id, answer(&options, 200));
    assert_eq!(run.sent[0].1.to, source);
    let Event::Request { source: s, .. } = &run.events[0].1 else {
        panic!()
    };
    assert_eq!(*s, source);
}

/// §18.2.1 / §18.2.2: without rport, `received` is added when the source differs from
/// sent-by, and the response goes to the source IP at the sent-by port.
#[test]
fn s18_2_2_response_to_received_and_sent_by_port() {
    let mut run = Run::new();
    let source = Peer::new(Transport::Udp, addr("127.0.0.9:40000"));
    run.receive(&req("OPTIONS", "z9hG4bKr2", "UDP"), source);
    let (id, options) = first_request(&run);
    let via = options.headers().typed::<Via>().unwrap().unwrap();
    assert_eq!(via.received(), Some("127.0.0.9"));
    assert_eq!(via.port(), Some(5070));
    run.respond(id, answer(&options, 200));
    assert_eq!(
        run.sent[0].1.to,
        Peer::new(Transport::Udp, addr("127.0.0.9:5070"))
    );
}

/// §18.2.1: a sent-by equal to the source gets no `received`.
#[test]
fn s18_2_1_no_received_when_sent_by_is_the_source() {
    let mut run = Run::new();
    run.receive(
        &req("OPTIONS", "z9hG4bKr3", "UDP"),
        Peer::new(Transport::Udp, addr("127.0.0.1:5070")),
    );
    let (_, options) = first_request(&run);
    assert_eq!(
        options
            .headers()
            .typed::<Via>()
            .unwrap()
            .unwrap()
            .received(),
        None
    );
}
