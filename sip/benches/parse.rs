//! Parse throughput of `p2psip-sip` against two other Rust SIP parsers, side by side.
//!
//! Three real-world datagrams (`benches/data/`: an INVITE with SDP, a REGISTER and a 200 OK,
//! CRLF line ends and exact Content-Length) are parsed by:
//! - `p2psip`: [`Message::parse`] on a `Bytes` held outside the loop and cloned per
//!   iteration, as a received buffer would be (zero-copy);
//! - `p2psip-copy`: the same, but starting from `&[u8]` and copying it into a fresh `Bytes`
//!   (`Bytes::copy_from_slice`) every iteration, to show the cost of that copy;
//! - `rsipstack` 0.7 (its own parser in `rsipstack::sip`, the call its UDP transport makes);
//! - `rsip` 0.4.
//!
//! Two groups per message:
//! - `message/<msg>`: parse the whole message and count its header fields;
//! - `typed/<msg>`: parse, then read the top Via (transport, host, port, branch), From and
//!   To (URI user, tag), CSeq (number, method) and Call-ID through each library's typed
//!   headers.
//!
//! Before measuring, every library must parse every message and the typed readings must agree
//! across libraries; the bench panics otherwise. Throughput is reported in messages per
//! second (`Throughput::Elements(1)`).
//!
//! Run with `cargo bench -p p2psip-sip --bench parse` (about a minute); add a filter such as
//! `-- typed/invite` to run one group. Criterion keeps its estimates under
//! `$CARGO_TARGET_DIR/criterion/`.

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use p2psip_sip::header::{CSeq, CallId, From, To, Via};
use p2psip_sip::{Host, Message, Uri};

/// The messages, by name as used in the group names.
const MESSAGES: [(&str, &[u8]); 3] = [
    ("invite", include_bytes!("data/invite.sip")),
    ("register", include_bytes!("data/register.sip")),
    ("ok200", include_bytes!("data/ok200.sip")),
];

/// What the typed path reads from a message, reduced to numbers so that libraries can be
/// compared and nothing is optimized away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Typed {
    via_udp: bool,
    via_host_len: usize,
    via_port: usize,
    via_branch_len: usize,
    from_user_len: usize,
    from_tag_len: usize,
    to_user_len: usize,
    to_tag_len: usize,
    cseq: u32,
    cseq_method_len: usize,
    call_id_len: usize,
}

// ------------------------------------------------------------------------------ p2psip

fn p2psip_message(datagram: Bytes) -> usize {
    let msg = Message::parse(datagram).expect("p2psip: parse failed");
    msg.headers().len()
}

/// Length of the user part of a SIP URI (0 for other schemes or no user).
fn p2psip_user_len(uri: &Uri<'_>) -> usize {
    uri.as_sip().and_then(|u| u.user()).map_or(0, str::len)
}

fn p2psip_typed(datagram: Bytes) -> Typed {
    let msg = Message::parse(datagram).expect("p2psip: parse failed");
    let h = msg.headers();

    let via: Via<'_> = h.typed().expect("no Via").expect("bad Via");
    let from: From<'_> = h.typed().expect("no From").expect("bad From");
    let to: To<'_> = h.typed().expect("no To").expect("bad To");
    let cseq: CSeq<'_> = h.typed().expect("no CSeq").expect("bad CSeq");
    let call_id: CallId<'_> = h.typed().expect("no Call-ID").expect("bad Call-ID");

    Typed {
        via_udp: via.transport() == "UDP",
        via_host_len: match via.host() {
            Host::Domain(d) => d.len(),
            Host::Ipv4(_) => 4,
            Host::Ipv6(_) => 16,
        },
        via_port: via.port().map_or(0, usize::from),
        via_branch_len: via.branch().expect("no branch").len(),
        from_user_len: p2psip_user_len(from.0.uri()),
        from_tag_len: from.0.tag().expect("no from-tag").len(),
        to_user_len: p2psip_user_len(to.0.uri()),
        to_tag_len: to.0.tag().map_or(0, str::len),
        cseq: cseq.seq(),
        cseq_method_len: cseq.method_str().len(),
        call_id_len: call_id.0.len(),
    }
}

// ------------------------------------------------------------------------------ rsipstack 0.7
// rsipstack ships its own SIP model and parser in `rsipstack::sip`; it does not use `rsip`.

fn rsipstack_message(bytes: &[u8]) -> usize {
    use rsipstack::sip::prelude::HasHeaders as _;
    // The call rsipstack's UDP transport makes on each received datagram.
    let msg = rsipstack::sip::SipMessage::try_from(bytes).expect("rsipstack: parse failed");
    msg.headers().len()
}

fn rsipstack_typed(bytes: &[u8]) -> Typed {
    use rsipstack::sip::prelude::{HeadersExt as _, ToTypedHeader as _};
    use rsipstack::sip::{Transport, typed};
    let msg = rsipstack::sip::SipMessage::try_from(bytes).expect("rsipstack: parse failed");

    let via: typed::Via = msg
        .top_via_header()
        .expect("no Via")
        .typed()
        .expect("bad Via");
    let from: typed::From = msg
        .from_header()
        .expect("no From")
        .typed()
        .expect("bad From");
    let to: typed::To = msg.to_header().expect("no To").typed().expect("bad To");
    let cseq: typed::CSeq = msg
        .cseq_header()
        .expect("no CSeq")
        .typed()
        .expect("bad CSeq");
    let call_id: &str = msg.call_id_header().expect("no Call-ID").value();

    Typed {
        via_udp: matches!(via.transport, Transport::Udp),
        via_host_len: match &via.uri.host_with_port.host {
            rsipstack::sip::Host::Domain(d) => d.0.len(),
            rsipstack::sip::Host::IpAddr(ip) => {
                if ip.is_ipv4() {
                    4
                } else {
                    16
                }
            }
        },
        via_port: via
            .uri
            .host_with_port
            .port
            .map_or(0, |p| usize::from(p.value())),
        via_branch_len: via.branch().expect("no branch").value().len(),
        from_user_len: from.uri.auth.as_ref().map_or(0, |a| a.user.len()),
        from_tag_len: from.tag().expect("no from-tag").value().len(),
        to_user_len: to.uri.auth.as_ref().map_or(0, |a| a.user.len()),
        to_tag_len: to.tag().map_or(0, |t| t.value().len()),
        cseq: cseq.seq,
        cseq_method_len: cseq.method.to_string().len(),
        call_id_len: call_id.len(),
    }
}

