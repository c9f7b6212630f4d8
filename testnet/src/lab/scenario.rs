//! The scenario behind `p2psip testnet run --lab`: real `p2psip node` processes on the hosts
//! of a [`Lab`], a public relay and one host behind each kind of NAT, whose built-in agents
//! register and call each other; measured into a [`report::Run`] whose nodes name their host
//! and NAT and whose calls name the path between their nodes.
//!
//! # The scenario
//!
//! 1. A lab: [`RELAY`] on the internet, and one host per kind of [`Plan::nats`], named after
//!    it (`full-cone`, `symmetric`...).
//! 2. The relay's node (QUIC on UDP 4001, relay on), then the hosts' nodes together, each
//!    bootstrapping from the relay's public address, without mDNS (dual-stack hosts listen
//!    on IPv6 too), each with SIP on its host's 127.0.0.1:5060. Then each waits, at most
//!    [`Plan::settle`], for AutoNAT's verdict as its NAT should give it: public without NAT or
//!    behind a full cone (any peer can dial it back), otherwise private with a relayed
//!    address (a reservation at the relay). A node that does not start or settle fails the
//!    run.
//! 3. Each host's built-in agent registers `sip:<host>@lab.p2p`, all at once, through the
//!    control API's `register` (from a thread inside the host: the node's control port is on
//!    its loopback). The RRD is the agent's own, in the reply: from the REGISTER sent to its
//!    200, which the node sends once the registration is stored in the overlay.
//! 4. [`Plan::rounds`] rounds of calls: in each, every ordered pair of distinct hosts calls
//!    once, in n - 1 steps (n hosts) where host i calls host i + k (mod n) at the same time
//!    for k = 1 ... n - 1, so every host is in two calls at once, one out and one in. A call
//!    is the control API's `call` (as `p2psip call --duration`): held for
//!    [`Plan::call_duration`] once answered, then hung up; SRD and setup delay are the
//!    agent's own timings (INVITE to 180, to 200). A call not over within
//!    [`Plan::call_timeout`] plus its hold time is hung up and counts as failed. Right after
//!    it the caller's node is asked how it reaches the callee's node now (`p2psip peers`:
//!    direct or relayed). The call's hops are those of its INVITE, as the caller's node noted
//!    them and told in the call's updates (the control API's `hops`): the overlay links the
//!    Route message that carried the INVITE crossed.
//!
//! Nothing sleeps to wait for something: every wait polls for a condition or reads a reply,
//! with a deadline. Dropping the lab at the end kills every node and removes the
//! namespaces, on failure too.

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use p2psip_node::control::{CallState, Client, Reply, Request};
use p2psip_overlay::network::Path as NodePath;
use serde_json::Value;

use super::{Host, Lab, Nat, NodeProcess, SIP};
use crate::report::{self, CallSample, LabHost, NodeInfo, RegistrationSample, Report};

/// The name of the public host whose node is the relay and bootstrap of the others.
pub const RELAY: &str = "relay";
/// The domain of the users' addresses of record: `sip:<host>@lab.p2p`.
pub const DOMAIN: &str = "lab.p2p";
/// The NAT kinds of the default plan, one host each.
pub const NATS: [Nat; 5] = [
    Nat::FullCone,
    Nat::PortRestricted,
    Nat::Symmetric,
    Nat::Cgnat,
    Nat::DualStack,
];
/// The most rounds of calls a run places.
pub const MAX_ROUNDS: usize = 100;
/// The longest hold time of a call.
pub const MAX_CALL_DURATION: Duration = Duration::from_secs(600);
/// How long a registration may take.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(30);

/// What a lab run does.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Plan {
    /// The `p2psip` program the nodes run (the command line runs itself:
    /// `std::env::current_exe()`).
    pub program: PathBuf,
    /// One host per kind, in this order, each with its node and its user. At least two,
    /// distinct, none [`Nat::Public`] (the relay is the public host). Default [`NATS`].
    pub nats: Vec<Nat>,
    /// Rounds of calls; each places one call per ordered pair of distinct hosts. Default 1.
    pub rounds: usize,
    /// How long an answered call is held before the caller hangs up. Default 1 s.
    pub call_duration: Duration,
    /// How long a call may take to be over, beyond its hold time. Default 30 s.
    pub call_timeout: Duration,
    /// How long a node may take to start, and then to get AutoNAT's verdict and its relayed
    /// address. Default 60 s.
    pub settle: Duration,
}

