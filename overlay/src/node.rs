//! # A running overlay node
//!
//! [`Overlay::start`] opens the node's data directory (its key, [`NodeKey::load_or_create`], and
//! its sled [`Store`]), starts the libp2p [`Network`], rejoins the overlay (the bootstrap
//! addresses first, then the peers remembered in the store's peer cache, then a Kademlia
//! bootstrap; a node that finds nobody forms a new overlay on its own) and spawns one tokio
//! task that answers the requests of other peers and keeps the data replicated.
//!
//! ## What the node does for its user
//!
//! - [`Overlay::store`] sends a signed entry to the `r` peers closest to the resource (the
//!   node itself may be one of them and then stores locally through [`Store::store`], which
//!   applies the same access checks as every replica): first to the `r` peers it believes
//!   closest, in one round trip, kept when each acknowledges and says it is a replica; else
//!   to those a Kademlia lookup finds. It succeeds when a **majority** of the replica set
//!   (`r / 2 + 1` of it, or of the peers known when the overlay has fewer than `r`)
//!   acknowledged; a replica that did not answer is replaced by the next closest peer. When
//!   the majority refused, the refusal is the error (`Forbidden`, `GenerationTooLow`, ...:
//!   [`Error::code`]).
//! - [`Overlay::fetch`] asks the replicas, up to `r` answers, and merges them with
//!   [`data::merge`], unchecked: first the `r` peers the node believes closest, in one round
//!   trip, kept when each says it is a replica and one holds something; else the closest
//!   peers a Kademlia lookup finds, falling back to the next closest peer when one fails.
//! - [`Overlay::fetch_verified`] reads an AOR the way a lookup must: the claim and the
//!   registrations from all `r` members of the replica set (a silent one replaced by the next
//!   closest), every entry checked as a storing node would check it, and the claim decided by
//!   a majority ([`quorum`]); entries that fail are discarded and counted
//!   ([`Overlay::rejected_entries`]). On a settled overlay it costs one round trip: the `r`
//!   peers the node believes closest are asked at once (one FetchKinds each), and when every
//!   one answers that it is a replica as far as it knows, no Kademlia lookup is made
//!   ([`Overlay::lookups`] counts both ways). The peers it believes closest come from all it
//!   knows: its routing table, its connections, and its directory (below), so that it knows
//!   the replica sets of an overlay larger than its Kademlia table.
//! - [`Overlay::route`] sends an opaque payload hop by hop to a node; the destination hands it
//!   to the handler set by [`Overlay::set_route_handler`], and the answer retraces the path.
//!   Every hop calls [`Envelope::hop`] (TTL, Via list, loop detection) and forwards to the
//!   known peer closest to the destination (XOR in Kademlia's key space). The message is
//!   authenticated end to end ([`crate::auth`]): the origin signs it with its node key (over
//!   origin, destination, a random nonce, a timestamp and the payload); each hop refuses one
//!   whose last Via entry is not the libp2p peer that sent it; the destination delivers it
//!   only when the signature verifies, its Via list starts with the signed origin, and its
//!   (origin, nonce) is fresh ([`Config::route_window`], a bounded replay cache of
//!   [`Config::replay_capacity`]); it signs the answer, and the origin refuses an answer
//!   whose signature fails (a faked delivery). Each refusal is counted ([`Overlay::refused`]).
//!   Transaction ids and nonces come from the OS RNG ([`crate::rng`]).
//! - [`Overlay::publish`] is the store of an owner: the node re-signs the entry (new storage
//!   time, higher generation) and stores it again every half lifetime, and pushes it to the
//!   resource's replica set whenever that changes, until [`Overlay::withdraw`].
//! - [`Overlay::path_track`] and [`Overlay::ping`] are diagnostics.
//!
//! ## Membership exchange
//!
//! Kademlia keeps only peers the node has been connected to, a few hundred on an overlay of a
//! thousand. The node also keeps a directory of every member it has heard of (the network's,
//! `directory.rs`: each member checked as identify's are before it enters, dialled on the
//! addresses it came with, gone after a failed dial) and exchanges it with its peers
//! ([`Request::Members`]): now and then it sends a random peer (a connected one when it has
//! one) the members it learned lately and takes in the peer's; its first exchange asks for
//! the peer's whole directory. It dials for an exchange only when it has news to pass on:
//! with none, it catches up over a connection it has anyway. The waits are [`Config::exchange_interval`] after news and
//! grow fourfold after each exchange in which neither side learned anything, up to
//! [`Config::exchange_interval_max`]: a joining node is known everywhere within seconds, and
//! a quiet overlay exchanges rarely.
//!
//! ## Replication and churn
//!
//! The decisions below are [`core::Replicator`]'s (sans-IO, also run by [`crate::sim`]); a
//! driver task of the node carries out its actions, a few resources at a time, and feeds the
//! answers back. When a peer enters the routing table or disconnects (debounced by
//! [`Config::repair_delay`]), every [`Config::replication_interval`], and on
//! [`Overlay::replicate`], the node walks its store: for each resource it computes the `r`
//! closest live peers it knows (routing table, connected peers and directory, itself included) and pushes
//! the entries to the members it has not pushed them to yet or has no connection to (to all of
//! them every sixth pass, since a member may have dropped its copy); the entries it publishes are
//! walked the same way, so an owner restores its entries even when every replica died. Claims
//! go before registrations (a replica refuses the registrations of an AOR it has no claim
//! of). A peer counts as holding a resource only when it acknowledged every entry (stored it,
//! or answered that it holds a newer version); a peer that refuses (full, forbidden, not a
//! replica: counted in [`Overlay::refused_pushes`]) is not a holder, and the next closest
//! peer gets the push instead. A peer that disconnected or failed a push is skipped (and no
//! longer counts as a holder) until it answers a ping again. A node that finds itself outside
//! a resource's replica set deletes its own copy only once all `r` members acknowledged, in
//! that same pass, every entry it holds. The tables of the pass (what was pushed to whom, the
//! peers held as down) are pruned of resources no longer held and of peers no longer known
//! ([`Overlay::replication_tables`]). Expired entries are swept every
//! [`Config::sweep_interval`]. [`Overlay::leave`] hands every local resource to the closest
//! other peers before it shuts the node down.
//!
//! ## Inbound requests
//!
//! Each is decoded with [`Config::max_message_size`]; a message that is too large or does not
//! decode is answered with a [`Response::Error`] and counted ([`Overlay::bad_messages`]). A
//! request over the network's per-peer or global limits is answered with `Busy` and counted
//! ([`Refused::busy`]).
//! Store is taken only by a replica of the resource: a node that is not among the `r` closest
//! to it of the peers it has a connection to and itself (the sender left out, so that the closest
//! other peers take the handover of a leaving node; with a margin of `r` places for closer
//! peers that are silent without this node knowing it) answers [`ErrorCode::NotReplica`]
//! (counted in [`Overlay::not_replica`]), and the storing node tries the next closest peer.
//! Then it goes through [`Store::store`] (on disk before the answer; a replayed entry costs
//! no write, and per-signer quotas apply); Fetch, FetchKinds (which also says whether this
//! node is a replica, [`core::Replicator::is_replica`]) and Stat read the local store; Route and
//! PathTrack are forwarded or delivered; Ping is answered with Pong.

use std::collections::{HashMap, HashSet};
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use libp2p::{Multiaddr, PeerId, identity::Keypair};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};
use tracing::{Instrument as _, debug, info, warn};

use crate::access::AccessPolicy;
use crate::auth::{self, ReplayCache, RouteId};
use crate::core::{
    self, Action, Done, Outcome, PassId, Query, QueryAction, Ranking, RefreshAction, RefreshConfig,
    Refresher, Replicator, Reply, Slot as PassSlot, View, next_hops,
};
use crate::data::{self, Kind, StoredData};
use crate::error::{self as overlay_error, ErrorCode};
use crate::id::{ResourceId, closest_nodes};
use crate::identity::NodeKey;
use crate::identity::is_self_certifying;
use crate::message::{
    self, Body, DEFAULT_MAX_MESSAGE, Envelope, MAX_KINDS, MAX_MEMBERS, MemberInfo, Request,
    Response,
};
use crate::network::{self, Event, Events, Network, Responder};
use crate::quorum;
use crate::rng::Rng;
use crate::store::{Limits, Store};

/// The handler of Route messages for this node: takes the node the message came from (its
/// origin, proven by the origin's signature: see [`crate::auth`]) and the payload, and gives
/// the answer (signed by this node before it goes back), or the overlay error
/// the sender gets (an [`overlay_error::Error::InvalidMessage`] for a payload it cannot use,
/// say). It runs on the node's task: it must not block.
pub type RouteHandler =
    Box<dyn Fn(PeerId, Vec<u8>) -> Result<Vec<u8>, overlay_error::Error> + Send + Sync>;

/// The most peers held as down at once (the table is also pruned of unknown peers by every
/// replication pass).
const MAX_DOWN: usize = 4096;

/// Every this many replication passes, a node pushes its entries to the whole replica set
/// again, not only to the peers it has not pushed them to.
const VERIFY_EVERY: u64 = 6;
/// The first wait before a read refused as busy is asked again ([`Inner::ask_read`]).
const BUSY_RETRY: Duration = Duration::from_millis(5);
/// How many times a read refused as busy is asked again: waits of 5, 10, 20 and 40 ms, 75 ms
/// in all, within a lookup's deadline.
const BUSY_RETRIES: usize = 4;

/// How a node is set up. Start from [`Config::new`] (or [`Config::default`]) and change the
/// fields you need.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// The node's data directory: `node.key` and the sled store live there. Default
    /// `./p2psip-data`.
    pub data_dir: PathBuf,
    /// The libp2p layer: overlay name, listen and bootstrap addresses, mDNS, limits.
    pub network: network::Config,
    /// The replication factor `r`: how many peers hold each resource. Default 3.
    pub replicas: usize,
    /// What this node accepts to store (limits, enrollment CA, clock skew).
    pub policy: AccessPolicy,
    /// The bounds of the local store.
    pub limits: Limits,
    /// How long one request to one peer may take before the next peer is tried. Default 5 s.
    pub request_timeout: Duration,
    /// How long a Kademlia lookup of a resource's replicas may take; after it, the peers
    /// found so far and the live peers this node knows are used. Default 2 s.
    pub lookup_timeout: Duration,
    /// How long [`Overlay::start`] waits for its first Kademlia bootstrap. Default 10 s.
    pub join_timeout: Duration,
    /// How often the whole store is checked against the replica sets. Default 60 s.
    pub replication_interval: Duration,
    /// How long after a routing change the replication pass runs (changes in between are
    /// handled by one pass). Default 500 ms.
    pub repair_delay: Duration,
    /// How often expired entries are deleted. Default 60 s.
    pub sweep_interval: Duration,
    /// The largest message accepted, in bytes (at most [`message::MAX_MESSAGE_LIMIT`]).
    /// Default 64 KiB.
    pub max_message_size: usize,
    /// How far the signing time of a Route message may be from this node's clock (either
    /// way) for it to be delivered; older ones are refused as stale, since the replay cache
    /// forgets after this long. Default 60 s.
    pub route_window: Duration,
    /// The most Route messages the replay cache remembers; when full, it forgets the oldest
    /// and refuses everything signed before it as stale. Default 65 536.
    pub replay_capacity: usize,
    /// The membership exchange's shortest wait between two exchanges: its wait after one
    /// that brought a new member, or once a new member came some other way (see
    /// [`network::Network::directory`]). Default 5 s.
    pub exchange_interval: Duration,
    /// The membership exchange's longest wait: the wait grows fourfold after each exchange
    /// that brought nothing new, up to this (as RFC 6206's Trickle timer). News does not
    /// wait for it: a node that learns of a member exchanges again after the shortest wait.
    /// Default 30 min.
    pub exchange_interval_max: Duration,
    /// Tests only: draw transaction ids and nonces from a reproducible generator seeded with
    /// this, not from the operating system's RNG. Default `None` (the OS RNG); a seeded node
    /// is predictable, never use one in production.
    pub seed: Option<u64>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            data_dir: PathBuf::from("p2psip-data"),
            network: network::Config::default(),
            replicas: 3,
            policy: AccessPolicy::default(),
            limits: Limits::default(),
            request_timeout: Duration::from_secs(5),
            lookup_timeout: Duration::from_secs(2),
            join_timeout: Duration::from_secs(10),
            replication_interval: Duration::from_secs(60),
            repair_delay: Duration::from_millis(500),
            sweep_interval: Duration::from_secs(60),
            max_message_size: DEFAULT_MAX_MESSAGE,
            route_window: Duration::from_secs(60),
            replay_capacity: 65_536,
            exchange_interval: Duration::from_secs(5),
            exchange_interval_max: Duration::from_secs(30 * 60),
            seed: None,
        }
    }
}

