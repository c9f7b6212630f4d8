//! The control API of a running node, for the `p2psip` command: JSON lines over TCP on
//! 127.0.0.1.
//!
//! A node serving it writes `control.json` into its data directory (mode 0600, written
//! atomically): the address and a random 256-bit token. A client reads that file, connects,
//! and sends one [`Hello`] line (the token and a [`Request`]); the node answers with
//! [`Reply`] lines and closes the connection. Only a user who can read the file can use the
//! node: the token is compared in constant time, and a wrong one is refused.
//!
//! During a `call`, the client may send `{"command":"hangup"}`; closing the connection hangs
//! up too, so a client that is interrupted never leaves a call behind.
//!
//! Bounded: a line is at most [`MAX_LINE`] bytes, the hello must come within
//! [`HELLO_TIMEOUT`], at most [`MAX_CONNECTIONS`] clients are served at once.
//!
//! [`Hello::parse`] is all the node makes of a client's first line (UTF-8, JSON, a call
//! duration a [`Duration`] can hold); it is a plain function so that the fuzz target and the
//! property tests (`node/fuzz`, `node/tests/fuzz_props.rs`) feed it what a client could send.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use p2psip_overlay::id::ResourceId;
use p2psip_overlay::network;
use p2psip_sip::ua::{self, Call};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

use crate::agent::{Agent, Report};
use crate::clock::sleep_until;
use crate::p2p::{self, Node};

/// The file in the data directory that says where the control API is and holds its token.
pub const FILE_NAME: &str = "control.json";
/// The longest line either side sends.
pub const MAX_LINE: usize = 64 * 1024;
/// How long a client has to send its hello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// How many clients are served at once; more wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 64;
/// How long a registration, MESSAGE or OPTIONS may take before the client is told it failed.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(40);
/// How long a registration made from the command line lasts (refreshed while the node runs).
const REGISTER_EXPIRES: u32 = 3600;

/// What `control.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// Where the control API listens.
    pub addr: SocketAddr,
    /// The secret a client must present, hex.
    pub token: String,
}

/// The first line a client sends.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hello {
    /// The token of `control.json`.
    pub token: String,
    /// What the client wants.
    pub request: Request,
}

impl Hello {
    /// Reads a client's first line (with or without its line end): at most [`MAX_LINE`]
    /// bytes of UTF-8 JSON; a call's `duration_s` must be a number of seconds a [`Duration`]
    /// can hold. The error is the sentence the node answers with. No input makes it panic.
    pub fn parse(line: &[u8]) -> Result<Hello, String> {
        let text = line_text(line.to_vec()).map_err(|e| e.to_string())?;
        let hello: Hello = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        if let Request::Call {
            duration_s: Some(d),
            ..
        } = hello.request
            && call_duration(d).is_none()
        {
            return Err(format!(
                "duration_s {d} is not a number of seconds a call can last; give e.g. 10"
            ));
        }
        Ok(hello)
    }
}

/// What a client may ask.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Request {
    /// The node's identity, addresses, peers, store and counters.
    Status,
    /// The peers in the routing table.
    Peers,
    /// The devices registered for an AOR, found in the overlay.
    Lookup {
        /// The AOR.
        aor: String,
    },
    /// The built-in agent registers an AOR through this node.
    Register {
        /// The AOR.
        aor: String,
    },
    /// The built-in agent removes its binding for an AOR.
    Unregister {
        /// The AOR.
        aor: String,
    },
    /// The built-in agent calls an AOR or a SIP URI; hangs up after `duration_s` once
    /// answered, when given.
    Call {
        /// The AOR or URI.
        target: String,
        /// How long to stay in the call.
        duration_s: Option<f64>,
    },
    /// During a call: hang up.
    Hangup,
    /// The built-in agent sends a text MESSAGE.
    Message {
        /// The AOR or URI.
        target: String,
        /// The text.
        text: String,
    },
    /// The built-in agent pings with OPTIONS.
    Options {
        /// The AOR or URI.
        target: String,
    },
}

