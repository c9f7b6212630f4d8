//! The wire format of `/p2psip/<overlay>/reload/1`: one frame per direction, a 4-byte
//! big-endian length and that many bytes. What the bytes mean is the layer above's business.
//!
//! A frame over the limit is refused before anything is allocated for it or its body read.
//! Reading an oversized response is an [`io::Error`] of kind `InvalidData` carrying
//! [`FrameTooLarge`] (see [`FrameTooLarge::find`]), which reaches the swarm task with the peer's
//! id. Reading an oversized request yields [`Request::TooLarge`] instead: libp2p's
//! request-response drops a `read_request` error silently, without saying which peer sent it,
//! and the task must know whom to count the bad frame against. The task never delivers such a
//! request; it counts it and drops it, which fails the request at its sender.

use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::{StreamProtocol, request_response};

/// The request/response codec: opaque length-prefixed frames of at most `max` bytes.
#[derive(Debug, Clone)]
pub(crate) struct FrameCodec {
    max: usize,
}

/// An inbound request as read off the wire.
#[derive(Debug)]
pub(crate) enum Request {
    /// A frame within the limit.
    Frame(Vec<u8>),
    /// A frame whose length prefix is over the limit; its body was not read.
    TooLarge(FrameTooLarge),
}

/// A frame over the limit, read or written.
#[derive(Debug, thiserror::Error)]
#[error("a frame of {len} bytes is larger than the limit of {max} bytes")]
pub(crate) struct FrameTooLarge {
    /// The frame's length (announced by the prefix when reading).
    pub(crate) len: u64,
    /// The limit.
    pub(crate) max: usize,
}

impl FrameTooLarge {
    /// The `FrameTooLarge` inside an I/O error, if that is what it is.
    pub(crate) fn find(error: &io::Error) -> Option<&FrameTooLarge> {
        error.get_ref()?.downcast_ref::<FrameTooLarge>()
    }
}

impl FrameCodec {
    /// A codec that refuses frames over `max` bytes.
    pub(crate) fn new(max: usize) -> Self {
        Self { max }
    }

    /// Reads one frame; `Ok(Err(_))` when its length prefix is over the limit (the body is
    /// left unread).
    async fn read_frame<T>(&self, io: &mut T) -> io::Result<Result<Vec<u8>, FrameTooLarge>>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut prefix = [0u8; 4];
        io.read_exact(&mut prefix).await?;
        let announced = u32::from_be_bytes(prefix);
        let too_large = FrameTooLarge {
            len: u64::from(announced),
            max: self.max,
        };
        let Some(len) = usize::try_from(announced)
            .ok()
            .filter(|len| *len <= self.max)
        else {
            return Ok(Err(too_large));
        };
        let mut frame = vec![0u8; len];
        io.read_exact(&mut frame).await?;
        Ok(Ok(frame))
    }

    async fn write_frame<T>(&self, io: &mut T, frame: &[u8]) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let too_large = || {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                FrameTooLarge {
                    len: frame.len() as u64,
                    max: self.max,
                },
            )
        };
        if frame.len() > self.max {
            return Err(too_large());
        }
        let len = u32::try_from(frame.len()).map_err(|_| too_large())?;
        io.write_all(&len.to_be_bytes()).await?;
        io.write_all(frame).await?;
        io.flush().await
    }
}

impl request_response::Codec for FrameCodec {
    type Protocol = StreamProtocol;
    type Request = Request;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Request>
    where
        T: AsyncRead + Unpin + Send,
    {
        Ok(match self.read_frame(io).await? {
            Ok(frame) => Request::Frame(frame),
            Err(too_large) => Request::TooLarge(too_large),
        })
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        self.read_frame(io)
            .await?
            .map_err(|too_large| io::Error::new(io::ErrorKind::InvalidData, too_large))
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        request: Request,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        match request {
            Request::Frame(frame) => self.write_frame(io, &frame).await,
            Request::TooLarge(too_large) => {
                Err(io::Error::new(io::ErrorKind::InvalidInput, too_large))
            }
        }
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        frame: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        self.write_frame(io, &frame).await
    }
}

