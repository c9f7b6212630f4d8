//! The commands that talk to a running node through its control API
//! (`p2psip_node::control`): `status`, `peers`, `lookup`, `register`, `unregister`, `call`
//! and `message`. Each finds the node by its data directory (`--data-dir`, or
//! `P2PSIP_DATA_DIR`), so that several nodes can run side by side.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use p2psip_node::control::{CallState, CallUpdate, Client, Reply, Request};
use p2psip_overlay::id::ResourceId;
use p2psip_overlay::network;

use crate::args::{DataDir, Output};

/// `p2psip status`, `p2psip peers`.
#[derive(Debug, clap::Args)]
pub(crate) struct ReadArgs {
    /// Which node.
    #[command(flatten)]
    data_dir: DataDir,
    /// Text or JSON.
    #[command(flatten)]
    output: Output,
}

/// `p2psip lookup AOR`.
#[derive(Debug, clap::Args)]
pub(crate) struct LookupArgs {
    /// The address-of-record, e.g. sip:alice@example.p2p.
    #[arg(value_name = "AOR")]
    aor: String,
    /// Which node.
    #[command(flatten)]
    data_dir: DataDir,
    /// Text or JSON.
    #[command(flatten)]
    output: Output,
}

/// `p2psip register AOR`, `p2psip unregister AOR`.
#[derive(Debug, clap::Args)]
pub(crate) struct AorArgs {
    /// The address-of-record, e.g. sip:alice@example.p2p.
    #[arg(value_name = "AOR")]
    aor: String,
    /// Which node.
    #[command(flatten)]
    data_dir: DataDir,
    /// Text or JSON.
    #[command(flatten)]
    output: Output,
}

/// `p2psip call AOR`.
#[derive(Debug, clap::Args)]
pub(crate) struct CallArgs {
    /// Whom to call: an AOR in the overlay, or a SIP URI outside it
    /// (sip:carol@127.0.0.1:5070).
    #[arg(value_name = "AOR")]
    target: String,
    /// Hang up this many seconds after the answer [default: stay until Ctrl-C].
    #[arg(long, value_name = "SECONDS")]
    duration: Option<f64>,
    /// Which node.
    #[command(flatten)]
    data_dir: DataDir,
    /// Print each step as a JSON line.
    #[command(flatten)]
    output: Output,
}

/// `p2psip message AOR TEXT`.
#[derive(Debug, clap::Args)]
pub(crate) struct MessageArgs {
    /// To whom: an AOR in the overlay, or a SIP URI outside it.
    #[arg(value_name = "AOR")]
    target: String,
    /// The text.
    #[arg(value_name = "TEXT")]
    text: String,
    /// Which node.
    #[command(flatten)]
    data_dir: DataDir,
    /// Text or JSON.
    #[command(flatten)]
    output: Output,
}

/// `p2psip status`.
pub(crate) fn status(args: ReadArgs) -> anyhow::Result<()> {
    let reply = one(&args.data_dir, Request::Status)?;
    let Reply::Status(s) = reply else {
        return Err(unexpected(&reply));
    };
    if args.output.json {
        return print_json(&s);
    }
    println!("Node-ID:        {}", s.peer_id);
    for addr in &s.overlay_addrs {
        println!("overlay:        {addr}");
    }
    println!("SIP:            {}", s.sip_addrs.join(", "));
    println!(
        "peers:          {} in the routing table, {} connected",
        s.routing_table, s.connected
    );
    println!(
        "stored:         {} resources, {} bytes",
        s.stored_resources, s.stored_bytes
    );
    let agent = if s.agent_registrations.is_empty() {
        "none".to_owned()
    } else {
        s.agent_registrations.join(", ")
    };
    println!("agent AORs:     {agent}");
    println!(
        "counters:       {} published, {} refused, {} requests and {} in-dialog over the overlay, {} forwarded",
        s.published, s.refused, s.overlay_requests, s.overlay_in_dialog, s.forwarded
    );
    println!(
        "lookups:        {} in one round trip, {} through a Kademlia lookup",
        s.lookups_one_round_trip, s.lookups_full
    );
    let r = &s.refusals;
    println!(
        "refused:        SIP {} ({} challenged), overlay: {} bad messages, {} bad signatures, \
         {} wrong senders, {} replays, {} stale, {} forged answers, {} busy, {} not a replica, \
         {} rejected entries, {} refused pushes",
        r.sip,
        r.challenged,
        r.bad_messages,
        r.bad_signature,
        r.wrong_sender,
        r.replayed,
        r.stale,
        r.forged_answers,
        r.busy,
        r.not_replica,
        r.rejected_entries,
        r.refused_pushes
    );
    let reachability = match s.nat.reachability {
        network::Reachability::Public => "public (other nodes can dial this one)",
        network::Reachability::Private => "behind NAT (reached through relays)",
        _ => "not known yet (AutoNAT has not answered)",
    };
    println!("reachability:   {reachability}");
    let m = &s.media;
    println!(
        "media:          {} calls now ({} so far), {} packets from and {} to softphones, {} \
         frames out and {} in, {} dropped",
        m.sessions,
        m.sessions_started,
        m.from_softphones,
        m.to_softphones,
        m.frames_sent,
        m.frames_received,
        m.dropped_foreign + m.dropped_full + m.dropped_stale + m.dropped_unknown + m.dropped_unsent
    );
    for addr in &s.nat.external_addrs {
        println!("external:       {addr}");
    }
    for addr in &s.nat.relayed_addrs {
        println!("relayed:        {addr}");
    }
    println!(
        "relay:          {}",
        if s.nat.relay_serving {
            "serving the overlay's nodes behind NAT"
        } else {
            "not serving"
        }
    );
    Ok(())
}