/// What the node answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    /// For [`Request::Status`] (boxed: it is far larger than the other answers).
    Status(Box<Status>),
    /// For [`Request::Peers`].
    Peers {
        /// The peers.
        peers: Vec<PeerInfo>,
    },
    /// For [`Request::Lookup`].
    Lookup(Lookup),
    /// The registration is in the overlay.
    Registered {
        /// The AOR.
        aor: String,
        /// How long the binding lasts (the agent refreshes it).
        expires_s: u64,
        /// From the REGISTER sent to its 200 (RFC 6076's registration request delay), in
        /// milliseconds.
        elapsed_ms: f64,
    },
    /// The binding is gone.
    Unregistered {
        /// The AOR.
        aor: String,
    },
    /// A step of a call; the last one is `ended` or `failed`.
    Call(CallUpdate),
    /// The final answer to a MESSAGE or OPTIONS.
    Completed {
        /// The status code.
        status: u16,
        /// The reason phrase.
        reason: String,
        /// How long it took, in milliseconds.
        elapsed_ms: f64,
    },
    /// The request failed; the message says why and what to do.
    Error {
        /// One sentence.
        message: String,
    },
}

/// What `p2psip status` shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// The Node-ID.
    pub peer_id: String,
    /// Where other nodes reach this one.
    pub overlay_addrs: Vec<String>,
    /// The SIP addresses softphones register to, `udp:127.0.0.1:5060`.
    pub sip_addrs: Vec<String>,
    /// Peers in the routing table.
    pub routing_table: usize,
    /// Peers with an open connection.
    pub connected: usize,
    /// Resources this node holds for the overlay.
    pub stored_resources: usize,
    /// Bytes those take.
    pub stored_bytes: u64,
    /// The AORs the built-in agent has registered.
    pub agent_registrations: Vec<String>,
    /// Registrations this node published for softphones and its agent.
    pub published: u64,
    /// Requests refused (overlay refusals, floods, bad payloads).
    pub refused: u64,
    /// Every refusal of hostile or faulty input, by reason.
    pub refusals: Refusals,
    /// SIP requests that came over the overlay, out of and in a dialog.
    pub overlay_requests: u64,
    /// In-dialog SIP requests that came over the overlay.
    pub overlay_in_dialog: u64,
    /// Overlay messages forwarded for others.
    pub forwarded: u64,
    /// Lookups of AORs answered in one round trip by the replicas this node knew.
    #[serde(default)]
    pub lookups_one_round_trip: u64,
    /// Lookups of AORs that needed a Kademlia lookup of the replica set.
    #[serde(default)]
    pub lookups_full: u64,
    /// Reachability (AutoNAT), external and relayed addresses, whether it relays for others.
    pub nat: network::NatState,
    /// The media this node carries for its softphones.
    pub media: crate::media::Snapshot,
}

/// What a node refused, by reason (issue 13's "every refusal is counted").
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusals {
    /// SIP requests refused at the edge or from the overlay (flood limits, unknown dialogs,
    /// Routes elsewhere, bad payloads, overlay refusals of a REGISTER).
    pub sip: u64,
    /// SIP requests challenged for digest credentials (401/407).
    pub challenged: u64,
    /// Overlay messages too large or that did not decode.
    pub bad_messages: u64,
    /// Route messages whose origin's signature failed (forged origin, changed payload).
    pub bad_signature: u64,
    /// Messages whose Via did not match the peer that sent them.
    pub wrong_sender: u64,
    /// Replayed Route messages.
    pub replayed: u64,
    /// Route messages outside the freshness window.
    pub stale: u64,
    /// Answers to our Route messages not signed by their destination.
    pub forged_answers: u64,
    /// Inbound overlay requests over a per-peer or global limit.
    pub busy: u64,
    /// Stores refused because this node is not a replica of the resource.
    pub not_replica: u64,
    /// Entries of fetched answers that failed a storing node's checks, or lost the vote.
    pub rejected_entries: u64,
    /// Entries this node pushed that a replica refused.
    pub refused_pushes: u64,
}

/// A peer of the routing table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// Its Node-ID.
    pub peer_id: String,
    /// Whether a connection is open.
    pub connected: bool,
    /// How: directly or through a relay; `None` when not connected.
    pub path: Option<network::Path>,
}

/// What `p2psip lookup` shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lookup {
    /// The AOR.
    pub aor: String,
    /// The resource it is stored under.
    pub resource: String,
    /// Its devices.
    pub devices: Vec<Device>,
    /// How long the fetch took, in milliseconds.
    pub elapsed_ms: f64,
}

