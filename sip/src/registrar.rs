//! The registrar (RFC 3261 §10): bindings of an address-of-record to contacts.
//!
//! Sans-IO: no clock, no sockets. [`Registrar::register`] takes a REGISTER, the time `now`
//! and a [`Bindings`] store, and returns the response to send, whatever happened: a refusal
//! changes no binding (a REGISTER is applied all or nothing, §10.3).
//!
//! ## The steps of §10.3, and where they are
//! - The generic checks of a UAS ([`check_request`] with [`Role::Uas`]): version, mandatory
//!   headers, grammar of every typed header (a Contact that is not a URI, an `Expires` over
//!   2^32-1: 400), and step 2, Require (420). A method other than REGISTER gets 405.
//! - Step 1: the Request-URI's host must be one of [`Config::domains`] (404 naming it).
//!   Proxying a REGISTER for another domain is the node's business, not the registrar's.
//! - Steps 3 and 4 (authentication, authorization) are the caller's, before `register`.
//! - Step 5: the address-of-record is the To URI in canonical form ([`aor`]); a To URI that
//!   is not `sip:`/`sips:` gets 400 (RFC 4475 §3.3.4), one of a domain not served 404.
//! - Step 6: `Contact: *` only alone and with `Expires: 0` (else 400); it removes every
//!   binding, unless one has the request's Call-ID and a CSeq not lower (500, nothing removed).
//! - Step 7: each contact's interval is its `expires` parameter, else the Expires header,
//!   else [`Config::default_expires`]; a malformed or overflowing `expires` gets 400, an
//!   interval below [`Config::min_expires`] (and below one hour) 423 with Min-Expires, a
//!   longer one than [`Config::max_expires`] is shortened. A contact matches a binding by
//!   the URI comparison of §19.1.4 ([`same_contact`]); a binding with the request's Call-ID
//!   and a CSeq not lower than the request's makes the request fail with 500 "Out of order";
//!   otherwise the binding is replaced, or removed by an interval of 0. More than
//!   [`Config::max_bindings_per_aor`] bindings after the request: 403, nothing changed.
//! - Step 8: 200 listing every binding with its remaining `expires` and its `q`. A REGISTER
//!   without Contact is a query and changes nothing. No Date header: the registrar has no
//!   wall clock (the RFC says SHOULD; a driver may add one).
//!
//! ## Stores
//! [`Bindings`] reads and replaces the whole binding set of one AOR at once: the overlay keeps
//! a set as one signed record. [`MemoryBindings`] is the in-memory store, bounded in AORs and
//! bindings per AOR. A store whose writes complete later (the overlay, acknowledged by its
//! replicas) drives the same steps by hand: [`Registrar::prepare`], read the set of
//! [`Registration::aor`], [`Registrar::apply`], write the new set, then [`Registrar::accept`];
//! a [`Refusal`] at any step (a [`StoreError`] converts into one) is answered by
//! [`Registrar::refuse`] and leaves the bindings as they were.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::header::{CSeq, CallId, Contact, Expires, To};
use crate::text::is_user;
use crate::{
    HeaderName, Host, Ids, Method, Params, Policy, Rejection, Request, Response, Role, SipUri,
    StatusCode, Uri, check_request,
};

/// What the registrar serves and how long it keeps bindings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The domains whose bindings this registrar keeps, compared without case with the host
    /// of the Request-URI and of the address-of-record (an IP address is written as in a
    /// URI, `192.0.2.1` or `[2001:db8::1]`). Empty: any domain. Default: empty.
    pub domains: Vec<String>,
    /// The interval granted to a contact that asks for none (no `expires` parameter, no
    /// Expires header). Default: 3600 s.
    pub default_expires: Duration,
    /// The shortest interval accepted: a request for less (but more than 0) is refused with
    /// 423 Interval Too Brief and this value, in whole seconds, in Min-Expires. §10.3 only
    /// allows refusing intervals below one hour, so a value above 3600 s acts as 3600 s.
    /// Default: 60 s.
    pub min_expires: Duration,
    /// The longest interval granted: a request for more is shortened to this. Default: 7200 s.
    pub max_expires: Duration,
    /// The most bindings one address-of-record may have; a REGISTER that would leave more is
    /// refused with 403 and changes nothing. Default: 10.
    pub max_bindings_per_aor: usize,
    /// The most addresses-of-record a [`MemoryBindings`] built from this config holds; a
    /// REGISTER for a new one beyond it is refused with 503. Default: 100 000.
    pub max_aors: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            domains: Vec::new(),
            default_expires: Duration::from_secs(3600),
            min_expires: Duration::from_secs(60),
            max_expires: Duration::from_secs(7200),
            max_bindings_per_aor: 10,
            max_aors: 100_000,
        }
    }
}

