//! `p2psip user`: the users of a node's digest authentication, in its config file.
//!
//! `add NAME` writes a `[sip.users.NAME]` table with the user's HA1 hashes (SHA-256 and MD5
//! of `NAME:REALM:PASSWORD`, RFC 7616), never the password; `remove NAME` takes the table out;
//! `list` prints the names. The rest of the file, comments included, is left as it is, and
//! the new file is read back with every check of the config before it replaces the old one.
//! A running node reads its users when it starts: restart it.

use std::io::{BufRead as _, IsTerminal as _, Write as _};

use anyhow::{Context as _, anyhow, bail};
use p2psip_sip::auth::{Hash, ha1};

use crate::args::NodeArgs;
use crate::config::Config;
use crate::files::{self, Existing};

/// The end of `p2psip user --help`.
pub(crate) const USER_HELP: &str = "\
A node whose SIP address is not loopback (e.g. --sip-listen 192.0.2.10:5060) does not start
without a user. Add one, then give the softphone the same name and password:

    p2psip user add alice                      (asks for the password)
    echo secret | p2psip user add alice        (reads it from standard input)

A user registers only AORs of its own name (sip:alice@... for alice). Restart a running node
to use the change.";

/// The arguments of `p2psip user`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// What to do.
    #[command(subcommand)]
    action: Action,
}

/// `p2psip user add|remove|list`.
#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Add a user: its password's HA1 hashes go into the config file.
    Add {
        /// Which data directory and config file.
        #[command(flatten)]
        node: NodeArgs,
        /// The user name (letters, digits, '.', '_', '-'): the user part of its AORs.
        name: String,
        /// The password; without it, it is read from standard input (one line). On the
        /// command line it shows in the process list: prefer standard input.
        #[arg(long)]
        password: Option<String>,
    },
    /// Remove a user from the config file.
    Remove {
        /// Which data directory and config file.
        #[command(flatten)]
        node: NodeArgs,
        /// The user name.
        name: String,
    },
    /// Print the user names.
    List {
        /// Which data directory and config file.
        #[command(flatten)]
        node: NodeArgs,
    },
}

/// Runs `p2psip user`.
pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    let node = match &args.action {
        Action::Add { node, .. } | Action::Remove { node, .. } | Action::List { node } => node,
    };
    let loaded = node.load()?;
    let file = loaded.file;
    let text = if loaded.exists {
        std::fs::read_to_string(&file)
            .with_context(|| format!("cannot read the config file {}", file.display()))?
    } else {
        String::new()
    };
    let config = &loaded.config;
    let new = match args.action {
        Action::List { .. } => {
            for name in config.sip.users.keys() {
                println!("{name}");
            }
            return Ok(());
        }
        Action::Add { name, password, .. } => {
            check_name(&name)?;
            if config.sip.users.contains_key(&name) {
                bail!(
                    "{name} is already a user in {}; remove it first with `p2psip user remove \
                     {name}`",
                    file.display()
                );
            }
            let password = match password {
                Some(p) => p,
                None => read_password(&name)?,
            };
            if password.is_empty() {
                bail!("an empty password; give one on standard input or with --password");
            }
            add(&text, &name, &config.sip.realm, &password)
        }
        Action::Remove { name, .. } => remove(&text, &name).ok_or_else(|| {
            anyhow!(
                "no [sip.users.{name}] table in {}; `p2psip user list` names the users (a user \
                 written another way must be removed by editing the file)",
                file.display()
            )
        })?,
    };
    Config::parse(&new, &file)?;
    if let Some(folder) = file.parent() {
        std::fs::create_dir_all(folder)
            .with_context(|| format!("cannot create the folder {}", folder.display()))?;
    }
    files::write_atomically(&file, new.as_bytes(), Existing::Replace).with_context(|| {
        format!(
            "cannot write the config file {}; check that it is yours",
            file.display()
        )
    })?;
    println!(
        "{} written; restart a running node to use it",
        file.display()
    );
    Ok(())
}

