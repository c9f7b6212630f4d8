//! Digest authentication (`p2psip_sip::auth`): RFC 7616 §3.9.1's worked example, round trips
//! between [`auth::answer`] and [`auth::Verifier`] (RFC 3261 §22, RFC 8760), the refusals
//! (wrong password, tampered request, foreign nonce, stale nonce), RFC 4475 §3.3.7
//! (`regaut01`: an unknown scheme is ignored), the 401/407 split, and garbage that must not
//! panic.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use p2psip_sip::auth::{self, Algorithm, Config, Credential, Hash, Invalid, Verdict, Verifier};
use p2psip_sip::header::{Auth, Authorization, ProxyAuthenticate, TypedHeader, WwwAuthenticate};
use p2psip_sip::{HeaderName, Ids, Message, Method, Request, Response, StatusCode};
use proptest::prelude::*;

const REALM: &str = "atlanta.example.com";
const SECRET: [u8; 32] = [0x5a; 32];

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

const T0: u64 = 1_750_000_000;

fn verifier() -> Verifier {
    Verifier::new(Config::new(REALM, SECRET)).unwrap()
}

fn alice(user: &str, realm: &str) -> Option<Credential> {
    (user == "alice" && realm == REALM).then(|| Credential::Password("wonderland".into()))
}

fn register() -> Request {
    let mut r = Request::new(Method::Register, "sip:atlanta.example.com").unwrap();
    let h = r.headers_mut();
    h.push(
        HeaderName::Via,
        "SIP/2.0/UDP 192.0.2.4;branch=z9hG4bKnashds7",
    );
    h.push(HeaderName::To, "<sip:alice@atlanta.example.com>");
    h.push(
        HeaderName::From,
        "<sip:alice@atlanta.example.com>;tag=456248",
    );
    h.push(HeaderName::CallId, "843817637684230@998sdasdh09");
    h.push(HeaderName::CSeq, "1826 REGISTER");
    h.push(HeaderName::MaxForwards, "70");
    r
}

/// The challenges of a 401 or 407, parsed.
fn challenges(resp: &Response) -> Vec<Auth<'_>> {
    let h = resp.headers();
    if resp.status() == StatusCode::PROXY_AUTHENTICATION_REQUIRED {
        h.typed_all::<ProxyAuthenticate>()
            .map(|c| c.unwrap().0)
            .collect()
    } else {
        h.typed_all::<WwwAuthenticate>()
            .map(|c| c.unwrap().0)
            .collect()
    }
}

/// `request` with an answer, as `user`/`password`, to the challenge for `algorithm` of the 401
/// (or 407) `v` issues at `now`.
fn answered(
    v: &Verifier,
    request: &Request,
    now: SystemTime,
    proxy: bool,
    algorithm: Algorithm,
    password: &str,
) -> Request {
    let resp = v.reject(request, now, proxy, false, Some("t1"));
    let chosen = challenges(&resp)
        .into_iter()
        .find(|c| c.param("algorithm").as_deref() == Some(algorithm.name()))
        .unwrap();
    let value = auth::answer(
        &chosen,
        request.method(),
        request.uri_str(),
        "alice",
        password,
        "0a4f113b",
        1,
    )
    .unwrap();
    let mut r = request.clone();
    let name = if proxy {
        HeaderName::ProxyAuthorization
    } else {
        HeaderName::Authorization
    };
    r.headers_mut().push(name, value);
    r
}

fn ok() -> Verdict {
    Verdict::Ok {
        username: "alice".into(),
    }
}

// RFC 7616 §3.9.1: the example of both algorithms, user Mufasa.

const RFC7616_NONCE: &str = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
const RFC7616_CNONCE: &str = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
const RFC7616_OPAQUE: &str = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS";

fn rfc7616_answer(algorithm: &str) -> String {
    let challenge = format!(
        "Digest realm=\"http-auth@example.org\", qop=\"auth, auth-int\", algorithm={algorithm}, \
         nonce=\"{RFC7616_NONCE}\", opaque=\"{RFC7616_OPAQUE}\""
    );
    let c = WwwAuthenticate::parse(challenge.as_bytes()).unwrap().0;
    let get: Method = "GET".parse().unwrap();
    auth::answer(
        &c,
        &get,
        "/dir/index.html",
        "Mufasa",
        "Circle of Life",
        RFC7616_CNONCE,
        1,
    )
    .unwrap()
}

