//! The message-level parser: start line, header index, framing of the body.
//!
//! One pass over the header section with `memchr`: each header field becomes an [`Entry`]
//! that points into the received bytes. Values are not interpreted here, except
//! Content-Length, which framing needs.

use bytes::Bytes;
use memchr::memchr;

use crate::headers::{Entry, Span};
use crate::message::{Request, Response, Version};
use crate::text::{is_lws, is_token};
use crate::{Error, HeaderName, Headers, Message, Method, StatusCode};

/// Bounds on what the parser accepts, so that no peer can make it allocate without limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// The largest message, header section and body together, in bytes. Default 64 KiB (the
    /// largest UDP payload; RFC 3261 §18.1.1 expects far smaller).
    pub max_message_size: usize,
    /// The most header fields (lines, folded ones counting once). Default 256.
    pub max_headers: usize,
    /// The longest line of the start line or header section, in bytes. Default 8 KiB.
    pub max_line_length: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_message_size: 64 * 1024,
            max_headers: 256,
            max_line_length: 8 * 1024,
        }
    }
}

impl Limits {
    /// Sets [`Limits::max_message_size`].
    pub fn max_message_size(mut self, bytes: usize) -> Limits {
        self.max_message_size = bytes;
        self
    }

    /// Sets [`Limits::max_headers`].
    pub fn max_headers(mut self, count: usize) -> Limits {
        self.max_headers = count;
        self
    }

    /// Sets [`Limits::max_line_length`].
    pub fn max_line_length(mut self, bytes: usize) -> Limits {
        self.max_line_length = bytes;
        self
    }
}

/// The start line as spans of the buffer.
enum StartLine {
    Request {
        method: Method,
        uri: (usize, usize),
        version: Version,
    },
    Response {
        version: Version,
        status: StatusCode,
        reason: (usize, usize),
    },
}

/// The parsed head of a message: everything but the body.
pub(crate) struct Head {
    start: StartLine,
    entries: Vec<Entry>,
    /// Offset of the first body byte.
    pub(crate) body_start: usize,
    /// The Content-Length value, if the message has one.
    pub(crate) content_length: Option<usize>,
}

/// Parses a datagram: the body is the rest of the datagram, cut to Content-Length if given.
pub(crate) fn datagram(buf: Bytes, limits: &Limits) -> Result<Message, Error> {
    if buf.len() > limits.max_message_size {
        return Err(Error::TooLarge {
            size: buf.len(),
            limit: limits.max_message_size,
        });
    }
    let head = head(&buf, limits)?;
    let available = buf.len() - head.body_start;
    let body_len = match head.content_length {
        Some(declared) if declared > available => {
            return Err(Error::Truncated {
                declared,
                available,
            });
        }
        Some(declared) => declared,
        None => available,
    };
    Ok(head.into_message(buf, body_len))
}

impl Head {
    pub(crate) fn into_message(self, buf: Bytes, body_len: usize) -> Message {
        let body = buf.slice(self.body_start..self.body_start + body_len);
        match self.start {
            StartLine::Request {
                method,
                uri,
                version,
            } => {
                let uri = buf.slice(uri.0..uri.1);
                let headers = Headers::from_parts(buf, self.entries);
                Message::Request(Request {
                    method,
                    uri,
                    version,
                    headers,
                    body,
                })
            }
            StartLine::Response {
                version,
                status,
                reason,
            } => {
                let reason = buf.slice(reason.0..reason.1);
                let headers = Headers::from_parts(buf, self.entries);
                Message::Response(Response {
                    version,
                    status,
                    reason,
                    headers,
                    body,
                })
            }
        }
    }
}

