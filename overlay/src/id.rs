//! Names in the overlay: Resource-IDs of addresses-of-record, Node-IDs, and the XOR distance
//! between them.
//!
//! # Resource-IDs
//!
//! A [`ResourceId`] is `blake3(normalize_aor(aor))`: the 32-byte blake3 hash of the UTF-8
//! bytes of the normalized address-of-record. [`normalize_aor`] turns the forms a SIP user
//! agent may write for one AOR into one string, so that `sip:Bob@Example.org;transport=tcp`
//! and `Bob@example.org` land on the same resource (the user part keeps its case). Its rules,
//! in order:
//!
//! 1. Surrounding whitespace and one pair of enclosing angle brackets (`<...>`) are removed.
//! 2. The scheme `sip:` or `sips:` (any case) is dropped; text with no scheme is taken as
//!    `user@host` (and then its user part may not hold a `:`, which would read as a scheme).
//!    Any other scheme (`tel:`, `mailto:`, ...) is refused.
//! 3. The user part (before the first `@`) is required and must not be empty. A password
//!    (`user:password@`) is dropped. `%`-escapes in the user part are decoded (`b%6Fb` is
//!    `bob`); the decoded user must be UTF-8 without control characters. The user part keeps
//!    its case (RFC 3261 §19.1.4 compares it case-sensitively) and is not otherwise rewritten
//!    (telephone numbers keep their visual separators).
//! 4. URI parameters (`;transport=tcp`, `;user=phone`, ...) and headers (`?subject=...`) after
//!    the host are dropped.
//! 5. The host is lower-cased (ASCII). An IPv6 reference is written in its canonical
//!    compressed form (`[2001:DB8:0::1]` becomes `[2001:db8::1]`). Escapes are not allowed in
//!    the host. A trailing dot is kept (`example.org.` is another host than `example.org`).
//! 6. The port is kept unless it is the default port of the scheme given: 5060 for `sip:`
//!    and for text without a scheme, 5061 for `sips:`. So `sips:bob@example.org:5061`,
//!    `sip:bob@example.org:5060` and `bob@example.org` are one AOR; `sip:bob@example.org:5061`
//!    is another.
//! 7. The result is `user@host` or `user@host:port`, at most [`MAX_AOR_LEN`] bytes.
//!
//! # Node-IDs and distance
//!
//! A node's [`NodeId`] is its libp2p [`PeerId`]. Kademlia (libp2p-kad) places peers and keys
//! on one 256-bit ring by hashing them with SHA-256 (`KBucketKey`): a peer by the bytes of its
//! `PeerId`, a key by its bytes. A resource is looked up in kad by its 32 raw bytes
//! (`get_closest_peers(resource.to_vec())`), so [`distance`] hashes the resource's bytes the
//! same way; the replicas of a resource are the peers with the smallest [`distance`] to it.

use std::fmt;
use std::net::Ipv6Addr;
use std::str::FromStr;

use libp2p::PeerId;
use libp2p::kad::{KBucketDistance, KBucketKey};
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// A node's identity in the overlay: the libp2p `PeerId` of its ed25519 key.
pub type NodeId = PeerId;

/// The longest normalized AOR accepted, in bytes.
pub const MAX_AOR_LEN: usize = 1024;

/// Where data lives in the overlay: the blake3 hash of a normalized address-of-record.
///
/// `Display` and `FromStr` use 64 lower-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ResourceId([u8; 32]);

impl ResourceId {
    /// The Resource-ID of an address-of-record: `blake3(normalize_aor(aor))`.
    pub fn for_aor(aor: &str) -> Result<ResourceId, Error> {
        Ok(ResourceId::for_normalized(&normalize_aor(aor)?))
    }

    /// The Resource-ID of an AOR already in normalized form (no check is made).
    pub fn for_normalized(normalized: &str) -> ResourceId {
        ResourceId(*blake3::hash(normalized.as_bytes()).as_bytes())
    }

