//! # The overlay's decisions, sans-IO
//!
//! The state machines here decide; they never touch a socket, a disk or a clock. Like
//! quinn-proto, each takes events and `now` and gives actions and its next deadline, so the
//! same code runs under the tokio driver of [`crate::node`] and under the simulator of
//! [`crate::sim`] on virtual time, where a seed replays a run exactly.
//!
//! - [`Replicator`]: replication and repair. Which resources go to which peers after a
//!   change of membership, when a pass runs (on a timer, and debounced after a change),
//!   which down peers to probe, when a node may drop a copy. See its docs for the rules.
//!   [`Replicator::takes_store`] is the rule by which a node takes a Store only as a
//!   replica.
//! - [`Query`]: one store or lookup at a resource's replica set: whom to ask (for a lookup,
//!   first the peers the node believes closest, in one round trip), whom to ask instead of
//!   a silent or busy peer, when it is over and whether a majority answered.
//! - [`Refresher`]: when the entries a node publishes are re-signed (half their lifetime
//!   after each store, sooner after a failure) and when its store is swept of expired
//!   entries.
//! - [`next_hops`]: where a Route message goes next (the destination, then the known peers
//!   closest to it that it has not visited): greedy XOR routing.
//! - [`Ranking`]: the peers a node knows, ranked by XOR distance on Kademlia's ring
//!   (SHA-256 of the `PeerId` and of the resource, as Kademlia measures), with the keys
//!   hashed once per peer.
//!
//! ## How a driver calls them
//!
//! 1. Feed every input as it happens, with the time: [`Replicator::peer_connected`],
//!    [`Replicator::peer_disconnected`], [`Replicator::routing_changed`],
//!    [`Replicator::request_pass`], and the answers to earlier actions
//!    ([`Replicator::view`], [`Replicator::probed`], [`Replicator::pushed`]).
//! 2. After each input, drain [`Replicator::poll_action`] until it gives `None`, and carry
//!    the actions out (an answer may come back at once or much later, in any order).
//! 3. Sleep until [`Replicator::poll_timeout`] (or the next input), then call
//!    [`Replicator::handle_timeout`] with the time, and go to 2.
//!
//! A [`Refresher`] too, except that [`Refresher::handle_timeout`] gives its actions at once.
//! A [`Query`] is driven the same way, one per store or lookup: its inputs are
//! [`Query::candidates`] and [`Query::answer`], its outputs [`Query::poll_action`] (until
//! [`QueryAction::Done`]) and [`Query::poll_timeout`].
//!
//! Every table is bounded; each type's docs say by what.

mod query;
mod ranking;
mod refresh;
mod replication;
mod routing;

pub use query::{AskId, Done, Query, QueryAction, Reply};
pub use ranking::Ranking;
pub use refresh::{RefreshAction, RefreshConfig, Refresher};
pub use replication::{Action, Config, Outcome, PassId, Replicator, Slot, View};
pub use routing::next_hops;

/// A fixed peer for the unit tests of the core: the Node-ID of the ed25519 key `[i; 32]`.
#[cfg(test)]
fn test_peer(i: u8) -> libp2p::PeerId {
    libp2p::identity::Keypair::ed25519_from_bytes([i; 32])
        .expect("any 32 bytes are an ed25519 secret key")
        .public()
        .to_peer_id()
}