impl Plan {
    /// The default plan with `program` as the nodes' program.
    pub fn new(program: impl Into<PathBuf>) -> Plan {
        Plan {
            program: program.into(),
            nats: NATS.to_vec(),
            rounds: 1,
            call_duration: Duration::from_secs(1),
            call_timeout: Duration::from_secs(30),
            settle: Duration::from_secs(60),
        }
    }

    /// The plan with `rounds` rounds of calls.
    pub fn rounds(mut self, rounds: usize) -> Plan {
        self.rounds = rounds;
        self
    }

    /// The plan with calls held for `duration`.
    pub fn call_duration(mut self, duration: Duration) -> Plan {
        self.call_duration = duration;
        self
    }

    /// Refuses a plan that cannot run, with a sentence that says what to change.
    pub fn validate(&self) -> Result<()> {
        ensure!(
            (1..=MAX_ROUNDS).contains(&self.rounds),
            "{} rounds of calls: give 1 to {MAX_ROUNDS} with --calls",
            self.rounds
        );
        ensure!(
            self.call_duration <= MAX_CALL_DURATION,
            "calls held for {:?}: at most {MAX_CALL_DURATION:?}",
            self.call_duration
        );
        ensure!(
            self.nats.len() >= 2,
            "the lab needs at least two hosts behind NATs to call across them"
        );
        for (i, nat) in self.nats.iter().enumerate() {
            ensure!(
                *nat != Nat::Public,
                "`public` is the relay's host; give the NAT kinds of the other hosts"
            );
            ensure!(
                !self.nats[..i].contains(nat),
                "{nat} is twice in the lab's NAT kinds; one host per kind"
            );
        }
        Ok(())
    }

    /// How many calls the plan places.
    pub fn calls(&self) -> usize {
        let hosts = self.nats.len();
        self.rounds * hosts * hosts.saturating_sub(1)
    }
}

/// How far a lab run has got, for the terminal.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Progress {
    /// The lab's namespaces and NATs are up.
    Built {
        /// Its hosts.
        hosts: usize,
    },
    /// `started` of the `of` nodes are ready.
    Started {
        /// How many are ready.
        started: usize,
        /// How many there are.
        of: usize,
    },
    /// A node got AutoNAT's verdict.
    Settled {
        /// Its host.
        host: String,
        /// Its host's NAT.
        nat: Nat,
        /// The verdict: `public` or `private`.
        reachability: String,
        /// How many relayed addresses it holds.
        relayed_addrs: usize,
    },
    /// Every user's registration has an outcome.
    Registered {
        /// How many users.
        of: usize,
        /// How many registrations failed.
        failed: usize,
    },
    /// `done` of the `of` calls are over.
    Calls {
        /// How many are over.
        done: usize,
        /// How many are placed in all.
        of: usize,
        /// How many of the `done` failed.
        failed: usize,
    },
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Progress::Built { hosts } => write!(f, "network lab up: {hosts} hosts"),
            Progress::Started { started, of } => write!(f, "nodes started {started}/{of}"),
            Progress::Settled {
                host,
                nat,
                reachability,
                relayed_addrs,
            } => {
                // The hosts are named after their NAT; say it once then.
                if host.as_str() == nat.name() {
                    write!(f, "{host}: ")?;
                } else {
                    write!(f, "{host} ({nat}): ")?;
                }
                write!(
                    f,
                    "AutoNAT says {reachability}, {relayed_addrs} relayed addresses"
                )
            }
            Progress::Registered { of, failed } => {
                write!(f, "users registered {}/{of}", of - failed)
            }
            Progress::Calls { done, of, failed } => {
                write!(f, "calls {done}/{of} ({failed} failed)")
            }
        }
    }
}

/// Whether this process runs as root, which the lab needs (network namespaces, nftables).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Runs the scenario of the [module docs](self): builds the lab, starts the nodes, registers
/// the users, places the calls, and returns what was measured with its figures. Blocking:
/// it waits for processes and threads (call it outside an async runtime, or in
/// `spawn_blocking`).
pub fn run(plan: &Plan, progress: &mut dyn FnMut(Progress)) -> Result<(report::Run, Report)> {
    plan.validate()?;
    super::check()?;
    let started = Instant::now();
    let mut builder = Lab::builder().public_host(RELAY);
    for nat in &plan.nats {
        builder = builder.host(nat.name(), *nat);
    }
    let lab = builder.build().context("could not build the network lab")?;
    progress(Progress::Built {
        hosts: lab.hosts().len(),
    });
    let site = Site::start(&lab, plan, progress)?;
    let mut run = report::Run {
        nodes: site.nodes(),
        ..report::Run::default()
    };
    run.registrations = site.register();
    progress(Progress::Registered {
        of: run.registrations.len(),
        failed: run.registrations.iter().filter(|r| !r.ok).count(),
    });
    run.calls = site.calls(plan, progress);
    run.elapsed = started.elapsed();
    drop(site);
    drop(lab);
    let report = Report::from_run(&run);
    Ok((run, report))
}

