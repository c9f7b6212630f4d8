//! One store or lookup at a resource's replica set: whom to ask, whom to ask instead, when
//! it is over, sans-IO.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use libp2p::PeerId;
use tracing::debug;

/// Names one request of a query, so that an answer is matched to its request (and a late
/// answer of an abandoned phase is recognised as such).
pub type AskId = u64;

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryAction {
    /// Send the query's request to `peer`; answer with [`Query::answer`] and the same id.
    Ask {
        /// The request's id.
        id: AskId,
        /// To whom.
        peer: PeerId,
    },
    /// Find the peers closest to the resource (a Kademlia lookup, with the live peers the
    /// node knows), nearest first; answer with [`Query::candidates`].
    NeedCandidates,
    /// The query is over (see [`Done`]); nothing more comes, unless the driver rejects a
    /// direct answer ([`Query::fall_back`]).
    Done(Done),
}

/// How a query ended: which peers answered, out of a replica set of how many.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Done {
    /// The peers that answered (a lookup) or acknowledged (a store), in the order they did.
    pub answered: Vec<PeerId>,
    /// The size of the replica set they belong to: `r`, or fewer when the overlay knows
    /// fewer peers.
    pub set: usize,
    /// Whether the peers the node believed closest answered in one round trip, each holding
    /// itself a replica (a lookup's first phase); `false` after a Kademlia lookup.
    pub direct: bool,
}

impl Done {
    /// The acknowledgements a store needs: a majority of the replica set.
    pub fn needed(&self) -> usize {
        self.set / 2 + 1
    }

    /// Whether a majority of the replica set answered.
    pub fn has_majority(&self) -> bool {
        self.answered.len() >= self.needed()
    }
}

/// A peer's answer to one request of a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// It answered (a lookup) or acknowledged (a store). `replica`: whether it holds itself
    /// a member of the replica set (only a lookup's first phase reads it).
    Ok {
        /// Whether it is a replica as far as it knows.
        replica: bool,
    },
    /// It did not answer, is busy, or is not a replica: the next candidate is asked instead.
    Retry,
    /// It refused for good (the entry is forbidden, too old...): not replaced, since the next
    /// peer would refuse the same.
    Refused,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// A lookup's first round trip, to the peers the node believes closest; until when.
    Direct(Instant),
    /// Waiting for the candidates.
    Finding,
    /// Asking the candidates, `set` answers wanted.
    Asking,
    Over,
}

/// A store or a lookup at the replica set of one resource, as the module docs of
/// [`crate::node`] describe them.
///
/// It first asks the `r` peers the node believes closest at once ([`Query::lookup`]). When
/// each answers within the direct timeout and holds itself a replica, it is over in one
/// round trip (`direct`); a lookup's driver then decides by their answers' majority, and when
/// they do not make one it calls [`Query::fall_back`]. Otherwise (or when the node believes
/// no peer closest), it goes on from the candidates of a Kademlia lookup, the earlier answers
/// dropped: it asks the `r` closest candidates at once; a peer that fails, is busy or is not a
/// replica is replaced by the next candidate; one that refuses is not. It is over when `r`
/// answered or the candidates ran out; a store succeeded when a majority of the replica set
/// acknowledged ([`Done::has_majority`]).
///
/// Bounds: a query asks at most `r` believed peers and the candidates it is given, each at
/// most once per phase, and at most `r` at a time.
#[derive(Debug)]
pub struct Query {
    replicas: usize,
    phase: Phase,
    candidates: VecDeque<PeerId>,
    /// The requests under way of the current phase.
    asked: BTreeMap<AskId, PeerId>,
    answered: Vec<PeerId>,
    all_replicas: bool,
    set: usize,
    /// Whether the query ended in its direct phase (a fall-back may follow).
    ended_direct: bool,
    /// Whether it asked beyond the replica set already ([`Query::widen`]).
    widened: bool,
    next_id: AskId,
    ignored: u64,
    actions: VecDeque<QueryAction>,
}

impl Query {
    /// A store or a lookup at the replica set of `replicas` peers: first the peers the node
    /// believes closest (at most `replicas` of them are asked), for at most
    /// `direct_timeout`; with none, the candidates at once.
    pub fn lookup(
        replicas: usize,
        believed: Vec<PeerId>,
        direct_timeout: Duration,
        now: Instant,
    ) -> Query {
        let mut query = Query::new(replicas);
        let believed: Vec<PeerId> = believed.into_iter().take(query.replicas).collect();
        if believed.is_empty() {
            query.find();
        } else {
            query.phase = Phase::Direct(now + direct_timeout);
            query.set = believed.len();
            for peer in believed {
                query.ask(peer);
            }
        }
        query
    }

