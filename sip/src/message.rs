//! Requests, responses and their printer.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use crate::parse::{self, Limits};
use crate::uri::Uri;
use crate::{Error, HeaderName, Headers, Method, StatusCode};

/// The protocol version of a message, `SIP/major.minor`. Only 2.0 is spoken; others parse so
/// that a request can be answered 505 Version Not Supported (RFC 3261 §21.5.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Version {
    /// The major number.
    pub major: u32,
    /// The minor number.
    pub minor: u32,
}

impl Version {
    /// SIP/2.0
    pub const SIP_2_0: Version = Version { major: 2, minor: 0 };
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SIP/{}.{}", self.major, self.minor)
    }
}

/// A SIP request.
#[derive(Clone)]
pub struct Request {
    pub(crate) method: Method,
    pub(crate) uri: Bytes,
    pub(crate) version: Version,
    pub(crate) headers: Headers,
    pub(crate) body: Bytes,
}

/// A SIP response.
#[derive(Clone)]
pub struct Response {
    pub(crate) version: Version,
    pub(crate) status: StatusCode,
    pub(crate) reason: Bytes,
    pub(crate) headers: Headers,
    pub(crate) body: Bytes,
}

/// A SIP message: a request or a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A request.
    Request(Request),
    /// A response.
    Response(Response),
}

impl Message {
    /// Parses one datagram (UDP) with the default [`Limits`]: the body runs to the end of the
    /// datagram, or to Content-Length if the message has one (RFC 3261 §18.3).
    pub fn parse(datagram: impl Into<Bytes>) -> Result<Message, Error> {
        parse::datagram(datagram.into(), &Limits::default())
    }

    /// Parses one datagram with the given limits.
    pub fn parse_with(datagram: impl Into<Bytes>, limits: &Limits) -> Result<Message, Error> {
        parse::datagram(datagram.into(), limits)
    }

    /// The header fields.
    pub fn headers(&self) -> &Headers {
        match self {
            Message::Request(r) => &r.headers,
            Message::Response(r) => &r.headers,
        }
    }

    /// The header fields, to change.
    pub fn headers_mut(&mut self) -> &mut Headers {
        match self {
            Message::Request(r) => &mut r.headers,
            Message::Response(r) => &mut r.headers,
        }
    }

    /// The body.
    pub fn body(&self) -> &Bytes {
        match self {
            Message::Request(r) => &r.body,
            Message::Response(r) => &r.body,
        }
    }

    /// The exact number of bytes [`Message::encode`] writes.
    pub fn encoded_len(&self) -> usize {
        match self {
            Message::Request(r) => r.encoded_len(),
            Message::Response(r) => r.encoded_len(),
        }
    }

    /// Prints the message.
    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            Message::Request(r) => r.encode(out),
            Message::Response(r) => r.encode(out),
        }
    }

    /// Prints the message into new bytes.
    pub fn to_bytes(&self) -> Bytes {
        match self {
            Message::Request(r) => r.to_bytes(),
            Message::Response(r) => r.to_bytes(),
        }
    }

    /// The request, if this is one.
    pub fn as_request(&self) -> Option<&Request> {
        match self {
            Message::Request(r) => Some(r),
            Message::Response(_) => None,
        }
    }

    /// The response, if this is one.
    pub fn as_response(&self) -> Option<&Response> {
        match self {
            Message::Response(r) => Some(r),
            Message::Request(_) => None,
        }
    }
}

impl Request {
    /// A new SIP/2.0 request with no header fields and no body. The Request-URI is checked
    /// against the URI grammar.
    pub fn new(method: Method, uri: &str) -> Result<Request, Error> {
        Uri::parse(uri)?;
        Ok(Request {
            method,
            uri: Bytes::copy_from_slice(uri.as_bytes()),
            version: Version::SIP_2_0,
            headers: Headers::new(),
            body: Bytes::new(),
        })
    }

    /// The method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The Request-URI as written.
    pub fn uri_str(&self) -> &str {
        crate::text::ascii(self.uri_bytes())
    }

    fn uri_bytes(&self) -> &[u8] {
        &self.uri
    }

