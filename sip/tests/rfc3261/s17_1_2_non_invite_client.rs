//! RFC 3261 §17.1.2: the non-INVITE client transaction (Figure 6).

use p2psip_sip::Transport;
use p2psip_sip::transaction::Event;

use super::{Run, SERVER, peer, req, request, resp, secs};

/// §17.1.2.2: Timer E starts at T1 and doubles up to T2; Timer F fires at 64*T1. An OPTIONS
/// over UDP to a peer that never answers is sent at 0, 0.5, 1.5, 3.5, 7.5, 11.5, ... 31.5 s
/// and times out at 32 s.
#[test]
fn s17_1_2_2_timer_e_doubles_to_t2_and_timer_f_ends_it() {
    let mut run = Run::new();
    run.start_client(
        request(&req("OPTIONS", "z9hG4bKopt1", "UDP")),
        peer(Transport::Udp, SERVER),
    );
    run.run_out(secs(40.0));
    assert_eq!(
        run.sent_ms("OPTIONS"),
        [
            0, 500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500
        ]
    );
    assert_eq!(
        run.events_ms(|e| matches!(e, Event::Timeout { .. })),
        [32000]
    );
    assert_eq!(
        run.events_ms(|e| matches!(e, Event::Terminated { .. })),
        [32000]
    );
}

/// §17.1.2.2: over a reliable transport there are no retransmissions; Timer F still fires.
#[test]
fn s17_1_2_2_reliable_transport_never_retransmits() {
    let mut run = Run::new();
    run.start_client(
        request(&req("OPTIONS", "z9hG4bKopt2", "TCP")),
        peer(Transport::Tcp, SERVER),
    );
    run.run_out(secs(40.0));
    assert_eq!(run.sent_ms("OPTIONS"), [0]);
    assert_eq!(
        run.events_ms(|e| matches!(e, Event::Timeout { .. })),
        [32000]
    );
}

/// §17.1.2.2: in Proceeding, Timer E fires every T2; a final response moves to Completed,
/// which lasts T4 (Timer K) over UDP.
#[test]
fn s17_1_2_2_proceeding_retransmits_every_t2_and_completed_waits_t4() {
    let mut run = Run::new();
    let id = run.start_client(
        request(&req("OPTIONS", "z9hG4bKopt3", "UDP")),
        peer(Transport::Udp, SERVER),
    );
    run.advance_to(secs(0.2));
    run.receive(
        &resp(180, "z9hG4bKopt3", "OPTIONS", Some("b1")),
        peer(Transport::Udp, SERVER),
    );
    run.advance_to(secs(12.2));
    // 0.5 was armed in Trying; from then on every T2.
    assert_eq!(run.sent_ms("OPTIONS"), [0, 500, 4500, 8500]);
    run.receive(
        &resp(200, "z9hG4bKopt3", "OPTIONS", Some("b1")),
        peer(Transport::Udp, SERVER),
    );
    run.run_out(secs(40.0));
    assert_eq!(
        run.sent_ms("OPTIONS").len(),
        4,
        "no retransmission after the final response"
    );
    let responses =
        run.events_ms(|e| matches!(e, Event::Response { transaction, .. } if *transaction == id));
    assert_eq!(responses, [200, 12200]);
    assert_eq!(
        run.events_ms(|e| matches!(e, Event::Terminated { .. })),
        [17200],
        "Timer K = T4"
    );
}

/// §17.1.2.2: retransmitted final responses in Completed are absorbed; over TCP, Timer K is
/// zero.
#[test]
fn s17_1_2_2_completed_absorbs_and_tcp_ends_at_once() {
    let mut run = Run::new();
    run.start_client(
        request(&req("OPTIONS", "z9hG4bKopt4", "TCP")),
        peer(Transport::Tcp, SERVER),
    );
    run.receive(
        &resp(200, "z9hG4bKopt4", "OPTIONS", Some("b1")),
        peer(Transport::Tcp, SERVER),
    );
    assert!(run.tx.is_empty(), "Timer K is zero on TCP");
    run.receive(
        &resp(200, "z9hG4bKopt4", "OPTIONS", Some("b1")),
        peer(Transport::Tcp, SERVER),
    );
    let responses = run.events_ms(|e| matches!(e, Event::Response { .. }));
    assert_eq!(responses.len(), 1);
    assert!(
        run.last_event(|e| matches!(e, Event::StrayResponse { .. }))
            .is_some()
    );
}

/// §17.1.4: a transport error ends the transaction; the TU is told.
#[test]
fn s17_1_4_transport_error_reaches_the_tu() {
    let mut run = Run::new();
    let id = run.start_client(
        request(&req("OPTIONS", "z9hG4bKopt5", "UDP")),
        peer(Transport::Udp, SERVER),
    );
    run.tx.transport_error(run.now, id);
    run.drain();
    assert!(matches!(run.events[0].1, Event::TransportError { transaction } if transaction == id));
    assert!(run.tx.is_empty());
    assert_eq!(
        run.tx.poll_timeout().map(|_| ()),
        Some(()),
        "stale timers may remain"
    );
    run.run_out(secs(40.0));
    assert_eq!(
        run.sent_ms("OPTIONS"),
        [0],
        "a dead transaction never retransmits"
    );
}
