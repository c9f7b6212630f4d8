//! # A simulated overlay on virtual time
//!
//! Many nodes in one process, each running the overlay's sans-IO [`core`] as the
//! real node does, joined by an in-process network with latency, loss, partitions and churn.
//! Time is virtual: an event queue ordered by (time, sequence number) is the only clock, so a
//! run of hours takes seconds and a seed replays it exactly (every choice comes from one
//! seeded generator; no hash-map order, thread or wall clock takes part).
//!
//! What is modelled, and how:
//! - **Membership**: a settled overlay in which every node knows every live node and holds a
//!   connection to it (the one-hop view the overlay's lookups aim for). A killed node is
//!   noticed by each peer after a random detection delay (a connection timing out): the peer
//!   gets the disconnect the network layer would report. A joining node knows what its
//!   bootstrap knows, and the others learn it after [`Config::join_delay`]. A peer that fails
//!   a probe leaves the node's view (Kademlia drops unreachable peers).
//! - **Storage**: one entry per slot, its version the generation, with an expiry
//!   ([`Config::lifetime`] after it was published): a replica keeps the highest version, and
//!   an expired entry is neither answered nor pushed, and is deleted by the node's sweep.
//!   Owners refresh what they publish with the core's [`Refresher`] (a store of the next
//!   version at half the lifetime); [`Sim::withdraw`] stops that. A node takes a push only
//!   as a replica ([`Replicator::takes_store`]), as the real node does, and answers whether
//!   it is one ([`Replicator::is_replica`]).
//! - **Users**: [`Sim::publish`] stores an entry the way [`crate::node::Overlay::store`] does,
//!   with the same [`Query`] (first the `r` peers the node believes closest in one round
//!   trip, kept when each takes it and says it is a replica; else the `r` closest
//!   candidates, a failure or refusal replaced by the next; acknowledged by a majority), and
//!   the owner keeps publishing it ([`Action::Hold`], pushes); [`Sim::lookup`] runs a lookup
//!   [`Query`] as [`crate::node::Overlay::fetch_verified`] does (the believed peers first in
//!   the same way, else the candidates) and takes the newest answer. The candidates are the
//!   node's own ranking, where the real node adds a Kademlia lookup.
//!   Acknowledged stores are kept in a ledger for the checks of the tests.
//! - **Faults**: message loss ([`Config::loss`]), partitions ([`Sim::partition`],
//!   [`Sim::heal`]), kills ([`Sim::kill`]), graceful leaves with their handover
//!   ([`Sim::leave`]) and joins ([`Sim::join`]).
//! - **Busy peers**: with [`Config::peer_limit`], a node takes a peer's requests at a
//!   limited rate, as the real node's per-peer limits do, and answers the rest Busy: a busy
//!   push is sent again later ([`Outcome::Busy`]), a busy peer of a store or lookup is
//!   replaced by the next candidate, and a busy answer to a probe shows the peer alive. A
//!   lookup that heard only Busy from the holders gives nothing found ([`Sim::lookup`] has
//!   no other answer), where the real node answers Busy.
//!
//! Bounds: the event queue holds what the nodes sent and their timers (each node has at most
//! one timer event that counts); requests under way are bounded by the replicator's own
//! bounds and by the operations the caller starts; a node's rate buckets, by the nodes.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use libp2p::PeerId;
use libp2p::identity::Keypair;

use crate::core::{
    self, Action, AskId, Outcome, Query, QueryAction, Ranking, RefreshAction, RefreshConfig,
    Refresher, Replicator, Reply, Slot, View, next_hops,
};
use crate::id::{ResourceId, closest_nodes};
use crate::network::limits::PeerLimits;
use crate::rng::Rng;
use libp2p::kad::KBucketKey;

/// How a simulation runs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// The nodes at the start.
    pub nodes: usize,
    /// The seed of every choice.
    pub seed: u64,
    /// The replicators' configuration (its `replicas` is the overlay's `r`).
    pub replicator: core::Config,
    /// One-way latency of a message: uniform between these. Default 1 to 20 ms.
    pub latency: (Duration, Duration),
    /// The share of messages lost, 0 to 1. Default 0.
    pub loss: f64,
    /// How long a request waits for its answer. Default 2 s.
    pub request_timeout: Duration,
    /// How long after a peer dies (or a partition cuts it off) a node notices: uniform
    /// between these. Default 1 to 5 s.
    pub detect_delay: (Duration, Duration),
    /// How long the other nodes take to learn a joining node. Default 1 s.
    pub join_delay: Duration,
    /// How many peers each bucket of a node's routing table (Kademlia's k-buckets) holds,
    /// for Route messages ([`Sim::route`]). Default 20, Kademlia's.
    pub bucket_size: usize,
    /// The lifetime of a published entry; its owner refreshes it at half of it. Default
    /// 1 hour.
    pub lifetime: Duration,
    /// The owners' refresh retries and the stores' sweeps.
    pub refresh: RefreshConfig,
    /// The requests a node takes from one peer, `(rate, burst)`: a token bucket of `rate`
    /// per second holding up to `burst`, the real node's per-peer limit
    /// ([`crate::network::Config::peer_request_rate`] and `peer_request_burst`, the same
    /// code); a request over it is answered Busy. Default `None`: no limit.
    pub peer_limit: Option<(u32, u32)>,
}