    /// The Request-URI, parsed.
    pub fn uri(&self) -> Result<Uri<'_>, Error> {
        Uri::parse(self.uri_str()).map_err(|e| match e {
            Error::Field { expected, at, .. } => Error::Field {
                field: "Request-URI",
                line: 1,
                expected,
                at,
            },
            other => other,
        })
    }

    /// Replaces the Request-URI (a proxy retargeting the request), checking its grammar.
    pub fn set_uri(&mut self, uri: &str) -> Result<(), Error> {
        Uri::parse(uri)?;
        self.uri = Bytes::copy_from_slice(uri.as_bytes());
        Ok(())
    }

    /// The exact number of bytes [`Request::encode`] writes.
    pub fn encoded_len(&self) -> usize {
        let m = self.method.as_str().len();
        m + 1
            + self.uri_bytes().len()
            + 1
            + version_len(self.version)
            + 2
            + rest_len(&self.headers, &self.body)
    }

    /// Prints the request: start line, header fields in order, blank line, body.
    pub fn encode(&self, out: &mut BytesMut) {
        out.reserve(self.encoded_len());
        out.put_slice(self.method.as_str().as_bytes());
        out.put_u8(b' ');
        out.put_slice(self.uri_bytes());
        out.put_u8(b' ');
        put_version(out, self.version);
        out.put_slice(b"\r\n");
        encode_rest(out, &self.headers, &self.body);
    }
}

impl Response {
    /// A new SIP/2.0 response with no header fields and no body. `reason` may be empty;
    /// control characters in it (CR, LF...) are replaced by spaces.
    pub fn new(status: StatusCode, reason: &str) -> Response {
        let printable = |c: char| !c.is_control() || c == '\t';
        let reason = if reason.chars().all(printable) {
            Bytes::copy_from_slice(reason.as_bytes())
        } else {
            Bytes::from(reason.replace(|c| !printable(c), " "))
        };
        Response {
            version: Version::SIP_2_0,
            status,
            reason,
            headers: Headers::new(),
            body: Bytes::new(),
        }
    }

    /// A response to `request` (RFC 3261 §8.2.6): Via, From, To, Call-ID and CSeq copied,
    /// `to_tag` added to To if it has no tag (and the status is not 100). No body, no
    /// Content-Length: add them.
    pub fn for_request(
        request: &Request,
        status: StatusCode,
        reason: &str,
        to_tag: Option<&str>,
    ) -> Response {
        let mut resp = Response::new(status, reason);
        let fields = request.headers().iter().map(|f| (f.name, f.value));
        copy_for_response(fields, resp.headers_mut(), to_tag, status);
        resp
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The reason phrase (UTF-8, checked when parsed).
    pub fn reason(&self) -> &str {
        std::str::from_utf8(&self.reason).unwrap_or_default()
    }

    /// The exact number of bytes [`Response::encode`] writes.
    pub fn encoded_len(&self) -> usize {
        version_len(self.version)
            + 5
            + self.reason().len()
            + 2
            + rest_len(&self.headers, &self.body)
    }

    /// Prints the response: status line, header fields in order, blank line, body.
    pub fn encode(&self, out: &mut BytesMut) {
        out.reserve(self.encoded_len());
        put_version(out, self.version);
        let code = self.status.as_u16();
        out.put_slice(&[
            b' ',
            b'0' + (code / 100) as u8,
            b'0' + (code / 10 % 10) as u8,
            b'0' + (code % 10) as u8,
            b' ',
        ]);
        out.put_slice(self.reason().as_bytes());
        out.put_slice(b"\r\n");
        encode_rest(out, &self.headers, &self.body);
    }
}

fn set_body_headers(headers: &mut Headers, content_type: &str, len: usize) {
    if len == 0 {
        headers.remove(HeaderName::ContentType);
    } else {
        headers.set(
            HeaderName::ContentType,
            Bytes::copy_from_slice(content_type.as_bytes()),
        );
    }
    headers.set(HeaderName::ContentLength, Bytes::from(len.to_string()));
}

fn version_len(v: Version) -> usize {
    4 + decimal_len(v.major) + 1 + decimal_len(v.minor)
}

fn decimal_len(mut n: u32) -> usize {
    let mut len = 1;
    while n >= 10 {
        n /= 10;
        len += 1;
    }
    len
}

fn put_version(out: &mut BytesMut, v: Version) {
    if v == Version::SIP_2_0 {
        out.put_slice(b"SIP/2.0");
    } else {
        out.put_slice(format!("SIP/{}.{}", v.major, v.minor).as_bytes());
    }
}

impl PartialEq for Request {
    fn eq(&self, other: &Request) -> bool {
        self.method == other.method
            && self.uri_bytes() == other.uri_bytes()
            && self.version == other.version
            && self.headers == other.headers
            && self.body == other.body
    }
}

impl Eq for Request {}

impl PartialEq for Response {
    fn eq(&self, other: &Response) -> bool {
        self.status == other.status
            && self.reason() == other.reason()
            && self.version == other.version
            && self.headers == other.headers
            && self.body == other.body
    }
}

impl Eq for Response {}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("uri", &self.uri_str())
            .field("version", &self.version)
            .field("headers", &self.headers)
            .field("body", &self.body)
            .finish()
    }
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("reason", &self.reason())
            .field("version", &self.version)
            .field("headers", &self.headers)
            .field("body", &self.body)
            .finish()
    }
}

