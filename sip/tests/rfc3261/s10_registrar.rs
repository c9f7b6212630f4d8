//! RFC 3261 §10.3: the registrar, step by step, on virtual time; and the REGISTER messages of
//! RFC 4475 (§3.3.4 unksm2, §3.3.12 cparam01, §3.3.13 cparam02, §3.3.14 regescrt).

use std::time::{Duration, Instant};

use p2psip_sip::header::{Contact, MinExpires, To};
use p2psip_sip::registrar::{
    self, Binding, Bindings, Config, MemoryBindings, Registrar, StoreError,
};
use p2psip_sip::{HeaderName, Message, Request, Response};

use super::request;

/// A registrar for `example.com` and its store, on a virtual clock.
struct Reg {
    registrar: Registrar,
    store: MemoryBindings,
    start: Instant,
    now: Instant,
}

impl Reg {
    fn new() -> Reg {
        Reg::with(Config::default().domain("example.com"))
    }

    fn with(config: Config) -> Reg {
        let start = Instant::now();
        Reg {
            store: MemoryBindings::new(&config),
            registrar: Registrar::new(config, 7),
            start,
            now: start,
        }
    }

    /// Moves the clock to `secs` seconds after the start.
    fn at(&mut self, secs: u64) -> &mut Reg {
        self.now = self.start + Duration::from_secs(secs);
        self
    }

    fn send(&mut self, req: &Request) -> Response {
        let resp = self.registrar.register(req, self.now, &mut self.store);
        // Whatever the answer, it prints and parses back to itself.
        let bytes = resp.to_bytes();
        match Message::parse(bytes.clone()).unwrap() {
            Message::Response(r) => assert_eq!(r.to_bytes(), bytes),
            Message::Request(_) => panic!("a request"),
        }
        resp
    }

    /// Sends and expects a 200; returns its Contact listing.
    fn ok(&mut self, req: &Request) -> Vec<Listed> {
        let resp = self.send(req);
        assert_eq!(resp.status().as_u16(), 200, "{resp}");
        listing(&resp)
    }

    /// Sends and expects a refusal that changed nothing.
    fn refused(&mut self, req: &Request, status: u16, reason: &str) -> Response {
        let before = self.bindings("sip:alice@example.com");
        let resp = self.send(req);
        assert_eq!(
            (resp.status().as_u16(), resp.reason()),
            (status, reason),
            "{resp}"
        );
        assert!(
            resp.headers()
                .typed::<To>()
                .unwrap()
                .unwrap()
                .tag()
                .is_some(),
            "a registrar's refusal carries a To tag"
        );
        assert_eq!(self.bindings("sip:alice@example.com"), before);
        resp
    }

    fn bindings(&mut self, aor: &str) -> Vec<Binding> {
        self.store.get(aor, self.now).unwrap()
    }
}

/// One Contact of a 200: the URI as written, the header parameters other than expires and
/// q, expires, q (as written).
#[derive(Debug, PartialEq)]
struct Listed {
    uri: String,
    params: Vec<String>,
    expires: u32,
    q: Option<String>,
}

fn listing(resp: &Response) -> Vec<Listed> {
    resp.headers()
        .typed_all::<Contact>()
        .map(|c| {
            let c = c.unwrap();
            let a = c.address().unwrap();
            assert!(a.is_bracketed());
            let params = a.params();
            Listed {
                uri: a.uri().as_str().to_owned(),
                params: params
                    .iter()
                    .filter(|(n, _)| *n != "expires" && *n != "q")
                    .map(|(n, v)| v.map_or(n.to_owned(), |v| format!("{n}={v}")))
                    .collect(),
                expires: c.expires().unwrap(),
                q: params.get("q").flatten().map(str::to_owned),
            }
        })
        .collect()
}

fn listed(uri: &str, expires: u32) -> Listed {
    Listed {
        uri: uri.into(),
        params: Vec::new(),
        expires,
        q: None,
    }
}

/// A REGISTER for alice@example.com with the given Call-ID, CSeq and extra header lines.
fn register(call_id: &str, cseq: u32, extra: &str) -> Request {
    register_to("sip:alice@example.com", call_id, cseq, extra)
}

fn register_to(to: &str, call_id: &str, cseq: u32, extra: &str) -> Request {
    request(&format!(
        "REGISTER sip:example.com SIP/2.0\r\n\
         Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK{cseq}x\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:alice@example.com>;tag=a1\r\n\
         To: <{to}>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: {cseq} REGISTER\r\n\
         {extra}\
         Content-Length: 0\r\n\r\n"
    ))
}

