//! The arguments several commands share. A command flattens the groups it needs.

use std::path::PathBuf;

use crate::config::{self, Loaded};

/// `--data-dir`: where the node's keys, config file and store live.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct DataDir {
    /// The data directory: the keys and the node's store (and config.toml, when given)
    /// [default: the
    /// platform's data directory, e.g. ~/.local/share/p2psip].
    #[arg(long = "data-dir", env = "P2PSIP_DATA_DIR", value_name = "DIR")]
    pub(crate) path: Option<PathBuf>,
}

/// What every command that talks to a node needs to find it: `--data-dir` and `--config`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct NodeArgs {
    /// The data directory.
    #[command(flatten)]
    pub(crate) data_dir: DataDir,
    /// The config file [default: DIR/config.toml with --data-dir, else the platform's config
    /// directory, e.g. ~/.config/p2psip/config.toml; none there means the defaults].
    #[arg(long, env = "P2PSIP_CONFIG", value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
}

/// `--json`, for the commands that print something.
#[derive(Debug, Clone, Copy, clap::Args)]
pub(crate) struct Output {
    /// Print JSON instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

impl DataDir {
    /// The directory given, else the platform's default; absolute.
    pub(crate) fn resolve(&self) -> anyhow::Result<PathBuf> {
        match &self.path {
            Some(path) => config::absolute(path),
            None => config::default_data_dir(),
        }
    }
}

impl NodeArgs {
    /// The effective configuration: the config file over the defaults, with `--data-dir`
    /// over the file's `data_dir`.
    pub(crate) fn load(&self) -> anyhow::Result<Loaded> {
        config::load(self.data_dir.path.as_deref(), self.config.as_deref())
    }
}
