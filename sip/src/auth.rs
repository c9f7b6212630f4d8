//! Digest authentication (RFC 2617, RFC 7616, RFC 8760): challenges and their answers.
//!
//! Sans-IO like the rest of the crate: no clock is read here, the caller passes `now`; the
//! server secret and the client's cnonce come from the caller too.
//!
//! # Server: [`Verifier`]
//! A UAS or registrar (`proxy = false`: 401, `WWW-Authenticate`, `Authorization`) or a proxy
//! (`proxy = true`: 407, `Proxy-Authenticate`, `Proxy-Authorization`) calls
//! [`Verifier::verify`] on each request and acts on the [`Verdict`]:
//! [`Verdict::Ok`] serves the request; [`Verdict::Missing`] and [`Verdict::Invalid`] are
//! answered with [`Verifier::reject`] (`stale = false`; a server may prefer 403 after repeated
//! failures), [`Verdict::Stale`] with [`Verifier::reject`] and `stale = true`, so that the
//! client retries with the new nonce without asking its user again (RFC 7616 §3.3).
//!
//! One challenge is sent per offered algorithm, most preferred first (SHA-256, then MD5 by
//! default; RFC 8760 §2.4), all with `qop="auth"`.
//!
//! # Nonces
//! Nonces are stateless: `nonce = hex16(t) || hex(SHA-256(secret || t || realm))`, where `t`
//! is the issue time in seconds since the Unix epoch (as 8 big-endian bytes inside the hash,
//! 16 lowercase hex digits in the nonce), `secret` is [`Config::secret`] and `realm` is
//! [`Config::realm`]: 80 characters. The verifier recomputes the hash to know the nonce is its
//! own, and reads `t` to know its age: older than [`Config::nonce_lifetime`] is stale. No
//! per-nonce state is kept, so nonce counts (`nc`) are checked for their form only: replays of a
//! whole request within the nonce lifetime are not detected here (the transaction layer absorbs
//! retransmissions; a registrar that cares keeps the last `nc` per nonce). The realm is the
//! last input of the hash, so a length extension of the hash cannot forge a nonce for it.
//!
//! # Client: [`select`] and [`answer`]
//! [`select`] keeps, for each realm of a 401 or 407, the strongest challenge this module can
//! answer (SHA-512/256, then SHA-256, then MD5); [`answer`] computes the `Authorization` or
//! `Proxy-Authorization` value for one of them, with `qop=auth` when the challenge offers it
//! and the RFC 2069 form when it offers no qop (RFC 3261 §22.4).
//!
//! Schemes other than Digest are ignored on both sides (RFC 4475 §3.3.7).

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::Digest as _;

use crate::header::{Auth, Authorization, ProxyAuthorization};
use crate::{Error, HeaderName, Ids, Method, Request, Response, StatusCode};

/// A hash function of Digest (RFC 7616 §3.2, RFC 8760 §2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hash {
    /// MD5 (RFC 2617), for backward compatibility only.
    Md5,
    /// SHA-256 (RFC 7616, RFC 8760).
    Sha256,
    /// SHA-512/256 (RFC 7616, RFC 8760).
    Sha512_256,
}

impl Hash {
    /// The lowercase hex digest of `parts` joined with `:`, as RFC 7616 §3.4.1 writes
    /// `H(a ":" b ...)`.
    pub fn hex(self, parts: &[&str]) -> String {
        match self {
            Hash::Md5 => hex_digest::<md5::Md5>(parts),
            Hash::Sha256 => hex_digest::<sha2::Sha256>(parts),
            Hash::Sha512_256 => hex_digest::<sha2::Sha512_256>(parts),
        }
    }

    /// How strong the hash is, to choose among challenges: higher is stronger.
    fn rank(self) -> u8 {
        match self {
            Hash::Md5 => 1,
            Hash::Sha256 => 2,
            Hash::Sha512_256 => 3,
        }
    }
}

/// A Digest algorithm: a hash function, and whether it is the `-sess` variant (HA1 hashed
/// again with the nonce and cnonce, RFC 7616 §3.4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Algorithm {
    /// The hash function.
    pub hash: Hash,
    /// Whether this is the `-sess` variant.
    pub sess: bool,
}