impl Config {
    /// Adds a domain served.
    pub fn domain(mut self, domain: impl Into<String>) -> Config {
        self.domains.push(domain.into());
        self
    }

    /// Sets the interval granted when a contact asks for none.
    pub fn default_expires(mut self, interval: Duration) -> Config {
        self.default_expires = interval;
        self
    }

    /// Sets the shortest interval accepted (Min-Expires).
    pub fn min_expires(mut self, interval: Duration) -> Config {
        self.min_expires = interval;
        self
    }

    /// Sets the longest interval granted.
    pub fn max_expires(mut self, interval: Duration) -> Config {
        self.max_expires = interval;
        self
    }

    /// Sets the most bindings per address-of-record.
    pub fn max_bindings_per_aor(mut self, n: usize) -> Config {
        self.max_bindings_per_aor = n;
        self
    }

    /// Sets the most addresses-of-record held.
    pub fn max_aors(mut self, n: usize) -> Config {
        self.max_aors = n;
        self
    }

    fn serves(&self, host: &Host<'_>) -> bool {
        if self.domains.is_empty() {
            return true;
        }
        let host = host_text(host);
        self.domains
            .iter()
            .any(|d| d.trim_end_matches('.').eq_ignore_ascii_case(&host))
    }
}

/// One contact bound to an address-of-record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The contact URI as written in the REGISTER: URI parameters and `?headers` kept, byte
    /// for byte (RFC 4475 cparam02, regescrt).
    pub contact: String,
    /// The Contact header parameters other than `expires` and `q`, as `name` or `name=value`
    /// joined by `;`, without a leading `;` (RFC 4475 cparam01: `unknownparam`). Empty if none.
    pub params: String,
    /// The `q` parameter in thousandths (0 to 1000), if given.
    pub q: Option<u16>,
    /// When the binding expires; it is gone at this instant.
    pub expires_at: Instant,
    /// The Call-ID of the REGISTER that made or last refreshed the binding.
    pub call_id: String,
    /// The CSeq number of that REGISTER.
    pub cseq: u32,
}

impl Binding {
    /// Whether the binding still holds at `now`.
    pub fn is_live(&self, now: Instant) -> bool {
        self.expires_at > now
    }

    /// Whole seconds left at `now`, rounded up (a live binding has at least 1); 0 once
    /// expired.
    pub fn expires_in(&self, now: Instant) -> u64 {
        let left = self.expires_at.saturating_duration_since(now);
        left.as_secs() + u64::from(left.subsec_nanos() > 0)
    }

    /// The Contact header value that lists the binding in a 200 (§10.3 step 8):
    /// `<contact>;params;expires=N[;q=0.5]`.
    pub fn contact_value(&self, now: Instant) -> String {
        let mut v = String::with_capacity(self.contact.len() + self.params.len() + 24);
        v.push('<');
        v.push_str(&self.contact);
        v.push('>');
        if !self.params.is_empty() {
            v.push(';');
            v.push_str(&self.params);
        }
        let _ = write!(v, ";expires={}", self.expires_in(now));
        if let Some(q) = self.q {
            v.push_str(";q=");
            v.push_str(&qvalue_text(q));
        }
        v
    }
}

/// Why a store refused to read or write a binding set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store holds as many addresses-of-record as it may; the registrar answers 503.
    #[error("the store holds bindings for {limit} addresses of record, its limit")]
    TooManyAors {
        /// The limit.
        limit: usize,
    },
    /// The set is larger than the store takes for one address-of-record; the registrar
    /// answers 403.
    #[error("{count} bindings for one address of record, over the limit of {limit}")]
    TooManyBindings {
        /// The size of the set refused.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// The store could not read or write (an overlay that did not answer, a disk error); the
    /// registrar answers 500, as §10.3 step 7 says.
    #[error("the bindings store failed: {reason}")]
    Failed {
        /// What went wrong, for a person.
        reason: String,
    },
}

/// Where bindings live. A store reads and replaces the whole set of one address-of-record
/// at once, so that a REGISTER is applied all or nothing (§10.3) even when the set is one
/// record of a DHT.
pub trait Bindings {
    /// The bindings of `aor` (a canonical AOR, see [`aor`]) that are live at `now`, in the
    /// order they were stored. None is not an error: an empty set.
    fn get(&mut self, aor: &str, now: Instant) -> Result<Vec<Binding>, StoreError>;

    /// Replaces every binding of `aor` with `bindings`, in one step: on error nothing
    /// changed. An empty set removes the AOR. Bindings expired at `now` need not be kept.
    fn put(&mut self, aor: &str, bindings: Vec<Binding>, now: Instant) -> Result<(), StoreError>;
}

