//! `p2psip node`: runs a P2PSIP node until Ctrl-C, then leaves the overlay gracefully.
//!
//! The node is the overlay node, the SIP service for the softphones of this machine, the
//! node's built-in user agent (which answers calls by itself) and the control API the other
//! commands use. Flags override the config file. Before anything is started, the data
//! directory is locked (`node.lock`), so that a second node on the same directory stops with
//! a clear sentence instead of a store error. When the node is ready it prints what other
//! nodes bootstrap from and what to put into a softphone, and writes the same as JSON to
//! `--ready-file`.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use libp2p::Multiaddr;
use libp2p::identity::PublicKey;
use p2psip_node::agent::{self, Agent};
use p2psip_node::control::Control;
use p2psip_node::p2p::{self, Node};
use p2psip_node::transport;
use p2psip_overlay::access::AccessPolicy;
use p2psip_overlay::data::AorClaim;
use p2psip_overlay::identity::NodeCertificate;
use p2psip_overlay::{network, node as overlay_node};
use p2psip_sip::Transport;
use serde::Serialize;
use tracing::info;

use crate::args::NodeArgs;
use crate::config::{Config, ListenAddr, OverlayName, PeerAddr, RelayMode, SipListen};
use crate::files::{self, Existing};

/// The end of `p2psip node --help`: how to run a reachable bootstrap and relay node.
pub(crate) const PUBLIC_NODE_HELP: &str = "\
Running a public bootstrap and relay node:
  On a machine with a public address, listen on a fixed port on every address and relay
  for the overlay's nodes behind NAT:

    p2psip node --listen /ip4/0.0.0.0/udp/4001/quic-v1 --listen /ip6/::/udp/4001/quic-v1 \\
        --listen /ip4/0.0.0.0/tcp/4001 --relay on

  Open UDP 4001 (QUIC) and TCP 4001 in its firewall; SIP (5060) stays on 127.0.0.1. The
  node prints its multiaddrs: give one, with its /p2p/<peer id>, to the other nodes as
  --bootstrap. The same in config.toml: overlay.listen and relay.mode = \"on\"; the relay's
  caps are the relay.max_* keys. cli/dist/p2psip.service in the source tree is a systemd
  unit for it.

Behind a NAT, nothing needs configuring: AutoNAT finds the node unreachable, it reserves a
slot on two relays of the overlay, other nodes reach it through them, and hole punching
makes the connection direct where the NATs allow. `p2psip status` shows which.";

/// How long a node with bootstrap peers waits to reach one of them.
const BOOTSTRAP_TIMEOUT: Duration = Duration::from_secs(20);

/// The arguments of `p2psip node`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Which data directory and config file.
    #[command(flatten)]
    node: NodeArgs,
    /// The overlay to join [config: overlay.name].
    #[arg(long, value_name = "NAME", value_parser = parse::<OverlayName>)]
    overlay: Option<OverlayName>,
    /// Where the overlay listens, e.g. /ip4/0.0.0.0/udp/4001/quic-v1; repeatable [config:
    /// overlay.listen].
    #[arg(long, value_name = "MULTIADDR", value_parser = parse::<ListenAddr>)]
    listen: Vec<ListenAddr>,
    /// A peer to join through, ending with /p2p/PEER-ID; repeatable [config:
    /// overlay.bootstrap].
    #[arg(long, value_name = "MULTIADDR", value_parser = parse::<PeerAddr>)]
    bootstrap: Vec<PeerAddr>,
    /// A SIP address for softphones: 127.0.0.1:5060 (UDP and TCP) or udp:/tcp: and an
    /// address; repeatable [config: sip.listen].
    #[arg(long = "sip-listen", value_name = "ADDR", value_parser = parse::<SipListen>)]
    sip_listen: Vec<SipListen>,
    /// Do not look for peers on the local network [config: overlay.mdns = false].
    #[arg(long)]
    no_mdns: bool,
    /// When to serve circuit relay to the overlay's nodes behind NAT: auto (once AutoNAT
    /// confirms a public address), on, off [config: relay.mode].
    #[arg(long, value_name = "MODE", value_enum)]
    relay: Option<RelayMode>,
    /// Write the node's addresses as JSON to this file once it is ready.
    #[arg(long, value_name = "PATH")]
    ready_file: Option<PathBuf>,
}

/// A value of the config file's types, from the command line: the same checks, the same
/// sentences.
fn parse<T: TryFrom<String, Error = String>>(text: &str) -> Result<T, String> {
    T::try_from(text.to_owned())
}

