//! RFC 3261 §17.2.3: matching requests to server transactions: branch with the magic cookie,
//! sent-by and method (ACK as INVITE); without the cookie, the RFC 2543 rules. And §9.2:
//! what a CANCEL cancels.

use p2psip_sip::Transport;
use p2psip_sip::transaction::{Config, Event};

use super::{CLIENT, Run, answer, first_request, peer, req, request, secs};

/// §17.2.3: a CANCEL has the INVITE's branch but its own transaction, and finds the INVITE.
#[test]
fn s17_2_3_cancel_is_its_own_transaction_and_finds_the_invite() {
    let mut run = Run::new();
    let from = peer(Transport::Udp, CLIENT);
    run.receive(&req("INVITE", "z9hG4bKc1", "UDP"), from);
    let (invite_id, _) = first_request(&run);
    run.receive(&req("CANCEL", "z9hG4bKc1", "UDP"), from);
    let requests = run
        .events
        .iter()
        .filter(|(_, e)| matches!(e, Event::Request { .. }))
        .count();
    assert_eq!(requests, 2);
    let cancel = request(&req("CANCEL", "z9hG4bKc1", "UDP"));
    assert_eq!(run.tx.cancel_target(&cancel), Some(invite_id));
    assert_eq!(
        run.tx
            .cancel_target(&request(&req("CANCEL", "z9hG4bKc2", "UDP"))),
        None
    );
}

/// §17.2.3: the same branch from another sent-by is another transaction.
#[test]
fn s17_2_3_sent_by_is_part_of_the_key() {
    let mut run = Run::new();
    run.receive(
        &req("OPTIONS", "z9hG4bKsb", "UDP"),
        peer(Transport::Udp, CLIENT),
    );
    let other = req("OPTIONS", "z9hG4bKsb", "UDP").replace("127.0.0.1:5070;", "127.0.0.2:5070;");
    run.receive(&other, peer(Transport::Udp, "127.0.0.2:5070"));
    assert_eq!(
        run.events_ms(|e| matches!(e, Event::Request { .. })),
        [0, 0]
    );
}

/// §17.2.3 (RFC 4475 §3.2.1 badbranch): without the magic cookie a retransmission is found
/// by Call-ID, CSeq, From tag and top Via, and the ACK of a non-2xx by the same.
#[test]
fn s17_2_3_rfc2543_matching() {
    let mut run = Run::new();
    let from = peer(Transport::Udp, CLIENT);
    run.receive(&req("INVITE", "z9hG4bK", "UDP"), from);
    run.receive(&req("INVITE", "z9hG4bK", "UDP"), from);
    assert_eq!(run.events_ms(|e| matches!(e, Event::Request { .. })), [0]);
    let (id, invite) = first_request(&run);
    run.respond(id, answer(&invite, 480));
    run.receive(&req("ACK", "z9hG4bK", "UDP"), from);
    assert!(
        run.last_event(|e| matches!(e, Event::Ack { .. })).is_none(),
        "the ACK matched"
    );
}

/// An ACK for a 2xx carries a new branch: it matches no transaction and goes to the TU.
#[test]
fn s17_2_3_ack_for_2xx_goes_to_the_tu() {
    let mut run = Run::new();
    run.receive(
        &req("ACK", "z9hG4bKlone", "UDP"),
        peer(Transport::Udp, CLIENT),
    );
    assert!(matches!(
        run.events[0].1,
        Event::Ack {
            transaction: None,
            ..
        }
    ));
    assert!(run.tx.is_empty());
}

/// Memory is bounded: past `max_transactions`, a new request is refused 503 with
/// Retry-After, without a transaction.
#[test]
fn bounded_transactions_answer_503() {
    let mut run = Run::with(Config {
        max_transactions: 1,
        ..Config::default()
    });
    let from = peer(Transport::Udp, CLIENT);
    run.receive(&req("OPTIONS", "z9hG4bKl1", "UDP"), from);
    run.receive(&req("OPTIONS", "z9hG4bKl2", "UDP"), from);
    assert_eq!(run.tx.len(), 1);
    assert_eq!(run.sent_ms("SIP/2.0 503"), [0]);
    let busy = &run.sent.last().unwrap().1.bytes;
    assert!(busy.windows(11).any(|w| w == b"Retry-After"));
    run.advance_to(secs(1.0));
}
