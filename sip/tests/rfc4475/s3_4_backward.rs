//! RFC 4475 §3.4: backward compatibility.

use p2psip_sip::header::Via;
use p2psip_sip::{HeaderName, Method};

use super::{assert_valid, request};

/// §3.4.1 INVITE with RFC 2543 syntax: no Max-Forwards, no branch, no Content-Length (the
/// body runs to the end of the datagram). Processed normally.
#[test]
fn s3_4_1_inv2543() {
    assert_valid("inv2543");
    let req = request("inv2543");
    assert_eq!(*req.method(), Method::Invite);
    assert!(!req.headers().contains(HeaderName::MaxForwards));
    assert!(
        !req.headers()
            .typed::<Via>()
            .unwrap()
            .unwrap()
            .has_rfc3261_branch()
    );
    assert!(req.body().ends_with(b"m=audio 49217 RTP/AVP 0\r\n"));
}