impl Config {
    /// `nodes` nodes, seed `seed`, and the defaults.
    pub fn new(nodes: usize, seed: u64) -> Config {
        Config {
            nodes,
            seed,
            replicator: core::Config::default(),
            latency: (Duration::from_millis(1), Duration::from_millis(20)),
            loss: 0.0,
            request_timeout: Duration::from_secs(2),
            detect_delay: (Duration::from_secs(1), Duration::from_secs(5)),
            join_delay: Duration::from_secs(1),
            bucket_size: 20,
            lifetime: Duration::from_secs(3600),
            refresh: RefreshConfig::default(),
            peer_limit: None,
        }
    }
}

/// What a simulation counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages sent.
    pub messages: u64,
    /// Messages lost (loss, a partition, a dead receiver).
    pub lost: u64,
    /// Pushes of the replicators.
    pub pushes: u64,
    /// Pushes refused (not a replica).
    pub refused: u64,
    /// Copies dropped by nodes no longer replicas.
    pub dropped: u64,
    /// Replication passes completed.
    pub passes: u64,
    /// Lookups answered in one round trip by the replicas their node believed closest.
    pub direct_lookups: u64,
    /// Lookups that needed the candidates.
    pub full_lookups: u64,
    /// Events handled.
    pub events: u64,
    /// Expired entries deleted by sweeps.
    pub swept: u64,
    /// Requests answered Busy ([`Config::peer_limit`]).
    pub busy: u64,
}

/// A simulated overlay.
#[derive(Debug)]
pub struct Sim {
    config: Config,
    rng: Rng,
    now: Instant,
    nodes: Vec<Node>,
    index: HashMap<PeerId, usize>,
    queue: BinaryHeap<Reverse<Scheduled>>,
    seq: u64,
    /// The group of each node while partitioned.
    groups: Option<Vec<u8>>,
    /// Acknowledged stores: the newest acknowledged version of each slot.
    ledger: BTreeMap<Slot, u64>,
    ops: BTreeMap<u64, Op>,
    next_op: u64,
    /// A node leaving: its handover pass, and whether it ended.
    leaving: Option<(usize, core::PassId, bool)>,
    stats: Stats,
}

#[derive(Debug)]
struct Node {
    id: PeerId,
    alive: bool,
    replicator: Replicator,
    store: BTreeMap<Slot, Entry>,
    owned: BTreeMap<Slot, Entry>,
    /// When the owned entries are refreshed and the store swept.
    refresher: Refresher<Slot>,
    known: BTreeSet<PeerId>,
    connected: BTreeSet<PeerId>,
    /// The routing table of Route messages: at most [`Config::bucket_size`] peers per
    /// Kademlia bucket.
    table: Ranking,
    /// Requests under way, by request id.
    pending: BTreeMap<u64, Pending>,
    /// Each requesting peer's token bucket ([`Config::peer_limit`]), bounded by the nodes.
    limits: Option<PeerLimits>,
    next_request: u64,
    /// The timer event that counts.
    wake_at: Option<Instant>,
}

/// A stored entry: its version (the generation) and when it expires. The newest version
/// wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    version: u64,
    expires: Instant,
}

/// Keeps the newer of the held entry and `entry`.
fn keep_newer(store: &mut BTreeMap<Slot, Entry>, slot: Slot, entry: Entry) {
    let held = store.entry(slot).or_insert(entry);
    *held = (*held).max(entry);
}

/// The version of `slot` held and not expired at `now`.
fn live_version(store: &BTreeMap<Slot, Entry>, slot: &Slot, now: Instant) -> Option<u64> {
    store
        .get(slot)
        .filter(|entry| entry.expires > now)
        .map(|entry| entry.version)
}

#[derive(Debug, Clone, Copy)]
enum Pending {
    Push { peer: PeerId, slot: Slot },
    Probe { peer: PeerId },
    Op { op: u64, ask: AskId },
}