/// An RFC 4475 message from the corpus.
fn rfc4475(name: &str) -> Request {
    let path = format!("tests/data/rfc4475/{name}.dat");
    match Message::parse(std::fs::read(path).unwrap()).unwrap() {
        Message::Request(r) => r,
        Message::Response(_) => panic!("{name} is a response"),
    }
}

const PHONE: &str = "Contact: <sip:alice@192.0.2.10:5060>\r\n";

/// Step 7 and 8: a contact is bound with the default interval, and the 200 lists it with a
/// To tag, Call-ID and CSeq copied.
#[test]
fn s10_3_step7_register_binds_the_contact() {
    let mut r = Reg::new();
    let resp = r.send(&register("c1", 1, PHONE));
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(listing(&resp), [listed("sip:alice@192.0.2.10:5060", 3600)]);
    let to = resp.headers().typed::<To>().unwrap().unwrap();
    assert!(to.tag().is_some());
    assert_eq!(resp.headers().get(HeaderName::CallId), Some(&b"c1"[..]));
    assert_eq!(
        resp.headers().get(HeaderName::CSeq),
        Some(&b"1 REGISTER"[..])
    );
    let b = &r.bindings("sip:alice@example.com")[0];
    assert_eq!((b.call_id.as_str(), b.cseq), ("c1", 1));
    assert_eq!(b.expires_at, r.start + Duration::from_secs(3600));
}

/// Step 7: a refresh with the same Call-ID and a higher CSeq renews the one binding.
#[test]
fn s10_3_step7_refresh_renews_the_binding() {
    let mut r = Reg::new();
    r.ok(&register("c1", 1, PHONE));
    let listing = r.at(3000).ok(&register("c1", 2, PHONE));
    assert_eq!(listing, [listed("sip:alice@192.0.2.10:5060", 3600)]);
    r.at(3601);
    assert_eq!(r.bindings("sip:alice@example.com").len(), 1, "renewed");
}

/// Step 8 on a clock: the listing counts down, and once the interval is over the binding is
/// gone from the listing and the store.
#[test]
fn s10_3_step8_expired_binding_leaves_the_listing() {
    let mut r = Reg::new();
    r.ok(&register(
        "c1",
        1,
        "Contact: <sip:alice@192.0.2.10>;expires=120\r\n",
    ));
    assert_eq!(
        r.at(100).ok(&register("q", 1, "")),
        [listed("sip:alice@192.0.2.10", 20)]
    );
    assert_eq!(
        r.at(119).ok(&register("q", 2, "")),
        [listed("sip:alice@192.0.2.10", 1)]
    );
    assert_eq!(r.at(120).ok(&register("q", 3, "")), []);
    assert!(r.store.is_empty(), "dropped on access");
}

/// `MemoryBindings::sweep` drops what expired without anyone asking.
#[test]
fn s10_3_expired_bindings_are_swept() {
    let mut r = Reg::new();
    r.ok(&register(
        "c1",
        1,
        "Contact: <sip:alice@192.0.2.10>;expires=60, <sip:alice@192.0.2.11>;expires=600\r\n",
    ));
    r.ok(&register_to(
        "sip:bob@example.com",
        "c2",
        1,
        "Contact: <sip:bob@192.0.2.20>;expires=60\r\n",
    ));
    assert_eq!(r.store.len(), 2);
    assert_eq!(r.store.sweep(r.start + Duration::from_secs(60)), 2);
    assert_eq!(r.store.len(), 1);
    assert_eq!(r.store.sweep(r.start + Duration::from_secs(600)), 1);
    assert!(r.store.is_empty());
}

/// Step 7: an interval of 0 removes the binding (10.2.2), others stay.
#[test]
fn s10_3_step7_expires_0_unregisters() {
    let mut r = Reg::new();
    r.ok(&register(
        "c1",
        1,
        "Contact: <sip:alice@192.0.2.10>, <sip:alice@192.0.2.11>\r\n",
    ));
    let listing = r.ok(&register(
        "c1",
        2,
        "Contact: <sip:alice@192.0.2.10>;expires=0\r\n",
    ));
    assert_eq!(listing, [listed("sip:alice@192.0.2.11", 3600)]);
    // The Expires header does it too, and removing what is not bound is no error.
    let listing = r.ok(&register(
        "c1",
        3,
        "Contact: <sip:alice@192.0.2.11>, <sip:alice@192.0.2.99>\r\nExpires: 0\r\n",
    ));
    assert_eq!(listing, []);
    assert!(r.store.is_empty());
}