/// A device found by a lookup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// The node it is registered at.
    pub node: String,
    /// Its contacts.
    pub contacts: Vec<String>,
    /// How many overlay links a message to its node crosses (PathTrack), if it answered.
    pub hops: Option<usize>,
}

/// The state of a call, as `p2psip call` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallState {
    /// The INVITE is out.
    Calling,
    /// The callee is alerting.
    Ringing,
    /// The call is up.
    Answered,
    /// The call is over.
    Ended,
    /// The call never came up.
    Failed,
}

/// A step of a call with its timings, in milliseconds from the INVITE.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallUpdate {
    /// Where the call is.
    pub state: CallState,
    /// The final status of a failed call.
    pub status: Option<u16>,
    /// INVITE to 180 (RFC 6076 SRD).
    pub ringing_ms: Option<f64>,
    /// INVITE to answer.
    pub answered_ms: Option<f64>,
    /// How long the call was up, once ended.
    pub duration_ms: Option<f64>,
    /// Whether the other side hung up.
    pub by_peer: Option<bool>,
    /// How many overlay links the call's INVITE crossed to the callee's node (0: the callee
    /// is at this node), once this node knows ([`Node::invite_hops`]); `None` before, and
    /// when the INVITE never got there.
    pub hops: Option<u8>,
}

/// The control API, bound, with its `control.json` written.
#[derive(Debug)]
pub struct Control {
    listener: TcpListener,
    endpoint: Endpoint,
    file: PathBuf,
}

