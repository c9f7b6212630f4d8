//! Framing of SIP messages on a byte stream (TCP, TLS): Content-Length decides where a message
//! ends (RFC 3261 §18.3), and CRLF keepalives come between messages (RFC 5626 §4.4.1).

use bytes::{Bytes, BytesMut};
use memchr::memchr_iter;

use crate::parse::{self, Head, Limits};
use crate::{Error, Message};

/// What a stream yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A whole message.
    Message(Message),
    /// A keepalive ping, CRLF CRLF: answer it with a [`Frame::Pong`] (a single CRLF).
    Ping,
    /// A keepalive pong, a single CRLF (seen once the byte after it arrives).
    Pong,
}

impl Frame {
    /// The bytes of a keepalive ping.
    pub const PING: &'static [u8] = b"\r\n\r\n";
    /// The bytes of a keepalive pong.
    pub const PONG: &'static [u8] = b"\r\n";
}

/// Cuts a byte stream into SIP messages, sans-IO: put received bytes in with
/// [`StreamDecoder::extend`] (or read straight into [`StreamDecoder::buffer_mut`]), then call
/// [`StreamDecoder::decode`] until it returns `Ok(None)`, which means "wait for more bytes".
///
/// Every message must carry Content-Length. Partial input is kept until it completes; the
/// buffer never grows past [`Limits::max_message_size`] plus one read. An error means the
/// stream is out of step: answer if you can (see [`crate::Rejection`]) and close it.
#[derive(Default)]
pub struct StreamDecoder {
    buf: BytesMut,
    limits: Limits,
    /// How far the search for the end of the header section has got.
    scanned: usize,
    /// The head of the message being received, once its header section is complete.
    pending: Option<(Head, usize)>,
}

impl std::fmt::Debug for StreamDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamDecoder")
            .field("buffered", &self.buf.len())
            .field("limits", &self.limits)
            .field("header_complete", &self.pending.is_some())
            .finish()
    }
}

impl StreamDecoder {
    /// A decoder with the given limits.
    pub fn new(limits: Limits) -> StreamDecoder {
        StreamDecoder {
            limits,
            ..StreamDecoder::default()
        }
    }