impl Algorithm {
    /// `MD5`
    pub const MD5: Algorithm = Algorithm::new(Hash::Md5, false);
    /// `MD5-sess`
    pub const MD5_SESS: Algorithm = Algorithm::new(Hash::Md5, true);
    /// `SHA-256`
    pub const SHA_256: Algorithm = Algorithm::new(Hash::Sha256, false);
    /// `SHA-256-sess`
    pub const SHA_256_SESS: Algorithm = Algorithm::new(Hash::Sha256, true);
    /// `SHA-512-256`
    pub const SHA_512_256: Algorithm = Algorithm::new(Hash::Sha512_256, false);
    /// `SHA-512-256-sess`
    pub const SHA_512_256_SESS: Algorithm = Algorithm::new(Hash::Sha512_256, true);

    const ALL: [Algorithm; 6] = [
        Algorithm::MD5,
        Algorithm::MD5_SESS,
        Algorithm::SHA_256,
        Algorithm::SHA_256_SESS,
        Algorithm::SHA_512_256,
        Algorithm::SHA_512_256_SESS,
    ];

    /// An algorithm from its parts.
    pub const fn new(hash: Hash, sess: bool) -> Algorithm {
        Algorithm { hash, sess }
    }

    /// Reads an `algorithm` parameter value (without quotes), ignoring case; `None` for an
    /// algorithm this module does not implement.
    pub fn from_name(name: &str) -> Option<Algorithm> {
        Algorithm::ALL
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(name))
    }

    /// The name as the `algorithm` parameter writes it (`SHA-256`, `MD5-sess`...).
    pub fn name(self) -> &'static str {
        match (self.hash, self.sess) {
            (Hash::Md5, false) => "MD5",
            (Hash::Md5, true) => "MD5-sess",
            (Hash::Sha256, false) => "SHA-256",
            (Hash::Sha256, true) => "SHA-256-sess",
            (Hash::Sha512_256, false) => "SHA-512-256",
            (Hash::Sha512_256, true) => "SHA-512-256-sess",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the server knows of a user, as [`Verifier::verify`]'s `lookup` returns it.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// The password in clear.
    Password(String),
    /// Precomputed `HA1 = H(username ":" realm ":" password)` in lowercase hex ([`ha1`]), one
    /// per hash function the user may answer with; a store need not keep the password. An
    /// answer with a hash function not listed here is refused.
    Ha1(Vec<(Hash, String)>),
}

impl fmt::Debug for Credential {
    /// Never prints the secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Password(_) => f.write_str("Password(..)"),
            Credential::Ha1(h) => {
                let hashes: Vec<Hash> = h.iter().map(|(hash, _)| *hash).collect();
                f.debug_tuple("Ha1").field(&hashes).finish()
            }
        }
    }
}

/// `HA1 = H(username ":" realm ":" password)` in lowercase hex: what a user store may keep in
/// place of the password ([`Credential::Ha1`]).
pub fn ha1(hash: Hash, username: &str, realm: &str, password: &str) -> String {
    hash.hex(&[username, realm, password])
}

/// The configuration of a [`Verifier`].
///
/// There is no `Default`: the realm and the secret have no sensible default. Build one with
/// [`Config::new`] and the builder methods.
#[derive(Clone)]
pub struct Config {
    /// The realm of the challenges (RFC 3261 §22.1: a domain name, for example the host part
    /// of the address of record). Credentials for other realms are ignored.
    pub realm: String,
    /// The algorithms offered, most preferred first, one challenge header each. Default:
    /// SHA-256 then MD5 (RFC 8760 §2.4).
    pub algorithms: Vec<Algorithm>,
    /// How long a nonce is good for; an answer to an older nonce is [`Verdict::Stale`].
    /// Default: 300 seconds.
    pub nonce_lifetime: Duration,
    /// The key of the nonce hash: 32 random bytes, from the operating system in a node (a
    /// constant in a test). Keep it across restarts to keep outstanding nonces valid;
    /// change it to void them.
    pub secret: [u8; 32],
    /// An `opaque` value sent in every challenge and required back unchanged, if any.
    /// Default: none.
    pub opaque: Option<String>,
}

