//! `p2psip init`: sets up a data directory.
//!
//! It creates the directory (mode 0700), the node key (`node.key`, the node's Node-ID) and a
//! user key (`user.key`, whose self-certifying AOR no one else can hold) with mode 0600, and
//! last a commented `config.toml`: in the platform's config directory
//! (`~/.config/p2psip/config.toml` on Linux), or in the data directory given with
//! `--data-dir`. A data directory with a config file is complete. Keys that
//! exist are kept, never replaced: they are the node's and the user's identity.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow, bail};
use p2psip_overlay::error::Error as OverlayError;
use p2psip_overlay::identity::{NodeKey, UserKey, public_key_to_hex};
use serde::Serialize;

use crate::args::{DataDir, Output};
use crate::config;
use crate::files::{self, Existing};

/// The arguments of `p2psip init`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The data directory to set up.
    #[command(flatten)]
    data_dir: DataDir,
    /// Write a fresh config.toml over an existing one. The keys are kept (to get a new
    /// identity, move the old data directory away).
    #[arg(long)]
    force: bool,
    /// Text or JSON.
    #[command(flatten)]
    output: Output,
}

/// What `init` set up, as printed.
#[derive(Debug, Serialize)]
struct Report {
    /// The data directory.
    data_dir: PathBuf,
    /// Its config file.
    config: PathBuf,
    /// The node's Node-ID (its libp2p PeerId).
    node_id: String,
    /// The self-certifying AOR of the user key.
    aor: String,
    /// The user's public key in hexadecimal: what an enrollment CA certifies AORs for.
    user_key: String,
}

/// Sets up the data directory and prints its Node-ID and AOR.
pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    let dir = args.data_dir.resolve()?;
    let given = args.data_dir.path.as_ref().map(|_| dir.as_path());
    let config = config::default_file(given)?;
    // Refuse before touching anything; the link below refuses again if the file appears now.
    if !args.force && config.exists() {
        bail!(already_set_up(&config));
    }
    files::create_private_dir(&dir).with_context(|| {
        format!(
            "cannot create the data directory {}; check the permissions of its parent, or \
             choose another with --data-dir",
            dir.display()
        )
    })?;
    if let Some(folder) = config.parent() {
        files::create_private_dir(folder).with_context(|| {
            format!(
                "cannot create the config directory {}; check its permissions, or choose a data \
                 directory (which then holds the config) with --data-dir",
                folder.display()
            )
        })?;
    }
    let node = NodeKey::load_or_create(&dir).map_err(|e| key_error(e, &dir))?;
    let user = UserKey::load_or_create(&dir).map_err(|e| key_error(e, &dir))?;
    let existing = if args.force {
        Existing::Replace
    } else {
        Existing::Keep
    };
    match files::write_atomically(&config, config::TEMPLATE.as_bytes(), existing) {
        Ok(()) => {}
        Err(error) if error.kind() == ErrorKind::AlreadyExists => bail!(already_set_up(&config)),
        Err(error) => {
            return Err(error).with_context(|| {
                format!(
                    "cannot write {}; check that the data directory is yours and writable",
                    config.display()
                )
            });
        }
    }
    let report = Report {
        data_dir: dir,
        config,
        node_id: node.node_id().to_string(),
        aor: user.self_certifying_aor(),
        user_key: public_key_to_hex(&user.public()),
    };
    print(&report, args.output.json)
}

fn print(report: &Report, json: bool) -> anyhow::Result<()> {
    if json {
        let text = serde_json::to_string_pretty(report)
            .context("cannot print the report as JSON; the data directory's path must be UTF-8")?;
        println!("{text}");
    } else {
        println!("data dir: {}", report.data_dir.display());
        println!("config:   {}", report.config.display());
        println!("Node-ID:  {}", report.node_id);
        println!("AOR:      {}", report.aor);
        println!("user key: {}", report.user_key);
    }
    Ok(())
}

fn already_set_up(config: &Path) -> String {
    format!(
        "{} already exists, so this data directory is set up; use --force to write a fresh \
         config.toml (the keys are kept), or choose another directory with --data-dir",
        config.display()
    )
}

/// A key that cannot be loaded or created, with what to do about it.
fn key_error(error: OverlayError, dir: &Path) -> anyhow::Error {
    match error {
        OverlayError::Io { .. } => anyhow!(
            "{error}; check that the data directory {} is yours and writable, or choose another \
             with --data-dir",
            dir.display()
        ),
        other => anyhow!(other),
    }
}
