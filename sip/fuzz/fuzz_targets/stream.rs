//! `StreamDecoder` on a byte stream; the first byte chooses the chunk size the rest is fed in
//! (0: all at once). Every message framed must be what `Message::parse` makes of the bytes the
//! decoder consumed for it, and must print and parse back to itself.

#![no_main]

use libfuzzer_sys::fuzz_target;
use p2psip_sip::{Limits, StreamDecoder};
use p2psip_sip_fuzz::{check_frame, visit_error};

fuzz_target!(|data: &[u8]| {
    let Some((&first, input)) = data.split_first() else {
        return;
    };
    let chunk = if first == 0 {
        input.len().max(1)
    } else {
        usize::from(first)
    };
    let mut d = StreamDecoder::default();
    let (mut fed, mut consumed, mut frames) = (0, 0, 0);
    for piece in input.chunks(chunk) {
        d.extend(piece);
        fed += piece.len();
        loop {
            let result = d.decode();
            let now = fed - d.buffered();
            let bytes = &input[consumed..now];
            consumed = now;
            match result {
                Ok(None) => break,
                Ok(Some(frame)) => {
                    frames += 1;
                    assert!(frames <= input.len(), "more frames than bytes");
                    check_frame(&frame, bytes, &Limits::default());
                }
                Err(e) => {
                    visit_error(&e);
                    return;
                }
            }
        }
    }
});