/// A user name is a bare TOML key and a SIP user part without escapes.
fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !ok {
        bail!("`{name}` is not a user name: use 1 to 64 letters, digits, '.', '_' or '-'");
    }
    Ok(())
}

/// The password from standard input (a prompt on a terminal).
fn read_password(name: &str) -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    let _quiet = if stdin.is_terminal() {
        let quiet = Quiet::new(&stdin);
        let shown = if quiet.is_some() {
            ""
        } else {
            " (shown as typed)"
        };
        eprint!("password for {name}{shown}: ");
        let _ = std::io::stderr().flush();
        quiet
    } else {
        None
    };
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// The terminal's echo, off until dropped (the newline typed is still shown).
#[cfg(unix)]
struct Quiet(nix::sys::termios::Termios);

#[cfg(unix)]
impl Quiet {
    fn new(stdin: &std::io::Stdin) -> Option<Quiet> {
        use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
        let saved = tcgetattr(stdin).ok()?;
        let mut quiet = saved.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        quiet.local_flags.insert(LocalFlags::ECHONL);
        tcsetattr(stdin, SetArg::TCSANOW, &quiet).ok()?;
        Some(Quiet(saved))
    }
}

#[cfg(unix)]
impl Drop for Quiet {
    fn drop(&mut self) {
        use nix::sys::termios::{SetArg, tcsetattr};
        let _ = tcsetattr(std::io::stdin(), SetArg::TCSANOW, &self.0);
    }
}

/// Elsewhere the password shows as typed.
#[cfg(not(unix))]
struct Quiet;

#[cfg(not(unix))]
impl Quiet {
    fn new(_: &std::io::Stdin) -> Option<Quiet> {
        None
    }
}

/// `text` with a `[sip.users.NAME]` table added at its end.
fn add(text: &str, name: &str, realm: &str, password: &str) -> String {
    let mut new = text.to_owned();
    if !new.is_empty() && !new.ends_with('\n') {
        new.push('\n');
    }
    new.push_str(&format!(
        "\n[sip.users.{name}]\nha1_sha256 = \"{}\"\nha1_md5 = \"{}\"\n",
        ha1(Hash::Sha256, name, realm, password),
        ha1(Hash::Md5, name, realm, password),
    ));
    new
}

/// `text` without its `[sip.users.NAME]` table, if it has one.
fn remove(text: &str, name: &str) -> Option<String> {
    let header = format!("[sip.users.{name}]");
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.iter().position(|l| l.trim() == header)?;
    let end = lines[start + 1..]
        .iter()
        .position(|l| l.trim_start().starts_with('['))
        .map_or(lines.len(), |n| start + 1 + n);
    let mut kept: Vec<&str> = lines[..start].to_vec();
    while kept.last().is_some_and(|l| l.trim().is_empty()) {
        kept.pop();
    }
    kept.extend_from_slice(&lines[end..]);
    let mut new = kept.join("\n");
    new.push('\n');
    Some(new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_then_remove_leaves_the_file_as_it_was() {
        let text = crate::config::TEMPLATE;
        let added = add(text, "alice", "p2psip", "wonderland");
        let parsed = Config::parse(&added, std::path::Path::new("c.toml")).unwrap();
        let alice = &parsed.sip.users["alice"];
        assert_eq!(
            alice.ha1_sha256.as_deref(),
            Some(ha1(Hash::Sha256, "alice", "p2psip", "wonderland").as_str())
        );
        assert!(!added.contains("wonderland"), "the password is not stored");
        let both = add(&added, "bob", "p2psip", "builder");
        let removed = remove(&both, "alice").unwrap();
        let parsed = Config::parse(&removed, std::path::Path::new("c.toml")).unwrap();
        assert!(!parsed.sip.users.contains_key("alice"));
        assert!(parsed.sip.users.contains_key("bob"));
        assert_eq!(remove(&removed, "bob").unwrap().trim_end(), text.trim_end());
        assert!(remove(text, "carol").is_none());
        assert!(check_name("a b").is_err() && check_name("alice.w-1").is_ok());
    }
}