/// Step 6: `Contact: *` with `Expires: 0` removes every binding of the AOR, whatever its
/// Call-ID, and no other AOR's.
#[test]
fn s10_3_step6_star_with_expires_0_removes_all() {
    let mut r = Reg::new();
    r.ok(&register("c1", 1, "Contact: <sip:alice@192.0.2.10>\r\n"));
    r.ok(&register("c2", 1, "Contact: <sip:alice@192.0.2.11>\r\n"));
    r.ok(&register_to(
        "sip:bob@example.com",
        "c3",
        1,
        "Contact: <sip:bob@192.0.2.20>\r\n",
    ));
    assert_eq!(r.ok(&register("c2", 2, "Contact: *\r\nExpires: 0\r\n")), []);
    assert!(r.bindings("sip:alice@example.com").is_empty());
    assert_eq!(r.bindings("sip:bob@example.com").len(), 1);
}

/// Step 6: `*` with another Contact, with a non-zero Expires or with none is a 400.
#[test]
fn s10_3_step6_star_misuse_is_refused() {
    let mut r = Reg::new();
    r.ok(&register("c1", 1, PHONE));
    for (cseq, extra) in [
        (2, "Contact: *\r\nExpires: 3600\r\n"),
        (3, "Contact: *\r\n"),
        (
            4,
            "Contact: *\r\nContact: <sip:alice@192.0.2.11>\r\nExpires: 0\r\n",
        ),
        (5, "Contact: <sip:alice@192.0.2.11>, *\r\nExpires: 0\r\n"),
    ] {
        r.refused(
            &register("c1", cseq, extra),
            400,
            "Contact: * needs Expires: 0 and no other Contact",
        );
    }
}

/// Step 6: `*` from the same Call-ID with a CSeq not higher than a binding's fails whole.
#[test]
fn s10_3_step6_star_out_of_order_is_refused() {
    let mut r = Reg::new();
    r.ok(&register("c1", 5, "Contact: <sip:alice@192.0.2.10>\r\n"));
    r.ok(&register("c2", 1, "Contact: <sip:alice@192.0.2.11>\r\n"));
    r.refused(
        &register("c1", 5, "Contact: *\r\nExpires: 0\r\n"),
        500,
        "Out of order",
    );
    assert_eq!(r.bindings("sip:alice@example.com").len(), 2);
}

/// Step 7: an interval below Min-Expires (and not 0) gets 423 with Min-Expires, and no
/// contact of the request is bound, not even a good one.
#[test]
fn s10_3_step7_interval_too_brief_is_423_with_min_expires() {
    let mut r = Reg::new();
    let resp = r.refused(
        &register(
            "c1",
            1,
            "Contact: <sip:alice@192.0.2.10>\r\nContact: <sip:alice@192.0.2.11>;expires=30\r\n",
        ),
        423,
        "Interval Too Brief",
    );
    assert_eq!(
        resp.headers().typed::<MinExpires>().unwrap().unwrap(),
        MinExpires(60)
    );
    assert!(r.store.is_empty());
    // The Expires header counts the same; Min-Expires itself is enough.
    r.refused(
        &register("c1", 2, &format!("{PHONE}Expires: 59\r\n")),
        423,
        "Interval Too Brief",
    );
    r.ok(&register("c1", 3, &format!("{PHONE}Expires: 60\r\n")));
}

/// Step 7: a longer interval than the registrar grants is shortened, and the 200 says so.
#[test]
fn s10_3_step7_long_interval_is_shortened() {
    let mut r = Reg::new();
    let listing = r.ok(&register(
        "c1",
        1,
        "Contact: <sip:alice@192.0.2.10>;expires=4294967295\r\n",
    ));
    assert_eq!(listing, [listed("sip:alice@192.0.2.10", 7200)]);
}

