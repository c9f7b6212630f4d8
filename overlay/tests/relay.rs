//! A node attacked and used by raw libp2p clients on loopback. Its relay server grants a
//! reservation to a peer that identify shows to be of its overlay, and refuses one to a
//! stranger (another overlay, or a plain libp2p node); its routing table keeps few addresses
//! of a member that announces new ones again and again. Every wait is for an event, under a
//! timeout.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use futures::StreamExt as _;
use libp2p::{
    Multiaddr, StreamProtocol, Swarm, SwarmBuilder, identify,
    identity::Keypair,
    kad::{self, store::MemoryStore},
    multiaddr::Protocol,
    noise, relay,
    swarm::{NetworkBehaviour, SwarmEvent},
    yamux,
};
use p2psip_overlay::network::{Config, Event, Events, Network, Relay, RelayLimits};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(15);

/// A client that speaks relay (client side), identify and Kademlia under a protocol name of
/// its choosing: the overlay's to pass as a member, another to be a stranger.
#[derive(NetworkBehaviour)]
struct Client {
    relay: relay::client::Behaviour,
    identify: identify::Behaviour,
    kad: kad::Behaviour<MemoryStore>,
}

fn client(overlay: &str) -> Swarm<Client> {
    SwarmBuilder::with_existing_identity(Keypair::generate_ed25519())
        .with_tokio()
        .with_quic()
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .unwrap()
        .with_behaviour(|key, relay| {
            let peer = key.public().to_peer_id();
            let kad_protocol =
                StreamProtocol::try_from_owned(format!("/p2psip/{overlay}/kad/1.0.0")).unwrap();
            let mut kad = kad::Behaviour::with_config(
                peer,
                MemoryStore::new(peer),
                kad::Config::new(kad_protocol),
            );
            kad.set_mode(Some(kad::Mode::Server));
            Client {
                relay,
                identify: identify::Behaviour::new(
                    identify::Config::new(format!("/p2psip/{overlay}/id/1.0.0"), key.public())
                        .with_push_listen_addr_updates(true),
                ),
                kad,
            }
        })
        .unwrap()
        .with_swarm_config(|config| config.with_idle_connection_timeout(WAIT))
        .build()
}

/// A node of overlay `alpha` that always relays, with the given caps; its events are read
/// and dropped.
async fn relay_node(limits: RelayLimits) -> (Network, Multiaddr) {
    let (net, mut events, addr) = node(limits).await;
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    (net, addr)
}

