//! `p2psip testnet`: N nodes in this process on 127.0.0.1, for softphones, until Ctrl-C; and
//! `p2psip testnet run`: a whole scenario (users registered on random nodes, calls between
//! random pairs, optional churn) with a summary, `report.json` and `report.html`; with
//! `--lab`, the same report of real node processes on hosts behind real NATs
//! (`p2psip_testnet::lab::scenario`).

use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use p2psip_sip::Transport;
use p2psip_testnet::lab::scenario;
use p2psip_testnet::run::{self, Plan, Progress};
use p2psip_testnet::{Options, Testnet, report};

use crate::args::Output;

/// How long the nodes of `p2psip testnet` have to fill their routing tables.
const SETTLE: Duration = Duration::from_secs(120);

/// The arguments of `p2psip testnet`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct Args {
    /// How many nodes to start.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=256))]
    nodes: u16,
    /// Run a scenario instead and report on it.
    #[command(subcommand)]
    action: Option<Action>,
}

/// What `p2psip testnet` can do besides serving.
#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Register users on random nodes, call between random pairs, report SRD, RRD and hops;
    /// with --lab, across real NATs.
    Run(RunArgs),
}

/// The arguments of `p2psip testnet run`.
#[derive(Debug, clap::Args)]
struct RunArgs {
    /// How many nodes.
    #[arg(long, default_value_t = 16)]
    nodes: usize,
    /// How many users, each with its own user agent at a random node.
    #[arg(long, default_value_t = 32)]
    users: usize,
    /// How many calls between random pairs of users [default: 100]; with --lab, how many
    /// rounds of calls between every ordered pair of NAT hosts [default: 1].
    #[arg(long)]
    calls: Option<usize>,
    /// The share of nodes (percent) killed and restarted while the calls are placed.
    #[arg(long, value_name = "PERCENT", default_value_t = 0)]
    churn: u8,
    /// The seed of every random choice; the same seed makes the same run [default: from
    /// the clock].
    #[arg(long)]
    seed: Option<u64>,
    /// Run real `p2psip node` processes in a network lab instead (needs root): a public
    /// relay and one host behind each NAT kind (full-cone, port-restricted, symmetric,
    /// cgnat, dual-stack); their agents call each other, and the report gives each call's
    /// NATs and path (direct or relayed).
    #[arg(long, conflicts_with_all = ["nodes", "users", "churn", "seed"])]
    lab: bool,
    /// Where to write report.json and report.html.
    #[arg(long, value_name = "DIR", default_value = "testnet-report")]
    report: PathBuf,
    /// Print the report as JSON on stdout instead of the summary.
    #[command(flatten)]
    output: Output,
}

/// Runs `p2psip testnet` or `p2psip testnet run`.
pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    match args.action {
        // Blocking: it waits for processes in the lab's namespaces, not for tasks.
        Some(Action::Run(run)) if run.lab => lab_scenario(&run),
        Some(Action::Run(run)) => runtime.block_on(scenario(run)),
        None => runtime.block_on(serve(usize::from(args.nodes))),
    }
}

/// `p2psip testnet`: start, print the table, wait for Ctrl-C.
async fn serve(nodes: usize) -> anyhow::Result<()> {
    let mut bar = Bar::new("starting nodes");
    let net = Testnet::start_with_progress(nodes, Options::default(), |started, of| {
        bar.show(started, of);
    })
    .await
    .context("the testnet could not start; see the log (-v) for the node that failed")?;
    eprintln!("waiting for the routing tables to fill...");
    net.settle(SETTLE)
        .await
        .context("the testnet did not settle; try fewer nodes with --nodes")?;
    println!(
        "{:>4}  {:<52}  {:<21}  OVERLAY",
        "NODE", "NODE-ID", "SIP (UDP and TCP)"
    );
    for i in 0..net.len() {
        let (Some(node), Some(overlay)) = (net.peer(i), net.node(i)) else {
            continue;
        };
        let sip = node
            .sip_addr(Transport::Udp)
            .map_or_else(String::new, |a| a.to_string());
        let addr = overlay
            .listen_addrs()
            .await
            .ok()
            .and_then(|a| a.into_iter().next())
            .map_or_else(String::new, |a| {
                p2psip_node::control::with_peer_id(&a, node.node_id())
            });
        println!(
            "{i:>4}  {:<52}  {sip:<21}  {addr}",
            node.node_id().to_string()
        );
    }
    println!(
        "Register a softphone at any SIP address above (e.g. sip:alice@testnet.p2p, no \
         password) and call another AOR registered at any node. Ctrl-C stops the testnet."
    );
    tokio::signal::ctrl_c()
        .await
        .context("cannot wait for Ctrl-C")?;
    eprintln!("stopping {} nodes...", net.len());
    net.shutdown().await;
    Ok(())
}

