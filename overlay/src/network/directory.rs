//! The members a node knows without a connection to each: its directory, sans-IO.
//!
//! Kademlia's table holds only peers this node has been connected to, so on an overlay of a
//! thousand nodes a node knows a few hundred, and its guess of a resource's replica set is
//! often wrong (a lookup then costs a Kademlia walk, not one round trip). The directory holds
//! every member the node has heard of, each with the addresses it can be dialled on and, in
//! an overlay with an enrollment CA, its Node-ID certificate, so that whoever learns the entry
//! checks it before using the peer ([`super::admission`]).
//!
//! Members enter when identify admits them over a connection ([`Directory::seen`]), or when a
//! peer passes them on ([`Directory::learn`]: the node's membership exchange, after the
//! caller checked each entry's Node-ID). A member leaves when a dial to it fails
//! ([`Directory::failed`]); it is then not learned again for [`GONE_FOR`], so that peers that
//! have not noticed yet do not bring it back at once.
//!
//! Bounds: at most `max` members (when full, the one heard of longest ago without a
//! connection since makes room); at most `max` departed members remembered, each for
//! [`GONE_FOR`]; [`MAX_ADDRS`] addresses a member.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use libp2p::{Multiaddr, PeerId};

/// How long a member whose dial failed is not learned again.
pub(crate) const GONE_FOR: Duration = Duration::from_secs(30 * 60);
/// The longest certificate text a member may carry (one is about 300 characters).
pub(crate) const MAX_CERTIFICATE: usize = 1024;
/// The most addresses kept for one member.
pub const MAX_ADDRS: usize = 4;

/// One member as the directory keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its Node-ID.
    pub peer: PeerId,
    /// Where it can be dialled.
    pub addrs: Vec<Multiaddr>,
    /// Its Node-ID certificate as identify announced it (`p2psip-node-cert-v1:<hex>`), in an
    /// overlay with an enrollment CA.
    pub certificate: Option<String>,
}

#[derive(Debug)]
struct Entry {
    addrs: Vec<Multiaddr>,
    certificate: Option<String>,
    /// When this node last had word of it: learned, or identified over a connection.
    seen: Instant,
    /// When it entered (the news of [`Directory::news`]).
    learned: Instant,
}

/// The members this node knows (see the [module docs](self)).
#[derive(Debug)]
pub(crate) struct Directory {
    me: PeerId,
    max: usize,
    entries: BTreeMap<PeerId, Entry>,
    gone: HashMap<PeerId, Instant>,
    refused: u64,
}

impl Directory {
    /// The directory of node `me`, holding at most `max` members.
    pub(crate) fn new(me: PeerId, max: usize) -> Directory {
        Directory {
            me,
            max,
            entries: BTreeMap::new(),
            gone: HashMap::new(),
            refused: 0,
        }
    }

    /// Identify admitted `member` over a connection at `now`: it enters, or its addresses
    /// and certificate are replaced. Whether it is new.
    pub(crate) fn seen(&mut self, member: Member, now: Instant) -> bool {
        self.gone.remove(&member.peer);
        self.insert(member, now, true)
    }

    /// A peer passed `member` on (its Node-ID already checked). Whether it is new; a member
    /// already known keeps what it has, one whose dial failed lately is refused.
    pub(crate) fn learn(&mut self, member: Member, now: Instant) -> bool {
        if let Some(&until) = self.gone.get(&member.peer) {
            if now < until {
                self.refused += 1;
                return false;
            }
            self.gone.remove(&member.peer);
        }
        self.insert(member, now, false)
    }

    fn insert(&mut self, member: Member, now: Instant, replace: bool) -> bool {
        if member.peer == self.me || self.max == 0 {
            return false;
        }
        let mut addrs = Vec::with_capacity(MAX_ADDRS);
        for addr in member.addrs {
            if addrs.len() < MAX_ADDRS && !addrs.contains(&addr) {
                addrs.push(addr);
            }
        }
        if let Some(entry) = self.entries.get_mut(&member.peer) {
            if replace {
                entry.seen = now;
                if !addrs.is_empty() {
                    entry.addrs = addrs;
                }
                if member.certificate.is_some() {
                    entry.certificate = member.certificate;
                }
            }
            return false;
        }
        if addrs.is_empty() {
            self.refused += 1;
            return false;
        }
        if self.entries.len() >= self.max {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, entry)| entry.seen)
                .map(|(peer, _)| *peer);
            if let Some(oldest) = oldest {
                self.entries.remove(&oldest);
            }
        }
        self.entries.insert(
            member.peer,
            Entry {
                addrs,
                certificate: member.certificate,
                seen: now,
                learned: now,
            },
        );
        true
    }

    /// A dial to `peer` failed at `now`: it leaves, and is not learned again for
    /// [`GONE_FOR`]. Whether it was here.
    pub(crate) fn failed(&mut self, peer: &PeerId, now: Instant) -> bool {
        let was = self.entries.remove(peer).is_some();
        if was {
            if self.gone.len() >= self.max {
                self.gone.retain(|_, until| *until > now);
            }
            if self.gone.len() < self.max {
                self.gone.insert(*peer, now + GONE_FOR);
            }
        }
        was
    }

    /// Whether `peer` is here.
    pub(crate) fn contains(&self, peer: &PeerId) -> bool {
        self.entries.contains_key(peer)
    }

    /// The addresses `peer` can be dialled on (empty when it is not here).
    pub(crate) fn addresses(&self, peer: &PeerId) -> Vec<Multiaddr> {
        self.entries
            .get(peer)
            .map(|entry| entry.addrs.clone())
            .unwrap_or_default()
    }

    /// Every member.
    pub(crate) fn peers(&self) -> Vec<PeerId> {
        self.entries.keys().copied().collect()
    }

    /// How many members are here.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }

    /// How many members passed on were refused: departed lately, no address, or (counted by
    /// the caller through [`Directory::refuse`]) not admitted.
    pub(crate) fn refused(&self) -> u64 {
        self.refused
    }

    /// Counts a member passed on that the caller refused.
    pub(crate) fn refuse(&mut self) {
        self.refused += 1;
    }

    /// At most `limit` members after `after` in Node-ID order (from the first when `None`),
    /// and whether more follow: one page of the whole directory.
    pub(crate) fn page(&self, after: Option<&PeerId>, limit: usize) -> (Vec<Member>, bool) {
        use std::ops::Bound;
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut members = self.entries.range((lower, Bound::Unbounded));
        let page: Vec<Member> = members
            .by_ref()
            .take(limit)
            .map(|(peer, entry)| member(peer, entry))
            .collect();
        (page, members.next().is_some())
    }

    /// At most `limit` of the members that entered within `within` before `now`, the latest
    /// first: what this node passes on in an exchange.
    pub(crate) fn news(&self, now: Instant, within: Duration, limit: usize) -> Vec<Member> {
        let mut fresh: Vec<(&PeerId, &Entry)> = self
            .entries
            .iter()
            .filter(|(_, entry)| now.saturating_duration_since(entry.learned) <= within)
            .collect();
        fresh.sort_by_key(|(_, entry)| std::cmp::Reverse(entry.learned));
        fresh
            .into_iter()
            .take(limit)
            .map(|(peer, entry)| member(peer, entry))
            .collect()
    }
}