impl Control {
    /// Binds `addr` (127.0.0.1 and port 0 unless there is a reason) and writes
    /// `control.json` into `data_dir`.
    pub async fn bind(addr: SocketAddr, data_dir: &Path) -> io::Result<Control> {
        let listener = TcpListener::bind(addr).await?;
        let endpoint = Endpoint {
            addr: listener.local_addr()?,
            token: new_token()?,
        };
        let file = data_dir.join(FILE_NAME);
        let json = serde_json::to_vec_pretty(&endpoint).map_err(io::Error::other)?;
        write_private(&file, &json)?;
        Ok(Control {
            listener,
            endpoint,
            file,
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.endpoint.addr
    }

    /// Serves clients until the future is dropped; then `control.json` is removed.
    pub async fn serve(self, node: &Node, agent: &Agent) {
        let _remove = RemoveOnDrop(self.file.clone());
        let mut connections = FuturesUnordered::new();
        loop {
            tokio::select! {
                accepted = self.listener.accept(), if connections.len() < MAX_CONNECTIONS => {
                    match accepted {
                        Ok((stream, peer)) => {
                            debug!(%peer, "control client");
                            connections.push(serve_one(stream, &self.endpoint.token, node, agent));
                        }
                        Err(e) => warn!(error = %e, "control API: accept failed"),
                    }
                }
                Some(()) = connections.next(), if !connections.is_empty() => {}
            }
        }
    }
}

/// `addr` ending with `/p2p/<id>`, as other nodes bootstrap from it.
pub fn with_peer_id(addr: &libp2p::Multiaddr, id: libp2p::PeerId) -> String {
    let has_id = addr
        .iter()
        .any(|p| matches!(p, libp2p::multiaddr::Protocol::P2p(_)));
    if has_id {
        addr.to_string()
    } else {
        format!("{addr}/p2p/{id}")
    }
}

/// Removes a file when dropped.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// One client: its hello, then the replies.
async fn serve_one(stream: TcpStream, token: &str, node: &Node, agent: &Agent) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    let hello = match tokio::time::timeout(HELLO_TIMEOUT, read_line(&mut lines)).await {
        Ok(Ok(Some(line))) => Hello::parse(line.as_bytes()),
        Ok(Ok(None)) => return,
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no request within 10 s".to_owned()),
    };
    let mut out = Out { write: &mut write };
    let hello = match hello {
        Ok(hello) if same_token(&hello.token, token) => hello,
        Ok(_) => {
            warn!("control API: a client presented a wrong token");
            out.error("the control token is wrong; read it from the node's control.json")
                .await;
            return;
        }
        Err(e) => {
            out.error(&format!("the request is not valid: {e}")).await;
            return;
        }
    };
    let result = match hello.request {
        Request::Status => status(node, agent)
            .await
            .map(|s| Reply::Status(Box::new(s))),
        Request::Peers => peers(node).await.map(|peers| Reply::Peers { peers }),
        Request::Lookup { aor } => lookup(node, &aor).await.map(Reply::Lookup),
        Request::Register { aor } => register(agent, &aor, true).await,
        Request::Unregister { aor } => register(agent, &aor, false).await,
        Request::Message { target, text } => ask(agent, &target, Some(&text)).await,
        Request::Options { target } => ask(agent, &target, None).await,
        Request::Call { target, duration_s } => {
            call(node, agent, &target, duration_s, &mut lines, &mut out).await;
            return;
        }
        Request::Hangup => Err("hangup only means something during a call".to_owned()),
    };
    match result {
        Ok(reply) => out.send(&reply).await,
        Err(message) => out.error(&message).await,
    }
}

async fn status(node: &Node, agent: &Agent) -> Result<Status, String> {
    let overlay = node.overlay();
    let network = overlay.network();
    let routing_table = network.routing_table().await.map_err(|e| e.to_string())?;
    let connected = network.connected_peers().await.map_err(|e| e.to_string())?;
    let id = overlay.node_id();
    let overlay_addrs = overlay
        .listen_addrs()
        .await
        .map_err(|e| e.to_string())?
        .iter()
        .map(|a| with_peer_id(a, id))
        .collect();
    let stats = node.stats();
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    Ok(Status {
        peer_id: id.to_string(),
        overlay_addrs,
        sip_addrs: node
            .sip_addrs()
            .iter()
            .map(|p| format!("{}:{}", p.transport.as_str().to_ascii_lowercase(), p.addr))
            .collect(),
        routing_table: routing_table.len(),
        connected: connected.len(),
        stored_resources: overlay.local_store().all_resources().count(),
        stored_bytes: overlay.local_store().used_bytes(),
        agent_registrations: agent.registrations().await.unwrap_or_default(),
        published: load(&stats.published),
        refused: load(&stats.refused),
        refusals: {
            let overlay_refused = overlay.refused();
            Refusals {
                sip: load(&stats.refused),
                challenged: load(&stats.challenged),
                bad_messages: overlay.bad_messages(),
                bad_signature: overlay_refused.bad_signature,
                wrong_sender: overlay_refused.wrong_sender,
                replayed: overlay_refused.replayed,
                stale: overlay_refused.stale,
                forged_answers: overlay_refused.forged_answers,
                busy: overlay_refused.busy,
                not_replica: overlay.not_replica(),
                rejected_entries: overlay.rejected_entries(),
                refused_pushes: overlay.refused_pushes(),
            }
        },
        overlay_requests: load(&stats.overlay_requests),
        overlay_in_dialog: load(&stats.overlay_in_dialog),
        forwarded: overlay.forwarded(),
        lookups_one_round_trip: overlay.lookups().one_round_trip,
        lookups_full: overlay.lookups().full,
        nat: network.nat().await.map_err(|e| e.to_string())?,
        media: stats.media.snapshot(),
    })
}

async fn peers(node: &Node) -> Result<Vec<PeerInfo>, String> {
    let network = node.overlay().network();
    let table = network.routing_table().await.map_err(|e| e.to_string())?;
    let connected = network.connected_peers().await.map_err(|e| e.to_string())?;
    let mut peers = Vec::with_capacity(table.len());
    for p in table {
        peers.push(PeerInfo {
            connected: connected.contains(&p),
            path: network.path(p).await.map_err(|e| e.to_string())?,
            peer_id: p.to_string(),
        });
    }
    peers.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
    Ok(peers)
}

async fn lookup(node: &Node, aor: &str) -> Result<Lookup, String> {
    let resource = ResourceId::for_aor(aor)
        .map_err(|e| format!("{aor} is not an AOR ({e}); give one like sip:alice@example.p2p"))?;
    let overlay = node.overlay();
    let start = Instant::now();
    let found = p2p::lookup(overlay, aor)
        .await
        .map_err(|e| format!("the lookup of {aor} failed: {e}"))?;
    let elapsed_ms = ms(start.elapsed());
    let mut devices = Vec::new();
    for device in found {
        let hops = overlay
            .path_track(device.node)
            .await
            .ok()
            .map(|path| path.len().saturating_sub(1));
        devices.push(Device {
            node: device.node.to_string(),
            contacts: device.contacts.iter().map(|c| c.uri.clone()).collect(),
            hops,
        });
    }
    devices.retain(|d| !d.contacts.is_empty());
    Ok(Lookup {
        aor: aor.to_owned(),
        resource: resource.to_string(),
        devices,
        elapsed_ms,
    })
}

async fn register(agent: &Agent, aor: &str, register: bool) -> Result<Reply, String> {
    let mut events = agent.clone();
    let started = Instant::now();
    let asked = if register {
        agent.register(aor, REGISTER_EXPIRES).await
    } else {
        agent.unregister(aor).await
    };
    asked.map_err(|e| format!("cannot register {aor}: {e}"))?;
    let wanted = |e: &ua::Event| match e {
        ua::Event::Registered { aor: a, .. }
        | ua::Event::Unregistered { aor: a }
        | ua::Event::RegistrationFailed { aor: a, .. } => a == aor,
        _ => false,
    };
    match wait(&mut events, wanted).await?.event {
        ua::Event::Registered { expires, .. } => Ok(Reply::Registered {
            aor: aor.to_owned(),
            expires_s: expires.as_secs(),
            elapsed_ms: started.elapsed().as_secs_f64() * 1000.0,
        }),
        ua::Event::Unregistered { .. } => Ok(Reply::Unregistered {
            aor: aor.to_owned(),
        }),
        ua::Event::RegistrationFailed { status, reason, .. } => Err(format!(
            "the node refused the registration of {aor}: {} {reason}",
            status.as_u16()
        )),
        _ => Err("unexpected event".to_owned()),
    }
}

/// A MESSAGE (with `text`) or an OPTIONS.
async fn ask(agent: &Agent, target: &str, text: Option<&str>) -> Result<Reply, String> {
    let mut events = agent.clone();
    let start = Instant::now();
    let sent = match text {
        Some(text) => agent.message(target, text).await,
        None => agent.options(target).await,
    }
    .map_err(|e| format!("cannot send to {target}: {e}"))?;
    let report = wait(
        &mut events,
        |e| matches!(e, ua::Event::Completed { request, .. } if *request == sent),
    )
    .await?;
    let ua::Event::Completed { status, reason, .. } = report.event else {
        return Err("unexpected event".to_owned());
    };
    Ok(Reply::Completed {
        status: status.as_u16(),
        reason,
        elapsed_ms: ms(start.elapsed()),
    })
}

/// Waits for the agent's event that `pick` accepts, at most [`ANSWER_TIMEOUT`].
async fn wait(agent: &mut Agent, pick: impl Fn(&ua::Event) -> bool) -> Result<Report, String> {
    let found = tokio::time::timeout(ANSWER_TIMEOUT, async {
        while let Some(report) = agent.next_report().await {
            if pick(&report.event) {
                return Some(report);
            }
        }
        None
    })
    .await;
    match found {
        Ok(Some(report)) => Ok(report),
        Ok(None) => Err("the node's user agent has stopped".to_owned()),
        Err(_) => Err(format!("no answer within {} s", ANSWER_TIMEOUT.as_secs())),
    }
}

/// A call: updates as it goes (with the hops of its INVITE from the ringing on); hangs up on
/// request, on the client leaving, or after `duration_s` once answered.
async fn call(
    node: &Node,
    agent: &Agent,
    target: &str,
    duration_s: Option<f64>,
    lines: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
    out: &mut Out<'_>,
) {
    let mut events = agent.clone();
    let (call, call_id) = match agent.invite_with_call_id(target).await {
        Ok(placed) => placed,
        Err(e) => {
            out.error(&format!("cannot call {target}: {e}")).await;
            return;
        }
    };
    out.send(&Reply::Call(update(CallState::Calling, None, None)))
        .await;
    let duration = duration_s.and_then(call_duration);
    let mut hang_up_at: Option<tokio::time::Instant> = None;
    let mut hung_up = false;
    loop {
        tokio::select! {
            report = events.next_report() => {
                let Some(report) = report else {
                    out.error("the node's user agent has stopped").await;
                    return;
                };
                let Some(mut step) = call_step(call, &report) else { continue };
                step.hops = node.invite_hops(&call_id).map(|noted| noted.hops);
                if step.state == CallState::Answered {
                    hang_up_at = duration.map(|d| tokio::time::Instant::now() + d);
                }
                let last = matches!(step.state, CallState::Ended | CallState::Failed);
                out.send(&Reply::Call(step)).await;
                if last {
                    return;
                }
            }
            line = read_line(lines), if !hung_up => {
                // A hangup request, or the client gone: hang up either way.
                let asked = matches!(&line, Ok(Some(l)) if l.contains("hangup"));
                if asked || !matches!(line, Ok(Some(_))) {
                    hung_up = true;
                    hang_up(agent, call).await;
                }
            }
            () = sleep_until(hang_up_at), if !hung_up => {
                hung_up = true;
                hang_up(agent, call).await;
            }
        }
    }
}

async fn hang_up(agent: &Agent, call: Call) {
    if let Err(e) = agent.hangup(call).await {
        debug!(error = %e, "hangup");
    }
}

/// The update a report of the agent makes for `call`, if it is about it.
fn call_step(call: Call, report: &Report) -> Option<CallUpdate> {
    let t = report.timings;
    let mut step = match &report.event {
        ua::Event::Ringing { call: c } if *c == call => update(CallState::Ringing, None, t),
        ua::Event::Established { call: c } if *c == call => update(CallState::Answered, None, t),
        ua::Event::Failed { call: c, status } if *c == call => {
            update(CallState::Failed, Some(status.as_u16()), t)
        }
        ua::Event::Ended { call: c, by_peer } if *c == call => {
            let mut step = update(CallState::Ended, None, t);
            step.by_peer = Some(*by_peer);
            step
        }
        _ => return None,
    };
    step.duration_ms = t.and_then(|t| t.duration()).map(ms);
    Some(step)
}

fn update(
    state: CallState,
    status: Option<u16>,
    timings: Option<crate::agent::Timings>,
) -> CallUpdate {
    CallUpdate {
        state,
        status,
        ringing_ms: timings.and_then(|t| t.ringing).map(ms),
        answered_ms: timings.and_then(|t| t.answered).map(ms),
        duration_ms: None,
        by_peer: None,
        hops: None,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A call's `duration_s` as a [`Duration`]; `None` when it is negative, not finite or too
/// large for one (`Duration::from_secs_f64` would panic).
fn call_duration(seconds: f64) -> Option<Duration> {
    Duration::try_from_secs_f64(seconds).ok()
}

/// Reads one line of at most [`MAX_LINE`] bytes; `None` at the end of the stream.
async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
) -> io::Result<Option<String>> {
    let mut line = Vec::new();
    let mut limited = tokio::io::AsyncReadExt::take(&mut *reader, MAX_LINE as u64 + 1);
    let n = limited.read_until(b'\n', &mut line).await?;
    if n == 0 {
        return Ok(None);
    }
    line_text(line).map(Some)
}

/// A line's text: at most [`MAX_LINE`] bytes of UTF-8, without trailing white space.
fn line_text(line: Vec<u8>) -> io::Result<String> {
    if line.len() > MAX_LINE {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "line too long"));
    }
    String::from_utf8(line)
        .map(|l| l.trim_end().to_owned())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not UTF-8"))
}