    /// A Resource-ID from its 32 bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> ResourceId {
        ResourceId(bytes)
    }

    /// The 32 bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The 32 bytes as a vector, the form kad takes as a key (`get_closest_peers`).
    pub fn to_vec(&self) -> Vec<u8> {
        self.0.to_vec()
    }

    /// The resource's place on kad's ring (SHA-256 of its bytes).
    pub fn kad_key(&self) -> KBucketKey<Vec<u8>> {
        KBucketKey::new(self.to_vec())
    }
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ResourceId({self})")
    }
}

impl FromStr for ResourceId {
    type Err = Error;

    /// Reads 64 hex digits.
    fn from_str(text: &str) -> Result<ResourceId, Error> {
        let bad = || Error::invalid(format!("{text:?} is not a Resource-ID (64 hex digits)"));
        let digits = text.as_bytes();
        if digits.len() != 64 {
            return Err(bad());
        }
        let mut bytes = [0u8; 32];
        for (byte, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
            let high = hex_value(pair[0]).ok_or_else(bad)?;
            let low = hex_value(pair[1]).ok_or_else(bad)?;
            *byte = high << 4 | low;
        }
        Ok(ResourceId(bytes))
    }
}

/// The XOR distance between a node and a resource on kad's ring, as kad measures it when it
/// looks for the peers closest to `resource` (SHA-256 of the `PeerId` bytes and of the
/// resource's bytes).
pub fn distance(node: &PeerId, resource: &ResourceId) -> KBucketDistance {
    KBucketKey::from(*node).distance(&resource.kad_key())
}

/// The XOR distance between two nodes on kad's ring.
pub fn node_distance(a: &PeerId, b: &PeerId) -> KBucketDistance {
    KBucketKey::from(*a).distance(&KBucketKey::from(*b))
}

/// The `count` nodes of `nodes` closest to `resource`, closest first (its replica set when
/// `nodes` is every peer known). Duplicates count once.
pub fn closest_nodes(
    resource: &ResourceId,
    nodes: impl IntoIterator<Item = PeerId>,
    count: usize,
) -> Vec<PeerId> {
    let key = resource.kad_key();
    let mut ranked: Vec<(KBucketDistance, PeerId)> = nodes
        .into_iter()
        .map(|node| (KBucketKey::from(node).distance(&key), node))
        .collect();
    ranked.sort();
    ranked.dedup();
    ranked
        .into_iter()
        .take(count)
        .map(|(_, node)| node)
        .collect()
}

/// Normalizes an address-of-record by the rules of the [module docs](self): the string whose
/// blake3 hash is the AOR's [`ResourceId`].
///
/// ```
/// use p2psip_overlay::id::normalize_aor;
///
/// assert_eq!(normalize_aor("sip:Bob@Example.ORG").unwrap(), "Bob@example.org");
/// assert_eq!(normalize_aor("<sips:b%6Fb@example.org:5061;transport=tls>").unwrap(), "bob@example.org");
/// assert_eq!(normalize_aor("sip:bob:pw@example.org:5080?subject=hi").unwrap(), "bob@example.org:5080");
/// assert!(normalize_aor("tel:+15551234").is_err());
/// ```
pub fn normalize_aor(aor: &str) -> Result<String, Error> {
    let fail = |reason: &'static str| Error::InvalidAor {
        aor: aor.chars().take(200).collect(),
        reason,
    };
    let mut text = aor.trim();
    if let Some(inner) = text.strip_prefix('<').and_then(|t| t.strip_suffix('>')) {
        text = inner;
    }
    let (rest, default_port) = if let Some(rest) = strip_prefix_ignore_case(text, "sips:") {
        (rest, 5061)
    } else if let Some(rest) = strip_prefix_ignore_case(text, "sip:") {
        (rest, 5060)
    } else {
        (text, 5060)
    };
    let Some(at) = rest.find('@') else {
        if looks_like_scheme(rest) {
            return Err(fail("only sip: and sips: addresses can be stored"));
        }
        return Err(fail("an address-of-record needs a user part: user@host"));
    };
    let (userinfo, hostport) = (&rest[..at], &rest[at + 1..]);
    if rest.len() == text.len() && looks_like_scheme(userinfo) {
        return Err(fail("only sip: and sips: addresses can be stored"));
    }
    let user_escaped = match userinfo.find(':') {
        Some(colon) => &userinfo[..colon],
        None => userinfo,
    };
    let user = percent_decode(user_escaped).ok_or(fail("a %-escape in the user part is bad"))?;
    if user.is_empty() {
        return Err(fail("the user part is empty"));
    }
    if user.chars().any(|c| c.is_control()) {
        return Err(fail("the user part holds a control character"));
    }
    let hostport = match hostport.find([';', '?']) {
        Some(end) => &hostport[..end],
        None => hostport,
    };
    let (host, port) = split_host_port(hostport).map_err(fail)?;
    let mut normalized = user;
    normalized.push('@');
    normalized.push_str(&host);
    if let Some(port) = port.filter(|&p| p != default_port) {
        normalized.push(':');
        normalized.push_str(&port.to_string());
    }
    if normalized.len() > MAX_AOR_LEN {
        return Err(fail("it is longer than 1024 bytes"));
    }
    Ok(normalized)
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