/// `p2psip peers`.
pub(crate) fn peers(args: ReadArgs) -> anyhow::Result<()> {
    let reply = one(&args.data_dir, Request::Peers)?;
    let Reply::Peers { peers } = reply else {
        return Err(unexpected(&reply));
    };
    if args.output.json {
        return print_json(&peers);
    }
    if peers.is_empty() {
        println!("no peers yet: the node is alone (start another with --bootstrap)");
    }
    for peer in &peers {
        let state = match peer.path {
            Some(network::Path::Relayed) => "connected through a relay",
            Some(_) => "connected",
            None => "known",
        };
        println!("{}  {state}", peer.peer_id);
    }
    Ok(())
}

/// `p2psip lookup AOR`.
pub(crate) fn lookup(args: LookupArgs) -> anyhow::Result<()> {
    check_aor(&args.aor)?;
    let reply = one(
        &args.data_dir,
        Request::Lookup {
            aor: args.aor.clone(),
        },
    )?;
    let Reply::Lookup(found) = reply else {
        return Err(unexpected(&reply));
    };
    if found.devices.is_empty() {
        bail!(
            "nobody is registered as {} in the overlay; check the spelling, or register it with \
             `p2psip register {}` or a softphone",
            found.aor,
            found.aor
        );
    }
    if args.output.json {
        return print_json(&found);
    }
    println!(
        "{} ({}), looked up in {:.1} ms",
        found.aor, found.resource, found.elapsed_ms
    );
    for device in &found.devices {
        let hops = device
            .hops
            .map_or_else(|| "unreachable".to_owned(), |h| format!("{h} hop(s)"));
        println!("  at node {} ({hops})", device.node);
        for contact in &device.contacts {
            println!("    {contact}");
        }
    }
    Ok(())
}

/// `p2psip register AOR` and `p2psip unregister AOR`.
pub(crate) fn register(args: AorArgs, register: bool) -> anyhow::Result<()> {
    check_aor(&args.aor)?;
    let request = if register {
        Request::Register {
            aor: args.aor.clone(),
        }
    } else {
        Request::Unregister {
            aor: args.aor.clone(),
        }
    };
    let reply = one(&args.data_dir, request)?;
    if args.output.json {
        return print_json(&reply);
    }
    match reply {
        Reply::Registered {
            aor,
            expires_s,
            elapsed_ms,
        } => {
            println!(
                "registered {aor} in the overlay in {elapsed_ms:.1} ms (kept fresh while the node \
                 runs; {expires_s} s at a time)"
            );
        }
        Reply::Unregistered { aor } => println!("unregistered {aor}"),
        other => return Err(unexpected(&other)),
    }
    Ok(())
}

/// `p2psip message AOR TEXT`.
pub(crate) fn message(args: MessageArgs) -> anyhow::Result<()> {
    check_target(&args.target)?;
    let request = Request::Message {
        target: args.target.clone(),
        text: args.text,
    };
    let reply = one(&args.data_dir, request)?;
    let Reply::Completed {
        status,
        reason,
        elapsed_ms,
    } = &reply
    else {
        return Err(unexpected(&reply));
    };
    if args.output.json {
        print_json(&reply)?;
    } else if (200..300).contains(status) {
        println!(
            "delivered to {} ({status} {reason}) in {elapsed_ms:.1} ms",
            args.target
        );
    }
    if !(200..300).contains(status) {
        bail!("{}", refusal(&args.target, *status, reason));
    }
    Ok(())
}

