//! `p2psip config`: prints the effective configuration, the config file over the defaults.
//!
//! The TOML it prints is itself a valid config file; `--json` prints the same as JSON.

use anyhow::Context as _;

use crate::args::{NodeArgs, Output};

/// The arguments of `p2psip config`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Where the config file and data directory are.
    #[command(flatten)]
    node: NodeArgs,
    /// Text or JSON.
    #[command(flatten)]
    output: Output,
}

/// Prints the effective configuration on stdout.
pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    let loaded = args.node.load()?;
    let cannot = "cannot print the configuration; its paths must be UTF-8";
    if args.output.json {
        let json = serde_json::to_string_pretty(&loaded.config).context(cannot)?;
        println!("{json}");
    } else {
        let toml = toml::to_string_pretty(&loaded.config).context(cannot)?;
        let source = if loaded.exists {
            format!("# The configuration from {}", loaded.file.display())
        } else {
            format!(
                "# The defaults: there is no {} (`p2psip init` writes one)",
                loaded.file.display()
            )
        };
        print!("{source}\n\n{toml}");
    }
    Ok(())
}
