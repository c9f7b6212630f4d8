//! # p2psip: the command line
//!
//! The `p2psip` command: the top layer, over the node, the overlay and the testnet. It sets
//! up a data directory (`p2psip init`), shows the effective configuration (`p2psip config`),
//! runs a node (`p2psip node`), talks to a running node through its control API (`status`,
//! `peers`, `lookup`, `register`, `unregister`, `call`, `message`) and runs a whole testnet
//! in one process (`p2psip testnet`).
//!
//! # Layout
//!
//! - `main.rs`: the command tree ([`Cli`], [`Command`]), and `main`, which parses the command
//!   line, starts the logs, runs one command and turns its error into one line on stderr.
//! - `args.rs`: the arguments several commands share (`--data-dir`, `--config`, `--json`).
//! - `commands/`: one module per subcommand, each with its `Args` and its `run`.
//! - `config/`: the TOML config file: its typed keys and defaults, loading with errors that
//!   name the line, and the commented template `p2psip init` writes.
//! - `files.rs`: private directories and atomic file writes.
//! - `logging.rs`: `-v`/`-q` and `RUST_LOG` to a tracing subscriber on stderr.
//! - `report.rs`: errors (ours and clap's) as one line for people.
//!
//! # Adding a command
//!
//! Add a module under `commands/` with `Args` (clap derive) and `run(args) -> anyhow::Result`,
//! then one variant to [`Command`] and its arm in [`Command::run`]. Commands that talk to a
//! node flatten [`args::NodeArgs`]; commands that read something flatten [`args::Output`].
//!
//! # Invariants
//!
//! Every failure exits non-zero with exactly one line on stderr, `error: ` and a sentence that
//! says what went wrong and what to do (exit code 2 for a bad command line, 1 otherwise).
//! Results go to stdout, logs to stderr.

mod args;
mod commands;
mod config;
mod files;
mod logging;
mod report;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing::level_filters::LevelFilter;

/// Peer-to-peer SIP over a RELOAD-style DHT: no registrar, no proxy, no server.
#[derive(Debug, Parser)]
#[command(name = "p2psip", version, propagate_version = true)]
struct Cli {
    /// Log more, one level per -v (info, debug, trace); overrides RUST_LOG.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Log less, one level per -q (errors only, nothing); overrides RUST_LOG.
    #[arg(short, long, action = clap::ArgAction::Count, global = true, conflicts_with = "verbose")]
    quiet: u8,
    /// What to do.
    #[command(subcommand)]
    command: Command,
}

/// The subcommands: one variant and one module of `commands/` each.
#[derive(Debug, Subcommand)]
enum Command {
    /// Set up a data directory: the node key, a user key and a commented config.toml.
    Init(commands::init::Args),
    /// Print the effective configuration: the config file over the defaults.
    Config(commands::config::Args),
    /// Run a node until Ctrl-C: join the overlay, serve softphones, answer the commands below.
    #[command(after_long_help = commands::node::PUBLIC_NODE_HELP)]
    Node(commands::node::Args),
    /// What the running node knows: its addresses, peers, store and counters.
    Status(commands::remote::ReadArgs),
    /// The peers in the running node's routing table.
    Peers(commands::remote::ReadArgs),
    /// Find the devices registered for an AOR, with hops and time.
    Lookup(commands::remote::LookupArgs),
    /// Register an AOR with the running node's built-in user agent.
    Register(commands::remote::AorArgs),
    /// Remove the built-in user agent's registration of an AOR.
    Unregister(commands::remote::AorArgs),
    /// Call an AOR (or a SIP URI) from the running node; Ctrl-C hangs up.
    Call(commands::remote::CallArgs),
    /// Send a text MESSAGE to an AOR (or a SIP URI) from the running node.
    Message(commands::remote::MessageArgs),
    /// Start N nodes in this process for softphones (until Ctrl-C), or `run` a scenario.
    Testnet(commands::testnet::Args),
    /// Add, remove or list the users softphones log in with (digest authentication).
    #[command(after_long_help = commands::user::USER_HELP)]
    User(commands::user::Args),
    /// An enrollment CA: make one, certify Node-IDs and users' AORs.
    #[command(after_long_help = commands::ca::CA_HELP)]
    Ca(commands::ca::Args),
}

impl Command {
    /// Runs the command.
    fn run(self) -> anyhow::Result<()> {
        match self {
            Command::Init(args) => commands::init::run(args),
            Command::Config(args) => commands::config::run(args),
            Command::Node(args) => commands::node::run(args),
            Command::Status(args) => commands::remote::status(args),
            Command::Peers(args) => commands::remote::peers(args),
            Command::Lookup(args) => commands::remote::lookup(args),
            Command::Register(args) => commands::remote::register(args, true),
            Command::Unregister(args) => commands::remote::register(args, false),
            Command::Call(args) => commands::remote::call(args),
            Command::Message(args) => commands::remote::message(args),
            Command::Testnet(args) => commands::testnet::run(args),
            Command::User(args) => commands::user::run(args),
            Command::Ca(args) => commands::ca::run(args),
        }
    }

    /// The log level without `-v`, `-q` or `RUST_LOG`: quiet for one-shot commands, whose
    /// results are their output; a long-running node will want `INFO`.
    fn default_log_level(&self) -> LevelFilter {
        match self {
            Command::Node(_) => LevelFilter::INFO,
            _ => LevelFilter::WARN,
        }
    }
}

/// jemalloc, not glibc's malloc: glibc kept most of what a node's closed connections had
/// used (10.7 MiB per idle node in the overlay bench at 64 nodes, 4.8 with jemalloc, which
/// gives freed pages back to the system after a few seconds). See ARCHITECTURE.md.
#[cfg(target_os = "linux")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return report::command_line(&error),
    };
    let verbosity = i16::from(cli.verbose) - i16::from(cli.quiet);
    if let Err(error) = logging::init(verbosity, cli.command.default_log_level()) {
        return report::failure(&error);
    }
    match cli.command.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => report::failure(&error),
    }
}