// ------------------------------------------------------------------------------ rsip 0.4

fn rsip_message(bytes: &[u8]) -> usize {
    use rsip::prelude::HasHeaders as _;
    let msg = rsip::SipMessage::try_from(bytes).expect("rsip: parse failed");
    msg.headers().iter().count()
}

fn rsip_typed(bytes: &[u8]) -> Typed {
    use rsip::prelude::{HeadersExt as _, ToTypedHeader as _, UntypedHeader as _};
    use rsip::{Transport, typed};
    let msg = rsip::SipMessage::try_from(bytes).expect("rsip: parse failed");

    // via_header() is the first Via header line (every message here has a single Via value).
    let via: typed::Via = msg.via_header().expect("no Via").typed().expect("bad Via");
    let from: typed::From = msg
        .from_header()
        .expect("no From")
        .typed()
        .expect("bad From");
    let to: typed::To = msg.to_header().expect("no To").typed().expect("bad To");
    let cseq: typed::CSeq = msg
        .cseq_header()
        .expect("no CSeq")
        .typed()
        .expect("bad CSeq");
    let call_id: &str = msg.call_id_header().expect("no Call-ID").value();

    Typed {
        via_udp: matches!(via.transport, Transport::Udp),
        via_host_len: match &via.uri.host_with_port.host {
            rsip::Host::Domain(d) => d.to_string().len(),
            rsip::Host::IpAddr(ip) => {
                if ip.is_ipv4() {
                    4
                } else {
                    16
                }
            }
        },
        via_port: via
            .uri
            .host_with_port
            .port
            .as_ref()
            .map_or(0, |p| usize::from(*p.value())),
        via_branch_len: via.branch().expect("no branch").value().len(),
        from_user_len: from.uri.auth.as_ref().map_or(0, |a| a.user.len()),
        from_tag_len: from.tag().expect("no from-tag").value().len(),
        to_user_len: to.uri.auth.as_ref().map_or(0, |a| a.user.len()),
        to_tag_len: to.tag().map_or(0, |t| t.value().len()),
        cseq: cseq.seq,
        cseq_method_len: cseq.method.to_string().len(),
        call_id_len: call_id.len(),
    }
}

// ------------------------------------------------------------------------------ harness

/// Checks once, before measuring, that all three libraries parse every message and agree.
fn check_agreement() {
    for (name, data) in MESSAGES {
        let ours = p2psip_message(Bytes::from_static(data));
        let stack = rsipstack_message(data);
        let rsip = rsip_message(data);
        assert!(
            ours == stack && ours == rsip,
            "{name}: header field counts differ: p2psip {ours}, rsipstack {stack}, rsip {rsip}"
        );

        let ours = p2psip_typed(Bytes::from_static(data));
        let stack = rsipstack_typed(data);
        let rsip = rsip_typed(data);
        assert!(
            ours == stack && ours == rsip,
            "{name}: typed readings differ:\n  p2psip    {ours:?}\n  rsipstack {stack:?}\n  \
             rsip      {rsip:?}"
        );
    }
}

fn message(c: &mut Criterion) {
    check_agreement();
    for (name, data) in MESSAGES {
        // A received datagram: one refcounted buffer, cloned (not copied) into the parser.
        let received = Bytes::copy_from_slice(data);
        let mut group = c.benchmark_group(format!("message/{name}"));
        group.throughput(Throughput::Elements(1));
        group.bench_function("p2psip", |b| {
            b.iter(|| p2psip_message(black_box(&received).clone()));
        });
        group.bench_function("p2psip-copy", |b| {
            b.iter(|| p2psip_message(Bytes::copy_from_slice(black_box(data))));
        });
        group.bench_function("rsipstack", |b| {
            b.iter(|| rsipstack_message(black_box(data)))
        });
        group.bench_function("rsip", |b| b.iter(|| rsip_message(black_box(data))));
        group.finish();
    }
}

fn typed(c: &mut Criterion) {
    for (name, data) in MESSAGES {
        let received = Bytes::copy_from_slice(data);
        let mut group = c.benchmark_group(format!("typed/{name}"));
        group.throughput(Throughput::Elements(1));
        group.bench_function("p2psip", |b| {
            b.iter(|| p2psip_typed(black_box(&received).clone()));
        });
        group.bench_function("p2psip-copy", |b| {
            b.iter(|| p2psip_typed(Bytes::copy_from_slice(black_box(data))));
        });
        group.bench_function("rsipstack", |b| b.iter(|| rsipstack_typed(black_box(data))));
        group.bench_function("rsip", |b| b.iter(|| rsip_typed(black_box(data))));
        group.finish();
    }
}

fn config() -> Criterion {
    Criterion::default()
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500))
        .sample_size(30)
}

criterion_group! {
    name = benches;
    config = config();
    targets = message, typed
}
criterion_main!(benches);