impl Config {
    /// A configuration for `realm` keyed with `secret`, with the defaults of the other fields.
    pub fn new(realm: impl Into<String>, secret: [u8; 32]) -> Config {
        Config {
            realm: realm.into(),
            algorithms: vec![Algorithm::SHA_256, Algorithm::MD5],
            nonce_lifetime: Duration::from_secs(300),
            secret,
            opaque: None,
        }
    }

    /// Sets [`Config::algorithms`].
    pub fn algorithms(mut self, algorithms: impl Into<Vec<Algorithm>>) -> Config {
        self.algorithms = algorithms.into();
        self
    }

    /// Sets [`Config::nonce_lifetime`].
    pub fn nonce_lifetime(mut self, lifetime: Duration) -> Config {
        self.nonce_lifetime = lifetime;
        self
    }

    /// Sets [`Config::opaque`].
    pub fn opaque(mut self, opaque: impl Into<String>) -> Config {
        self.opaque = Some(opaque.into());
        self
    }
}

impl fmt::Debug for Config {
    /// Never prints the secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("realm", &self.realm)
            .field("algorithms", &self.algorithms)
            .field("nonce_lifetime", &self.nonce_lifetime)
            .field("opaque", &self.opaque)
            .finish_non_exhaustive()
    }
}

/// What [`Verifier::verify`] made of a request's credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Valid credentials of this user, on a fresh nonce.
    Ok {
        /// The authenticated user name.
        username: String,
    },
    /// No Digest credentials for this realm (none at all, only other schemes or realms, or
    /// values that do not parse): challenge with [`Verifier::reject`].
    Missing,
    /// The credentials are right but the nonce is too old: challenge again with
    /// `stale = true`.
    Stale,
    /// Credentials for this realm that are wrong, and why.
    Invalid(Invalid),
}

impl Verdict {
    /// Whether the request is authenticated.
    pub fn is_ok(&self) -> bool {
        matches!(self, Verdict::Ok { .. })
    }
}

/// Why credentials were refused ([`Verdict::Invalid`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Invalid {
    /// A parameter the answer needs is absent or malformed; names it.
    Malformed(&'static str),
    /// The algorithm is not one this verifier offers.
    Algorithm,
    /// `qop` is absent or is not `auth` (the only one offered).
    Qop,
    /// The `uri` parameter is not the Request-URI.
    Uri,
    /// The `opaque` parameter is not the one sent.
    Opaque,
    /// The nonce was not issued by this verifier (another secret or realm, or made up).
    Nonce,
    /// No credential for this user and realm (or none for the hash function used).
    UnknownUser,
    /// The response digest is wrong: a wrong password, or a request changed on the way.
    Response,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Invalid::Malformed(what) => write!(f, "the {what} parameter is missing or malformed"),
            Invalid::Algorithm => f.write_str("the algorithm is not one that was offered"),
            Invalid::Qop => f.write_str("qop is not auth"),
            Invalid::Uri => f.write_str("the uri parameter is not the Request-URI"),
            Invalid::Opaque => f.write_str("the opaque parameter is not the one sent"),
            Invalid::Nonce => f.write_str("the nonce was not issued here"),
            Invalid::UnknownUser => f.write_str("no credential for this user"),
            Invalid::Response => f.write_str("the response digest is wrong"),
        }
    }
}

/// The server side: challenges requests and verifies their credentials, for one realm.
/// See the [module documentation](self) for the flow and the nonce design.
#[derive(Debug, Clone)]
pub struct Verifier {
    config: Config,
}

/// At most this many Digest credentials for our realm are checked in one request (each one
/// costs a user lookup and a few hashes).
const MAX_CREDENTIALS: usize = 4;

/// The length of a nonce: 16 hex digits of time, 64 of SHA-256.
const NONCE_LEN: usize = 16 + 64;