/// Parses the start line and indexes the header section of `buf`.
pub(crate) fn head(buf: &[u8], limits: &Limits) -> Result<Head, Error> {
    if buf.len() > Span::MAX {
        return Err(Error::TooLarge {
            size: buf.len(),
            limit: Span::MAX,
        });
    }
    // RFC 3261 §7.5: CRLFs before the start line are ignored.
    let mut pos = 0;
    while pos < buf.len() && (buf[pos] == b'\r' || buf[pos] == b'\n') {
        pos += 1;
    }
    let nl = memchr(b'\n', &buf[pos..]).ok_or(Error::Unterminated)? + pos;
    if nl - pos > limits.max_line_length {
        return Err(Error::LineTooLong {
            line: 1,
            limit: limits.max_line_length,
        });
    }
    let start = start_line(buf, pos, strip_cr(buf, pos, nl))?;
    pos = nl + 1;

    let mut entries = Vec::with_capacity(16);
    let mut content_length = None;
    let mut line = 1u32;
    loop {
        match buf.get(pos) {
            // A datagram that ends right after a complete header line has nothing more to
            // come: take the end as the blank line (RFC 4475 baddn.dat is such a datagram).
            // A stream frame always reaches here with its blank line.
            None if pos > 0 && buf[pos - 1] == b'\n' => break,
            None => return Err(Error::Unterminated),
            Some(b'\n') => {
                pos += 1;
                break;
            }
            Some(b'\r') if buf.get(pos + 1) == Some(&b'\n') => {
                pos += 2;
                break;
            }
            Some(b' ' | b'\t') => {
                return Err(Error::HeaderLine {
                    line: line + 1,
                    expected: "a header name, not a continuation line with nothing to continue",
                });
            }
            Some(_) => {}
        }
        line += 1;
        let first_line = line;
        // The name: token characters, then optional white space and the colon, in one pass.
        let name_end = pos + buf[pos..].iter().take_while(|&&b| is_token(b)).count();
        let mut colon = name_end;
        while matches!(buf.get(colon), Some(b' ' | b'\t')) {
            colon += 1;
        }
        if name_end == pos || buf.get(colon) != Some(&b':') {
            return Err(header_line_error(buf, pos, first_line));
        }
        let name = HeaderName::from_bytes(&buf[pos..name_end]);
        // The value: from after the colon to the end of the last folded line.
        let mut end = line_end(buf, pos, line, limits)?;
        while matches!(buf.get(end + 1), Some(b' ' | b'\t')) {
            line += 1;
            end = line_end(buf, end + 1, line, limits)?;
        }
        let stop = strip_cr(buf, pos, end);
        let (value_start, value_end) = trim_lws_range(buf, colon + 1, stop);
        if entries.len() == limits.max_headers {
            return Err(Error::TooManyHeaders {
                limit: limits.max_headers,
            });
        }
        if name == HeaderName::ContentLength {
            if content_length.is_some() {
                return Err(Error::ContentLength {
                    line: first_line,
                    problem: "more than one Content-Length header",
                });
            }
            content_length = Some(content_length_value(
                &buf[value_start..value_end],
                first_line,
            )?);
        }
        entries.push(Entry {
            name,
            line: first_line,
            raw_name: Span::received(pos, name_end),
            value: Span::received(value_start, value_end),
        });
        pos = end + 1;
    }
    Ok(Head {
        start,
        entries,
        body_start: pos,
        content_length,
    })
}

/// Position of the `\n` that ends the line starting at `from`, within the length limit.
fn line_end(buf: &[u8], from: usize, line: u32, limits: &Limits) -> Result<usize, Error> {
    match memchr(b'\n', &buf[from..]) {
        Some(n) if n > limits.max_line_length => Err(Error::LineTooLong {
            line,
            limit: limits.max_line_length,
        }),
        Some(n) => Ok(from + n),
        None if buf.len() - from > limits.max_line_length => Err(Error::LineTooLong {
            line,
            limit: limits.max_line_length,
        }),
        None => Err(Error::Unterminated),
    }
}

/// Why a header line has no proper `name:` start.
fn header_line_error(buf: &[u8], pos: usize, line: u32) -> Error {
    let rest = &buf[pos..];
    let line_len = memchr(b'\n', rest).unwrap_or(rest.len());
    let expected = if memchr(b':', &rest[..line_len]).is_some() {
        "a header name made of token characters before the ':'"
    } else {
        "a ':' after the header name"
    };
    Error::HeaderLine { line, expected }
}

/// `start..end` without leading and trailing LWS.
fn trim_lws_range(buf: &[u8], mut start: usize, mut end: usize) -> (usize, usize) {
    while start < end && is_lws(buf[start]) {
        start += 1;
    }
    while end > start && is_lws(buf[end - 1]) {
        end -= 1;
    }
    (start, end)
}

/// The end of the line content, without the CR of a CRLF.
fn strip_cr(buf: &[u8], start: usize, nl: usize) -> usize {
    if nl > start && buf[nl - 1] == b'\r' {
        nl - 1
    } else {
        nl
    }
}

fn content_length_value(value: &[u8], line: u32) -> Result<usize, Error> {
    let bad = |problem| Error::ContentLength { line, problem };
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return Err(bad("Content-Length must be a non-negative decimal number"));
    }
    let mut n: usize = 0;
    for &d in value {
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_add(usize::from(d - b'0')))
            .ok_or(bad("Content-Length is too large"))?;
    }
    Ok(n)
}

