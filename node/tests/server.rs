//! The node's SIP server (proxy + registrar + digest auth) on real sockets on 127.0.0.1,
//! with user agents calling through it.

// Test helpers panic to fail the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use p2psip_node::agent::Agent;
use p2psip_node::server::{self, Server, Users};
use p2psip_node::transport;
use p2psip_sip::ua::{self, Event};
use p2psip_sip::{Message, Transport, auth};
use tokio::net::UdpSocket;

const WAIT: Duration = Duration::from_secs(10);

fn any() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

async fn server(redirect: bool, users: Option<Users>) -> Server {
    let config = server::Config {
        transports: transport::Config::default()
            .udp(vec![any()])
            .tcp(vec![any()]),
        redirect,
        users,
        ..server::Config::default()
    };
    Server::start(config).await.unwrap()
}

async fn agent(auto_answer: bool, seed: u64) -> Agent {
    let config = ua::Config {
        auto_answer,
        sdp: Some("v=0\r\n".into()),
        ..ua::Config::default()
    };
    Agent::start(
        transport::Config::default()
            .udp(vec![any()])
            .tcp(vec![any()]),
        config,
        seed,
    )
    .await
    .unwrap()
}

fn udp(peers: &[p2psip_sip::Peer]) -> SocketAddr {
    peers
        .iter()
        .find(|p| p.transport == Transport::Udp)
        .unwrap()
        .addr
}

/// Sends one request over UDP from a fresh socket and returns the first final response.
async fn ask(to: SocketAddr, text: String) -> p2psip_sip::Response {
    let socket = UdpSocket::bind(any()).await.unwrap();
    let text = text.replace("LOCAL", &socket.local_addr().unwrap().to_string());
    socket.send_to(text.as_bytes(), to).await.unwrap();
    tokio::time::timeout(WAIT, async {
        let mut buf = vec![0; 65536];
        loop {
            let (n, _) = socket.recv_from(&mut buf).await.unwrap();
            if let Ok(Message::Response(r)) = Message::parse(buf[..n].to_vec())
                && r.status().is_final()
            {
                return r;
            }
        }
    })
    .await
    .expect("a final response")
}

fn register(server: SocketAddr, user: &str, contact: SocketAddr, branch: &str) -> String {
    format!(
        "REGISTER sip:{server} SIP/2.0\r\nVia: SIP/2.0/UDP LOCAL;branch=z9hG4bK{branch};rport\r\nMax-Forwards: 70\r\n\
         From: <sip:{user}@{ip}>;tag=r1\r\nTo: <sip:{user}@{ip}>\r\nCall-ID: reg-{branch}@x\r\nCSeq: 1 REGISTER\r\n\
         Contact: <sip:{user}@{contact}>\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n",
        ip = server.ip()
    )
}

async fn wait_for(agent: &mut Agent, pick: impl Fn(&Event) -> bool) -> Event {
    tokio::time::timeout(WAIT, async {
        loop {
            let e = agent.next_event().await.expect("agent running");
            if pick(&e) {
                return e;
            }
        }
    })
    .await
    .expect("event in time")
}

/// RFC 3261 §10: a REGISTER is answered 200 with the binding.
#[tokio::test]
async fn rfc3261_10_register_lists_the_binding() {
    let server = server(false, None).await;
    let at = udp(server.local_addrs());
    let ok = ask(
        at,
        register(at, "bob", "127.0.0.1:5999".parse().unwrap(), "reg1"),
    )
    .await;
    assert_eq!(ok.status().as_u16(), 200);
    let contact =
        String::from_utf8_lossy(ok.headers().get(p2psip_sip::HeaderName::Contact).unwrap())
            .into_owned();
    assert!(
        contact.starts_with("<sip:bob@127.0.0.1:5999>") && contact.contains("expires="),
        "{contact}"
    );
}

/// RFC 3261 §16: a call to a registered AOR goes through the proxy to the contact; an AOR
/// nobody registered gets 404.
#[tokio::test]
async fn rfc3261_16_call_through_the_proxy() {
    let server = server(false, None).await;
    let at = udp(server.local_addrs());
    let mut bob = agent(true, 2).await;
    let ok = ask(at, register(at, "bob", udp(bob.local_addrs()), "reg2")).await;
    assert_eq!(ok.status().as_u16(), 200);
    let mut alice = agent(false, 1).await;
    let call = alice.invite(&format!("sip:bob@{at}")).await.unwrap();
    wait_for(&mut alice, |e| *e == Event::Established { call }).await;
    wait_for(&mut bob, |e| matches!(e, Event::Established { .. })).await;
    alice.hangup(call).await.unwrap();
    wait_for(&mut alice, |e| {
        *e == Event::Ended {
            call,
            by_peer: false,
        }
    })
    .await;
    wait_for(&mut bob, |e| {
        matches!(e, Event::Ended { by_peer: true, .. })
    })
    .await;
    let nobody = alice.invite(&format!("sip:nobody@{at}")).await.unwrap();
    let failed = wait_for(
        &mut alice,
        |e| matches!(e, Event::Failed { call, .. } if *call == nobody),
    )
    .await;
    assert!(matches!(failed, Event::Failed { status, .. } if status.as_u16() == 404));
}

