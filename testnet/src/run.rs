//! The scenario behind `p2psip testnet run`: start a testnet, register users at random nodes,
//! place calls between random pairs of them, optionally kill and restart a share of the nodes
//! while the calls go, and measure it all into a [`report::Run`].
//!
//! # The scenario
//!
//! 1. [`Testnet::start_with_progress`] starts [`Plan::nodes`] nodes, then [`Testnet::settle`]
//!    waits for their routing tables.
//! 2. Each of the [`Plan::users`] users, `sip:user<i>@testnet.p2p`, gets a built-in user agent
//!    ([`Agent::for_node`], auto-answering) at a node drawn at random, and registers through
//!    it, [`REGISTER_CONCURRENCY`] at a time. The RRD is the time from the register command
//!    to the agent's `Registered` (or its failure).
//! 3. [`Plan::calls`] calls, [`Plan::concurrency`] in flight, each between two distinct users
//!    drawn among those whose registration succeeded. SRD and setup delay are the agent's own
//!    timings of the call (INVITE sent to 180, to 200). A call that is not up within
//!    [`Plan::call_timeout`] is hung up (cancelled) and counts as failed, with the status of
//!    its final response when one came. A call that is up is held for
//!    [`Plan::call_duration`], hung up, and its end awaited for at most [`HANGUP_TIMEOUT`].
//!    The hops of a call are those of its INVITE's real path: how many overlay links the
//!    Route message that carried the INVITE from the caller's node to the callee's crossed,
//!    as the caller's node noted it under the call's Call-ID ([`Node::invite_hops`]): 0 when
//!    both users are at the same node (the INVITE never entered the overlay), 1 when the
//!    caller's node sent it straight to the callee's node, one more for each node between.
//!    `None` when the INVITE never reached the callee's node (a failed lookup, a node down)
//!    or the caller's node was restarted since; a failed call whose INVITE did get there has
//!    its hops too.
//! 4. With [`Plan::churn_percent`], ⌈percent · nodes / 100⌉ nodes drawn at random (never
//!    node 0, the bootstrap) are killed one after another while calls `C/4` to `C/2` are
//!    placed and restarted in the same order while calls `C/2` to `3C/4` are: each is down for
//!    about a quarter of the calls, and at half of the calls all of them are down. Calls to
//!    and from users at a node that is down fail; that is what churn measures.
//!
//! # Agents of a restarted node
//!
//! A restarted node keeps its Node-ID and data but gets new SIP ports, and an agent is bound
//! to its node's SIP address. So once a node is back, the runner starts new agents for the
//! (callable) users at that node and registers them again, as a phone whose proxy came back
//! would; these REGISTERs are samples of the run like the first ones. Calls already in flight
//! keep their old agent until they end. A user whose new registration fails stays among the
//! callable users: its calls fail, and count.
//!
//! # Randomness and bounds
//!
//! Every random choice (the users' nodes, the call pairs, the churned nodes, the agents'
//! seeds) comes from one SplitMix64 generator seeded with [`Plan::seed`] (or the clock), and
//! the seed is in the report: two runs with the same plan and seed make the same choices
//! (their timings differ). Everything waits for an event with a deadline; the only sleep is a
//! call's hold time.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Result, bail};
use bytes::Bytes;
use futures::stream::StreamExt as _;
use libp2p::PeerId;
use p2psip_node::agent::{self, Agent};
#[cfg(doc)]
use p2psip_node::p2p::Node;
use p2psip_sip::Transport;
use p2psip_sip::ua::{Call, Event};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{Instrument as _, debug, info, info_span, warn};

use crate::report::{self, CallSample, NodeInfo, RegistrationSample, Report};
use crate::{Options, Testnet};