fn start_line(buf: &[u8], start: usize, end: usize) -> Result<StartLine, Error> {
    let line = &buf[start..end];
    if line.len() >= 4 && line[..4].eq_ignore_ascii_case(b"SIP/") {
        return status_line(line, start);
    }
    let bad = |expected| Err(Error::StartLine { expected });
    let Some(sp1) = memchr(b' ', line) else {
        return bad("'Method SP Request-URI SP SIP-Version' or 'SIP-Version SP Status-Code'");
    };
    let Some(method) = Method::from_token(&line[..sp1]) else {
        return bad("a method made of token characters");
    };
    let rest = &line[sp1 + 1..];
    let Some(sp2) = memchr(b' ', rest) else {
        return bad("'Method SP Request-URI SP SIP-Version' with single spaces");
    };
    let uri = &rest[..sp2];
    if uri.is_empty() {
        return bad("a Request-URI after a single space (no white space inside the start line)");
    }
    if !uri.iter().all(|&b| (0x21..0x7f).contains(&b)) {
        return bad("a Request-URI of printable ASCII characters");
    }
    let Some(version) = version(&rest[sp2 + 1..]) else {
        return bad("'SIP/2.0' after the Request-URI, then the end of the line");
    };
    let uri_start = start + sp1 + 1;
    Ok(StartLine::Request {
        method,
        uri: (uri_start, uri_start + uri.len()),
        version,
    })
}

fn status_line(line: &[u8], start: usize) -> Result<StartLine, Error> {
    let bad = |expected| Err(Error::StartLine { expected });
    let sp = memchr(b' ', line).unwrap_or(line.len());
    let Some(version) = version(&line[..sp]) else {
        return bad("'SIP/2.0' at the start of the status line");
    };
    let rest = line.get(sp + 1..).unwrap_or_default();
    let code_len = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if code_len != 3 || !matches!(rest.get(3), None | Some(b' ')) {
        return bad("a three-digit status code after the version");
    }
    let code = rest[..3]
        .iter()
        .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    let Some(status) = StatusCode::new(code) else {
        return bad("a status code from 100 to 699");
    };
    let reason = rest.get(4..).unwrap_or_default();
    if std::str::from_utf8(reason).is_err() || reason.iter().any(|&b| b < 0x20 && b != b'\t') {
        return bad("a reason phrase of UTF-8 text");
    }
    let reason_start = start + (line.len() - reason.len());
    Ok(StartLine::Response {
        version,
        status,
        reason: (reason_start, reason_start + reason.len()),
    })
}

/// `SIP/1*DIGIT.1*DIGIT`, the literal in any case (RFC 3261 §7.1).
fn version(s: &[u8]) -> Option<Version> {
    if s == b"SIP/2.0" {
        return Some(Version::SIP_2_0);
    }
    if s.len() < 7 || !s[..4].eq_ignore_ascii_case(b"SIP/") {
        return None;
    }
    let (major, minor) = s[4..].split_at(s[4..].iter().position(|&b| b == b'.')?);
    Some(Version {
        major: number(major)?,
        minor: number(&minor[1..])?,
    })
}

