//! The carrier of RTP and RTCP between two end nodes: frames on libp2p streams of the
//! overlay's media protocol, one outbound stream per remote node.
//!
//! # Wire format
//!
//! A stream is a sequence of frames, each:
//!
//! | bytes | field |
//! | --- | --- |
//! | 2 | length of the rest of the frame, big-endian |
//! | 8 | session id ([`super::session::wire_id`]) |
//! | 1 | m-line index |
//! | 1 | 0 RTP, 1 RTCP |
//! | 8 | the sender's clock when it took the packet, microseconds (its own epoch) |
//! | n | the packet, at most [`MAX_PACKET`] bytes |
//!
//! A stream orders and retransmits, so a lost packet of the connection holds back the frames
//! behind it; the receiver drops a frame that arrives late ([`Staleness`]) instead of handing
//! it to the softphone after newer ones, and the sender drops instead of waiting when its
//! queue is full: late audio is worse than lost audio.

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::{PeerId, Stream, StreamProtocol};
use tokio::sync::mpsc;
use tracing::debug;

use super::Stats;

/// The largest RTP or RTCP packet carried; larger ones are dropped.
pub(crate) const MAX_PACKET: usize = 4096;

/// The bytes of a frame after its length field, before the packet.
const HEADER: usize = 8 + 1 + 1 + 8;

/// How many consecutive stale frames show that the path itself got slower (a new route, a
/// relay): the receiver then takes the current delay as the new lowest one.
const STALE_RUN_RESET: u32 = 50;

/// How long an open attempt may take.
const OPEN_LIMIT: Duration = Duration::from_secs(5);
/// How long writing one batch may take before the stream is given up and reopened.
const WRITE_LIMIT: Duration = Duration::from_secs(2);
/// The first and the longest wait before opening again after a failure.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// A carrier with nothing to send for this long ends (its stream closes).
pub(crate) const CARRIER_IDLE: Duration = Duration::from_secs(60);
/// How many frames are written before one flush.
const BATCH: usize = 64;

/// RTP or RTCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// RTP (and RTCP multiplexed on the RTP port).
    Rtp,
    /// RTCP on its own port.
    Rtcp,
}

/// One carried packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Frame {
    /// The session's wire id.
    pub(crate) session: u64,
    /// The m-line index.
    pub(crate) line: u8,
    /// RTP or RTCP.
    pub(crate) kind: Kind,
    /// The sender's clock, microseconds ([`micros`]).
    pub(crate) sent_us: u64,
    /// The packet.
    pub(crate) packet: Bytes,
}

/// Why a frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FrameError {
    /// The length field is below the header or above the packet limit.
    #[error("a media frame of {0} bytes is out of bounds")]
    Length(usize),
    /// The kind byte is neither RTP nor RTCP.
    #[error("a media frame of unknown kind {0}")]
    Kind(u8),
}

impl Frame {
    /// The frame on the wire, its length field first; `None` when the packet is too large.
    pub(crate) fn encode(&self) -> Option<Bytes> {
        if self.packet.len() > MAX_PACKET {
            return None;
        }
        let len = HEADER + self.packet.len();
        let mut out = BytesMut::with_capacity(2 + len);
        out.put_u16(u16::try_from(len).ok()?);
        out.put_u64(self.session);
        out.put_u8(self.line);
        out.put_u8(match self.kind {
            Kind::Rtp => 0,
            Kind::Rtcp => 1,
        });
        out.put_u64(self.sent_us);
        out.put_slice(&self.packet);
        Some(out.freeze())
    }

    /// Checks a length field: the number of bytes to read next.
    pub(crate) fn check_len(len: u16) -> Result<usize, FrameError> {
        let len = usize::from(len);
        if !(HEADER..=HEADER + MAX_PACKET).contains(&len) {
            return Err(FrameError::Length(len));
        }
        Ok(len)
    }

    /// The frame from the bytes after its length field.
    pub(crate) fn decode(rest: Bytes) -> Result<Frame, FrameError> {
        if rest.len() < HEADER || rest.len() > HEADER + MAX_PACKET {
            return Err(FrameError::Length(rest.len()));
        }
        let mut at = [0u8; 8];
        at.copy_from_slice(&rest[0..8]);
        let session = u64::from_be_bytes(at);
        let line = rest[8];
        let kind = match rest[9] {
            0 => Kind::Rtp,
            1 => Kind::Rtcp,
            other => return Err(FrameError::Kind(other)),
        };
        at.copy_from_slice(&rest[10..18]);
        let sent_us = u64::from_be_bytes(at);
        Ok(Frame {
            session,
            line,
            kind,
            sent_us,
            packet: rest.slice(HEADER..),
        })
    }
}