/// Step 7: the interval is the contact's expires parameter, else the Expires header, else the
/// default.
#[test]
fn s10_3_step7_interval_from_param_then_header_then_default() {
    let mut r = Reg::with(
        Config::default()
            .domain("example.com")
            .default_expires(Duration::from_secs(1800)),
    );
    let listing = r.ok(&register(
        "c1",
        1,
        "Contact: <sip:alice@192.0.2.10>;expires=300, <sip:alice@192.0.2.11>\r\nExpires: 600\r\n",
    ));
    assert_eq!(
        listing,
        [
            listed("sip:alice@192.0.2.10", 300),
            listed("sip:alice@192.0.2.11", 600)
        ]
    );
    let listing = r.ok(&register_to(
        "sip:bob@example.com",
        "c2",
        1,
        "Contact: <sip:bob@192.0.2.20>\r\n",
    ));
    assert_eq!(listing, [listed("sip:bob@192.0.2.20", 1800)]);
}

/// Step 7: an expires parameter or Expires header that overflows 32 bits, or is not a number,
/// is a 400 naming it; nothing changes (RFC 4475 scalarlg lets an element refuse).
#[test]
fn s10_3_step7_bad_interval_is_refused() {
    let mut r = Reg::new();
    r.ok(&register("c1", 1, PHONE));
    r.refused(
        &register(
            "c1",
            2,
            "Contact: <sip:alice@192.0.2.11>, <sip:alice@192.0.2.12>;expires=280297596632815\r\n",
        ),
        400,
        "Bad expires parameter in Contact",
    );
    r.refused(
        &register("c1", 3, "Contact: <sip:alice@192.0.2.11>;expires\r\n"),
        400,
        "Bad expires parameter in Contact",
    );
    r.refused(
        &register("c1", 4, &format!("{PHONE}Expires: 10000000000\r\n")),
        400,
        "Bad Expires header",
    );
    r.refused(
        &register("c1", 5, "Contact: <sip:alice@192.0.2.11>;q=2\r\n"),
        400,
        "Bad Contact header",
    );
}

/// Step 7: several contacts in one request, with q values; the listing keeps them.
#[test]
fn s10_3_step7_several_contacts_with_q_values() {
    let mut r = Reg::new();
    let listing = r.ok(&register(
        "c1",
        1,
        "Contact: <sip:alice@192.0.2.10>;q=0.7, <sip:alice@192.0.2.11>;q=1.0\r\n\
         Contact: \"Alice\" <sip:alice@192.0.2.12>;q=0.050\r\n\
         Contact: <mailto:alice@example.com>\r\n",
    ));
    let q = |l: &Listed| l.q.clone();
    assert_eq!(
        listing.iter().map(q).collect::<Vec<_>>(),
        [
            Some("0.7".into()),
            Some("1".into()),
            Some("0.05".into()),
            None
        ]
    );
    assert_eq!(listing[3].uri, "mailto:alice@example.com");
    let stored = r.bindings("sip:alice@example.com");
    assert_eq!(
        stored.iter().map(|b| b.q).collect::<Vec<_>>(),
        [Some(700), Some(1000), Some(50), None]
    );
}

/// Step 7: with the same Call-ID, a CSeq not higher than the binding's is out of order
/// (500, nothing applied, not even the other contacts); a higher one applies.
#[test]
fn s10_3_step7_same_call_id_needs_a_higher_cseq() {
    let mut r = Reg::new();
    r.ok(&register("c1", 10, PHONE));
    for cseq in [10, 9] {
        r.refused(
            &register(
                "c1",
                cseq,
                "Contact: <sip:alice@192.0.2.99>, <sip:alice@192.0.2.10:5060>;expires=0\r\n",
            ),
            500,
            "Out of order",
        );
    }
    assert_eq!(r.ok(&register("c1", 11, PHONE)).len(), 1);
    assert_eq!(r.bindings("sip:alice@example.com")[0].cseq, 11);
}

/// Step 7: with another Call-ID the binding is replaced whatever the CSeq, and takes the
/// new Call-ID, CSeq and parameters.
#[test]
fn s10_3_step7_other_call_id_replaces_the_binding() {
    let mut r = Reg::new();
    r.ok(&register("c1", 10, PHONE));
    let listing = r.ok(&register(
        "c2",
        1,
        "Contact: <sip:alice@192.0.2.10:5060>;q=0.5;expires=600\r\n",
    ));
    assert_eq!(listing.len(), 1);
    assert_eq!(
        (listing[0].expires, listing[0].q.as_deref()),
        (600, Some("0.5"))
    );
    let b = &r.bindings("sip:alice@example.com")[0];
    assert_eq!((b.call_id.as_str(), b.cseq), ("c2", 1));
}