/// Replies to the client, one JSON line each. A client that is gone is not an error here:
/// it simply hears nothing more.
struct Out<'a> {
    write: &'a mut tokio::net::tcp::OwnedWriteHalf,
}

impl Out<'_> {
    async fn send(&mut self, reply: &Reply) {
        let Ok(mut line) = serde_json::to_vec(reply) else {
            return;
        };
        line.push(b'\n');
        let _ = self.write.write_all(&line).await;
    }

    async fn error(&mut self, message: &str) {
        self.send(&Reply::Error {
            message: message.to_owned(),
        })
        .await;
    }
}

/// A client of a node's control API.
#[derive(Debug)]
pub struct Client {
    reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
    write: tokio::net::tcp::OwnedWriteHalf,
}

/// Why a client could not talk to a node.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// No `control.json`: no node runs with that data directory.
    #[error(
        "no node is running with the data directory {0}; start one with `p2psip node --data-dir {0}` (or give the --data-dir of the running one)"
    )]
    NotRunning(String),
    /// `control.json` exists but nothing answers at its address.
    #[error(
        "the node of {dir} does not answer at {addr} (it may have stopped without cleaning up); start it again with `p2psip node --data-dir {dir}`"
    )]
    Unreachable {
        /// The data directory.
        dir: String,
        /// The address in control.json.
        addr: SocketAddr,
    },
    /// `control.json` cannot be read or is not ours.
    #[error("cannot read {file}: {why}; check that it belongs to you, or restart the node")]
    File {
        /// The file.
        file: String,
        /// Why.
        why: String,
    },
    /// The connection failed midway, or the node sent something that is not a reply.
    #[error("the conversation with the node broke off: {0}")]
    Io(#[from] io::Error),
}