impl Verifier {
    /// A verifier. Fails if no algorithm is offered, or if the realm or opaque value holds
    /// control characters (they cannot be quoted in a header).
    pub fn new(config: Config) -> Result<Verifier, Error> {
        if config.algorithms.is_empty() {
            return Err(Error::NotAllowed(
                "a digest verifier needs at least one algorithm to offer",
            ));
        }
        check_quotable("realm", &config.realm)?;
        if let Some(opaque) = &config.opaque {
            check_quotable("opaque", opaque)?;
        }
        Ok(Verifier { config })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The challenge header fields of a 401 (`proxy = false`: `WWW-Authenticate`) or a 407
    /// (`proxy = true`: `Proxy-Authenticate`), one per offered algorithm, with a nonce issued
    /// at `now`.
    pub fn challenge(&self, now: SystemTime, proxy: bool) -> Vec<(HeaderName, String)> {
        self.challenges(now, proxy, false)
    }

    /// Checks the `Authorization` (`proxy = false`) or `Proxy-Authorization` (`proxy = true`)
    /// credentials of `request` at time `now`. `lookup(username, realm)` gives what the server
    /// knows of a user. Other schemes and other realms are ignored; the first valid Digest
    /// credentials for the realm win.
    pub fn verify(
        &self,
        request: &Request,
        now: SystemTime,
        proxy: bool,
        lookup: impl Fn(&str, &str) -> Option<Credential>,
    ) -> Verdict {
        let headers = request.headers();
        let offered: Vec<Auth<'_>> = if proxy {
            headers
                .typed_all::<ProxyAuthorization>()
                .filter_map(|a| a.ok().map(|a| a.0))
                .collect()
        } else {
            headers
                .typed_all::<Authorization>()
                .filter_map(|a| a.ok().map(|a| a.0))
                .collect()
        };
        let ours = offered
            .iter()
            .filter(|a| a.is_digest() && a.param("realm").as_deref() == Some(&self.config.realm))
            .take(MAX_CREDENTIALS);
        let mut verdict = Verdict::Missing;
        for credentials in ours {
            match self.check(credentials, request, now, &lookup) {
                ok @ Verdict::Ok { .. } => return ok,
                Verdict::Stale => verdict = Verdict::Stale,
                Verdict::Invalid(why) => {
                    tracing::debug!(
                        realm = %self.config.realm,
                        username = credentials.param("username").as_deref().unwrap_or_default(),
                        reason = %why,
                        "digest credentials refused"
                    );
                    if verdict == Verdict::Missing {
                        verdict = Verdict::Invalid(why);
                    }
                }
                Verdict::Missing => {}
            }
        }
        verdict
    }

    /// A 401 (`proxy = false`) or 407 (`proxy = true`) response to `request` with the
    /// challenges of [`Verifier::challenge`], `stale=true` in each when `stale`, `to_tag` added
    /// to To as [`Response::for_request`] does, and `Content-Length: 0`.
    pub fn reject(
        &self,
        request: &Request,
        now: SystemTime,
        proxy: bool,
        stale: bool,
        to_tag: Option<&str>,
    ) -> Response {
        let status = if proxy {
            StatusCode::PROXY_AUTHENTICATION_REQUIRED
        } else {
            StatusCode::UNAUTHORIZED
        };
        let mut resp = Response::for_request(request, status, status.canonical_reason(), to_tag);
        let headers = resp.headers_mut();
        for (name, value) in self.challenges(now, proxy, stale) {
            headers.push(name, value);
        }
        headers.push(HeaderName::ContentLength, "0");
        resp
    }

    fn challenges(&self, now: SystemTime, proxy: bool, stale: bool) -> Vec<(HeaderName, String)> {
        let name = if proxy {
            HeaderName::ProxyAuthenticate
        } else {
            HeaderName::WwwAuthenticate
        };
        let nonce = self.nonce(seconds(now));
        let realm = quote(&self.config.realm);
        let opaque = match &self.config.opaque {
            Some(o) => format!(", opaque={}", quote(o)),
            None => String::new(),
        };
        let stale = if stale { ", stale=true" } else { "" };
        self.config
            .algorithms
            .iter()
            .map(|alg| {
                let value = format!(
                    "Digest realm={realm}, nonce=\"{nonce}\"{opaque}, qop=\"auth\", algorithm={alg}{stale}"
                );
                (name, value)
            })
            .collect()
    }

