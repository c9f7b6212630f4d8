//! Branches, tags and Call-IDs (RFC 3261 §8.1.1.4, §8.1.1.7, §19.3).
//!
//! Two generators behind one type:
//! - [`Ids::from_os`] (and [`Ids::keyed`]): what a node uses. A CSPRNG: each block of output is
//!   `SHA-256(key || counter)` over a 256-bit key from the operating system's RNG, so nobody
//!   who sees any number of branches, tags or Call-IDs can tell the next ones (a forged
//!   response or CANCEL needs the branch of a live transaction).
//! - [`Ids::new`]: SplitMix64 over a 64-bit seed, for tests that want the same identifiers on
//!   every run. Never in production: one output gives away the state, and with it every
//!   identifier after it.

use std::fmt::{self, Write};

use sha2::Digest as _;

use crate::header::MAGIC_COOKIE;

/// Makes identifiers, 64 random bits each (RFC 3261 asks for at least 32 bits of randomness
/// in tags). See the module docs for the two generators.
#[derive(Clone)]
pub struct Ids {
    source: Source,
}

#[derive(Clone)]
enum Source {
    /// SplitMix64: seedable, predictable.
    Seeded(u64),
    /// SHA-256 in counter mode under a secret key; `block` holds what is left of the last
    /// output, `used` how many of its four words are gone.
    Keyed {
        key: [u8; 32],
        counter: u64,
        block: [u64; 4],
        used: usize,
    },
}

impl fmt::Debug for Ids {
    /// Never prints the state.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.source {
            Source::Seeded(_) => f.write_str("Ids(seeded)"),
            Source::Keyed { .. } => f.write_str("Ids(keyed)"),
        }
    }
}

impl Ids {
    /// A predictable generator from a seed (SplitMix64), for tests: the same seed gives the
    /// same identifiers. Not for production, see [`Ids::from_os`].
    pub fn new(seed: u64) -> Ids {
        Ids {
            source: Source::Seeded(seed),
        }
    }

    /// A generator keyed with 256 secret bits ([`Ids::from_os`] draws them).
    pub fn keyed(key: [u8; 32]) -> Ids {
        Ids {
            source: Source::Keyed {
                key,
                counter: 0,
                block: [0; 4],
                used: 4,
            },
        }
    }

    /// A generator keyed from the operating system's RNG: what a node uses. Fails only when
    /// the operating system has no RNG to offer.
    pub fn from_os() -> Result<Ids, getrandom::Error> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key)?;
        Ok(Ids::keyed(key))
    }

    /// Whether this generator is the predictable, seeded one ([`Ids::new`]).
    pub fn is_seeded(&self) -> bool {
        matches!(self.source, Source::Seeded(_))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        match &mut self.source {
            Source::Seeded(state) => {
                *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = *state;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^ (z >> 31)
            }
            Source::Keyed {
                key,
                counter,
                block,
                used,
            } => {
                if *used == block.len() {
                    let out = sha2::Sha256::new()
                        .chain_update(*key)
                        .chain_update(counter.to_be_bytes())
                        .finalize();
                    *counter = counter.wrapping_add(1);
                    for (word, chunk) in block.iter_mut().zip(out.chunks_exact(8)) {
                        let mut bytes = [0u8; 8];
                        bytes.copy_from_slice(chunk);
                        *word = u64::from_le_bytes(bytes);
                    }
                    *used = 0;
                }
                let word = block[*used];
                *used += 1;
                word
            }
        }
    }

    /// A Via branch with the RFC 3261 magic cookie.
    pub fn branch(&mut self) -> String {
        let mut b = String::with_capacity(23);
        b.push_str(MAGIC_COOKIE);
        let _ = write!(b, "{:016x}", self.next_u64());
        b
    }

    /// A From or To tag.
    pub fn tag(&mut self) -> String {
        format!("{:x}", self.next_u64())
    }

    /// A Call-ID, `random@host`.
    pub fn call_id(&mut self, host: &str) -> String {
        format!(
            "{:016x}{:08x}@{host}",
            self.next_u64(),
            self.next_u64() as u32
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_well_formed_and_differ() {
        let mut ids = Ids::new(7);
        let (a, b) = (ids.branch(), ids.branch());
        assert!(a.starts_with("z9hG4bK") && a.len() == 23 && a != b);
        assert_ne!(ids.tag(), ids.tag());
        assert!(ids.call_id("h").ends_with("@h"));
        assert_eq!(Ids::new(7).branch(), a, "deterministic for a seed");
    }

    #[test]
    fn keyed_ids_depend_on_the_key_only() {
        let mut one = Ids::keyed([1; 32]);
        let mut again = Ids::keyed([1; 32]);
        let mut other = Ids::keyed([2; 32]);
        let first: Vec<u64> = (0..9).map(|_| one.next_u64()).collect();
        assert_eq!(first, (0..9).map(|_| again.next_u64()).collect::<Vec<_>>());
        assert_ne!(first, (0..9).map(|_| other.next_u64()).collect::<Vec<_>>());
        let distinct: std::collections::HashSet<u64> = first.iter().copied().collect();
        assert_eq!(distinct.len(), first.len());
        assert!(one.branch().starts_with("z9hG4bK"));
    }

    #[test]
    fn os_ids_differ_between_generators() {
        let (mut a, mut b) = (Ids::from_os().unwrap(), Ids::from_os().unwrap());
        assert!(!a.is_seeded());
        assert_ne!(a.branch(), b.branch());
        assert_ne!(a.tag(), b.tag());
    }
}