/// What a ready node prints and writes to `--ready-file`.
#[derive(Debug, Serialize)]
struct Ready {
    /// The Node-ID.
    peer_id: String,
    /// Where other nodes bootstrap from, each ending with /p2p/PEER-ID.
    overlay_addrs: Vec<String>,
    /// Where softphones register, `udp:127.0.0.1:5060`.
    sip_addrs: Vec<String>,
    /// The control API.
    control_addr: SocketAddr,
    /// The data directory.
    data_dir: PathBuf,
}

/// Runs the node until Ctrl-C.
pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    let mut config = args.node.load()?.config;
    apply(&mut config, &args);
    let dir = config
        .data_dir
        .clone()
        .ok_or_else(|| anyhow!("no data directory; give one with --data-dir"))?;
    files::create_private_dir(&dir).with_context(|| {
        format!(
            "cannot create the data directory {}; check the permissions of its parent, or \
             choose another with --data-dir",
            dir.display()
        )
    })?;
    let _lock = lock(&dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(config, dir, args.ready_file))
}

/// The flags over the config file.
fn apply(config: &mut Config, args: &Args) {
    if let Some(name) = &args.overlay {
        config.overlay.name = name.clone();
    }
    if !args.listen.is_empty() {
        config.overlay.listen = args.listen.clone();
    }
    if !args.bootstrap.is_empty() {
        config.overlay.bootstrap = args.bootstrap.clone();
    }
    if !args.sip_listen.is_empty() {
        config.sip.listen = args.sip_listen.clone();
    }
    if args.no_mdns {
        config.overlay.mdns = false;
    }
    if let Some(mode) = args.relay {
        config.relay.mode = mode;
    }
}