#[derive(Debug, Clone, Copy)]
enum Msg {
    Push {
        request: u64,
        slot: Slot,
        entry: Entry,
    },
    PushAnswer {
        request: u64,
        taken: bool,
        /// Whether the answering node is a replica as far as it knows.
        replica: bool,
    },
    Ping {
        request: u64,
    },
    Pong {
        request: u64,
    },
    Fetch {
        request: u64,
        slot: Slot,
    },
    FetchAnswer {
        request: u64,
        version: Option<u64>,
        replica: bool,
    },
    /// The answer to a request over the sender's [`Config::peer_limit`].
    Busy {
        request: u64,
    },
}

impl Msg {
    /// The id of a request; `None` for an answer.
    fn request(&self) -> Option<u64> {
        match *self {
            Msg::Push { request, .. } | Msg::Ping { request } | Msg::Fetch { request, .. } => {
                Some(request)
            }
            _ => None,
        }
    }
}

#[derive(Debug)]
enum Event {
    Deliver { to: usize, from: usize, msg: Msg },
    Timeout { node: usize, request: u64 },
    Wake { node: usize },
    Disconnected { node: usize, peer: PeerId },
    Learn { node: usize, peer: PeerId },
    OpTimeout { op: u64 },
}

#[derive(Debug)]
struct Scheduled {
    at: Instant,
    seq: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Scheduled) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Scheduled {}

impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Scheduled) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scheduled {
    fn cmp(&self, other: &Scheduled) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// A user's store or lookup under way: the core's [`Query`], as the real node runs it.
#[derive(Debug)]
struct Op {
    node: usize,
    slot: Slot,
    /// The entry stored; `None` for a lookup.
    entry: Option<Entry>,
    /// A refresh of the entry at this generation (its answer goes to the refresher).
    refresh: Option<u64>,
    query: Query,
    /// A lookup: the newest version the current phase's answers hold.
    found: Option<u64>,
    /// How it ended.
    done: Option<core::Done>,
}

impl Sim {
    /// A settled overlay of `config.nodes` nodes: each knows and is connected to all.
    pub fn new(config: Config) -> Sim {
        let rng = Rng::seeded(config.seed);
        let now = Instant::now();
        let mut sim = Sim {
            rng,
            now,
            nodes: Vec::new(),
            index: HashMap::new(),
            queue: BinaryHeap::new(),
            seq: 0,
            groups: None,
            ledger: BTreeMap::new(),
            ops: BTreeMap::new(),
            next_op: 0,
            leaving: None,
            stats: Stats::default(),
            config,
        };
        let ids: Vec<PeerId> = (0..sim.config.nodes).map(|_| sim.fresh_id()).collect();
        for id in &ids {
            let mut node = sim.node(*id);
            for peer in ids.iter().filter(|p| *p != id) {
                node.known.insert(*peer);
                node.connected.insert(*peer);
                node.replicator.peer_connected(*peer, now);
            }
            sim.add(node);
        }
        for i in 0..sim.nodes.len() {
            sim.reschedule(i);
        }
        let all: Vec<usize> = (0..sim.nodes.len()).collect();
        let keys: Vec<KBucketKey<PeerId>> = ids.iter().map(|id| KBucketKey::from(*id)).collect();
        for i in 0..sim.nodes.len() {
            sim.nodes[i].table = routing_table(i, &all, &keys, &ids, sim.config.bucket_size);
        }
        sim
    }

    /// Routes a message from node `from` to node `to` the way the overlay's Route does
    /// ([`next_hops`]) over the nodes' routing tables, without a direct connection unless the
    /// destination is in a table the message reaches: the number of links it crossed, or
    /// `None` when it got lost (a loop, a dead end, more than 32 hops). Dead nodes are
    /// skipped as the real node skips a peer that does not answer.
    pub fn route(&self, from: usize, to: usize) -> Option<u32> {
        let destination = self.nodes[to].id;
        let mut at = from;
        let mut visited = BTreeSet::from([self.nodes[from].id]);
        for hops in 0..32 {
            if at == to {
                return Some(hops);
            }
            let node = &self.nodes[at];
            let next = next_hops(&node.table, &destination, |p| visited.contains(p), 3)
                .into_iter()
                .filter(|p| *p != destination || node.table.contains(p))
                .find_map(|p| self.index.get(&p).copied().filter(|i| self.nodes[*i].alive))?;
            visited.insert(self.nodes[next].id);
            at = next;
        }
        None
    }

    /// Whether node `from`'s Kademlia routing table ([`Config::bucket_size`] a bucket) holds
    /// the `r` live nodes closest to `resource`: then the peers it believes closest are the
    /// replica set, and a lookup costs one round trip.
    pub fn table_knows_replicas(&self, from: usize, resource: &ResourceId) -> bool {
        let r = self.config.replicator.replicas.max(1);
        let me = self.nodes[from].id;
        let live = self
            .live()
            .into_iter()
            .map(|i| self.nodes[i].id)
            .collect::<Vec<_>>();
        let table = &self.nodes[from].table;
        closest_nodes(resource, live, r)
            .iter()
            .all(|peer| *peer == me || table.contains(peer))
    }

    /// The virtual time now.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// What the run counted so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// How many nodes there are, dead ones included (indices are stable).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The indices of the live nodes.
    pub fn live(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].alive)
            .collect()
    }

    /// A node's id.
    pub fn id(&self, node: usize) -> PeerId {
        self.nodes[node].id
    }

    /// The acknowledged stores: slot and the newest acknowledged version.
    pub fn ledger(&self) -> &BTreeMap<Slot, u64> {
        &self.ledger
    }

    /// The live nodes whose store holds `slot` at `version` or newer.
    pub fn holders(&self, slot: &Slot, version: u64) -> Vec<usize> {
        self.live()
            .into_iter()
            .filter(|i| {
                live_version(&self.nodes[*i].store, slot, self.now).is_some_and(|v| v >= version)
            })
            .collect()
    }

    /// A number from the run's generator below `n` (for tests that choose with the seed).
    pub fn below(&mut self, n: usize) -> usize {
        (self.rng.u64() % n.max(1) as u64) as usize
    }

    /// Node `node` publishes `version` of `slot` and stores it at the replica set; runs
    /// until the store is acknowledged by a majority or fails. Gives whether it was.
    pub fn publish(&mut self, node: usize, slot: Slot, version: u64) -> bool {
        let entry = Entry {
            version,
            expires: self.now + self.config.lifetime,
        };
        let now = self.now;
        let n = &mut self.nodes[node];
        keep_newer(&mut n.owned, slot, entry);
        n.refresher.keep(slot, version, self.config.lifetime, now);
        self.reschedule(node);
        let op = self.start_op(node, slot, Some(entry), None);
        self.run_op(op);
        let op = self.ops.remove(&op);
        let acked = op
            .and_then(|op| op.done)
            .is_some_and(|done| done.has_majority());
        if acked {
            let entry = self.ledger.entry(slot).or_insert(version);
            *entry = (*entry).max(version);
        }
        acked
    }

    /// Node `node` looks `slot` up: the newest version its replica set answers with.
    pub fn lookup(&mut self, node: usize, slot: Slot) -> Option<u64> {
        let op = self.start_op(node, slot, None, None);
        self.run_op(op);
        let op = self.ops.remove(&op)?;
        match op.done {
            Some(done) if done.direct => self.stats.direct_lookups += 1,
            _ => self.stats.full_lookups += 1,
        }
        op.found
    }

    /// Node `node` leaves gracefully: a handover pass pushes what it holds to the peers that
    /// are the replica sets without it, then it closes its connections (its peers notice at
    /// once). Gives whether the handover pass ended (within a request timeout per push).
    pub fn leave(&mut self, node: usize) -> bool {
        let now = self.now;
        let pass = self.nodes[node].replicator.request_pass(true, now);
        self.leaving = Some((node, pass, false));
        self.drive(node);
        while self.leaving.is_some_and(|(_, _, over)| !over) && !self.queue.is_empty() {
            self.step();
        }
        let handed_over = self.leaving.take().is_some_and(|(_, _, over)| over);
        self.stop(node, (Duration::ZERO, Duration::ZERO));
        handed_over
    }

    /// Node `node` stops publishing `slot` (no more refreshes): the copies expire with
    /// their lifetime, and the ledger forgets it.
    pub fn withdraw(&mut self, node: usize, slot: Slot) {
        let n = &mut self.nodes[node];
        n.owned.remove(&slot);
        n.refresher.withdraw(&slot);
        self.ledger.remove(&slot);
    }

    /// Kills a node (no goodbye: its peers notice after the detection delay).
    pub fn kill(&mut self, node: usize) {
        self.stop(node, self.config.detect_delay);
    }

    /// Node `node` stops; each peer notices after a delay drawn from `notice`.
    fn stop(&mut self, node: usize, notice: (Duration, Duration)) {
        let id = self.nodes[node].id;
        self.nodes[node].alive = false;
        self.nodes[node].pending.clear();
        for other in self.live() {
            if self.nodes[other].connected.contains(&id) {
                let delay = self.uniform(notice);
                self.schedule(
                    delay,
                    Event::Disconnected {
                        node: other,
                        peer: id,
                    },
                );
            }
        }
    }

    /// A new node joins through `bootstrap`; gives its index.
    pub fn join(&mut self, bootstrap: usize) -> usize {
        let id = self.fresh_id();
        let mut node = self.node(id);
        let known: Vec<PeerId> = self.nodes[bootstrap]
            .known
            .iter()
            .copied()
            .chain([self.nodes[bootstrap].id])
            .collect();
        for peer in known {
            node.known.insert(peer);
            node.connected.insert(peer);
            node.replicator.peer_connected(peer, self.now);
        }
        node.replicator.routing_changed(self.now);
        let index = self.add(node);
        self.reschedule(index);
        let live = self.live();
        let ids: Vec<PeerId> = self.nodes.iter().map(|n| n.id).collect();
        let keys: Vec<KBucketKey<PeerId>> = ids.iter().map(|id| KBucketKey::from(*id)).collect();
        self.nodes[index].table = routing_table(index, &live, &keys, &ids, self.config.bucket_size);
        for other in self.live() {
            if other != index {
                self.schedule(
                    self.config.join_delay,
                    Event::Learn {
                        node: other,
                        peer: id,
                    },
                );
            }
        }
        index
    }

    /// Cuts the overlay in groups (`group_of(node)`): messages between groups are lost, and
    /// connections across them close after the detection delay.
    pub fn partition(&mut self, group_of: impl Fn(usize) -> u8) {
        let groups: Vec<u8> = (0..self.nodes.len()).map(&group_of).collect();
        for a in self.live() {
            for b in self.live() {
                if groups[a] != groups[b] && self.nodes[a].connected.contains(&self.nodes[b].id) {
                    let delay = self.uniform(self.config.detect_delay);
                    let peer = self.nodes[b].id;
                    self.schedule(delay, Event::Disconnected { node: a, peer });
                }
            }
        }
        self.groups = Some(groups);
    }

    /// Ends the partition: the groups find each other again after the join delay.
    pub fn heal(&mut self) {
        let Some(groups) = self.groups.take() else {
            return;
        };
        for a in self.live() {
            for b in self.live() {
                if groups[a] != groups[b] {
                    let peer = self.nodes[b].id;
                    self.schedule(self.config.join_delay, Event::Learn { node: a, peer });
                }
            }
        }
    }

    /// Runs the events of the next `duration` of virtual time.
    pub fn run_for(&mut self, duration: Duration) {
        let until = self.now + duration;
        while self
            .queue
            .peek()
            .is_some_and(|Reverse(next)| next.at <= until)
        {
            self.step();
        }
        self.now = until;
    }

    fn run_op(&mut self, op: u64) {
        // Bounded: every request has a timeout, and a query asks each candidate once.
        while self.ops.get(&op).is_some_and(|op| op.done.is_none()) {
            if self.queue.is_empty() {
                break;
            }
            self.step();
        }
    }

    fn start_op(
        &mut self,
        node: usize,
        slot: Slot,
        entry: Option<Entry>,
        refresh: Option<u64>,
    ) -> u64 {
        let r = self.config.replicator.replicas.max(1);
        // A store and a lookup alike first ask the peers the node believes closest.
        let believed = self.nodes[node].replicator.closest(&slot.0, r);
        let query = Query::lookup(r, believed, self.config.request_timeout, self.now);
        self.next_op += 1;
        let id = self.next_op;
        self.ops.insert(
            id,
            Op {
                node,
                slot,
                entry,
                refresh,
                query,
                found: None,
                done: None,
            },
        );
        self.drive_op(id);
        id
    }

    /// Carries out an op's actions. The candidates are the node's own ranking (the
    /// simulated overlay is one hop: every node knows every live node), `4r` of them.
    fn drive_op(&mut self, id: u64) {
        let now = self.now;
        loop {
            let Some(op) = self.ops.get_mut(&id) else {
                return;
            };
            let Some(action) = op.query.poll_action() else {
                break;
            };
            let (node, slot, entry) = (op.node, op.slot, op.entry);
            match action {
                QueryAction::Ask { id: ask, peer } if peer == self.nodes[node].id => {
                    let n = &mut self.nodes[node];
                    let held = match entry {
                        Some(entry) => {
                            keep_newer(&mut n.store, slot, entry);
                            None
                        }
                        None => live_version(&n.store, &slot, now),
                    };
                    let replica = n.replicator.is_replica(&slot.0, |_| true);
                    self.op_answer(id, ask, Reply::Ok { replica }, held);
                }
                QueryAction::Ask { id: ask, peer } => {
                    let request = self.request(node, Pending::Op { op: id, ask });
                    let msg = match entry {
                        Some(entry) => Msg::Push {
                            request,
                            slot,
                            entry,
                        },
                        None => Msg::Fetch { request, slot },
                    };
                    self.send(node, peer, msg);
                }
                QueryAction::NeedCandidates => {
                    let r = self.config.replicator.replicas.max(1);
                    let candidates = self.nodes[node].replicator.closest(&slot.0, 4 * r);
                    if let Some(op) = self.ops.get_mut(&id) {
                        op.found = None;
                        op.query.candidates(candidates, now);
                    }
                }
                QueryAction::Done(done) => {
                    if let (Some(generation), Some(entry)) = (op.refresh, entry) {
                        let stored = done.has_majority().then_some(entry.version);
                        if stored.is_some() {
                            let acked = self.ledger.entry(slot).or_insert(entry.version);
                            *acked = (*acked).max(entry.version);
                        }
                        self.nodes[node]
                            .refresher
                            .refreshed(&slot, generation, stored, now);
                        self.ops.remove(&id);
                        self.reschedule(node);
                        return;
                    }
                    // As the node does: nothing found at the believed replicas alone is
                    // checked the long way.
                    if done.direct && entry.is_none() && op.found.is_none() {
                        op.query.fall_back();
                        continue;
                    }
                    op.done = Some(done);
                }
            }
        }
        if let Some(at) = self.ops.get(&id).and_then(|op| op.query.poll_timeout()) {
            self.schedule(
                at.saturating_duration_since(now),
                Event::OpTimeout { op: id },
            );
        }
    }

    /// An answer to an op's request: a store's acknowledgement or refusal, or a lookup's
    /// version.
    fn op_answer(&mut self, id: u64, ask: AskId, reply: Reply, version: Option<u64>) {
        let now = self.now;
        let Some(op) = self.ops.get_mut(&id) else {
            return;
        };
        if op.query.answer(ask, reply, now)
            && let Some(v) = version
        {
            op.found = Some(op.found.map_or(v, |f| f.max(v)));
        }
        self.drive_op(id);
    }

    fn step(&mut self) {
        let Some(Reverse(next)) = self.queue.pop() else {
            return;
        };
        self.now = self.now.max(next.at);
        self.stats.events += 1;
        match next.event {
            Event::Deliver { to, from, msg } => self.deliver(to, from, msg),
            Event::Timeout { node, request } => {
                if let Some(pending) = self.nodes[node].pending.remove(&request) {
                    self.failed(node, pending);
                }
            }
            Event::Wake { node } => {
                if self.nodes[node].alive && self.nodes[node].wake_at == Some(self.now) {
                    self.nodes[node].wake_at = None;
                    let now = self.now;
                    self.nodes[node].replicator.handle_timeout(now);
                    self.upkeep(node);
                    self.drive(node);
                }
            }
            Event::Disconnected { node, peer } => {
                let now = self.now;
                let n = &mut self.nodes[node];
                if n.alive && n.connected.remove(&peer) {
                    n.replicator.peer_disconnected(peer, now);
                    self.drive(node);
                }
            }
            Event::OpTimeout { op } => {
                let now = self.now;
                if let Some(o) = self.ops.get_mut(&op) {
                    o.query.handle_timeout(now);
                    self.drive_op(op);
                }
            }
            Event::Learn { node, peer } => {
                let now = self.now;
                let reachable = self.index.get(&peer).is_some_and(|i| self.nodes[*i].alive);
                let n = &mut self.nodes[node];
                if n.alive && reachable && n.id != peer {
                    n.known.insert(peer);
                    n.connected.insert(peer);
                    n.replicator.peer_connected(peer, now);
                    n.replicator.routing_changed(now);
                    self.drive(node);
                }
            }
        }
    }

    fn deliver(&mut self, to: usize, from: usize, msg: Msg) {
        if !self.nodes[to].alive {
            self.stats.lost += 1;
            return;
        }
        let sender = self.nodes[from].id;
        if let Some(request) = msg.request()
            && !self.admit(to, sender)
        {
            self.stats.busy += 1;
            self.send(to, sender, Msg::Busy { request });
            return;
        }
        match msg {
            Msg::Push {
                request,
                slot,
                entry,
            } => {
                let node = &mut self.nodes[to];
                let taken = node.replicator.takes_store(&slot.0, &sender, |_| true);
                if taken {
                    keep_newer(&mut node.store, slot, entry);
                } else {
                    self.stats.refused += 1;
                }
                let replica = node.replicator.is_replica(&slot.0, |_| true);
                let answer = Msg::PushAnswer {
                    request,
                    taken,
                    replica,
                };
                self.send(to, sender, answer);
            }
            Msg::Fetch { request, slot } => {
                let node = &mut self.nodes[to];
                let version = live_version(&node.store, &slot, self.now);
                let replica = node.replicator.is_replica(&slot.0, |_| true);
                self.send(
                    to,
                    sender,
                    Msg::FetchAnswer {
                        request,
                        version,
                        replica,
                    },
                );
            }
            Msg::Ping { request } => self.send(to, sender, Msg::Pong { request }),
            Msg::PushAnswer {
                request,
                taken,
                replica,
            } => {
                let Some(pending) = self.nodes[to].pending.remove(&request) else {
                    return;
                };
                let now = self.now;
                match pending {
                    Pending::Push { peer, slot } => {
                        let outcome = if taken {
                            Outcome::Held { entries: 1 }
                        } else {
                            Outcome::Refused { acked: 0 }
                        };
                        self.nodes[to].replicator.pushed(peer, slot, outcome, now);
                        self.drive(to);
                    }
                    Pending::Op { op, ask } => {
                        let reply = if taken {
                            Reply::Ok { replica }
                        } else {
                            Reply::Retry
                        };
                        self.op_answer(op, ask, reply, None);
                    }
                    Pending::Probe { .. } => {}
                }
            }
            Msg::FetchAnswer {
                request,
                version,
                replica,
            } => {
                if let Some(Pending::Op { op, ask }) = self.nodes[to].pending.remove(&request) {
                    self.op_answer(op, ask, Reply::Ok { replica }, version);
                }
            }
            Msg::Pong { request } => {
                if let Some(Pending::Probe { peer }) = self.nodes[to].pending.remove(&request) {
                    let now = self.now;
                    self.nodes[to].replicator.probed(peer, true, now);
                    self.drive(to);
                }
            }
            Msg::Busy { request } => {
                let Some(pending) = self.nodes[to].pending.remove(&request) else {
                    return;
                };
                let now = self.now;
                match pending {
                    Pending::Push { peer, slot } => {
                        let busy = Outcome::Busy { acked: 0 };
                        self.nodes[to].replicator.pushed(peer, slot, busy, now);
                        self.drive(to);
                    }
                    // Busy is alive.
                    Pending::Probe { peer } => {
                        self.nodes[to].replicator.probed(peer, true, now);
                        self.drive(to);
                    }
                    Pending::Op { op, ask } => self.op_answer(op, ask, Reply::Retry, None),
                }
            }
        }
    }

    /// Whether node `to` takes one more request from `peer` now ([`Config::peer_limit`]).
    fn admit(&mut self, to: usize, peer: PeerId) -> bool {
        let now = self.now;
        let Some(limits) = &mut self.nodes[to].limits else {
            return true;
        };
        let admitted = limits.admit(peer, now).is_ok();
        if admitted {
            // A simulated request is answered as it arrives: none waits.
            limits.done(&peer);
        }
        admitted
    }

    /// A request timed out.
    fn failed(&mut self, node: usize, pending: Pending) {
        let now = self.now;
        match pending {
            Pending::Push { peer, slot } => {
                self.nodes[node]
                    .replicator
                    .pushed(peer, slot, Outcome::Failed, now);
                self.drive(node);
            }
            Pending::Probe { peer } => {
                // Kademlia drops a peer it cannot reach.
                let n = &mut self.nodes[node];
                n.known.remove(&peer);
                n.connected.remove(&peer);
                n.replicator.probed(peer, false, now);
                n.replicator.peer_forgotten(peer, now);
                self.drive(node);
            }
            Pending::Op { op, ask } => self.op_answer(op, ask, Reply::Retry, None),
        }
    }

    /// Carries out a node's actions, then sets its timer.
    fn drive(&mut self, node: usize) {
        let now = self.now;
        while let Some(action) = self.nodes[node].replicator.poll_action() {
            match action {
                Action::Probe(peer) => {
                    let request = self.request(node, Pending::Probe { peer });
                    self.send(node, peer, Msg::Ping { request });
                }
                Action::NeedView => {
                    let n = &mut self.nodes[node];
                    let slots: BTreeSet<Slot> =
                        n.store.keys().chain(n.owned.keys()).copied().collect();
                    // The replicator was told of every peer as it came and went.
                    let view = View {
                        known: None,
                        connected: None,
                        slots: slots.into_iter().collect(),
                    };
                    n.replicator.view(view, now);
                }
                Action::Hold(slot) => {
                    let n = &mut self.nodes[node];
                    if let Some(entry) = n.owned.get(&slot).copied() {
                        keep_newer(&mut n.store, slot, entry);
                    }
                }
                Action::Push { peer, slot } => {
                    let n = &self.nodes[node];
                    let entry = n
                        .store
                        .get(&slot)
                        .copied()
                        .max(n.owned.get(&slot).copied())
                        .filter(|entry| entry.expires > now);
                    match entry {
                        Some(entry) => {
                            self.stats.pushes += 1;
                            let request = self.request(node, Pending::Push { peer, slot });
                            self.send(
                                node,
                                peer,
                                Msg::Push {
                                    request,
                                    slot,
                                    entry,
                                },
                            );
                        }
                        None => self.nodes[node].replicator.pushed(
                            peer,
                            slot,
                            Outcome::Held { entries: 0 },
                            now,
                        ),
                    }
                }
                Action::Drop(slot) => {
                    if self.nodes[node].store.remove(&slot).is_some() {
                        self.stats.dropped += 1;
                    }
                }
                Action::PassDone { id, .. } => {
                    self.stats.passes += 1;
                    if let Some((leaver, pass, over)) = &mut self.leaving
                        && *leaver == node
                        && *pass == id
                    {
                        *over = true;
                    }
                }
            }
        }
        self.reschedule(node);
    }

    /// Carries out what a node's refresher says is due: refreshes (stores of the next
    /// version, answered to the refresher when over) and the sweep.
    fn upkeep(&mut self, node: usize) {
        let now = self.now;
        let due = self.nodes[node].refresher.handle_timeout(now);
        for action in due {
            match action {
                RefreshAction::Refresh { slot, generation } => {
                    let entry = Entry {
                        version: generation + 1,
                        expires: now + self.config.lifetime,
                    };
                    keep_newer(&mut self.nodes[node].owned, slot, entry);
                    self.start_op(node, slot, Some(entry), Some(generation));
                }
                RefreshAction::Sweep => {
                    let n = &mut self.nodes[node];
                    let before = n.store.len();
                    n.store.retain(|_, entry| entry.expires > now);
                    self.stats.swept += (before - n.store.len()) as u64;
                }
            }
        }
    }

    fn reschedule(&mut self, node: usize) {
        let n = &self.nodes[node];
        let Some(at) = [n.replicator.poll_timeout(), n.refresher.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
        else {
            return;
        };
        let at = at.max(self.now);
        if self.nodes[node]
            .wake_at
            .is_some_and(|current| current <= at)
        {
            return;
        }
        self.nodes[node].wake_at = Some(at);
        self.schedule(at - self.now, Event::Wake { node });
    }

    fn request(&mut self, node: usize, pending: Pending) -> u64 {
        let n = &mut self.nodes[node];
        n.next_request += 1;
        let request = n.next_request;
        n.pending.insert(request, pending);
        self.schedule(
            self.config.request_timeout,
            Event::Timeout { node, request },
        );
        request
    }

    fn send(&mut self, from: usize, to: PeerId, msg: Msg) {
        self.stats.messages += 1;
        let Some(&to) = self.index.get(&to) else {
            self.stats.lost += 1;
            return;
        };
        let cut = self.groups.as_ref().is_some_and(|g| g[from] != g[to]);
        let lost =
            self.config.loss > 0.0 && (self.rng.u64() as f64 / u64::MAX as f64) < self.config.loss;
        if cut || lost {
            self.stats.lost += 1;
            return;
        }
        let delay = self.uniform(self.config.latency);
        self.schedule(delay, Event::Deliver { to, from, msg });
    }

    fn schedule(&mut self, after: Duration, event: Event) {
        self.seq += 1;
        self.queue.push(Reverse(Scheduled {
            at: self.now + after,
            seq: self.seq,
            event,
        }));
    }

    fn uniform(&self, (low, high): (Duration, Duration)) -> Duration {
        let span = high.saturating_sub(low).as_nanos() as u64;
        low + Duration::from_nanos(if span == 0 { 0 } else { self.rng.u64() % span })
    }

    fn fresh_id(&mut self) -> PeerId {
        let seed: [u8; 32] = self.rng.bytes();
        Keypair::ed25519_from_bytes(seed)
            .expect("any 32 bytes are an ed25519 secret key")
            .public()
            .to_peer_id()
    }

    fn node(&self, id: PeerId) -> Node {
        Node {
            id,
            alive: true,
            replicator: Replicator::new(id, self.config.replicator.clone(), self.now),
            store: BTreeMap::new(),
            owned: BTreeMap::new(),
            refresher: Refresher::new(self.config.refresh.clone(), self.now),
            known: BTreeSet::new(),
            connected: BTreeSet::new(),
            table: Ranking::new(),
            pending: BTreeMap::new(),
            limits: self
                .config
                .peer_limit
                .map(|(rate, burst)| PeerLimits::new(usize::MAX, rate, burst, usize::MAX)),
            next_request: 0,
            wake_at: None,
        }
    }

    fn add(&mut self, node: Node) -> usize {
        let index = self.nodes.len();
        self.index.insert(node.id, index);
        self.nodes.push(node);
        index
    }
}

/// Node `me`'s Kademlia routing table over `nodes`: the first `k` of each bucket (by
/// index; the ids are random).
fn routing_table(
    me: usize,
    nodes: &[usize],
    keys: &[KBucketKey<PeerId>],
    ids: &[PeerId],
    k: usize,
) -> Ranking {
    let mut buckets: BTreeMap<u32, usize> = BTreeMap::new();
    let mut table = Ranking::new();
    for &other in nodes {
        if other == me {
            continue;
        }
        let Some(bucket) = keys[me].distance(&keys[other]).ilog2() else {
            continue;
        };
        let filled = buckets.entry(bucket).or_default();
        if *filled < k {
            *filled += 1;
            table.insert_key(ids[other], keys[other]);
        }
    }
    table
}