/// The lab's nodes: the relay's, then one per NAT host (their index in the report is their
/// place here plus one).
struct Site<'a> {
    relay: NodeProcess,
    hosts: Vec<Member<'a>>,
}

/// A NAT host with its node.
struct Member<'a> {
    host: &'a Host,
    node: NodeProcess,
    /// AutoNAT's verdict once settled.
    reachability: String,
}

impl Member<'_> {
    fn aor(&self) -> String {
        format!("sip:{}@{DOMAIN}", self.host.name())
    }
}

impl<'a> Site<'a> {
    /// Starts the relay's node, then the others together; waits for AutoNAT's verdicts.
    fn start(lab: &'a Lab, plan: &Plan, progress: &mut dyn FnMut(Progress)) -> Result<Site<'a>> {
        let of = plan.nats.len() + 1;
        let relay_host = lab.host(RELAY)?;
        let (relay, bootstrap) =
            NodeProcess::start_relay(relay_host, &plan.program, RELAY, plan.settle)?;
        progress(Progress::Started { started: 1, of });
        let hosts: Vec<&Host> = plan
            .nats
            .iter()
            .map(|nat| lab.host(nat.name()))
            .collect::<Result<_>>()?;
        let nodes = std::thread::scope(|scope| {
            let starting: Vec<_> = hosts
                .iter()
                .map(|host| {
                    let bootstrap = &bootstrap;
                    scope.spawn(move || {
                        NodeProcess::start_joining(host, &plan.program, bootstrap, plan.settle)
                    })
                })
                .collect();
            starting
                .into_iter()
                .map(|thread| {
                    thread
                        .join()
                        .unwrap_or_else(|_| Err(anyhow!("a node's start panicked")))
                })
                .collect::<Vec<_>>()
        });
        let mut members = Vec::new();
        for (host, node) in hosts.into_iter().zip(nodes) {
            members.push(Member {
                host,
                node: node?,
                reachability: String::new(),
            });
        }
        progress(Progress::Started { started: of, of });
        let verdicts = std::thread::scope(|scope| {
            let waiting: Vec<_> = members
                .iter()
                .map(|member| {
                    scope.spawn(move || {
                        let nat = member.host.nat();
                        member
                            .node
                            .wait_status(plan.settle, "AutoNAT's verdict", |s| settled(s, nat))
                    })
                })
                .collect();
            waiting
                .into_iter()
                .map(|thread| {
                    thread
                        .join()
                        .unwrap_or_else(|_| Err(anyhow!("a wait for AutoNAT panicked")))
                })
                .collect::<Vec<_>>()
        });
        for (member, status) in members.iter_mut().zip(verdicts) {
            let status = status?;
            let nat = &status["nat"];
            member.reachability = nat["reachability"].as_str().unwrap_or("unknown").to_owned();
            progress(Progress::Settled {
                host: member.host.name().to_owned(),
                nat: member.host.nat(),
                reachability: member.reachability.clone(),
                relayed_addrs: nat["relayed_addrs"].as_array().map_or(0, Vec::len),
            });
        }
        Ok(Site {
            relay,
            hosts: members,
        })
    }

    /// The nodes as the report lists them: the relay 0, the hosts from 1.
    fn nodes(&self) -> Vec<NodeInfo> {
        let relay = NodeInfo {
            index: 0,
            node_id: self.relay.peer_id().to_owned(),
            sip_addr: SIP.to_owned(),
            host: Some(LabHost {
                name: RELAY.to_owned(),
                nat: Nat::Public,
                reachability: "public".to_owned(),
            }),
        };
        let hosts = self.hosts.iter().enumerate().map(|(i, member)| NodeInfo {
            index: i + 1,
            node_id: member.node.peer_id().to_owned(),
            sip_addr: SIP.to_owned(),
            host: Some(LabHost {
                name: member.host.name().to_owned(),
                nat: member.host.nat(),
                reachability: member.reachability.clone(),
            }),
        });
        std::iter::once(relay).chain(hosts).collect()
    }

    /// Every host's agent registers its user, all at once.
    fn register(&self) -> Vec<RegistrationSample> {
        std::thread::scope(|scope| {
            let registering: Vec<_> = self
                .hosts
                .iter()
                .enumerate()
                .map(|(i, member)| {
                    scope.spawn(move || {
                        let aor = member.aor();
                        let start = Instant::now();
                        let outcome = inside(member.host, register(member.node.data_dir(), &aor));
                        let (ok, rrd, error) = match outcome {
                            Ok(rrd) => (true, rrd, None),
                            Err(e) => (false, start.elapsed(), Some(format!("{e:#}"))),
                        };
                        RegistrationSample {
                            user: aor,
                            node: i + 1,
                            ok,
                            rrd,
                            error,
                        }
                    })
                })
                .collect();
            registering
                .into_iter()
                .map(|thread| {
                    thread.join().unwrap_or_else(|_| RegistrationSample {
                        user: String::new(),
                        node: 0,
                        ok: false,
                        rrd: Duration::ZERO,
                        error: Some("the registration's thread panicked".to_owned()),
                    })
                })
                .collect()
        })
    }

    /// The rounds of calls (see the module docs), in the order they were placed.
    fn calls(&self, plan: &Plan, progress: &mut dyn FnMut(Progress)) -> Vec<CallSample> {
        let n = self.hosts.len();
        let of = plan.calls();
        let mut samples = Vec::with_capacity(of);
        for _ in 0..plan.rounds {
            for shift in 1..n {
                let step: Vec<CallSample> = std::thread::scope(|scope| {
                    let calling: Vec<_> = (0..n)
                        .map(|from| {
                            let to = (from + shift) % n;
                            scope.spawn(move || self.call(plan, from, to))
                        })
                        .collect();
                    calling
                        .into_iter()
                        .zip(0..n)
                        .map(|(thread, from)| {
                            thread.join().unwrap_or_else(|_| {
                                failed_call(from + 1, (from + shift) % n + 1, "the call panicked")
                            })
                        })
                        .collect()
                });
                samples.extend(step);
                progress(Progress::Calls {
                    done: samples.len(),
                    of,
                    failed: samples.iter().filter(|c| !c.ok).count(),
                });
            }
        }
        samples
    }

    /// One call from host `from` to host `to` (places in `hosts`), then the path between their
    /// nodes.
    fn call(&self, plan: &Plan, from: usize, to: usize) -> CallSample {
        let (caller, callee) = (&self.hosts[from], &self.hosts[to]);
        let target = callee.aor();
        let limit = plan.call_duration + plan.call_timeout;
        let placed = inside(
            caller.host,
            call(caller.node.data_dir(), &target, plan.call_duration, limit),
        );
        let mut sample = match placed {
            Ok(sample) => sample,
            Err(e) => failed_call(0, 0, &format!("{e:#}")),
        };
        sample.from_node = from + 1;
        sample.to_node = to + 1;
        sample.path = caller
            .node
            .path_to(callee.node.peer_id())
            .ok()
            .flatten()
            .and_then(|path| serde_json::from_value::<NodePath>(Value::String(path)).ok());
        sample
    }
}

/// AutoNAT has answered as a host behind `nat` should see it: public without NAT or behind a
/// full cone (which any peer can dial back), otherwise private with a relayed address.
pub fn settled(status: &Value, nat: Nat) -> bool {
    let reachability = &status["nat"]["reachability"];
    let relayed = status["nat"]["relayed_addrs"]
        .as_array()
        .is_some_and(|a| !a.is_empty());
    match nat {
        // Any peer can dial a full cone back.
        Nat::Public | Nat::DualStack | Nat::FullCone => reachability == "public",
        _ => reachability == "private" && relayed,
    }
}

/// Runs `future` to its end on a runtime of its own, on a thread inside `host` (where its
/// node's control port is on the loopback).
fn inside<T: Send>(host: &Host, future: impl Future<Output = Result<T>> + Send) -> Result<T> {
    host.run(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start an async runtime")?
            .block_on(future)
    })?
}

