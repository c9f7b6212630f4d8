//! Replication and repair: which copies go where, sans-IO.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use libp2p::PeerId;
use tracing::debug;

use super::Ranking;
use crate::data::Kind;
use crate::id::ResourceId;

/// What a replication pass walks: the entries of one kind under one resource.
pub type Slot = (ResourceId, Kind);

/// Names a pass, so that whoever asked for one knows when it is over
/// ([`Action::PassDone`]).
pub type PassId = u64;

/// How the replicator behaves.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// The replication factor `r`. Default 3.
    pub replicas: usize,
    /// How often a pass runs without a change of membership. Default 60 s.
    pub interval: Duration,
    /// How long after a change of membership the pass runs (changes in between are handled
    /// by one pass). Default 500 ms.
    pub repair_delay: Duration,
    /// Every this many passes, every member of every replica set is pushed to again, not
    /// only those not pushed to yet: a member may have dropped its copy (its view of the
    /// set differed), and only a push tells. Default 6.
    pub verify_every: u64,
    /// The most peers held as down at once. Default 4096.
    pub max_down: usize,
    /// The most resources a pass works on at once (each pushes to one peer at a time).
    /// Default 64.
    pub max_in_flight: usize,
    /// How long a push answered [`Outcome::Busy`] waits before it is sent again; the wait
    /// doubles with each retry. Default 250 ms.
    pub busy_backoff: Duration,
    /// How many times a push answered `Busy` is sent again in one pass before that peer is
    /// skipped for the rest of the pass (not held as down: a repair pass comes soon).
    /// Default 3.
    pub busy_retries: u32,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            replicas: 3,
            interval: Duration::from_secs(60),
            repair_delay: Duration::from_millis(500),
            verify_every: 6,
            max_down: 4096,
            max_in_flight: 64,
            busy_backoff: Duration::from_millis(250),
            busy_retries: 3,
        }
    }
}

impl Config {
    /// The default configuration with `r` replicas (at least 1).
    pub fn with_replicas(mut self, replicas: usize) -> Config {
        self.replicas = replicas.max(1);
        self
    }
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Ping a peer held as down; answer with [`Replicator::probed`].
    Probe(PeerId),
    /// A pass starts: answer with [`Replicator::view`].
    NeedView,
    /// Store here the entries this node publishes under the slot: it is a member of the
    /// slot's replica set.
    Hold(Slot),
    /// Push every entry of the slot (as read when the pass began) to the peer; answer with
    /// [`Replicator::pushed`].
    Push {
        /// The peer.
        peer: PeerId,
        /// What to push.
        slot: Slot,
    },
    /// Delete the local copies of the slot that this pass pushed: its whole replica set,
    /// which no longer includes this node, acknowledged them in this pass.
    Drop(Slot),
    /// A pass ended.
    PassDone {
        /// Which.
        id: PassId,
        /// How many entries peers acknowledged in it.
        pushed: usize,
    },
}

/// How a push went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The peer acknowledged every entry (stored it, or holds a newer version).
    Held {
        /// How many entries.
        entries: usize,
    },
    /// The peer refused some entry (full, forbidden, not a replica): not a holder.
    Refused {
        /// How many entries it did acknowledge.
        acked: usize,
    },
    /// The peer is over its limits of inbound requests and took only `acked` entries: it
    /// is alive, so the push is sent again after [`Config::busy_backoff`] (at most
    /// [`Config::busy_retries`] times in a pass).
    Busy {
        /// How many entries it did acknowledge.
        acked: usize,
    },
    /// No answer, or the connection failed: the peer is held as down.
    Failed,
}

/// What the node knows when a pass starts.
#[derive(Debug, Clone, Default)]
pub struct View {
    /// The peers it knows (routing table and connections, admitted ones only), without
    /// itself; `None`: those it was told of one by one ([`Replicator::peer_connected`],
    /// [`Replicator::peer_forgotten`]).
    pub known: Option<Vec<PeerId>>,
    /// The peers it has an open connection to; `None`: as it was told.
    pub connected: Option<Vec<PeerId>>,
    /// The slots it holds or publishes entries of (empty ones left out).
    pub slots: Vec<Slot>,
}