impl Config {
    /// The default configuration with `data_dir` as the data directory.
    pub fn new(data_dir: impl Into<PathBuf>) -> Config {
        Config {
            data_dir: data_dir.into(),
            ..Config::default()
        }
    }

    /// Replaces the network configuration.
    pub fn with_network(mut self, network: network::Config) -> Config {
        self.network = network;
        self
    }

    /// Sets the replication factor (at least 1).
    pub fn with_replicas(mut self, replicas: usize) -> Config {
        self.replicas = replicas.max(1);
        self
    }
}

/// Why a node operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The overlay's rules refused the request, here or at a peer (its code:
    /// [`Error::code`]), or the local store or key failed.
    #[error(transparent)]
    Overlay(#[from] overlay_error::Error),
    /// The network failed: no connection, no answer, no known peer.
    #[error(transparent)]
    Network(#[from] network::Error),
    /// Too few replicas acknowledged a store.
    #[error(
        "only {acked} of the {needed} replicas needed acknowledged the store ({last}); try again"
    )]
    NoQuorum {
        /// How many acknowledged.
        acked: usize,
        /// How many were needed.
        needed: usize,
        /// The last failure seen.
        last: String,
    },
    /// The replicas of an AOR did not agree: no claim (nor its absence) is held by a
    /// majority of the replica set ([`Overlay::fetch_verified`]).
    #[error(transparent)]
    NoMajority(#[from] quorum::NoMajority),
    /// No peer could be asked (every one failed, or none is known).
    #[error("no peer answered: {0}")]
    Unreachable(String),
    /// A peer answered with something that is not an answer to the request.
    #[error("unexpected answer from {peer}: {what}")]
    UnexpectedAnswer {
        /// The peer.
        peer: PeerId,
        /// What came back.
        what: String,
    },
    /// The node has stopped.
    #[error("the overlay node has stopped")]
    Stopped,
}

impl Error {
    /// The overlay error code of this error, when it has one (a refusal by the overlay's
    /// rules, here or at a replica): `Forbidden`, `GenerationTooLow`, `TtlExceeded`...
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Overlay(error) => Some(error.code()),
            _ => None,
        }
    }
}

/// What this node refused, by reason (see [`Overlay::refused`]). Every refusal also answers
/// the sender with an error code and a sentence.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Refused {
    /// Route messages whose origin's signature did not verify: a forged origin, or a payload
    /// changed on the way (`Forbidden`).
    pub bad_signature: u64,
    /// Route and PathTrack messages whose last Via entry is not the peer that sent them, or
    /// whose first is not their signed origin (`Forbidden`).
    pub wrong_sender: u64,
    /// Route messages delivered before: replays (`Replayed`).
    pub replayed: u64,
    /// Route messages signed outside the freshness window (`Stale`).
    pub stale: u64,
    /// Answers to this node's Route messages not signed by their destination: a faked
    /// delivery by a node on the path (the caller gets `Forbidden`).
    pub forged_answers: u64,
    /// Inbound requests refused by the network's per-peer or global limits (`Busy`).
    pub busy: u64,
}

impl Refused {
    /// Every refusal together.
    pub fn total(&self) -> u64 {
        self.bad_signature
            + self.wrong_sender
            + self.replayed
            + self.stale
            + self.forged_answers
            + self.busy
    }
}

/// The counters behind [`Refused`].
#[derive(Default)]
struct RefusedCounters {
    bad_signature: AtomicU64,
    wrong_sender: AtomicU64,
    replayed: AtomicU64,
    stale: AtomicU64,
    forged_answers: AtomicU64,
}

/// A running overlay node. Dropping it stops the node abruptly (as [`Overlay::kill`]).
pub struct Overlay {
    inner: Arc<Inner>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Overlay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Overlay")
            .field("node_id", &self.inner.id)
            .finish_non_exhaustive()
    }
}

/// What the node's task and the handles share.
struct Inner {
    id: PeerId,
    key: NodeKey,
    network: Network,
    store: Store,
    config: Config,
    handler: RwLock<Option<Arc<RouteHandler>>>,
    /// Transaction ids and nonces.
    rng: Rng,
    /// The Route messages delivered here recently.
    replays: Mutex<ReplayCache>,
    refused: RefusedCounters,
    bad_messages: AtomicU64,
    /// Entries of fetch answers that failed the checks of a storing node.
    rejected_entries: AtomicU64,
    /// Stores refused because this node is not a replica of the resource.
    not_replica: AtomicU64,
    /// Entries this node pushed that a peer refused (full, forbidden, not a replica).
    refused_pushes: AtomicU64,
    /// Route and PathTrack messages forwarded for other nodes.
    forwarded: AtomicU64,
    /// How this node's lookups went.
    lookups: LookupCounters,
    /// Replication and repair's decisions ([`core::Replicator`]); also which peers are held
    /// as down (disconnected, or failed a request) and skipped until they answer.
    replicator: Mutex<Replicator>,
    /// Wakes the replication driver after an input to the replicator.
    replication_wake: tokio::sync::Notify,
    /// Who waits for the end of which pass.
    pass_waiters: Mutex<Vec<(PassId, oneshot::Sender<usize>)>>,
    /// Set when the node stops: no pass will run any more.
    stopped: std::sync::atomic::AtomicBool,
    /// The entries this node publishes and refreshes for its users ([`Overlay::publish`]).
    owned: Mutex<HashMap<Slot, Owned>>,
    /// When they are refreshed, and when the store is swept ([`core::Refresher`]).
    refresher: Mutex<Refresher<Slot>>,
    /// Wakes the node's task when `owned` changed.
    owned_changed: tokio::sync::Notify,
}

/// How this node's lookups of AORs and its plain fetches went ([`Overlay::lookups`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lookups {
    /// Lookups of AORs answered in one round trip by the replicas this node knew.
    pub one_round_trip: u64,
    /// Lookups of AORs that needed a Kademlia lookup of the replica set.
    pub full: u64,
    /// Plain fetches ([`Overlay::fetch`]) answered in one round trip.
    pub fetches_one_round_trip: u64,
    /// Plain fetches that needed a Kademlia lookup of the replica set.
    pub fetches_full: u64,
    /// Stores acknowledged in one round trip by the replicas this node knew.
    pub stores_one_round_trip: u64,
    /// Stores that needed a Kademlia lookup of the replica set.
    pub stores_full: u64,
}

#[derive(Debug, Default)]
struct LookupCounters {
    one_round_trip: AtomicU64,
    full: AtomicU64,
    fetches_one_round_trip: AtomicU64,
    fetches_full: AtomicU64,
    stores_one_round_trip: AtomicU64,
    stores_full: AtomicU64,
}

/// Where one entry lives: resource, kind and dictionary key.
type Slot = (ResourceId, Kind, Vec<u8>);

/// An entry this node keeps alive: its current signed version and the key that signs the
/// next one (when: [`Inner::refresher`]).
struct Owned {
    data: StoredData,
    signer: Keypair,
}

impl Overlay {
    /// Starts a node: opens its data directory, starts the network, rejoins the overlay and
    /// spawns the node's task. Must be called inside a tokio runtime.
    pub async fn start(config: Config) -> Result<Overlay, Error> {
        let dir = config.data_dir.clone();
        let limits = config.limits.clone();
        let work = config.network.node_id_work;
        let (key, store) = tokio::task::spawn_blocking(move || {
            let key = NodeKey::load_or_create_with_work(&dir, work)?;
            let store = Store::open_with(&dir, limits)?;
            Ok::<_, overlay_error::Error>((key, store))
        })
        .await
        .map_err(|_| Error::Stopped)??;
        let id = key.node_id();
        let (network, events) = Network::start_with_refusal(
            key.keypair().clone(),
            config.network.clone(),
            Arc::new(refusal_frame),
        )
        .await?;
        let rng = config.seed.map_or_else(Rng::os, Rng::seeded);
        let replicator = Replicator::new(
            id,
            replicator_config(&config),
            tokio::time::Instant::now().into_std(),
        );
        let refresh = RefreshConfig {
            retry: config.request_timeout * 2,
            sweep_interval: config.sweep_interval,
        };
        let refresher = Refresher::new(refresh, tokio::time::Instant::now().into_std());
        let window_ms = u64::try_from(config.route_window.as_millis()).unwrap_or(u64::MAX);
        let replays = Mutex::new(ReplayCache::new(window_ms, config.replay_capacity));
        let inner = Arc::new(Inner {
            id,
            key,
            network,
            store,
            config,
            handler: RwLock::new(None),
            rng,
            replays,
            refused: RefusedCounters::default(),
            bad_messages: AtomicU64::new(0),
            rejected_entries: AtomicU64::new(0),
            not_replica: AtomicU64::new(0),
            refused_pushes: AtomicU64::new(0),
            forwarded: AtomicU64::new(0),
            lookups: LookupCounters::default(),
            replicator: Mutex::new(replicator),
            replication_wake: tokio::sync::Notify::new(),
            pass_waiters: Mutex::new(Vec::new()),
            stopped: std::sync::atomic::AtomicBool::new(false),
            owned: Mutex::new(HashMap::new()),
            refresher: Mutex::new(refresher),
            owned_changed: tokio::sync::Notify::new(),
        });
        let span = tracing::info_span!("overlay", node = %id);
        let task = tokio::spawn(run(inner.clone(), events).instrument(span));
        inner.join().await;
        Ok(Overlay {
            inner,
            task: Mutex::new(Some(task)),
        })
    }

    /// This node's Node-ID.
    pub fn node_id(&self) -> PeerId {
        self.inner.id
    }

    /// This node's key pair (it signs the registrations of devices registered here).
    pub fn keypair(&self) -> &Keypair {
        self.inner.key.keypair()
    }