    /// Checks one set of Digest credentials for our realm.
    fn check(
        &self,
        c: &Auth<'_>,
        request: &Request,
        now: SystemTime,
        lookup: &impl Fn(&str, &str) -> Option<Credential>,
    ) -> Verdict {
        let invalid = Verdict::Invalid;
        let malformed = |what| Verdict::Invalid(Invalid::Malformed(what));
        let Some(username) = c.param("username") else {
            return malformed("username");
        };
        let Some(nonce) = c.param("nonce") else {
            return malformed("nonce");
        };
        let Some(uri) = c.param("uri") else {
            return malformed("uri");
        };
        let Some(response) = c.param("response") else {
            return malformed("response");
        };
        let algorithm = match c.param("algorithm") {
            None => Algorithm::MD5,
            Some(name) => match Algorithm::from_name(&name) {
                Some(a) => a,
                None => return invalid(Invalid::Algorithm),
            },
        };
        if !self.config.algorithms.contains(&algorithm) {
            return invalid(Invalid::Algorithm);
        }
        if c.param("qop").is_none_or(|q| q != "auth") {
            return invalid(Invalid::Qop);
        }
        let Some(nc) = c.param("nc") else {
            return malformed("nc");
        };
        if nc.len() != 8 || !nc.bytes().all(|b| b.is_ascii_hexdigit()) {
            return malformed("nc");
        }
        let Some(cnonce) = c.param("cnonce").filter(|c| !c.is_empty()) else {
            return malformed("cnonce");
        };
        if uri != request.uri_str() {
            return invalid(Invalid::Uri);
        }
        if let Some(expected) = &self.config.opaque
            && c.param("opaque").as_deref() != Some(expected.as_str())
        {
            return invalid(Invalid::Opaque);
        }
        let Some(issued) = self.nonce_time(&nonce) else {
            return invalid(Invalid::Nonce);
        };
        let realm = self.config.realm.as_str();
        let base = match lookup(&username, realm) {
            Some(Credential::Password(p)) => ha1(algorithm.hash, &username, realm, &p),
            Some(Credential::Ha1(list)) => {
                match list.into_iter().find(|(h, _)| *h == algorithm.hash) {
                    Some((_, h)) => h.to_ascii_lowercase(),
                    None => return invalid(Invalid::UnknownUser),
                }
            }
            None => return invalid(Invalid::UnknownUser),
        };
        let expected = digest_response(
            algorithm,
            &base,
            &nonce,
            Some((&nc, &cnonce)),
            request.method().as_str(),
            &uri,
        );
        if !constant_time_eq(
            response.to_ascii_lowercase().as_bytes(),
            expected.as_bytes(),
        ) {
            return invalid(Invalid::Response);
        }
        let age = seconds(now).saturating_sub(issued);
        if age > self.config.nonce_lifetime.as_secs() {
            return Verdict::Stale;
        }
        Verdict::Ok {
            username: username.into_owned(),
        }
    }

    /// The nonce issued at `secs` (see the module documentation).
    fn nonce(&self, secs: u64) -> String {
        let mac = sha2::Sha256::new()
            .chain_update(self.config.secret)
            .chain_update(secs.to_be_bytes())
            .chain_update(self.config.realm.as_bytes())
            .finalize();
        let mut nonce = format!("{secs:016x}");
        push_hex(&mut nonce, &mac);
        nonce
    }

    /// When `nonce` was issued, if this verifier issued it.
    fn nonce_time(&self, nonce: &str) -> Option<u64> {
        if nonce.len() != NONCE_LEN {
            return None;
        }
        let secs = u64::from_str_radix(nonce.get(..16)?, 16).ok()?;
        // Comparing the whole nonce also refuses other spellings of the time (`+`, capitals).
        constant_time_eq(nonce.as_bytes(), self.nonce(secs).as_bytes()).then_some(secs)
    }
}

/// Keeps, for each realm, the strongest challenge this module can answer: a Digest challenge
/// with a realm and a nonce, an implemented algorithm, and a `qop` that includes `auth` or
/// no `qop`. SHA-512/256 beats SHA-256 beats MD5; at equal hash, the plain variant beats
/// `-sess`, then the first one wins. Realms come in the order they first appear.
pub fn select<'a>(challenges: impl IntoIterator<Item = Auth<'a>>) -> Vec<Auth<'a>> {
    let mut best: Vec<(String, u8, Auth<'a>)> = Vec::new();
    for c in challenges {
        let Some(rank) = answerable(&c) else {
            continue;
        };
        let realm = c.param("realm").unwrap_or_default().into_owned();
        match best.iter_mut().find(|(r, _, _)| *r == realm) {
            Some(entry) if entry.1 < rank => *entry = (realm, rank, c),
            Some(_) => {}
            None => best.push((realm, rank, c)),
        }
    }
    best.into_iter().map(|(_, _, c)| c).collect()
}

