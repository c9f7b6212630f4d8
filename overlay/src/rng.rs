//! Identifiers nobody can guess: the source of transaction ids and nonces.
//!
//! A node takes them from the operating system's RNG ([`Rng::os`], `getrandom`) so that no
//! peer can predict the transaction id or the nonce of a request it did not see. Tests may use
//! [`Rng::seeded`] for reproducible runs; it is a plain counter-based generator (splitmix64),
//! predictable by design, never for production.

use std::sync::Mutex;
use std::sync::PoisonError;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of random identifiers.
#[derive(Debug)]
pub struct Rng(Source);

#[derive(Debug)]
enum Source {
    Os,
    Seeded(Mutex<u64>),
}

/// Counts the draws that had to fall back from the OS RNG (never seen on a working system).
static FALLBACKS: AtomicU64 = AtomicU64::new(0);

impl Rng {
    /// The operating system's RNG: what a node uses.
    pub fn os() -> Rng {
        Rng(Source::Os)
    }

    /// A reproducible generator from `seed` (tests only: its output is predictable).
    pub fn seeded(seed: u64) -> Rng {
        Rng(Source::Seeded(Mutex::new(seed)))
    }

    /// Fills `buf` with random bytes.
    pub fn fill(&self, buf: &mut [u8]) {
        match &self.0 {
            Source::Os => {
                if let Err(error) = getrandom::fill(buf) {
                    // getrandom fails only where the OS has no RNG; do not stop the node, but
                    // say so loudly and mix the clock and a counter through blake3.
                    tracing::error!(%error, "the operating system's RNG failed");
                    let n = FALLBACKS.fetch_add(1, Ordering::Relaxed);
                    let now = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |t| t.as_nanos());
                    let mut hasher = blake3::Hasher::new_derive_key("p2psip rng fallback v1");
                    hasher.update(&now.to_le_bytes());
                    hasher.update(&n.to_le_bytes());
                    hasher.finalize_xof().fill(buf);
                }
            }
            Source::Seeded(state) => {
                let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
                for chunk in buf.chunks_mut(8) {
                    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
                    let mut z = *state;
                    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                    z ^= z >> 31;
                    chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
                }
            }
        }
    }

    /// A random `u64`.
    pub fn u64(&self) -> u64 {
        let mut bytes = [0; 8];
        self.fill(&mut bytes);
        u64::from_le_bytes(bytes)
    }

    /// A random array of `N` bytes.
    pub fn bytes<const N: usize>(&self) -> [u8; N] {
        let mut bytes = [0; N];
        self.fill(&mut bytes);
        bytes
    }
}

impl Default for Rng {
    fn default() -> Rng {
        Rng::os()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_is_reproducible_and_os_is_not() {
        let (a, b) = (Rng::seeded(7), Rng::seeded(7));
        assert_eq!(a.u64(), b.u64());
        assert_eq!(a.bytes::<13>(), b.bytes::<13>());
        let os = Rng::os();
        let draws: std::collections::HashSet<u64> = (0..64).map(|_| os.u64()).collect();
        assert_eq!(draws.len(), 64);
    }
}
