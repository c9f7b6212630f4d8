//! What an element answers to a request it cannot or will not take: the checks of RFC 3261
//! §8.2 (UAS) and §16.3 (proxy) on a parsed request, and the answer to a request that did
//! not parse at all (RFC 4475 §3.1.2 and §3.3).

use bytes::Bytes;

use crate::header::{
    Accept, Allow, Authorization, CSeq, CallId, Contact, ContentType, Date, Event, Expires, From,
    MaxForwards, MinExpires, ProxyAuthorization, ProxyRequire, RecordRoute, Require, Route,
    SubscriptionState, Supported, To, TypedHeader, Unsupported, Via,
};
use crate::message::Version;
use crate::{Error, HeaderName, Headers, Method, Request, Response, StatusCode};

/// Which part of RFC 3261 an element plays for a request, for [`check_request`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A UAS or registrar (§8.2): checks Require (420), the body type (415) and Accept (406).
    Uas,
    /// A proxy (§16.3): checks Max-Forwards (483) and Proxy-Require (420); the body is not its
    /// business.
    Proxy,
}

/// What this element serves, for [`check_request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The part the element plays. Default: [`Role::Proxy`] (a p2psip node proxies for its
    /// users; its built-in user agent checks as a [`Role::Uas`]).
    pub role: Role,
    /// Request-URI schemes served; others get 416. Default: `sip`, `sips`.
    pub schemes: Vec<String>,
    /// Option tags supported; a Require (UAS) or Proxy-Require (proxy) naming another gets
    /// 420. Default: none.
    pub supported: Vec<String>,
    /// Body types a UAS understands, `type/subtype`; a request body of another type gets 415.
    /// Default: `application/sdp`, `text/plain`.
    pub accept: Vec<String>,
    /// The warn-agent of the Warning header that carries the detail of a refusal.
    /// Default: `p2psip`.
    pub agent: String,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            role: Role::Proxy,
            schemes: vec!["sip".into(), "sips".into()],
            supported: Vec::new(),
            accept: vec!["application/sdp".into(), "text/plain".into()],
            agent: "p2psip".into(),
        }
    }
}

impl Policy {
    /// The default policy in the given role.
    pub fn with_role(role: Role) -> Policy {
        Policy {
            role,
            ..Policy::default()
        }
    }
}

/// A refusal: the status, a reason phrase that names the fault, and what the response must
/// carry besides (RFC 3261 §8.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The status code.
    pub status: StatusCode,
    /// The reason phrase, naming the fault ("Bad CSeq header").
    pub reason: String,
    /// The whole story, sent in a `Warning: 399` header.
    pub detail: Option<String>,
    /// For 420: the option tags not supported, sent in `Unsupported`.
    pub unsupported: Vec<String>,
    /// For 415: the body types accepted, sent in `Accept`.
    pub accept: Vec<String>,
}

/// Checks a request as a UAS or proxy must before acting on it: protocol version (505),
/// mandatory and single-valued headers and the grammar of every typed header (400), CSeq
/// method (400), Request-URI grammar (400) and scheme (416); then, by [`Role`], for a proxy
/// Max-Forwards (483) and Proxy-Require (420), for a UAS Require (420), the body type (415)
/// and Accept for an INVITE (406).
pub fn check_request(req: &Request, policy: &Policy) -> Result<(), Rejection> {
    if req.version() != Version::SIP_2_0 {
        return Err(
            Rejection::new(StatusCode::VERSION_NOT_SUPPORTED, "Version Not Supported").with_detail(
                format!("this element speaks SIP/2.0, not {}", req.version()),
            ),
        );
    }
    let h = req.headers();
    validate_headers(h).map_err(|e| Rejection::from_error(&e))?;
    let reject = |e: Error| Rejection::from_error(&e);
    let cseq = first::<CSeq>(h).map_err(reject)?;
    if cseq.is_some_and(|c| !c.is(req.method())) {
        return Err(Rejection::new(
            StatusCode::BAD_REQUEST,
            "CSeq method does not match the request method",
        ));
    }
    let uri = req.uri().map_err(reject)?;
    if uri.as_sip().is_some_and(|u| u.has_headers()) {
        return Err(Rejection::new(
            StatusCode::BAD_REQUEST,
            "Request-URI must not carry headers",
        )
        .with_detail("RFC 3261 §19.1.1 forbids URI headers in a Request-URI".into()));
    }
    if !policy
        .schemes
        .iter()
        .any(|s| s.eq_ignore_ascii_case(uri.scheme()))
    {
        return Err(
            Rejection::new(StatusCode::UNSUPPORTED_URI_SCHEME, "Unsupported URI Scheme")
                .with_detail(format!(
                    "this element does not serve '{}:' URIs",
                    uri.scheme()
                )),
        );
    }
    match policy.role {
        Role::Proxy => check_as_proxy(req, policy),
        Role::Uas => check_as_uas(req, policy),
    }
}

