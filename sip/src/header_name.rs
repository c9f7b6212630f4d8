//! Header field names: the ones this crate knows, with their compact forms, and any other.

use std::fmt;

/// The name of a header field. Known names are matched case-insensitively, compact forms
/// (RFC 3261 §7.3.3 and later RFCs) included; anything else is [`HeaderName::Other`] and keeps
/// its spelling in the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HeaderName {
    /// `Accept`
    Accept,
    /// `Accept-Contact` (compact `a`)
    AcceptContact,
    /// `Accept-Encoding`
    AcceptEncoding,
    /// `Accept-Language`
    AcceptLanguage,
    /// `Alert-Info`
    AlertInfo,
    /// `Allow`
    Allow,
    /// `Allow-Events` (compact `u`)
    AllowEvents,
    /// `Authentication-Info`
    AuthenticationInfo,
    /// `Authorization`
    Authorization,
    /// `Call-ID` (compact `i`)
    CallId,
    /// `Call-Info`
    CallInfo,
    /// `Contact` (compact `m`)
    Contact,
    /// `Content-Disposition`
    ContentDisposition,
    /// `Content-Encoding` (compact `e`)
    ContentEncoding,
    /// `Content-Language`
    ContentLanguage,
    /// `Content-Length` (compact `l`)
    ContentLength,
    /// `Content-Type` (compact `c`)
    ContentType,
    /// `CSeq`
    CSeq,
    /// `Date`
    Date,
    /// `Error-Info`
    ErrorInfo,
    /// `Event` (compact `o`)
    Event,
    /// `Expires`
    Expires,
    /// `From` (compact `f`)
    From,
    /// `In-Reply-To`
    InReplyTo,
    /// `Max-Forwards`
    MaxForwards,
    /// `MIME-Version`
    MimeVersion,
    /// `Min-Expires`
    MinExpires,
    /// `Min-SE`
    MinSe,
    /// `Organization`
    Organization,
    /// `Path`
    Path,
    /// `Priority`
    Priority,
    /// `Proxy-Authenticate`
    ProxyAuthenticate,
    /// `Proxy-Authorization`
    ProxyAuthorization,
    /// `Proxy-Require`
    ProxyRequire,
    /// `RAck`
    RAck,
    /// `Reason`
    Reason,
    /// `Record-Route`
    RecordRoute,
    /// `Refer-To` (compact `r`)
    ReferTo,
    /// `Referred-By` (compact `b`)
    ReferredBy,
    /// `Reject-Contact` (compact `j`)
    RejectContact,
    /// `Reply-To`
    ReplyTo,
    /// `Request-Disposition` (compact `d`)
    RequestDisposition,
    /// `Require`
    Require,
    /// `Retry-After`
    RetryAfter,
    /// `Route`
    Route,
    /// `RSeq`
    RSeq,
    /// `Server`
    Server,
    /// `Service-Route`
    ServiceRoute,
    /// `Session-Expires` (compact `x`)
    SessionExpires,
    /// `Subject` (compact `s`)
    Subject,
    /// `Subscription-State`
    SubscriptionState,
    /// `Supported` (compact `k`)
    Supported,
    /// `Timestamp`
    Timestamp,
    /// `To` (compact `t`)
    To,
    /// `Unsupported`
    Unsupported,
    /// `User-Agent`
    UserAgent,
    /// `Via` (compact `v`)
    Via,
    /// `Warning`
    Warning,
    /// `WWW-Authenticate`
    WwwAuthenticate,
    /// An extension header; its name is in the message.
    Other,
}

