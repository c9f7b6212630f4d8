//! Branches, tags and Call-IDs (RFC 3261 §8.1.1.4, §8.1.1.7, §19.3), from a seedable
//! generator: seed it from the operating system in a node, with a constant in a test.

use std::fmt::Write;

use crate::header::MAGIC_COOKIE;

/// Makes identifiers: SplitMix64 over a 64-bit seed, 64 random bits per identifier (RFC 3261
/// asks for at least 32 bits of randomness in tags).
#[derive(Debug, Clone)]
pub struct Ids {
    state: u64,
}

impl Ids {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Ids {
        Ids { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
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
}