/// §16.3 steps 3 and 5.
fn check_as_proxy(req: &Request, policy: &Policy) -> Result<(), Rejection> {
    let h = req.headers();
    if first::<MaxForwards>(h).map_err(|e| Rejection::from_error(&e))? == Some(MaxForwards(0)) {
        return Err(Rejection::new(StatusCode::TOO_MANY_HOPS, "Too Many Hops"));
    }
    let tags = h.typed_all::<ProxyRequire>().flatten().map(|r| r.0);
    unsupported(tags, policy)
}

/// §8.2.2.3, §8.2.3 and the Accept rule of §8.2.3 / RFC 4475 §3.3.15.
fn check_as_uas(req: &Request, policy: &Policy) -> Result<(), Rejection> {
    let h = req.headers();
    if !matches!(req.method(), Method::Ack | Method::Cancel) {
        unsupported(h.typed_all::<Require>().flatten().map(|r| r.0), policy)?;
    }
    if !req.body().is_empty() {
        let ct = first::<ContentType>(h).map_err(|e| Rejection::from_error(&e))?;
        let Some(ct) = ct else {
            return Err(Rejection::new(
                StatusCode::BAD_REQUEST,
                "Missing Content-Type header for the body",
            ));
        };
        let understood = policy
            .accept
            .iter()
            .any(|a| a.split_once('/').is_some_and(|(t, s)| ct.0.is(t, s)));
        if !understood {
            return Err(Rejection {
                accept: policy.accept.clone(),
                ..Rejection::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "Unsupported Media Type")
                    .with_detail(format!(
                        "cannot read a {}/{} body",
                        ct.0.ty(),
                        ct.0.subtype()
                    ))
            });
        }
    }
    if *req.method() == Method::Invite && h.contains(HeaderName::Accept) {
        let sdp_ok = h
            .typed_all::<Accept>()
            .flatten()
            .any(|a| a.0.covers("application", "sdp"));
        if !sdp_ok {
            return Err(
                Rejection::new(StatusCode::NOT_ACCEPTABLE, "Not Acceptable").with_detail(
                    "the answer to an INVITE carries application/sdp, which Accept excludes".into(),
                ),
            );
        }
    }
    Ok(())
}

/// 420 Bad Extension listing the option tags in `tags` that the policy does not support.
fn unsupported<'a>(tags: impl Iterator<Item = &'a str>, policy: &Policy) -> Result<(), Rejection> {
    let unsupported: Vec<String> = tags
        .filter(|t| !policy.supported.iter().any(|s| s.eq_ignore_ascii_case(t)))
        .map(Into::into)
        .collect();
    if unsupported.is_empty() {
        return Ok(());
    }
    Err(Rejection {
        unsupported,
        ..Rejection::new(StatusCode::BAD_EXTENSION, "Bad Extension")
    })
}
/// Checks a response before a transaction sees it: the mandatory headers and the grammar of
/// the typed ones. A response that fails is dropped, never answered (RFC 4475 §3.1.2).
pub fn check_response(resp: &Response) -> Result<(), Error> {
    if resp.version() != Version::SIP_2_0 {
        return Err(Error::StartLine {
            expected: "SIP/2.0 in the status line",
        });
    }
    validate_headers(resp.headers())
}

/// The headers every message must carry, those that take one value, and the grammar of
/// every header this crate types.
fn validate_headers(h: &Headers) -> Result<(), Error> {
    let mut missing = Vec::new();
    for name in [
        HeaderName::CallId,
        HeaderName::CSeq,
        HeaderName::From,
        HeaderName::To,
        HeaderName::Via,
    ] {
        if !h.contains(name) {
            missing.push(name.as_str());
        }
    }
    if !missing.is_empty() {
        return Err(Error::MissingHeaders { names: missing });
    }
    for name in [
        HeaderName::CallId,
        HeaderName::CSeq,
        HeaderName::From,
        HeaderName::To,
        HeaderName::MaxForwards,
        HeaderName::ContentLength,
        HeaderName::ContentType,
        HeaderName::Expires,
        HeaderName::MinExpires,
        HeaderName::Date,
        HeaderName::Event,
        HeaderName::SubscriptionState,
    ] {
        if let Some(second) = h.get_all(name).nth(1) {
            return Err(Error::RepeatedHeader {
                name: name.as_str(),
                line: second.line,
            });
        }
    }
    all::<Via>(h)?;
    first::<From>(h)?;
    first::<To>(h)?;
    first::<CallId>(h)?;
    first::<CSeq>(h)?;
    first::<MaxForwards>(h)?;
    first::<ContentType>(h)?;
    first::<Expires>(h)?;
    first::<MinExpires>(h)?;
    first::<Date>(h)?;
    first::<Event>(h)?;
    first::<SubscriptionState>(h)?;
    all::<Contact>(h)?;
    all::<Route>(h)?;
    all::<RecordRoute>(h)?;
    all::<Require>(h)?;
    all::<ProxyRequire>(h)?;
    all::<Supported>(h)?;
    all::<Unsupported>(h)?;
    all::<Accept>(h)?;
    all::<Allow>(h)?;
    all::<Authorization>(h)?;
    all::<ProxyAuthorization>(h)?;
    Ok(())
}

