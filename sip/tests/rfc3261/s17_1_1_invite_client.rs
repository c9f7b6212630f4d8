//! RFC 3261 §17.1.1: the INVITE client transaction (Figure 5), with the Accepted state of
//! RFC 6026 §7.2.

use p2psip_sip::transaction::Event;
use p2psip_sip::{Message, Transport};

use super::{Run, SERVER, peer, req, request, resp, secs};

/// §17.1.1.2: Timer A doubles from T1 without the T2 cap; Timer B fires at 64*T1.
#[test]
fn s17_1_1_2_timer_a_doubles_and_timer_b_times_out() {
    let mut run = Run::new();
    run.start_client(
        request(&req("INVITE", "z9hG4bKinv1", "UDP")),
        peer(Transport::Udp, SERVER),
    );
    run.run_out(secs(40.0));
    assert_eq!(
        run.sent_ms("INVITE"),
        [0, 500, 1500, 3500, 7500, 15500, 31500]
    );
    assert_eq!(
        run.events_ms(|e| matches!(e, Event::Timeout { .. })),
        [32000]
    );
}

/// §17.1.1.2: a provisional response stops the retransmissions and Timer B.
#[test]
fn s17_1_1_2_provisional_stops_retransmissions() {
    let mut run = Run::new();
    run.start_client(
        request(&req("INVITE", "z9hG4bKinv2", "UDP")),
        peer(Transport::Udp, SERVER),
    );
    run.advance_to(secs(0.7));
    run.receive(
        &resp(180, "z9hG4bKinv2", "INVITE", Some("b1")),
        peer(Transport::Udp, SERVER),
    );
    run.advance_to(secs(120.0));
    assert_eq!(run.sent_ms("INVITE"), [0, 500]);
    assert!(
        run.last_event(|e| matches!(e, Event::Timeout { .. }))
            .is_none()
    );
    assert_eq!(
        run.tx.len(),
        1,
        "Proceeding waits for the final response (Timer C is the TU's)"
    );
}

/// §17.1.1.3: a 3xx-6xx gets an ACK built by the transaction: the INVITE's Request-URI,
/// Call-ID, From and top Via, the response's To, CSeq with method ACK. Retransmissions of
/// the response get the ACK again and do not reach the TU; Timer D (32 s) ends it.
#[test]
fn s17_1_1_3_non_2xx_is_acked_by_the_transaction() {
    let mut run = Run::new();
    run.start_client(
        request(&req("INVITE", "z9hG4bKinv3", "UDP")),
        peer(Transport::Udp, SERVER),
    );
    run.advance_to(secs(1.0));
    run.receive(
        &resp(486, "z9hG4bKinv3", "INVITE", Some("b1")),
        peer(Transport::Udp, SERVER),
    );
    run.advance_to(secs(2.0));
    run.receive(
        &resp(486, "z9hG4bKinv3", "INVITE", Some("b1")),
        peer(Transport::Udp, SERVER),
    );
    run.run_out(secs(40.0));
    assert_eq!(run.sent_ms("ACK"), [1000, 2000]);
    assert_eq!(
        run.events_ms(|e| matches!(e, Event::Response { .. })),
        [1000]
    );
    assert_eq!(
        run.events_ms(|e| matches!(e, Event::Terminated { .. })),
        [33000],
        "Timer D"
    );
    let ack = &run
        .sent
        .iter()
        .find(|(_, t)| t.bytes.starts_with(b"ACK"))
        .unwrap()
        .1;
    let Message::Request(ack) = Message::parse(ack.bytes.clone()).unwrap() else {
        panic!()
    };
    assert_eq!(ack.uri_str(), "sip:bob@127.0.0.1:5060");
    let h = ack.headers();
    let via = h.typed::<p2psip_sip::header::Via>().unwrap().unwrap();
    assert_eq!(via.branch(), Some("z9hG4bKinv3"));
    assert_eq!(h.count(p2psip_sip::HeaderName::Via), 1);
    assert_eq!(
        h.typed::<p2psip_sip::header::To>().unwrap().unwrap().tag(),
        Some("b1")
    );
    let cseq = h.typed::<p2psip_sip::header::CSeq>().unwrap().unwrap();
    assert_eq!((cseq.seq(), cseq.method_str()), (1, "ACK"));
}

/// §17.1.1.2: over a reliable transport Timer D is zero.
#[test]
fn s17_1_1_2_timer_d_is_zero_on_tcp() {
    let mut run = Run::new();
    run.start_client(
        request(&req("INVITE", "z9hG4bKinv4", "TCP")),
        peer(Transport::Tcp, SERVER),
    );
    run.receive(
        &resp(603, "z9hG4bKinv4", "INVITE", Some("b1")),
        peer(Transport::Tcp, SERVER),
    );
    assert!(run.tx.is_empty());
    assert_eq!(run.sent_ms("ACK"), [0]);
}

/// RFC 6026 §7.2: a 2xx moves to Accepted, where every 2xx (retransmissions and forked
/// answers) reaches the TU, which ACKs them; Timer M (64*T1) ends it. The transaction sends
/// no ACK for a 2xx.
#[test]
fn rfc6026_7_2_accepted_passes_every_2xx_to_the_tu() {
    let mut run = Run::new();
    run.start_client(
        request(&req("INVITE", "z9hG4bKinv5", "UDP")),
        peer(Transport::Udp, SERVER),
    );
    run.advance_to(secs(0.2));
    run.receive(
        &resp(200, "z9hG4bKinv5", "INVITE", Some("b1")),
        peer(Transport::Udp, SERVER),
    );
    run.advance_to(secs(0.4));
    run.receive(
        &resp(200, "z9hG4bKinv5", "INVITE", Some("b2")),
        peer(Transport::Udp, SERVER),
    );
    run.advance_to(secs(1.0));
    run.receive(
        &resp(200, "z9hG4bKinv5", "INVITE", Some("b1")),
        peer(Transport::Udp, SERVER),
    );
    run.run_out(secs(40.0));
    assert_eq!(
        run.events_ms(|e| matches!(e, Event::Response { .. })),
        [200, 400, 1000]
    );
    assert!(run.sent_ms("ACK").is_empty());
    assert_eq!(run.sent_ms("INVITE"), [0]);
    assert_eq!(
        run.events_ms(|e| matches!(e, Event::Terminated { .. })),
        [32200],
        "Timer M"
    );
}

/// §17.1.1: an ACK starts no transaction.
#[test]
fn s17_1_1_ack_starts_no_transaction() {
    let mut run = Run::new();
    let ack = request(&req("ACK", "z9hG4bKack1", "UDP"));
    assert!(
        run.tx
            .start_client(run.now, ack, peer(Transport::Udp, SERVER))
            .is_err()
    );
}