/// Replication and repair of one node, on the rules of the [module docs](super) and of
/// [`crate::node`]:
///
/// - A pass runs every [`Config::interval`], [`Config::repair_delay`] after a change of
///   membership, and on request; one at a time (a request during a pass runs after it).
/// - It first probes the peers held as down (a disconnect or a failed push puts a peer
///   there; answering a probe, or connecting, takes it out), then asks for the [`View`].
/// - For each slot, claims before registrations of the same resource (a replica refuses the
///   registrations of an AOR it has no claim of), it ranks itself and the known peers not
///   held as down by distance, and walks them until `r` hold the slot: itself (then
///   [`Action::Hold`]), a peer pushed to in an earlier pass that is still connected, or a
///   peer that acknowledged a push now. A peer that refuses is not a holder and the next
///   one is tried, up to `r` refusals; one that fails is skipped for the rest of the pass.
///   A peer that answers `Busy` is asked again after a backoff, a few times; then it is
///   skipped for the rest of the pass (held as alive) and a repair pass is scheduled.
///   Every [`Config::verify_every`] passes, earlier pushes do not count.
/// - A node outside a slot's replica set drops its copies only when all `r` members
///   acknowledged a push in this very pass. A handover pass (the node leaves) ranks without
///   the node itself and drops nothing.
///
/// Bounds: the down set holds at most [`Config::max_down`] peers and only known ones; the
/// table of earlier pushes only slots of the last view, each with at most `r` peers; a pass
///   works on at most [`Config::max_in_flight`] resources at once, each waiting on at most
///   one push or one retry.
#[derive(Debug)]
pub struct Replicator {
    me: PeerId,
    config: Config,
    ranking: Ranking,
    connected: HashSet<PeerId>,
    down: BTreeSet<PeerId>,
    /// For each slot, the peers that held it after the last pass.
    holders: HashMap<Slot, HashSet<PeerId>>,
    passes: u64,
    next_pass: Instant,
    repair_at: Option<Instant>,
    pass: Option<Pass>,
    /// A pass asked for while one runs: its id and whether it is a handover.
    queued: Option<(PassId, bool)>,
    next_id: PassId,
    /// Answers to no action under way, ignored.
    ignored: u64,
    actions: VecDeque<Action>,
}

#[derive(Debug)]
struct Pass {
    id: PassId,
    handover: bool,
    verify: bool,
    stage: Stage,
    pushed: usize,
    /// Peers skipped for the rest of this pass: they failed, or stayed busy.
    skip: HashSet<PeerId>,
}

#[derive(Debug)]
enum Stage {
    Probing(BTreeSet<PeerId>),
    Viewing,
    Walking {
        /// Resources not started yet, each with its slots in order.
        waiting: VecDeque<(ResourceId, VecDeque<Kind>)>,
        /// Resources under way, by resource.
        active: BTreeMap<ResourceId, Walk>,
    },
}

/// One slot's walk down its ranking, and the slots of its resource still to walk.
#[derive(Debug)]
struct Walk {
    kind: Kind,
    rest: VecDeque<Kind>,
    ranked: Vec<PeerId>,
    cursor: usize,
    earlier: HashSet<PeerId>,
    live: usize,
    acked_now: usize,
    refusals: usize,
    here: bool,
    holders: HashSet<PeerId>,
    waiting_for: Option<PeerId>,
    /// A push answered `Busy`: to whom it goes again, and when.
    retry: Option<(PeerId, Instant)>,
    /// How many times this walk's current push was answered `Busy`.
    busy: u32,
}

impl Replicator {
    /// The replicator of node `me`; the first timed pass is one interval after `now`.
    pub fn new(me: PeerId, config: Config, now: Instant) -> Replicator {
        Replicator {
            me,
            next_pass: now + config.interval,
            config,
            ranking: Ranking::new(),
            connected: HashSet::new(),
            down: BTreeSet::new(),
            holders: HashMap::new(),
            passes: 0,
            repair_at: None,
            pass: None,
            queued: None,
            next_id: 0,
            ignored: 0,
            actions: VecDeque::new(),
        }
    }