    /// The addresses the node listens on, each with its `/p2p/<node id>` suffix.
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, Error> {
        let addrs = self.inner.network.listen_addrs().await?;
        Ok(addrs
            .into_iter()
            .map(|addr| addr.with_p2p(self.inner.id).unwrap_or_else(|addr| addr))
            .collect())
    }

    /// The network handle (routing table, connected peers, dials).
    pub fn network(&self) -> &Network {
        &self.inner.network
    }

    /// The local store.
    pub fn local_store(&self) -> &Store {
        &self.inner.store
    }

    /// How many inbound messages were refused because they were too large or did not decode.
    pub fn bad_messages(&self) -> u64 {
        self.inner.bad_messages.load(Ordering::Relaxed)
    }

    /// How many entries in the answers of replicas to [`Overlay::fetch_verified`] failed the
    /// checks a storing node makes (bad signature, expired, no delegation, no certificate of
    /// the enrollment CA, under a claim that lost the vote...) and were discarded.
    pub fn rejected_entries(&self) -> u64 {
        self.inner.rejected_entries.load(Ordering::Relaxed)
    }

    /// How this node's lookups of AORs ([`Overlay::fetch_verified`]) and plain fetches
    /// ([`Overlay::fetch`]) went: how many the replicas it knew answered in one round trip,
    /// how many needed a Kademlia lookup.
    pub fn lookups(&self) -> Lookups {
        let counters = &self.inner.lookups;
        Lookups {
            one_round_trip: counters.one_round_trip.load(Ordering::Relaxed),
            full: counters.full.load(Ordering::Relaxed),
            fetches_one_round_trip: counters.fetches_one_round_trip.load(Ordering::Relaxed),
            fetches_full: counters.fetches_full.load(Ordering::Relaxed),
            stores_one_round_trip: counters.stores_one_round_trip.load(Ordering::Relaxed),
            stores_full: counters.stores_full.load(Ordering::Relaxed),
        }
    }

    /// How many answers the node's decisions ignored because nothing was waiting for them
    /// (a push, probe or view not under way; a refresh withdrawn or published again).
    pub fn ignored_answers(&self) -> u64 {
        self.inner.replicator().ignored() + self.inner.refresher().ignored()
    }

    /// How many stores this node refused because it is not among the replicas of their
    /// resource as far as it knows ([`ErrorCode::NotReplica`]).
    pub fn not_replica(&self) -> u64 {
        self.inner.not_replica.load(Ordering::Relaxed)
    }

    /// How many entries this node pushed to a replica that refused them (full, forbidden,
    /// not a replica); such a peer does not count as holding them.
    pub fn refused_pushes(&self) -> u64 {
        self.inner.refused_pushes.load(Ordering::Relaxed)
    }

    /// The sizes of the node's replication tables keyed by what peers send: the (resource,
    /// kind) pairs it remembers pushing, and the peers it holds as down. Both are pruned by
    /// every replication pass.
    pub fn replication_tables(&self) -> (usize, usize) {
        let (down, pushed) = self.inner.replicator().tables();
        (pushed, down)
    }

    /// What this node refused since it started, by reason: forged or changed Route messages,
    /// replays, faked answers, requests over the per-peer limits.
    pub fn refused(&self) -> Refused {
        let counters = &self.inner.refused;
        Refused {
            bad_signature: counters.bad_signature.load(Ordering::Relaxed),
            wrong_sender: counters.wrong_sender.load(Ordering::Relaxed),
            replayed: counters.replayed.load(Ordering::Relaxed),
            stale: counters.stale.load(Ordering::Relaxed),
            forged_answers: counters.forged_answers.load(Ordering::Relaxed),
            busy: self.inner.network.refused_requests(),
        }
    }

    /// How many Route and PathTrack messages this node forwarded for other nodes (it was
    /// neither their origin nor their destination).
    pub fn forwarded(&self) -> u64 {
        self.inner.forwarded.load(Ordering::Relaxed)
    }

    /// Sets the handler of the Route messages addressed to this node.
    pub fn set_route_handler(&self, handler: RouteHandler) {
        *self
            .inner
            .handler
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(handler));
    }

    /// Runs a Kademlia bootstrap now (after more peers joined, say).
    pub async fn bootstrap(&self) -> Result<(), Error> {
        Ok(self.inner.network.bootstrap().await?)
    }

    /// Stores one signed entry on the resource's replicas; gives how many acknowledged (a
    /// majority of the replica set at least). See the [module docs](self).
    pub async fn store(
        &self,
        resource: ResourceId,
        kind: Kind,
        key: Vec<u8>,
        data: StoredData,
    ) -> Result<usize, Error> {
        self.inner.store_replicated(resource, kind, key, data).await
    }

    /// Publishes an entry this node keeps alive for its user: signs `value` with `signer` (a
    /// new generation, stored now, for `lifetime` seconds), stores it like [`Overlay::store`]
    /// and from then on re-signs and stores it again every half lifetime, and pushes it to
    /// the resource's new replicas whenever the replica set changes, until
    /// [`Overlay::withdraw`]. Publishing the same slot again replaces the value. Gives the
    /// stored entry.
    pub async fn publish(
        &self,
        resource: ResourceId,
        kind: Kind,
        key: Vec<u8>,
        value: Vec<u8>,
        lifetime: u32,
        signer: &Keypair,
    ) -> Result<StoredData, Error> {
        let inner = &self.inner;
        let slot = (resource, kind, key);
        let previous = inner.owned_generation(&slot);
        let data = inner.sign_next(&slot, previous, value, lifetime, signer)?;
        inner
            .store_replicated(resource, kind, slot.2.clone(), data.clone())
            .await?;
        inner.keep(slot, data.clone(), signer.clone());
        Ok(data)
    }

    /// Stops refreshing an entry published with [`Overlay::publish`]; the copies on the
    /// replicas expire with their lifetime. Gives the last version published, if any.
    pub fn withdraw(&self, resource: ResourceId, kind: Kind, key: &[u8]) -> Option<StoredData> {
        let removed = self
            .inner
            .owned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&(resource, kind, key.to_vec()))
            .map(|owned| owned.data);
        self.inner
            .refresher()
            .withdraw(&(resource, kind, key.to_vec()));
        self.inner.owned_changed.notify_one();
        removed
    }

    /// Fetches the live entries of a resource and kind from its replicas, merged as they are
    /// (not checked: use [`Overlay::fetch_verified`] to read an AOR). Empty when the replicas
    /// hold nothing; a peer's `Busy` refusal when nothing was found while a peer asked refused
    /// as busy, since that peer may hold it. Like a lookup, first in one round trip from the
    /// `r` peers this node believes closest, when each holds itself a replica and one of them
    /// holds something; else through a Kademlia lookup of the replica set (and the next `r`
    /// peers when the set holds nothing, [`Query::widen`]).
    pub async fn fetch(
        &self,
        resource: ResourceId,
        kind: Kind,
    ) -> Result<Vec<(Vec<u8>, StoredData)>, Error> {
        self.inner.fetch(resource, kind).await
    }

    /// Reads an AOR from its replica set the way a lookup must: asks all `r` members (a
    /// silent one replaced by the next closest peer) for the AOR's claim and registrations,
    /// checks every entry of every answer as a storing node would (this node's
    /// [`Config::policy`], its enrollment CA included), and decides by what a majority holds
    /// ([`quorum::decide`]). Fails with [`Error::NoMajority`] when the replicas disagree, and
    /// with a peer's `Busy` refusal when no registration was found while a peer asked refused
    /// as busy (it may be the replica that holds them).
    pub async fn fetch_verified(&self, aor: &str) -> Result<quorum::Verified, Error> {
        self.inner.fetch_verified(aor).await
    }

    /// Sends `payload` to the node `destination` through the overlay; gives its answer and
    /// the number of overlay links the request crossed (0 when the destination is this node).
    pub async fn route(
        &self,
        destination: PeerId,
        payload: Vec<u8>,
    ) -> Result<(Vec<u8>, u8), Error> {
        let inner = &self.inner;
        if destination == inner.id {
            let answer = inner.deliver(inner.id, payload)?;
            return Ok((answer, 0));
        }
        let id = RouteId {
            origin: inner.id,
            destination,
            nonce: inner.rng.bytes(),
            timestamp_ms: now_ms(),
        };
        let request = Request::route(
            inner.key.keypair(),
            &destination,
            id.nonce,
            id.timestamp_ms,
            payload.clone(),
        )?;
        let mut envelope = Envelope::request(inner.next_transaction(), Some(&destination), request);
        envelope.hop(&inner.id).map_err(Error::Overlay)?;
        let reply = inner.forward(envelope, destination).await?;
        let hops = u8::try_from(reply.via.len()).unwrap_or(u8::MAX);
        match into_response(reply)? {
            Response::Routed {
                payload: answer,
                signature,
            } => {
                if let Err(error) = auth::verify_answer(&id, &payload, &answer, &signature) {
                    inner.refused.forged_answers.fetch_add(1, Ordering::Relaxed);
                    warn!(%destination, %error, "refused a forged answer to a Route message");
                    return Err(error.into());
                }
                Ok((answer, hops))
            }
            other => Err(unexpected(destination, &other)),
        }
    }

    /// The nodes a message to `destination` goes through, this node first and the
    /// destination last.
    pub async fn path_track(&self, destination: PeerId) -> Result<Vec<PeerId>, Error> {
        let inner = &self.inner;
        if destination == inner.id {
            return Ok(vec![inner.id]);
        }
        let request = Request::PathTrack {
            destination: destination.to_bytes(),
        };
        let mut envelope = Envelope::request(inner.next_transaction(), Some(&destination), request);
        envelope.hop(&inner.id).map_err(Error::Overlay)?;
        let reply = inner.forward(envelope, destination).await?;
        match into_response(reply)? {
            Response::Path { hops } => hops
                .iter()
                .map(|bytes| {
                    PeerId::from_bytes(bytes).map_err(|_| Error::UnexpectedAnswer {
                        peer: destination,
                        what: "a path entry that is not a Node-ID".into(),
                    })
                })
                .collect(),
            other => Err(unexpected(destination, &other)),
        }
    }

    /// Pings a peer (dialling it if needed); gives the round-trip time.
    pub async fn ping(&self, peer: PeerId) -> Result<Duration, Error> {
        let started = Instant::now();
        match self.inner.ask(peer, Request::Ping).await? {
            Response::Pong => Ok(started.elapsed()),
            other => Err(unexpected(peer, &other)),
        }
    }

    /// Runs a replication pass now: pushes every local resource to the members of its replica
    /// set that do not have it yet; gives how many entries were pushed.
    pub async fn replicate(&self) -> Result<usize, Error> {
        self.inner.replicate(false).await
    }

    /// Leaves gracefully: hands every local resource to the closest other peers, then stops.
    pub async fn leave(&self) -> Result<(), Error> {
        let handed = self.inner.replicate(true).await;
        if let Err(error) = &handed {
            warn!(%error, "handover before leaving failed");
        }
        self.shutdown().await;
        handed.map(|_| ())
    }

    /// Stops the node abruptly: no handover, the task is aborted and the network closed. The
    /// store closes when the last handle is dropped.
    pub async fn kill(&self) {
        self.shutdown().await;
    }

    async fn shutdown(&self) {
        let task = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
        // The replication driver ran in that task: whoever waits for a pass hears Stopped
        // (under the replicator's lock, which `replicate` holds while it adds a waiter).
        {
            let _replicator = self.inner.replicator();
            self.inner.stopped.store(true, Ordering::Relaxed);
            self.inner
                .pass_waiters
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clear();
        }
        let _ = self.inner.network.shutdown().await;
        let _ = self.inner.store.flush();
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        if let Some(task) = self
            .task
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            task.abort();
        }
        let network = self.inner.network.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = network.shutdown().await;
            });
        }
    }
}