/// The `Authorization` (to a 401) or `Proxy-Authorization` (to a 407) value answering
/// `challenge` for a request of `method` to `uri` (the Request-URI, as it will be sent).
///
/// `cnonce` is the client nonce (see [`cnonce`]); `nc` counts the requests sent with this
/// nonce, from 1. With a `qop` that includes `auth` the answer uses `qop=auth`; with no `qop`
/// it is the RFC 2069 form (no cnonce, no nc). The algorithm is the challenge's (MD5 when
/// absent). Fails, naming what is wrong, if the challenge is not Digest, lacks a realm or a
/// nonce, names an algorithm not implemented here, offers only other qop values, or if a value
/// to quote holds control characters.
pub fn answer(
    challenge: &Auth<'_>,
    method: &Method,
    uri: &str,
    username: &str,
    password: &str,
    cnonce: &str,
    nc: u32,
) -> Result<String, Error> {
    if !challenge.is_digest() {
        return Err(bad_challenge("the Digest scheme"));
    }
    let realm = challenge
        .param("realm")
        .ok_or(bad_challenge("a realm parameter"))?;
    let nonce = challenge
        .param("nonce")
        .ok_or(bad_challenge("a nonce parameter"))?;
    let algorithm = match challenge.param("algorithm") {
        None => Algorithm::MD5,
        Some(name) => Algorithm::from_name(&name).ok_or(bad_challenge(
            "an algorithm of MD5, SHA-256 or SHA-512-256 (or their -sess variants)",
        ))?,
    };
    let qop = match challenge.param("qop") {
        None => false,
        Some(q) if offers_auth(&q) => true,
        Some(_) => return Err(bad_challenge("a qop that includes auth")),
    };
    if algorithm.sess && !qop {
        return Err(bad_challenge("a qop with a -sess algorithm"));
    }
    if qop && cnonce.is_empty() {
        return Err(Error::NotAllowed("an empty cnonce"));
    }
    for (field, value) in [
        ("username", username),
        ("realm", &*realm),
        ("nonce", &*nonce),
        ("uri", uri),
        ("cnonce", cnonce),
    ] {
        check_quotable(field, value)?;
    }
    let opaque = challenge.param("opaque");
    if let Some(o) = &opaque {
        check_quotable("opaque", o)?;
    }

    let nc = format!("{nc:08x}");
    let base = ha1(algorithm.hash, username, &realm, password);
    let qop_parts = qop.then_some((nc.as_str(), cnonce));
    let response = digest_response(algorithm, &base, &nonce, qop_parts, method.as_str(), uri);

    let mut out = format!(
        "Digest username={}, realm={}, nonce={}, uri={}, response=\"{response}\", algorithm={algorithm}",
        quote(username),
        quote(&realm),
        quote(&nonce),
        quote(uri),
    );
    if qop {
        out.push_str(&format!(", cnonce={}", quote(cnonce)));
    }
    if let Some(o) = &opaque {
        out.push_str(&format!(", opaque={}", quote(o)));
    }
    if qop {
        out.push_str(&format!(", qop=auth, nc={nc}"));
    }
    Ok(out)
}

/// A client nonce: 128 bits from `ids` in hex. Seed `ids` from the operating system in a
/// node: the cnonce is what keeps a server from choosing the whole hashed text.
pub fn cnonce(ids: &mut Ids) -> String {
    format!("{:016x}{:016x}", ids.next_u64(), ids.next_u64())
}