/// `scheme:...` where the scheme is RFC 3986's `ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )`.
fn looks_like_scheme(text: &str) -> bool {
    let Some(colon) = text.find(':') else {
        return false;
    };
    let scheme = &text[..colon];
    scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let high = hex_value(*bytes.get(i + 1)?)?;
            let low = hex_value(*bytes.get(i + 2)?)?;
            out.push(high << 4 | low);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

/// Splits `host[:port]`, lower-cases the host, writes IPv6 references canonically.
fn split_host_port(hostport: &str) -> Result<(String, Option<u16>), &'static str> {
    let (host, port) = if let Some(rest) = hostport.strip_prefix('[') {
        let close = rest.find(']').ok_or("an IPv6 reference lacks its ']'")?;
        let address: Ipv6Addr = rest[..close]
            .parse()
            .map_err(|_| "the IPv6 reference is not an IPv6 address")?;
        let after = &rest[close + 1..];
        let port = match after.strip_prefix(':') {
            Some(port) => Some(port),
            None if after.is_empty() => None,
            None => return Err("text follows the IPv6 reference"),
        };
        (format!("[{address}]"), port)
    } else {
        let (host, port) = match hostport.rfind(':') {
            Some(colon) => (&hostport[..colon], Some(&hostport[colon + 1..])),
            None => (hostport, None),
        };
        if host.is_empty() {
            return Err("the host is empty");
        }
        if !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            return Err("the host may hold only letters, digits, '-' and '.'");
        }
        (host.to_ascii_lowercase(), port)
    };
    let port = match port {
        None => None,
        Some(digits) => {
            if digits.is_empty() || digits.len() > 5 || !digits.bytes().all(|b| b.is_ascii_digit())
            {
                return Err("the port is not a number");
            }
            match digits.parse::<u16>() {
                Ok(0) | Err(_) => return Err("the port is not between 1 and 65535"),
                Ok(port) => Some(port),
            }
        }
    };
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(aor: &str) -> String {
        normalize_aor(aor).unwrap()
    }

    #[test]
    fn scheme_parameters_and_headers_are_dropped() {
        assert_eq!(norm("sip:bob@example.org"), "bob@example.org");
        assert_eq!(norm("SIPS:bob@example.org"), "bob@example.org");
        assert_eq!(norm("bob@example.org"), "bob@example.org");
        assert_eq!(
            norm("sip:bob@example.org;transport=tcp;user=phone?subject=x&h=y"),
            "bob@example.org"
        );
        assert_eq!(norm("  <sip:bob@example.org>  "), "bob@example.org");
    }

    #[test]
    fn host_is_lower_cased_and_user_keeps_its_case() {
        assert_eq!(norm("sip:Bob@EXAMPLE.Org"), "Bob@example.org");
        assert_ne!(norm("sip:Bob@example.org"), norm("sip:bob@example.org"));
    }

    #[test]
    fn user_escapes_are_decoded_and_passwords_dropped() {
        assert_eq!(norm("sip:b%6fb@example.org"), "bob@example.org");
        assert_eq!(norm("sip:a%20b@example.org"), "a b@example.org");
        assert_eq!(norm("sip:bob:secret@example.org"), "bob@example.org");
        assert_eq!(
            norm("sip:alice;day=tuesday@atlanta.com"),
            "alice;day=tuesday@atlanta.com"
        );
    }

    #[test]
    fn default_ports_of_the_scheme_are_dropped_others_kept() {
        assert_eq!(norm("sip:bob@example.org:5060"), "bob@example.org");
        assert_eq!(norm("sips:bob@example.org:5061"), "bob@example.org");
        assert_eq!(norm("bob@example.org:5060"), "bob@example.org");
        assert_eq!(norm("sip:bob@example.org:5061"), "bob@example.org:5061");
        assert_eq!(norm("sips:bob@example.org:5060"), "bob@example.org:5060");
        assert_eq!(norm("sip:bob@example.org:5080;lr"), "bob@example.org:5080");
    }

    #[test]
    fn ipv6_references_are_canonical() {
        assert_eq!(norm("sip:bob@[2001:DB8:0::1]:5060"), "bob@[2001:db8::1]");
        assert_eq!(norm("sip:bob@[::1]:5070"), "bob@[::1]:5070");
    }

    #[test]
    fn bad_aors_are_refused_with_a_reason() {
        for bad in [
            "",
            "sip:",
            "sip:example.org",
            "sip:@example.org",
            "tel:+15551234",
            "mailto:bob@example.org",
            "sip:bob@",
            "sip:bob@exa mple.org",
            "sip:bob@example.org:",
            "sip:bob@example.org:0",
            "sip:bob@example.org:65536",
            "sip:bob@example.org:50x",
            "sip:b%zzb@example.org",
            "sip:b%ffb@example.org",
            "sip:b%00b@example.org",
            "sip:bob@[::1",
            "sip:bob@[nope]",
            "sip:bob@[::1]x",
        ] {
            let error = normalize_aor(bad).unwrap_err();
            assert!(matches!(error, Error::InvalidAor { .. }), "{bad}: {error}");
        }
        let long = format!("sip:{}@example.org", "a".repeat(MAX_AOR_LEN));
        assert!(normalize_aor(&long).is_err());
    }

    #[test]
    fn resource_id_is_blake3_of_the_normalized_aor() {
        let id = ResourceId::for_aor("sip:bob@Example.org:5060").unwrap();
        assert_eq!(id.as_bytes(), blake3::hash(b"bob@example.org").as_bytes());
        assert_eq!(id, ResourceId::for_normalized("bob@example.org"));
        assert_eq!(id.to_string().parse::<ResourceId>().unwrap(), id);
        assert!("xyz".parse::<ResourceId>().is_err());
    }

    #[test]
    fn distance_matches_kad_keys() {
        let peer = PeerId::random();
        let resource = ResourceId::for_normalized("bob@example.org");
        let by_kad = KBucketKey::from(peer).distance(&KBucketKey::new(resource.to_vec()));
        assert_eq!(distance(&peer, &resource), by_kad);
        assert_eq!(node_distance(&peer, &peer), KBucketDistance::default());
    }

    #[test]
    fn closest_nodes_are_sorted_by_distance() {
        let resource = ResourceId::for_normalized("bob@example.org");
        let peers: Vec<PeerId> = (0..20).map(|_| PeerId::random()).collect();
        let closest = closest_nodes(&resource, peers.iter().copied().chain(peers.clone()), 3);
        assert_eq!(closest.len(), 3);
        let mut all = peers.clone();
        all.sort_by_key(|p| distance(p, &resource));
        assert_eq!(closest, all[..3]);
    }
}