    /// The next action to carry out.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`Replicator::handle_timeout`] is due next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let retry = self.retries().map(|(_, at)| at).min();
        [Some(self.next_pass), self.repair_at, retry]
            .into_iter()
            .flatten()
            .min()
    }

    /// Runs what is due at `now`: pushes to busy peers sent again, a repair after a change,
    /// or the periodic pass.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(Pass {
            stage: Stage::Walking { active, .. },
            ..
        }) = &mut self.pass
        {
            for (resource, walk) in active.iter_mut() {
                if let Some((peer, at)) = walk.retry
                    && at <= now
                {
                    walk.retry = None;
                    walk.waiting_for = Some(peer);
                    self.actions.push_back(Action::Push {
                        peer,
                        slot: (*resource, walk.kind),
                    });
                }
            }
        }
        if self.repair_at.is_some_and(|at| at <= now) {
            self.repair_at = None;
            self.request_pass(false, now);
        }
        if self.next_pass <= now {
            self.next_pass = now + self.config.interval;
            self.request_pass(false, now);
        }
    }

    /// A peer connected: it is no longer held as down.
    pub fn peer_connected(&mut self, peer: PeerId, _now: Instant) {
        self.down.remove(&peer);
        self.connected.insert(peer);
        self.ranking.insert(peer);
    }

    /// This node heard of a peer without a connection to it (its directory): it is ranked
    /// from now on, so that stores and lookups ask it where it is among the closest.
    pub fn peer_known(&mut self, peer: PeerId) {
        if peer != self.me {
            self.ranking.insert(peer);
        }
    }

    /// A peer left the routing table (unreachable): forgotten, down or not.
    pub fn peer_forgotten(&mut self, peer: PeerId, _now: Instant) {
        self.down.remove(&peer);
        self.connected.remove(&peer);
        if peer != self.me {
            self.ranking.remove(&peer);
        }
    }

    /// The `limit` peers closest to `resource` of this node and the peers it knows that are
    /// not held as down, closest first: whom a store or a lookup asks.
    pub fn closest(&mut self, resource: &ResourceId, limit: usize) -> Vec<PeerId> {
        self.ranking.insert(self.me);
        self.ranking
            .closest(resource, limit, |peer| !self.down.contains(peer))
    }

    /// Whether this node takes a Store of `resource` from `sender`: only when it is among
    /// the `2 × r` closest to the resource of itself and the peers it has a connection to
    /// (the sender left out, so that the closest other peers take a leaving node's
    /// handover; the margin of `r` places covers closer peers that are silent without this
    /// node knowing it). Only connected peers count as closer: right after churn the routing
    /// table still lists dead peers, and counting them made live replicas refuse the copies
    /// repair pushed to them.
    /// Peers for which `admits` fails (not admitted to the overlay) do not count either.
    pub fn takes_store(
        &mut self,
        resource: &ResourceId,
        sender: &PeerId,
        admits: impl Fn(&PeerId) -> bool,
    ) -> bool {
        self.ranking.insert(self.me);
        let places = self.config.replicas.max(1).saturating_mul(2);
        let closer = self.ranking.closer_than(resource, &self.me, |peer| {
            peer != sender && *peer != self.me && self.connected.contains(peer) && admits(peer)
        });
        closer < places
    }

    /// Whether this node is a member of `resource`'s replica set as far as it knows: among
    /// the `r` closest to it of itself and the peers it knows that are not held as down
    /// (and pass `admits`). Unlike [`Replicator::takes_store`], peers it only knows of count:
    /// a dead peer still listed makes the answer `false`, which costs a lookup a round trip,
    /// never a wrong answer.
    pub fn is_replica(&mut self, resource: &ResourceId, admits: impl Fn(&PeerId) -> bool) -> bool {
        self.ranking.insert(self.me);
        let closer = self.ranking.closer_than(resource, &self.me, |peer| {
            *peer != self.me && !self.down.contains(peer) && admits(peer)
        });
        closer < self.config.replicas.max(1)
    }

    /// A peer's last connection closed: it is held as down and repair is scheduled.
    pub fn peer_disconnected(&mut self, peer: PeerId, now: Instant) {
        self.connected.remove(&peer);
        self.hold_down(peer);
        self.routing_changed(now);
    }

    /// A request to a peer failed: it is held as down until it connects or answers a probe.
    pub fn peer_failed(&mut self, peer: PeerId, _now: Instant) {
        self.hold_down(peer);
    }

    /// The routing table changed: repair is scheduled (one pass for the changes of one
    /// repair delay).
    pub fn routing_changed(&mut self, now: Instant) {
        self.repair_at.get_or_insert(now + self.config.repair_delay);
    }

    /// Whether `peer` is held as down.
    pub fn is_down(&self, peer: &PeerId) -> bool {
        self.down.contains(peer)
    }

    /// How many peers are held as down, and for how many slots earlier pushes are
    /// remembered.
    pub fn tables(&self) -> (usize, usize) {
        (self.down.len(), self.holders.len())
    }

    /// Asks for a pass (a handover pass when the node leaves); gives its id, which
    /// [`Action::PassDone`] names when it is over. A request while a pass runs is merged
    /// with any other waiting one (a handover wins).
    pub fn request_pass(&mut self, handover: bool, _now: Instant) -> PassId {
        if self.pass.is_some() {
            let queued = match self.queued {
                Some((id, earlier)) => (id, earlier || handover),
                None => (self.fresh_id(), handover),
            };
            self.queued = Some(queued);
            return queued.0;
        }
        let id = self.fresh_id();
        self.start(id, handover);
        id
    }

    /// The answer to [`Action::Probe`].
    pub fn probed(&mut self, peer: PeerId, alive: bool, _now: Instant) {
        if alive {
            self.down.remove(&peer);
        }
        let Some(Pass {
            stage: stage @ Stage::Probing(_),
            ..
        }) = &mut self.pass
        else {
            return self.ignore("a probe's answer while no probe is under way");
        };
        let Stage::Probing(waiting) = stage else {
            return;
        };
        if !waiting.remove(&peer) {
            return self.ignore("a probe's answer for a peer not probed");
        }
        if waiting.is_empty() {
            *stage = Stage::Viewing;
            self.actions.push_back(Action::NeedView);
        }
    }

    /// How many answers came for no action under way (a push, probe or view not asked
    /// for, or answered already): ignored, counted, logged at debug.
    pub fn ignored(&self) -> u64 {
        self.ignored
    }

    fn ignore(&mut self, what: &str) {
        self.ignored += 1;
        debug!(what, "an answer to no action under way; ignored");
    }

    /// The answer to [`Action::NeedView`]. Unanswered, the pass waits.
    pub fn view(&mut self, view: View, _now: Instant) {
        let Some(pass) = self
            .pass
            .as_mut()
            .filter(|pass| matches!(pass.stage, Stage::Viewing))
        else {
            return self.ignore("a view while none was asked for");
        };
        if let Some(connected) = view.connected {
            self.connected = connected.into_iter().collect();
        }
        if let Some(known) = view.known {
            self.ranking.set(
                known
                    .into_iter()
                    .chain(self.connected.iter().copied())
                    .chain([self.me]),
            );
        }
        let ranking = &self.ranking;
        let me = self.me;
        self.down
            .retain(|peer| *peer != me && ranking.contains(peer));
        let slots: BTreeSet<Slot> = view.slots.into_iter().collect();
        self.holders.retain(|slot, _| slots.contains(slot));
        // Claims first within a resource.
        let mut by_resource: BTreeMap<ResourceId, Vec<Kind>> = BTreeMap::new();
        for (resource, kind) in slots {
            by_resource.entry(resource).or_default().push(kind);
        }
        let waiting = by_resource
            .into_iter()
            .map(|(resource, mut kinds)| {
                kinds.sort_by_key(|kind| (*kind != Kind::AOR_CLAIM, *kind));
                (resource, kinds.into())
            })
            .collect();
        pass.stage = Stage::Walking {
            waiting,
            active: BTreeMap::new(),
        };
        self.advance();
    }

    /// The answer to [`Action::Push`].
    pub fn pushed(&mut self, peer: PeerId, slot: Slot, outcome: Outcome, now: Instant) {
        let under_way = match &self.pass {
            Some(Pass {
                stage: Stage::Walking { active, .. },
                ..
            }) => active
                .get(&slot.0)
                .is_some_and(|walk| walk.kind == slot.1 && walk.waiting_for == Some(peer)),
            _ => false,
        };
        if !under_way {
            return self.ignore("a push's answer for no push under way");
        }
        let Some(pass) = &mut self.pass else {
            return;
        };
        let Stage::Walking { active, .. } = &mut pass.stage else {
            return;
        };
        let Some(walk) = active.get_mut(&slot.0) else {
            return;
        };
        walk.waiting_for = None;
        if !matches!(outcome, Outcome::Busy { .. }) {
            walk.busy = 0;
        }
        match outcome {
            Outcome::Held { entries } => {
                pass.pushed += entries;
                walk.live += 1;
                walk.acked_now += 1;
                walk.holders.insert(peer);
            }
            Outcome::Refused { acked } => {
                pass.pushed += acked;
                walk.refusals += 1;
            }
            Outcome::Busy { acked } => {
                pass.pushed += acked;
                if walk.busy < self.config.busy_retries {
                    let wait = self
                        .config
                        .busy_backoff
                        .saturating_mul(1 << walk.busy.min(16));
                    walk.busy += 1;
                    walk.retry = Some((peer, now + wait));
                } else {
                    walk.busy = 0;
                    pass.skip.insert(peer);
                    self.repair_at.get_or_insert(now + self.config.repair_delay);
                }
            }
            Outcome::Failed => {
                pass.skip.insert(peer);
                self.hold_down(peer);
            }
        }
        self.advance();
    }

    /// The pushes waiting to be sent again, with when.
    fn retries(&self) -> impl Iterator<Item = (PeerId, Instant)> + '_ {
        let active = match &self.pass {
            Some(Pass {
                stage: Stage::Walking { active, .. },
                ..
            }) => Some(active),
            _ => None,
        };
        active
            .into_iter()
            .flat_map(|active| active.values().filter_map(|walk| walk.retry))
    }

    fn fresh_id(&mut self) -> PassId {
        self.next_id += 1;
        self.next_id
    }

    fn hold_down(&mut self, peer: PeerId) {
        if self.down.len() >= self.config.max_down
            && !self.down.contains(&peer)
            && let Some(any) = self.down.iter().next().copied()
        {
            self.down.remove(&any);
        }
        self.down.insert(peer);
    }

    fn start(&mut self, id: PassId, handover: bool) {
        let verify = self.passes.is_multiple_of(self.config.verify_every.max(1));
        self.passes += 1;
        let probing: BTreeSet<PeerId> = self.down.clone();
        let stage = if probing.is_empty() {
            self.actions.push_back(Action::NeedView);
            Stage::Viewing
        } else {
            self.actions
                .extend(probing.iter().copied().map(Action::Probe));
            Stage::Probing(probing)
        };
        self.pass = Some(Pass {
            id,
            handover,
            verify,
            stage,
            pushed: 0,
            skip: HashSet::new(),
        });
    }

    /// Moves every walk as far as it goes without an answer; ends the pass when all are
    /// done.
    fn advance(&mut self) {
        let Some(mut pass) = self.pass.take() else {
            return;
        };
        let Stage::Walking { waiting, active } = &mut pass.stage else {
            self.pass = Some(pass);
            return;
        };
        loop {
            // Start resources while there is room.
            while active.len() < self.config.max_in_flight
                && let Some((resource, mut kinds)) = waiting.pop_front()
            {
                if let Some(kind) = kinds.pop_front() {
                    let walk = self.walk(resource, kind, kinds, pass.handover, pass.verify);
                    active.insert(resource, walk);
                }
            }
            let mut finished = Vec::new();
            for (resource, walk) in active.iter_mut() {
                if walk.waiting_for.is_none()
                    && walk.retry.is_none()
                    && self.step(*resource, walk, &pass.skip, pass.handover)
                {
                    finished.push(*resource);
                }
            }
            if finished.is_empty() {
                break;
            }
            for resource in finished {
                let Some(mut walk) = active.remove(&resource) else {
                    continue;
                };
                self.holders
                    .insert((resource, walk.kind), std::mem::take(&mut walk.holders));
                if let Some(kind) = walk.rest.pop_front() {
                    let next = self.walk(resource, kind, walk.rest, pass.handover, pass.verify);
                    active.insert(resource, next);
                }
            }
        }
        if waiting.is_empty() && active.is_empty() {
            self.actions.push_back(Action::PassDone {
                id: pass.id,
                pushed: pass.pushed,
            });
            if let Some((id, handover)) = self.queued.take() {
                self.start(id, handover);
            }
        } else {
            self.pass = Some(pass);
        }
    }

    fn walk(
        &self,
        resource: ResourceId,
        kind: Kind,
        rest: VecDeque<Kind>,
        handover: bool,
        verify: bool,
    ) -> Walk {
        // The ranking holds this node too; a handover ranks without it.
        // Enough candidates for r holders, r refusals and as many failures.
        let limit = self.config.replicas.max(1) * 4 + 16;
        let ranked = self.ranking.closest(&resource, limit, |peer| {
            if *peer == self.me {
                !handover
            } else {
                !self.down.contains(peer)
            }
        });
        let r = self.config.replicas.max(1);
        // A node outside the replica set is about to drop its copy: every member must
        // acknowledge holding it in this pass, so none is skipped.
        let member = ranked.iter().take(r).any(|peer| *peer == self.me);
        let earlier = if handover || verify || !member {
            HashSet::new()
        } else {
            self.holders
                .get(&(resource, kind))
                .cloned()
                .unwrap_or_default()
        };
        Walk {
            kind,
            rest,
            ranked,
            cursor: 0,
            earlier,
            live: 0,
            acked_now: 0,
            refusals: 0,
            here: false,
            holders: HashSet::new(),
            waiting_for: None,
            retry: None,
            busy: 0,
        }
    }

    /// Walks on until a push is sent (false) or the walk is over (true).
    fn step(
        &mut self,
        resource: ResourceId,
        walk: &mut Walk,
        skip: &HashSet<PeerId>,
        handover: bool,
    ) -> bool {
        let r = self.config.replicas.max(1);
        let slot = (resource, walk.kind);
        while walk.live < r && walk.refusals < r && walk.cursor < walk.ranked.len() {
            let peer = walk.ranked[walk.cursor];
            walk.cursor += 1;
            if peer == self.me {
                walk.here = true;
                walk.live += 1;
                walk.holders.insert(peer);
                self.actions.push_back(Action::Hold(slot));
                continue;
            }
            if walk.earlier.contains(&peer) && self.connected.contains(&peer) {
                walk.live += 1;
                walk.holders.insert(peer);
                continue;
            }
            if skip.contains(&peer) {
                continue;
            }
            walk.waiting_for = Some(peer);
            self.actions.push_back(Action::Push { peer, slot });
            return false;
        }
        if !handover && !walk.here && walk.live >= r && walk.acked_now >= r {
            self.actions.push_back(Action::Drop(slot));
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::test_peer as peer;
    use crate::id::closest_nodes;

    fn drain(replicator: &mut Replicator) -> Vec<Action> {
        std::iter::from_fn(|| replicator.poll_action()).collect()
    }

    /// Answers every push with `outcome(peer)` until the pass is done; gives the actions
    /// seen.
    fn run_pass(
        replicator: &mut Replicator,
        view: View,
        now: Instant,
        outcome: impl Fn(PeerId) -> Outcome,
    ) -> Vec<Action> {
        let mut seen = Vec::new();
        let mut queue: VecDeque<Action> = drain(replicator).into();
        while let Some(action) = queue.pop_front() {
            seen.push(action.clone());
            match action {
                Action::Probe(peer) => replicator.probed(peer, false, now),
                Action::NeedView => replicator.view(view.clone(), now),
                Action::Push { peer, slot } => replicator.pushed(peer, slot, outcome(peer), now),
                Action::PassDone { .. } => return seen,
                _ => {}
            }
            queue.extend(drain(replicator));
        }
        panic!("the pass did not end: {seen:?}");
    }

    const CLAIM: Kind = Kind::AOR_CLAIM;

    #[test]
    fn a_member_pushes_to_the_others_and_then_only_when_needed() {
        let now = Instant::now();
        let peers: Vec<PeerId> = (1..=10).map(peer).collect();
        let resource = ResourceId::for_normalized("alice@example.org");
        let ranked = closest_nodes(&resource, peers.clone(), usize::MAX);
        let me = ranked[0];
        let mut replicator = Replicator::new(me, Config::default(), now);
        let view = View {
            known: Some(peers.clone()),
            connected: Some(peers.clone()),
            slots: vec![(resource, CLAIM)],
        };
        replicator.request_pass(false, now);
        let first = run_pass(&mut replicator, view.clone(), now, |_| Outcome::Held {
            entries: 1,
        });
        let pushes: Vec<PeerId> = first
            .iter()
            .filter_map(|a| match a {
                Action::Push { peer, .. } => Some(*peer),
                _ => None,
            })
            .collect();
        assert_eq!(pushes, ranked[1..3].to_vec());
        assert!(first.contains(&Action::Hold((resource, CLAIM))));
        assert!(!first.iter().any(|a| matches!(a, Action::Drop(_))));
        // The next pass pushes nothing: both holders are still connected.
        replicator.request_pass(false, now);
        let second = run_pass(&mut replicator, view, now, |_| Outcome::Held { entries: 1 });
        assert!(
            !second.iter().any(|a| matches!(a, Action::Push { .. })),
            "{second:?}"
        );
    }

    #[test]
    fn refusals_and_failures_bring_in_the_next_and_a_copy_is_dropped_only_when_all_acked() {
        let now = Instant::now();
        let peers: Vec<PeerId> = (1..=12).map(peer).collect();
        let resource = ResourceId::for_normalized("bob@example.org");
        let ranked = closest_nodes(&resource, peers.clone(), usize::MAX);
        // This node is the sixth closest: outside the replica set of 3.
        let me = ranked[5];
        let others: Vec<PeerId> = peers.iter().copied().filter(|p| *p != me).collect();
        let view = View {
            known: Some(others.clone()),
            connected: Some(others.clone()),
            slots: vec![(resource, Kind::SIP_REGISTRATION)],
        };
        let mut replicator = Replicator::new(me, Config::default(), now);
        replicator.request_pass(false, now);
        let refuses = ranked[1];
        let fails = ranked[2];
        let seen = run_pass(&mut replicator, view.clone(), now, |p| {
            if p == refuses {
                Outcome::Refused { acked: 0 }
            } else if p == fails {
                Outcome::Failed
            } else {
                Outcome::Held { entries: 1 }
            }
        });
        let pushes: Vec<PeerId> = seen
            .iter()
            .filter_map(|a| match a {
                Action::Push { peer, .. } => Some(*peer),
                _ => None,
            })
            .collect();
        assert_eq!(
            pushes,
            vec![ranked[0], ranked[1], ranked[2], ranked[3], ranked[4]]
        );
        assert!(replicator.is_down(&fails));
        // ranked[0], [3], [4] acknowledged: three members now, so the copy goes.
        assert!(seen.contains(&Action::Drop((resource, Kind::SIP_REGISTRATION))));

        // With only two acknowledging, it keeps its copy.
        let mut replicator = Replicator::new(me, Config::default(), now);
        replicator.request_pass(false, now);
        let seen = run_pass(&mut replicator, view, now, |p| {
            if p == ranked[0] || p == ranked[1] {
                Outcome::Held { entries: 1 }
            } else {
                Outcome::Failed
            }
        });
        assert!(
            !seen.iter().any(|a| matches!(a, Action::Drop(_))),
            "{seen:?}"
        );
    }

    #[test]
    fn a_busy_peer_is_asked_again_after_a_backoff_and_never_held_as_down() {
        let t0 = Instant::now();
        let config = Config::default();
        let peers: Vec<PeerId> = (1..=8).map(peer).collect();
        let resource = ResourceId::for_normalized("dave@example.org");
        let ranked = closest_nodes(&resource, peers.clone(), usize::MAX);
        let me = ranked[7];
        let others: Vec<PeerId> = peers.iter().copied().filter(|p| *p != me).collect();
        let view = View {
            known: Some(others.clone()),
            connected: Some(others),
            slots: vec![(resource, CLAIM)],
        };
        let slot = (resource, CLAIM);
        let mut replicator = Replicator::new(me, config.clone(), t0);
        replicator.request_pass(false, t0);
        assert_eq!(drain(&mut replicator), vec![Action::NeedView]);
        replicator.view(view, t0);
        let push = |peer| Action::Push { peer, slot };
        assert_eq!(drain(&mut replicator), vec![push(ranked[0])]);
        // Busy twice: sent again after 250 ms, then after 500 ms more; then it holds.
        replicator.pushed(ranked[0], slot, Outcome::Busy { acked: 0 }, t0);
        assert_eq!(drain(&mut replicator), vec![]);
        let first_retry = t0 + config.busy_backoff;
        assert_eq!(replicator.poll_timeout(), Some(first_retry));
        replicator.handle_timeout(first_retry);
        assert_eq!(drain(&mut replicator), vec![push(ranked[0])]);
        replicator.pushed(ranked[0], slot, Outcome::Busy { acked: 0 }, first_retry);
        let second_retry = first_retry + config.busy_backoff * 2;
        assert_eq!(replicator.poll_timeout(), Some(second_retry));
        replicator.handle_timeout(second_retry);
        assert_eq!(drain(&mut replicator), vec![push(ranked[0])]);
        replicator.pushed(ranked[0], slot, Outcome::Held { entries: 1 }, second_retry);
        assert_eq!(drain(&mut replicator), vec![push(ranked[1])]);
        assert!(!replicator.is_down(&ranked[0]));
        // A peer busy through every retry is skipped for this pass, held as alive, and a
        // repair pass is scheduled.
        let mut now = second_retry;
        replicator.pushed(ranked[1], slot, Outcome::Busy { acked: 0 }, now);
        for _ in 0..config.busy_retries {
            now = replicator.poll_timeout().unwrap();
            replicator.handle_timeout(now);
            assert_eq!(drain(&mut replicator), vec![push(ranked[1])]);
            replicator.pushed(ranked[1], slot, Outcome::Busy { acked: 0 }, now);
        }
        assert_eq!(drain(&mut replicator), vec![push(ranked[2])]);
        assert!(!replicator.is_down(&ranked[1]));
        assert_eq!(replicator.poll_timeout(), Some(now + config.repair_delay));
        replicator.pushed(ranked[2], slot, Outcome::Held { entries: 1 }, now);
        assert_eq!(drain(&mut replicator), vec![push(ranked[3])]);
        replicator.pushed(ranked[3], slot, Outcome::Held { entries: 1 }, now);
        let done = drain(&mut replicator);
        assert!(
            matches!(done.as_slice(), [Action::Drop(_), Action::PassDone { .. }]),
            "{done:?}"
        );
    }

    #[test]
    fn answers_to_nothing_under_way_are_ignored_and_counted() {
        let t0 = Instant::now();
        let resource = ResourceId::for_normalized("erin@example.org");
        let mut replicator = Replicator::new(peer(1), Config::default(), t0);
        // No pass: a push result, a probe and a view are answers to nothing.
        replicator.pushed(peer(2), (resource, CLAIM), Outcome::Held { entries: 1 }, t0);
        replicator.probed(peer(2), true, t0);
        replicator.view(View::default(), t0);
        assert_eq!(replicator.ignored(), 3);
        assert!(drain(&mut replicator).is_empty());
        // In a pass, a probe of a peer that was not probed.
        replicator.peer_disconnected(peer(3), t0);
        replicator.request_pass(false, t0);
        assert_eq!(drain(&mut replicator), vec![Action::Probe(peer(3))]);
        replicator.probed(peer(4), false, t0);
        assert_eq!(replicator.ignored(), 4);
        assert!(
            drain(&mut replicator).is_empty(),
            "still waiting for peer 3"
        );
        replicator.probed(peer(3), false, t0);
        assert_eq!(drain(&mut replicator), vec![Action::NeedView]);
    }

    #[test]
    fn claims_go_before_registrations_and_a_handover_drops_nothing() {
        let now = Instant::now();
        let peers: Vec<PeerId> = (1..=6).map(peer).collect();
        let resource = ResourceId::for_normalized("carol@example.org");
        let me = peers[0];
        let view = View {
            known: Some(peers[1..].to_vec()),
            connected: Some(peers[1..].to_vec()),
            slots: vec![(resource, Kind::SIP_REGISTRATION), (resource, CLAIM)],
        };
        let mut replicator = Replicator::new(me, Config::default(), now);
        replicator.request_pass(true, now);
        let seen = run_pass(&mut replicator, view, now, |_| Outcome::Held { entries: 1 });
        let kinds: Vec<Kind> = seen
            .iter()
            .filter_map(|a| match a {
                Action::Push { slot, .. } => Some(slot.1),
                _ => None,
            })
            .collect();
        assert_eq!(
            kinds,
            vec![
                CLAIM,
                CLAIM,
                CLAIM,
                Kind::SIP_REGISTRATION,
                Kind::SIP_REGISTRATION,
                Kind::SIP_REGISTRATION
            ]
        );
        assert!(
            !seen
                .iter()
                .any(|a| matches!(a, Action::Drop(_) | Action::Hold(_)))
        );
    }

    #[test]
    fn a_store_is_taken_within_twice_the_replicas_of_the_connected_peers() {
        let now = Instant::now();
        let all: Vec<PeerId> = (1..=20).map(peer).collect();
        let resource = ResourceId::for_normalized("bob@example.org");
        let ranked = closest_nodes(&resource, all.clone(), usize::MAX);
        let sender = ranked[19];
        let replicator = |me: PeerId| {
            let mut replicator = Replicator::new(me, Config::default(), now);
            for other in all.iter().filter(|p| **p != me) {
                replicator.peer_connected(*other, now);
            }
            replicator
        };
        // With r = 3, the six closest take it; the seventh does not.
        for (place, me) in ranked.iter().take(7).enumerate() {
            assert_eq!(
                replicator(*me).takes_store(&resource, &sender, |_| true),
                place < 6,
                "place {place}"
            );
        }
        // The sender does not count: the closest node leaving hands over to the next.
        assert!(replicator(ranked[6]).takes_store(&resource, &ranked[0], |_| true));
        // Nor does a peer that disconnected.
        let mut seventh = replicator(ranked[6]);
        seventh.peer_disconnected(ranked[1], now);
        assert!(seventh.takes_store(&resource, &sender, |_| true));
        // Nor one the overlay does not admit.
        assert!(replicator(ranked[6]).takes_store(&resource, &sender, |p| *p != ranked[2]));
    }

    #[test]
    fn passes_are_timed_debounced_and_queued() {
        let t0 = Instant::now();
        let config = Config::default();
        let mut replicator = Replicator::new(peer(1), config.clone(), t0);
        assert_eq!(replicator.poll_timeout(), Some(t0 + config.interval));
        replicator.peer_disconnected(peer(2), t0);
        replicator.routing_changed(t0 + Duration::from_millis(100));
        assert_eq!(replicator.poll_timeout(), Some(t0 + config.repair_delay));
        replicator.handle_timeout(t0 + config.repair_delay);
        // The down peer is probed before the view is asked for.
        assert_eq!(drain(&mut replicator), vec![Action::Probe(peer(2))]);
        let queued = replicator.request_pass(true, t0);
        assert_eq!(replicator.request_pass(false, t0), queued, "merged");
        replicator.probed(peer(2), true, t0);
        assert!(!replicator.is_down(&peer(2)));
        assert_eq!(drain(&mut replicator), vec![Action::NeedView]);
        replicator.view(View::default(), t0);
        let actions = drain(&mut replicator);
        assert!(matches!(actions[0], Action::PassDone { .. }));
        assert_eq!(actions[1], Action::NeedView, "the queued pass starts");
    }
}
