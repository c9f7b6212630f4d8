//! RFC 3261 §17.1.3: matching responses to client transactions, by the top Via branch and
//! the CSeq method.

use p2psip_sip::Transport;
use p2psip_sip::transaction::Event;

use super::{Run, SERVER, peer, req, request, resp};

#[test]
fn s17_1_3_branch_and_method_must_both_match() {
    let mut run = Run::new();
    let id = run.start_client(
        request(&req("INVITE", "z9hG4bKm1", "UDP")),
        peer(Transport::Udp, SERVER),
    );
    // Same branch, CSeq method CANCEL: the response of a CANCEL, not of the INVITE.
    run.receive(
        &resp(200, "z9hG4bKm1", "CANCEL", Some("b1")),
        peer(Transport::Udp, SERVER),
    );
    // Another branch.
    run.receive(
        &resp(180, "z9hG4bKother", "INVITE", Some("b1")),
        peer(Transport::Udp, SERVER),
    );
    assert_eq!(
        run.events_ms(|e| matches!(e, Event::StrayResponse { .. }))
            .len(),
        2
    );
    run.receive(
        &resp(180, "z9hG4bKm1", "INVITE", Some("b1")),
        peer(Transport::Udp, SERVER),
    );
    assert!(
        matches!(run.events.last().unwrap().1, Event::Response { transaction, .. } if transaction == id)
    );
}

/// §8.1.1.7: a branch must start with the magic cookie to key a client transaction; a
/// reused branch is refused.
#[test]
fn s8_1_1_7_client_branches_need_the_cookie_and_are_unique() {
    let mut run = Run::new();
    let to = peer(Transport::Udp, SERVER);
    assert!(
        run.tx
            .start_client(run.now, request(&req("OPTIONS", "nocookie", "UDP")), to)
            .is_err()
    );
    run.start_client(request(&req("OPTIONS", "z9hG4bKdup", "UDP")), to);
    assert!(
        run.tx
            .start_client(run.now, request(&req("OPTIONS", "z9hG4bKdup", "UDP")), to)
            .is_err()
    );
}