/// The domain of the users' addresses of record.
pub const DOMAIN: &str = "testnet.p2p";
/// The most nodes a run starts.
pub const MAX_NODES: usize = 256;
/// The most users a run registers: each is a user agent with its own sockets.
pub const MAX_USERS: usize = 1_000;
/// The most calls a run places.
pub const MAX_CALLS: usize = 100_000;
/// The largest churn, in percent of the nodes.
pub const MAX_CHURN_PERCENT: u8 = 50;
/// The most calls in flight at once.
pub const MAX_CONCURRENCY: usize = 256;
/// The longest hold time of a call.
pub const MAX_CALL_DURATION: Duration = Duration::from_secs(600);
/// The shortest and the longest [`Plan::call_timeout`].
pub const CALL_TIMEOUT_RANGE: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(120));
/// How many registrations are under way at once.
pub const REGISTER_CONCURRENCY: usize = 8;
/// How long a registration may wait for its outcome: longer than the agent's own REGISTER
/// transaction timeout (64·T1 = 32 s), so a silent registrar gives the agent's 408.
pub const REGISTER_TIMEOUT: Duration = Duration::from_secs(35);
/// How long a hung-up call may take to end (its BYE answered).
pub const HANGUP_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the users' registrations last (the agents refresh them at half of it).
const REGISTER_EXPIRES: u32 = 3600;
/// How long the testnet may take to settle: this, plus [`SETTLE_PER_NODE`] per node.
const SETTLE_BASE: Duration = Duration::from_secs(30);
/// See [`SETTLE_BASE`].
const SETTLE_PER_NODE: Duration = Duration::from_millis(500);
/// The first RTP port the agents' SDP offers name (nothing listens there: no media flows).
const FIRST_RTP_PORT: u16 = 40_000;

/// What a run does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// How many nodes the testnet has, 2 to [`MAX_NODES`]. Default 16.
    pub nodes: usize,
    /// How many users register, 2 to [`MAX_USERS`]. Default 32.
    pub users: usize,
    /// How many calls are placed, at most [`MAX_CALLS`]. Default 100.
    pub calls: usize,
    /// The share of the nodes killed and restarted while the calls are placed, in percent, at
    /// most [`MAX_CHURN_PERCENT`]. Default 0.
    pub churn_percent: u8,
    /// The seed of the run's random choices; `None` takes one from the clock. Default `None`.
    pub seed: Option<u64>,
    /// How long a call that was set up is held before the caller hangs up, at most
    /// [`MAX_CALL_DURATION`]. Default 200 ms.
    pub call_duration: Duration,
    /// How long a call may take to be set up before it is cancelled and counted as failed,
    /// within [`CALL_TIMEOUT_RANGE`]. Default 15 s.
    pub call_timeout: Duration,
    /// How many calls are in flight at once, 1 to [`MAX_CONCURRENCY`]. Default 8.
    pub concurrency: usize,
}

impl Default for Plan {
    fn default() -> Plan {
        Plan {
            nodes: 16,
            users: 32,
            calls: 100,
            churn_percent: 0,
            seed: None,
            call_duration: Duration::from_millis(200),
            call_timeout: Duration::from_secs(15),
            concurrency: 8,
        }
    }
}

impl Plan {
    /// Checks the plan's bounds; the error is a sentence for the user.
    pub fn validate(&self) -> Result<()> {
        if !(2..=MAX_NODES).contains(&self.nodes) {
            bail!("a run needs 2 to {MAX_NODES} nodes, not {}", self.nodes);
        }
        if !(2..=MAX_USERS).contains(&self.users) {
            bail!(
                "a run needs 2 to {MAX_USERS} users (each is a user agent in this process), not {}",
                self.users
            );
        }
        if self.calls > MAX_CALLS {
            bail!("a run places at most {MAX_CALLS} calls, not {}", self.calls);
        }
        if self.churn_percent > MAX_CHURN_PERCENT {
            bail!(
                "churn can be at most {MAX_CHURN_PERCENT}% of the nodes, not {}%",
                self.churn_percent
            );
        }
        if !(1..=MAX_CONCURRENCY).contains(&self.concurrency) {
            bail!(
                "1 to {MAX_CONCURRENCY} calls can be in flight at once, not {}",
                self.concurrency
            );
        }
        if self.call_duration > MAX_CALL_DURATION {
            bail!(
                "a call can be held for at most {} s, not {:?}",
                MAX_CALL_DURATION.as_secs(),
                self.call_duration
            );
        }
        let (shortest, longest) = CALL_TIMEOUT_RANGE;
        if !(shortest..=longest).contains(&self.call_timeout) {
            bail!(
                "the call timeout must be {} s to {} s, not {:?}",
                shortest.as_secs(),
                longest.as_secs(),
                self.call_timeout
            );
        }
        Ok(())
    }

