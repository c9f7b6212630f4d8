//! RFC 4475 §3.1.1: valid messages. Each must parse, with every typed header, and print back.

use p2psip_sip::header::{Accept, CSeq, Contact, From, MaxForwards, To, Via};
use p2psip_sip::{HeaderName, Message, Method, Uri, unescape, unquote};

use super::{assert_valid, request, response};

/// §3.1.1.1 A short tortuous INVITE: LWS, folding, compact forms, odd case everywhere.
#[test]
fn s3_1_1_1_wsinv() {
    assert_valid("wsinv");
    let req = request("wsinv");
    let h = req.headers();
    assert_eq!(h.typed::<MaxForwards>().unwrap().unwrap(), MaxForwards(68));
    let cseq = h.typed::<CSeq>().unwrap().unwrap();
    assert_eq!((cseq.seq(), cseq.method()), (9, Method::Invite));
    assert_eq!(h.typed::<To>().unwrap().unwrap().tag(), Some("1918181833n"));
    let from = h.typed::<From>().unwrap().unwrap();
    assert_eq!(unquote(from.0.display_name().unwrap()), r#"J Rosenberg \""#);
    assert_eq!(from.tag(), Some("98asjd8"));
    let vias: Vec<_> = h.typed_all::<Via>().map(|v| v.unwrap()).collect();
    let transports: Vec<_> = vias.iter().map(|v| v.transport()).collect();
    assert_eq!(transports, ["UDP", "TCP", "UDP"]);
    assert_eq!(vias[2].branch(), Some("z9hG4bK30239"));
    let contact = h.typed::<Contact>().unwrap().unwrap();
    assert_eq!(contact.q(), Some(330));
    assert_eq!(h.get(HeaderName::Subject), Some(&b""[..]));
    assert_eq!(
        h.get_by_name("NewFangledHeader"),
        Some(&b"newfangled value\r\n continued newfangled value"[..])
    );
    assert_eq!(
        h.get_by_name("UnknownHeaderWithUnusualValue"),
        Some(&b";;,,;;,;"[..])
    );
    assert_eq!(req.body().len(), 150);
}

/// §3.1.1.2 Wide range of valid characters: an unknown method, escapes in quoted strings,
/// UTF-8 in parameters. A proxy forwards it; a UAS answers 405 (step 2's UAS core).
#[test]
fn s3_1_1_2_intmeth() {
    assert_valid("intmeth");
    let req = request("intmeth");
    assert_eq!(
        *req.method(),
        Method::Extension("!interesting-Method0123456789_*+`.%indeed'~".into())
    );
    let Uri::Sip(uri) = req.uri().unwrap() else {
        panic!("not a SIP URI")
    };
    assert_eq!(
        uri.user(),
        Some("1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*")
    );
    assert_eq!(
        uri.password(),
        Some("&it+has=1,weird!*pas$wo~d_too.(doesn't-it)")
    );
    let to = req.headers().typed::<To>().unwrap().unwrap();
    assert_eq!(
        unquote(to.0.display_name().unwrap()),
        "BEL:\x07 NUL:\0 DEL:\x7f"
    );
    let from = req.headers().typed::<From>().unwrap().unwrap();
    assert_eq!(
        from.0.display_name(),
        Some("token1~` token2'+_ token3*%!.-")
    );
    assert_eq!(
        unquote(from.0.params().get("fromParam''~+*_!.-%").unwrap().unwrap()),
        "работающий"
    );
    assert!(
        req.headers()
            .typed::<CSeq>()
            .unwrap()
            .unwrap()
            .is(req.method())
    );
}

/// §3.1.1.3 Valid use of the % escaping mechanism.
#[test]
fn s3_1_1_3_esc01() {
    assert_valid("esc01");
    let req = request("esc01");
    let user = |u: &Uri<'_>| {
        u.as_sip()
            .and_then(|s| s.user())
            .map(|u| unescape(u).into_owned())
    };
    assert_eq!(
        user(&req.uri().unwrap()).as_deref(),
        Some("sips:user@example.com")
    );
    let h = req.headers();
    assert_eq!(
        user(h.typed::<To>().unwrap().unwrap().0.uri()).as_deref(),
        Some("user")
    );
    assert_eq!(
        user(h.typed::<From>().unwrap().unwrap().0.uri()).as_deref(),
        Some("I have spaces")
    );
    let contact = h.typed::<Contact>().unwrap().unwrap();
    let params: Vec<_> = contact
        .address()
        .unwrap()
        .uri()
        .as_sip()
        .unwrap()
        .params()
        .iter()
        .collect();
    assert_eq!(
        params,
        [("%6C%72", None), ("n%61me", Some("v%61lue%25%34%31"))]
    );
    assert_eq!(unescape("v%61lue%25%34%31"), "value%41");
}