/// `p2psip testnet run`.
async fn scenario(args: RunArgs) -> anyhow::Result<()> {
    let plan = Plan {
        nodes: args.nodes,
        users: args.users,
        calls: args.calls.unwrap_or(100),
        churn_percent: args.churn,
        seed: args.seed,
        ..Plan::default()
    };
    plan.validate()?;
    let mut start_bar = Bar::new("starting nodes");
    let mut call_bar = Bar::new("calls");
    let mut register_bar = Bar::new("registering users");
    let mut progress = |step: Progress| match step {
        Progress::Starting { started, of } => start_bar.show(started, of),
        Progress::Registered { done, of, .. } => register_bar.show(done, of),
        Progress::Calls { done, of, .. } => call_bar.show(done, of),
        other => {
            Bar::clear();
            eprintln!("{other}");
        }
    };
    let (run, report) = run::run(&plan, Options::default(), &mut progress).await?;
    Bar::clear();
    write_report(&args, &run, &report)
}

/// `p2psip testnet run --lab`.
fn lab_scenario(args: &RunArgs) -> anyhow::Result<()> {
    if !scenario::is_root() {
        anyhow::bail!(
            "the lab needs root (network namespaces and nftables); run as root, or drop --lab"
        );
    }
    let program = std::env::current_exe()
        .context("cannot find this program's own path to run it as the lab's nodes")?;
    let plan = scenario::Plan::new(program).rounds(args.calls.unwrap_or(1));
    let mut start_bar = Bar::new("starting nodes");
    let mut call_bar = Bar::new("calls");
    let mut progress = |step: scenario::Progress| match step {
        scenario::Progress::Started { started, of } => start_bar.show(started, of),
        scenario::Progress::Calls { done, of, .. } => call_bar.show(done, of),
        other => {
            Bar::clear();
            eprintln!("{other}");
        }
    };
    let (run, report) = scenario::run(&plan, &mut progress)?;
    Bar::clear();
    write_report(args, &run, &report)
}

/// Writes the report files and prints the summary (or the report as JSON).
fn write_report(args: &RunArgs, run: &report::Run, report: &report::Report) -> anyhow::Result<()> {
    let (json, html) = report::write(&args.report, run, report).with_context(|| {
        format!(
            "cannot write the report into {}; check that it is a folder you may write, or give \
             another with --report DIR",
            args.report.display()
        )
    })?;
    if args.output.json {
        let text = serde_json::to_string_pretty(report).context("cannot encode the report")?;
        println!("{text}");
    } else {
        println!("{}", report.summary());
        println!("report: {}", json.display());
        println!("        {}", html.display());
    }
    Ok(())
}

/// A progress bar on stderr: redrawn in place on a terminal, a line per tenth otherwise.
struct Bar {
    label: &'static str,
    tty: bool,
    last: usize,
}

impl Bar {
    fn new(label: &'static str) -> Bar {
        Bar {
            label,
            tty: std::io::stderr().is_terminal(),
            last: usize::MAX,
        }
    }

    fn show(&mut self, done: usize, of: usize) {
        let of = of.max(1);
        if self.tty {
            let filled = done * 30 / of;
            eprint!(
                "\r{:<18} [{}{}] {done}/{of}",
                self.label,
                "#".repeat(filled),
                "-".repeat(30 - filled.min(30))
            );
            let _ = std::io::stderr().flush();
            if done >= of {
                eprintln!();
            }
        } else {
            let tenth = done * 10 / of;
            if tenth != self.last {
                self.last = tenth;
                eprintln!("{}: {done}/{of}", self.label);
            }
        }
    }

    /// Ends a half-drawn bar line before other output.
    fn clear() {
        if std::io::stderr().is_terminal() {
            eprint!("\r\x1b[K");
        }
    }
}
