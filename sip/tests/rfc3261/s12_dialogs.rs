//! RFC 3261 §12: dialogs, their creation on either side, and the requests inside them.

use p2psip_sip::header::{CSeq, Route};
use p2psip_sip::{
    Dialog, DialogId, DialogState, HeaderName, Method, Request, Response, StatusCode,
};

use super::{request, resp};

const INVITE: &str = "INVITE sip:bob@biloxi.example.com SIP/2.0\r\n\
    Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKnashds8\r\n\
    Max-Forwards: 70\r\n\
    Record-Route: <sip:p1.example.com;lr>\r\n\
    Record-Route: <sip:p2.example.com;lr>\r\n\
    From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n\
    To: Bob <sip:bob@biloxi.example.com>\r\n\
    Call-ID: a84b4c76e66710\r\n\
    CSeq: 314159 INVITE\r\n\
    Contact: <sip:alice@pc33.atlanta.example.com>\r\n\
    Content-Length: 0\r\n\r\n";

fn response_with(status: u16, to_tag: &str, extra: &str) -> Response {
    let text = resp(status, "z9hG4bKnashds8", "INVITE", Some(to_tag)).replace(
        "Content-Length: 0\r\n",
        &format!("{extra}Content-Length: 0\r\n"),
    );
    match p2psip_sip::Message::parse(text.into_bytes()).unwrap() {
        p2psip_sip::Message::Response(r) => r,
        _ => panic!(),
    }
}

fn uas_dialog() -> (Request, Dialog) {
    let invite = request(INVITE);
    let dialog = Dialog::from_request(&invite, "b7", DialogState::Confirmed).unwrap();
    (invite, dialog)
}

/// §12.1.1: the UAS takes the route set in order, the Contact as remote target, adds its
/// tag to To, and has no local sequence number yet.
#[test]
fn s12_1_1_uas_creates_the_dialog_from_the_request() {
    let (_, d) = uas_dialog();
    assert_eq!(
        d.route_set(),
        ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]
    );
    assert_eq!(d.remote_target(), "sip:alice@pc33.atlanta.example.com");
    assert_eq!(
        d.id(),
        &DialogId {
            call_id: "a84b4c76e66710".into(),
            local_tag: "b7".into(),
            remote_tag: "1928301774".into()
        }
    );
    assert_eq!((d.local_seq(), d.remote_seq()), (None, Some(314159)));
}

/// §12.1.2: the UAC takes the route set reversed from the response and its Contact; a 1xx
/// with a tag makes an early dialog, the 2xx confirms it with the 2xx's route set.
#[test]
fn s12_1_2_uac_creates_an_early_dialog_and_the_2xx_confirms_it() {
    let invite = request(INVITE);
    let ringing = response_with(
        180,
        "b1",
        "Record-Route: <sip:p2.example.com;lr>, <sip:p1.example.com;lr>\r\nContact: <sip:bob@192.0.2.4>\r\n",
    );
    let mut d = Dialog::from_response(&invite, &ringing).unwrap();
    assert_eq!(d.state(), DialogState::Early);
    assert_eq!(
        d.route_set(),
        ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]
    );
    assert_eq!(d.remote_target(), "sip:bob@192.0.2.4");
    let ok = response_with(
        200,
        "b1",
        "Record-Route: <sip:p3.example.com;lr>\r\nContact: <sip:bob@192.0.2.5>\r\n",
    );
    d.confirm(&ok).unwrap();
    assert_eq!(d.state(), DialogState::Confirmed);
    assert_eq!(d.route_set(), ["<sip:p3.example.com;lr>"]);
    assert_eq!(d.remote_target(), "sip:bob@192.0.2.5");
    assert!(
        Dialog::from_response(&invite, &super::response_no_tag()).is_err(),
        "no tag, no dialog"
    );
}

/// §12.1.2 (§13.2.2.4): a forked INVITE makes one early dialog per To tag.
#[test]
fn s12_1_2_forked_answers_make_distinct_dialogs() {
    let invite = request(INVITE);
    let a = Dialog::from_response(
        &invite,
        &response_with(180, "fork-a", "Contact: <sip:bob@192.0.2.4>\r\n"),
    )
    .unwrap();
    let b = Dialog::from_response(
        &invite,
        &response_with(180, "fork-b", "Contact: <sip:bob@192.0.2.9>\r\n"),
    )
    .unwrap();
    assert_ne!(a.id(), b.id());
    assert_eq!(a.id().call_id, b.id().call_id);
}