/// §3.1.1.4 Escaped nulls in URIs.
#[test]
fn s3_1_1_4_escnull() {
    assert_valid("escnull");
    let req = request("escnull");
    let to = req.headers().typed::<To>().unwrap().unwrap();
    assert_eq!(
        unescape(to.0.uri().as_sip().unwrap().user().unwrap()),
        "null-\0-null"
    );
    assert_eq!(req.headers().typed_all::<Contact>().count(), 2);
}

/// §3.1.1.5 Use of % when it is not an escape: the method and a header name are tokens that
/// happen to contain %; they are not REGISTER and Contact.
#[test]
fn s3_1_1_5_esc02() {
    assert_valid("esc02");
    let req = request("esc02");
    assert_eq!(*req.method(), Method::Extension("RE%47IST%45R".into()));
    assert_eq!(req.headers().count(HeaderName::Contact), 2);
    assert_eq!(
        req.headers().get_by_name("C%6Fntact"),
        Some(&b"<sip:alias2@host2.example.com>"[..])
    );
    let to = req.headers().typed::<To>().unwrap().unwrap();
    assert_eq!(to.0.display_name(), Some("\"%Z%45\""));
}

/// §3.1.1.6 Message with no LWS between display name and <.
#[test]
fn s3_1_1_6_lwsdisp() {
    assert_valid("lwsdisp");
    let from = request("lwsdisp")
        .headers()
        .typed::<From>()
        .unwrap()
        .unwrap()
        .0
        .display_name()
        .map(String::from);
    assert_eq!(from.as_deref(), Some("caller"));
}

/// §3.1.1.7 Long values in header fields.
#[test]
fn s3_1_1_7_longreq() {
    assert_valid("longreq");
    let req = request("longreq");
    let to = req.headers().typed::<To>().unwrap().unwrap();
    assert!(
        to.0.display_name().unwrap().len() > 100,
        "the long display name"
    );
    assert!(
        req.headers().typed_all::<Via>().count() > 30,
        "the many Via values"
    );
}

/// §3.1.1.8 Extra trailing octets in a UDP datagram: the REGISTER ends at Content-Length 0;
/// the INVITE after it is not part of the message.
#[test]
fn s3_1_1_8_dblreq() {
    assert_valid("dblreq");
    let req = request("dblreq");
    assert_eq!(*req.method(), Method::Register);
    assert!(req.body().is_empty());
}

/// §3.1.1.9 Semicolon-separated parameters in the user part of a URI.
#[test]
fn s3_1_1_9_semiuri() {
    assert_valid("semiuri");
    let req = request("semiuri");
    let uri = req.uri().unwrap();
    let sip = uri.as_sip().unwrap();
    assert_eq!(sip.user(), Some("user;par=u%40example.net"));
    assert_eq!(sip.host().to_string(), "example.com");
    assert!(sip.params().is_empty());
    assert_eq!(req.headers().typed_all::<Accept>().count(), 6);
}

/// §3.1.1.10 Varied and unknown transport types.
#[test]
fn s3_1_1_10_transports() {
    assert_valid("transports");
    let req = request("transports");
    let t: Vec<_> = req
        .headers()
        .typed_all::<Via>()
        .map(|v| v.unwrap().transport().to_owned())
        .collect();
    assert_eq!(t, ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]);
}

/// §3.1.1.11 Multipart MIME message: the body is opaque bytes of Content-Length.
#[test]
fn s3_1_1_11_mpart01() {
    assert_valid("mpart01");
    let req = request("mpart01");
    assert_eq!(req.body().len(), 553);
    let ct = req
        .headers()
        .typed::<p2psip_sip::header::ContentType>()
        .unwrap()
        .unwrap();
    assert!(ct.0.is("multipart", "mixed"));
    assert_eq!(
        ct.0.params().get("boundary"),
        Some(Some("7a9cbec02ceef655"))
    );
}

/// §3.1.1.12 Unusual reason phrase: UTF-8.
#[test]
fn s3_1_1_12_unreason() {
    assert_valid("unreason");
    let resp = response("unreason");
    assert_eq!(resp.status().as_u16(), 200);
    assert!(
        resp.reason().starts_with("= 2**3 * 5**2 но"),
        "{}",
        resp.reason()
    );
}

/// §3.1.1.13 Empty reason phrase.
#[test]
fn s3_1_1_13_noreason() {
    assert_valid("noreason");
    let resp = response("noreason");
    assert_eq!((resp.status().as_u16(), resp.reason()), (100, ""));
    assert!(matches!(
        Message::parse(resp.to_bytes()),
        Ok(Message::Response(_))
    ));
}
