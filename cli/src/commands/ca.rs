//! `p2psip ca`: an overlay's enrollment CA (RELOAD's model, RFC 6940 §11.3), kept by whoever
//! decides who joins and which names belong to whom.
//!
//! `init DIR` makes the CA's key (`DIR/ca.key`, mode 0600, never replaced) and its public key
//! (`DIR/ca.pub`, what every node names as `overlay.enrollment_ca`); `node NODE_ID` prints a
//! Node-ID certificate (`overlay.node_certificate` of that node); `aor AOR USER_KEY` prints a
//! certificate that the AOR belongs to that user key (`overlay.aor_certificates` of the user's
//! node). `p2psip init` prints a node's Node-ID and user key.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, anyhow, bail};
use libp2p::PeerId;
use libp2p::identity::Keypair;
use p2psip_overlay::data::AorClaim;
use p2psip_overlay::identity::{NodeCertificate, is_self_certifying, public_key_from_hex};

use crate::config;
use crate::files::{self, Existing};

/// The end of `p2psip ca --help`.
pub(crate) const CA_HELP: &str = "\
An overlay with an enrollment CA admits only the Node-IDs the CA certified, and lets a user
claim an AOR (other than its self-certifying one) only with the CA's certificate:

    p2psip ca init ca                                 (once; give ca/ca.pub to every node)
    p2psip ca node 12D3KooW... --ca ca > node.cert    (for each node: its Node-ID)
    p2psip ca aor sip:alice@example.org 0801... --ca ca > alice.cert
                                                      (the user key `p2psip init` printed)

Each node's config then names them:

    [overlay]
    enrollment_ca = \"ca.pub\"
    node_certificate = \"node.cert\"
    aor_certificates = [\"alice.cert\"]";

/// The arguments of `p2psip ca`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// What to do.
    #[command(subcommand)]
    action: Action,
}

/// `p2psip ca init|node|aor`.
#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Make a CA: its key DIR/ca.key and its public key DIR/ca.pub.
    Init {
        /// The CA's directory (created, mode 0700).
        dir: PathBuf,
    },
    /// Print a Node-ID certificate (one line) for a node's config, overlay.node_certificate.
    Node {
        /// The Node-ID to certify (what `p2psip init` printed for the node).
        node_id: String,
        /// The CA's directory.
        #[command(flatten)]
        ca: Ca,
    },
    /// Print a certificate (one line) that an AOR belongs to a user key, for the config of
    /// that user's node, overlay.aor_certificates.
    Aor {
        /// The AOR, e.g. sip:alice@example.org.
        aor: String,
        /// The user's public key in hexadecimal (what `p2psip init` printed as "user key").
        user_key: String,
        /// The CA's directory.
        #[command(flatten)]
        ca: Ca,
    },
}

/// The CA a certificate comes from, and for how long.
#[derive(Debug, clap::Args)]
struct Ca {
    /// The CA's directory (made by `p2psip ca init`).
    #[arg(long, value_name = "DIR")]
    ca: PathBuf,
    /// How many days the certificate is valid.
    #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=3650))]
    days: u32,
}

impl Ca {
    fn key(&self) -> anyhow::Result<Keypair> {
        let path = self.ca.join(KEY_FILE);
        let bytes = std::fs::read(&path).with_context(|| {
            format!(
                "cannot read the CA key {}; make one with `p2psip ca init {}`",
                path.display(),
                self.ca.display()
            )
        })?;
        Keypair::from_protobuf_encoding(&bytes)
            .map_err(|_| anyhow!("{} is not a key (libp2p protobuf encoding)", path.display()))
    }

    fn expires_ms(&self) -> anyhow::Result<u64> {
        let until = SystemTime::now() + Duration::from_secs(u64::from(self.days) * 86_400);
        let ms = until
            .duration_since(UNIX_EPOCH)
            .context("the system clock is before 1970")?
            .as_millis();
        Ok(u64::try_from(ms).unwrap_or(u64::MAX))
    }
}

const KEY_FILE: &str = "ca.key";
const PUBLIC_FILE: &str = "ca.pub";

/// Runs `p2psip ca`.
pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    match args.action {
        Action::Init { dir } => init(&config::absolute(&dir)?),
        Action::Node { node_id, ca } => {
            let node: PeerId = node_id.trim().parse().map_err(|_| {
                anyhow!("{node_id:?} is not a Node-ID (a libp2p peer id, 12D3KooW...)")
            })?;
            let certificate = NodeCertificate::issue(&ca.key()?, node, ca.expires_ms()?)?;
            println!("{}", certificate.to_text());
            Ok(())
        }
        Action::Aor { aor, user_key, ca } => {
            let user = public_key_from_hex(&user_key).map_err(|error| {
                anyhow!("{error}; give the user key `p2psip init` printed (hexadecimal)")
            })?;
            if is_self_certifying(&aor) {
                bail!(
                    "{aor} is self-certifying: only its own key can hold it, and it needs no certificate"
                );
            }
            let claim = AorClaim::new(&aor, &user, ca.expires_ms()?)?.certified(&ca.key()?)?;
            println!("{}", claim.to_text());
            Ok(())
        }
    }
}

fn init(dir: &Path) -> anyhow::Result<()> {
    files::create_private_dir(dir).with_context(|| {
        format!(
            "cannot create the CA directory {}; check its parent's permissions",
            dir.display()
        )
    })?;
    let key = Keypair::generate_ed25519();
    let path = dir.join(KEY_FILE);
    let bytes = key
        .to_protobuf_encoding()
        .context("cannot encode the CA key")?;
    match files::write_atomically(&path, &bytes, Existing::Keep) {
        Ok(()) => {}
        Err(error) if error.kind() == ErrorKind::AlreadyExists => bail!(
            "{} exists: this CA is made already, and its key is never replaced (every \
             certificate depends on it)",
            path.display()
        ),
        Err(error) => {
            return Err(error).with_context(|| format!("cannot write {}", path.display()));
        }
    }
    let public = dir.join(PUBLIC_FILE);
    files::write_atomically(&public, &key.public().encode_protobuf(), Existing::Replace)
        .with_context(|| format!("cannot write {}", public.display()))?;
    println!("CA key:        {} (keep it private)", path.display());
    println!(
        "CA public key: {} (every node's overlay.enrollment_ca)",
        public.display()
    );
    Ok(())
}