/// Locks the data directory for this process: released when the file is closed, also when
/// the process dies.
fn lock(dir: &Path) -> anyhow::Result<File> {
    let path = dir.join("node.lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| {
            format!(
                "cannot open {}; check that the data directory is yours and writable",
                path.display()
            )
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => bail!(
            "the data directory {} is in use by another running node; stop that node, or give \
             this one its own directory with --data-dir",
            dir.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => Err(e).with_context(|| {
            format!(
                "cannot lock {}; check that the data directory is on a local file system",
                path.display()
            )
        }),
    }
}

async fn serve(config: Config, dir: PathBuf, ready_file: Option<PathBuf>) -> anyhow::Result<()> {
    let node_config = node_config(&config, &dir)?;
    let bootstrap = !config.overlay.bootstrap.is_empty();
    let node = Node::start(node_config)
        .await
        .map_err(|e| start_error(&e))?;
    if bootstrap && let Err(e) = wait_for_peers(&node, &config).await {
        node.kill().await;
        return Err(e);
    }
    let Some(sip_udp) = node
        .sip_addr(Transport::Udp)
        .or(node.sip_addr(Transport::Tcp))
    else {
        node.kill().await;
        bail!("the node has no SIP address; give one with --sip-listen 127.0.0.1:5060");
    };
    // The agent's calls offer audio on a port it holds for as long as the node runs; it
    // does signalling only, so what arrives there is not played.
    let rtp = std::net::UdpSocket::bind(SocketAddr::new(sip_udp.ip(), 0))
        .context("cannot reserve a UDP port for the user agent's audio")?;
    let offer = agent::audio_offer(sip_udp.ip(), rtp.local_addr()?.port(), 1);
    let ids = p2psip_sip::Ids::from_os()
        .map_err(|e| anyhow!("the operating system's random generator failed: {e}"))?;
    let agent = Agent::for_node_with(sip_udp, "p2psip", true, Some(offer), ids)
        .await
        .context("cannot start the node's user agent on 127.0.0.1")?;
    // The built-in agent has no password: the node lets its own sockets in.
    for peer in agent.local_addrs() {
        if peer.transport == Transport::Udp {
            node.trust(peer.addr);
        }
    }
    let control = Control::bind(config.control.listen, &dir)
        .await
        .with_context(|| {
            format!(
                "cannot listen for the control API on {}; another program may use that port, \
             change control.listen in the config",
                config.control.listen
            )
        })?;
    let ready = ready(&node, control.addr(), &dir).await?;
    print_ready(&ready);
    if let Some(path) = &ready_file {
        let json = serde_json::to_vec_pretty(&ready).context("cannot encode the ready file")?;
        files::write_atomically(path, &json, Existing::Replace).with_context(|| {
            format!(
                "cannot write the ready file {}; check that its folder exists and is writable",
                path.display()
            )
        })?;
    }
    tokio::select! {
        () = control.serve(&node, &agent) => {}
        signal = tokio::signal::ctrl_c() => {
            signal.context("cannot wait for Ctrl-C")?;
        }
    }
    eprintln!("leaving the overlay (handing stored entries over)...");
    drop(agent);
    drop(rtp);
    node.leave()
        .await
        .context("the node could not hand its entries over before leaving")?;
    if let Some(path) = &ready_file {
        let _ = std::fs::remove_file(path);
    }
    eprintln!("left");
    Ok(())
}

/// The P2PSIP node's configuration from the effective config.
fn node_config(config: &Config, dir: &Path) -> anyhow::Result<p2p::Config> {
    let mut sip = transport::Config::default();
    sip.udp.clear();
    sip.tcp.clear();
    for listen in &config.sip.listen {
        let (udp, tcp, tls) = listen.transports();
        if tls {
            bail!(
                "SIP over TLS ({listen}) is not served by `p2psip node` yet; listen on UDP and \
                 TCP (e.g. --sip-listen 127.0.0.1:5060)"
            );
        }
        if udp {
            sip.udp.push(listen.addr());
        }
        if tcp {
            sip.tcp.push(listen.addr());
        }
    }
    let network = network::Config::default()
        .with_overlay(config.overlay.name.as_str())
        .with_listen(config.overlay.listen.iter().map(|l| l.multiaddr().clone()))
        .with_bootstrap(
            config
                .overlay
                .bootstrap
                .iter()
                .map(|p| p.multiaddr().clone()),
        )
        .with_mdns(config.overlay.mdns)
        .with_relay(config.relay.mode())
        .with_relay_limits(config.relay.limits())
        .with_relay_reservations(config.relay.reservations);
    let mut overlay = overlay_node::Config::new(dir)
        .with_network(network)
        .with_replicas(usize::from(u8::from(config.overlay.replicas)));
    let mut aor_certificates = Vec::new();
    if let Some(ca) = &config.overlay.enrollment_ca {
        let ca = read_ca(ca)?;
        let certificate = config
            .overlay
            .node_certificate
            .as_deref()
            .map(read_node_certificate)
            .transpose()?;
        overlay.network = overlay.network.with_enrollment(ca.clone(), certificate);
        overlay.policy = AccessPolicy::default().with_enrollment_ca(ca.clone());
        aor_certificates = config
            .overlay
            .aor_certificates
            .iter()
            .map(|path| read_aor_certificate(path, &ca))
            .collect::<anyhow::Result<_>>()?;
    } else if let Some(path) = config.overlay.aor_certificates.first() {
        bail!(
            "{} is an AOR certificate, but the config names no enrollment CA; set              overlay.enrollment_ca, or remove overlay.aor_certificates",
            path.display()
        );
    }
    overlay.network = overlay
        .network
        .with_node_id_work(config.overlay.node_id_work.into());
    let mut node =
        p2p::Config::new(dir, SocketAddr::from(([127, 0, 0, 1], 5060))).with_overlay(overlay);
    node.aor_certificates = aor_certificates;
    let wide = node_sip_wide(&sip);
    node.sip = sip;
    node.media = config.media.config();
    if let Some(addr) = wide
        && config.sip.require_auth == Some(false)
    {
        bail!(
            "sip.require_auth = false, but SIP listens on {addr}, beyond loopback: the node \
             would serve anyone who reaches it; remove require_auth, or listen on 127.0.0.1"
        );
    }
    if wide.is_some() || config.sip.require_auth == Some(true) {
        if config.sip.users.is_empty() {
            let why = match wide {
                Some(addr) => format!("SIP listens on {addr}, beyond loopback"),
                None => "sip.require_auth is on".to_owned(),
            };
            bail!(
                "{why}, so softphones must log in, but the config has no users; add one with \
                 `p2psip user add NAME` (it asks for the password), or listen on 127.0.0.1"
            );
        }
        node.auth = Some(p2p::Auth {
            realm: config.sip.realm.clone(),
            users: config
                .sip
                .users
                .iter()
                .map(|(name, user)| (name.clone(), user.credential()))
                .collect(),
        });
    }
    Ok(node)
}

/// A SIP address beyond loopback, if any.
fn node_sip_wide(sip: &transport::Config) -> Option<SocketAddr> {
    sip.udp
        .iter()
        .chain(&sip.tcp)
        .chain(&sip.tls)
        .find(|a| !a.ip().is_loopback())
        .copied()
}

/// The enrollment CA's public key: the protobuf encoding libp2p uses for keys.
fn read_ca(path: &Path) -> anyhow::Result<PublicKey> {
    let bytes = std::fs::read(path).with_context(|| {
        format!(
            "cannot read the enrollment CA key {}; check overlay.enrollment_ca in the config",
            path.display()
        )
    })?;
    PublicKey::try_decode_protobuf(&bytes).map_err(|_| {
        anyhow!(
            "{} is not a public key (libp2p protobuf encoding); check overlay.enrollment_ca",
            path.display()
        )
    })
}

/// This node's Node-ID certificate from the enrollment CA.
fn read_node_certificate(path: &Path) -> anyhow::Result<NodeCertificate> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "cannot read the Node-ID certificate {}; check overlay.node_certificate in the config",
            path.display()
        )
    })?;
    NodeCertificate::from_text(&text).map_err(|error| {
        anyhow!(
            "{}: {error}; check overlay.node_certificate in the config",
            path.display()
        )
    })
}

