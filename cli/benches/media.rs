//! The media benchmark: what the nodes' media anchoring adds to RTP, per packet, on three
//! paths measured in one run, in one network lab (`p2psip_testnet::lab`, real nftables NATs,
//! real `p2psip node` processes):
//!
//! - **baseline**: two UDP sockets on 127.0.0.1 inside one lab host, sending straight to each
//!   other;
//! - **direct**: a caller on a dual-stack (public) host, a callee behind a port-restricted
//!   NAT: softphone -> its node -> libp2p stream (hole-punched or dialled) -> the other node
//!   -> softphone;
//! - **relayed**: caller and callee both behind symmetric NATs: the libp2p stream crosses the
//!   public relay node (circuit relay v2).
//!
//! Each "softphone" is a SIP socket and an RTP socket opened inside its host (`Host::run`).
//! The callee REGISTERs `sip:<user>@bench.p2p` at its node (127.0.0.1:5060 of its host), the
//! caller INVITEs it with an SDP offer, the callee answers 180 and 200 (its Via and
//! Record-Route copied from the INVITE), the caller ACKs through its route set, and each side
//! sends its RTP to the address of the SDP it received: a port of its own node (the
//! anchoring). Both sides send `--packets` packets of 172 bytes (an RTP header and 160 bytes
//! of PCMU-sized payload carrying a sequence number and the send time) every `--interval-ms`,
//! at once; then BYE.
//!
//! Figures per path, over both directions:
//!
//! - **one-way delay** p50 and p99: arrival time minus send time, both read from one
//!   `Instant` epoch of this process (every namespace shares CLOCK_MONOTONIC), and the
//!   ratio of each to the baseline's;
//! - **jitter**: RFC 3550 §6.4.1 interarrival jitter (the smoothed mean deviation of the
//!   transit-time differences of consecutive packets, J += (|D| - J) / 16), per direction,
//!   at the end of the stream;
//! - **lost**: packets sent and never received (within the grace after the last one);
//! - **stale** and **dropped**: the nodes' own counters (`p2psip status --json` -> `media`)
//!   over the exchange: frames dropped as stale, and every other drop (queue full, stream
//!   down, unknown session, not from the latched softphone).
//!
//! `cargo bench -p p2psip-cli --bench media -- --packets 1500 --interval-ms 20`
//! (`P2PSIP_MEDIA_PACKETS` sets the default of `--packets`). Needs root, `ip` and `nft`.
//! It prints figures and asserts no timing; every wait has a timeout.

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use p2psip_sip::header::{Contact, RecordRoute, To};
use p2psip_sip::{HeaderName, Message, Method, Request, Response};
use p2psip_testnet::lab::{self, Host, Lab, Nat, NodeProcess, SIP};

/// How long a node may take to start, and AutoNAT and the relay to settle.
const SETTLE: Duration = Duration::from_secs(90);
/// How long any one SIP step may take (a REGISTER waits for the overlay's replicas).
const LIMIT: Duration = Duration::from_secs(20);
/// How long the nodes' connection may take to reach the expected path once the call is up.
const PATH_LIMIT: Duration = Duration::from_secs(30);
/// RFC 3261's T1 and T2 (retransmissions over UDP).
const T1: Duration = Duration::from_millis(500);
const T2: Duration = Duration::from_secs(4);
/// How long a receiver keeps listening after the last packet was due.
const GRACE: Duration = Duration::from_secs(3);
/// The size of every media packet: an RTP header (12 bytes) and 20 ms of PCMU (160 bytes).
const PACKET: usize = 172;
/// The RTP header's length; the payload starts with the sequence number and the send time.
const RTP_HEADER: usize = 12;
/// The domain of the bench's AORs.
const DOMAIN: &str = "bench.p2p";