fn check_rfc7616(answer: &str, algorithm: &str, response: &str) {
    let a = Authorization::parse(answer.as_bytes()).unwrap().0;
    assert!(a.is_digest());
    for (name, value) in [
        ("username", "Mufasa"),
        ("realm", "http-auth@example.org"),
        ("uri", "/dir/index.html"),
        ("algorithm", algorithm),
        ("nonce", RFC7616_NONCE),
        ("nc", "00000001"),
        ("cnonce", RFC7616_CNONCE),
        ("qop", "auth"),
        ("opaque", RFC7616_OPAQUE),
        ("response", response),
    ] {
        assert_eq!(a.param(name).as_deref(), Some(value), "{name} in {answer}");
    }
}

#[test]
fn rfc7616_s3_9_1_md5() {
    let a = rfc7616_answer("MD5");
    check_rfc7616(&a, "MD5", "8ca523f5e9506fed4657c9700eebdbec");
}

#[test]
fn rfc7616_s3_9_1_sha256() {
    let a = rfc7616_answer("SHA-256");
    check_rfc7616(
        &a,
        "SHA-256",
        "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
    );
}

#[test]
fn rfc7616_s3_9_1_ha1_helper() {
    // HA1 for MD5 of the same user, as a store would keep it.
    assert_eq!(
        auth::ha1(
            Hash::Md5,
            "Mufasa",
            "http-auth@example.org",
            "Circle of Life"
        )
        .len(),
        32
    );
    assert_eq!(
        auth::ha1(
            Hash::Sha256,
            "Mufasa",
            "http-auth@example.org",
            "Circle of Life"
        )
        .len(),
        64
    );
}

// RFC 8760 §2.4 and RFC 3261 §22.2: challenges, one per algorithm, SHA-256 first.

#[test]
fn rfc8760_s2_4_one_challenge_per_algorithm_sha256_first() {
    let v = verifier();
    let ch = v.challenge(at(T0), false);
    assert_eq!(ch.len(), 2);
    assert!(ch.iter().all(|(n, _)| *n == HeaderName::WwwAuthenticate));
    let parsed: Vec<_> = ch
        .iter()
        .map(|(_, v)| WwwAuthenticate::parse(v.as_bytes()).unwrap().0)
        .collect();
    assert_eq!(parsed[0].param("algorithm").as_deref(), Some("SHA-256"));
    assert_eq!(parsed[1].param("algorithm").as_deref(), Some("MD5"));
    for c in &parsed {
        assert!(c.is_digest());
        assert_eq!(c.param("realm").as_deref(), Some(REALM));
        assert_eq!(c.param("qop").as_deref(), Some("auth"));
        assert_eq!(c.param("stale"), None);
        assert_eq!(c.param("nonce").unwrap().len(), 80);
    }
    assert_eq!(parsed[0].param("nonce"), parsed[1].param("nonce"));
    let proxy = v.challenge(at(T0), true);
    assert!(
        proxy
            .iter()
            .all(|(n, _)| *n == HeaderName::ProxyAuthenticate)
    );
}