/// The node's clock in microseconds since its first use in this process.
pub(crate) fn micros(now: Instant) -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(|| now);
    u64::try_from(now.saturating_duration_since(epoch).as_micros()).unwrap_or(u64::MAX)
}

/// Tells frames that arrive late on one stream.
///
/// The two nodes' clocks differ by an unknown offset, so one-way delays are only compared
/// with each other: a frame whose delay (receiver's clock minus sender's) exceeds the lowest
/// delay seen on the stream by more than the threshold is stale. After
/// [`STALE_RUN_RESET`] stale frames in a row the path itself is slower (a route through a
/// relay, a clock that drifted), and the current delay becomes the lowest.
#[derive(Debug, Clone)]
pub(crate) struct Staleness {
    threshold_us: i64,
    lowest: Option<i64>,
    run: u32,
}

impl Staleness {
    /// A detector that calls a frame stale when it is `threshold` later than the fastest.
    pub(crate) fn new(threshold: Duration) -> Staleness {
        Staleness {
            threshold_us: i64::try_from(threshold.as_micros()).unwrap_or(i64::MAX),
            lowest: None,
            run: 0,
        }
    }

    /// Whether a frame sent at `sent_us` (sender's clock) and received at `received_us`
    /// (ours) is stale.
    pub(crate) fn is_stale(&mut self, sent_us: u64, received_us: u64) -> bool {
        let delay = i64::try_from(received_us)
            .unwrap_or(i64::MAX)
            .saturating_sub(i64::try_from(sent_us).unwrap_or(i64::MAX));
        let lowest = match self.lowest {
            Some(lowest) if lowest <= delay => lowest,
            _ => {
                self.lowest = Some(delay);
                delay
            }
        };
        if delay.saturating_sub(lowest) <= self.threshold_us {
            self.run = 0;
            return false;
        }
        self.run += 1;
        if self.run >= STALE_RUN_RESET {
            self.lowest = Some(delay);
            self.run = 0;
        }
        true
    }
}

/// Sends the frames queued for `peer` on one stream, opened on the first frame and again
/// after a failure (no sooner than a backoff of 100 ms doubling to 5 s; frames that come in
/// the meantime are dropped and counted). Ends after [`CARRIER_IDLE`] without frames.
pub(crate) async fn send(
    mut control: libp2p_stream::Control,
    protocol: StreamProtocol,
    peer: PeerId,
    mut frames: mpsc::Receiver<Bytes>,
    stats: Arc<Stats>,
) {
    let mut stream: Option<Stream> = None;
    let mut retry = RETRY_FIRST;
    let mut not_before: Option<tokio::time::Instant> = None;
    while let Ok(Some(first)) = tokio::time::timeout(CARRIER_IDLE, frames.recv()).await {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            let Ok(next) = frames.try_recv() else { break };
            batch.push(next);
        }
        let count = batch.len() as u64;
        if stream.is_none() {
            if not_before.is_some_and(|at| tokio::time::Instant::now() < at) {
                stats.dropped_unsent.fetch_add(count, Ordering::Relaxed);
                continue;
            }
            match tokio::time::timeout(OPEN_LIMIT, control.open_stream(peer, protocol.clone()))
                .await
            {
                Ok(Ok(opened)) => {
                    debug!(%peer, "media stream open");
                    stream = Some(opened);
                    retry = RETRY_FIRST;
                    not_before = None;
                }
                outcome => {
                    let error = match outcome {
                        Ok(Err(e)) => e.to_string(),
                        _ => "timed out".to_owned(),
                    };
                    debug!(%peer, %error, retry_in = ?retry, "media stream could not be opened");
                    stats.dropped_unsent.fetch_add(count, Ordering::Relaxed);
                    not_before = Some(tokio::time::Instant::now() + retry);
                    retry = (retry * 2).min(RETRY_MAX);
                    continue;
                }
            }
        }
        let Some(open) = stream.as_mut() else {
            continue;
        };
        let written = tokio::time::timeout(WRITE_LIMIT, async {
            for frame in &batch {
                open.write_all(frame).await?;
            }
            open.flush().await
        })
        .await;
        match written {
            Ok(Ok(())) => {
                stats.frames_sent.fetch_add(count, Ordering::Relaxed);
            }
            outcome => {
                let error = match outcome {
                    Ok(Err(e)) => e.to_string(),
                    _ => "timed out".to_owned(),
                };
                debug!(%peer, %error, "media stream failed; reopening on the next packet");
                stats.dropped_unsent.fetch_add(count, Ordering::Relaxed);
                stream = None;
            }
        }
    }
    if let Some(mut open) = stream {
        let _ = open.close().await;
    }
}

