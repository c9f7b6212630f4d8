//! Throughput of the transaction layer alone: no sockets, virtual time.
//!
//! - `server/non-invite-udp`: 1000 OPTIONS arrive (each a new transaction), each is answered
//!   200, then the clock jumps past Timer J so that all of them end: transactions per second,
//!   whole lifetimes included.
//! - `client/invite-udp`: 1000 INVITEs start client transactions, each gets a 200 (RFC 6026
//!   Accepted), then the clock jumps past Timer M.
//!
//! Run with `cargo bench -p p2psip-sip --bench transactions`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use p2psip_sip::transaction::{Config, Event, Transactions};
use p2psip_sip::{Message, Peer, Response, StatusCode, Transport};

const BATCH: usize = 1000;

fn peer() -> Peer {
    Peer::new(Transport::Udp, "127.0.0.1:5070".parse().expect("address"))
}

fn options(n: usize) -> Message {
    let text = format!(
        "OPTIONS sip:bob@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK{n:08}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:a@127.0.0.1>;tag=a\r\nTo: <sip:bob@127.0.0.1>\r\n\
         Call-ID: c{n}@127.0.0.1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    );
    Message::parse(text.into_bytes()).expect("parses")
}

fn server_transactions(c: &mut Criterion) {
    let requests: Vec<Message> = (0..BATCH).map(options).collect();
    let mut group = c.benchmark_group("server");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("non-invite-udp", |b| {
        b.iter(|| {
            let mut tx = Transactions::new(Config::default());
            let now = Instant::now();
            for request in &requests {
                tx.handle(now, request.clone(), peer()).expect("handled");
                while let Some(event) = tx.poll_event() {
                    if let Event::Request {
                        transaction,
                        request,
                        ..
                    } = event
                    {
                        let ok = Response::for_request(&request, StatusCode::OK, "OK", Some("t"));
                        tx.respond(now, transaction, ok).expect("responded");
                    }
                }
                while let Some(t) = tx.poll_transmit() {
                    black_box(t);
                }
            }
            tx.handle_timeout(now + Duration::from_secs(33));
            while tx.poll_event().is_some() {}
            assert!(tx.is_empty());
        });
    });
    group.finish();
}

fn client_transactions(c: &mut Criterion) {
    let invites: Vec<_> = (0..BATCH)
        .map(|n| match options(n) {
            Message::Request(r) => {
                let text = r.to_string().replace("OPTIONS", "INVITE");
                match Message::parse(text.into_bytes()).expect("parses") {
                    Message::Request(r) => r,
                    Message::Response(_) => unreachable!("a request"),
                }
            }
            Message::Response(_) => unreachable!("a request"),
        })
        .collect();
    let oks: Vec<Message> = invites
        .iter()
        .map(|r| Message::Response(Response::for_request(r, StatusCode::OK, "OK", Some("b"))))
        .collect();
    let mut group = c.benchmark_group("client");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("invite-udp", |b| {
        b.iter(|| {
            let mut tx = Transactions::new(Config::default());
            let now = Instant::now();
            for (invite, ok) in invites.iter().zip(&oks) {
                tx.start_client(now, invite.clone(), peer())
                    .expect("started");
                tx.handle(now, ok.clone(), peer()).expect("handled");
                while let Some(e) = tx.poll_event() {
                    black_box(e);
                }
                while let Some(t) = tx.poll_transmit() {
                    black_box(t);
                }
            }
            tx.handle_timeout(now + Duration::from_secs(33));
            while tx.poll_event().is_some() {}
            assert!(tx.is_empty());
        });
    });
    group.finish();
}

criterion_group!(
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(3));
    targets = server_transactions, client_transactions
);
criterion_main!(benches);
