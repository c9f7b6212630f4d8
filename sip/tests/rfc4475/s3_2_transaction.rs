//! RFC 4475 §3.2: transaction layer semantics.

use p2psip_sip::header::Via;

use super::{assert_valid, request};

/// §3.2.1 Missing transaction identifier: the branch is only the magic cookie, so matching
/// falls back to the RFC 2543 rules (§17.2.3).
#[test]
fn s3_2_1_badbranch() {
    assert_valid("badbranch");
    let req = request("badbranch");
    let via = req.headers().typed::<Via>().unwrap().unwrap();
    assert_eq!(via.branch(), Some("z9hG4bK"));
    assert!(!via.has_rfc3261_branch());
}