impl Client {
    /// Connects to the node whose data directory is `data_dir` and sends `request`.
    pub async fn connect(data_dir: &Path, request: &Request) -> Result<Client, ClientError> {
        let file = data_dir.join(FILE_NAME);
        let dir = data_dir.display().to_string();
        let text = match std::fs::read(&file) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ClientError::NotRunning(dir));
            }
            Err(e) => {
                return Err(ClientError::File {
                    file: file.display().to_string(),
                    why: e.to_string(),
                });
            }
        };
        let endpoint: Endpoint = serde_json::from_slice(&text).map_err(|e| ClientError::File {
            file: file.display().to_string(),
            why: e.to_string(),
        })?;
        let stream =
            TcpStream::connect(endpoint.addr)
                .await
                .map_err(|_| ClientError::Unreachable {
                    dir,
                    addr: endpoint.addr,
                })?;
        let (read, write) = stream.into_split();
        let mut client = Client {
            reader: BufReader::new(read),
            write,
        };
        let hello = Hello {
            token: endpoint.token,
            request: request.clone(),
        };
        client.send(&hello).await?;
        Ok(client)
    }

    /// Sends a line (e.g. [`Request::Hangup`] during a call).
    pub async fn send(&mut self, value: &impl Serialize) -> Result<(), ClientError> {
        let mut line = serde_json::to_vec(value).map_err(io::Error::other)?;
        line.push(b'\n');
        self.write.write_all(&line).await?;
        Ok(())
    }

    /// The next reply; `None` when the node has said everything.
    pub async fn next(&mut self) -> Result<Option<Reply>, ClientError> {
        match read_line(&mut self.reader).await? {
            None => Ok(None),
            Some(line) => serde_json::from_str(&line)
                .map(Some)
                .map_err(|e| ClientError::Io(io::Error::new(io::ErrorKind::InvalidData, e))),
        }
    }
}