/// Bindings in memory, bounded: at most `max_aors` addresses-of-record and
/// `max_bindings_per_aor` bindings each. Expired bindings are dropped when their AOR is read
/// or written, by [`MemoryBindings::sweep`], and by a write that finds the store full.
#[derive(Debug, Clone)]
pub struct MemoryBindings {
    sets: HashMap<String, Vec<Binding>>,
    max_aors: usize,
    max_bindings_per_aor: usize,
}

impl MemoryBindings {
    /// An empty store with the limits of `config`.
    pub fn new(config: &Config) -> MemoryBindings {
        MemoryBindings::with_limits(config.max_aors, config.max_bindings_per_aor)
    }

    /// An empty store with the given limits.
    pub fn with_limits(max_aors: usize, max_bindings_per_aor: usize) -> MemoryBindings {
        MemoryBindings {
            sets: HashMap::new(),
            max_aors,
            max_bindings_per_aor,
        }
    }

    /// How many addresses-of-record have bindings (expired ones count until dropped).
    pub fn len(&self) -> usize {
        self.sets.len()
    }

    /// Whether no address-of-record has bindings.
    pub fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }

    /// Whether some binding live at `now` has exactly the contact URI `contact` (a request
    /// retargeted to a contact by another proxy is for a device registered here).
    pub fn has_contact(&self, contact: &str, now: Instant) -> bool {
        self.sets
            .values()
            .flatten()
            .any(|b| b.is_live(now) && b.contact == contact)
    }

    /// Drops every binding expired at `now`, and the AORs left with none; returns how many
    /// bindings were dropped.
    pub fn sweep(&mut self, now: Instant) -> usize {
        let mut dropped = 0;
        self.sets.retain(|_, set| {
            let before = set.len();
            set.retain(|b| b.is_live(now));
            dropped += before - set.len();
            !set.is_empty()
        });
        dropped
    }
}

impl Bindings for MemoryBindings {
    fn get(&mut self, aor: &str, now: Instant) -> Result<Vec<Binding>, StoreError> {
        let Some(set) = self.sets.get_mut(aor) else {
            return Ok(Vec::new());
        };
        set.retain(|b| b.is_live(now));
        let live = set.clone();
        if live.is_empty() {
            self.sets.remove(aor);
        }
        Ok(live)
    }

    fn put(
        &mut self,
        aor: &str,
        mut bindings: Vec<Binding>,
        now: Instant,
    ) -> Result<(), StoreError> {
        bindings.retain(|b| b.is_live(now));
        if bindings.len() > self.max_bindings_per_aor {
            return Err(StoreError::TooManyBindings {
                count: bindings.len(),
                limit: self.max_bindings_per_aor,
            });
        }
        if bindings.is_empty() {
            self.sets.remove(aor);
            return Ok(());
        }
        if let Some(set) = self.sets.get_mut(aor) {
            *set = bindings;
            return Ok(());
        }
        if self.sets.len() >= self.max_aors {
            self.sweep(now);
            if self.sets.len() >= self.max_aors {
                return Err(StoreError::TooManyAors {
                    limit: self.max_aors,
                });
            }
        }
        self.sets.insert(aor.to_owned(), bindings);
        Ok(())
    }
}