/// The node's task: inbound requests, routing changes, timers.
async fn run(inner: Arc<Inner>, mut events: Events) {
    let mut work = JoinSet::new();
    work.spawn(drive_replication(inner.clone()));
    work.spawn(exchange_members(inner.clone()));
    loop {
        let due = inner.refresher().poll_timeout();
        let upkeep = async {
            match due {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            event = events.recv() => match event {
                None => break,
                Some(Event::Request { peer, frame, responder }) => {
                    let inner = inner.clone();
                    work.spawn(async move { inner.on_request(peer, frame, responder).await });
                }
                Some(Event::PeerConnected(peer)) => {
                    inner.replicator().peer_connected(peer, now());
                    inner.replication_wake.notify_one();
                    inner.remember(peer);
                }
                Some(Event::Identified { peer, listen_addrs }) => {
                    let addrs = listen_addrs.iter().map(ToString::to_string).collect();
                    if let Err(error) = inner.store.remember_peer(&peer, addrs) {
                        debug!(%error, "could not remember a peer");
                    }
                }
                Some(Event::PeerDisconnected { peer, clean: false }) => {
                    inner.replicator().peer_disconnected(peer, now());
                    inner.replication_wake.notify_one();
                }
                // A connection nobody used closed (here or at the peer), or the peer shut
                // it: nothing says the peer is down, so it is not probed (a probe dials it
                // again, and every idle connection of the overlay would be reopened as soon
                // as it closed). A pass still runs: if the peer did go away, the pushes to
                // it fail and the replicator holds it as down then.
                Some(Event::PeerDisconnected { clean: true, .. }) => {
                    inner.replicator().routing_changed(now());
                    inner.replication_wake.notify_one();
                }
                Some(Event::RoutingUpdated(_)) => {
                    inner.replicator().routing_changed(now());
                    inner.replication_wake.notify_one();
                }
                Some(_) => {}
            },
            () = inner.owned_changed.notified() => {}
            () = upkeep => inner.upkeep(&mut work),
            Some(_) = work.join_next(), if !work.is_empty() => {}
        }
    }
    info!("overlay node stopped");
}

impl Inner {
    /// Joins the overlay: bootstrap peers are dialled by the network; when the routing table
    /// is still empty, the peers of the peer cache; then a Kademlia bootstrap.
    async fn join(&self) {
        for addr in &self.config.network.bootstrap {
            if let Ok(peer) = self.network.dial(addr.clone()).await
                && peer != self.id
                && let Err(error) = self.store.remember_peer(&peer, vec![addr.to_string()])
            {
                debug!(%error, "could not remember a peer");
            }
        }
        if self
            .network
            .routing_table()
            .await
            .unwrap_or_default()
            .is_empty()
        {
            let cached = self.store.peers().unwrap_or_default();
            for (peer, addrs) in cached {
                if peer == self.id {
                    continue;
                }
                for addr in addrs
                    .iter()
                    .filter_map(|addr| addr.parse::<Multiaddr>().ok())
                {
                    let addr = addr.with_p2p(peer).unwrap_or_else(|addr| addr);
                    if self.network.dial(addr).await.is_ok() {
                        break;
                    }
                }
            }
        }
        match tokio::time::timeout(self.config.join_timeout, self.network.bootstrap()).await {
            Ok(Ok(())) => info!("joined the overlay"),
            Ok(Err(network::Error::NoKnownPeers)) => info!("no peer found: a new overlay"),
            Ok(Err(error)) => warn!(%error, "bootstrap failed"),
            Err(_) => warn!("bootstrap did not finish in time"),
        }
    }

    /// Refreshes a connected peer in the peer cache (its addresses arrive with
    /// `Event::Identified`; this keeps a known peer recent).
    fn remember(&self, peer: PeerId) {
        // One read: a scan of the whole cache on every connection cost 1,000 nodes in one
        // process more than their handshakes.
        if let Ok(Some(addrs)) = self.store.peer_addrs(&peer)
            && let Err(error) = self.store.remember_peer(&peer, addrs)
        {
            debug!(%error, "could not remember a peer");
        }
    }

    fn replicator(&self) -> std::sync::MutexGuard<'_, Replicator> {
        self.replicator
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn is_down(&self, peer: &PeerId) -> bool {
        self.replicator().is_down(peer)
    }

    /// A fresh transaction id from the node's RNG (the OS RNG in production): nobody can
    /// guess the id of a request it did not see.
    fn next_transaction(&self) -> u64 {
        self.rng.u64()
    }

    fn max_message(&self) -> usize {
        self.config.max_message_size
    }

    /// Sends an envelope to `peer` and decodes its answer (any response, error ones
    /// included).
    async fn send(&self, peer: PeerId, envelope: &Envelope) -> Result<Envelope, Error> {
        let frame = message::encode(envelope);
        if frame.len() > self.max_message() {
            return Err(overlay_error::Error::MessageTooLarge {
                size: frame.len(),
                limit: self.max_message(),
            }
            .into());
        }
        let answer = tokio::time::timeout(
            self.config.request_timeout,
            self.network.request(peer, frame),
        )
        .await
        .map_err(|_| {
            Error::Overlay(overlay_error::Error::RequestTimeout {
                transaction: envelope.transaction,
                after_ms: self.config.request_timeout.as_millis() as u64,
            })
        })??;
        let reply = message::decode(&answer, self.max_message())?;
        if reply.transaction != envelope.transaction || !matches!(reply.body, Body::Response(_)) {
            return Err(Error::UnexpectedAnswer {
                peer,
                what: "an answer to another request".into(),
            });
        }
        Ok(reply)
    }

    /// Sends a request for `peer` itself and gives its response (an error response as the
    /// error).
    async fn ask(&self, peer: PeerId, request: Request) -> Result<Response, Error> {
        let mut envelope = Envelope::request(self.next_transaction(), None, request);
        envelope.hop(&self.id)?;
        let reply = self.send(peer, &envelope).await;
        if reply.is_err() {
            self.replicator().peer_failed(peer, now());
        }
        into_response(reply?)
    }

    /// Asks `peer` a read ([`Request::FetchKinds`]): as [`Inner::ask`], but a peer that
    /// answers `Busy` (its per-peer limits) is asked again after [`BUSY_RETRY`], doubling,
    /// up to [`BUSY_RETRIES`] times. A busy replica is still a replica: replaced by the next
    /// closest peer, which holds nothing, it would turn a lookup's answer into "nothing
    /// there". A read asked twice changes nothing.
    async fn ask_read(&self, peer: PeerId, request: Request) -> Result<Response, Error> {
        let mut wait = BUSY_RETRY;
        for _ in 0..BUSY_RETRIES {
            match self.ask(peer, request.clone()).await {
                Err(error) if error.code() == Some(ErrorCode::Busy) => {
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
                result => return result,
            }
        }
        self.ask(peer, request).await
    }

    /// Stores locally through the access checks; durable before it returns.
    async fn store_local(
        &self,
        resource: ResourceId,
        kind: Kind,
        key: Vec<u8>,
        data: StoredData,
    ) -> Result<u64, Error> {
        let store = self.store.clone();
        let policy = self.config.policy.clone();
        tokio::task::spawn_blocking(move || {
            store.store(&resource, kind, &key, &data, now_ms(), &policy)
        })
        .await
        .map_err(|_| Error::Stopped)?
        .map_err(Error::Overlay)
    }

    /// A Store from `sender`: taken only when this node is among the replicas of the resource
    /// as far as it knows ([`Inner::is_replica`]), then through the access checks.
    async fn store_inbound(
        &self,
        sender: PeerId,
        resource: ResourceId,
        kind: Kind,
        key: Vec<u8>,
        data: StoredData,
    ) -> Result<u64, Error> {
        if !self.is_replica(&resource, sender) {
            self.not_replica.fetch_add(1, Ordering::Relaxed);
            debug!(%resource, %sender, "refused a store: not a replica");
            return Err(overlay_error::Error::NotReplica {
                resource,
                replicas: self.config.replicas.max(1),
            }
            .into());
        }
        self.store_local(resource, kind, key, data).await
    }

    /// Whether this node is a member of the replica set of `resource` as far as it knows
    /// ([`Replicator::is_replica`]): what its answers to a store or a fetch say.
    fn holds_replica(&self, resource: &ResourceId) -> bool {
        self.replicator()
            .is_replica(resource, |peer| self.network.admits(peer))
    }

    /// Whether this node takes a Store of `resource` from `sender`: it is among the replicas
    /// as far as it knows, with a margin ([`Replicator::takes_store`]).
    fn is_replica(&self, resource: &ResourceId, sender: PeerId) -> bool {
        self.replicator()
            .takes_store(resource, &sender, |peer| self.network.admits(peer))
    }

    /// Stores one entry at `peer` (this node's own store when it is this node): its generation
    /// there, and whether the peer holds itself a replica of the resource.
    async fn store_at(
        &self,
        peer: PeerId,
        resource: ResourceId,
        kind: Kind,
        key: Vec<u8>,
        data: StoredData,
    ) -> Result<(u64, bool), Error> {
        if peer == self.id {
            let generation = self.store_local(resource, kind, key, data).await?;
            return Ok((generation, self.holds_replica(&resource)));
        }
        let request = Request::Store {
            resource,
            kind,
            key,
            data,
        };
        match self.ask(peer, request).await? {
            Response::Stored {
                generation,
                replica,
            } => Ok((generation, replica)),
            other => Err(unexpected(peer, &other)),
        }
    }

    /// The live entries of one kind at `peer` (this node's own store when it is this node),
    /// and whether the peer holds itself a replica of the resource.
    async fn entries_at(
        &self,
        peer: PeerId,
        resource: ResourceId,
        kind: Kind,
    ) -> Result<(Vec<(Vec<u8>, StoredData)>, bool), Error> {
        let kinds = vec![kind];
        let response = self.kinds_at(peer, resource, kinds).await?;
        match response {
            Response::FetchedKinds { kinds, replica } => match <[_; 1]>::try_from(kinds) {
                Ok([(answered, entries)]) if answered == kind => Ok((entries, replica)),
                _ => Err(Error::Unreachable(format!(
                    "{peer} answered a fetch with other kinds than those asked"
                ))),
            },
            other => Err(unexpected(peer, &other)),
        }
    }

    /// What `peer` answers to a [`Request::FetchKinds`] (this node's own answer when it is
    /// this node).
    async fn kinds_at(
        &self,
        peer: PeerId,
        resource: ResourceId,
        kinds: Vec<Kind>,
    ) -> Result<Response, Error> {
        if peer == self.id {
            return self.fetch_kinds_here(&resource, &kinds);
        }
        self.ask_read(peer, Request::FetchKinds { resource, kinds })
            .await
    }

    /// The answer to a [`Request::FetchKinds`] here: the live entries of each kind, and
    /// whether this node is a replica of the resource ([`Replicator::is_replica`]).
    fn fetch_kinds_here(&self, resource: &ResourceId, kinds: &[Kind]) -> Result<Response, Error> {
        if kinds.len() > MAX_KINDS {
            self.bad_messages.fetch_add(1, Ordering::Relaxed);
            let why = format!("a fetch of {} kinds (at most {MAX_KINDS})", kinds.len());
            return Err(overlay_error::Error::invalid(why).into());
        }
        let now = now_ms();
        let mut fetched = Vec::with_capacity(kinds.len());
        for (i, kind) in kinds.iter().enumerate() {
            if kinds[..i].contains(kind) {
                self.bad_messages.fetch_add(1, Ordering::Relaxed);
                let why = format!("kind {} named twice in one fetch", kind.0);
                return Err(overlay_error::Error::invalid(why).into());
            }
            fetched.push((*kind, self.store.get(resource, *kind, now)?));
        }
        Ok(Response::FetchedKinds {
            kinds: fetched,
            replica: self.holds_replica(resource),
        })
    }

    /// How long a member this node learned is news it sends in each of its exchanges: 24 of
    /// its shortest waits (2 min by default). Within it, a node passes the news on again
    /// after the shortest wait as long as its exchanges find peers that did not know it, and
    /// after longer and longer waits once they do not (rumour mongering with feedback, as in
    /// Demers et al., "Epidemic algorithms for replicated database maintenance", 1987).
    fn news_window(&self) -> Duration {
        self.config.exchange_interval * 24
    }

    /// How many bytes of members one exchange message carries at most: half the message
    /// size limit, so that a page of members with certificates fits in one frame.
    fn members_budget(&self) -> usize {
        self.config
            .max_message_size
            .min(self.config.network.max_frame_size)
            / 2
    }

    /// The answer to a [`Request::Members`] from `peer` here: its news taken into the
    /// directory ([`Inner::learn_members`]), then the page of this node's directory it asked
    /// for, or the members it learned in the last two [`Config::exchange_interval_max`] (a
    /// node that missed news catches up when it asks).
    fn members_here(
        &self,
        peer: PeerId,
        news: Vec<MemberInfo>,
        page: Option<Vec<u8>>,
    ) -> Result<Response, Error> {
        if news.len() > MAX_MEMBERS {
            self.bad_messages.fetch_add(1, Ordering::Relaxed);
            let why = format!(
                "{} members in one exchange (at most {MAX_MEMBERS})",
                news.len()
            );
            return Err(overlay_error::Error::invalid(why).into());
        }
        let fresh = self.learn_members(peer, news);
        let (members, more) = match page {
            None => {
                let window = self.config.exchange_interval_max * 2;
                (self.network.members_news(window, MAX_MEMBERS), false)
            }
            Some(after) if after.is_empty() => self.network.members_page(None, MAX_MEMBERS),
            Some(after) => {
                let after = PeerId::from_bytes(&after).map_err(|_| {
                    self.bad_messages.fetch_add(1, Ordering::Relaxed);
                    overlay_error::Error::invalid("the page's start is not a Node-ID")
                })?;
                self.network.members_page(Some(&after), MAX_MEMBERS)
            }
        };
        let mut members: Vec<MemberInfo> = members.iter().map(member_info).collect();
        let fit = message::fitting(&members, self.members_budget());
        let more = more || fit < members.len();
        members.truncate(fit);
        Ok(Response::Members {
            members,
            more,
            fresh: u32::try_from(fresh).unwrap_or(u32::MAX),
        })
    }

    /// Takes the members `from` passed on into the directory (each checked there, see
    /// [`network::Network::learn_members`]); what does not decode is left out. The new ones
    /// enter the replicator's ranking, and a repair pass is due: they may be replicas of what
    /// this node holds. Gives how many were new.
    fn learn_members(&self, from: PeerId, members: Vec<MemberInfo>) -> usize {
        let members: Vec<network::Member> = members
            .into_iter()
            .take(MAX_MEMBERS)
            .filter_map(|info| {
                let member = network::Member {
                    peer: PeerId::from_bytes(&info.peer).ok()?,
                    addrs: info
                        .addrs
                        .into_iter()
                        .take(network::MAX_MEMBER_ADDRS)
                        .filter_map(|addr| Multiaddr::try_from(addr).ok())
                        .collect(),
                    certificate: info.certificate,
                };
                Some(member)
            })
            .collect();
        let new = self.network.learn_members(&from, members);
        if new.is_empty() {
            return 0;
        }
        let mut replicator = self.replicator();
        for peer in &new {
            replicator.peer_known(*peer);
        }
        replicator.routing_changed(now());
        drop(replicator);
        self.replication_wake.notify_one();
        new.len()
    }

    /// One membership exchange with a random peer this node is connected to (a random one it
    /// knows when it is connected to none and has news to pass on, or asks for a whole
    /// directory; none else): the members it learned in the last
    /// [`Inner::news_window`] sent, the peer's news taken in; with `whole`, the peer's whole
    /// directory, page by page. Gives how many members were new, here or at the peer (0 when
    /// there is no peer to ask).
    async fn exchange_members(&self, whole: bool) -> Result<usize, Error> {
        let usable = |peers: Vec<PeerId>| -> Vec<PeerId> {
            peers
                .into_iter()
                .filter(|peer| *peer != self.id && self.network.admits(peer) && !self.is_down(peer))
                .collect()
        };
        let mut news: Vec<MemberInfo> = self
            .network
            .members_news(self.news_window(), MAX_MEMBERS)
            .iter()
            .map(member_info)
            .collect();
        news.truncate(message::fitting(&news, self.members_budget()));
        let mut peers = usable(self.network.connected_peers().await.unwrap_or_default());
        // With nothing to pass on, an exchange only catches up on news missed: not worth a
        // dial (each costs a handshake and wakes the peer's upkeep).
        if peers.is_empty() && (whole || !news.is_empty()) {
            peers = usable(self.known_peers().await);
        }
        if peers.is_empty() {
            return Ok(0);
        }
        let peer = peers[(self.rng.u64() % peers.len() as u64) as usize];
        let mut page = whole.then(Vec::new);
        let mut learned = 0;
        // A whole directory ends when the peer says so, or once it gave as many members as
        // this node's directory holds (a peer that always says "more" cannot keep it asking).
        let mut received = 0;
        while received <= self.config.network.max_members {
            let request = Request::Members {
                news: std::mem::take(&mut news),
                page: page.clone(),
            };
            let (members, more, fresh) = match self.ask(peer, request).await? {
                Response::Members {
                    members,
                    more,
                    fresh,
                } if members.len() <= MAX_MEMBERS => (members, more, fresh),
                other => return Err(unexpected(peer, &other)),
            };
            let last = members.last().map(|member| member.peer.clone());
            received += members.len();
            learned += self.learn_members(peer, members) + fresh as usize;
            match last {
                Some(last) if more && page.is_some() => page = Some(last),
                _ => break,
            }
        }
        Ok(learned)
    }

    /// An AOR's claims and registrations as `peer` holds them, in one request, and whether
    /// it holds itself a replica.
    async fn aor_at(
        &self,
        peer: PeerId,
        resource: ResourceId,
    ) -> Result<(quorum::Answer, bool), Error> {
        let kinds = vec![Kind::AOR_CLAIM, Kind::SIP_REGISTRATION];
        let response = self.kinds_at(peer, resource, kinds).await?;
        match response {
            Response::FetchedKinds { kinds, replica } => match <[_; 2]>::try_from(kinds) {
                Ok(
                    [
                        (Kind::AOR_CLAIM, claims),
                        (Kind::SIP_REGISTRATION, registrations),
                    ],
                ) => Ok((
                    quorum::Answer {
                        peer,
                        claims,
                        registrations,
                    },
                    replica,
                )),
                _ => Err(Error::Unreachable(format!(
                    "{peer} answered a fetch with other kinds than those asked"
                ))),
            },
            other => Err(unexpected(peer, &other)),
        }
    }

    /// The peers closest to `resource`, nearest first, this node included: the result of a
    /// Kademlia lookup (cut short after [`Config::lookup_timeout`], with the closest peers it
    /// heard from by then) together with the live peers this node knows, so that a lookup
    /// slowed down by departed peers does not hold the request up.
    async fn candidates(&self, resource: &ResourceId) -> Result<Vec<PeerId>, Error> {
        let within = self.config.lookup_timeout;
        let lookup = tokio::time::timeout(
            // The network cuts the query short itself; this only guards against a stuck one.
            within * 2,
            // The query ends once twice the replica set answered, not Kademlia's twenty.
            self.network.closest_n_within(
                resource.to_vec(),
                NonZeroUsize::new(self.config.replicas.max(1) * 2).unwrap_or(NonZeroUsize::MIN),
                within,
            ),
        )
        .await;
        let mut peers: Vec<PeerId> = match lookup {
            Ok(Ok(peers)) => peers,
            Ok(Err(network::Error::NoKnownPeers | network::Error::QueryTimeout)) | Err(_) => {
                Vec::new()
            }
            Ok(Err(error)) => return Err(error.into()),
        };
        peers.extend(
            self.known_peers()
                .await
                .into_iter()
                .filter(|peer| !self.is_down(peer)),
        );
        peers.push(self.id);
        peers.retain(|peer| *peer == self.id || !self.is_down(peer));
        Ok(closest_nodes(resource, peers, usize::MAX))
    }

    /// A store or a lookup at the replica set of `resource`, starting from the `r` peers
    /// this node believes closest ([`Query::lookup`]).
    fn replica_query(&self, resource: &ResourceId) -> Query {
        let r = self.config.replicas.max(1);
        let believed = self.replicator().closest(resource, r);
        Query::lookup(r, believed, self.config.lookup_timeout, now())
    }

    /// Stores an entry at its replica set ([`Query::lookup`]): first at the `r` peers this
    /// node believes closest to the resource, at once; when each acknowledges and holds
    /// itself a replica, that is the store, in one round trip. Otherwise (one is silent past
    /// the lookup timeout, refuses, or is not a replica) at the replica set a Kademlia lookup
    /// finds, which takes the entry again as a no-op where it is held already. A store
    /// succeeds when a majority of the set acknowledged.
    async fn store_replicated(
        &self,
        resource: ResourceId,
        kind: Kind,
        key: Vec<u8>,
        data: StoredData,
    ) -> Result<usize, Error> {
        let mut query = self.replica_query(&resource);
        let (done, _, errors) = self
            .run_query(&mut query, resource, |peer| {
                let stored = self.store_at(peer, resource, kind, key.clone(), data.clone());
                async move {
                    let result = stored.await;
                    let reply = match &result {
                        Ok((_, replica)) => Reply::Ok { replica: *replica },
                        Err(error) if is_transient(error) || is_not_replica(error) => Reply::Retry,
                        Err(_) => Reply::Refused,
                    };
                    (reply, result)
                }
            })
            .await?;
        let counter = if done.direct {
            &self.lookups.stores_one_round_trip
        } else {
            &self.lookups.stores_full
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if done.has_majority() {
            return Ok(done.answered.len());
        }
        let mut last = String::from("no replica known");
        let mut refusal = None;
        for (peer, error) in errors {
            debug!(%peer, %error, "a replica did not store");
            last = error.to_string();
            if !is_transient(&error) && !is_not_replica(&error) && refusal.is_none() {
                refusal = Some(error);
            }
        }
        Err(refusal.unwrap_or(Error::NoQuorum {
            acked: done.answered.len(),
            needed: done.needed(),
            last,
        }))
    }

    async fn fetch(
        &self,
        resource: ResourceId,
        kind: Kind,
    ) -> Result<Vec<(Vec<u8>, StoredData)>, Error> {
        let mut query = self.replica_query(&resource);
        let ask = |peer| {
            let fetched = self.entries_at(peer, resource, kind);
            async move {
                match fetched.await {
                    Ok((entries, replica)) => (Reply::Ok { replica }, Ok(entries)),
                    Err(error) => (Reply::Retry, Err(error)),
                }
            }
        };
        let (mut done, mut answers, mut errors) = self.run_query(&mut query, resource, ask).await?;
        let nothing = |answers: &[(PeerId, Vec<_>)]| answers.iter().all(|(_, e)| e.is_empty());
        if done.direct {
            // Nothing found is not trusted from the believed replicas alone (peers whose
            // views all miss the true replica set would say so too): a Kademlia lookup.
            if !nothing(&answers) {
                let counter = &self.lookups.fetches_one_round_trip;
                counter.fetch_add(1, Ordering::Relaxed);
                return Ok(merge_answers(answers));
            }
            query.fall_back();
            (done, answers, errors) = self.run_query(&mut query, resource, ask).await?;
        }
        debug_assert!(!done.direct);
        self.lookups.fetches_full.fetch_add(1, Ordering::Relaxed);
        if nothing(&answers) {
            if let Some(busy) = busy_refusal(&mut errors) {
                return Err(busy);
            }
            // Nothing at the replica set: maybe just beyond it ([`Query::widen`]).
            if query.widen() {
                let (_, further, more_errors) = self.run_query(&mut query, resource, ask).await?;
                if !nothing(&further) {
                    debug!(%resource, "found beyond the replica set");
                    answers = further;
                }
                errors.extend(more_errors);
            }
        }
        if answers.is_empty() {
            let last = errors.into_iter().next_back().map(|(peer, error)| {
                debug!(%peer, %error, "a replica did not answer a fetch");
                error
            });
            return Err(last.unwrap_or_else(|| Error::Unreachable("no replica known".into())));
        }
        Ok(merge_answers(answers))
    }

    /// An AOR's verified registrations ([`Query::lookup`]): first in one round trip from the
    /// `r` peers this node believes closest to the resource, each asked for the claims and
    /// registrations at once; when one is silent (past the lookup timeout) or not a replica,
    /// or their answers make no majority or hold no registration, through a Kademlia lookup
    /// of the replica set.
    async fn fetch_verified(&self, aor: &str) -> Result<quorum::Verified, Error> {
        let resource = ResourceId::for_aor(aor)?;
        let self_certifying = is_self_certifying(aor);
        let mut query = self.replica_query(&resource);
        let ask = |peer| {
            let asked = self.aor_at(peer, resource);
            async move {
                match asked.await {
                    Ok((answer, replica)) => (Reply::Ok { replica }, Ok(answer)),
                    Err(error) => (Reply::Retry, Err(error)),
                }
            }
        };
        let (mut done, mut answers, mut errors) = self.run_query(&mut query, resource, ask).await?;
        if done.direct {
            let direct: Vec<quorum::Answer> = answers.into_iter().map(|(_, a)| a).collect();
            match self.verify(&resource, self_certifying, done.set, &direct) {
                // Nothing found is not trusted from the believed replicas alone: peers whose
                // views all miss the true replica set would say so too.
                Ok(verified) if !verified.registrations.is_empty() => {
                    self.lookups.one_round_trip.fetch_add(1, Ordering::Relaxed);
                    return Ok(verified);
                }
                Ok(_) => {
                    debug!(%resource, "no registration at the believed replicas; looking further")
                }
                Err(error) => debug!(%resource, %error, "the believed replicas disagree"),
            }
            query.fall_back();
            (done, answers, errors) = self.run_query(&mut query, resource, ask).await?;
        }
        self.lookups.full.fetch_add(1, Ordering::Relaxed);
        if answers.is_empty() {
            let last = errors.into_iter().next_back().map(|(_, error)| error);
            return Err(last.unwrap_or_else(|| Error::Unreachable("no replica known".into())));
        }
        let answers: Vec<quorum::Answer> = answers.into_iter().map(|(_, a)| a).collect();
        let verified = self
            .verify(&resource, self_certifying, done.set, &answers)
            .inspect_err(|error| warn!(%resource, %error, "no majority among the replicas"))?;
        if !verified.registrations.is_empty() {
            return Ok(verified);
        }
        if let Some(busy) = busy_refusal(&mut errors) {
            return Err(busy);
        }
        // No registration at the replica set: maybe just beyond it ([`Query::widen`]). What
        // is found there never overrides the replica set's claim: peers beyond the set must
        // agree with it (or the set has none), so that they cannot hand an offline user's
        // calls to a claim of their own.
        if !query.widen() {
            return Ok(verified);
        }
        let (done, further, _) = self.run_query(&mut query, resource, ask).await?;
        let further: Vec<quorum::Answer> = further.into_iter().map(|(_, a)| a).collect();
        match self.verify(&resource, self_certifying, done.set, &further) {
            Ok(beyond)
                if !beyond.registrations.is_empty()
                    && (verified.claim.is_none() || beyond.claim == verified.claim) =>
            {
                debug!(%resource, "registrations found beyond the replica set");
                Ok(beyond)
            }
            _ => Ok(verified),
        }
    }

    /// Carries a query at `resource`'s replica set out: sends its requests with `ask`
    /// (which gives the reply for the query and the result), finds the candidates by
    /// [`Inner::candidates`], and wakes it on its deadline. Gives how it ended, the results
    /// of the peers that answered in its last phase, and the errors of those that failed.
    async fn run_query<T, F, Fut>(
        &self,
        query: &mut Query,
        resource: ResourceId,
        ask: F,
    ) -> Result<(Done, Vec<(PeerId, T)>, Vec<(PeerId, Error)>), Error>
    where
        F: Fn(PeerId) -> Fut,
        Fut: Future<Output = (Reply, Result<T, Error>)>,
    {
        let mut pending = FuturesUnordered::new();
        let mut finding = None;
        let mut answers = Vec::new();
        let mut errors = Vec::new();
        loop {
            while let Some(action) = query.poll_action() {
                match action {
                    QueryAction::Ask { id, peer } => {
                        let asked = ask(peer);
                        pending.push(async move { (id, peer, asked.await) });
                    }
                    QueryAction::NeedCandidates => {
                        answers.clear();
                        finding = Some(Box::pin(self.candidates(&resource)));
                    }
                    QueryAction::Done(done) => return Ok((done, answers, errors)),
                }
            }
            let deadline = query.poll_timeout();
            let timeout = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                Some((id, peer, (reply, result))) = pending.next(), if !pending.is_empty() => {
                    if query.answer(id, reply, now()) {
                        match result {
                            Ok(value) if matches!(reply, Reply::Ok { .. }) => {
                                answers.push((peer, value));
                            }
                            Ok(_) => {}
                            Err(error) => errors.push((peer, error)),
                        }
                    }
                }
                found = async { finding.as_mut().expect("guarded").await }, if finding.is_some() => {
                    finding = None;
                    query.candidates(found?, now());
                }
                () = timeout => query.handle_timeout(now()),
            }
        }
    }

    /// The majority of a replica set of `set` peers, from their answers
    /// ([`quorum::decide`]); counts and logs the entries and peers it discarded.
    fn verify(
        &self,
        resource: &ResourceId,
        self_certifying: bool,
        set: usize,
        answers: &[quorum::Answer],
    ) -> Result<quorum::Verified, Error> {
        let verified = quorum::decide(
            resource,
            self_certifying,
            set,
            answers,
            now_ms(),
            &self.config.policy,
        )?;
        self.rejected_entries
            .fetch_add(verified.rejected_count, Ordering::Relaxed);
        for (peer, reason) in &verified.rejected {
            warn!(%resource, %peer, %reason, "a replica answered an entry that fails its checks");
        }
        for peer in &verified.outvoted {
            warn!(%resource, %peer, "a replica holds a claim the majority does not");
        }
        Ok(verified)
    }

    /// Hands a Route payload to the user's handler.
    fn deliver(&self, origin: PeerId, payload: Vec<u8>) -> Result<Vec<u8>, overlay_error::Error> {
        let handler = self
            .handler
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        match handler {
            Some(handler) => handler(origin, payload),
            None => Err(overlay_error::Error::invalid(format!(
                "node {} takes no Route messages",
                self.id
            ))),
        }
    }

    /// The known peers (routing table, connected peers and the directory), without this node.
    async fn known_peers(&self) -> Vec<PeerId> {
        let mut peers: HashSet<PeerId> = self
            .network
            .routing_table()
            .await
            .unwrap_or_default()
            .into_iter()
            .collect();
        peers.extend(self.network.connected_peers().await.unwrap_or_default());
        peers.extend(self.network.directory());
        peers.remove(&self.id);
        peers
            .into_iter()
            .filter(|peer| self.network.admits(peer))
            .collect()
    }

    /// Sends an envelope (already hopped through this node) towards `destination`: straight
    /// to it when it is known, else to the known peer closest to it; on a failure, the next
    /// closest. Gives the answer envelope as it came back.
    async fn forward(&self, envelope: Envelope, destination: PeerId) -> Result<Envelope, Error> {
        let visited: HashSet<Vec<u8>> = envelope.via.iter().cloned().collect();
        let mut ranking = Ranking::new();
        ranking.set(self.known_peers().await);
        let hops = next_hops(
            &ranking,
            &destination,
            |peer| visited.contains(&peer.to_bytes()),
            3,
        );
        let mut last = Error::Unreachable(format!("no peer known towards {destination}"));
        for peer in hops {
            match self.send(peer, &envelope).await {
                Ok(reply) => return Ok(reply),
                Err(error) => {
                    debug!(%peer, %error, "forwarding failed; trying the next peer");
                    last = error;
                }
            }
        }
        Err(last)
    }

    /// Answers one inbound request.
    async fn on_request(&self, peer: PeerId, frame: Vec<u8>, responder: Responder) {
        let answer = match message::decode(&frame, self.max_message()) {
            Ok(envelope) => self.handle(peer, envelope).await,
            Err(error) => {
                self.bad_messages.fetch_add(1, Ordering::Relaxed);
                debug!(%peer, %error, "refused a message");
                // The transaction is unknown: answer with an envelope of transaction 0.
                let envelope = Envelope::request(0, None, Request::Ping);
                envelope.reply(Response::error(&error))
            }
        };
        if let Err(error) = responder.respond(message::encode(&answer)) {
            debug!(%peer, %error, "could not answer a request");
        }
    }

    async fn handle(&self, peer: PeerId, envelope: Envelope) -> Envelope {
        let request = match &envelope.body {
            Body::Request(request) => request.clone(),
            Body::Response(_) => {
                self.bad_messages.fetch_add(1, Ordering::Relaxed);
                let error = overlay_error::Error::invalid("a response where a request was due");
                return envelope.reply(Response::error(&error));
            }
        };
        let result = match request {
            Request::Store {
                resource,
                kind,
                key,
                data,
            } => self
                .store_inbound(peer, resource, kind, key, data)
                .await
                .map(|generation| Response::Stored {
                    generation,
                    replica: self.holds_replica(&resource),
                }),
            Request::Fetch { resource, kind } => self
                .store
                .get(&resource, kind, now_ms())
                .map(|entries| Response::Fetched { entries })
                .map_err(Error::Overlay),
            Request::Stat { resource, kind } => self
                .store
                .get(&resource, kind, now_ms())
                .map(|entries| Response::Stat {
                    entries: entries
                        .into_iter()
                        .map(|(key, data)| (key, data.meta()))
                        .collect(),
                })
                .map_err(Error::Overlay),
            Request::FetchKinds { resource, kinds } => self.fetch_kinds_here(&resource, &kinds),
            Request::Members { news, page } => self.members_here(peer, news, page),
            Request::Ping => Ok(Response::Pong),
            Request::Route { destination, .. } | Request::PathTrack { destination } => {
                return self.route_step(peer, envelope, destination).await;
            }
        };
        envelope.reply(match result {
            Ok(response) => response,
            Err(error) => error_response(&error),
        })
    }

    /// A Route or PathTrack request at this node from `peer` (the libp2p-authenticated
    /// sender): delivered here, or forwarded one hop. Its last Via entry must be `peer` (each
    /// hop appends itself before it sends), else it is refused.
    async fn route_step(
        &self,
        peer: PeerId,
        mut envelope: Envelope,
        destination: Vec<u8>,
    ) -> Envelope {
        let Ok(destination) = PeerId::from_bytes(&destination) else {
            let error = overlay_error::Error::invalid("the destination is not a Node-ID");
            return envelope.reply(Response::error(&error));
        };
        if envelope.via.last() != Some(&peer.to_bytes()) {
            self.refused.wrong_sender.fetch_add(1, Ordering::Relaxed);
            let error = overlay_error::Error::forbidden(format!(
                "the last Via entry of the message is not {peer}, the peer that sent it"
            ));
            debug!(%peer, %error, "refused a routed message");
            return envelope.reply(Response::error(&error));
        }
        if destination == self.id {
            let response = match self.accept_route(&envelope) {
                Ok(Some(response)) => response,
                Ok(None) => {
                    let mut hops = envelope.via.clone();
                    hops.push(self.id.to_bytes());
                    Response::Path { hops }
                }
                Err(error) => {
                    debug!(%peer, %error, "refused a Route message");
                    Response::error(&error)
                }
            };
            return envelope.reply(response);
        }
        if let Err(error) = envelope.hop(&self.id) {
            return envelope.reply(Response::error(&error));
        }
        self.forwarded.fetch_add(1, Ordering::Relaxed);
        match self.forward(envelope.clone(), destination).await {
            Ok(reply) => reply,
            Err(error) => envelope.reply(error_response(&error)),
        }
    }

    /// A Route request for this node: checks its origin's signature, its Via list and its
    /// freshness, delivers it and signs the answer. `None` for a PathTrack request.
    fn accept_route(&self, envelope: &Envelope) -> Result<Option<Response>, overlay_error::Error> {
        let Body::Request(Request::Route {
            payload,
            origin,
            nonce,
            timestamp_ms,
            signature,
            ..
        }) = &envelope.body
        else {
            return Ok(None);
        };
        let origin = PeerId::from_bytes(origin)
            .map_err(|_| overlay_error::Error::invalid("the origin is not a Node-ID"))?;
        let id = RouteId {
            origin,
            destination: self.id,
            nonce: *nonce,
            timestamp_ms: *timestamp_ms,
        };
        if let Err(error) = auth::verify_request(&id, payload, signature) {
            self.refused.bad_signature.fetch_add(1, Ordering::Relaxed);
            return Err(error);
        }
        if envelope.via.first() != Some(&origin.to_bytes()) {
            self.refused.wrong_sender.fetch_add(1, Ordering::Relaxed);
            return Err(overlay_error::Error::forbidden(format!(
                "the Via list does not start with the message's origin {origin}"
            )));
        }
        let fresh = self
            .replays
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .check(&id, now_ms());
        if let Err(error) = fresh {
            let counter = match error {
                overlay_error::Error::Replayed { .. } => &self.refused.replayed,
                _ => &self.refused.stale,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            return Err(error);
        }
        let answer = self.deliver(origin, payload.clone())?;
        let signature = auth::sign_answer(self.key.keypair(), &id, payload, &answer)?;
        Ok(Some(Response::Routed {
            payload: answer,
            signature,
        }))
    }

    /// Asks the replicator for a pass (a handover when the node leaves) and waits until the
    /// driver has carried it out; gives how many entries peers acknowledged.
    async fn replicate(&self, handover: bool) -> Result<usize, Error> {
        let (done, pushed) = oneshot::channel();
        {
            // The waiter is in place before the driver can see the pass (it needs this lock).
            let mut replicator = self.replicator();
            if self.stopped.load(Ordering::Relaxed) {
                return Err(Error::Stopped);
            }
            let id = replicator.request_pass(handover, now());
            self.pass_waiters
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((id, done));
        }
        self.replication_wake.notify_one();
        pushed.await.map_err(|_| Error::Stopped)
    }

    /// What a pass starts from: the peers this node knows and is connected to (admitted
    /// ones), and the slots it holds or publishes.
    async fn view(&self) -> View {
        let known = self.known_peers().await;
        let connected = self
            .network
            .connected_peers()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|peer| self.network.admits(peer))
            .collect();
        let store = self.store.clone();
        let held: Vec<PassSlot> = tokio::task::spawn_blocking(move || {
            store
                .all_resources()
                .collect::<Result<Vec<_>, _>>()
                .unwrap_or_default()
        })
        .await
        .unwrap_or_default();
        let mut slots: HashSet<PassSlot> = held.into_iter().collect();
        slots.extend(self.owned_resources());
        View {
            known: Some(known),
            connected: Some(connected),
            slots: slots.into_iter().collect(),
        }
    }

    /// The entries of a slot as a pass reads them once: the local copies, the entries this
    /// node publishes, and both merged (what is pushed).
    fn snapshot(&self, (resource, kind): PassSlot) -> Snapshot {
        let now = now_ms();
        let local = self.store.get(&resource, kind, now).unwrap_or_default();
        let owned = self.owned_entries(&resource, kind);
        let entries = data::merge(local.clone(), owned.clone(), now)
            .into_iter()
            .collect();
        Snapshot {
            local,
            owned,
            entries,
        }
    }

    /// Stores here the entries this node publishes for a resource it is a replica of.
    async fn hold_owned(
        &self,
        resource: ResourceId,
        kind: Kind,
        local: &[(Vec<u8>, StoredData)],
        owned: &[(Vec<u8>, StoredData)],
    ) {
        for (key, data) in owned {
            if local.iter().any(|held| held.0 == *key && held.1 == *data) {
                continue;
            }
            if let Err(error) = self
                .store_local(resource, kind, key.clone(), data.clone())
                .await
            {
                debug!(%resource, %error, "a published entry was not stored here");
            }
        }
    }

    /// Deletes the local copies of a resource the replica set now holds without this node.
    fn drop_copies(&self, resource: ResourceId, kind: Kind, local: &[(Vec<u8>, StoredData)]) {
        let mut dropped = 0;
        for (key, data) in local {
            match self.store.remove_if(&resource, kind, key, data) {
                Ok(true) => dropped += 1,
                Ok(false) => {}
                Err(error) => debug!(%resource, %error, "could not delete a copy"),
            }
        }
        if dropped > 0 {
            debug!(%resource, dropped, "no longer a replica: copies deleted");
        }
    }

    /// The generation of the entry this node publishes in `slot`, if it publishes one.
    fn owned_generation(&self, slot: &Slot) -> Option<u64> {
        self.owned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(slot)
            .map(|owned| owned.data.generation)
    }

    /// Signs the next version of an entry of `slot`: stored now, with a generation above
    /// `previous` and above every earlier version signed on this clock (it starts at the
    /// storage time in ms, so a node that restarted without its memory still goes up).
    fn sign_next(
        &self,
        slot: &Slot,
        previous: Option<u64>,
        value: Vec<u8>,
        lifetime: u32,
        signer: &Keypair,
    ) -> Result<StoredData, Error> {
        let now = now_ms();
        let generation = previous.map_or(now, |previous| (previous + 1).max(now));
        let (resource, kind, key) = slot;
        let slot = data::Slot {
            resource,
            kind: *kind,
            key,
        };
        Ok(StoredData::new(now, lifetime, generation, value).sign(signer, &slot)?)
    }

    /// Keeps `data` alive from now on: refreshed at half its lifetime.
    fn keep(&self, slot: Slot, data: StoredData, signer: Keypair) {
        let lifetime = Duration::from_secs(u64::from(data.lifetime));
        self.refresher()
            .keep(slot.clone(), data.generation, lifetime, now());
        self.owned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(slot, Owned { data, signer });
        self.owned_changed.notify_one();
    }

    fn refresher(&self) -> std::sync::MutexGuard<'_, Refresher<Slot>> {
        self.refresher
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Carries out what the refresher says is due now: refreshes and the sweep.
    fn upkeep(self: &Arc<Self>, work: &mut JoinSet<()>) {
        let due = self.refresher().handle_timeout(now());
        for action in due {
            match action {
                RefreshAction::Refresh { slot, generation } => {
                    let current = self
                        .owned
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .get(&slot)
                        .filter(|owned| owned.data.generation == generation)
                        .map(|owned| (owned.data.clone(), owned.signer.clone()));
                    if let Some((data, signer)) = current {
                        let inner = self.clone();
                        work.spawn(async move { inner.refresh(slot, data, signer).await });
                    }
                }
                RefreshAction::Sweep => {
                    let store = self.store.clone();
                    work.spawn(async move {
                        let swept =
                            tokio::task::spawn_blocking(move || store.sweep(now_ms())).await;
                        if let Ok(Ok(n)) = swept
                            && n > 0
                        {
                            debug!(swept = n, "expired entries deleted");
                        }
                    });
                }
            }
        }
    }

    /// Re-signs a published entry with a new storage time and generation and stores it; a
    /// failed refresh is tried again later.
    async fn refresh(&self, slot: Slot, current: StoredData, signer: Keypair) {
        let next = match self.sign_next(
            &slot,
            Some(current.generation),
            current.value.clone(),
            current.lifetime,
            &signer,
        ) {
            Ok(next) => next,
            Err(error) => {
                warn!(resource = %slot.0, %error, "could not sign a refresh");
                return;
            }
        };
        let (resource, kind, key) = slot.clone();
        let stored = match self
            .store_replicated(resource, kind, key, next.clone())
            .await
        {
            Ok(_) => {
                let mut owned = self.owned.lock().unwrap_or_else(PoisonError::into_inner);
                // A withdraw or a newer publish meanwhile wins.
                if let Some(entry) = owned.get_mut(&slot)
                    && entry.data.generation == current.generation
                {
                    entry.data = next.clone();
                }
                debug!(%resource, "published entry refreshed");
                Some(next.generation)
            }
            Err(error) => {
                warn!(%resource, %error, "refresh failed; trying again");
                None
            }
        };
        self.refresher()
            .refreshed(&slot, current.generation, stored, now());
        self.owned_changed.notify_one();
    }

    /// The resources this node publishes entries of.
    fn owned_resources(&self) -> Vec<(ResourceId, Kind)> {
        self.owned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .map(|(resource, kind, _)| (*resource, *kind))
            .collect()
    }

    /// The entries this node publishes for one resource and kind.
    fn owned_entries(&self, resource: &ResourceId, kind: Kind) -> Vec<(Vec<u8>, StoredData)> {
        self.owned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|((r, k, _), _)| r == resource && *k == kind)
            .map(|((_, _, key), owned)| (key.clone(), owned.data.clone()))
            .collect()
    }

    /// Pushes the entries of one resource to one peer, one at a time. An entry is
    /// acknowledged when the peer stored it or holds a newer version; any other refusal
    /// (full, forbidden, not a replica) is not an acknowledgement. A `Busy` answer stops the
    /// push (the replicator sends it again later), as does an unreachable peer.
    async fn push(
        &self,
        peer: PeerId,
        resource: ResourceId,
        kind: Kind,
        entries: &[(Vec<u8>, StoredData)],
    ) -> Outcome {
        let mut acked = 0;
        for (key, data) in entries {
            match self
                .store_at(peer, resource, kind, key.clone(), data.clone())
                .await
            {
                Ok(_) => acked += 1,
                Err(error) if error.code() == Some(ErrorCode::Busy) => {
                    debug!(%peer, %resource, "a replica is busy; the push is sent again later");
                    return Outcome::Busy { acked };
                }
                Err(error) if is_transient(&error) => {
                    debug!(%peer, %error, "replica push failed");
                    return Outcome::Failed;
                }
                Err(error) if holds_newer(&error) => acked += 1,
                Err(error) => {
                    self.refused_pushes.fetch_add(1, Ordering::Relaxed);
                    debug!(%peer, %resource, %error, "a replica refused a pushed entry");
                }
            }
        }
        if acked == entries.len() {
            Outcome::Held { entries: acked }
        } else {
            Outcome::Refused { acked }
        }
    }
}

/// The entries of one slot, read once per pass ([`Inner::snapshot`]).
struct Snapshot {
    local: Vec<(Vec<u8>, StoredData)>,
    owned: Vec<(Vec<u8>, StoredData)>,
    entries: Vec<(Vec<u8>, StoredData)>,
}

/// The answer to one of the replicator's actions, once the network gave it.
enum Answer {
    Probed(PeerId, bool),
    View(View),
    Pushed(PeerId, PassSlot, Outcome),
}

type Pending = futures::future::BoxFuture<'static, Answer>;

/// The membership exchange: at times of [`Config::exchange_interval`] to
/// [`Config::exchange_interval_max`] (jittered by up to a half), one exchange
/// ([`Inner::exchange_members`]); the first that succeeds asks for the peer's whole
/// directory. The wait grows fourfold after an exchange in which neither side learned
/// anything, and falls back to the shortest after one in which either did, or as soon as a
/// new member comes some other way (identify, a peer's exchange), as RFC 6206's Trickle
/// timer: a node that learns of a member passes it on within seconds, again while that
/// finds peers that did not know it, and a quiet overlay exchanges every half hour.
async fn exchange_members(inner: Arc<Inner>) {
    let shortest = inner.config.exchange_interval.max(Duration::from_millis(1));
    let longest = inner.config.exchange_interval_max.max(shortest);
    let jitter = |wait: Duration| wait + wait.mul_f64((inner.rng.u64() % 512) as f64 / 1024.0);
    let mut wait = shortest;
    let mut deadline = now() + jitter(shortest);
    let mut whole = true;
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(deadline.into()) => {}
            () = inner.network.directory_news() => {
                if wait > shortest {
                    wait = shortest;
                    deadline = deadline.min(now() + jitter(shortest));
                }
                continue;
            }
        }
        let learned = match inner.exchange_members(whole).await {
            Ok(learned) => {
                whole = false;
                learned
            }
            Err(error) => {
                debug!(%error, "a membership exchange failed");
                0
            }
        };
        wait = if learned > 0 {
            shortest
        } else {
            (wait * 4).min(longest)
        };
        deadline = now() + jitter(wait);
    }
}