    fn new(replicas: usize) -> Query {
        Query {
            replicas: replicas.max(1),
            phase: Phase::Finding,
            candidates: VecDeque::new(),
            asked: BTreeMap::new(),
            answered: Vec::new(),
            all_replicas: true,
            set: 0,
            ended_direct: false,
            widened: false,
            next_id: 0,
            ignored: 0,
            actions: VecDeque::new(),
        }
    }

    /// The next action to carry out.
    pub fn poll_action(&mut self) -> Option<QueryAction> {
        self.actions.pop_front()
    }

    /// When [`Query::handle_timeout`] is due: the end of a lookup's first phase.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Direct(until) => Some(until),
            _ => None,
        }
    }

    /// A lookup's first phase took too long: on to the candidates (late answers to it are
    /// ignored).
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Phase::Direct(until) = self.phase
            && until <= now
        {
            debug!("the believed replicas did not all answer in time");
            self.find();
        }
    }

    /// The candidates, nearest first (the node itself may be one).
    pub fn candidates(&mut self, candidates: Vec<PeerId>, _now: Instant) {
        if self.phase != Phase::Finding {
            self.ignored += 1;
            return;
        }
        self.phase = Phase::Asking;
        self.set = self.replicas.min(candidates.len());
        self.candidates = candidates.into();
        for _ in 0..self.set {
            self.ask_next();
        }
        self.finish_if_over();
    }

    /// The answer to [`QueryAction::Ask`] `id`; gives whether it counts. An answer to no
    /// request under way (a late one of an abandoned phase, or a made-up id) is ignored and
    /// counted.
    pub fn answer(&mut self, id: AskId, reply: Reply, _now: Instant) -> bool {
        let Some(peer) = self.asked.remove(&id) else {
            self.ignored += 1;
            debug!(id, "an answer to no request under way; ignored");
            return false;
        };
        match (self.phase, reply) {
            (Phase::Direct(_), Reply::Ok { replica }) => {
                self.all_replicas &= replica;
                self.answered.push(peer);
            }
            (Phase::Direct(_), Reply::Retry | Reply::Refused) => self.all_replicas = false,
            (_, Reply::Ok { .. }) => self.answered.push(peer),
            (_, Reply::Retry) => self.ask_next(),
            (_, Reply::Refused) => {}
        }
        self.finish_if_over();
        true
    }

    /// The driver found no majority in a lookup's direct answers: on to the candidates.
    pub fn fall_back(&mut self) {
        if self.phase == Phase::Over && self.ended_direct {
            self.ended_direct = false;
            self.find();
        }
    }

    /// The replica set a lookup found answered, but held nothing: the next `r` candidates
    /// are asked too, once, and the query is over again when they have answered (a
    /// [`Done`] of their answers, their number the set). An entry stored while the storer's
    /// view of the replica set differed from this node's may sit just beyond the set (a
    /// replica takes a store within twice the set), until replication moves it. Nothing
    /// happens unless the query is over after a Kademlia lookup; gives whether it goes on
    /// (only then does a [`QueryAction::Done`] follow).
    pub fn widen(&mut self) -> bool {
        if self.phase != Phase::Over || self.ended_direct || self.widened {
            return false;
        }
        self.widened = true;
        self.answered.clear();
        self.set = self.replicas.min(self.candidates.len());
        self.phase = Phase::Asking;
        for _ in 0..self.set {
            self.ask_next();
        }
        self.finish_if_over();
        true
    }

    /// How many answers came to no request under way, or candidates when none were asked
    /// for.
    pub fn ignored(&self) -> u64 {
        self.ignored
    }

    fn find(&mut self) {
        self.asked.clear();
        self.answered.clear();
        self.all_replicas = true;
        self.phase = Phase::Finding;
        self.actions.push_back(QueryAction::NeedCandidates);
    }

    fn ask(&mut self, peer: PeerId) {
        self.next_id += 1;
        self.asked.insert(self.next_id, peer);
        self.actions.push_back(QueryAction::Ask {
            id: self.next_id,
            peer,
        });
    }

    fn ask_next(&mut self) {
        if let Some(peer) = self.candidates.pop_front() {
            self.ask(peer);
        }
    }

    fn finish_if_over(&mut self) {
        if !self.asked.is_empty() {
            return;
        }
        match self.phase {
            Phase::Direct(_) if self.all_replicas && self.answered.len() == self.set => {
                self.over(true);
            }
            Phase::Direct(_) => self.find(),
            Phase::Asking => self.over(false),
            Phase::Finding | Phase::Over => {}
        }
    }

    fn over(&mut self, direct: bool) {
        self.phase = Phase::Over;
        self.ended_direct = direct;
        self.actions.push_back(QueryAction::Done(Done {
            answered: self.answered.clone(),
            set: self.set,
            direct,
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::test_peer as peer;

    fn drain(query: &mut Query) -> Vec<QueryAction> {
        std::iter::from_fn(|| query.poll_action()).collect()
    }

    fn asks(actions: &[QueryAction]) -> Vec<(AskId, PeerId)> {
        actions
            .iter()
            .filter_map(|a| match a {
                QueryAction::Ask { id, peer } => Some((*id, *peer)),
                _ => None,
            })
            .collect()
    }

    const OK: Reply = Reply::Ok { replica: true };

    /// A query of a node that believes no peer closest: from the candidates at once.
    fn from_candidates(now: Instant) -> Query {
        Query::lookup(3, Vec::new(), Duration::from_millis(500), now)
    }

    #[test]
    fn a_store_replaces_the_silent_not_the_refusing_and_needs_a_majority() {
        let now = Instant::now();
        let mut query = from_candidates(now);
        assert_eq!(drain(&mut query), vec![QueryAction::NeedCandidates]);
        query.candidates((1..=6).map(peer).collect(), now);
        let first = asks(&drain(&mut query));
        assert_eq!(
            first.iter().map(|(_, p)| *p).collect::<Vec<_>>(),
            vec![peer(1), peer(2), peer(3)]
        );
        query.answer(first[0].0, Reply::Retry, now);
        let replacement = asks(&drain(&mut query));
        assert_eq!(replacement[0].1, peer(4));
        query.answer(first[1].0, Reply::Refused, now);
        assert_eq!(drain(&mut query), vec![], "a refusal is not replaced");
        query.answer(first[2].0, OK, now);
        query.answer(replacement[0].0, OK, now);
        let done = drain(&mut query);
        let [QueryAction::Done(done)] = done.as_slice() else {
            panic!("{done:?}");
        };
        assert_eq!(done.answered, vec![peer(3), peer(4)]);
        assert_eq!((done.set, done.needed(), done.direct), (3, 2, false));
        assert!(done.has_majority());
    }

    #[test]
    fn a_lookup_that_found_nothing_asks_the_next_candidates_once() {
        let now = Instant::now();
        let mut query = from_candidates(now);
        // Not over yet: nothing to widen.
        assert!(!query.widen());
        assert_eq!(drain(&mut query), vec![QueryAction::NeedCandidates]);
        query.candidates((1..=8).map(peer).collect(), now);
        let first = asks(&drain(&mut query));
        // Peer 2 is silent and replaced by peer 4.
        query.answer(first[1].0, Reply::Retry, now);
        let replacement = asks(&drain(&mut query));
        for (id, _) in [first[0], first[2], replacement[0]] {
            query.answer(id, OK, now);
        }
        assert!(matches!(
            drain(&mut query).as_slice(),
            [QueryAction::Done(_)]
        ));

        query.widen();
        let further = asks(&drain(&mut query));
        assert_eq!(
            further.iter().map(|(_, p)| *p).collect::<Vec<_>>(),
            vec![peer(5), peer(6), peer(7)]
        );
        for (id, _) in &further {
            query.answer(*id, OK, now);
        }
        let done = drain(&mut query);
        let [QueryAction::Done(done)] = done.as_slice() else {
            panic!("{done:?}");
        };
        assert_eq!(done.answered, vec![peer(5), peer(6), peer(7)]);
        assert_eq!((done.set, done.direct), (3, false));
        // Once only.
        assert!(!query.widen());
        assert_eq!(drain(&mut query), vec![]);

        // Too few candidates left: as many as there are; none: over at once.
        let mut query = from_candidates(now);
        drain(&mut query);
        query.candidates((1..=4).map(peer).collect(), now);
        for (id, _) in asks(&drain(&mut query)) {
            query.answer(id, OK, now);
        }
        drain(&mut query);
        assert!(query.widen());
        let last = asks(&drain(&mut query));
        assert_eq!(
            last.iter().map(|(_, p)| *p).collect::<Vec<_>>(),
            vec![peer(4)]
        );
        query.answer(last[0].0, OK, now);
        assert!(matches!(drain(&mut query).as_slice(), [QueryAction::Done(d)] if d.set == 1));
    }

    #[test]
    fn a_direct_lookup_is_not_widened() {
        let now = Instant::now();
        let believed: Vec<PeerId> = (1..=3).map(peer).collect();
        let mut query = Query::lookup(3, believed, Duration::from_millis(500), now);
        for (id, _) in asks(&drain(&mut query)) {
            query.answer(id, OK, now);
        }
        assert!(matches!(drain(&mut query).as_slice(), [QueryAction::Done(d)] if d.direct));
        assert!(!query.widen());
        assert_eq!(drain(&mut query), vec![]);
    }

    #[test]
    fn a_store_in_a_small_overlay_needs_a_majority_of_the_peers_there_are() {
        let now = Instant::now();
        let mut query = from_candidates(now);
        drain(&mut query);
        query.candidates(vec![peer(1)], now);
        let ask = asks(&drain(&mut query));
        query.answer(ask[0].0, OK, now);
        let done = drain(&mut query);
        assert!(
            matches!(done.as_slice(), [QueryAction::Done(d)] if d.set == 1 && d.has_majority())
        );
        // No candidate at all: over at once, without a majority.
        let mut query = from_candidates(now);
        drain(&mut query);
        query.candidates(Vec::new(), now);
        let done = drain(&mut query);
        assert!(matches!(done.as_slice(), [QueryAction::Done(d)] if !d.has_majority()));
    }

    #[test]
    fn a_lookup_takes_one_round_trip_when_every_believed_peer_is_a_replica() {
        let now = Instant::now();
        let wait = Duration::from_millis(500);
        let believed: Vec<PeerId> = (1..=3).map(peer).collect();
        let mut query = Query::lookup(3, believed.clone(), wait, now);
        let ask = asks(&drain(&mut query));
        assert_eq!(ask.iter().map(|(_, p)| *p).collect::<Vec<_>>(), believed);
        for (id, _) in &ask {
            query.answer(*id, OK, now);
        }
        let done = drain(&mut query);
        assert!(matches!(done.as_slice(), [QueryAction::Done(d)] if d.direct && d.set == 3));
        // The answers make no majority: the driver falls back to the candidates.
        query.fall_back();
        assert_eq!(drain(&mut query), vec![QueryAction::NeedCandidates]);
    }

    #[test]
    fn a_lookup_falls_back_on_a_no_a_silence_or_the_timeout_and_ignores_late_answers() {
        let now = Instant::now();
        let wait = Duration::from_millis(500);
        let believed: Vec<PeerId> = (1..=3).map(peer).collect();
        // One says it is not a replica.
        let mut query = Query::lookup(3, believed.clone(), wait, now);
        let ask = asks(&drain(&mut query));
        query.answer(ask[0].0, OK, now);
        query.answer(ask[1].0, Reply::Ok { replica: false }, now);
        query.answer(ask[2].0, OK, now);
        assert_eq!(drain(&mut query), vec![QueryAction::NeedCandidates]);
        // One stays silent past the direct timeout.
        let mut query = Query::lookup(3, believed, wait, now);
        let ask = asks(&drain(&mut query));
        query.answer(ask[0].0, OK, now);
        query.answer(ask[1].0, OK, now);
        assert_eq!(query.poll_timeout(), Some(now + wait));
        query.handle_timeout(now + wait);
        assert_eq!(drain(&mut query), vec![QueryAction::NeedCandidates]);
        assert_eq!(query.poll_timeout(), None);
        // Its late answer, and a made-up one, change nothing.
        assert!(!query.answer(ask[2].0, OK, now + wait));
        assert!(!query.answer(9_999, OK, now + wait));
        assert_eq!(query.ignored(), 2);
        query.candidates((4..=8).map(peer).collect(), now + wait);
        let second = asks(&drain(&mut query));
        assert_eq!(
            second.iter().map(|(_, p)| *p).collect::<Vec<_>>(),
            vec![peer(4), peer(5), peer(6)]
        );
        for (id, _) in second {
            query.answer(id, OK, now + wait);
        }
        let done = drain(&mut query);
        assert!(
            matches!(done.as_slice(), [QueryAction::Done(d)] if !d.direct && d.answered.len() == 3)
        );
        // Candidates nobody asked for are ignored.
        query.candidates(vec![peer(9)], now + wait);
        assert_eq!(query.ignored(), 3);
        assert_eq!(drain(&mut query), vec![]);
    }
}