/// What a checked REGISTER asks of one address-of-record (§10.3 steps 1 to 6, and the
/// intervals of step 7, passed); [`Registrar::apply`] turns it into a new binding set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    aor: String,
    call_id: String,
    cseq: u32,
    change: Change,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Change {
    /// No Contact: list the bindings.
    Query,
    /// `Contact: *` with `Expires: 0`.
    RemoveAll,
    /// Contacts to add, refresh or (interval 0) remove, in the order written.
    Update(Vec<Requested>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Requested {
    contact: String,
    params: String,
    q: Option<u16>,
    /// The interval granted, in seconds; 0 removes.
    expires: u64,
}

impl Registration {
    /// The canonical address-of-record ([`aor`]) whose bindings the request reads or changes.
    pub fn aor(&self) -> &str {
        &self.aor
    }

    /// Whether the request only asks for the bindings (no Contact): nothing to write.
    pub fn is_query(&self) -> bool {
        self.change == Change::Query
    }
}

/// The registrar of RFC 3261 §10.3. See the module docs for the steps.
#[derive(Debug, Clone)]
pub struct Registrar {
    config: Config,
    policy: Policy,
    ids: Ids,
}

impl Registrar {
    /// A registrar; `seed` drives the To tags of its responses (predictable: for tests, see
    /// [`Ids`]).
    pub fn new(config: Config, seed: u64) -> Registrar {
        Registrar::with_ids(config, Ids::new(seed))
    }

    /// A registrar whose To tags come from `ids` ([`Ids::from_os`] in a node).
    pub fn with_ids(config: Config, ids: Ids) -> Registrar {
        Registrar {
            config,
            policy: Policy::with_role(Role::Uas),
            ids,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Handles a REGISTER at `now` against `store`, and returns the response to send: 200
    /// listing the bindings, or a refusal that changed nothing.
    pub fn register(
        &mut self,
        request: &Request,
        now: Instant,
        store: &mut impl Bindings,
    ) -> Response {
        let registration = match self.prepare(request) {
            Ok(r) => r,
            Err(refusal) => return self.refuse(request, &refusal),
        };
        let current = match store.get(&registration.aor, now) {
            Ok(set) => set,
            Err(e) => return self.refuse(request, &Refusal::from(&e)),
        };
        if registration.is_query() {
            return self.accept(request, &current, now);
        }
        let new = match self.apply(&registration, current, now) {
            Ok(set) => set,
            Err(refusal) => return self.refuse(request, &refusal),
        };
        match store.put(&registration.aor, new.clone(), now) {
            Ok(()) => self.accept(request, &new, now),
            Err(e) => self.refuse(request, &Refusal::from(&e)),
        }
    }

    /// The checks that need no bindings: the request, the domain, the address-of-record, the
    /// Contact values and their intervals (§10.3 steps 1, 2, 5, 6 and the first half of 7).
    /// Answer a refusal with [`Registrar::refuse`].
    pub fn prepare(&self, request: &Request) -> Result<Registration, Refusal> {
        check(request, &self.config, &self.policy)
    }

    /// The binding set after `registration`, given the `current` set at `now` (§10.3 step 6
    /// for `*`, step 7 otherwise); a query gives the live part of `current` back. On a
    /// refusal (500 out of order, 403 over the limit) nothing is to be written.
    pub fn apply(
        &self,
        registration: &Registration,
        current: Vec<Binding>,
        now: Instant,
    ) -> Result<Vec<Binding>, Refusal> {
        merge(registration, current, now, &self.config)
    }

    /// The 200 OK that lists `bindings` (§10.3 step 8), each with the seconds it has left at
    /// `now`; expired ones are left out.
    pub fn accept(&mut self, request: &Request, bindings: &[Binding], now: Instant) -> Response {
        let tag = self.ids.tag();
        let mut resp = Response::for_request(request, StatusCode::OK, "OK", Some(&tag));
        let h = resp.headers_mut();
        for b in bindings.iter().filter(|b| b.is_live(now)) {
            h.push(HeaderName::Contact, b.contact_value(now));
        }
        h.push(HeaderName::ContentLength, Bytes::from_static(b"0"));
        resp
    }

    /// The response that refuses `request`: the status and reason phrase of `refusal`, its
    /// detail in a Warning, and Min-Expires (423), Allow (405) or Unsupported (420) as needed.
    pub fn refuse(&mut self, request: &Request, refusal: &Refusal) -> Response {
        let r = &refusal.0;
        tracing::debug!(
            call_id = request
                .headers()
                .get(HeaderName::CallId)
                .map(crate::text::ascii),
            status = r.rejection.status.as_u16(),
            reason = %r.rejection.reason,
            "REGISTER refused"
        );
        let tag = self.ids.tag();
        let mut resp = r.rejection.response(request, Some(&tag), &self.policy);
        let h = resp.headers_mut();
        if let Some(min) = r.min_expires {
            h.push(HeaderName::MinExpires, min.to_string());
        }
        if r.allow {
            h.push(HeaderName::Allow, Bytes::from_static(b"REGISTER"));
        }
        resp
    }
}

/// Why a REGISTER is refused, with what the response carries; nothing was changed.
/// [`Registrar::refuse`] turns it into the response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(Box<Refused>);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Refused {
    rejection: Rejection,
    /// For 423: Min-Expires, in seconds.
    min_expires: Option<u64>,
    /// For 405: `Allow: REGISTER`.
    allow: bool,
}

impl Refusal {
    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.0.rejection.status
    }

    /// The reason phrase, naming the fault.
    pub fn reason(&self) -> &str {
        &self.0.rejection.reason
    }

    /// The whole story, sent in a Warning.
    pub fn detail(&self) -> Option<&str> {
        self.0.rejection.detail.as_deref()
    }

    fn new(status: StatusCode, reason: &str) -> Refusal {
        Refusal::from(Rejection::new(status, reason))
    }

    fn bad(reason: &str) -> Refusal {
        Refusal::new(StatusCode::BAD_REQUEST, reason)
    }

    fn with_detail(mut self, detail: String) -> Refusal {
        self.0.rejection.detail = Some(detail);
        self
    }
}

impl From<Rejection> for Refusal {
    fn from(rejection: Rejection) -> Refusal {
        Refusal(Box::new(Refused {
            rejection,
            min_expires: None,
            allow: false,
        }))
    }
}

impl From<&StoreError> for Refusal {
    /// 503 for a store full of AORs, 403 for a set over its limit, 500 for a failure
    /// (§10.3 step 7).
    fn from(error: &StoreError) -> Refusal {
        let refusal = match error {
            StoreError::TooManyAors { .. } => Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "Registrar full: too many addresses of record",
            ),
            StoreError::TooManyBindings { limit, .. } => too_many_bindings(*limit),
            StoreError::Failed { .. } => Refusal::new(
                StatusCode::SERVER_INTERNAL_ERROR,
                "Bindings store failed, nothing changed",
            ),
        };
        refusal.with_detail(error.to_string())
    }
}

/// The canonical form of an address-of-record (§10.3 step 5), the key of its bindings:
/// `sip:user@host[:port]`, with
/// - the scheme `sip` for `sip:` and `sips:` alike (one AOR; each contact keeps its scheme),
/// - the user part's escapes decoded where the character may stand unescaped and written
///   `%HH` (upper-case) where it may not (`%61lice` is `alice`, `a%40b` stays `a%40b`),
///   case kept (user parts compare with case, §19.1.4),
/// - the host in lower case (an IPv6 address in its canonical text, in brackets),
/// - the port if one was written (`:5060` is not the same URI as none, §19.1.4),
/// - no password, no URI parameters (`user=phone` included), no headers.
///
/// `None` for a URI that is not `sip:` or `sips:`.
pub fn aor(uri: &Uri<'_>) -> Option<String> {
    let u = uri.as_sip()?;
    let mut out = String::from("sip:");
    if let Some(user) = u.user() {
        for b in percent_decode(user) {
            if is_user(b) {
                out.push(char::from(b));
            } else {
                let _ = write!(out, "%{b:02X}");
            }
        }
        out.push('@');
    }
    out.push_str(&host_text(&u.host()));
    if let Some(port) = u.port() {
        let _ = write!(out, ":{port}");
    }
    Some(out)
}

/// Whether two contact URIs name the same contact, by the rules of RFC 3261 §19.1.4 for
/// `sip:` and `sips:` URIs: same scheme, user and password (with case, escapes decoded),
/// host (without case), port (absent is not 5060); the parameters `user`, `ttl`, `method`,
/// `maddr` and `transport` present in one must be in the other and equal, other parameters
/// compared only when in both, values without case; the same headers in both. Other schemes
/// compare the scheme without case and the rest byte for byte once escapes are decoded; text
/// that is not a URI compares byte for byte.
pub fn same_contact(a: &str, b: &str) -> bool {
    match (Uri::parse(a), Uri::parse(b)) {
        (Ok(Uri::Sip(x)), Ok(Uri::Sip(y))) => {
            x.is_secure() == y.is_secure()
                && x.user().map(percent_decode) == y.user().map(percent_decode)
                && x.password().map(percent_decode) == y.password().map(percent_decode)
                && same_host(&x.host(), &y.host())
                && x.port() == y.port()
                && same_uri_params(x.params(), y.params())
                && same_uri_headers(&x, &y)
        }
        (Ok(Uri::Sip(_)), Ok(_)) | (Ok(_), Ok(Uri::Sip(_))) => false,
        (Ok(x), Ok(y)) => {
            let rest = |s: &str| percent_decode(s.split_once(':').map_or("", |(_, r)| r));
            x.scheme().eq_ignore_ascii_case(y.scheme()) && rest(a) == rest(b)
        }
        _ => a == b,
    }
}

/// One hour: §10.3 step 7 allows 423 only for intervals below it.
const ONE_HOUR: u64 = 3600;

/// Steps 1, 2, 5, 6 and the intervals of step 7.
fn check(request: &Request, config: &Config, policy: &Policy) -> Result<Registration, Refusal> {
    check_request(request, policy)?;
    if *request.method() != Method::Register {
        let mut refusal =
            Refusal::new(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed").with_detail(
                format!("a registrar takes REGISTER, not {}", request.method()),
            );
        refusal.0.allow = true;
        return Err(refusal);
    }
    let h = request.headers();
    // Step 1: a domain we keep bindings for.
    let ruri = request
        .uri()
        .map_err(|e| Refusal::from(Rejection::from_error(&e)))?;
    let Some(ruri) = ruri.as_sip() else {
        return Err(Refusal::new(
            StatusCode::UNSUPPORTED_URI_SCHEME,
            "Unsupported URI Scheme",
        ));
    };
    if !config.serves(&ruri.host()) {
        return Err(not_served(&ruri.host()));
    }
    // Step 5: the address-of-record.
    let to = match h.typed::<To>() {
        Some(Ok(to)) => to,
        Some(Err(e)) => return Err(Rejection::from_error(&e).into()),
        None => return Err(Refusal::bad("Missing To")),
    };
    let to_uri = to.0.uri();
    let Some(aor) = aor(to_uri) else {
        return Err(
            Refusal::bad("To must be a sip: or sips: URI (the address of record)").with_detail(
                format!(
                    "RFC 3261 §10.2: the address of record in To must be a SIP or SIPS URI, \
                     not a '{}:' URI",
                    to_uri.scheme()
                ),
            ),
        );
    };
    if let Some(sip) = to_uri.as_sip()
        && !config.serves(&sip.host())
    {
        return Err(not_served(&sip.host()));
    }
    let call_id = match h.typed::<CallId>() {
        Some(Ok(c)) => c.0.to_owned(),
        Some(Err(e)) => return Err(Rejection::from_error(&e).into()),
        None => return Err(Refusal::bad("Missing Call-ID")),
    };
    let cseq = match h.typed::<CSeq>() {
        Some(Ok(c)) => c.seq(),
        Some(Err(e)) => return Err(Rejection::from_error(&e).into()),
        None => return Err(Refusal::bad("Missing CSeq")),
    };
    let expires_header = match h.typed::<Expires>() {
        Some(Ok(e)) => Some(u64::from(e.0)),
        Some(Err(e)) => return Err(Rejection::from_error(&e).into()),
        None => None,
    };
    let change = contacts(request, expires_header, config)?;
    Ok(Registration {
        aor,
        call_id,
        cseq,
        change,
    })
}

/// Step 6 and the intervals of step 7: what the Contact values ask.
fn contacts(
    request: &Request,
    expires_header: Option<u64>,
    config: &Config,
) -> Result<Change, Refusal> {
    let mut values = Vec::new();
    let mut star = false;
    // Each value costs comparisons with every binding: refuse a flood before reading it.
    let most = config.max_bindings_per_aor.saturating_mul(2).max(1);
    for c in request.headers().typed_all::<Contact>() {
        let c = c.map_err(|e| Refusal::from(Rejection::from_error(&e)))?;
        if values.len() + usize::from(star) >= most {
            return Err(
                Refusal::new(StatusCode::FORBIDDEN, "Too many Contact values").with_detail(
                    format!("a REGISTER may carry at most {most} Contact values here"),
                ),
            );
        }
        match c {
            Contact::Star => star = true,
            Contact::Address(_) => values.push(c),
        }
    }
    if star {
        if !values.is_empty() || expires_header != Some(0) {
            return Err(Refusal::bad(
                "Contact: * needs Expires: 0 and no other Contact",
            ));
        }
        return Ok(Change::RemoveAll);
    }
    if values.is_empty() {
        return Ok(Change::Query);
    }
    let default = config.default_expires.as_secs();
    let max = config.max_expires.as_secs();
    let min = config.min_expires.as_secs().min(ONE_HOUR);
    let mut requested = Vec::with_capacity(values.len());
    for c in &values {
        let Some(a) = c.address() else { continue };
        let contact = a.uri().as_str();
        let mut expires = None;
        let mut q = None;
        let mut params = String::new();
        for (name, value) in a.params().iter() {
            if name.eq_ignore_ascii_case("expires") {
                if expires.is_none() {
                    expires = Some(expires_param(value).ok_or_else(|| {
                        Refusal::bad("Bad expires parameter in Contact").with_detail(format!(
                            "the expires parameter of <{contact}> must be a number of seconds \
                             from 0 to 4294967295"
                        ))
                    })?);
                }
            } else if name.eq_ignore_ascii_case("q") {
                // The Contact parser has checked the value.
                q = q.or_else(|| c.q());
            } else {
                if !params.is_empty() {
                    params.push(';');
                }
                params.push_str(name);
                if let Some(v) = value {
                    params.push('=');
                    params.push_str(v);
                }
            }
        }
        let asked = expires.or(expires_header).unwrap_or(default);
        if asked > 0 && asked < min {
            let mut refusal = Refusal::new(StatusCode::INTERVAL_TOO_BRIEF, "Interval Too Brief")
                .with_detail(format!(
                    "<{contact}> asks for {asked} s; this registrar keeps bindings {min} s at \
                     least"
                ));
            refusal.0.min_expires = Some(min);
            return Err(refusal);
        }
        requested.push(Requested {
            contact: contact.to_owned(),
            params,
            q,
            expires: asked.min(max),
        });
    }
    Ok(Change::Update(requested))
}

/// The rest of step 6 (`*`) and step 7: the new set, or the refusal.
fn merge(
    registration: &Registration,
    mut current: Vec<Binding>,
    now: Instant,
    config: &Config,
) -> Result<Vec<Binding>, Refusal> {
    current.retain(|b| b.is_live(now));
    let in_order = |b: &Binding| b.call_id != registration.call_id || registration.cseq > b.cseq;
    let requests = match &registration.change {
        Change::Query => return Ok(current),
        Change::RemoveAll => {
            return match current.iter().find(|b| !in_order(b)) {
                Some(b) => Err(out_of_order(b)),
                None => Ok(Vec::new()),
            };
        }
        Change::Update(requests) => requests,
    };
    // Each binding, and whether this request already set it (a contact written twice: the
    // last one wins).
    let mut set: Vec<(Binding, bool)> = current.into_iter().map(|b| (b, false)).collect();
    for r in requests {
        let found = set
            .iter()
            .position(|(b, _)| same_contact(&b.contact, &r.contact));
        if let Some(i) = found
            && !set[i].1
            && !in_order(&set[i].0)
        {
            return Err(out_of_order(&set[i].0));
        }
        let binding = Binding {
            contact: r.contact.clone(),
            params: r.params.clone(),
            q: r.q,
            expires_at: now + Duration::from_secs(r.expires),
            call_id: registration.call_id.clone(),
            cseq: registration.cseq,
        };
        match (found, r.expires) {
            (Some(i), 0) => {
                set.remove(i);
            }
            (Some(i), _) => set[i] = (binding, true),
            (None, 0) => {}
            (None, _) => set.push((binding, true)),
        }
    }
    if set.len() > config.max_bindings_per_aor {
        return Err(too_many_bindings(config.max_bindings_per_aor));
    }
    Ok(set.into_iter().map(|(b, _)| b).collect())
}

fn out_of_order(b: &Binding) -> Refusal {
    Refusal::new(StatusCode::SERVER_INTERNAL_ERROR, "Out of order").with_detail(format!(
        "<{}> was registered with this Call-ID at CSeq {}; a REGISTER with the same Call-ID \
         needs a higher CSeq",
        b.contact, b.cseq
    ))
}

fn too_many_bindings(limit: usize) -> Refusal {
    Refusal::new(
        StatusCode::FORBIDDEN,
        &format!("Too many bindings: at most {limit} per address of record"),
    )
    .with_detail(format!(
        "this registrar keeps at most {limit} contacts per address of record; remove one \
         (expires=0) before adding another"
    ))
}

fn not_served(host: &Host<'_>) -> Refusal {
    Refusal::new(
        StatusCode::NOT_FOUND,
        &format!("Domain {} is not served here", host_text(host)),
    )
}

/// `delta-seconds` that fits in 32 bits (§20.19); anything else is `None`.
fn expires_param(value: Option<&str>) -> Option<u64> {
    let v = value?;
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse::<u32>().ok().map(u64::from)
}

/// A q value in thousandths as written in a header: `1`, `0.5`, `0.333`, `0`.
fn qvalue_text(q: u16) -> String {
    match q {
        0 => "0".into(),
        1000.. => "1".into(),
        _ => {
            let s = format!("0.{q:03}");
            s.trim_end_matches('0').to_owned()
        }
    }
}

/// The host as written in a canonical URI: a domain in lower case without a final dot, an
/// IP address in its canonical text.
fn host_text(host: &Host<'_>) -> String {
    match host {
        Host::Domain(d) => d.trim_end_matches('.').to_ascii_lowercase(),
        other => other.to_string(),
    }
}

fn same_host(a: &Host<'_>, b: &Host<'_>) -> bool {
    match (a, b) {
        (Host::Domain(x), Host::Domain(y)) => x.eq_ignore_ascii_case(y),
        _ => a == b,
    }
}

/// The URI parameters that must match when present in either URI (§19.1.4).
const STRICT_PARAMS: [&str; 5] = ["user", "ttl", "method", "maddr", "transport"];

fn same_uri_params(a: Params<'_>, b: Params<'_>) -> bool {
    let same_value = |x: Option<&str>, y: Option<&str>| match (x, y) {
        (Some(x), Some(y)) => percent_decode(x).eq_ignore_ascii_case(&percent_decode(y)),
        (None, None) => true,
        _ => false,
    };
    let names = a.iter().chain(b.iter()).map(|(n, _)| n);
    for name in names {
        match (a.get(name), b.get(name)) {
            (Some(x), Some(y)) if !same_value(x, y) => return false,
            (Some(_), None) | (None, Some(_))
                if STRICT_PARAMS.iter().any(|s| s.eq_ignore_ascii_case(name)) =>
            {
                return false;
            }
            _ => {}
        }
    }
    true
}

fn same_uri_headers(a: &SipUri<'_>, b: &SipUri<'_>) -> bool {
    let has = |u: &SipUri<'_>, name: &str, value: &str| {
        u.headers().any(|(n, v)| {
            percent_decode(n).eq_ignore_ascii_case(&percent_decode(name))
                && percent_decode(v).eq_ignore_ascii_case(&percent_decode(value))
        })
    };
    a.headers().all(|(n, v)| has(b, n, v)) && b.headers().all(|(n, v)| has(a, n, v))
}

