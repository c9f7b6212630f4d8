//! RFC 3261 §17.2.2: the non-INVITE server transaction (Figure 8).

use p2psip_sip::Transport;
use p2psip_sip::transaction::Event;

use super::{CLIENT, Run, answer, first_request, peer, req, secs};

/// §17.2.2: retransmissions in Trying are absorbed; in Proceeding and Completed they get the
/// last response again; Timer J (64*T1 over UDP) ends it.
#[test]
fn s17_2_2_retransmissions_get_the_last_response() {
    let mut run = Run::new();
    let from = peer(Transport::Udp, CLIENT);
    run.receive(&req("OPTIONS", "z9hG4bKn1", "UDP"), from);
    run.advance_to(secs(0.5));
    run.receive(&req("OPTIONS", "z9hG4bKn1", "UDP"), from);
    assert!(run.sent.is_empty(), "absorbed in Trying");
    let (id, options) = first_request(&run);
    run.respond(id, answer(&options, 200));
    run.advance_to(secs(1.5));
    run.receive(&req("OPTIONS", "z9hG4bKn1", "UDP"), from);
    run.run_out(secs(40.0));
    assert_eq!(run.sent_ms("SIP/2.0 200"), [500, 1500]);
    assert_eq!(run.events_ms(|e| matches!(e, Event::Request { .. })), [0]);
    assert_eq!(
        run.events_ms(|e| matches!(e, Event::Terminated { .. })),
        [32500],
        "Timer J"
    );
}

/// §17.2.2: over TCP Timer J is zero.
#[test]
fn s17_2_2_timer_j_is_zero_on_tcp() {
    let mut run = Run::new();
    run.receive(
        &req("OPTIONS", "z9hG4bKn2", "TCP"),
        peer(Transport::Tcp, CLIENT),
    );
    let (id, options) = first_request(&run);
    run.respond(id, answer(&options, 200));
    assert!(run.tx.is_empty());
}
