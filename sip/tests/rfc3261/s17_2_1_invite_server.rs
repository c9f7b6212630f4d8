//! RFC 3261 §17.2.1: the INVITE server transaction (Figure 7), with the Accepted state of
//! RFC 6026 §7.1.

use p2psip_sip::Transport;
use p2psip_sip::transaction::Event;

use super::{CLIENT, Run, answer, first_request, peer, req, secs};

/// §17.2.1: a TU that has not responded within 200 ms gets its 100 Trying sent for it, and a
/// retransmitted INVITE gets it again; the TU sees the INVITE once.
#[test]
fn s17_2_1_trying_and_absorbed_retransmissions() {
    let mut run = Run::new();
    let from = peer(Transport::Udp, CLIENT);
    run.receive(&req("INVITE", "z9hG4bKs1", "UDP"), from);
    run.advance_to(secs(0.5));
    run.receive(&req("INVITE", "z9hG4bKs1", "UDP"), from);
    assert_eq!(run.sent_ms("SIP/2.0 100"), [200, 500]);
    assert_eq!(run.events_ms(|e| matches!(e, Event::Request { .. })), [0]);
}

/// §17.2.1: "unless it knows that the TU will generate a provisional or final response within
/// 200 ms": a TU that rings within 200 ms sends the only provisional response.
#[test]
fn s17_2_1_no_trying_when_the_tu_responds_within_200_ms() {
    let mut run = Run::new();
    let from = peer(Transport::Udp, CLIENT);
    run.receive(&req("INVITE", "z9hG4bKs5", "UDP"), from);
    let (id, invite) = first_request(&run);
    run.advance_to(secs(0.05));
    run.respond(id, answer(&invite, 180));
    run.advance_to(secs(1.0));
    assert_eq!(run.sent_ms("SIP/2.0 100"), Vec::<u128>::new());
    assert_eq!(run.sent_ms("SIP/2.0 180"), [50]);
}

/// §17.2.1: a retransmitted INVITE before the TU responds gets the 100 Trying at once, and the
/// transaction does not send it a second time when 200 ms have passed.
#[test]
fn s17_2_1_a_retransmission_gets_the_trying_early() {
    let mut run = Run::new();
    let from = peer(Transport::Udp, CLIENT);
    run.receive(&req("INVITE", "z9hG4bKs6", "UDP"), from);
    run.advance_to(secs(0.1));
    run.receive(&req("INVITE", "z9hG4bKs6", "UDP"), from);
    run.advance_to(secs(1.0));
    assert_eq!(run.sent_ms("SIP/2.0 100"), [100]);
}

/// §17.2.1: a 3xx-6xx is retransmitted on Timer G (T1 doubling to T2) until the ACK; the
/// ACK moves to Confirmed and is absorbed; Timer I (T4) ends it.
#[test]
fn s17_2_1_final_retransmitted_until_ack() {
    let mut run = Run::new();
    let from = peer(Transport::Udp, CLIENT);
    run.receive(&req("INVITE", "z9hG4bKs2", "UDP"), from);
    let (id, invite) = first_request(&run);
    run.respond(id, answer(&invite, 486));
    run.advance_to(secs(8.0));
    run.receive(&req("ACK", "z9hG4bKs2", "UDP"), from);
    run.run_out(secs(40.0));
    assert_eq!(run.sent_ms("SIP/2.0 486"), [0, 500, 1500, 3500, 7500]);
    assert!(
        run.last_event(|e| matches!(e, Event::Ack { .. })).is_none(),
        "ACK absorbed"
    );
    assert_eq!(
        run.events_ms(|e| matches!(e, Event::Terminated { .. })),
        [13000],
        "Timer I"
    );
}

/// §17.2.1: Timer H (64*T1) ends a transaction whose ACK never came; the TU is told.
#[test]
fn s17_2_1_timer_h_without_ack() {
    let mut run = Run::new();
    run.receive(
        &req("INVITE", "z9hG4bKs3", "UDP"),
        peer(Transport::Udp, CLIENT),
    );
    let (id, invite) = first_request(&run);
    run.respond(id, answer(&invite, 404));
    run.run_out(secs(40.0));
    assert_eq!(
        run.sent_ms("SIP/2.0 404"),
        [
            0, 500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500
        ]
    );
    assert_eq!(
        run.events_ms(|e| matches!(e, Event::Timeout { .. })),
        [32000]
    );
}

/// RFC 6026 §7.1: after a 2xx the transaction is Accepted: retransmitted INVITEs are absorbed
/// (the TU retransmits the 2xx), the ACK goes to the TU, Timer L (64*T1) ends it.
#[test]
fn rfc6026_7_1_accepted_hands_the_ack_to_the_tu() {
    let mut run = Run::new();
    let from = peer(Transport::Udp, CLIENT);
    run.receive(&req("INVITE", "z9hG4bKs4", "UDP"), from);
    let (id, invite) = first_request(&run);
    run.respond(id, answer(&invite, 200));
    run.advance_to(secs(0.5));
    run.receive(&req("INVITE", "z9hG4bKs4", "UDP"), from);
    // The TU retransmits its 2xx through the transaction while Accepted.
    run.respond(id, answer(&invite, 200));
    run.receive(&req("ACK", "z9hG4bKnewbranch", "UDP"), from);
    run.run_out(secs(40.0));
    assert_eq!(run.sent_ms("SIP/2.0 200"), [0, 500]);
    assert_eq!(run.events_ms(|e| matches!(e, Event::Request { .. })), [0]);
    assert_eq!(run.events_ms(|e| matches!(e, Event::Ack { .. })), [500]);
    assert_eq!(
        run.events_ms(|e| matches!(e, Event::Terminated { .. })),
        [32000],
        "Timer L"
    );
    assert!(
        run.tx.respond(run.now, id, answer(&invite, 200)).is_err(),
        "gone after Timer L"
    );
}

/// §17.2.1: over TCP there is no Timer G and Timer I is zero.
#[test]
fn s17_2_1_reliable_transport() {
    let mut run = Run::new();
    let from = peer(Transport::Tcp, CLIENT);
    run.receive(&req("INVITE", "z9hG4bKs5", "TCP"), from);
    let (id, invite) = first_request(&run);
    run.respond(id, answer(&invite, 486));
    run.advance_to(secs(1.0));
    run.receive(&req("ACK", "z9hG4bKs5", "TCP"), from);
    assert!(run.tx.is_empty(), "Timer I is zero on TCP");
    assert_eq!(run.sent_ms("SIP/2.0 486"), [0]);
    assert!(
        run.sent.iter().all(|(_, t)| t.to == from),
        "responses go back on the connection"
    );
}

/// §17.2.1: no provisional response after the final one.
#[test]
fn s17_2_1_no_response_after_the_final_one() {
    let mut run = Run::new();
    run.receive(
        &req("INVITE", "z9hG4bKs6", "UDP"),
        peer(Transport::Udp, CLIENT),
    );
    let (id, invite) = first_request(&run);
    run.respond(id, answer(&invite, 486));
    assert!(run.tx.respond(run.now, id, answer(&invite, 180)).is_err());
}
