//! RFC 4475 §3.1.2: invalid messages. A request is answered 400 (505 for badvers) with a
//! reason phrase that names the fault and a Warning with the details; a response is dropped.

use p2psip_sip::{Error, HeaderName, Role};

use super::{answer, assert_dropped, assert_refused};

/// The Warning header of a refusal, as text.
fn warning(name: &str) -> String {
    let resp = answer(name, Role::Proxy).unwrap();
    String::from_utf8(
        resp.headers()
            .get(HeaderName::Warning)
            .expect("a Warning")
            .to_vec(),
    )
    .unwrap()
}

/// §3.1.2.1 Extraneous header field separators (`;;,;,,` in Via, `;;;;` in Contact).
#[test]
fn s3_1_2_1_badinv01() {
    assert_refused("badinv01", 400, "Bad Via header");
    assert!(warning("badinv01").contains("a parameter name after ';'"));
}

/// §3.1.2.2 Content-Length larger than the message (UDP): answered 400.
#[test]
fn s3_1_2_2_clerr() {
    assert_refused("clerr", 400, "Body shorter than Content-Length");
    assert!(warning("clerr").contains("Content-Length is 9999"));
}

/// §3.1.2.3 Negative Content-Length.
#[test]
fn s3_1_2_3_ncl() {
    assert_refused("ncl", 400, "Bad Content-Length");
}

/// §3.1.2.4 Request scalar fields with overlarge values (CSeq, Max-Forwards, Expires).
#[test]
fn s3_1_2_4_scalar02() {
    assert_refused("scalar02", 400, "Bad CSeq header");
    assert!(warning("scalar02").contains("a sequence number below 2^32"));
}

/// §3.1.2.5 Response scalar fields with overlarge values: dropped.
#[test]
fn s3_1_2_5_scalarlg() {
    let e = assert_dropped("scalarlg");
    assert!(matches!(e, Error::Field { field: "CSeq", .. }), "{e}");
}

/// §3.1.2.6 Unterminated quoted string in display name.
#[test]
fn s3_1_2_6_quotbal() {
    assert_refused("quotbal", 400, "Bad To header");
    assert!(warning("quotbal").contains("a closing quote"));
}

/// §3.1.2.7 <> enclosing the Request-URI.
#[test]
fn s3_1_2_7_ltgtruri() {
    assert_refused("ltgtruri", 400, "Bad Request-URI");
}

/// §3.1.2.8 Malformed SIP Request-URI (embedded LWS).
#[test]
fn s3_1_2_8_lwsruri() {
    assert_refused("lwsruri", 400, "Malformed start line");
}

/// §3.1.2.9 Multiple SP separating Request-Line elements.
#[test]
fn s3_1_2_9_lwsstart() {
    assert_refused("lwsstart", 400, "Malformed start line");
    assert!(warning("lwsstart").contains("single space"));
}

/// §3.1.2.10 SP characters at the end of the Request-Line.
#[test]
fn s3_1_2_10_trws() {
    assert_refused("trws", 400, "Malformed start line");
}

/// §3.1.2.11 Escaped headers in the SIP Request-URI.
#[test]
fn s3_1_2_11_escruri() {
    assert_refused("escruri", 400, "Request-URI must not carry headers");
}

/// §3.1.2.12 Invalid time zone in the Date header (refused rather than ignored).
#[test]
fn s3_1_2_12_baddate() {
    assert_refused("baddate", 400, "Bad Date header");
    assert!(warning("baddate").contains("the time zone GMT"));
}

/// §3.1.2.13 Failure to enclose name-addr URI in <> (a URI with headers in addr-spec form).
#[test]
fn s3_1_2_13_regbadct() {
    assert_refused("regbadct", 400, "Bad Contact header");
    assert!(warning("regbadct").contains("angle brackets"));
}

/// §3.1.2.14 Spaces within addr-spec (`< sip:... >`).
#[test]
fn s3_1_2_14_badaspec() {
    assert_refused("badaspec", 400, "Bad To header");
}

/// §3.1.2.15 Non-token characters in display name (an unquoted comma).
#[test]
fn s3_1_2_15_baddn() {
    assert_refused("baddn", 400, "Bad From header");
}

/// §3.1.2.16 Unknown protocol version: 505.
#[test]
fn s3_1_2_16_badvers() {
    assert_refused("badvers", 505, "Version Not Supported");
}

/// §3.1.2.17 Start line and CSeq method mismatch.
#[test]
fn s3_1_2_17_mismatch01() {
    assert_refused(
        "mismatch01",
        400,
        "CSeq method does not match the request method",
    );
}

/// §3.1.2.18 Unknown method with CSeq method mismatch.
#[test]
fn s3_1_2_18_mismatch02() {
    assert_refused(
        "mismatch02",
        400,
        "CSeq method does not match the request method",
    );
}

/// §3.1.2.19 Overlarge response code: dropped.
#[test]
fn s3_1_2_19_bigcode() {
    let e = assert_dropped("bigcode");
    assert!(matches!(e, Error::StartLine { .. }), "{e}");
}