/// Registers `aor` through the agent of the node of `data_dir`; the registration request
/// delay the node's agent measured.
async fn register(data_dir: &Path, aor: &str) -> Result<Duration> {
    let start = tokio::time::Instant::now();
    let request = Request::Register {
        aor: aor.to_owned(),
    };
    let reply = tokio::time::timeout(REGISTER_TIMEOUT, async {
        let mut client = Client::connect(data_dir, &request).await?;
        client.next().await
    })
    .await
    .map_err(|_| anyhow!("no answer to the registration within {REGISTER_TIMEOUT:?}"))??;
    match reply {
        // The node's own RRD (REGISTER sent to its 200); the wall clock around the request
        // if it has none.
        Some(Reply::Registered { elapsed_ms, .. })
            if elapsed_ms.is_finite() && elapsed_ms >= 0.0 =>
        {
            Ok(Duration::from_secs_f64(elapsed_ms / 1000.0))
        }
        Some(Reply::Registered { .. }) => Ok(start.elapsed()),
        Some(Reply::Error { message }) => bail!("{message}"),
        other => bail!("the node answered the registration with {other:?}"),
    }
}

/// A call from the agent of the node of `data_dir` to `target`, held for `hold`, over within
/// `limit`; the sample has no nodes nor path yet (its hops are those of the INVITE, from the
/// call's updates).
async fn call(
    data_dir: &Path,
    target: &str,
    hold: Duration,
    limit: Duration,
) -> Result<CallSample> {
    let mut sample = failed_call(0, 0, "the call did not end");
    let request = Request::Call {
        target: target.to_owned(),
        duration_s: Some(hold.as_secs_f64()),
    };
    let mut client = Client::connect(data_dir, &request).await?;
    let over = tokio::time::timeout(limit, async {
        while let Some(reply) = client.next().await? {
            let update = match reply {
                Reply::Call(update) => update,
                Reply::Error { message } => {
                    sample.error = Some(message);
                    return Ok(());
                }
                other => bail!("the node answered the call with {other:?}"),
            };
            let ms = |ms: Option<f64>| ms.map(|ms| Duration::from_secs_f64(ms / 1000.0));
            sample.srd = sample.srd.or(ms(update.ringing_ms));
            sample.hops = sample.hops.or(update.hops.map(u32::from));
            sample.setup = sample.setup.or(ms(update.answered_ms));
            match update.state {
                CallState::Answered => {
                    // The agent reports a 2xx as answered; its own answers are 200.
                    sample.ok = true;
                    sample.status = Some(200);
                    sample.error = None;
                }
                CallState::Ended => return Ok(()),
                CallState::Failed => {
                    sample.status = update.status;
                    sample.error = Some(match update.status {
                        Some(status) => format!("the call failed with {status}"),
                        None => "the call failed without a final response".to_owned(),
                    });
                    return Ok(());
                }
                CallState::Calling | CallState::Ringing => {}
            }
        }
        bail!("the node closed the call's connection before the call ended")
    })
    .await;
    match over {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            sample.ok = false;
            sample.error = Some(format!("{e:#}"));
        }
        Err(_) => {
            // Dropping the connection hangs the call up.
            sample.ok = false;
            sample.error = Some(format!("the call was not over within {limit:?}"));
        }
    }
    Ok(sample)
}