    /// Appends received bytes.
    pub fn extend(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The receive buffer, to read into without a copy.
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Bytes received and not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next frame, `Ok(None)` if more bytes are needed.
    pub fn decode(&mut self) -> Result<Option<Frame>, Error> {
        if self.pending.is_none() {
            if let Some(frame) = self.keepalive() {
                return Ok(Some(frame));
            }
            let Some(header_end) = self.header_end() else {
                if self.buf.len() > self.limits.max_message_size {
                    return Err(Error::TooLarge {
                        size: self.buf.len(),
                        limit: self.limits.max_message_size,
                    });
                }
                return Ok(None);
            };
            let head = parse::head(&self.buf[..header_end], &self.limits)?;
            let Some(body_len) = head.content_length else {
                return Err(Error::ContentLength {
                    line: 0,
                    problem: "a Content-Length header is required on stream transports",
                });
            };
            let total = head.body_start.saturating_add(body_len);
            if total > self.limits.max_message_size {
                return Err(Error::TooLarge {
                    size: total,
                    limit: self.limits.max_message_size,
                });
            }
            self.pending = Some((head, total));
        }
        match &self.pending {
            Some((_, total)) if self.buf.len() >= *total => {
                let total = *total;
                let frame: Bytes = self.buf.split_to(total).freeze();
                self.scanned = 0;
                let (head, _) = self.pending.take().ok_or(Error::Unterminated)?;
                let body_len = total - head.body_start;
                Ok(Some(Frame::Message(head.into_message(frame, body_len))))
            }
            _ => Ok(None),
        }
    }

    /// A keepalive at the front of the buffer, consumed.
    fn keepalive(&mut self) -> Option<Frame> {
        // Stray CRs and LFs that make no keepalive are dropped (RFC 3261 §7.5 ignores CRLFs
        // before a start line).
        while match self.buf.first() {
            Some(b'\n') => true,
            Some(b'\r') => self.buf.get(1).is_some_and(|&b| b != b'\n'),
            _ => false,
        } {
            self.consume(1);
        }
        if self.buf.starts_with(Frame::PING) {
            self.consume(4);
            return Some(Frame::Ping);
        }
        // A lone CRLF is a pong once the next byte shows it is not the first half of a ping
        // (we serve softphones: their pings matter more than a pong's promptness).
        if self.buf.starts_with(Frame::PONG) && self.buf.get(2).is_some_and(|&b| b != b'\r') {
            self.consume(2);
            return Some(Frame::Pong);
        }
        None
    }

    /// Drops `n` bytes from the front; the header search starts again.
    fn consume(&mut self, n: usize) {
        let _ = self.buf.split_to(n);
        self.scanned = 0;
    }

    /// Offset just past the blank line that ends the header section, if it has arrived.
    fn header_end(&mut self) -> Option<usize> {
        let buf = &self.buf[..];
        for i in memchr_iter(b'\n', &buf[self.scanned..]).map(|i| i + self.scanned) {
            match (buf.get(i + 1), buf.get(i + 2)) {
                (Some(b'\n'), _) => return Some(i + 2),
                (Some(b'\r'), Some(b'\n')) => return Some(i + 3),
                (None, _) | (Some(b'\r'), None) => {
                    self.scanned = i;
                    return None;
                }
                _ => {}
            }
        }
        self.scanned = buf.len().saturating_sub(2);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 5\r\n\r\nhello";

    fn body(frame: Option<Frame>) -> Vec<u8> {
        match frame {
            Some(Frame::Message(m)) => m.body().to_vec(),
            other => panic!("expected a message, got {other:?}"),
        }
    }

    #[test]
    fn byte_by_byte_input_yields_each_message_once() {
        let mut d = StreamDecoder::default();
        let mut stream = MSG.to_vec();
        stream.extend_from_slice(Frame::PING);
        stream.extend_from_slice(MSG);
        let mut frames = Vec::new();
        for b in stream {
            d.extend(&[b]);
            while let Some(f) = d.decode().unwrap() {
                frames.push(f);
            }
        }
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[1], Frame::Ping);
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn two_messages_in_one_read() {
        let mut d = StreamDecoder::default();
        d.extend(&[MSG, MSG].concat());
        assert_eq!(body(d.decode().unwrap()), b"hello");
        assert_eq!(body(d.decode().unwrap()), b"hello");
        assert_eq!(d.decode().unwrap(), None);
    }

    #[test]
    fn pong_is_a_lone_crlf() {
        let mut d = StreamDecoder::default();
        d.extend(b"\r\n");
        assert_eq!(d.decode().unwrap(), None, "may be half a ping");
        d.extend(b"\r");
        assert_eq!(d.decode().unwrap(), None, "may still be a ping");
        d.extend(b"\n");
        assert_eq!(d.decode().unwrap(), Some(Frame::Ping));
        d.extend(b"\r\nBYE");
        assert_eq!(d.decode().unwrap(), Some(Frame::Pong));
        assert_eq!(d.decode().unwrap(), None);
        assert_eq!(d.buffered(), 3);
    }

    #[test]
    fn content_length_is_required() {
        let mut d = StreamDecoder::default();
        d.extend(b"BYE sip:a@b SIP/2.0\r\nTo: x\r\n\r\n");
        assert!(matches!(
            d.decode(),
            Err(Error::ContentLength { line: 0, .. })
        ));
    }

    #[test]
    fn oversized_frames_are_refused_early() {
        let mut d = StreamDecoder::new(Limits::default().max_message_size(100));
        d.extend(b"BYE sip:a@b SIP/2.0\r\nContent-Length: 1000\r\n\r\n");
        assert_eq!(
            d.decode(),
            Err(Error::TooLarge {
                size: 1045,
                limit: 100
            })
        );
        let mut d = StreamDecoder::new(Limits::default().max_message_size(100));
        d.extend(&[b'A'; 101]);
        assert!(matches!(d.decode(), Err(Error::TooLarge { .. })));
    }
}