/// `%HH` escapes decoded to bytes; a `%` not followed by two hex digits is kept.
fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(&[h, l]) = b.get(i + 1..i + 3)
            && let (Some(h), Some(l)) = (hex(h), hex(l))
        {
            out.push(h << 4 | l);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

fn hex(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(s: &str) -> Uri<'_> {
        Uri::parse(s).unwrap()
    }

    #[test]
    fn aor_canonical_form() {
        for (written, canonical) in [
            ("sip:alice@example.com", "sip:alice@example.com"),
            ("sips:alice@EXAMPLE.com;user=phone", "sip:alice@example.com"),
            (
                "sip:%61lice:secret@Example.COM:5070",
                "sip:alice@example.com:5070",
            ),
            ("sip:a%40b@example.com?subject=x", "sip:a%40b@example.com"),
            ("sip:a%2fb@example.com.", "sip:a/b@example.com"),
            ("sip:Alice@[2001:DB8::1]", "sip:Alice@[2001:db8::1]"),
            ("sip:example.com", "sip:example.com"),
        ] {
            assert_eq!(aor(&uri(written)).as_deref(), Some(canonical), "{written}");
        }
        assert_eq!(aor(&uri("tel:+1-201-555-0123")), None);
        assert_eq!(aor(&uri("isbn:2983792873")), None);
    }

    #[test]
    fn contacts_compare_by_rfc3261_19_1_4() {
        for (a, b) in [
            (
                "sip:%61lice@atlanta.com;transport=TCP",
                "sip:alice@AtLanTa.CoM;Transport=tcp",
            ),
            ("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5"),
            (
                "sip:carol@chicago.com;security=on",
                "sip:carol@chicago.com;newparam=5",
            ),
            (
                "sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
                "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com",
            ),
            (
                "sip:alice@atlanta.com?subject=project%20x&priority=urgent",
                "sip:alice@atlanta.com?priority=urgent&subject=project%20x",
            ),
            ("mailto:bob@example.com", "MAILTO:bob%40example.com"),
        ] {
            assert!(same_contact(a, b), "{a} = {b}");
        }
        for (a, b) in [
            (
                "SIP:ALICE@AtLanTa.CoM;Transport=udp",
                "sip:alice@AtLanTa.CoM;Transport=UDP",
            ),
            ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"),
            ("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp"),
            (
                "sip:bob@biloxi.com",
                "sip:bob@biloxi.com:6000;transport=tcp",
            ),
            (
                "sip:carol@chicago.com",
                "sip:carol@chicago.com?Subject=next%20meeting",
            ),
            ("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4"),
            (
                "sip:carol@chicago.com;newparam=5",
                "sip:carol@chicago.com;newparam=6",
            ),
            ("sip:a@b", "sips:a@b"),
            ("sip:a@b", "tel:+1"),
        ] {
            assert!(!same_contact(a, b), "{a} != {b}");
        }
    }

    #[test]
    fn q_values_print_short() {
        assert_eq!(qvalue_text(0), "0");
        assert_eq!(qvalue_text(1000), "1");
        assert_eq!(qvalue_text(500), "0.5");
        assert_eq!(qvalue_text(330), "0.33");
        assert_eq!(qvalue_text(7), "0.007");
    }

    #[test]
    fn expires_rounds_up() {
        let now = Instant::now();
        let b = Binding {
            contact: "sip:a@b".into(),
            params: String::new(),
            q: None,
            expires_at: now + Duration::from_millis(1500),
            call_id: "c".into(),
            cseq: 1,
        };
        assert_eq!(b.expires_in(now), 2);
        assert_eq!(b.expires_in(now + Duration::from_millis(1499)), 1);
        assert_eq!(b.expires_in(now + Duration::from_millis(1500)), 0);
        assert!(!b.is_live(now + Duration::from_millis(1500)));
    }
}