/// A call from node `from` to node `to` that failed with `error`.
fn failed_call(from: usize, to: usize, error: &str) -> CallSample {
    CallSample {
        from_node: from,
        to_node: to,
        ok: false,
        srd: None,
        setup: None,
        status: None,
        hops: None,
        path: None,
        error: Some(error.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_plan_calls_every_ordered_pair_of_five_nat_hosts_once() {
        let plan = Plan::new("p2psip");
        plan.validate().unwrap();
        assert_eq!(plan.calls(), 20);
        assert_eq!(plan.clone().rounds(3).calls(), 60);
    }

    #[test]
    fn plans_that_cannot_run_are_refused_with_what_to_change() {
        let zero = Plan::new("p2psip").rounds(0).validate().unwrap_err();
        assert!(zero.to_string().contains("--calls"), "{zero}");
        let mut twice = Plan::new("p2psip");
        twice.nats = vec![Nat::Symmetric, Nat::Symmetric];
        assert!(twice.validate().unwrap_err().to_string().contains("twice"));
        let mut public = Plan::new("p2psip");
        public.nats = vec![Nat::Public, Nat::Symmetric];
        assert!(public.validate().is_err());
        let mut alone = Plan::new("p2psip");
        alone.nats = vec![Nat::Symmetric];
        assert!(alone.validate().is_err());
        let long = Plan::new("p2psip").call_duration(Duration::from_secs(601));
        assert!(long.validate().is_err());
    }

    #[test]
    fn autonat_has_settled_as_the_nat_says() {
        let public = serde_json::json!({"nat": {"reachability": "public", "relayed_addrs": []}});
        let private = serde_json::json!({"nat": {"reachability": "private", "relayed_addrs": []}});
        let relayed =
            serde_json::json!({"nat": {"reachability": "private", "relayed_addrs": ["/x"]}});
        assert!(settled(&public, Nat::FullCone));
        assert!(settled(&public, Nat::DualStack));
        assert!(!settled(&private, Nat::FullCone));
        assert!(!settled(&private, Nat::Symmetric));
        assert!(settled(&relayed, Nat::Symmetric));
        assert!(settled(&relayed, Nat::Cgnat));
        assert!(!settled(&public, Nat::PortRestricted));
    }
}