#[cfg(test)]
mod tests {
    use futures::{executor::block_on, io::Cursor};
    use libp2p::request_response::Codec as _;
    use proptest::prelude::*;

    use super::*;

    fn protocol() -> StreamProtocol {
        StreamProtocol::new("/p2psip/test/reload/1")
    }

    fn encode(max: usize, frame: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Cursor::new(Vec::new());
        let request = Request::Frame(frame.to_vec());
        block_on(FrameCodec::new(max).write_request(&protocol(), &mut out, request))?;
        Ok(out.into_inner())
    }

    fn decode_response(max: usize, bytes: &[u8]) -> io::Result<Vec<u8>> {
        block_on(FrameCodec::new(max).read_response(&protocol(), &mut Cursor::new(bytes)))
    }

    /// The request read and how many bytes it consumed.
    fn decode_request(max: usize, bytes: &[u8]) -> (io::Result<Request>, u64) {
        let mut input = Cursor::new(bytes);
        let request = block_on(FrameCodec::new(max).read_request(&protocol(), &mut input));
        (request, input.position())
    }

    #[test]
    fn the_length_prefix_is_four_bytes_big_endian() {
        assert_eq!(encode(16, b"abc").unwrap(), b"\0\0\0\x03abc");
        assert_eq!(encode(16, b"").unwrap(), b"\0\0\0\0");
    }

    #[test]
    fn a_frame_at_the_limit_passes_and_one_byte_more_does_not() {
        let frame = vec![7u8; 100];
        let bytes = encode(100, &frame).unwrap();
        assert_eq!(decode_response(100, &bytes).unwrap(), frame);
        assert!(matches!(decode_request(100, &bytes).0, Ok(Request::Frame(f)) if f == frame));

        let error = encode(99, &frame).unwrap_err();
        let too_large = FrameTooLarge::find(&error).unwrap();
        assert_eq!((too_large.len, too_large.max), (100, 99));

        let error = decode_response(99, &bytes).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        assert!(FrameTooLarge::find(&error).is_some());
    }

    #[test]
    fn an_oversized_request_is_reported_without_reading_its_body() {
        let bytes = encode(100, &[7u8; 100]).unwrap();
        let (request, consumed) = decode_request(99, &bytes);
        assert!(matches!(
            request,
            Ok(Request::TooLarge(FrameTooLarge { len: 100, max: 99 }))
        ));
        assert_eq!(consumed, 4);
        // And it can never be sent.
        let mut out = Cursor::new(Vec::new());
        let too_large = Request::TooLarge(FrameTooLarge { len: 1, max: 0 });
        assert!(
            block_on(FrameCodec::new(99).write_request(&protocol(), &mut out, too_large)).is_err()
        );
        assert!(out.into_inner().is_empty());
    }

    #[test]
    fn a_huge_prefix_is_refused_before_reading_the_body() {
        let error = decode_response(1024, b"\xff\xff\xff\xff").unwrap_err();
        let too_large = FrameTooLarge::find(&error).unwrap();
        assert_eq!(too_large.len, u64::from(u32::MAX));
    }

    #[test]
    fn a_truncated_frame_is_an_error_but_not_a_bad_frame() {
        for bytes in [&b""[..], b"\0\0", b"\0\0\0\x05abc"] {
            let error = decode_response(1024, bytes).unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
            assert!(FrameTooLarge::find(&error).is_none());
            let error = decode_request(1024, bytes).0.unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
        }
    }

    proptest! {
        #[test]
        fn frames_round_trip(frame in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let bytes = encode(2048, &frame).unwrap();
            prop_assert_eq!(bytes.len(), frame.len() + 4);
            prop_assert_eq!(decode_response(2048, &bytes).unwrap(), frame.clone());
            let request = decode_request(2048, &bytes).0.unwrap();
            prop_assert!(matches!(request, Request::Frame(f) if f == frame));
        }

        #[test]
        fn no_input_panics_the_readers(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_response(32, &bytes);
            let _ = decode_request(32, &bytes);
        }
    }
}
