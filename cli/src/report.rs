//! Failures as one line for people: `error: <what went wrong and what to do>` on stderr.
//!
//! Commands build their errors with `anyhow`, adding context as they go up; [`failure`] joins
//! the chain into one line (`context: cause`), without repeats, Debug output or backtraces.
//! [`command_line`] does the same for clap's usage errors, which clap would print over several
//! lines.

use std::process::ExitCode;

use clap::error::ErrorKind;

/// Prints `error` as one line on stderr; the exit code of a failed command.
pub(crate) fn failure(error: &anyhow::Error) -> ExitCode {
    eprintln!("error: {}", sentence(error));
    ExitCode::FAILURE
}

/// Handles a command line that clap refused or answered itself: help and version go to
/// stdout with success; a usage error becomes one line on stderr and exit code 2.
pub(crate) fn command_line(error: &clap::Error) -> ExitCode {
    match error.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            // Printing help can only fail when stdout is gone; nothing is left to tell then.
            let _ = error.print();
            ExitCode::SUCCESS
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            eprintln!("error: {}", missing_sentence(&error.render().to_string()));
            ExitCode::from(2)
        }
        _ => {
            eprintln!("error: {}", usage_sentence(&error.render().to_string()));
            ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(2))
        }
    }
}

/// The error chain as one line: each message once, joined by `: `.
pub(crate) fn sentence(error: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in error.chain() {
        let text = one_line(&cause.to_string());
        // Some errors repeat their source's message in their own: say it once.
        if text.is_empty() || parts.iter().any(|part| part.contains(&text)) {
            continue;
        }
        parts.push(text);
    }
    parts.join(": ")
}

/// Clap's rendered usage error as one line: the error, its tips and context, and where to
/// find the usage (from the `Usage:` line, e.g. `p2psip init --help`).
fn usage_sentence(rendered: &str) -> String {
    let mut parts = Vec::new();
    let mut help = String::from("p2psip --help");
    for line in rendered.lines().map(str::trim) {
        if let Some(usage) = line.strip_prefix("Usage: ") {
            let command = command_path(usage);
            if !command.is_empty() {
                help = format!("{command} --help");
            }
        } else if line.is_empty() || line.starts_with("For more information") {
            continue;
        } else {
            parts.push(line.strip_prefix("error: ").unwrap_or(line).to_owned());
        }
    }
    format!("{}; see `{help}`", parts.join("; "))
}

/// What clap renders as the whole help when a command is missing its subcommand (or its
/// arguments), as one line: what is missing, the subcommands, where the help is.
fn missing_sentence(help: &str) -> String {
    let command = help
        .lines()
        .find_map(|line| line.trim().strip_prefix("Usage: "))
        .map(command_path)
        .unwrap_or_else(|| "p2psip".to_owned());
    let subcommands: Vec<&str> = help
        .lines()
        .skip_while(|line| line.trim() != "Commands:")
        .skip(1)
        .take_while(|line| !line.trim().is_empty())
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .collect();
    if subcommands.is_empty() {
        format!("`{command}` needs more arguments; see `{command} --help`")
    } else {
        format!(
            "`{command}` needs a command: {}; see `{command} --help`",
            subcommands.join(", ")
        )
    }
}

/// The command words of a usage line: `p2psip init [OPTIONS]` gives `p2psip init`.
fn command_path(usage: &str) -> String {
    usage
        .split_whitespace()
        .take_while(|word| !word.starts_with(['[', '<', '-']))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Collapses every run of whitespace, newlines included, to one space.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_becomes_one_line_without_repeats() {
        let error = anyhow::Error::new(std::io::Error::other("disk\nfull"))
            .context("cannot write /x/config.toml: disk full")
            .context("cannot set up /x; free some space");
        assert_eq!(
            sentence(&error),
            "cannot set up /x; free some space: cannot write /x/config.toml: disk full"
        );
    }

    #[test]
    fn a_missing_command_lists_the_commands() {
        let help = "Peer-to-peer SIP\n\nUsage: p2psip [OPTIONS] <COMMAND>\n\nCommands:\n  \
                    init    Set up\n  config  Print\n  help    Print this\n\nOptions:\n  \
                    -v, --verbose...  Log more\n";
        assert_eq!(
            missing_sentence(help),
            "`p2psip` needs a command: init, config; see `p2psip --help`"
        );
    }

    #[test]
    fn a_usage_error_becomes_one_line_naming_the_help() {
        let rendered = "error: unexpected argument '--forc' found\n\n  tip: a similar argument \
                        exists: '--force'\n\nUsage: p2psip init --force\n\nFor more \
                        information, try '--help'.\n";
        assert_eq!(
            usage_sentence(rendered),
            "unexpected argument '--forc' found; tip: a similar argument exists: '--force'; \
             see `p2psip init --help`"
        );
    }
}