    /// How many nodes the churn kills and restarts: ⌈percent · nodes / 100⌉.
    pub fn churned_nodes(&self) -> usize {
        (usize::from(self.churn_percent) * self.nodes).div_ceil(100)
    }
}

/// How far a run has got, for the terminal.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Progress {
    /// The run's seed, before anything else: the same plan with this seed makes the same
    /// random choices.
    Seed {
        /// The seed.
        seed: u64,
    },
    /// `started` of the `of` nodes run.
    Starting {
        /// How many nodes run.
        started: usize,
        /// How many the testnet has.
        of: usize,
    },
    /// Every node's routing table is full enough.
    Settled {
        /// From the start of the run.
        elapsed: Duration,
    },
    /// `done` of the `of` users' first registrations have an outcome.
    Registered {
        /// How many have an outcome.
        done: usize,
        /// How many users there are.
        of: usize,
        /// How many of the `done` failed.
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
    /// A node was killed.
    Killed {
        /// Its index.
        node: usize,
    },
    /// A node was restarted, and its users registered again through it.
    Restarted {
        /// Its index.
        node: usize,
        /// How many users registered again.
        users: usize,
        /// How many of them succeeded.
        registered: usize,
    },
    /// A killed node did not start again; it stays down for the rest of the run.
    RestartFailed {
        /// Its index.
        node: usize,
        /// Why.
        error: String,
    },
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Progress::Seed { seed } => write!(f, "seed {seed}"),
            Progress::Starting { started, of } => write!(f, "nodes started {started}/{of}"),
            Progress::Settled { elapsed } => {
                write!(f, "testnet settled after {:.1} s", elapsed.as_secs_f64())
            }
            Progress::Registered { done, of, failed } => {
                write!(f, "users registered {done}/{of} ({failed} failed)")
            }
            Progress::Calls { done, of, failed } => {
                write!(f, "calls done {done}/{of} ({failed} failed)")
            }
            Progress::Killed { node } => write!(f, "node {node} killed"),
            Progress::Restarted {
                node,
                users,
                registered,
            } => write!(
                f,
                "node {node} restarted; {registered}/{users} of its users registered again"
            ),
            Progress::RestartFailed { node, error } => {
                write!(f, "node {node} did not restart: {error}")
            }
        }
    }
}

/// Runs `plan` on a new testnet set up with `options`, telling `progress` how far it got;
/// gives what was measured and the figures computed from it. The testnet is shut down and the
/// agents stopped before it returns, error or not.
pub async fn run(
    plan: &Plan,
    options: Options,
    progress: &mut dyn FnMut(Progress),
) -> Result<(report::Run, Report)> {
    plan.validate()?;
    let seed = plan.seed.unwrap_or_else(clock_seed);
    progress(Progress::Seed { seed });
    info!(seed, ?plan, "testnet run");
    let started = Instant::now();
    let mut testnet = Testnet::start_with_progress(plan.nodes, options, |started, of| {
        progress(Progress::Starting { started, of });
    })
    .await?;
    let outcome = Scenario::new(plan, seed)
        .play(&mut testnet, started, progress)
        .await;
    testnet.shutdown().await;
    let mut run = outcome?;
    run.elapsed = started.elapsed();
    let report = Report::from_run(&run);
    Ok((run, report))
}

/// One user: its AOR, its node and its agent.
struct User {
    aor: String,
    /// The index of the node its agent uses.
    node: usize,
    /// `None` when the agent could not be started.
    agent: Option<Agent>,
}

/// What a churn step does.
#[derive(Debug, Clone, Copy)]
enum Step {
    Kill(usize),
    Restart(usize),
}

