//! How messages find their transaction (RFC 3261 §17.1.3 for responses, §17.2.3 for
//! requests, with the RFC 2543 rules for requests whose branch lacks the magic cookie).

use crate::header::{CSeq, CallId, From, Via};
use crate::{Error, HeaderName, Method, Request, Response};

/// A transaction key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Key {
    /// A client transaction: the branch it put in the top Via, and the CSeq method.
    Client { branch: Box<str>, method: Method },
    /// A server transaction of an RFC 3261 peer: branch, sent-by, and method (an ACK keys
    /// as the INVITE it acknowledges).
    Server {
        branch: Box<str>,
        sent_by: Box<str>,
        method: Method,
    },
    /// A server transaction of an RFC 2543 peer (no magic cookie): Call-ID, CSeq number,
    /// From tag and top Via. The Request-URI and To tag that §17.2.3 also lists are left
    /// out: they only tell apart requests that these already tell apart, except for the ACK,
    /// whose To tag is the one this element chose.
    Rfc2543 {
        call_id: Box<str>,
        cseq: u32,
        from_tag: Box<str>,
        via: Box<str>,
        method: Method,
    },
}

impl Key {
    /// The key of a client transaction for `request`, which must have an RFC 3261 branch.
    pub(crate) fn client_for_request(request: &Request) -> Result<Key, Error> {
        let via = top_via(request.headers())?;
        if !via.has_rfc3261_branch() {
            return Err(Error::NoBranch);
        }
        let branch = via.branch().unwrap_or_default().into();
        Ok(Key::Client {
            branch,
            method: request.method().clone(),
        })
    }

    /// The key of the client transaction a response belongs to.
    pub(crate) fn client_for_response(response: &Response) -> Result<Key, Error> {
        let via = top_via(response.headers())?;
        let branch = via.branch().ok_or(Error::NoBranch)?.into();
        let cseq = typed::<CSeq>(response.headers(), "CSeq")?;
        Ok(Key::Client {
            branch,
            method: cseq.method(),
        })
    }

    /// The key of the server transaction a request belongs to.
    pub(crate) fn server_for_request(request: &Request) -> Result<Key, Error> {
        let method = match request.method() {
            Method::Ack => Method::Invite,
            m => m.clone(),
        };
        let h = request.headers();
        let via = top_via(h)?;
        if via.has_rfc3261_branch() {
            let host = via.host().to_string().to_ascii_lowercase();
            let sent_by = format!("{host}:{}", via.port().unwrap_or(0)).into();
            let branch = via.branch().unwrap_or_default().into();
            return Ok(Key::Server {
                branch,
                sent_by,
                method,
            });
        }
        let call_id = typed::<CallId>(h, "Call-ID")?.0.into();
        let cseq = typed::<CSeq>(h, "CSeq")?.seq();
        let from_tag = typed::<From>(h, "From")?.tag().unwrap_or_default().into();
        let via = crate::text::ascii(crate::text::first_element(
            h.get(HeaderName::Via).unwrap_or_default(),
        ))
        .into();
        Ok(Key::Rfc2543 {
            call_id,
            cseq,
            from_tag,
            via,
            method,
        })
    }

    /// The same key for another method: a CANCEL's key with INVITE finds what it cancels.
    pub(crate) fn with_method(self, method: Method) -> Key {
        match self {
            Key::Client { branch, .. } => Key::Client { branch, method },
            Key::Server {
                branch, sent_by, ..
            } => Key::Server {
                branch,
                sent_by,
                method,
            },
            Key::Rfc2543 {
                call_id,
                cseq,
                from_tag,
                via,
                ..
            } => Key::Rfc2543 {
                call_id,
                cseq,
                from_tag,
                via,
                method,
            },
        }
    }

    /// The branch, for messages ("" for an RFC 2543 key).
    pub(crate) fn branch(&self) -> &str {
        match self {
            Key::Client { branch, .. } | Key::Server { branch, .. } => branch,
            Key::Rfc2543 { .. } => "",
        }
    }
}

fn top_via(h: &crate::Headers) -> Result<Via<'_>, Error> {
    typed::<Via>(h, "Via")
}

fn typed<'a, H: crate::header::TypedHeader<'a>>(
    h: &'a crate::Headers,
    name: &'static str,
) -> Result<H, Error> {
    h.typed::<H>()
        .ok_or(Error::MissingHeaders { names: vec![name] })?
}