/// A certificate of the enrollment CA `ca` for an AOR of this node's user.
fn read_aor_certificate(path: &Path, ca: &PublicKey) -> anyhow::Result<AorClaim> {
    let check = "check overlay.aor_certificates in the config";
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "cannot read the AOR certificate {}; {check}",
            path.display()
        )
    })?;
    let claim = AorClaim::from_text(&text)
        .map_err(|error| anyhow!("{}: {error}; {check}", path.display()))?;
    if !claim.verify_certificate(ca) {
        bail!(
            "{} is not signed by the enrollment CA of overlay.enrollment_ca; {check}",
            path.display()
        );
    }
    Ok(claim)
}

/// A node error as a sentence that says what to do.
fn start_error(error: &p2p::Error) -> anyhow::Error {
    match error {
        p2p::Error::Transport(transport::Error::Bind { addr, .. }) => anyhow!(
            "{error}; stop what uses {addr} or give another address with --sip-listen \
             (e.g. --sip-listen 127.0.0.1:5070)"
        ),
        p2p::Error::Overlay(overlay_node::Error::Network(e @ network::Error::Listen { .. })) => {
            anyhow!(
                "the overlay cannot listen: {e}; give another address with --listen (e.g. \
             --listen /ip4/0.0.0.0/udp/0/quic-v1)"
            )
        }
        other => anyhow!("the node could not start: {other}"),
    }
}

/// With bootstrap peers: waits until a connection to a peer is open.
async fn wait_for_peers(node: &Node, config: &Config) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + BOOTSTRAP_TIMEOUT;
    loop {
        // Kademlia lists a bootstrap address before it answers: only a connection counts.
        let connected = node
            .overlay()
            .network()
            .connected_peers()
            .await
            .unwrap_or_default();
        if !connected.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            let addrs: Vec<String> = config
                .overlay
                .bootstrap
                .iter()
                .map(|p| p.multiaddr().to_string())
                .collect();
            bail!(
                "no bootstrap peer answered within {} s ({}); check the address and that the \
                 node there is running, or start without --bootstrap to begin a new overlay",
                BOOTSTRAP_TIMEOUT.as_secs(),
                addrs.join(", ")
            );
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), node.overlay().bootstrap()).await;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn ready(node: &Node, control: SocketAddr, dir: &Path) -> anyhow::Result<Ready> {
    let id = node.node_id();
    let listen: Vec<Multiaddr> = node
        .overlay()
        .listen_addrs()
        .await
        .context("the overlay stopped while starting")?;
    Ok(Ready {
        peer_id: id.to_string(),
        overlay_addrs: listen
            .iter()
            .map(|a| p2psip_node::control::with_peer_id(a, id))
            .collect(),
        sip_addrs: node
            .sip_addrs()
            .iter()
            .map(|p| format!("{}:{}", p.transport.as_str().to_ascii_lowercase(), p.addr))
            .collect(),
        control_addr: control,
        data_dir: dir.to_path_buf(),
    })
}

fn print_ready(ready: &Ready) {
    println!("p2psip node {} is ready", ready.peer_id);
    println!("  other nodes join with one of:");
    for addr in &ready.overlay_addrs {
        println!("    p2psip node --bootstrap {addr}");
    }
    println!("  softphones register here:");
    for addr in &ready.sip_addrs {
        println!("    {addr}");
    }
    if let Some(sip) = ready.sip_addrs.first() {
        let host = sip.split_once(':').map_or(sip.as_str(), |(_, a)| a);
        println!(
            "    e.g. in baresip's accounts: <sip:alice@p2psip.example>;outbound=\"sip:{host}\";regint=600"
        );
    }
    println!(
        "  control API: {} (p2psip status --data-dir {})",
        ready.control_addr,
        ready.data_dir.display()
    );
    println!("Ctrl-C leaves the overlay.");
    info!(peer_id = %ready.peer_id, "ready");
}