fn number(s: &[u8]) -> Option<u32> {
    if s.is_empty() || s.len() > 9 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0')))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Message, Error> {
        Message::parse(Bytes::copy_from_slice(s.as_bytes()))
    }

    const OPTIONS: &str = "OPTIONS sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nv: SIP/2.0/TCP g\r\nX-Odd :  kept  as is \r\n\r\n";

    #[test]
    fn indexes_headers_in_order_with_compact_forms() {
        let m = parse(OPTIONS).unwrap();
        let names: Vec<_> = m
            .headers()
            .iter()
            .map(|h| (h.name, h.raw_name, h.value))
            .collect();
        assert_eq!(
            names,
            [
                (
                    HeaderName::Via,
                    &b"Via"[..],
                    &b"SIP/2.0/UDP h;branch=z9hG4bK1"[..]
                ),
                (HeaderName::Via, b"v", b"SIP/2.0/TCP g"),
                (HeaderName::Other, b"X-Odd", b"kept  as is"),
            ]
        );
        assert_eq!(
            m.headers().iter().map(|h| h.line).collect::<Vec<_>>(),
            [2, 3, 4]
        );
    }

    #[test]
    fn folded_lines_stay_in_one_field() {
        let m = parse("BYE sip:a@b SIP/2.0\r\nSubject: one\r\n two\r\nTo: x\r\n\r\n").unwrap();
        assert_eq!(
            m.headers().get(HeaderName::Subject),
            Some(&b"one\r\n two"[..])
        );
        assert_eq!(
            m.headers().get_all(HeaderName::To).next().map(|f| f.line),
            Some(4)
        );
    }

    #[test]
    fn datagram_body_runs_to_content_length_or_end() {
        let m = parse("MESSAGE sip:a@b SIP/2.0\r\nl: 2\r\n\r\nhi there").unwrap();
        assert_eq!(&m.body()[..], b"hi");
        let m = parse("MESSAGE sip:a@b SIP/2.0\r\n\r\nhi there").unwrap();
        assert_eq!(&m.body()[..], b"hi there");
        assert_eq!(
            parse("MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 9\r\n\r\nhi"),
            Err(Error::Truncated {
                declared: 9,
                available: 2
            })
        );
    }

    #[test]
    fn start_line_faults_are_named() {
        for (text, want) in [
            (
                "INVITE  sip:a@b SIP/2.0\r\n\r\n",
                "a Request-URI after a single space",
            ),
            (
                "INVITE sip:a@b SIP/2.0 \r\n\r\n",
                "'SIP/2.0' after the Request-URI",
            ),
            (
                "INVITE sip:a@b; lr SIP/2.0\r\n\r\n",
                "'SIP/2.0' after the Request-URI",
            ),
            (
                "SIP/2.0 4294967301 big\r\n\r\n",
                "a three-digit status code",
            ),
            ("SIP/2.0 099 low\r\n\r\n", "a status code from 100 to 699"),
        ] {
            match parse(text) {
                Err(Error::StartLine { expected }) => {
                    assert!(expected.starts_with(want), "{text:?}: {expected}")
                }
                other => panic!("{text:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn header_faults_name_the_line() {
        assert_eq!(
            parse("BYE sip:a@b SIP/2.0\r\nTo: x\r\nno colon here\r\n\r\n"),
            Err(Error::HeaderLine {
                line: 3,
                expected: "a ':' after the header name"
            })
        );
        assert!(matches!(
            parse("BYE sip:a@b SIP/2.0\r\n folded: first\r\n\r\n"),
            Err(Error::HeaderLine { line: 2, .. })
        ));
        assert_eq!(
            parse("BYE sip:a@b SIP/2.0\r\nTo: x"),
            Err(Error::Unterminated)
        );
        assert!(
            parse("BYE sip:a@b SIP/2.0\r\nTo: x\r\n").is_ok(),
            "a datagram may end right after its last header line"
        );
        assert!(matches!(
            parse("BYE sip:a@b SIP/2.0\r\nl: 1\r\nContent-Length: 1\r\n\r\nx"),
            Err(Error::ContentLength { line: 3, .. })
        ));
        assert!(matches!(
            parse("BYE sip:a@b SIP/2.0\r\nl: -1\r\n\r\n"),
            Err(Error::ContentLength { line: 2, .. })
        ));
    }

    #[test]
    fn limits_are_enforced() {
        let small = Limits::default()
            .max_headers(1)
            .max_line_length(40)
            .max_message_size(60);
        let p = |s: &str| Message::parse_with(Bytes::copy_from_slice(s.as_bytes()), &small);
        assert_eq!(
            p("BYE sip:a@b SIP/2.0\r\nA: 1\r\nB: 2\r\n\r\n"),
            Err(Error::TooManyHeaders { limit: 1 })
        );
        assert_eq!(
            p("BYE sip:a@b SIP/2.0\r\nA: 0123456789012345678901234567890123456789\r\n\r\n"),
            Err(Error::TooLarge {
                size: 68,
                limit: 60
            })
        );
        let long = Limits::default().max_line_length(10);
        assert_eq!(
            Message::parse_with(&b"BYE sip:a@b SIP/2.0\r\n\r\n"[..], &long),
            Err(Error::LineTooLong { line: 1, limit: 10 })
        );
    }

    #[test]
    fn version_forms() {
        assert_eq!(version(b"SIP/2.0"), Some(Version::SIP_2_0));
        assert_eq!(version(b"sip/7.0"), Some(Version { major: 7, minor: 0 }));
        assert_eq!(version(b"SIP/2.0 "), None);
        assert_eq!(version(b"SIP/2"), None);
        assert_eq!(version(b"HTTP/1.1"), None);
    }
}