/// Copies the fields a response repeats from its request (§8.2.6.2), adding `to_tag`.
pub(crate) fn copy_for_response<'a>(
    fields: impl Iterator<Item = (HeaderName, &'a [u8])>,
    out: &mut Headers,
    to_tag: Option<&str>,
    status: StatusCode,
) {
    for (name, value) in fields {
        match name {
            HeaderName::Via | HeaderName::From | HeaderName::CallId | HeaderName::CSeq => {
                out.push(name, value);
            }
            HeaderName::To => {
                let has_tag =
                    <crate::header::To<'_> as crate::header::TypedHeader<'_>>::parse(value)
                        .is_ok_and(|t| t.tag().is_some());
                match to_tag {
                    Some(tag) if !has_tag && status != StatusCode::TRYING => {
                        out.push(name, [value, b";tag=", tag.as_bytes()].concat());
                    }
                    _ => out.push(name, value),
                }
            }
            _ => {}
        }
    }
}

/// The header section, the blank line and the body, as printed after the start line.
fn encode_rest(out: &mut BytesMut, headers: &Headers, body: &Bytes) {
    headers.encode(out);
    out.put_slice(b"\r\n");
    out.put_slice(body);
}

fn rest_len(headers: &Headers, body: &Bytes) -> usize {
    headers.encoded_len() + 2 + body.len()
}

/// What requests and responses share: version, header fields, body, and printing to bytes.
macro_rules! message_parts {
    ($($t:ty),*) => {$(
        impl $t {
            /// The protocol version.
            pub fn version(&self) -> Version {
                self.version
            }

            /// The header fields.
            pub fn headers(&self) -> &Headers {
                &self.headers
            }

            /// The header fields, to change.
            pub fn headers_mut(&mut self) -> &mut Headers {
                &mut self.headers
            }

            /// The body.
            pub fn body(&self) -> &Bytes {
                &self.body
            }

            /// Sets the body, its Content-Type, and a Content-Length to match.
            pub fn set_body(&mut self, content_type: &str, body: impl Into<Bytes>) {
                self.body = body.into();
                set_body_headers(&mut self.headers, content_type, self.body.len());
            }

            /// Prints the message into new bytes.
            pub fn to_bytes(&self) -> Bytes {
                let mut out = BytesMut::with_capacity(self.encoded_len());
                self.encode(&mut out);
                out.freeze()
            }
        }

        impl fmt::Display for $t {
            /// The message as printed on the wire (invalid UTF-8 shown lossily).
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&String::from_utf8_lossy(&self.to_bytes()))
            }
        }
    )*};
}

message_parts!(Request, Response);

impl fmt::Display for Message {
    /// The message as printed on the wire (invalid UTF-8 shown lossily).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.to_bytes()))
    }
}