/// §12.2.1.1: with a loose first route the Request-URI is the remote target and the route set
/// goes in Route; CSeq counts up from the local sequence number; From/To carry the tags.
#[test]
fn s12_2_1_1_loose_routing() {
    let (_, mut d) = uas_dialog();
    let bye = d
        .request(Method::Bye, "SIP/2.0/UDP 192.0.2.4;branch=z9hG4bKb1")
        .unwrap();
    assert_eq!(bye.uri_str(), "sip:alice@pc33.atlanta.example.com");
    let routes: Vec<_> = bye
        .headers()
        .get_all(HeaderName::Route)
        .map(|f| f.value.to_vec())
        .collect();
    assert_eq!(
        routes,
        [
            b"<sip:p1.example.com;lr>".to_vec(),
            b"<sip:p2.example.com;lr>".to_vec()
        ]
    );
    assert_eq!(d.next_hop(), "sip:p1.example.com;lr");
    let cseq = bye.headers().typed::<CSeq>().unwrap().unwrap();
    assert_eq!((cseq.seq(), cseq.method_str()), (1, "BYE"));
    let from = bye.headers().get(HeaderName::From).unwrap();
    assert!(from.ends_with(b";tag=b7"), "our tag in From");
    let to = bye.headers().get(HeaderName::To).unwrap();
    assert!(to.ends_with(b";tag=1928301774"));
    let next = d
        .request(Method::Info, "SIP/2.0/UDP 192.0.2.4;branch=z9hG4bKb2")
        .unwrap();
    assert_eq!(next.headers().typed::<CSeq>().unwrap().unwrap().seq(), 2);
}

/// §12.2.1.1: with a strict first route it becomes the Request-URI, and the remote target
/// goes last in Route.
#[test]
fn s12_2_1_1_strict_routing() {
    let invite = request(&INVITE.replace("<sip:p1.example.com;lr>", "<sip:p1.example.com>"));
    let mut d = Dialog::from_request(&invite, "b7", DialogState::Confirmed).unwrap();
    let bye = d
        .request(Method::Bye, "SIP/2.0/UDP 192.0.2.4;branch=z9hG4bKb3")
        .unwrap();
    assert_eq!(bye.uri_str(), "sip:p1.example.com");
    let routes: Vec<String> = bye
        .headers()
        .typed_all::<Route>()
        .map(|r| r.unwrap().0.uri().as_str().to_owned())
        .collect();
    assert_eq!(
        routes,
        [
            "sip:p2.example.com;lr",
            "sip:alice@pc33.atlanta.example.com"
        ]
    );
}

/// §13.2.2.4: the ACK of a 2xx carries the INVITE's sequence number and does not count.
#[test]
fn s13_2_2_4_ack_takes_the_invite_sequence_number() {
    let invite = request(INVITE);
    let d = Dialog::from_response(
        &invite,
        &response_with(200, "b1", "Contact: <sip:bob@192.0.2.4>\r\n"),
    )
    .unwrap();
    let ack = d
        .ack(
            314159,
            "SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKack",
        )
        .unwrap();
    assert_eq!(
        ack.headers().get(HeaderName::CSeq),
        Some(&b"314159 ACK"[..])
    );
    assert_eq!(ack.uri_str(), "sip:bob@192.0.2.4");
    assert_eq!(d.local_seq(), Some(314159));
}

/// §12.2.2: a request with a lower CSeq is out of order (500); a higher one is taken, and a
/// re-INVITE refreshes the remote target.
#[test]
fn s12_2_2_remote_sequence_and_target_refresh() {
    let (_, mut d) = uas_dialog();
    let old = request(
        &INVITE
            .replace("CSeq: 314159 INVITE", "CSeq: 314158 BYE")
            .replace("INVITE sip:", "BYE sip:"),
    );
    assert_eq!(
        d.receive(&old).unwrap_err().status,
        StatusCode::SERVER_INTERNAL_ERROR
    );
    let reinvite = request(&INVITE.replace("CSeq: 314159", "CSeq: 314160").replace(
        "<sip:alice@pc33.atlanta.example.com>",
        "<sip:alice@192.0.2.77>",
    ));
    d.receive(&reinvite).unwrap();
    assert_eq!(d.remote_seq(), Some(314160));
    assert_eq!(d.remote_target(), "sip:alice@192.0.2.77");
}

/// §14.1, §14.2: a re-INVITE arriving while ours is pending is glare (491); a second one
/// before we answered the first gets 500; we may not start a re-INVITE while one is pending.
#[test]
fn s14_glare_and_pending_reinvites() {
    let (_, mut d) = uas_dialog();
    d.request(Method::Invite, "SIP/2.0/UDP 192.0.2.4;branch=z9hG4bKre1")
        .unwrap();
    assert!(
        d.request(Method::Invite, "SIP/2.0/UDP 192.0.2.4;branch=z9hG4bKre2")
            .is_err()
    );
    let theirs = request(&INVITE.replace("CSeq: 314159", "CSeq: 314160"));
    assert_eq!(
        d.receive(&theirs).unwrap_err().status,
        StatusCode::REQUEST_PENDING
    );
    d.refreshed(&response_with(200, "1928301774", "")).unwrap();
    d.receive(&theirs).unwrap();
    let again = request(&INVITE.replace("CSeq: 314159", "CSeq: 314161"));
    assert_eq!(
        d.receive(&again).unwrap_err().status,
        StatusCode::SERVER_INTERNAL_ERROR
    );
    d.answered_invite();
    let third = request(&INVITE.replace("CSeq: 314159", "CSeq: 314162"));
    assert!(d.receive(&third).is_ok());
}
