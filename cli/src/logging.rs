//! Logs: a tracing subscriber on stderr, filtered by `-v`/`-q` or `RUST_LOG`.
//!
//! The command line wins over the environment: with `-v` or `-q`, the level is the command's
//! default moved one step per flag (`-v` from WARN gives INFO, `-vv` DEBUG; `-q` gives ERROR,
//! `-qq` nothing). Without them, `RUST_LOG` (e.g. `debug` or `p2psip_overlay=trace,info`) is
//! the filter when it is set, and the command's default level otherwise.

use anyhow::{Context as _, bail};
use tracing::level_filters::LevelFilter;
use tracing_subscriber::EnvFilter;

/// The levels from quietest to loudest.
const LEVELS: [LevelFilter; 6] = [
    LevelFilter::OFF,
    LevelFilter::ERROR,
    LevelFilter::WARN,
    LevelFilter::INFO,
    LevelFilter::DEBUG,
    LevelFilter::TRACE,
];

/// Installs the subscriber. `verbosity` is the count of `-v` minus the count of `-q`.
pub(crate) fn init(verbosity: i16, default: LevelFilter) -> anyhow::Result<()> {
    let rust_log = std::env::var("RUST_LOG").unwrap_or_default();
    let filter = if verbosity != 0 || rust_log.trim().is_empty() {
        EnvFilter::default().add_directive(level(default, verbosity).into())
    } else {
        parse_rust_log(&rust_log)?
    };
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // A subscriber is already installed only when something else did it first: keep that one.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .try_init();
    Ok(())
}

/// `default` moved `verbosity` steps louder (or quieter when negative), within the levels.
fn level(default: LevelFilter, verbosity: i16) -> LevelFilter {
    let start = LEVELS.iter().position(|l| *l == default).unwrap_or(2);
    let index = i16::try_from(start)
        .unwrap_or(2)
        .saturating_add(verbosity)
        .clamp(0, 5);
    LEVELS[usize::try_from(index).unwrap_or(2)]
}

fn parse_rust_log(value: &str) -> anyhow::Result<EnvFilter> {
    if value.len() > 4096 {
        bail!("RUST_LOG is longer than 4096 characters; shorten it, e.g. RUST_LOG=debug");
    }
    EnvFilter::builder().parse(value).with_context(|| {
        format!(
            "RUST_LOG={value:?} is not a log filter; use a level (RUST_LOG=debug) or \
             targets with levels (RUST_LOG=p2psip_overlay=trace,info)"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_move_the_level_within_its_bounds() {
        assert_eq!(level(LevelFilter::WARN, 0), LevelFilter::WARN);
        assert_eq!(level(LevelFilter::WARN, 1), LevelFilter::INFO);
        assert_eq!(level(LevelFilter::WARN, 2), LevelFilter::DEBUG);
        assert_eq!(level(LevelFilter::WARN, 9), LevelFilter::TRACE);
        assert_eq!(level(LevelFilter::WARN, -1), LevelFilter::ERROR);
        assert_eq!(level(LevelFilter::WARN, -2), LevelFilter::OFF);
        assert_eq!(level(LevelFilter::INFO, -9), LevelFilter::OFF);
    }

    #[test]
    fn a_bad_rust_log_is_refused_with_an_example() {
        assert!(parse_rust_log("p2psip_overlay=trace,info").is_ok());
        let error = parse_rust_log("p2psip=loud").err().map(|e| e.to_string());
        assert!(error.is_some_and(|e| e.contains("RUST_LOG=debug")));
    }
}