#[test]
fn client_selects_the_strongest_challenge_per_realm() {
    let parse = |s: &'static str| WwwAuthenticate::parse(s.as_bytes()).unwrap().0;
    let md5 = parse(r#"Digest realm="a", nonce="1", qop="auth", algorithm=MD5"#);
    let sha = parse(r#"Digest realm="a", nonce="2", qop="auth", algorithm=SHA-256"#);
    let sess = parse(r#"Digest realm="a", nonce="3", qop="auth", algorithm=SHA-256-sess"#);
    let other = parse(r#"Digest realm="b", nonce="4""#);
    let unknown = parse(r#"Digest realm="a", nonce="5", algorithm=SHA-1"#);
    let int_only = parse(r#"Digest realm="a", nonce="6", qop="auth-int", algorithm=SHA-512-256"#);
    let basic = parse(r#"Basic realm="a""#);
    let picked = auth::select([md5, basic, sess, unknown, other, sha, int_only]);
    assert_eq!(picked, vec![sha, other]);
    assert_eq!(auth::select([sha, md5]), vec![sha]);
    assert_eq!(auth::select([basic, unknown, int_only]), vec![]);
}

// Round trips: the client answers the server's challenge, the server accepts.

#[test]
fn round_trip_md5() {
    let v = verifier();
    let r = answered(&v, &register(), at(T0), false, Algorithm::MD5, "wonderland");
    assert_eq!(v.verify(&r, at(T0 + 1), false, alice), ok());
}

#[test]
fn round_trip_sha256() {
    let v = verifier();
    let r = answered(
        &v,
        &register(),
        at(T0),
        false,
        Algorithm::SHA_256,
        "wonderland",
    );
    assert_eq!(v.verify(&r, at(T0 + 1), false, alice), ok());
    let value = r.headers().get(HeaderName::Authorization).unwrap();
    let a = Authorization::parse(value).unwrap().0;
    assert_eq!(a.param("response").unwrap().len(), 64);
}

#[test]
fn round_trip_every_algorithm_and_selected_challenge() {
    let all = [
        Algorithm::SHA_512_256,
        Algorithm::SHA_512_256_SESS,
        Algorithm::SHA_256,
        Algorithm::SHA_256_SESS,
        Algorithm::MD5,
        Algorithm::MD5_SESS,
    ];
    let v = Verifier::new(Config::new(REALM, SECRET).algorithms(all)).unwrap();
    for alg in all {
        let r = answered(&v, &register(), at(T0), false, alg, "wonderland");
        assert_eq!(v.verify(&r, at(T0), false, alice), ok(), "{alg}");
    }
    // What a UAC does: select among the 401's challenges, answer the one picked.
    let resp = v.reject(&register(), at(T0), false, false, None);
    let picked = auth::select(challenges(&resp));
    assert_eq!(picked.len(), 1);
    assert_eq!(picked[0].param("algorithm").as_deref(), Some("SHA-512-256"));
}

#[test]
fn round_trip_with_precomputed_ha1_and_opaque() {
    let v = Verifier::new(Config::new(REALM, SECRET).opaque("5ccc069c403ebaf9f0171e9517f40e41"))
        .unwrap();
    let store = |user: &str, realm: &str| {
        (user == "alice").then(|| {
            Credential::Ha1(vec![(
                Hash::Sha256,
                auth::ha1(Hash::Sha256, user, realm, "wonderland"),
            )])
        })
    };
    let r = answered(
        &v,
        &register(),
        at(T0),
        false,
        Algorithm::SHA_256,
        "wonderland",
    );
    assert_eq!(v.verify(&r, at(T0), false, store), ok());
    // No MD5 HA1 is stored: an MD5 answer cannot be checked.
    let r = answered(&v, &register(), at(T0), false, Algorithm::MD5, "wonderland");
    assert_eq!(
        v.verify(&r, at(T0), false, store),
        Verdict::Invalid(Invalid::UnknownUser)
    );
    // The opaque value must come back unchanged.
    let value = answered(
        &v,
        &register(),
        at(T0),
        false,
        Algorithm::SHA_256,
        "wonderland",
    )
    .headers()
    .get(HeaderName::Authorization)
    .map(|v| String::from_utf8(v.to_vec()).unwrap())
    .unwrap();
    let mut r = register();
    r.headers_mut().push(
        HeaderName::Authorization,
        value.replace("5ccc069c", "6ccc069c"),
    );
    assert_eq!(
        v.verify(&r, at(T0), false, store),
        Verdict::Invalid(Invalid::Opaque)
    );
}

#[test]
fn client_answers_rfc2069_challenges_without_qop() {
    let c = WwwAuthenticate::parse(
        br#"Digest realm="biloxi.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093""#,
    )
    .unwrap()
    .0;
    let a = auth::answer(
        &c,
        &Method::Invite,
        "sip:bob@biloxi.com",
        "bob",
        "zanzibar",
        "x",
        1,
    )
    .unwrap();
    let a = Authorization::parse(a.as_bytes()).unwrap().0;
    assert_eq!(a.param("qop"), None);
    assert_eq!(a.param("cnonce"), None);
    assert_eq!(a.param("nc"), None);
    assert_eq!(a.param("algorithm").as_deref(), Some("MD5"));
    assert_eq!(a.param("response").unwrap().len(), 32);
}

#[test]
fn client_refuses_what_it_cannot_answer() {
    let parse = |s: &'static str| WwwAuthenticate::parse(s.as_bytes()).unwrap().0;
    let answer =
        |c: &Auth<'_>| auth::answer(c, &Method::Register, "sip:a.com", "alice", "pw", "cn", 1);
    assert!(answer(&parse(r#"Basic realm="a""#)).is_err());
    assert!(answer(&parse(r#"Digest nonce="1""#)).is_err());
    assert!(answer(&parse(r#"Digest realm="a""#)).is_err());
    assert!(answer(&parse(r#"Digest realm="a", nonce="1", algorithm=SHA-1"#)).is_err());
    assert!(answer(&parse(r#"Digest realm="a", nonce="1", qop="auth-int""#)).is_err());
    let ok = parse(r#"Digest realm="a", nonce="1", qop="auth""#);
    assert!(
        auth::answer(
            &ok,
            &Method::Register,
            "sip:a.com",
            "al\r\nice",
            "pw",
            "cn",
            1
        )
        .is_err()
    );
    assert!(auth::answer(&ok, &Method::Register, "sip:a.com", "alice", "pw", "", 1).is_err());
    assert!(answer(&ok).is_ok());
}

/// Quotes and backslashes in a user name are escaped, and the answer still verifies.
#[test]
fn usernames_with_quotes_round_trip() {
    let v = verifier();
    let resp = v.reject(&register(), at(T0), false, false, None);
    let c = challenges(&resp)[0];
    let user = r#"al"i\ce"#;
    let value = auth::answer(
        &c,
        &Method::Register,
        "sip:atlanta.example.com",
        user,
        "pw",
        "cn",
        7,
    )
    .unwrap();
    let mut r = register();
    r.headers_mut().push(HeaderName::Authorization, value);
    let lookup = |u: &str, _: &str| (u == user).then(|| Credential::Password("pw".into()));
    assert_eq!(
        v.verify(&r, at(T0), false, lookup),
        Verdict::Ok {
            username: user.into()
        }
    );
}

// Refusals.

#[test]
fn wrong_password_is_invalid() {
    let v = verifier();
    for alg in [Algorithm::SHA_256, Algorithm::MD5] {
        let r = answered(&v, &register(), at(T0), false, alg, "looking-glass");
        assert_eq!(
            v.verify(&r, at(T0), false, alice),
            Verdict::Invalid(Invalid::Response)
        );
    }
}

#[test]
fn unknown_user_is_invalid() {
    let v = verifier();
    let r = answered(
        &v,
        &register(),
        at(T0),
        false,
        Algorithm::SHA_256,
        "wonderland",
    );
    assert_eq!(
        v.verify(&r, at(T0), false, |_, _| None),
        Verdict::Invalid(Invalid::UnknownUser)
    );
}

#[test]
fn stale_nonce_is_stale_and_rechallenged_with_stale_true() {
    let v = verifier();
    let lifetime = v.config().nonce_lifetime.as_secs();
    let r = answered(
        &v,
        &register(),
        at(T0),
        false,
        Algorithm::SHA_256,
        "wonderland",
    );
    assert_eq!(v.verify(&r, at(T0 + lifetime), false, alice), ok());
    let later = at(T0 + lifetime + 1);
    assert_eq!(v.verify(&r, later, false, alice), Verdict::Stale);
    // Stale is only said of right credentials: a wrong password on an old nonce is Invalid.
    let wrong = answered(&v, &register(), at(T0), false, Algorithm::SHA_256, "x");
    assert_eq!(
        v.verify(&wrong, later, false, alice),
        Verdict::Invalid(Invalid::Response)
    );

    let resp = v.reject(&r, later, false, true, Some("t1"));
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let ch = challenges(&resp);
    assert_eq!(ch.len(), 2);
    for c in &ch {
        assert_eq!(c.param("stale").as_deref(), Some("true"));
    }
    // The retry with the new nonce, as the client does without asking its user again.
    let picked = auth::select(ch);
    let value = auth::answer(
        &picked[0],
        &Method::Register,
        "sip:atlanta.example.com",
        "alice",
        "wonderland",
        "0a4f113b",
        1,
    )
    .unwrap();
    let mut retry = register();
    retry.headers_mut().push(HeaderName::Authorization, value);
    assert_eq!(v.verify(&retry, later, false, alice), ok());
}

#[test]
fn nonce_of_another_secret_or_realm_is_invalid() {
    let v = verifier();
    let other_secret = Verifier::new(Config::new(REALM, [1; 32])).unwrap();
    let r = answered(
        &other_secret,
        &register(),
        at(T0),
        false,
        Algorithm::SHA_256,
        "wonderland",
    );
    assert_eq!(
        v.verify(&r, at(T0), false, alice),
        Verdict::Invalid(Invalid::Nonce)
    );
    // A nonce of a made-up time does not verify either.
    let value =
        String::from_utf8(r.headers().get(HeaderName::Authorization).unwrap().to_vec()).unwrap();
    let nonce = Authorization::parse(value.as_bytes())
        .unwrap()
        .0
        .param("nonce")
        .unwrap()
        .into_owned();
    let mut forged = nonce.clone();
    forged.replace_range(0..16, &format!("{:016x}", T0 + 10_000));
    let mut r = register();
    r.headers_mut()
        .push(HeaderName::Authorization, value.replace(&nonce, &forged));
    assert_eq!(
        v.verify(&r, at(T0), false, alice),
        Verdict::Invalid(Invalid::Nonce)
    );
}

#[test]
fn tampered_uri_is_invalid() {
    let v = verifier();
    let r = answered(
        &v,
        &register(),
        at(T0),
        false,
        Algorithm::SHA_256,
        "wonderland",
    );
    // The Request-URI changed, the uri parameter not.
    let mut moved = r.clone();
    moved.set_uri("sip:biloxi.example.com").unwrap();
    assert_eq!(
        v.verify(&moved, at(T0), false, alice),
        Verdict::Invalid(Invalid::Uri)
    );
    // Both changed: the digest covers the uri.
    let value =
        String::from_utf8(r.headers().get(HeaderName::Authorization).unwrap().to_vec()).unwrap();
    let mut both = moved.clone();
    both.headers_mut().set(
        HeaderName::Authorization,
        value.replace(
            "uri=\"sip:atlanta.example.com\"",
            "uri=\"sip:biloxi.example.com\"",
        ),
    );
    assert_ne!(
        both.headers().get(HeaderName::Authorization),
        r.headers().get(HeaderName::Authorization)
    );
    assert_eq!(
        v.verify(&both, at(T0), false, alice),
        Verdict::Invalid(Invalid::Response)
    );
}

#[test]
fn tampered_method_is_invalid() {
    let v = verifier();
    let r = answered(&v, &register(), at(T0), false, Algorithm::MD5, "wonderland");
    let text = r.to_string().replacen("REGISTER sip:", "INVITE sip:", 1);
    let Message::Request(invite) = Message::parse(text.into_bytes()).unwrap() else {
        panic!("not a request");
    };
    assert_eq!(invite.method(), &Method::Invite);
    assert_eq!(
        v.verify(&invite, at(T0), false, alice),
        Verdict::Invalid(Invalid::Response)
    );
}

#[test]
fn answers_without_qop_or_with_unoffered_algorithm_are_invalid() {
    let v = Verifier::new(Config::new(REALM, SECRET).algorithms([Algorithm::SHA_256])).unwrap();
    let nonce = {
        let ch = v.challenge(at(T0), false);
        let c = WwwAuthenticate::parse(ch[0].1.as_bytes()).unwrap().0;
        c.param("nonce").unwrap().into_owned()
    };
    let md5 = format!(r#"Digest realm="{REALM}", nonce="{nonce}", qop="auth", algorithm=MD5"#);
    let c = WwwAuthenticate::parse(md5.as_bytes()).unwrap().0;
    let a = auth::answer(
        &c,
        &Method::Register,
        "sip:atlanta.example.com",
        "alice",
        "wonderland",
        "c",
        1,
    )
    .unwrap();
    let mut r = register();
    r.headers_mut().push(HeaderName::Authorization, a);
    assert_eq!(
        v.verify(&r, at(T0), false, alice),
        Verdict::Invalid(Invalid::Algorithm)
    );

    let no_qop = format!(r#"Digest realm="{REALM}", nonce="{nonce}", algorithm=SHA-256"#);
    let c = WwwAuthenticate::parse(no_qop.as_bytes()).unwrap().0;
    let a = auth::answer(
        &c,
        &Method::Register,
        "sip:atlanta.example.com",
        "alice",
        "wonderland",
        "c",
        1,
    )
    .unwrap();
    let mut r = register();
    r.headers_mut().push(HeaderName::Authorization, a);
    assert_eq!(
        v.verify(&r, at(T0), false, alice),
        Verdict::Invalid(Invalid::Qop)
    );
}

// RFC 4475 §3.3.7 and RFC 3261 §22.

/// regaut01: "NoOneKnowsThisScheme" is ignored, so the request has no credentials: 401.
#[test]
fn rfc4475_s3_3_7_regaut01_unknown_scheme_is_missing() {
    let bytes = std::fs::read("tests/data/rfc4475/regaut01.dat").unwrap();
    let Message::Request(req) = Message::parse(bytes).unwrap() else {
        panic!("regaut01 is a request");
    };
    let v = Verifier::new(Config::new("example.com", SECRET)).unwrap();
    assert_eq!(v.verify(&req, at(T0), false, alice), Verdict::Missing);
    let resp = v.reject(&req, at(T0), false, false, Some("8f7a"));
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(resp.reason(), "Unauthorized");
    let ch = challenges(&resp);
    assert_eq!(ch.len(), 2);
    assert!(ch.iter().all(|c| c.is_digest()));
    assert_eq!(ch[0].param("realm").as_deref(), Some("example.com"));
    assert_eq!(
        resp.headers().get(HeaderName::CallId),
        Some(&b"regaut01.0ha0isndaksdj"[..])
    );
    assert_eq!(
        resp.headers().get(HeaderName::ContentLength),
        Some(&b"0"[..])
    );
    assert!(!resp.headers().contains(HeaderName::ProxyAuthenticate));
    // The 401 prints and parses back.
    let again = Message::parse(resp.to_bytes()).unwrap();
    assert_eq!(again.as_response(), Some(&resp));
}

/// An unknown scheme next to valid Digest credentials does not get in the way.
#[test]
fn unknown_scheme_beside_digest_is_ignored() {
    let v = verifier();
    let mut r = register();
    r.headers_mut().push(
        HeaderName::Authorization,
        "NoOneKnowsThisScheme opaque-data=here",
    );
    let r = answered(&v, &r, at(T0), false, Algorithm::SHA_256, "wonderland");
    assert_eq!(v.verify(&r, at(T0), false, alice), ok());
}

/// RFC 3261 §22.3: credentials for other realms are someone else's (another proxy's): they
/// are ignored, not refused.
#[test]
fn rfc3261_s22_3_other_realms_are_ignored() {
    let v = verifier();
    let other = Verifier::new(Config::new("biloxi.example.com", SECRET)).unwrap();
    let theirs = answered(
        &other,
        &register(),
        at(T0),
        true,
        Algorithm::SHA_256,
        "wonderland",
    );
    assert_eq!(v.verify(&theirs, at(T0), true, alice), Verdict::Missing);
    let both = answered(&v, &theirs, at(T0), true, Algorithm::SHA_256, "wonderland");
    assert_eq!(both.headers().count(HeaderName::ProxyAuthorization), 2);
    assert_eq!(v.verify(&both, at(T0), true, alice), ok());
}

/// RFC 3261 §22.2 and §22.3: 401 with WWW-Authenticate / Authorization for a UAS or
/// registrar, 407 with Proxy-Authenticate / Proxy-Authorization for a proxy; never crossed.
#[test]
fn rfc3261_s22_proxy_and_user_agent_credentials_are_kept_apart() {
    let v = verifier();
    let for_uas = answered(
        &v,
        &register(),
        at(T0),
        false,
        Algorithm::SHA_256,
        "wonderland",
    );
    let for_proxy = answered(
        &v,
        &register(),
        at(T0),
        true,
        Algorithm::SHA_256,
        "wonderland",
    );
    assert_eq!(v.verify(&for_uas, at(T0), false, alice), ok());
    assert_eq!(v.verify(&for_uas, at(T0), true, alice), Verdict::Missing);
    assert_eq!(v.verify(&for_proxy, at(T0), true, alice), ok());
    assert_eq!(v.verify(&for_proxy, at(T0), false, alice), Verdict::Missing);

    let resp = v.reject(&register(), at(T0), true, false, None);
    assert_eq!(resp.status(), StatusCode::PROXY_AUTHENTICATION_REQUIRED);
    assert_eq!(resp.reason(), "Proxy Authentication Required");
    assert_eq!(resp.headers().count(HeaderName::ProxyAuthenticate), 2);
    assert!(!resp.headers().contains(HeaderName::WwwAuthenticate));
}

#[test]
fn verifier_config_is_checked() {
    assert!(Verifier::new(Config::new("a\r\nb", SECRET)).is_err());
    assert!(Verifier::new(Config::new("a", SECRET).algorithms([])).is_err());
    assert!(Verifier::new(Config::new("a", SECRET).opaque("x\0")).is_err());
    let dbg = format!("{:?}", Config::new("a", SECRET));
    assert!(!dbg.contains("90"), "the secret is not printed: {dbg}");
    assert_eq!(
        format!("{:?}", Credential::Password("pw".into())),
        "Password(..)"
    );
}

#[test]
fn cnonces_come_from_the_seeded_generator() {
    let a = auth::cnonce(&mut Ids::new(1));
    assert_eq!(a, auth::cnonce(&mut Ids::new(1)));
    assert_ne!(a, auth::cnonce(&mut Ids::new(2)));
    assert_eq!(a.len(), 32);
}

// No panics on garbage.

/// A valid Authorization value and the request it belongs to.
fn sample() -> (Verifier, String) {
    let v = verifier();
    let r = answered(
        &v,
        &register(),
        at(T0),
        false,
        Algorithm::SHA_256,
        "wonderland",
    );
    let value =
        String::from_utf8(r.headers().get(HeaderName::Authorization).unwrap().to_vec()).unwrap();
    (v, value)
}

fn mutate(mut value: Vec<u8>, edits: &[(usize, u8, u8)]) -> Vec<u8> {
    for &(pos, op, byte) in edits {
        let pos = if value.is_empty() {
            0
        } else {
            pos % (value.len() + 1)
        };
        match op % 3 {
            0 => value.insert(pos, byte),
            1 if pos < value.len() => {
                value.remove(pos);
            }
            _ if pos < value.len() => value[pos] = byte,
            _ => value.push(byte),
        }
    }
    value
}

fn exercise(v: &Verifier, value: &[u8]) {
    for proxy in [false, true] {
        let mut r = register();
        let name = if proxy {
            HeaderName::ProxyAuthorization
        } else {
            HeaderName::Authorization
        };
        r.headers_mut().push(name, value);
        let verdict = v.verify(&r, at(T0), proxy, alice);
        let _ = format!("{verdict:?}");
        if let Verdict::Invalid(why) = verdict {
            let _ = why.to_string();
        }
    }
    // The same bytes as a challenge, on the client side.
    if let Ok(c) = WwwAuthenticate::parse(value) {
        let _ = auth::select([c.0]);
        let _ = auth::answer(&c.0, &Method::Invite, "sip:x", "u", "p", "c", 1);
    }
}

/// Interesting bytes: separators of the grammar, quotes, escapes, controls, non-ASCII.
fn byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        prop::sample::select(b"\",=\\ \t\r\n:/@;<>0aAfF-".to_vec()),
        any::<u8>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_credentials_never_panic(
        edits in prop::collection::vec((any::<usize>(), any::<u8>(), byte()), 1..8)
    ) {
        let (v, value) = sample();
        let mutated = mutate(value.into_bytes(), &edits);
        exercise(&v, &mutated);
    }

    #[test]
    fn arbitrary_values_never_panic(value in prop::collection::vec(byte(), 0..200)) {
        let (v, _) = sample();
        exercise(&v, &value);
        let mut digest = b"Digest ".to_vec();
        digest.extend_from_slice(&value);
        exercise(&v, &digest);
    }
}

/// Mutations that keep the grammar but change one parameter at a time: each is refused, none
/// is accepted.
#[test]
fn every_parameter_matters() {
    let (v, value) = sample();
    let a = Authorization::parse(value.as_bytes()).unwrap().0;
    for (name, raw) in a.params() {
        if name == "algorithm" || name == "qop" {
            continue; // covered by their own tests
        }
        let replaced = value.replacen(&format!("{name}={raw}"), &format!("{name}=\"zz\""), 1);
        let mut r = register();
        r.headers_mut().push(HeaderName::Authorization, replaced);
        let verdict = v.verify(&r, at(T0), false, alice);
        assert!(
            matches!(verdict, Verdict::Invalid(_) | Verdict::Missing),
            "{name}: {verdict:?}"
        );
    }
}