/// A directory member as the exchange passes it on.
fn member_info(member: &network::Member) -> MemberInfo {
    MemberInfo {
        peer: member.peer.to_bytes(),
        addrs: member.addrs.iter().map(|addr| addr.to_vec()).collect(),
        certificate: member.certificate.clone(),
    }
}

/// The replication driver: carries out the replicator's actions (probes, views and pushes
/// run concurrently; their answers go back as they come), and wakes it on its deadline or
/// when the node's task fed it an input. It only moves messages: every decision is the
/// replicator's.
async fn drive_replication(inner: Arc<Inner>) {
    let mut pending: FuturesUnordered<Pending> = FuturesUnordered::new();
    // The slots read in the current pass: pushes and drops use the same entries.
    let mut snapshots: HashMap<PassSlot, Arc<Snapshot>> = HashMap::new();
    loop {
        loop {
            let action = inner.replicator().poll_action();
            let Some(action) = action else {
                break;
            };
            match action {
                Action::Probe(peer) => {
                    let inner = inner.clone();
                    pending.push(Box::pin(async move {
                        let mut envelope =
                            Envelope::request(inner.next_transaction(), None, Request::Ping);
                        let _ = envelope.hop(&inner.id);
                        Answer::Probed(peer, inner.send(peer, &envelope).await.is_ok())
                    }));
                }
                Action::NeedView => {
                    let inner = inner.clone();
                    pending.push(Box::pin(async move { Answer::View(inner.view().await) }));
                }
                Action::Hold(slot) => {
                    let snapshot = snapshots
                        .entry(slot)
                        .or_insert_with(|| Arc::new(inner.snapshot(slot)))
                        .clone();
                    inner
                        .hold_owned(slot.0, slot.1, &snapshot.local, &snapshot.owned)
                        .await;
                }
                Action::Push { peer, slot } => {
                    let snapshot = snapshots
                        .entry(slot)
                        .or_insert_with(|| Arc::new(inner.snapshot(slot)))
                        .clone();
                    let inner = inner.clone();
                    pending.push(Box::pin(async move {
                        let outcome = inner.push(peer, slot.0, slot.1, &snapshot.entries).await;
                        Answer::Pushed(peer, slot, outcome)
                    }));
                }
                Action::Drop(slot) => {
                    if let Some(snapshot) = snapshots.get(&slot) {
                        inner.drop_copies(slot.0, slot.1, &snapshot.local);
                    }
                }
                Action::PassDone { id, pushed } => {
                    snapshots.clear();
                    if pushed > 0 {
                        debug!(pushed, "replication pass");
                    }
                    let mut waiters = inner
                        .pass_waiters
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner);
                    for (_, waiter) in waiters.extract_if(.., |(pass, _)| *pass == id) {
                        let _ = waiter.send(pushed);
                    }
                }
            }
        }
        let deadline = inner.replicator().poll_timeout();
        let sleep = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            Some(answer) = pending.next(), if !pending.is_empty() => {
                let mut replicator = inner.replicator();
                match answer {
                    Answer::Probed(peer, alive) => replicator.probed(peer, alive, now()),
                    Answer::View(view) => replicator.view(view, now()),
                    Answer::Pushed(peer, slot, outcome) => {
                        replicator.pushed(peer, slot, outcome, now());
                    }
                }
            }
            () = inner.replication_wake.notified() => {}
            () = sleep => inner.replicator().handle_timeout(now()),
        }
    }
}