/// `response` of RFC 7616 §3.4.1 from `base = H(username ":" realm ":" password)`:
/// `KD(HA1, nonce ":" nc ":" cnonce ":" "auth" ":" HA2)` with qop, `KD(HA1, nonce ":" HA2)`
/// without (RFC 2069), where `HA2 = H(method ":" uri)` and, for `-sess`,
/// `HA1 = H(base ":" nonce ":" cnonce)`.
fn digest_response(
    algorithm: Algorithm,
    base: &str,
    nonce: &str,
    qop: Option<(&str, &str)>,
    method: &str,
    uri: &str,
) -> String {
    let h = algorithm.hash;
    let ha1 = match (algorithm.sess, qop) {
        (true, Some((_, cnonce))) => h.hex(&[base, nonce, cnonce]),
        _ => base.to_owned(),
    };
    let ha2 = h.hex(&[method, uri]);
    match qop {
        Some((nc, cnonce)) => h.hex(&[&ha1, nonce, nc, cnonce, "auth", &ha2]),
        None => h.hex(&[&ha1, nonce, &ha2]),
    }
}

/// The rank of a challenge [`answer`] can answer, `None` if it cannot.
fn answerable(c: &Auth<'_>) -> Option<u8> {
    if !c.is_digest() || c.param("realm").is_none() || c.param("nonce").is_none() {
        return None;
    }
    let algorithm = match c.param("algorithm") {
        None => Algorithm::MD5,
        Some(name) => Algorithm::from_name(&name)?,
    };
    let qop = match c.param("qop") {
        None => false,
        Some(q) if offers_auth(&q) => true,
        Some(_) => return None,
    };
    if algorithm.sess && !qop {
        return None;
    }
    Some(algorithm.hash.rank() * 2 + u8::from(!algorithm.sess))
}

/// Whether a challenge's `qop` list (`"auth,auth-int"`) includes `auth`.
fn offers_auth(qop: &str) -> bool {
    qop.split(',')
        .any(|q| q.trim().eq_ignore_ascii_case("auth"))
}

fn bad_challenge(expected: &'static str) -> Error {
    Error::Field {
        field: "Digest challenge",
        line: 0,
        expected,
        at: 0,
    }
}

/// Refuses values a quoted string cannot carry (control characters other than tab).
fn check_quotable(field: &'static str, value: &str) -> Result<(), Error> {
    match value
        .bytes()
        .position(|b| b.is_ascii_control() && b != b'\t')
    {
        Some(at) => Err(Error::Field {
            field,
            line: 0,
            expected: "no control characters",
            at,
        }),
        None => Ok(()),
    }
}

/// `value` as a quoted string, with `"` and `\` escaped.
fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

fn seconds(now: SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn hex_digest<D: sha2::Digest>(parts: &[&str]) -> String {
    let mut d = D::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            d.update(b":");
        }
        d.update(part.as_bytes());
    }
    let mut out = String::with_capacity(2 * <D as sha2::Digest>::output_size());
    push_hex(&mut out, &d.finalize());
    out
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
}

/// Equality whose time depends on the length only, not on where the inputs differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithm_names_round_trip() {
        for a in Algorithm::ALL {
            assert_eq!(Algorithm::from_name(a.name()), Some(a));
            assert_eq!(Algorithm::from_name(&a.name().to_lowercase()), Some(a));
        }
        assert_eq!(Algorithm::from_name("SHA-1"), None);
    }

    #[test]
    fn nonces_are_checked() {
        let v = Verifier::new(Config::new("r", [7; 32])).unwrap();
        let n = v.nonce(1_700_000_000);
        assert_eq!(n.len(), NONCE_LEN);
        assert_eq!(v.nonce_time(&n), Some(1_700_000_000));
        assert_eq!(v.nonce_time(&n.to_uppercase()), None);
        let other = Verifier::new(Config::new("r2", [7; 32])).unwrap();
        assert_eq!(other.nonce_time(&n), None);
        let mut forged = n.clone();
        forged.replace_range(15..16, "1");
        assert_eq!(v.nonce_time(&forged), None);
        assert_eq!(v.nonce_time("+"), None);
    }

    #[test]
    fn quoting() {
        assert_eq!(quote(r#"a"b\c"#), r#""a\"b\\c""#);
        assert!(check_quotable("x", "a\r\nb").is_err());
        assert!(constant_time_eq(b"ab", b"ab") && !constant_time_eq(b"ab", b"ac"));
    }
}