impl HeaderName {
    /// Every known header name (not [`HeaderName::Other`]).
    pub const ALL: &'static [HeaderName] = &[
        HeaderName::Accept,
        HeaderName::AcceptContact,
        HeaderName::AcceptEncoding,
        HeaderName::AcceptLanguage,
        HeaderName::AlertInfo,
        HeaderName::Allow,
        HeaderName::AllowEvents,
        HeaderName::AuthenticationInfo,
        HeaderName::Authorization,
        HeaderName::CallId,
        HeaderName::CallInfo,
        HeaderName::Contact,
        HeaderName::ContentDisposition,
        HeaderName::ContentEncoding,
        HeaderName::ContentLanguage,
        HeaderName::ContentLength,
        HeaderName::ContentType,
        HeaderName::CSeq,
        HeaderName::Date,
        HeaderName::ErrorInfo,
        HeaderName::Event,
        HeaderName::Expires,
        HeaderName::From,
        HeaderName::InReplyTo,
        HeaderName::MaxForwards,
        HeaderName::MimeVersion,
        HeaderName::MinExpires,
        HeaderName::MinSe,
        HeaderName::Organization,
        HeaderName::Path,
        HeaderName::Priority,
        HeaderName::ProxyAuthenticate,
        HeaderName::ProxyAuthorization,
        HeaderName::ProxyRequire,
        HeaderName::RAck,
        HeaderName::Reason,
        HeaderName::RecordRoute,
        HeaderName::ReferTo,
        HeaderName::ReferredBy,
        HeaderName::RejectContact,
        HeaderName::ReplyTo,
        HeaderName::RequestDisposition,
        HeaderName::Require,
        HeaderName::RetryAfter,
        HeaderName::Route,
        HeaderName::RSeq,
        HeaderName::Server,
        HeaderName::ServiceRoute,
        HeaderName::SessionExpires,
        HeaderName::Subject,
        HeaderName::SubscriptionState,
        HeaderName::Supported,
        HeaderName::Timestamp,
        HeaderName::To,
        HeaderName::Unsupported,
        HeaderName::UserAgent,
        HeaderName::Via,
        HeaderName::Warning,
        HeaderName::WwwAuthenticate,
    ];

    /// Classifies a header name as it appears in a message (any case, compact or full).
    pub fn from_bytes(name: &[u8]) -> HeaderName {
        let Some(&first) = name.first() else {
            return HeaderName::Other;
        };
        if name.len() == 1 {
            return Self::from_compact(first);
        }
        // Dispatch on length and first letter, then compare with the lower-case spelling: no
        // copy, and at most a few comparisons per name.
        let candidates: &[(HeaderName, &[u8])] = match (name.len(), first.to_ascii_lowercase()) {
            (2, b't') => &[(HeaderName::To, b"to")],
            (3, b'v') => &[(HeaderName::Via, b"via")],
            (4, b'c') => &[(HeaderName::CSeq, b"cseq")],
            (4, b'd') => &[(HeaderName::Date, b"date")],
            (4, b'f') => &[(HeaderName::From, b"from")],
            (4, b'p') => &[(HeaderName::Path, b"path")],
            (4, b'r') => &[(HeaderName::RAck, b"rack"), (HeaderName::RSeq, b"rseq")],
            (5, b'a') => &[(HeaderName::Allow, b"allow")],
            (5, b'e') => &[(HeaderName::Event, b"event")],
            (5, b'r') => &[(HeaderName::Route, b"route")],
            (6, b'a') => &[(HeaderName::Accept, b"accept")],
            (6, b'm') => &[(HeaderName::MinSe, b"min-se")],
            (6, b'r') => &[(HeaderName::Reason, b"reason")],
            (6, b's') => &[(HeaderName::Server, b"server")],
            (7, b'c') => &[
                (HeaderName::CallId, b"call-id"),
                (HeaderName::Contact, b"contact"),
            ],
            (7, b'e') => &[(HeaderName::Expires, b"expires")],
            (7, b'r') => &[(HeaderName::Require, b"require")],
            (7, b's') => &[(HeaderName::Subject, b"subject")],
            (7, b'w') => &[(HeaderName::Warning, b"warning")],
            (8, b'p') => &[(HeaderName::Priority, b"priority")],
            (8, b'r') => &[
                (HeaderName::ReferTo, b"refer-to"),
                (HeaderName::ReplyTo, b"reply-to"),
            ],
            (9, b'c') => &[(HeaderName::CallInfo, b"call-info")],
            (9, b's') => &[(HeaderName::Supported, b"supported")],
            (9, b't') => &[(HeaderName::Timestamp, b"timestamp")],
            (10, b'a') => &[(HeaderName::AlertInfo, b"alert-info")],
            (10, b'e') => &[(HeaderName::ErrorInfo, b"error-info")],
            (10, b'u') => &[(HeaderName::UserAgent, b"user-agent")],
            (11, b'i') => &[(HeaderName::InReplyTo, b"in-reply-to")],
            (11, b'm') => &[(HeaderName::MinExpires, b"min-expires")],
            (11, b'r') => &[
                (HeaderName::ReferredBy, b"referred-by"),
                (HeaderName::RetryAfter, b"retry-after"),
            ],
            (11, b'u') => &[(HeaderName::Unsupported, b"unsupported")],
            (12, b'a') => &[(HeaderName::AllowEvents, b"allow-events")],
            (12, b'c') => &[(HeaderName::ContentType, b"content-type")],
            (12, b'm') => &[
                (HeaderName::MaxForwards, b"max-forwards"),
                (HeaderName::MimeVersion, b"mime-version"),
            ],
            (12, b'o') => &[(HeaderName::Organization, b"organization")],
            (12, b'r') => &[(HeaderName::RecordRoute, b"record-route")],
            (13, b'a') => &[(HeaderName::Authorization, b"authorization")],
            (13, b'p') => &[(HeaderName::ProxyRequire, b"proxy-require")],
            (13, b's') => &[(HeaderName::ServiceRoute, b"service-route")],
            (14, b'a') => &[(HeaderName::AcceptContact, b"accept-contact")],
            (14, b'c') => &[(HeaderName::ContentLength, b"content-length")],
            (14, b'r') => &[(HeaderName::RejectContact, b"reject-contact")],
            (15, b'a') => &[
                (HeaderName::AcceptEncoding, b"accept-encoding"),
                (HeaderName::AcceptLanguage, b"accept-language"),
            ],
            (15, b's') => &[(HeaderName::SessionExpires, b"session-expires")],
            (16, b'c') => &[
                (HeaderName::ContentEncoding, b"content-encoding"),
                (HeaderName::ContentLanguage, b"content-language"),
            ],
            (16, b'w') => &[(HeaderName::WwwAuthenticate, b"www-authenticate")],
            (18, b'p') => &[(HeaderName::ProxyAuthenticate, b"proxy-authenticate")],
            (18, b's') => &[(HeaderName::SubscriptionState, b"subscription-state")],
            (19, b'a') => &[(HeaderName::AuthenticationInfo, b"authentication-info")],
            (19, b'c') => &[(HeaderName::ContentDisposition, b"content-disposition")],
            (19, b'p') => &[(HeaderName::ProxyAuthorization, b"proxy-authorization")],
            (19, b'r') => &[(HeaderName::RequestDisposition, b"request-disposition")],
            _ => return HeaderName::Other,
        };
        candidates
            .iter()
            .find(|(_, lower)| folds_to(name, lower))
            .map_or(HeaderName::Other, |&(h, _)| h)
    }

    fn from_compact(c: u8) -> HeaderName {
        match c.to_ascii_lowercase() {
            b'a' => HeaderName::AcceptContact,
            b'u' => HeaderName::AllowEvents,
            b'i' => HeaderName::CallId,
            b'm' => HeaderName::Contact,
            b'e' => HeaderName::ContentEncoding,
            b'l' => HeaderName::ContentLength,
            b'c' => HeaderName::ContentType,
            b'o' => HeaderName::Event,
            b'f' => HeaderName::From,
            b'r' => HeaderName::ReferTo,
            b'b' => HeaderName::ReferredBy,
            b'j' => HeaderName::RejectContact,
            b'd' => HeaderName::RequestDisposition,
            b'x' => HeaderName::SessionExpires,
            b's' => HeaderName::Subject,
            b'k' => HeaderName::Supported,
            b't' => HeaderName::To,
            b'v' => HeaderName::Via,
            _ => HeaderName::Other,
        }
    }

    /// The canonical spelling ("" for [`HeaderName::Other`]).
    pub const fn as_str(self) -> &'static str {
        match self {
            HeaderName::Accept => "Accept",
            HeaderName::AcceptContact => "Accept-Contact",
            HeaderName::AcceptEncoding => "Accept-Encoding",
            HeaderName::AcceptLanguage => "Accept-Language",
            HeaderName::AlertInfo => "Alert-Info",
            HeaderName::Allow => "Allow",
            HeaderName::AllowEvents => "Allow-Events",
            HeaderName::AuthenticationInfo => "Authentication-Info",
            HeaderName::Authorization => "Authorization",
            HeaderName::CallId => "Call-ID",
            HeaderName::CallInfo => "Call-Info",
            HeaderName::Contact => "Contact",
            HeaderName::ContentDisposition => "Content-Disposition",
            HeaderName::ContentEncoding => "Content-Encoding",
            HeaderName::ContentLanguage => "Content-Language",
            HeaderName::ContentLength => "Content-Length",
            HeaderName::ContentType => "Content-Type",
            HeaderName::CSeq => "CSeq",
            HeaderName::Date => "Date",
            HeaderName::ErrorInfo => "Error-Info",
            HeaderName::Event => "Event",
            HeaderName::Expires => "Expires",
            HeaderName::From => "From",
            HeaderName::InReplyTo => "In-Reply-To",
            HeaderName::MaxForwards => "Max-Forwards",
            HeaderName::MimeVersion => "MIME-Version",
            HeaderName::MinExpires => "Min-Expires",
            HeaderName::MinSe => "Min-SE",
            HeaderName::Organization => "Organization",
            HeaderName::Path => "Path",
            HeaderName::Priority => "Priority",
            HeaderName::ProxyAuthenticate => "Proxy-Authenticate",
            HeaderName::ProxyAuthorization => "Proxy-Authorization",
            HeaderName::ProxyRequire => "Proxy-Require",
            HeaderName::RAck => "RAck",
            HeaderName::Reason => "Reason",
            HeaderName::RecordRoute => "Record-Route",
            HeaderName::ReferTo => "Refer-To",
            HeaderName::ReferredBy => "Referred-By",
            HeaderName::RejectContact => "Reject-Contact",
            HeaderName::ReplyTo => "Reply-To",
            HeaderName::RequestDisposition => "Request-Disposition",
            HeaderName::Require => "Require",
            HeaderName::RetryAfter => "Retry-After",
            HeaderName::Route => "Route",
            HeaderName::RSeq => "RSeq",
            HeaderName::Server => "Server",
            HeaderName::ServiceRoute => "Service-Route",
            HeaderName::SessionExpires => "Session-Expires",
            HeaderName::Subject => "Subject",
            HeaderName::SubscriptionState => "Subscription-State",
            HeaderName::Supported => "Supported",
            HeaderName::Timestamp => "Timestamp",
            HeaderName::To => "To",
            HeaderName::Unsupported => "Unsupported",
            HeaderName::UserAgent => "User-Agent",
            HeaderName::Via => "Via",
            HeaderName::Warning => "Warning",
            HeaderName::WwwAuthenticate => "WWW-Authenticate",
            HeaderName::Other => "",
        }
    }

    /// The compact form, if the header has one.
    pub const fn compact(self) -> Option<&'static str> {
        match self {
            HeaderName::AcceptContact => Some("a"),
            HeaderName::AllowEvents => Some("u"),
            HeaderName::CallId => Some("i"),
            HeaderName::Contact => Some("m"),
            HeaderName::ContentEncoding => Some("e"),
            HeaderName::ContentLength => Some("l"),
            HeaderName::ContentType => Some("c"),
            HeaderName::Event => Some("o"),
            HeaderName::From => Some("f"),
            HeaderName::ReferTo => Some("r"),
            HeaderName::ReferredBy => Some("b"),
            HeaderName::RejectContact => Some("j"),
            HeaderName::RequestDisposition => Some("d"),
            HeaderName::SessionExpires => Some("x"),
            HeaderName::Subject => Some("s"),
            HeaderName::Supported => Some("k"),
            HeaderName::To => Some("t"),
            HeaderName::Via => Some("v"),
            _ => None,
        }
    }

    /// Whether the header's grammar is a comma-separated list, so that several values may
    /// share one line (RFC 3261 §7.3.1).
    pub const fn is_list(self) -> bool {
        matches!(
            self,
            HeaderName::Accept
                | HeaderName::AcceptContact
                | HeaderName::AcceptEncoding
                | HeaderName::AcceptLanguage
                | HeaderName::AlertInfo
                | HeaderName::Allow
                | HeaderName::AllowEvents
                | HeaderName::CallInfo
                | HeaderName::Contact
                | HeaderName::ContentEncoding
                | HeaderName::ContentLanguage
                | HeaderName::ErrorInfo
                | HeaderName::InReplyTo
                | HeaderName::Path
                | HeaderName::ProxyRequire
                | HeaderName::Reason
                | HeaderName::RecordRoute
                | HeaderName::RejectContact
                | HeaderName::RequestDisposition
                | HeaderName::Require
                | HeaderName::Route
                | HeaderName::ServiceRoute
                | HeaderName::Supported
                | HeaderName::Unsupported
                | HeaderName::Via
                | HeaderName::Warning
        )
    }
}

/// Whether `name` is `lower` (letters, digits and '-') in any case: each byte must equal its
/// counterpart, or differ only in the case bit where the counterpart is a letter (bit 0x40
/// set). Exact for any input, and branch-free, so it vectorizes.
fn folds_to(name: &[u8], lower: &[u8]) -> bool {
    name.len() == lower.len()
        && name
            .iter()
            .zip(lower)
            .fold(0, |acc, (a, b)| acc | ((a ^ b) & !((b & 0x40) >> 1)))
            == 0
}

impl fmt::Display for HeaderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_name_round_trips_in_any_case() {
        for &name in HeaderName::ALL {
            assert_eq!(HeaderName::from_bytes(name.as_str().as_bytes()), name);
            assert_eq!(
                HeaderName::from_bytes(name.as_str().to_uppercase().as_bytes()),
                name
            );
            if let Some(c) = name.compact() {
                assert_eq!(HeaderName::from_bytes(c.to_uppercase().as_bytes()), name);
            }
        }
        assert_eq!(HeaderName::from_bytes(b"X-Custom"), HeaderName::Other);
        assert_eq!(HeaderName::from_bytes(b"q"), HeaderName::Other);
    }
}