/// The epoch of every timestamp of this process.
static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since [`EPOCH`].
fn now_ns() -> u64 {
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

fn main() -> Result<()> {
    let args = Args::parse(std::env::args().skip(1))?;
    now_ns();
    if !lab::require_lab() {
        bail!("the media bench needs the network lab (root, `ip` and `nft`)");
    }
    let started = Instant::now();
    let site = Site::start()?;

    let mut rows = Vec::new();
    let host = site.lab.host("alice")?;
    let (a, b) = host.run(|| -> std::io::Result<_> {
        Ok((
            UdpSocket::bind("127.0.0.1:0")?,
            UdpSocket::bind("127.0.0.1:0")?,
        ))
    })??;
    let (a_at, b_at) = (a.local_addr()?, b.local_addr()?);
    eprintln!("baseline: {a_at} <-> {b_at} inside {}", host.name());
    let exchange = exchange(&a, b_at, &b, a_at, &args)?;
    rows.push(Row {
        path: "baseline".into(),
        seen: "same host".into(),
        exchange,
        drops: Drops::default(),
    });

    for (name, caller, callee, expected) in [
        ("direct", "alice", "bob", "direct"),
        ("relayed", "carol", "dave", "relayed"),
    ] {
        let row = site
            .call(name, caller, callee, expected, &args)
            .with_context(|| format!("the {name} call, {caller} -> {callee}"))?;
        rows.push(row);
    }

    println!();
    println!(
        "media: {} packets of {PACKET} bytes each way every {} ms per path; \
         delay = one-way (arrival - send, one clock); jitter = RFC 3550 interarrival \
         (caller->callee / callee->caller)",
        args.packets, args.interval_ms
    );
    print_table(&rows);
    println!("total {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// The command line: `--packets N --interval-ms MS` (cargo's `--bench` is ignored).
struct Args {
    /// How many packets each side sends on each path.
    packets: u32,
    /// The time between two packets of one side.
    interval_ms: u64,
}

impl Args {
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Args> {
        let packets = match std::env::var("P2PSIP_MEDIA_PACKETS") {
            Ok(n) => n
                .parse()
                .with_context(|| format!("P2PSIP_MEDIA_PACKETS={n} is not a count"))?,
            Err(_) => 1500,
        };
        let mut parsed = Args {
            packets,
            interval_ms: 20,
        };
        while let Some(arg) = args.next() {
            if arg == "--bench" {
                continue;
            }
            let value = args.next().ok_or_else(|| anyhow!("{arg} needs a value"))?;
            match arg.as_str() {
                "--packets" => {
                    parsed.packets = value.parse().with_context(|| format!("{arg} {value}"))?;
                }
                "--interval-ms" => {
                    parsed.interval_ms = value.parse().with_context(|| format!("{arg} {value}"))?;
                }
                _ => bail!("unknown argument {arg}; use --packets, --interval-ms"),
            }
        }
        ensure!(
            parsed.packets > 0 && parsed.interval_ms > 0,
            "--packets and --interval-ms must be at least 1"
        );
        Ok(parsed)
    }

    fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }
}

// ---------------------------------------------------------------------------------------------
// The lab and its nodes.

/// A public relay node, `alice` on a dual-stack host, `bob` behind a port-restricted NAT,
/// `carol` and `dave` behind symmetric NATs, each with a node.
struct Site {
    nodes: Vec<NodeProcess>,
    lab: Lab,
}

impl Site {
    fn start() -> Result<Site> {
        let lab = Lab::builder()
            .public_host("relay")
            .host("alice", Nat::DualStack)
            .host("bob", Nat::PortRestricted)
            .host("carol", Nat::Symmetric)
            .host("dave", Nat::Symmetric)
            .build()?;
        let p2psip = PathBuf::from(env!("CARGO_BIN_EXE_p2psip"));
        let relay_host = lab.host("relay")?;
        let (relay, bootstrap) = NodeProcess::start_relay(relay_host, &p2psip, "relay", SETTLE)?;
        let mut nodes = vec![relay];
        for name in ["alice", "bob", "carol", "dave"] {
            let host = lab.host(name)?;
            nodes.push(NodeProcess::start_joining(
                host, &p2psip, &bootstrap, SETTLE,
            )?);
        }
        let site = Site { nodes, lab };
        for node in &site.nodes[1..] {
            let nat = site.lab.host(node.name())?.nat();
            let status = node.wait_status(SETTLE, "AutoNAT's verdict", |s| {
                lab::scenario::settled(s, nat)
            })?;
            eprintln!(
                "{} ({nat}): {} {}",
                node.name(),
                status["nat"]["reachability"],
                status["nat"]["relayed_addrs"]
            );
        }
        Ok(site)
    }

    fn node(&self, name: &str) -> Result<&NodeProcess> {
        self.nodes
            .iter()
            .find(|n| n.name() == name)
            .ok_or_else(|| anyhow!("no node {name}"))
    }

    /// A call from `caller`'s host to `callee`'s, its media measured.
    fn call(
        &self,
        label: &str,
        caller: &str,
        callee: &str,
        expected: &str,
        args: &Args,
    ) -> Result<Row> {
        let (a_node, b_node) = (self.node(caller)?, self.node(callee)?);
        let a = Phone::open(self.lab.host(caller)?, caller)?;
        let b = Phone::open(self.lab.host(callee)?, callee)?;
        b.register()?;
        let call_id = format!("media-{label}-{}", std::process::id());
        let (offer_to, answer_to) = std::thread::scope(|s| -> Result<_> {
            let answering = s.spawn(|| b.answer(LIMIT));
            let invited = a.invite(&b.aor, &call_id);
            let answered = answering
                .join()
                .map_err(|_| anyhow!("the callee's thread panicked"))?;
            let dialog = invited?;
            let peer_media = answered?;
            Ok((dialog, peer_media))
        })?;
        let dialog = offer_to;
        eprintln!(
            "{label}: {caller} sends media to {}, {callee} to {answer_to}",
            dialog.media
        );
        let seen = wait_path(a_node, b_node, expected)?;
        eprintln!("{label}: {caller}'s node reaches {callee}'s {seen}");
        let before = Drops::read(a_node)?.plus(&Drops::read(b_node)?);
        let exchange = exchange(&a.rtp, dialog.media, &b.rtp, answer_to, args)?;
        let after = Drops::read(a_node)?.plus(&Drops::read(b_node)?);
        let seen_after = a_node
            .path_to(b_node.peer_id())?
            .unwrap_or_else(|| "not connected".into());
        let seen = if seen_after == seen {
            seen
        } else {
            format!("{seen} then {seen_after}")
        };
        std::thread::scope(|s| -> Result<()> {
            let serving = s.spawn(|| b.serve_bye(LIMIT));
            let bye = a.bye(&dialog);
            serving
                .join()
                .map_err(|_| anyhow!("the callee's thread panicked"))??;
            bye
        })?;
        Ok(Row {
            path: label.into(),
            seen,
            exchange,
            drops: after.minus(&before),
        })
    }
}

/// Waits until `a` reaches `b` by `expected` (`direct` or `relayed`), up to [`PATH_LIMIT`];
/// the path seen at the end either way.
fn wait_path(a: &NodeProcess, b: &NodeProcess, expected: &str) -> Result<String> {
    let deadline = Instant::now() + PATH_LIMIT;
    loop {
        let path = a.path_to(b.peer_id())?;
        if path.as_deref() == Some(expected) || Instant::now() >= deadline {
            return Ok(path.unwrap_or_else(|| "not connected".into()));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The media counters of a node that say a packet was dropped.
#[derive(Debug, Default, Clone)]
struct Drops {
    stale: u64,
    other: u64,
}

impl Drops {
    fn read(node: &NodeProcess) -> Result<Drops> {
        let status = node.status()?;
        let media = &status["media"];
        let count = |key: &str| media[key].as_u64().unwrap_or(0);
        Ok(Drops {
            stale: count("dropped_stale"),
            other: [
                "dropped_full",
                "dropped_unsent",
                "dropped_unknown",
                "dropped_foreign",
            ]
            .iter()
            .map(|k| count(k))
            .sum(),
        })
    }

    fn plus(&self, other: &Drops) -> Drops {
        Drops {
            stale: self.stale + other.stale,
            other: self.other + other.other,
        }
    }

    fn minus(&self, before: &Drops) -> Drops {
        Drops {
            stale: self.stale.saturating_sub(before.stale),
            other: self.other.saturating_sub(before.other),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The softphones: hand-written SIP over UDP.

/// A softphone inside a lab host: its SIP and RTP sockets (on the host's loopback).
struct Phone {
    user: String,
    aor: String,
    sip: UdpSocket,
    rtp: UdpSocket,
    node: SocketAddr,
}

/// The caller's side of an established call.
struct Dialog {
    call_id: String,
    from: String,
    to: String,
    /// The callee's Contact: the Request-URI of the ACK and the BYE.
    target: String,
    /// Route headers: the 200's Record-Route, reversed.
    routes: Vec<String>,
    /// Where the SDP answer says to send the media (the caller's node).
    media: SocketAddr,
}

impl Phone {
    fn open(host: &Host, user: &str) -> Result<Phone> {
        let (sip, rtp) = host.run(|| -> std::io::Result<_> {
            Ok((
                UdpSocket::bind("127.0.0.1:0")?,
                UdpSocket::bind("127.0.0.1:0")?,
            ))
        })??;
        Ok(Phone {
            user: user.to_owned(),
            aor: format!("sip:{user}@{DOMAIN}"),
            sip,
            rtp,
            node: SIP.parse()?,
        })
    }

    fn sip_port(&self) -> Result<u16> {
        Ok(self.sip.local_addr()?.port())
    }

    /// REGISTERs the AOR with a Contact at the SIP socket; waits for the 200.
    fn register(&self) -> Result<()> {
        let port = self.sip_port()?;
        let call_id = format!("reg-{}-{}", self.user, std::process::id());
        let request = format!(
            "REGISTER sip:{node} SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-{call_id};rport\r\n\
             From: <{aor}>;tag=r{port}\r\n\
             To: <{aor}>\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: 1 REGISTER\r\n\
             Contact: <sip:{user}@127.0.0.1:{port}>\r\n\
             Expires: 600\r\n\
             Max-Forwards: 70\r\n\
             Content-Length: 0\r\n\r\n",
            node = self.node,
            aor = self.aor,
            user = self.user,
        );
        let response = self.transaction(&request, &call_id, &Method::Register, LIMIT)?;
        ensure!(
            response.status().is_success(),
            "REGISTER {} was answered {} {}",
            self.aor,
            response.status().as_u16(),
            response.reason()
        );
        Ok(())
    }

    /// INVITEs `aor` with an offer naming the RTP socket, waits for the 200 and ACKs it
    /// through the route set.
    fn invite(&self, aor: &str, call_id: &str) -> Result<Dialog> {
        let port = self.sip_port()?;
        let rtp = self.rtp.local_addr()?.port();
        let from = format!("<{}>;tag=a{port}", self.aor);
        let sdp = sdp(&self.user, rtp);
        let request = format!(
            "INVITE {aor} SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-{call_id}-1;rport\r\n\
             From: {from}\r\n\
             To: <{aor}>\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: 1 INVITE\r\n\
             Contact: <sip:{user}@127.0.0.1:{port}>\r\n\
             Max-Forwards: 70\r\n\
             Content-Type: application/sdp\r\n\
             Content-Length: {len}\r\n\r\n{sdp}",
            user = self.user,
            len = sdp.len(),
        );
        let response = self.transaction(&request, call_id, &Method::Invite, LIMIT)?;
        ensure!(
            response.status().is_success(),
            "INVITE {aor} was answered {} {}",
            response.status().as_u16(),
            response.reason()
        );
        let headers = response.headers();
        let to = text(headers.get(HeaderName::To)).to_owned();
        let target = match headers.typed::<Contact>() {
            Some(Ok(contact)) => contact
                .address()
                .map(|a| a.uri().to_string())
                .ok_or_else(|| anyhow!("the 200's Contact is *"))?,
            Some(Err(e)) => bail!("the 200's Contact does not parse: {e}"),
            None => bail!("the 200 has no Contact"),
        };
        let mut routes = headers
            .typed_all::<RecordRoute>()
            .map(|rr| rr.map(|rr| format!("<{}>", rr.0.uri())))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow!("the 200's Record-Route does not parse: {e}"))?;
        routes.reverse();
        let media = media_address(response.body())?;
        let dialog = Dialog {
            call_id: call_id.to_owned(),
            from,
            to,
            target,
            routes,
            media,
        };
        self.send(&self.in_dialog(&dialog, "ACK", 1, "ack"))?;
        Ok(dialog)
    }

    /// Sends BYE in the dialog and waits for its final response.
    fn bye(&self, dialog: &Dialog) -> Result<()> {
        let request = self.in_dialog(dialog, "BYE", 2, "bye");
        let response = self.transaction(&request, &dialog.call_id, &Method::Bye, LIMIT)?;
        ensure!(
            response.status().is_success(),
            "BYE was answered {} {}",
            response.status().as_u16(),
            response.reason()
        );
        Ok(())
    }

    /// An ACK or BYE of the caller: to the callee's Contact, through the route set.
    fn in_dialog(&self, dialog: &Dialog, method: &str, cseq: u32, branch: &str) -> String {
        let port = self.sip.local_addr().map_or(0, |a| a.port());
        let routes: String = dialog
            .routes
            .iter()
            .map(|r| format!("Route: {r}\r\n"))
            .collect();
        format!(
            "{method} {target} SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-{call_id}-{branch};rport\r\n\
             {routes}\
             From: {from}\r\n\
             To: {to}\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} {method}\r\n\
             Max-Forwards: 70\r\n\
             Content-Length: 0\r\n\r\n",
            target = dialog.target,
            call_id = dialog.call_id,
            from = dialog.from,
            to = dialog.to,
        )
    }

    /// The callee: waits for an INVITE, answers 180 and 200 with an SDP naming the RTP
    /// socket, retransmits the 200 until the ACK; returns where the offer says to send.
    fn answer(&self, limit: Duration) -> Result<SocketAddr> {
        let deadline = Instant::now() + limit;
        let (invite, from) = loop {
            let (message, from) = self
                .recv(deadline)?
                .ok_or_else(|| anyhow!("{} got no INVITE within {limit:?}", self.user))?;
            if let Message::Request(request) = message
                && *request.method() == Method::Invite
            {
                break (request, from);
            }
        };
        let port = self.sip_port()?;
        let tag = format!("b{port}");
        let sdp = sdp(&self.user, self.rtp.local_addr()?.port());
        let contact = format!("Contact: <sip:{}@127.0.0.1:{port}>\r\n", self.user);
        let ringing = response(&invite, "180 Ringing", &tag, "", "");
        let ok = response(&invite, "200 OK", &tag, &contact, &sdp);
        let media = media_address(invite.body())?;
        self.sip.send_to(ringing.as_bytes(), from)?;
        self.sip.send_to(ok.as_bytes(), from)?;
        let (mut next, mut interval) = (Instant::now() + T1, T1);
        loop {
            let wait = next.min(deadline);
            match self.recv(wait)? {
                Some((Message::Request(r), _)) if *r.method() == Method::Ack => return Ok(media),
                Some((Message::Request(r), at)) if *r.method() == Method::Invite => {
                    self.sip.send_to(ok.as_bytes(), at)?;
                }
                Some(_) => {}
                None if Instant::now() >= deadline => {
                    bail!("{} got no ACK within {limit:?}", self.user)
                }
                None => {
                    self.sip.send_to(ok.as_bytes(), from)?;
                    next = Instant::now() + interval;
                    interval = (interval * 2).min(T2);
                }
            }
        }
    }

    /// The callee: waits for the BYE and answers 200.
    fn serve_bye(&self, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            let (message, from) = self
                .recv(deadline)?
                .ok_or_else(|| anyhow!("{} got no BYE within {limit:?}", self.user))?;
            if let Message::Request(request) = message
                && *request.method() == Method::Bye
            {
                let ok = response(&request, "200 OK", "", "", "");
                self.sip.send_to(ok.as_bytes(), from)?;
                return Ok(());
            }
        }
    }

    /// Sends `request` to the node, retransmitting it (RFC 3261 Timers A and E, until a
    /// provisional response for an INVITE), and returns the final response of its
    /// Call-ID and method.
    fn transaction(
        &self,
        request: &str,
        call_id: &str,
        method: &Method,
        limit: Duration,
    ) -> Result<Response> {
        let deadline = Instant::now() + limit;
        let (mut next, mut interval) = (Instant::now(), T1);
        let mut retransmit = true;
        loop {
            if retransmit && Instant::now() >= next {
                self.send(request)?;
                next = Instant::now() + interval;
                interval = (interval * 2).min(T2);
            }
            let wait = if retransmit {
                next.min(deadline)
            } else {
                deadline
            };
            let Some((message, _)) = self.recv(wait)? else {
                if Instant::now() >= deadline {
                    bail!("no final response to {method:?} {call_id} within {limit:?}");
                }
                continue;
            };
            let Message::Response(response) = message else {
                continue;
            };
            let headers = response.headers();
            let ours = headers
                .get(HeaderName::CallId)
                .is_some_and(|id| id.trim_ascii() == call_id.as_bytes())
                && headers
                    .typed::<p2psip_sip::header::CSeq>()
                    .and_then(Result::ok)
                    .is_some_and(|cseq| cseq.is(method));
            if !ours {
                continue;
            }
            if response.status().is_final() {
                return Ok(response);
            }
            if *method == Method::Invite {
                retransmit = false;
            }
        }
    }

    fn send(&self, text: &str) -> Result<()> {
        self.sip.send_to(text.as_bytes(), self.node)?;
        Ok(())
    }

    /// The next SIP message that parses, or `None` at `deadline`.
    fn recv(&self, deadline: Instant) -> Result<Option<(Message, SocketAddr)>> {
        let mut buf = vec![0u8; 65_536];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.sip.set_read_timeout(Some(left))?;
            match self.sip.recv_from(&mut buf) {
                Ok((len, from)) => {
                    if let Ok(message) = Message::parse(buf[..len].to_vec()) {
                        return Ok(Some((message, from)));
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(None);
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// A response of a UAS to `request`: its Via and Record-Route copied, From, Call-ID and
/// CSeq copied, `to_tag` added to To (unless it has a tag already), then `extra` headers
/// and the SDP `body` (none when empty).
fn response(request: &Request, status: &str, to_tag: &str, extra: &str, body: &str) -> String {
    let headers = request.headers();
    let mut out = format!("SIP/2.0 {status}\r\n");
    for via in headers.get_all(HeaderName::Via) {
        out.push_str(&format!("Via: {}\r\n", via.value_str().unwrap_or_default()));
    }
    for rr in headers.get_all(HeaderName::RecordRoute) {
        out.push_str(&format!(
            "Record-Route: {}\r\n",
            rr.value_str().unwrap_or_default()
        ));
    }
    let to = text(headers.get(HeaderName::To));
    let tagged = headers
        .typed::<To>()
        .and_then(Result::ok)
        .is_some_and(|t| t.tag().is_some());
    let to = if tagged || to_tag.is_empty() {
        to.to_owned()
    } else {
        format!("{to};tag={to_tag}")
    };
    out.push_str(&format!(
        "From: {}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {}\r\n{extra}",
        text(headers.get(HeaderName::From)),
        text(headers.get(HeaderName::CallId)),
        text(headers.get(HeaderName::CSeq)),
    ));
    if body.is_empty() {
        out.push_str("Content-Length: 0\r\n\r\n");
    } else {
        out.push_str(&format!(
            "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
    }
    out
}

fn text(value: Option<&[u8]>) -> &str {
    value
        .and_then(|v| std::str::from_utf8(v).ok())
        .unwrap_or_default()
        .trim()
}

/// An audio offer or answer of PCMU at 127.0.0.1:`port`.
fn sdp(user: &str, port: u16) -> String {
    format!(
        "v=0\r\no={user} 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    )
}

/// The address of an SDP's (session-level or first media-level) `c=` and its first
/// `m=audio` port.
fn media_address(body: &[u8]) -> Result<SocketAddr> {
    let body = std::str::from_utf8(body).context("the SDP is not UTF-8")?;
    let mut ip = None;
    let mut port = None;
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("c=IN IP4 ")
            && ip.is_none()
        {
            ip = Some(rest.trim().parse::<IpAddr>()?);
        } else if let Some(rest) = line.strip_prefix("m=audio ")
            && port.is_none()
        {
            port = rest.split(' ').next().map(str::parse::<u16>).transpose()?;
        }
    }
    match (ip, port) {
        (Some(ip), Some(port)) => Ok(SocketAddr::new(ip, port)),
        _ => bail!("the SDP names no IPv4 audio address: {body}"),
    }
}

// ---------------------------------------------------------------------------------------------
// The media exchange.

/// What both directions of one exchange measured.
struct Exchange {
    /// Packets sent per direction.
    sent: u32,
    /// Caller to callee, then callee to caller.
    ways: [Way; 2],
}

/// One direction: every packet received, in arrival order.
struct Way {
    /// (sequence number, send time, arrival time), nanoseconds since [`EPOCH`].
    arrivals: Vec<(u32, u64, u64)>,
}

impl Way {
    /// Packets never received (duplicates counted once).
    fn lost(&self, sent: u32) -> u64 {
        let seen: HashSet<u32> = self.arrivals.iter().map(|a| a.0).collect();
        u64::from(sent).saturating_sub(seen.len() as u64)
    }

    /// RFC 3550 §6.4.1: J += (|D(i-1, i)| - J) / 16 over the packets in arrival order, in ms.
    fn jitter_ms(&self) -> f64 {
        let mut jitter = 0.0_f64;
        let mut last: Option<f64> = None;
        for &(_, sent, arrived) in &self.arrivals {
            let transit = arrived as f64 - sent as f64;
            if let Some(previous) = last {
                jitter += ((transit - previous).abs() - jitter) / 16.0;
            }
            last = Some(transit);
        }
        jitter / 1e6
    }
}

impl Exchange {
    /// Every one-way delay, both directions, in ms, sorted.
    fn delays_ms(&self) -> Vec<f64> {
        let mut delays: Vec<f64> = self
            .ways
            .iter()
            .flat_map(|w| w.arrivals.iter())
            .map(|&(_, sent, arrived)| arrived.saturating_sub(sent) as f64 / 1e6)
            .collect();
        delays.sort_by(f64::total_cmp);
        delays
    }

    fn lost(&self) -> u64 {
        self.ways.iter().map(|w| w.lost(self.sent)).sum()
    }
}

/// The `p`th percentile (nearest rank) of sorted `values`.
fn percentile(values: &[f64], p: usize) -> Option<f64> {
    let rank = (values.len() * p).div_ceil(100).max(1) - 1;
    values.get(rank).copied()
}

/// `a` sends to `a_to` and `b` to `b_to`, `args.packets` each, at once; each socket's
/// arrivals are recorded until all came or [`GRACE`] after the last was due.
fn exchange(
    a: &UdpSocket,
    a_to: SocketAddr,
    b: &UdpSocket,
    b_to: SocketAddr,
    args: &Args,
) -> Result<Exchange> {
    let start = Instant::now() + Duration::from_millis(100);
    let last_due = start + args.interval() * args.packets;
    let deadline = last_due + GRACE;
    let (to_b, to_a) = std::thread::scope(|s| -> Result<_> {
        let receive_b = s.spawn(|| receive(b, args.packets, deadline));
        let receive_a = s.spawn(|| receive(a, args.packets, deadline));
        let send_a = s.spawn(|| send(a, a_to, args, start, 0x0a0a_0a0a));
        let send_b = s.spawn(|| send(b, b_to, args, start, 0x0b0b_0b0b));
        let join = |r: std::thread::Result<Result<()>>| {
            r.map_err(|_| anyhow!("a media thread panicked"))?
        };
        join(send_a.join())?;
        join(send_b.join())?;
        let to_b = receive_b
            .join()
            .map_err(|_| anyhow!("a media thread panicked"))??;
        let to_a = receive_a
            .join()
            .map_err(|_| anyhow!("a media thread panicked"))??;
        Ok((to_b, to_a))
    })?;
    Ok(Exchange {
        sent: args.packets,
        ways: [to_b, to_a],
    })
}

/// Sends the packets of one side, packet `i` due at `start + i * interval`.
fn send(socket: &UdpSocket, to: SocketAddr, args: &Args, start: Instant, ssrc: u32) -> Result<()> {
    let mut packet = [0u8; PACKET];
    packet[0] = 0x80; // RTP version 2
    packet[1] = 0; // PCMU
    packet[8..12].copy_from_slice(&ssrc.to_be_bytes());
    for i in 0..args.packets {
        let due = start + args.interval() * i;
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        packet[2..4].copy_from_slice(&(i as u16).to_be_bytes());
        packet[4..8].copy_from_slice(&(i.wrapping_mul(160)).to_be_bytes());
        packet[RTP_HEADER..RTP_HEADER + 4].copy_from_slice(&i.to_be_bytes());
        packet[RTP_HEADER + 4..RTP_HEADER + 12].copy_from_slice(&now_ns().to_be_bytes());
        socket.send_to(&packet, to)?;
    }
    Ok(())
}

/// Records the packets arriving at `socket` until `count` distinct ones came or `deadline`.
fn receive(socket: &UdpSocket, count: u32, deadline: Instant) -> Result<Way> {
    let mut arrivals = Vec::with_capacity(count as usize);
    let mut seen = HashSet::new();
    let mut buf = [0u8; 2048];
    while seen.len() < count as usize {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        socket.set_read_timeout(Some(left))?;
        match socket.recv_from(&mut buf) {
            Ok((len, _)) => {
                let arrived = now_ns();
                if len < RTP_HEADER + 12 {
                    continue;
                }
                let mut seq = [0u8; 4];
                seq.copy_from_slice(&buf[RTP_HEADER..RTP_HEADER + 4]);
                let mut sent = [0u8; 8];
                sent.copy_from_slice(&buf[RTP_HEADER + 4..RTP_HEADER + 12]);
                let seq = u32::from_be_bytes(seq);
                seen.insert(seq);
                arrivals.push((seq, u64::from_be_bytes(sent), arrived));
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Way { arrivals })
}

// ---------------------------------------------------------------------------------------------
// The table.

/// One path's figures.
struct Row {
    path: String,
    /// The path `p2psip peers --json` reported between the two nodes.
    seen: String,
    exchange: Exchange,
    drops: Drops,
}

/// A figure in ms, or `-`.
struct Ms(Option<f64>);

impl fmt::Display for Ms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(ms) => write!(f, "{ms:.3}"),
            None => f.write_str("-"),
        }
    }
}

fn print_table(rows: &[Row]) {
    let base = rows.first().map(|r| {
        let d = r.exchange.delays_ms();
        (percentile(&d, 50), percentile(&d, 99))
    });
    let ratio = |x: Option<f64>, b: Option<f64>| match (x, b) {
        (Some(x), Some(b)) if b > 0.0 => format!("x{:.1}", x / b),
        _ => "-".into(),
    };
    println!(
        "{:<9} {:<18} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8} {:>17} {:>6} {:>6} {:>8}",
        "path",
        "nodes' path",
        "p50 ms",
        "p99 ms",
        "+p50 ms",
        "+p99 ms",
        "p50/base",
        "p99/base",
        "jitter ms (a/b)",
        "lost",
        "stale",
        "dropped"
    );
    for row in rows {
        let d = row.exchange.delays_ms();
        let (p50, p99) = (percentile(&d, 50), percentile(&d, 99));
        let (b50, b99) = base.unwrap_or((None, None));
        let added = |x: Option<f64>, b: Option<f64>| Ms(x.zip(b).map(|(x, b)| x - b));
        let jitter = format!(
            "{:.3}/{:.3}",
            row.exchange.ways[0].jitter_ms(),
            row.exchange.ways[1].jitter_ms()
        );
        println!(
            "{:<9} {:<18} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8} {:>17} {:>6} {:>6} {:>8}",
            row.path,
            row.seen,
            Ms(p50).to_string(),
            Ms(p99).to_string(),
            added(p50, b50).to_string(),
            added(p99, b99).to_string(),
            ratio(p50, b50),
            ratio(p99, b99),
            jitter,
            format!(
                "{}/{}",
                row.exchange.lost(),
                2 * u64::from(row.exchange.sent)
            ),
            row.drops.stale,
            row.drops.other
        );
    }
}