/// The replicator's configuration from the node's.
fn replicator_config(config: &Config) -> core::Config {
    let mut replicator = core::Config::default().with_replicas(config.replicas);
    replicator.interval = config.replication_interval;
    replicator.repair_delay = config.repair_delay;
    replicator.verify_every = VERIFY_EVERY;
    replicator.max_down = MAX_DOWN;
    // A few resources at a time: a repair burst of every node at once should stay within
    // the per-peer limits of inbound requests (a peer that answers Busy anyway is asked
    // again later).
    replicator.max_in_flight = 4;
    replicator
}

/// The time as the replicator counts it (tokio's clock, so paused-time tests hold).
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Whether a peer refused because it is not a replica of the resource (try the next closest).
fn is_not_replica(error: &Error) -> bool {
    error.code() == Some(ErrorCode::NotReplica)
}

/// Whether a refusal of a pushed entry says the peer holds that entry or a newer version.
fn holds_newer(error: &Error) -> bool {
    matches!(
        error.code(),
        Some(ErrorCode::GenerationTooLow | ErrorCode::DataTooOld)
    )
}

/// Whether an error is the peer's absence or overload (try another) rather than its refusal.
fn is_transient(error: &Error) -> bool {
    match error {
        Error::Overlay(error) => matches!(
            error.code(),
            ErrorCode::RequestTimeout | ErrorCode::Internal | ErrorCode::Busy
        ),
        _ => true,
    }
}