/// Reads the frames of one inbound stream from `peer` and hands the ones that are not stale
/// to `deliver`; ends when the stream ends, fails, carries a frame out of bounds, or is idle
/// for twice [`CARRIER_IDLE`].
pub(crate) async fn receive(
    peer: PeerId,
    mut stream: Stream,
    stale_after: Duration,
    stats: Arc<Stats>,
    mut deliver: impl FnMut(Frame),
) {
    let mut staleness = Staleness::new(stale_after);
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(2 * CARRIER_IDLE, stream.read_exact(&mut len)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => break,
        }
        let len = match Frame::check_len(u16::from_be_bytes(len)) {
            Ok(len) => len,
            Err(error) => {
                debug!(%peer, %error, "media stream closed");
                break;
            }
        };
        let mut rest = vec![0u8; len];
        if stream.read_exact(&mut rest).await.is_err() {
            break;
        }
        let frame = match Frame::decode(Bytes::from(rest)) {
            Ok(frame) => frame,
            Err(error) => {
                debug!(%peer, %error, "media stream closed");
                break;
            }
        };
        stats.frames_received.fetch_add(1, Ordering::Relaxed);
        if staleness.is_stale(frame.sent_us, micros(crate::clock::now())) {
            stats.dropped_stale.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        deliver(frame);
    }
    let _ = stream.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(packet: &[u8]) -> Frame {
        Frame {
            session: 0x0102_0304_0506_0708,
            line: 2,
            kind: Kind::Rtcp,
            sent_us: 123_456_789,
            packet: Bytes::copy_from_slice(packet),
        }
    }

    #[test]
    fn encode_then_decode_is_the_identity() {
        for packet in [&b""[..], b"\x80\x00rtp", &[7u8; MAX_PACKET]] {
            let original = frame(packet);
            let wire = original.encode().unwrap();
            let len = Frame::check_len(u16::from_be_bytes([wire[0], wire[1]])).unwrap();
            assert_eq!(len, wire.len() - 2, "the length field is the real length");
            assert_eq!(Frame::decode(wire.slice(2..)).unwrap(), original);
        }
    }

    #[test]
    fn frames_out_of_bounds_are_refused() {
        assert!(frame(&[0u8; MAX_PACKET + 1]).encode().is_none());
        assert_eq!(Frame::check_len(3), Err(FrameError::Length(3)));
        assert!(Frame::check_len(u16::MAX).is_err());
        let mut wire = frame(b"x").encode().unwrap().to_vec();
        wire[2 + 9] = 9;
        assert_eq!(
            Frame::decode(Bytes::from(wire).slice(2..)),
            Err(FrameError::Kind(9))
        );
        assert!(Frame::decode(Bytes::from_static(b"short")).is_err());
    }

    #[test]
    fn a_frame_later_than_the_threshold_is_stale_whatever_the_clock_offset() {
        // The sender's clock is 10 s ahead of ours: delays are negative, and only their
        // differences count.
        let ahead = 10_000_000u64;
        let mut s = Staleness::new(Duration::from_millis(200));
        let sent = |ms: u64| ahead + ms * 1000;
        let received = |ms: u64| ms * 1000;
        assert!(!s.is_stale(sent(0), received(30)));
        assert!(
            !s.is_stale(sent(20), received(40)),
            "10 ms faster: the new lowest"
        );
        assert!(
            !s.is_stale(sent(40), received(40 + 20 + 200)),
            "200 ms late is on time"
        );
        assert!(
            s.is_stale(sent(60), received(60 + 20 + 201)),
            "201 ms late is stale"
        );
        assert!(
            !s.is_stale(sent(80), received(95)),
            "later frames are not held back"
        );
    }

    #[test]
    fn a_path_that_stays_slower_becomes_the_new_normal() {
        let mut s = Staleness::new(Duration::from_millis(200));
        assert!(!s.is_stale(0, 10_000));
        let mut stale = 0;
        for i in 1..=60u64 {
            // From now on every frame takes 500 ms more: a relay.
            if s.is_stale(i * 20_000, i * 20_000 + 510_000) {
                stale += 1;
            }
        }
        assert_eq!(stale, STALE_RUN_RESET);
    }
}
