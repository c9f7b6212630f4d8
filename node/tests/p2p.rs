//! The P2PSIP node's answers, over real sockets on a 3-node overlay: a REGISTER is stored in
//! the overlay before its 200; another user key cannot take the AOR (403 "AOR is owned by
//! another key") and the first registration stays; a request for an AOR nobody registered gets
//! 100 then 404; a Route whose payload is not SIP is refused with InvalidMessage; an entry
//! whose signature fails is never used; a replica set that lost the claim gets it again; one
//! malicious replica cannot take an AOR over.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use p2psip_overlay::data::{Kind, RegistrationValue};
use p2psip_overlay::error::ErrorCode;
use p2psip_overlay::id::ResourceId;
use p2psip_sip::{Message, Response, Transport};
use tokio::net::UdpSocket;

#[path = "support/overlay.rs"]
pub mod overlay;

/// A UDP client that sends one request and reads the responses to it.
struct Client {
    socket: UdpSocket,
}

impl Client {
    async fn new() -> Client {
        Client {
            socket: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
        }
    }

    fn port(&self) -> u16 {
        self.socket.local_addr().unwrap().port()
    }

    /// Sends `request` to `to` and gives the first final response (every provisional one
    /// before it, too).
    async fn ask(&self, to: SocketAddr, request: String) -> (Vec<Response>, Response) {
        self.socket.send_to(request.as_bytes(), to).await.unwrap();
        let mut provisional = Vec::new();
        let mut buf = vec![0u8; 65536];
        loop {
            let (n, _) =
                tokio::time::timeout(Duration::from_secs(20), self.socket.recv_from(&mut buf))
                    .await
                    .expect("an answer within 20 s")
                    .unwrap();
            let Ok(Message::Response(response)) = Message::parse(buf[..n].to_vec()) else {
                continue;
            };
            if response.status().is_provisional() {
                provisional.push(response);
            } else {
                return (provisional, response);
            }
        }
    }

    fn register(&self, aor: &str, call_id: &str, to: SocketAddr) -> String {
        let port = self.port();
        format!(
            "REGISTER sip:{to} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-{call_id};rport\r\nFrom: <{aor}>;tag=r{port}\r\nTo: <{aor}>\r\nCall-ID: {call_id}\r\nCSeq: 1 REGISTER\r\nContact: <sip:device@127.0.0.1:{port}>\r\nExpires: 600\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_are_owned_unknown_aors_are_404_and_bad_payloads_refused() {
    overlay::logs();
    let net = overlay::Nodes::start(3).await;
    let aor = "sip:alice@example.p2p";
    let resource = ResourceId::for_aor(aor).unwrap();

    // Alice registers at node 1: the 200 comes once the overlay holds her registration.
    let alice = Client::new().await;
    let at1 = net.sip(1, Transport::Udp);
    let (_, ok) = alice.ask(at1, alice.register(aor, "reg-1", at1)).await;
    assert_eq!(ok.status().as_u16(), 200, "{ok}");
    let stored = net.nodes[0]
        .overlay()
        .fetch(resource, Kind::SIP_REGISTRATION)
        .await
        .unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].0, net.nodes[1].node_id().to_bytes());

    // Node 2's user key is another key: 403 with the overlay's reason; nothing changes.
    let mallory = Client::new().await;
    let at2 = net.sip(2, Transport::Udp);
    let (_, refused) = mallory.ask(at2, mallory.register(aor, "reg-2", at2)).await;
    assert_eq!(refused.status().as_u16(), 403, "{refused}");
    assert_eq!(refused.reason(), "AOR is owned by another key");
    let after = net.nodes[0]
        .overlay()
        .fetch(resource, Kind::SIP_REGISTRATION)
        .await
        .unwrap();
    assert_eq!(after, stored);