/// Takes the first refusal for load out of the errors of a lookup that found nothing at the
/// replica set: with a peer it asked busy, "nothing" is not known (the busy peer may be the
/// replica that holds the entry, replaced in the lookup by peers beyond the set, which hold
/// nothing), so the lookup fails with that refusal, without widening, and the caller may try
/// again ([`Inner::ask_read`] has already asked that peer again a few times).
fn busy_refusal(errors: &mut Vec<(PeerId, Error)>) -> Option<Error> {
    let at = errors
        .iter()
        .position(|(_, error)| error.code() == Some(ErrorCode::Busy))?;
    let (peer, error) = errors.swap_remove(at);
    debug!(%peer, %error, "nothing found while a peer asked was busy");
    Some(error)
}

/// The entries of several replicas' answers as one: the newest version of each key
/// ([`data::merge`]).
fn merge_answers(answers: Vec<(PeerId, message::Entries)>) -> message::Entries {
    let now = now_ms();
    answers
        .into_iter()
        .fold(data::Entries::new(), |merged, (_, entries)| {
            data::merge(merged, entries, now)
        })
        .into_iter()
        .collect()
}

fn into_response(envelope: Envelope) -> Result<Response, Error> {
    match envelope.body {
        Body::Response(response) => Ok(response.into_result()?),
        Body::Request(_) => Err(Error::Unreachable("a request came back".into())),
    }
}

/// The answer the network sends for a request it refused (too many from one peer): an error
/// response with the request's transaction, so the requester reads the code and sentence.
fn refusal_frame(request: &[u8], error: &network::Error) -> Option<Vec<u8>> {
    let transaction = message::peek_transaction(request)?;
    let refused = overlay_error::Error::Busy {
        reason: error.to_string(),
    };
    let envelope = Envelope {
        version: message::VERSION,
        transaction,
        ttl: message::DEFAULT_TTL,
        via: Vec::new(),
        destination: None,
        body: Body::Response(Response::error(&refused)),
    };
    Some(message::encode(&envelope))
}

fn error_response(error: &Error) -> Response {
    match error {
        Error::Overlay(error) => Response::error(error),
        other => Response::Error {
            code: ErrorCode::Internal,
            message: other.to_string(),
        },
    }
}

fn unexpected(peer: PeerId, response: &Response) -> Error {
    Error::UnexpectedAnswer {
        peer,
        what: format!("{response:?}").chars().take(200).collect(),
    }
}

/// The wall clock in ms since the Unix epoch.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |t| t.as_millis() as u64)
}