/// Step 7: contacts match by the URI comparison of §19.1.4, not byte for byte: escapes,
/// the host's case and unknown parameters do not make another binding.
#[test]
fn s10_3_step7_contacts_match_by_rfc3261_19_1_4() {
    let mut r = Reg::new();
    r.ok(&register(
        "c1",
        1,
        "Contact: <sip:%61lice@Host.Example.NET>\r\n",
    ));
    let listing = r.ok(&register(
        "c1",
        2,
        "Contact: <sip:alice@host.example.net;unknown=1>\r\n",
    ));
    assert_eq!(
        listing,
        [listed("sip:alice@host.example.net;unknown=1", 3600)],
        "one binding, as last written"
    );
    let listing = r.ok(&register(
        "c1",
        3,
        "Contact: <sip:alice@host.example.net;transport=tcp>\r\n",
    ));
    assert_eq!(listing.len(), 2, "transport must match when present");
}

/// Step 7: more bindings than the limit refuses the request with a reason that says so,
/// and nothing of it is applied; removing one in the same request makes room.
#[test]
fn s10_3_step7_eleventh_binding_is_refused() {
    let mut r = Reg::new();
    let ten: Vec<String> = (0..10)
        .map(|i| format!("<sip:alice@192.0.2.{i}>"))
        .collect();
    let listing = r.ok(&register(
        "c1",
        1,
        &format!("Contact: {}\r\n", ten.join(", ")),
    ));
    assert_eq!(listing.len(), 10);
    let resp = r.refused(
        &register("c1", 2, "Contact: <sip:alice@192.0.2.10>\r\n"),
        403,
        "Too many bindings: at most 10 per address of record",
    );
    let warning =
        String::from_utf8(resp.headers().get(HeaderName::Warning).unwrap().to_vec()).unwrap();
    assert!(warning.contains("remove one (expires=0)"), "{warning}");
    let listing = r.ok(&register(
        "c1",
        3,
        "Contact: <sip:alice@192.0.2.0>;expires=0, <sip:alice@192.0.2.10>\r\n",
    ));
    assert_eq!(listing.len(), 10);
    assert!(listing.iter().any(|l| l.uri == "sip:alice@192.0.2.10"));
}

/// A REGISTER flooding Contact values is refused before they are compared.
#[test]
fn s10_3_step7_contact_flood_is_refused() {
    let mut r = Reg::new();
    let many: Vec<String> = (0..21).map(|i| format!("<sip:a@192.0.2.{i}>")).collect();
    r.refused(
        &register("c1", 1, &format!("Contact: {}\r\n", many.join(", "))),
        403,
        "Too many Contact values",
    );
}

/// The store's bound on addresses-of-record: a new AOR beyond it is 503, a known one still
/// registers, and room comes back once bindings expire.
#[test]
fn s10_3_store_full_of_aors_is_503() {
    let mut r = Reg::with(Config::default().domain("example.com").max_aors(2));
    r.ok(&register(
        "c1",
        1,
        "Contact: <sip:alice@192.0.2.10>;expires=60\r\n",
    ));
    r.ok(&register_to(
        "sip:bob@example.com",
        "c2",
        1,
        "Contact: <sip:bob@192.0.2.20>\r\n",
    ));
    let resp = r.send(&register_to(
        "sip:carol@example.com",
        "c3",
        1,
        "Contact: <sip:carol@192.0.2.30>\r\n",
    ));
    assert_eq!(
        (resp.status().as_u16(), resp.reason()),
        (503, "Registrar full: too many addresses of record")
    );
    r.ok(&register(
        "c1",
        2,
        "Contact: <sip:alice@192.0.2.11>;expires=60\r\n",
    ));
    r.at(60);
    r.ok(&register_to(
        "sip:carol@example.com",
        "c3",
        2,
        "Contact: <sip:carol@192.0.2.30>\r\n",
    ));
    assert_eq!(r.store.len(), 2);
}