fn first<'a, H: TypedHeader<'a>>(h: &'a Headers) -> Result<Option<H>, Error> {
    h.typed::<H>().transpose()
}

fn all<'a, H: TypedHeader<'a>>(h: &'a Headers) -> Result<(), Error> {
    h.typed_all::<H>().try_for_each(|r| r.map(drop))
}

impl Rejection {
    /// A rejection with a status and reason phrase and nothing else.
    pub fn new(status: StatusCode, reason: &str) -> Rejection {
        Rejection {
            status,
            reason: reason.into(),
            detail: None,
            unsupported: Vec::new(),
            accept: Vec::new(),
        }
    }

    /// Adds the detail sent in the Warning header.
    pub fn with_detail(mut self, detail: String) -> Rejection {
        self.detail = Some(detail);
        self
    }

    /// The answer to a message that failed to parse or validate: 513 for a message over the
    /// size limit, 400 otherwise, with a reason phrase that names the fault and the whole
    /// error in a Warning.
    pub fn from_error(e: &Error) -> Rejection {
        let reason = match e {
            Error::TooLarge { .. } => {
                return Rejection::new(
                    StatusCode::new(513).unwrap_or(StatusCode::BAD_REQUEST),
                    "Message Too Large",
                )
                .with_detail(e.to_string());
            }
            Error::TooManyHeaders { .. } => "Too many header fields".into(),
            Error::LineTooLong { .. } => "Header line too long".into(),
            Error::StartLine { .. } => "Malformed start line".into(),
            Error::HeaderLine { .. } => "Malformed header line".into(),
            Error::Unterminated => "Header section not terminated".into(),
            Error::ContentLength { .. } => "Bad Content-Length".into(),
            Error::Truncated { .. } => "Body shorter than Content-Length".into(),
            Error::MissingHeaders { names } => format!("Missing {}", names.join(", ")),
            Error::RepeatedHeader { name, .. } => format!("Multiple {name} headers"),
            Error::Field { field, .. } if field.contains("URI") => format!("Bad {field}"),
            Error::Field { field, .. } => format!("Bad {field} header"),
            // Transaction-layer errors never come from a received message.
            _ => "Bad Request".into(),
        };
        Rejection::new(StatusCode::BAD_REQUEST, &reason).with_detail(e.to_string())
    }

    /// The response to `req`: Via, From, To (with `to_tag` added if it has none), Call-ID
    /// and CSeq copied (RFC 3261 §8.2.6), then Warning, Unsupported or Accept as needed.
    pub fn response(&self, req: &Request, to_tag: Option<&str>, policy: &Policy) -> Response {
        let fields = req.headers().iter().map(|f| (f.name, f.value));
        self.build(fields, to_tag, policy)
    }

    /// The response to a request that did not parse, built from whatever Via, From, To,
    /// Call-ID and CSeq lines can be found in `raw`. `None` if `raw` is a response (never
    /// answered) or has no Via to answer to.
    pub fn response_to_raw(
        &self,
        raw: &[u8],
        to_tag: Option<&str>,
        policy: &Policy,
    ) -> Option<Response> {
        let raw = &raw[raw
            .iter()
            .take_while(|&&b| b == b'\r' || b == b'\n')
            .count()..];
        if raw.len() >= 4 && raw[..4].eq_ignore_ascii_case(b"SIP/") {
            return None;
        }
        let fields = raw
            .split(|&b| b == b'\n')
            .skip(1)
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
            .take_while(|l| !l.is_empty())
            .filter(|l| !matches!(l.first(), Some(b' ' | b'\t')))
            .filter_map(|l| {
                let colon = memchr::memchr(b':', l)?;
                let name = HeaderName::from_bytes(crate::text::trim_lws(&l[..colon]));
                Some((name, crate::text::trim_lws(&l[colon + 1..])))
            });
        let resp = self.build(fields, to_tag, policy);
        resp.headers().contains(HeaderName::Via).then_some(resp)
    }

    fn build<'a>(
        &self,
        fields: impl Iterator<Item = (HeaderName, &'a [u8])>,
        to_tag: Option<&str>,
        policy: &Policy,
    ) -> Response {
        let mut resp = Response::new(self.status, &self.reason);
        let out = resp.headers_mut();
        crate::message::copy_for_response(fields, out, to_tag, self.status);
        if let Some(detail) = &self.detail {
            let text = detail.replace('\\', "\\\\").replace('"', "\\\"");
            out.push(
                HeaderName::Warning,
                format!("399 {} \"{}\"", policy.agent, text),
            );
        }
        if !self.unsupported.is_empty() {
            out.push(HeaderName::Unsupported, self.unsupported.join(", "));
        }
        if !self.accept.is_empty() {
            out.push(HeaderName::Accept, self.accept.join(", "));
        }
        out.push(HeaderName::ContentLength, Bytes::from_static(b"0"));
        resp
    }
}