/// RFC 3261 §8.3, §21.3.3: in redirect mode the server answers 302 with the contacts, and the
/// caller reaches the callee directly.
#[tokio::test]
async fn rfc3261_21_3_3_redirect_mode() {
    let server = server(true, None).await;
    let at = udp(server.local_addrs());
    let mut bob = agent(true, 3).await;
    ask(at, register(at, "bob", udp(bob.local_addrs()), "reg3")).await;
    let mut alice = agent(false, 4).await;
    let call = alice.invite(&format!("sip:bob@{at}")).await.unwrap();
    wait_for(&mut alice, |e| *e == Event::Established { call }).await;
    wait_for(&mut bob, |e| matches!(e, Event::Established { .. })).await;
}

fn users() -> Users {
    Users {
        digest: auth::Config::new("p2psip.test", [7; 32]),
        passwords: HashMap::from([("alice".to_owned(), "secret".to_owned())]),
    }
}

/// RFC 3261 §22, RFC 8760: with authentication on, a REGISTER without credentials gets 401
/// and anything else 407, both with SHA-256 and MD5 challenges; an unauthenticated request for
/// another domain is never relayed.
#[tokio::test]
async fn rfc8760_challenges_and_no_open_relay() {
    let server = server(false, Some(users())).await;
    let at = udp(server.local_addrs());
    let r = ask(
        at,
        register(at, "alice", "127.0.0.1:5999".parse().unwrap(), "a1"),
    )
    .await;
    assert_eq!(r.status().as_u16(), 401);
    let challenges: Vec<_> = r
        .headers()
        .get_all(p2psip_sip::HeaderName::WwwAuthenticate)
        .map(|f| String::from_utf8_lossy(f.value).into_owned())
        .collect();
    assert!(
        challenges[0].contains("algorithm=SHA-256")
            && challenges.iter().any(|c| c.contains("algorithm=MD5")),
        "{challenges:?}"
    );
    let relay = "OPTIONS sip:carol@127.0.0.2:5099 SIP/2.0\r\nVia: SIP/2.0/UDP LOCAL;branch=z9hG4bKrelay\r\nMax-Forwards: 70\r\n\
         From: <sip:x@127.0.0.1>;tag=1\r\nTo: <sip:carol@127.0.0.2>\r\nCall-ID: relay@x\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n".to_owned();
    assert_eq!(ask(at, relay).await.status().as_u16(), 407);
}

/// RFC 8760, with credentials: the REGISTER answered with the right password is accepted.
#[tokio::test]
async fn rfc8760_register_with_credentials() {
    let server = server(false, Some(users())).await;
    let at = udp(server.local_addrs());
    let first = ask(
        at,
        register(at, "alice", "127.0.0.1:5999".parse().unwrap(), "c1"),
    )
    .await;
    let challenge = first
        .headers()
        .typed::<p2psip_sip::header::WwwAuthenticate>()
        .unwrap()
        .unwrap();
    let answer = auth::answer(
        &challenge.0,
        &p2psip_sip::Method::Register,
        &format!("sip:{at}"),
        "alice",
        "secret",
        "0a4f113b",
        1,
    )
    .unwrap();
    let text = register(at, "alice", "127.0.0.1:5999".parse().unwrap(), "c2").replace(
        "Expires: 600\r\n",
        &format!("Expires: 600\r\nAuthorization: {answer}\r\n"),
    );
    assert_eq!(ask(at, text).await.status().as_u16(), 200);
    let wrong = auth::answer(
        &challenge.0,
        &p2psip_sip::Method::Register,
        &format!("sip:{at}"),
        "alice",
        "guess",
        "0a4f113b",
        1,
    )
    .unwrap();
    let text = register(at, "alice", "127.0.0.1:5999".parse().unwrap(), "c3").replace(
        "Expires: 600\r\n",
        &format!("Expires: 600\r\nAuthorization: {wrong}\r\n"),
    );
    assert_eq!(ask(at, text).await.status().as_u16(), 401);
}

/// DESIGN §7: a SIP address other than loopback needs authentication.
#[tokio::test]
async fn wide_listening_needs_authentication() {
    let config = server::Config {
        transports: transport::Config::default()
            .udp(vec!["0.0.0.0:0".parse().unwrap()])
            .tcp(vec![]),
        ..server::Config::default()
    };
    let err = Server::start(config).await.unwrap_err();
    assert!(
        err.to_string().contains("needs digest authentication"),
        "{err}"
    );
}