/// A store that fails: 500, as step 7 says when a commit fails.
#[test]
fn s10_3_step7_store_failure_is_500() {
    struct Broken;
    impl Bindings for Broken {
        fn get(&mut self, _: &str, _: Instant) -> Result<Vec<Binding>, StoreError> {
            Ok(Vec::new())
        }
        fn put(&mut self, _: &str, _: Vec<Binding>, _: Instant) -> Result<(), StoreError> {
            Err(StoreError::Failed {
                reason: "no replica answered".into(),
            })
        }
    }
    let mut registrar = Registrar::new(Config::default(), 1);
    let resp = registrar.register(&register("c1", 1, PHONE), Instant::now(), &mut Broken);
    assert_eq!(
        (resp.status().as_u16(), resp.reason()),
        (500, "Bindings store failed, nothing changed")
    );
    // A query writes nothing, so it succeeds.
    let resp = registrar.register(&register("c1", 2, ""), Instant::now(), &mut Broken);
    assert_eq!(resp.status().as_u16(), 200);
}

/// The steps one by one, as a driver whose store answers later runs them.
#[test]
fn s10_3_steps_driven_by_hand() {
    let mut registrar = Registrar::new(Config::default(), 1);
    let now = Instant::now();
    let req = register("c1", 1, PHONE);
    let registration = registrar.prepare(&req).unwrap();
    assert_eq!(registration.aor(), "sip:alice@example.com");
    assert!(!registration.is_query());
    let set = registrar.apply(&registration, Vec::new(), now).unwrap();
    assert_eq!(set.len(), 1);
    let resp = registrar.accept(&req, &set, now);
    assert_eq!(listing(&resp), [listed("sip:alice@192.0.2.10:5060", 3600)]);
    let refusal = registrar.apply(&registration, set, now).unwrap_err();
    assert_eq!(
        (refusal.status().as_u16(), refusal.reason()),
        (500, "Out of order")
    );
    let resp = registrar.refuse(&req, &refusal);
    assert_eq!(resp.status().as_u16(), 500);
}

/// Step 8: a REGISTER without Contact is a query: 200 with the bindings, nothing changed.
#[test]
fn s10_3_step8_query_lists_the_bindings() {
    let mut r = Reg::new();
    assert_eq!(r.ok(&register("q", 1, "")), []);
    assert!(r.store.is_empty());
    r.ok(&register("c1", 1, PHONE));
    let before = r.bindings("sip:alice@example.com");
    assert_eq!(
        r.at(10).ok(&register("c1", 1, "")),
        [listed("sip:alice@192.0.2.10:5060", 3590)],
        "a query's CSeq is not checked: it changes nothing"
    );
    assert_eq!(r.bindings("sip:alice@example.com"), before);
}

/// Step 1: a Request-URI of a domain not served is refused with 404 naming the domain.
#[test]
fn s10_3_step1_foreign_domain_is_refused() {
    let mut r = Reg::new();
    let req = request(
        &register("c1", 1, PHONE)
            .to_string()
            .replace("REGISTER sip:example.com", "REGISTER sip:example.org"),
    );
    r.refused(&req, 404, "Domain example.org is not served here");
    // Any case of a served domain is served.
    let req = request(
        &register("c1", 2, PHONE)
            .to_string()
            .replace("REGISTER sip:example.com", "REGISTER sip:EXAMPLE.com"),
    );
    r.ok(&req);
}

/// Step 5: an address-of-record of another domain than those served is refused with 404.
#[test]
fn s10_3_step5_aor_of_a_foreign_domain_is_refused() {
    let mut r = Reg::new();
    r.refused(
        &register_to("sip:alice@example.net", "c1", 1, PHONE),
        404,
        "Domain example.net is not served here",
    );
}

/// With no domains configured, every domain is served.
#[test]
fn s10_3_step1_no_domains_serves_any() {
    let mut r = Reg::with(Config::default());
    r.ok(&register_to("sip:alice@example.net", "c1", 1, PHONE));
    assert_eq!(r.bindings("sip:alice@example.net").len(), 1);
}

/// Step 5: the AOR is the To URI in canonical form: parameters, escapes, the host's case and
/// `sips:` do not make another AOR.
#[test]
fn s10_3_step5_aor_is_canonical() {
    let mut r = Reg::new();
    r.ok(&register_to(
        "sips:%61lice@EXAMPLE.COM;user=phone",
        "c1",
        1,
        PHONE,
    ));
    assert_eq!(r.bindings("sip:alice@example.com").len(), 1);
    assert_eq!(
        r.ok(&register_to("sip:alice@example.com", "q", 1, ""))
            .len(),
        1
    );
    assert_eq!(
        registrar::aor(&p2psip_sip::Uri::parse("sip:Alice@example.com").unwrap()).unwrap(),
        "sip:Alice@example.com",
        "the user part keeps its case"
    );
}