fn member(peer: &PeerId, entry: &Entry) -> Member {
    Member {
        peer: *peer,
        addrs: entry.addrs.clone(),
        certificate: entry.certificate.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(n: u16) -> Member {
        Member {
            peer: PeerId::random(),
            addrs: vec![format!("/ip4/127.0.0.1/udp/{n}/quic-v1").parse().unwrap()],
            certificate: None,
        }
    }

    #[test]
    fn it_holds_at_most_max_members_and_makes_room_with_the_stalest() {
        let start = Instant::now();
        let mut directory = Directory::new(PeerId::random(), 3);
        let members: Vec<Member> = (0..4).map(member).collect();
        for (i, m) in members.iter().enumerate() {
            let at = start + Duration::from_secs(i as u64);
            assert!(directory.learn(m.clone(), at));
        }
        assert_eq!(directory.len(), 3);
        assert!(
            !directory.contains(&members[0].peer),
            "the stalest made room"
        );
        // Word of member 1 over a connection keeps it over member 2.
        directory.seen(members[1].clone(), start + Duration::from_secs(10));
        directory.learn(member(9), start + Duration::from_secs(11));
        assert!(directory.contains(&members[1].peer));
        assert!(!directory.contains(&members[2].peer));
    }

    #[test]
    fn a_member_whose_dial_failed_is_not_learned_again_for_a_while() {
        let start = Instant::now();
        let mut directory = Directory::new(PeerId::random(), 8);
        let gone = member(1);
        directory.learn(gone.clone(), start);
        assert!(directory.failed(&gone.peer, start));
        assert!(!directory.learn(gone.clone(), start + GONE_FOR / 2));
        assert_eq!(directory.refused(), 1);
        assert!(directory.learn(gone.clone(), start + GONE_FOR));
        // A connection proves it back at once.
        directory.failed(&gone.peer, start + GONE_FOR);
        assert!(directory.seen(gone.clone(), start + GONE_FOR));
    }

    #[test]
    fn a_passed_on_member_changes_nothing_known_and_needs_an_address() {
        let now = Instant::now();
        let me = PeerId::random();
        let mut directory = Directory::new(me, 8);
        let known = member(1);
        directory.seen(known.clone(), now);
        let mut other = known.clone();
        other.addrs = vec!["/ip4/127.0.0.1/udp/2/quic-v1".parse().unwrap()];
        assert!(!directory.learn(other, now));
        assert_eq!(directory.addresses(&known.peer), known.addrs);
        let mut bare = member(3);
        bare.addrs.clear();
        assert!(!directory.learn(bare, now));
        let mut myself = member(4);
        myself.peer = me;
        assert!(!directory.learn(myself, now));
        assert_eq!(directory.len(), 1);
    }

    #[test]
    fn pages_walk_the_whole_directory_once_and_news_is_the_latest() {
        let start = Instant::now();
        let mut directory = Directory::new(PeerId::random(), 64);
        for i in 0..10 {
            directory.learn(member(i), start + Duration::from_secs(u64::from(i)));
        }
        let mut walked = Vec::new();
        let mut after = None;
        loop {
            let (page, more) = directory.page(after.as_ref(), 4);
            walked.extend(page.iter().map(|m| m.peer));
            after = walked.last().copied();
            if !more {
                break;
            }
        }
        assert_eq!(walked, directory.peers());
        let at = start + Duration::from_secs(9);
        let news = directory.news(at, Duration::from_secs(2), 8);
        let latest: Vec<PeerId> = news.iter().map(|m| m.peer).collect();
        assert_eq!(latest.len(), 3, "members 7, 8 and 9");
        assert_eq!(directory.news(at, Duration::ZERO, 8)[0].peer, latest[0]);
        assert_eq!(directory.news(at, Duration::from_secs(2), 2).len(), 2);
        let later = start + Duration::from_secs(20);
        assert!(directory.news(later, Duration::from_secs(2), 8).is_empty());
    }
}