/// The state of a run between its steps.
struct Scenario<'p> {
    plan: &'p Plan,
    rng: Rng,
    run: report::Run,
    users: Vec<User>,
    /// The users whose first registration succeeded: the calls are between them.
    callable: Vec<usize>,
    /// The Node-IDs of the nodes, by index (a restarted node keeps its own).
    node_ids: Vec<PeerId>,
    /// How many calls were placed.
    placed: usize,
    /// How many calls are over, and how many of those failed.
    done: usize,
    failed: usize,
}

impl<'p> Scenario<'p> {
    fn new(plan: &'p Plan, seed: u64) -> Scenario<'p> {
        Scenario {
            plan,
            rng: Rng(seed),
            run: report::Run {
                seed,
                churn: report::Churn {
                    percent: plan.churn_percent,
                    ..report::Churn::default()
                },
                ..report::Run::default()
            },
            users: Vec::new(),
            callable: Vec::new(),
            node_ids: Vec::new(),
            placed: 0,
            done: 0,
            failed: 0,
        }
    }

    async fn play(
        mut self,
        testnet: &mut Testnet,
        started: Instant,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<report::Run> {
        let settle = SETTLE_BASE + SETTLE_PER_NODE * u32::try_from(self.plan.nodes)?;
        testnet.settle(settle).await?;
        progress(Progress::Settled {
            elapsed: started.elapsed(),
        });
        for i in 0..testnet.len() {
            let Some(node) = testnet.peer(i) else {
                bail!("node {i} stopped before the run began");
            };
            self.node_ids.push(node.node_id());
            self.run.nodes.push(NodeInfo {
                index: i,
                node_id: node.node_id().to_string(),
                sip_addr: sip_addr(testnet, i).map_or_else(String::new, |a| a.to_string()),
                host: None,
            });
        }

        self.register_users(testnet, progress).await?;
        let steps = self.churn_schedule();
        self.place_calls(testnet, steps, progress).await?;
        // The agents stop with their last handles, here, before the testnet shuts down.
        Ok(self.run)
    }

    /// Starts an agent for each user at a random node and registers them all.
    async fn register_users(
        &mut self,
        testnet: &Testnet,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<()> {
        let users = self.plan.users;
        for i in 0..users {
            let node = self.rng.below(self.plan.nodes);
            self.users.push(User {
                aor: format!("sip:user{i}@{DOMAIN}"),
                node,
                agent: None,
            });
        }
        let mut failed = 0;
        let mut done = 0;
        let everyone: Vec<usize> = (0..users).collect();
        let mut callable = self
            .enrol(testnet, &everyone, |sample| {
                done += 1;
                failed += usize::from(!sample.ok);
                progress(Progress::Registered {
                    done,
                    of: users,
                    failed,
                });
            })
            .await;
        // In the users' order, not the registrations': the draws do not depend on timing.
        callable.sort_unstable();
        self.callable = callable;
        if self.plan.calls > 0 && self.callable.len() < 2 {
            let error = self
                .run
                .registrations
                .iter()
                .find_map(|sample| sample.error.clone())
                .unwrap_or_default();
            bail!(
                "only {} of the {users} users registered, and a call needs two (a registration failed with: {error})",
                self.callable.len()
            );
        }
        Ok(())
    }

    /// Starts new agents for `users` at their nodes and registers them,
    /// [`REGISTER_CONCURRENCY`] at a time; records a sample for each and calls `each` with
    /// it; gives the users registered. A user whose new agent could not start keeps its old
    /// one.
    async fn enrol(
        &mut self,
        testnet: &Testnet,
        users: &[usize],
        mut each: impl FnMut(&RegistrationSample),
    ) -> Vec<usize> {
        let jobs: Vec<_> = users
            .iter()
            .map(|&u| {
                let user = &self.users[u];
                let sip = sip_addr(testnet, user.node);
                let port = FIRST_RTP_PORT.saturating_add(u16::try_from(u * 2).unwrap_or(0));
                let offer = agent::audio_offer(IpAddr::V4(Ipv4Addr::LOCALHOST), port, u as u64);
                let (aor, node, seed) = (user.aor.clone(), user.node, self.rng.next_u64());
                async move {
                    let name = format!("user{u}");
                    let (agent, sample) = register(aor, &name, node, sip, offer, seed).await;
                    (u, agent, sample)
                }
            })
            .collect();
        let mut outcomes = futures::stream::iter(jobs).buffer_unordered(REGISTER_CONCURRENCY);
        let mut registered = Vec::new();
        while let Some((u, agent, sample)) = outcomes.next().await {
            if let Some(agent) = agent {
                self.users[u].agent = Some(agent);
            }
            if sample.ok {
                registered.push(u);
            }
            each(&sample);
            self.run.registrations.push(sample);
        }
        registered
    }

    /// The churn steps, each with the number of the call before which it happens.
    fn churn_schedule(&mut self) -> Vec<(usize, Step)> {
        let m = self.plan.churned_nodes();
        if m == 0 {
            return Vec::new();
        }
        // Node 0 is the bootstrap: a partial Fisher-Yates shuffle of the others.
        let mut candidates: Vec<usize> = (1..self.plan.nodes).collect();
        for j in 0..m {
            let k = j + self.rng.below(candidates.len() - j);
            candidates.swap(j, k);
        }
        let calls = self.plan.calls;
        let mut steps: Vec<(usize, Step)> = Vec::with_capacity(2 * m);
        for (j, &node) in candidates[..m].iter().enumerate() {
            steps.push((calls * (m + j) / (4 * m), Step::Kill(node)));
            steps.push((calls * (2 * m + j) / (4 * m), Step::Restart(node)));
        }
        // Stable: at the same call, a node is killed before it is restarted.
        steps.sort_by_key(|&(at, _)| at);
        steps
    }

    /// Places the calls, taking the churn steps on the way; returns when every call is over.
    async fn place_calls(
        &mut self,
        testnet: &mut Testnet,
        steps: Vec<(usize, Step)>,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<()> {
        let mut in_flight = JoinSet::new();
        let mut steps = steps.into_iter().peekable();
        loop {
            while let Some((_, step)) = steps.next_if(|&(at, _)| at <= self.placed) {
                self.churn(testnet, step, progress).await?;
            }
            let until = steps.peek().map_or(self.plan.calls, |&(at, _)| at);
            let last = steps.peek().is_none();
            self.calls_until(testnet, until, last, &mut in_flight, progress)
                .await;
            if last {
                return Ok(());
            }
        }
    }

    /// Places calls until `until` of them are placed, keeping [`Plan::concurrency`] in flight,
    /// and takes the hops of each call's INVITE from the caller's node as the call ends.
    /// Returns when `until` are placed (and, when `last`, every call is over).
    async fn calls_until(
        &mut self,
        testnet: &Testnet,
        until: usize,
        last: bool,
        in_flight: &mut JoinSet<(usize, CallSample, Option<String>)>,
        progress: &mut dyn FnMut(Progress),
    ) {
        loop {
            while self.placed < until && in_flight.len() < self.plan.concurrency {
                self.place(in_flight);
            }
            if self.placed >= until && (!last || in_flight.is_empty()) {
                return;
            }
            let Some(joined) = in_flight.join_next().await else {
                return;
            };
            self.done += 1;
            match joined {
                Ok((index, mut sample, call_id)) => {
                    self.failed += usize::from(!sample.ok);
                    if let Some(call_id) = call_id {
                        let to = self.node_ids.get(sample.to_node).copied();
                        sample.hops = invite_hops(testnet, sample.from_node, &call_id, to);
                    }
                    self.run.calls[index] = sample;
                }
                // Its sample stays the placeholder, a failure.
                Err(error) => {
                    warn!(%error, "a call's task failed");
                    self.failed += 1;
                }
            }
            progress(Progress::Calls {
                done: self.done,
                of: self.plan.calls,
                failed: self.failed,
            });
        }
    }

    /// Places the next call between two distinct callable users drawn at random.
    fn place(&mut self, in_flight: &mut JoinSet<(usize, CallSample, Option<String>)>) {
        let index = self.placed;
        self.placed += 1;
        let n = self.callable.len();
        let a = self.rng.below(n);
        let b = (a + 1 + self.rng.below(n - 1)) % n;
        let (caller, callee) = (self.callable[a], self.callable[b]);
        let (from_node, to_node) = (self.users[caller].node, self.users[callee].node);
        let mut sample = CallSample {
            from_node,
            to_node,
            ok: false,
            srd: None,
            setup: None,
            status: None,
            hops: None,
            path: None,
            error: Some("the call's task failed".to_owned()),
        };
        let target = self.users[callee].aor.clone();
        // A handle hears every event from its creation on, and one nobody reads keeps up to
        // EVENT_CAPACITY of them: the users' stored handles are renewed at each call, so
        // they hold only the events since.
        if let Some(stored) = self.users[callee].agent.as_mut() {
            *stored = stored.clone();
        }
        let Some(stored) = self.users[caller].agent.as_mut() else {
            sample.error = Some("the caller has no user agent".to_owned());
            self.run.calls.push(sample);
            in_flight.spawn(std::future::ready((
                index,
                self.run.calls[index].clone(),
                None,
            )));
            return;
        };
        let agent = stored.clone();
        *stored = stored.clone();
        self.run.calls.push(sample.clone());
        let times = (self.plan.call_timeout, self.plan.call_duration);
        let span = info_span!("call", index, from = from_node, to = to_node);
        in_flight.spawn(
            async move {
                let call_id = place_call(agent, &target, times, &mut sample).await;
                (index, sample, call_id)
            }
            .instrument(span),
        );
    }

    /// Takes one churn step.
    async fn churn(
        &mut self,
        testnet: &mut Testnet,
        step: Step,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<()> {
        match step {
            Step::Kill(node) => {
                testnet.kill(node).await?;
                info!(node, "churn: node killed");
                self.run.churn.killed.push(node);
                progress(Progress::Killed { node });
            }
            Step::Restart(node) => {
                if let Err(error) = testnet.restart(node).await {
                    warn!(
                        node,
                        error = format!("{error:#}"),
                        "churn: node did not restart"
                    );
                    progress(Progress::RestartFailed {
                        node,
                        error: format!("{error:#}"),
                    });
                    return Ok(());
                }
                info!(node, "churn: node restarted");
                self.run.churn.restarted.push(node);
                if let Some(info) = self.run.nodes.get_mut(node) {
                    info.sip_addr =
                        sip_addr(testnet, node).map_or_else(String::new, |a| a.to_string());
                }
                let users: Vec<usize> = self
                    .callable
                    .iter()
                    .copied()
                    .filter(|&u| self.users[u].node == node)
                    .collect();
                let mut registered = 0;
                self.enrol(testnet, &users, |sample| {
                    registered += usize::from(sample.ok);
                })
                .await;
                progress(Progress::Restarted {
                    node,
                    users: users.len(),
                    registered,
                });
            }
        }
        Ok(())
    }
}

/// Starts `aor`'s agent at the node `sip` (node `node`) and registers it; gives the agent,
/// when it started, and the sample.
async fn register(
    aor: String,
    name: &str,
    node: usize,
    sip: Option<SocketAddr>,
    offer: Bytes,
    seed: u64,
) -> (Option<Agent>, RegistrationSample) {
    let mut sample = RegistrationSample {
        user: aor,
        node,
        ok: false,
        rrd: Duration::ZERO,
        error: None,
    };
    let Some(sip) = sip else {
        sample.error = Some(format!("node {node} is not running"));
        return (None, sample);
    };
    let mut agent = match Agent::for_node(sip, name, true, Some(offer), seed).await {
        Ok(agent) => agent,
        Err(error) => {
            sample.error = Some(format!("the user agent did not start: {error}"));
            return (None, sample);
        }
    };
    let aor = sample.user.as_str();
    let started = Instant::now();
    let outcome = tokio::time::timeout(REGISTER_TIMEOUT, async {
        agent
            .register(aor, REGISTER_EXPIRES)
            .await
            .map_err(|error| format!("the REGISTER could not be sent: {error}"))?;
        loop {
            match agent.next_event().await {
                Some(Event::Registered { aor: got, .. }) if got == aor => return Ok(()),
                Some(Event::RegistrationFailed {
                    aor: got,
                    status,
                    reason,
                }) if got == aor => {
                    return Err(format!("the registrar answered {status} {reason}"));
                }
                Some(_) => {}
                None => return Err("the user agent stopped".to_owned()),
            }
        }
    })
    .await;
    sample.rrd = started.elapsed();
    match outcome {
        Ok(Ok(())) => sample.ok = true,
        Ok(Err(error)) => sample.error = Some(error),
        Err(_) => {
            sample.error = Some(format!(
                "no answer to the REGISTER within {} s",
                REGISTER_TIMEOUT.as_secs()
            ));
        }
    }
    debug!(aor, node, ok = sample.ok, rrd = ?sample.rrd, "registration");
    (Some(agent), sample)
}

/// Places a call from `agent` (a handle made before the call) to `target`, holds it and hangs
/// up; fills in `sample` (all but the hops) and gives the call's Call-ID, once the INVITE was
/// sent. `times` is the call timeout and the hold time.
async fn place_call(
    mut agent: Agent,
    target: &str,
    (timeout, hold): (Duration, Duration),
    sample: &mut CallSample,
) -> Option<String> {
    sample.error = None;
    let (call, call_id) = match agent.invite_with_call_id(target).await {
        Ok(placed) => placed,
        Err(error) => {
            sample.error = Some(format!("the INVITE could not be sent: {error}"));
            return None;
        }
    };
    hold_call(&mut agent, call, (timeout, hold), sample).await;
    Some(call_id)
}

/// Waits for `call` to be set up, holds it and hangs up; fills in `sample`.
async fn hold_call(
    agent: &mut Agent,
    call: Call,
    (timeout, hold): (Duration, Duration),
    sample: &mut CallSample,
) {
    let setup = tokio::time::timeout(timeout, async {
        loop {
            let Some(report) = agent.next_report().await else {
                return Err("the user agent stopped".to_owned());
            };
            if call_of(&report.event) != Some(call) {
                continue;
            }
            if let Some(timings) = report.timings {
                sample.srd = timings.ringing;
                sample.setup = timings.answered;
            }
            match report.event {
                Event::Established { .. } => return Ok(()),
                Event::Failed { status, .. } => {
                    sample.status = Some(status.as_u16());
                    return Err(format!(
                        "the call failed with {status} {}",
                        status.canonical_reason()
                    ));
                }
                Event::Ended { .. } => return Err("the call ended before it was up".to_owned()),
                _ => {}
            }
        }
    })
    .await;
    match setup {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            sample.error = Some(error);
            return;
        }
        Err(_) => {
            sample.error = Some(format!("the call was not up within {timeout:?}"));
            // Cancel it; it may have ended meanwhile.
            if let Err(error) = agent.hangup(call).await {
                debug!(%error, "the unanswered call could not be hung up");
            }
            return;
        }
    }
    sample.ok = true;
    sample.status = Some(200);
    tokio::time::sleep(hold).await;
    if let Err(error) = agent.hangup(call).await {
        // The peer hung up first, or the agent stopped: the call is over either way.
        debug!(%error, "the call could not be hung up");
        return;
    }
    let ended = tokio::time::timeout(HANGUP_TIMEOUT, async {
        while let Some(report) = agent.next_report().await {
            if matches!(report.event, Event::Ended { call: c, .. } | Event::Failed { call: c, .. } if c == call)
            {
                return true;
            }
        }
        false
    })
    .await;
    if !matches!(ended, Ok(true)) {
        debug!("the call's end was not confirmed within {HANGUP_TIMEOUT:?}");
    }
}

/// The call an event is about.
fn call_of(event: &Event) -> Option<Call> {
    match event {
        Event::Incoming { call, .. }
        | Event::Ringing { call }
        | Event::Established { call }
        | Event::Failed { call, .. }
        | Event::Ended { call, .. } => Some(*call),
        _ => None,
    }
}

/// The overlay hops of the INVITE of the call `call_id`, as node `from` (the caller's) noted
/// them; `None` when it did not note them, or noted another node than `to` (the callee's).
fn invite_hops(testnet: &Testnet, from: usize, call_id: &str, to: Option<PeerId>) -> Option<u32> {
    let noted = testnet.peer(from)?.invite_hops(call_id)?;
    if Some(noted.node) != to {
        debug!(call_id, node = %noted.node, "the INVITE went to another node than the callee's");
        return None;
    }
    Some(u32::from(noted.hops))
}

/// The SIP (UDP) address of node `i`, when it runs.
fn sip_addr(testnet: &Testnet, i: usize) -> Option<SocketAddr> {
    testnet.peer(i)?.sip_addr(Transport::Udp)
}

/// A seed from the wall clock.
fn clock_seed() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos());
    // The low 64 bits vary; mixing spreads them over the whole seed.
    Rng(nanos as u64).next_u64()
}

/// SplitMix64 (Steele, Lea and Flood, 2014): tiny, seedable, and plenty for drawing nodes and
/// pairs. Not for anything secret.
#[derive(Debug, Clone)]
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number below `n` (0 when `n` is 0), by multiply-and-shift (Lemire): its bias,
    /// under n / 2^64, does not matter here.
    pub(crate) fn below(&mut self, n: usize) -> usize {
        let wide = u128::from(self.next_u64()) * n as u128;
        (wide >> 64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_gives_the_reference_sequence() {
        // The first outputs for seed 1234567 of the reference implementation.
        let mut rng = Rng(1_234_567);
        assert_eq!(rng.next_u64(), 6_457_827_717_110_365_317);
        assert_eq!(rng.next_u64(), 3_203_168_211_198_807_973);
        assert_eq!(rng.next_u64(), 9_817_491_932_198_370_423);
    }

    #[test]
    fn below_stays_below_and_hits_every_value() {
        let mut rng = Rng(7);
        let mut seen = [0usize; 5];
        for _ in 0..1000 {
            seen[rng.below(5)] += 1;
        }
        assert!(seen.iter().all(|&count| count > 100), "{seen:?}");
        assert_eq!(rng.below(0), 0);
    }

    #[test]
    fn the_default_plan_is_valid_and_bounds_are_sentences() {
        Plan::default().validate().unwrap();
        let bad = [
            Plan {
                nodes: 1,
                ..Plan::default()
            },
            Plan {
                users: 1,
                ..Plan::default()
            },
            Plan {
                users: MAX_USERS + 1,
                ..Plan::default()
            },
            Plan {
                calls: MAX_CALLS + 1,
                ..Plan::default()
            },
            Plan {
                churn_percent: 51,
                ..Plan::default()
            },
            Plan {
                concurrency: 0,
                ..Plan::default()
            },
            Plan {
                call_timeout: Duration::ZERO,
                ..Plan::default()
            },
        ];
        for plan in bad {
            let error = plan.validate().unwrap_err().to_string();
            assert!(!error.contains('\n') && !error.ends_with('.'), "{error}");
        }
    }

    #[test]
    fn churn_spares_node_0_and_restarts_each_killed_node_after_killing_it() {
        for (nodes, percent, calls) in [(8, 20, 10), (2, 50, 0), (3, 50, 7), (100, 50, 1000)] {
            let plan = Plan {
                nodes,
                churn_percent: percent,
                calls,
                ..Plan::default()
            };
            let m = plan.churned_nodes();
            assert!((1..nodes).contains(&m));
            let steps = Scenario::new(&plan, 42).churn_schedule();
            assert_eq!(steps.len(), 2 * m);
            assert!(steps.windows(2).all(|w| w[0].0 <= w[1].0));
            let mut down = std::collections::HashSet::new();
            for &(at, step) in &steps {
                assert!(at <= calls.saturating_sub(1));
                match step {
                    Step::Kill(node) => assert!(node != 0 && down.insert(node)),
                    Step::Restart(node) => assert!(down.remove(&node)),
                }
            }
            assert!(down.is_empty());
        }
        assert_eq!(
            Plan {
                nodes: 8,
                churn_percent: 20,
                ..Plan::default()
            }
            .churned_nodes(),
            2
        );
    }

    #[test]
    fn progress_reads_as_a_line() {
        let line = Progress::Calls {
            done: 3,
            of: 10,
            failed: 1,
        }
        .to_string();
        assert_eq!(line, "calls done 3/10 (1 failed)");
    }
}