/// A node of overlay `alpha` that always relays, with the given caps, and its events.
async fn node(limits: RelayLimits) -> (Network, Events, Multiaddr) {
    let config = Config::default()
        .with_overlay("alpha")
        .with_listen(["/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap()])
        .with_mdns(false)
        .with_relay(Relay::On)
        .with_relay_limits(limits);
    let (net, events) = Network::start(Keypair::generate_ed25519(), config)
        .await
        .unwrap();
    let addr = net.listen_addrs().await.unwrap()[0]
        .clone()
        .with_p2p(net.local_peer_id())
        .unwrap();
    (net, events, addr)
}

/// What became of a reservation request.
#[derive(Debug, PartialEq)]
enum Outcome {
    Reserved,
    /// The relay answered no (not a failure of the protocol or the connection).
    Refused,
}

/// Connects `swarm` to the relay, waits until the relay has identified it, then asks for a
/// reservation and waits for the answer.
async fn reserve(swarm: &mut Swarm<Client>, relay_addr: &Multiaddr) -> Outcome {
    swarm.dial(relay_addr.clone()).unwrap();
    // Identify runs both ways at once; the relay reads ours about when we read its. Wait for
    // the relay's info, then for our own to have been sent.
    let mut received = false;
    let mut sent = false;
    timeout(WAIT, async {
        while !(received && sent) {
            match swarm.select_next_some().await {
                SwarmEvent::Behaviour(ClientEvent::Identify(identify::Event::Received {
                    ..
                })) => received = true,
                SwarmEvent::Behaviour(ClientEvent::Identify(identify::Event::Sent { .. })) => {
                    sent = true
                }
                _ => {}
            }
        }
    })
    .await
    .expect("identify with the relay");
    let circuit = relay_addr.clone().with(Protocol::P2pCircuit);
    let listener = swarm.listen_on(circuit).unwrap();
    timeout(WAIT, async {
        loop {
            match swarm.select_next_some().await {
                SwarmEvent::Behaviour(ClientEvent::Relay(
                    relay::client::Event::ReservationReqAccepted { .. },
                )) => return Outcome::Reserved,
                SwarmEvent::ListenerClosed {
                    listener_id,
                    reason,
                    ..
                } if listener_id == listener => {
                    let reason = format!("{reason:?}");
                    assert!(
                        reason.contains("ResourceLimitExceeded"),
                        "the relay itself said no: {reason}"
                    );
                    return Outcome::Refused;
                }
                _ => {}
            }
        }
    })
    .await
    .expect("an answer to the reservation")
}

#[tokio::test]
async fn a_relay_serves_peers_of_its_overlay_only() {
    let (_relay, addr) = relay_node(RelayLimits::default()).await;

    let mut member = client("alpha");
    assert_eq!(reserve(&mut member, &addr).await, Outcome::Reserved);

    let mut stranger = client("beta");
    assert_eq!(
        reserve(&mut stranger, &addr).await,
        Outcome::Refused,
        "a node of another overlay gets no reservation"
    );
}

#[tokio::test]
async fn a_relay_keeps_to_its_reservation_cap() {
    let mut limits = RelayLimits::default();
    limits.max_reservations = 1;
    let (_relay, addr) = relay_node(limits).await;
    let mut first = client("alpha");
    assert_eq!(reserve(&mut first, &addr).await, Outcome::Reserved);
    let mut second = client("alpha");
    assert_eq!(
        reserve(&mut second, &addr).await,
        Outcome::Refused,
        "the second member is over the cap of one reservation"
    );
}

/// A member that listens on a new port and closes the old one, again and again, announces
/// each change by an identify push; the node keeps only what the latest push announced, not
/// every address the peer ever had. (Its first listener stays: QUIC dials from it, so it
/// carries the connection.)
#[tokio::test]
async fn a_member_that_keeps_moving_leaves_few_addresses_in_the_routing_table() {
    const MOVES: usize = 12;
    let (net, mut events, addr) = node(RelayLimits::default()).await;
    let mut member = client("alpha");
    let peer = *member.local_peer_id();
    let quic: Multiaddr = "/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap();
    member.listen_on(quic.clone()).unwrap();
    member.dial(addr).unwrap();
    let mut listener = member.listen_on(quic.clone()).unwrap();
    let mut announced: Option<Multiaddr> = None;
    for moves in 0..=MOVES {
        // Drive the member until it listens on its new port and the node has heard of it.
        let seen = timeout(WAIT, async {
            loop {
                tokio::select! {
                    event = member.select_next_some() => {
                        if let SwarmEvent::NewListenAddr { address, .. } = event {
                            announced = Some(address);
                        }
                    }
                    Some(event) = events.recv() => {
                        if let Event::Identified { peer: from, listen_addrs } = event
                            && from == peer
                            && announced.as_ref().is_some_and(|a| listen_addrs.contains(a))
                        {
                            return listen_addrs;
                        }
                    }
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("the node heard of move {moves}"));
        assert_eq!(seen.len(), 2, "two listeners at a time: {seen:?}");
        if moves < MOVES {
            let old = listener;
            listener = member.listen_on(quic.clone()).unwrap();
            member.remove_listener(old);
            announced = None;
        }
    }
    let kept = net.addresses(peer).await.unwrap();
    assert!(
        kept.len() == 2,
        "after {MOVES} moves the routing table keeps {} addresses of the member: {kept:?}",
        kept.len()
    );
}