    // An AOR nobody registered: 404 (with a 100 Trying first only if the lookup took over
    // 200 ms, RFC 3261 §17.2.1).
    let caller = Client::new().await;
    let at0 = net.sip(0, Transport::Udp);
    let port = caller.port();
    let invite = format!(
        "INVITE sip:nobody@example.p2p SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-inv1;rport\r\nFrom: <sip:caller@example.p2p>;tag=c1\r\nTo: <sip:nobody@example.p2p>\r\nCall-ID: inv-1\r\nCSeq: 1 INVITE\r\nContact: <sip:caller@127.0.0.1:{port}>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    let (provisional, answer) = caller.ask(at0, invite).await;
    assert!(
        provisional.iter().all(|r| r.status().as_u16() == 100),
        "{provisional:?}"
    );
    assert_eq!(answer.status().as_u16(), 404, "{answer}");

    // A Route whose payload is not SIP is refused with InvalidMessage.
    let refused = net.nodes[0]
        .overlay()
        .route(net.nodes[1].node_id(), b"\x00\x00\x00\x05hello".to_vec())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::InvalidMessage), "{refused}");
    assert_eq!(
        net.nodes[1]
            .stats()
            .refused
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

/// A registration whose signature fails is never used: a forger who rewrites the stored entry
/// of every replica (here straight into their stores, as a compromised replica would) to
/// point at its own socket gets nothing; the caller gets 404, as for no registration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_that_fails_its_signature_is_never_forwarded() {
    overlay::logs();
    let net = overlay::Nodes::start(3).await;
    let aor = "sip:carol@example.p2p";
    let resource = ResourceId::for_aor(aor).unwrap();
    let carol = Client::new().await;
    let at1 = net.sip(1, Transport::Udp);
    let (_, ok) = carol.ask(at1, carol.register(aor, "reg-c", at1)).await;
    assert_eq!(ok.status().as_u16(), 200, "{ok}");

    let forger = Client::new().await;
    let stored = net.nodes[0]
        .overlay()
        .fetch(resource, Kind::SIP_REGISTRATION)
        .await
        .unwrap();
    let (key, mut forged) = stored.into_iter().next().expect("carol's entry");
    let mut value = RegistrationValue::decode(&forged.value).unwrap();
    value.contacts[0].uri = format!("sip:device@127.0.0.1:{}", forger.port());
    forged.value = value.encode();
    let now_ms = u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    for node in &net.nodes {
        node.overlay()
            .local_store()
            .put(&resource, Kind::SIP_REGISTRATION, &key, &forged, now_ms)
            .unwrap();
    }

    let caller = Client::new().await;
    let port = caller.port();
    let invite = format!(
        "INVITE sip:carol@example.p2p SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-f1;rport\r\nFrom: <sip:caller@example.p2p>;tag=f1\r\nTo: <{aor}>\r\nCall-ID: forged-1\r\nCSeq: 1 INVITE\r\nContact: <sip:caller@127.0.0.1:{port}>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    let (_, answer) = caller.ask(net.sip(0, Transport::Udp), invite).await;
    assert_eq!(answer.status().as_u16(), 404, "{answer}");
    let mut buf = [0u8; 2048];
    assert!(
        forger.socket.try_recv_from(&mut buf).is_err(),
        "the forger's socket got a request"
    );
    assert!(
        carol.socket.try_recv_from(&mut buf).is_err(),
        "nor did Carol's: her real entry was overwritten, and a forged one is never used"
    );
}

/// A replica set that lost the AOR's claim (it moved since the claim was stored: peers came,
/// went or are reachable only through relays) refuses the next registration with "nobody
/// has claimed this AOR"; the node then claims again, towards the replicas of now, and the
/// REGISTER still gets its 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_whose_replicas_lost_the_claim_claims_again() {
    overlay::logs();
    let net = overlay::Nodes::start(3).await;
    let aor = "sip:dora@example.p2p";
    let resource = ResourceId::for_aor(aor).unwrap();
    let dora = Client::new().await;
    let at1 = net.sip(1, Transport::Udp);
    let (_, ok) = dora.ask(at1, dora.register(aor, "claim-1", at1)).await;
    assert_eq!(ok.status().as_u16(), 200, "{ok}");

    // Every replica loses the claim; the node still remembers having claimed the AOR.
    for node in &net.nodes {
        node.overlay()
            .local_store()
            .remove(&resource, Kind::AOR_CLAIM, &[])
            .unwrap();
    }
    // A REGISTER that changes the binding (another expiry), so the node publishes again.
    let again = dora
        .register(aor, "claim-2", at1)
        .replace("Expires: 600", "Expires: 300");
    let (_, ok) = dora.ask(at1, again).await;
    assert_eq!(ok.status().as_u16(), 200, "{ok}");
    let claims = net.nodes[0]
        .overlay()
        .fetch(resource, Kind::AOR_CLAIM)
        .await
        .unwrap();
    assert_eq!(claims.len(), 1, "the claim is back in the overlay");
}

/// One malicious replica cannot take an AOR over: it writes into its own store a claim of
/// the AOR by another key (validly signed, a far higher generation) and its own device
/// delegated by that key, and drops the owner's device; a lookup still finds the owner's
/// device only, since it goes by what the majority of the replica set holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_malicious_replica_cannot_take_an_aor_over() {
    use libp2p::identity::Keypair;
    use p2psip_overlay::data::{AorClaim, Delegation};

    overlay::logs();
    let net = overlay::Nodes::start(3).await;
    let aor = "sip:erin@example.p2p";
    let resource = ResourceId::for_aor(aor).unwrap();
    let erin = Client::new().await;
    let at1 = net.sip(1, Transport::Udp);
    let (_, ok) = erin.ask(at1, erin.register(aor, "reg-e", at1)).await;
    assert_eq!(ok.status().as_u16(), 200, "{ok}");

    let now_ms = u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    let liar = net.nodes[2].overlay();
    let mallory = Keypair::generate_ed25519();
    let claim = AorClaim::new(aor, &mallory.public(), now_ms + 3_600_000).unwrap();
    let (key, data) = claim.entry(&mallory, now_ms, 3600, u64::MAX / 2).unwrap();
    let store = liar.local_store();
    store
        .put(&resource, Kind::AOR_CLAIM, &key, &data, now_ms)
        .unwrap();
    let device = liar.keypair();
    let value = RegistrationValue {
        destination: liar.node_id().to_bytes(),
        contacts: Vec::new(),
        delegation: Delegation::sign(&mallory, &resource, &device.public(), now_ms + 3_600_000)
            .unwrap(),
    };
    let (key, data) = value
        .entry(device, &resource, now_ms, 3600, u64::MAX / 2)
        .unwrap();
    store
        .put(&resource, Kind::SIP_REGISTRATION, &key, &data, now_ms)
        .unwrap();
    store
        .remove(
            &resource,
            Kind::SIP_REGISTRATION,
            &net.nodes[1].node_id().to_bytes(),
        )
        .unwrap();

    for node in &net.nodes {
        let devices = p2psip_node::p2p::lookup(node.overlay(), aor).await.unwrap();
        let found: Vec<_> = devices.iter().map(|device| device.node).collect();
        assert_eq!(
            found,
            vec![net.nodes[1].node_id()],
            "from {}",
            node.node_id()
        );
    }
    assert!(net.nodes[0].overlay().rejected_entries() > 0);
}