/// Step 2: a Require naming an extension the registrar lacks is refused with 420.
#[test]
fn s10_3_step2_unsupported_require_is_420() {
    let mut r = Reg::new();
    let resp = r.refused(
        &register("c1", 1, &format!("{PHONE}Require: gruu\r\n")),
        420,
        "Bad Extension",
    );
    assert_eq!(
        resp.headers().get(HeaderName::Unsupported),
        Some(&b"gruu"[..])
    );
}

/// A registrar takes only REGISTER: 405 with Allow.
#[test]
fn s10_3_other_methods_are_405() {
    let mut r = Reg::new();
    let req = request(
        "OPTIONS sip:example.com SIP/2.0\r\n\
         Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKo1\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:alice@example.com>;tag=a1\r\n\
         To: <sip:alice@example.com>\r\n\
         Call-ID: o1\r\n\
         CSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n",
    );
    let resp = r.refused(&req, 405, "Method Not Allowed");
    assert_eq!(
        resp.headers().get(HeaderName::Allow),
        Some(&b"REGISTER"[..])
    );
}

/// RFC 4475 §3.3.4 unksm2: a To URI of an unknown scheme is no address-of-record: 400, and
/// nothing bound.
#[test]
fn rfc4475_s3_3_4_unksm2_is_refused() {
    let mut r = Reg::new();
    let resp = r.refused(
        &rfc4475("unksm2"),
        400,
        "To must be a sip: or sips: URI (the address of record)",
    );
    assert!(resp.headers().get(HeaderName::Warning).is_some());
    assert!(r.store.is_empty());
}

/// RFC 4475 §3.3.12 cparam01: `unknownparam` is a Contact header parameter, and stays one
/// in the stored binding and in the listing.
#[test]
fn rfc4475_s3_3_12_cparam01_header_param_stays_a_header_param() {
    let mut r = Reg::new();
    let resp = r.send(&rfc4475("cparam01"));
    assert_eq!(resp.status().as_u16(), 200);
    let b = &r.bindings("sip:watson@example.com")[0];
    assert_eq!(
        (b.contact.as_str(), b.params.as_str()),
        ("sip:+19725552222@gw1.example.net", "unknownparam")
    );
    assert_eq!(
        resp.headers().get(HeaderName::Contact),
        Some(&b"<sip:+19725552222@gw1.example.net>;unknownparam;expires=3600"[..])
    );
    assert_eq!(
        listing(&resp),
        [Listed {
            uri: "sip:+19725552222@gw1.example.net".into(),
            params: vec!["unknownparam".into()],
            expires: 3600,
            q: None
        }]
    );
}

/// RFC 4475 §3.3.13 cparam02: `unknownparam` is a URI parameter, and stays inside the
/// angle brackets. By §19.1.4 it is the same contact as cparam01's, so it replaces it.
#[test]
fn rfc4475_s3_3_13_cparam02_uri_param_stays_in_the_uri() {
    let mut r = Reg::new();
    r.send(&rfc4475("cparam01"));
    let resp = r.send(&rfc4475("cparam02"));
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        resp.headers().get(HeaderName::Contact),
        Some(&b"<sip:+19725552222@gw1.example.net;unknownparam>;expires=3600"[..])
    );
    assert_eq!(
        listing(&resp),
        [listed(
            "sip:+19725552222@gw1.example.net;unknownparam",
            3600
        )]
    );
    let b = &r.bindings("sip:watson@example.com")[0];
    assert_eq!(
        (b.params.as_str(), b.call_id.as_str()),
        ("", "cparam02.70710@saturn.example.com")
    );
}

/// RFC 4475 §3.3.14 regescrt: the escaped Route URI header survives byte for byte in the
/// stored contact and in the listing.
#[test]
fn rfc4475_s3_3_14_regescrt_uri_header_survives() {
    let mut r = Reg::new();
    let resp = r.send(&rfc4475("regescrt"));
    assert_eq!(resp.status().as_u16(), 200);
    let contact = "sip:user@example.com?Route=%3Csip:sip.example.com%3E";
    let b = &r.bindings("sip:user@example.com")[0];
    assert_eq!((b.contact.as_str(), b.cseq), (contact, 14398234));
    assert_eq!(
        resp.headers().get(HeaderName::Contact),
        Some(format!("<{contact}>;expires=3600").as_bytes())
    );
    assert_eq!(listing(&resp), [listed(contact, 3600)]);
}