/// `p2psip call AOR`: shows each step; Ctrl-C hangs up.
pub(crate) fn call(args: CallArgs) -> anyhow::Result<()> {
    check_target(&args.target)?;
    if let Some(d) = args.duration
        && !(d.is_finite() && d >= 0.0)
    {
        bail!("--duration {d} is not a number of seconds; give e.g. --duration 10");
    }
    let dir = args.data_dir.resolve()?;
    runtime()?.block_on(async {
        let request = Request::Call {
            target: args.target.clone(),
            duration_s: args.duration,
        };
        let mut client = Client::connect(&dir, &request).await?;
        let mut hung_up = false;
        loop {
            let next = tokio::select! {
                next = client.next() => next?,
                signal = tokio::signal::ctrl_c(), if !hung_up => {
                    signal.context("cannot wait for Ctrl-C")?;
                    hung_up = true;
                    eprintln!("hanging up...");
                    client.send(&Request::Hangup).await?;
                    continue;
                }
            };
            let Some(reply) = next else {
                bail!("the node closed the call's connection before the call ended; see its log");
            };
            if args.output.json {
                print_json(&reply)?;
            }
            let Reply::Call(update) = reply else {
                return Err(unexpected(&reply));
            };
            if !args.output.json {
                show(&args.target, &update);
            }
            match update.state {
                CallState::Ended => return Ok(()),
                CallState::Failed => {
                    let status = update.status.unwrap_or(500);
                    bail!("{}", refusal(&args.target, status, reason_of(status)));
                }
                _ => {}
            }
        }
    })
}

fn show(target: &str, update: &CallUpdate) {
    let secs = |ms: Option<f64>| ms.map_or_else(String::new, |ms| format!("{:.3} s", ms / 1000.0));
    match update.state {
        CallState::Calling => println!("calling {target}..."),
        CallState::Ringing => println!("ringing (after {})", secs(update.ringing_ms)),
        CallState::Answered => match update.hops {
            Some(hops) => println!(
                "answered (after {}; the INVITE crossed {hops} overlay hop{})",
                secs(update.answered_ms),
                if hops == 1 { "" } else { "s" }
            ),
            None => println!("answered (after {})", secs(update.answered_ms)),
        },
        CallState::Ended => {
            let who = if update.by_peer == Some(true) {
                "they"
            } else {
                "you"
            };
            println!("ended by {who} after {}", secs(update.duration_ms));
        }
        CallState::Failed => {}
    }
}

/// Why a request to `target` failed, with what to do.
fn refusal(target: &str, status: u16, reason: &str) -> String {
    let hint = match status {
        404 => "nobody is registered under that AOR; check the spelling, or ask them to register",
        408 => "nobody answered in time; try again later",
        480 => "it is registered but no device answered; try again later",
        486 | 600 => "they are busy",
        403 => "the node refused it",
        _ => "see the node's log for more",
    };
    format!("{target} answered {status} {reason}: {hint}")
}

fn reason_of(status: u16) -> &'static str {
    p2psip_sip::StatusCode::new(status).map_or("", |s| s.canonical_reason())
}

/// One request, one reply; an error reply becomes the error.
fn one(data_dir: &DataDir, request: Request) -> anyhow::Result<Reply> {
    let dir = data_dir.resolve()?;
    runtime()?.block_on(ask(&dir, request))
}

async fn ask(dir: &Path, request: Request) -> anyhow::Result<Reply> {
    let mut client = Client::connect(dir, &request).await?;
    let reply = tokio::time::timeout(Duration::from_secs(60), client.next())
        .await
        .map_err(|_| anyhow!("the node did not answer within 60 s; see its log"))??;
    match reply {
        Some(Reply::Error { message }) => Err(anyhow!(message)),
        Some(reply) => Ok(reply),
        None => bail!("the node closed the connection without an answer; see its log"),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// An AOR the overlay can store: refused here, before any node is asked.
fn check_aor(aor: &str) -> anyhow::Result<()> {
    ResourceId::for_aor(aor).map(drop).map_err(|e| {
        anyhow!("`{aor}` is not an address-of-record ({e}); write one like sip:alice@example.p2p")
    })
}

/// A call or MESSAGE target: an AOR, or any SIP URI.
fn check_target(target: &str) -> anyhow::Result<()> {
    p2psip_sip::Uri::parse(target).map(drop).map_err(|_| {
        anyhow!(
            "`{target}` is not a SIP URI; write an AOR like sip:bob@example.p2p or an address \
             like sip:carol@127.0.0.1:5070"
        )
    })
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!(
        "{}",
        serde_json::to_string(value).context("cannot encode JSON")?
    );
    Ok(())
}

fn unexpected(reply: &Reply) -> anyhow::Error {
    match reply {
        Reply::Error { message } => anyhow!("{message}"),
        other => anyhow!(
            "the node answered something unexpected ({other:?}); is it the same p2psip version?"
        ),
    }
}