/// 32 random bytes, hex.
fn new_token() -> io::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(io::Error::other)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Compares two tokens in time that does not depend on where they differ.
fn same_token(given: &str, ours: &str) -> bool {
    let (a, b) = (given.as_bytes(), ours.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Writes `bytes` to `path` atomically (a temporary file in the same folder, renamed over
/// it) with mode 0600 (tempfile's default: the token is the owner's only).
fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write as _;
    let folder = path.parent().unwrap_or(Path::new("."));
    let mut file = tempfile::NamedTempFile::new_in(folder)?;
    file.write_all(bytes)?;
    file.as_file().sync_all()?;
    // On failure the temporary file is deleted when `PersistError` drops.
    file.persist(path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_by_content_only() {
        assert!(same_token("abcd", "abcd"));
        assert!(!same_token("abce", "abcd"));
        assert!(!same_token("abc", "abcd"));
        let a = new_token().unwrap_or_default();
        let b = new_token().unwrap_or_default();
        assert_eq!(a.len(), 64);
        assert_ne!(a, b, "fresh randomness each time");
    }

    #[test]
    fn requests_and_replies_are_one_json_line_each() {
        let hello = Hello {
            token: "t".into(),
            request: Request::Call {
                target: "sip:bob@example.p2p".into(),
                duration_s: Some(2.5),
            },
        };
        let line = serde_json::to_string(&hello).unwrap_or_default();
        assert_eq!(
            line,
            r#"{"token":"t","request":{"command":"call","target":"sip:bob@example.p2p","duration_s":2.5}}"#
        );
        let reply = Reply::Error {
            message: "x".into(),
        };
        let text = serde_json::to_string(&reply).unwrap_or_default();
        assert_eq!(text, r#"{"reply":"error","message":"x"}"#);
        assert_eq!(serde_json::from_str::<Reply>(&text).ok(), Some(reply));
    }
}
