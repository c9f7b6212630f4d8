//! The config file: `config.toml` in the data directory (or the file `--config` names).
//!
//! Every key is optional and has a default, so no file at all is a working configuration.
//! Unknown keys are errors (`deny_unknown_fields` on every table), and every value is checked
//! where it is read, so a mistake is reported with its file, line, column and key
//! ([`FileError`]). `template.toml` documents every key with its default; `p2psip init` writes
//! it, and the tests check it stays equal to [`Config::default`].
//!
//! Where the file is: `--config FILE`, else `DIR/config.toml` with `--data-dir DIR`, else the
//! platform's config directory (`~/.config/p2psip/config.toml` on Linux).
//!
//! Precedence: `--data-dir` (or `P2PSIP_DATA_DIR`) over the file's `data_dir` over the
//! platform's data directory. Relative paths in a file are relative to the file's folder.

mod error;
mod value;

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read as _};
use std::net::SocketAddr;
use std::num::{NonZeroU64, NonZeroUsize};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow, bail};
use serde::{Deserialize, Serialize};

pub(crate) use self::error::FileError;
pub(crate) use self::value::{ListenAddr, NodeIdWork, OverlayName, PeerAddr, Replicas, SipListen};

/// The config file's name in a data directory.
pub(crate) const FILE_NAME: &str = "config.toml";

/// The commented config file `p2psip init` writes: every key, commented out at its default.
pub(crate) const TEMPLATE: &str = include_str!("template.toml");

/// The largest config file read: a config is a few hundred bytes.
const MAX_FILE_SIZE: u64 = 1024 * 1024;

/// The configuration of a node. `template.toml` says what each key means.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Config {
    /// The data directory: keys and the store. `None` in a file: the default, see the module.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) data_dir: Option<PathBuf>,
    /// The overlay to join and how.
    pub(crate) overlay: Overlay,
    /// The local SIP service for softphones.
    pub(crate) sip: Sip,
    /// The circuit relay this node serves, and the reservations it makes behind NAT.
    pub(crate) relay: Relay,
    /// The media of this node's softphones.
    pub(crate) media: Media,
    /// The local control API the other commands use.
    pub(crate) control: Control,
}

/// `[media]`: the node anchors its softphones' RTP and carries it to the other end node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Media {
    /// Rewrite the softphones' SDP to the node's own ports and carry the media. Default on.
    pub(crate) anchor: bool,
    /// The address written into the SDP softphones receive. Default: the SIP address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) address: Option<std::net::IpAddr>,
    /// Calls with media at once. Default 256.
    pub(crate) max_sessions: NonZeroUsize,
    /// A call with no packet either way for this long, in seconds, loses its media ports.
    /// Default 600.
    pub(crate) idle_seconds: NonZeroU64,
}

impl Default for Media {
    fn default() -> Media {
        let media = p2psip_node::media::Config::default();
        Media {
            anchor: media.enabled,
            address: media.address,
            max_sessions: nonzero(media.max_sessions),
            idle_seconds: NonZeroU64::new(media.idle_timeout.as_secs()).unwrap_or(NonZeroU64::MIN),
        }
    }
}

impl Media {
    /// The node's media configuration.
    pub(crate) fn config(&self) -> p2psip_node::media::Config {
        p2psip_node::media::Config::default()
            .enabled(self.anchor)
            .address(self.address)
            .max_sessions(self.max_sessions.get())
            .idle_timeout(std::time::Duration::from_secs(self.idle_seconds.get()))
    }
}

/// `[relay]`: NAT traversal. A reachable node relays for the overlay's nodes behind NAT; an
/// unreachable one reserves slots on relays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Relay {
    /// When to serve relay: `auto` (once AutoNAT confirms a public address), `on`, `off`.
    pub(crate) mode: RelayMode,
    /// On how many relays to reserve a slot while behind NAT. Default 2.
    pub(crate) reservations: usize,
    /// Reservations held at once, all peers together. Default 128.
    pub(crate) max_reservations: NonZeroUsize,
    /// Reservations held at once by one peer. Default 4.
    pub(crate) max_reservations_per_peer: NonZeroUsize,
    /// Circuits open at once, all peers together. Default 64.
    pub(crate) max_circuits: NonZeroUsize,
    /// Circuits open at once from or to one peer. Default 8.
    pub(crate) max_circuits_per_peer: NonZeroUsize,
    /// How long one circuit may stay open, in seconds. Default 43200 (12 hours).
    pub(crate) max_circuit_seconds: NonZeroU64,
    /// How many bytes one circuit may carry. Default 4 GiB.
    pub(crate) max_circuit_bytes: NonZeroU64,
}

/// The overlay's defaults are never zero; a zero would be refused when the network starts.
fn nonzero(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN)
}

/// `relay.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RelayMode {
    /// Serve once AutoNAT confirms a public address.
    Auto,
    /// Always serve.
    On,
    /// Never serve.
    Off,
}

impl Default for Relay {
    fn default() -> Relay {
        let limits = p2psip_overlay::network::RelayLimits::default();
        Relay {
            mode: RelayMode::Auto,
            reservations: 2,
            max_reservations: nonzero(limits.max_reservations),
            max_reservations_per_peer: nonzero(limits.max_reservations_per_peer),
            max_circuits: nonzero(limits.max_circuits),
            max_circuits_per_peer: nonzero(limits.max_circuits_per_peer),
            max_circuit_seconds: NonZeroU64::new(limits.max_circuit_duration.as_secs())
                .unwrap_or(NonZeroU64::MIN),
            max_circuit_bytes: NonZeroU64::new(limits.max_circuit_bytes).unwrap_or(NonZeroU64::MIN),
        }
    }
}

impl Relay {
    /// The overlay's relay mode.
    pub(crate) fn mode(&self) -> p2psip_overlay::network::Relay {
        use p2psip_overlay::network::Relay;
        match self.mode {
            RelayMode::Auto => Relay::Auto,
            RelayMode::On => Relay::On,
            RelayMode::Off => Relay::Off,
        }
    }

    /// The overlay's relay limits.
    pub(crate) fn limits(&self) -> p2psip_overlay::network::RelayLimits {
        let mut limits = p2psip_overlay::network::RelayLimits::default();
        limits.max_reservations = self.max_reservations.get();
        limits.max_reservations_per_peer = self.max_reservations_per_peer.get();
        limits.max_circuits = self.max_circuits.get();
        limits.max_circuits_per_peer = self.max_circuits_per_peer.get();
        limits.max_circuit_duration =
            std::time::Duration::from_secs(self.max_circuit_seconds.get());
        limits.max_circuit_bytes = self.max_circuit_bytes.get();
        limits
    }
}

/// `[overlay]`: which overlay to join, where to listen, whom to ask first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Overlay {
    /// The overlay's name, part of every protocol name. Default `p2psip`.
    pub(crate) name: OverlayName,
    /// Where the overlay listens; at least one. Default QUIC on all IPv4 addresses.
    #[serde(deserialize_with = "non_empty")]
    pub(crate) listen: Vec<ListenAddr>,
    /// Peers to join through, each ending with `/p2p/<peer id>`. Default none.
    pub(crate) bootstrap: Vec<PeerAddr>,
    /// Find peers on the local network with mDNS. Default on.
    pub(crate) mdns: bool,
    /// How many peers hold each resource. Default 3.
    pub(crate) replicas: Replicas,
    /// The public key file of the overlay's enrollment CA; with one, AOR claims need its
    /// certificate. Default none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) enrollment_ca: Option<PathBuf>,
    /// This node's Node-ID certificate from the enrollment CA (a file with one line,
    /// `p2psip-node-cert-v1:<hex>`). Default none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) node_certificate: Option<PathBuf>,
    /// The enrollment CA's certificates of this node's user for AORs (files of one line each,
    /// `p2psip-aor-cert-v1:<hex>`). Default none.
    pub(crate) aor_certificates: Vec<PathBuf>,
    /// The bits of work every Node-ID of the overlay must carry. Default 0.
    pub(crate) node_id_work: NodeIdWork,
}

/// `[sip]`: the SIP ports softphones register to, and who may use them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Sip {
    /// The SIP listen addresses. Default UDP and TCP on 127.0.0.1:5060.
    pub(crate) listen: Vec<SipListen>,
    /// Demand digest authentication from the softphones. Default: on when a listen address
    /// is not loopback (and it cannot be turned off there).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) require_auth: Option<bool>,
    /// The digest realm. Default `p2psip`.
    pub(crate) realm: String,
    /// `[sip.users.NAME]`: the users of digest authentication.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) users: BTreeMap<String, User>,
}

/// `[sip.users.NAME]`: what the node keeps of a user: HA1 hashes (what `p2psip user add`
/// writes), or the password in clear.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, try_from = "RawUser")]
pub(crate) struct User {
    /// The password in clear, if given so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) password: Option<String>,
    /// `SHA-256(NAME:REALM:PASSWORD)` in hex.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) ha1_sha256: Option<String>,
    /// `MD5(NAME:REALM:PASSWORD)` in hex, for softphones that only know MD5.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) ha1_md5: Option<String>,
}

/// A [`User`] as written, before its checks.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUser {
    password: Option<String>,
    ha1_sha256: Option<String>,
    ha1_md5: Option<String>,
}

impl TryFrom<RawUser> for User {
    type Error = String;

    fn try_from(raw: RawUser) -> Result<User, String> {
        let hex = |value: &Option<String>, len: usize, key: &str| match value {
            Some(v) if v.len() != len || !v.bytes().all(|b| b.is_ascii_hexdigit()) => Err(format!(
                "{key} must be {len} hex digits (write it with `p2psip user add NAME`)"
            )),
            _ => Ok(()),
        };
        hex(&raw.ha1_sha256, 64, "ha1_sha256")?;
        hex(&raw.ha1_md5, 32, "ha1_md5")?;
        if raw.password.is_none() && raw.ha1_sha256.is_none() && raw.ha1_md5.is_none() {
            return Err(
                "a user needs ha1_sha256 (and ha1_md5), or a password; add one with \
                        `p2psip user add NAME`"
                    .into(),
            );
        }
        Ok(User {
            password: raw.password,
            ha1_sha256: raw.ha1_sha256,
            ha1_md5: raw.ha1_md5,
        })
    }
}

impl User {
    /// The node's credential of this user.
    pub(crate) fn credential(&self) -> p2psip_sip::auth::Credential {
        use p2psip_sip::auth::{Credential, Hash};
        if let Some(password) = &self.password {
            return Credential::Password(password.clone());
        }
        let mut hashes = Vec::new();
        if let Some(h) = &self.ha1_sha256 {
            hashes.push((Hash::Sha256, h.to_ascii_lowercase()));
        }
        if let Some(h) = &self.ha1_md5 {
            hashes.push((Hash::Md5, h.to_ascii_lowercase()));
        }
        Credential::Ha1(hashes)
    }
}

/// The realm of [`Sip::realm`]'s default.
pub(crate) const DEFAULT_REALM: &str = "p2psip";

/// `[control]`: the local API of a running node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Control {
    /// The control API's address. Default 127.0.0.1 on a port the system picks.
    pub(crate) listen: SocketAddr,
}

/// The effective configuration and where it came from.
#[derive(Debug, Clone)]
pub(crate) struct Loaded {
    /// The configuration, with `data_dir` set.
    pub(crate) config: Config,
    /// The config file read, or looked for.
    pub(crate) file: PathBuf,
    /// Whether the file exists (without one, the configuration is the defaults).
    pub(crate) exists: bool,
}

impl Default for Overlay {
    fn default() -> Overlay {
        Overlay {
            name: OverlayName::p2psip(),
            listen: vec![ListenAddr::any_quic()],
            bootstrap: Vec::new(),
            mdns: true,
            replicas: Replicas::DEFAULT,
            enrollment_ca: None,
            node_certificate: None,
            aor_certificates: Vec::new(),
            node_id_work: NodeIdWork::default(),
        }
    }
}

impl Default for Sip {
    fn default() -> Sip {
        Sip {
            listen: vec![SipListen::loopback()],
            require_auth: None,
            realm: DEFAULT_REALM.to_owned(),
            users: BTreeMap::new(),
        }
    }
}

impl Default for Control {
    fn default() -> Control {
        Control {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        }
    }
}

impl Config {
    /// Parses `text`, the contents of `file`; `file` only names it in errors.
    pub(crate) fn parse(text: &str, file: &Path) -> Result<Config, FileError> {
        toml::from_str(text).map_err(|error| FileError::new(file, text, &error))
    }

    /// Makes the file's relative paths relative to `folder`, the file's folder.
    fn resolve_paths(&mut self, folder: &Path) {
        for path in [
            &mut self.data_dir,
            &mut self.overlay.enrollment_ca,
            &mut self.overlay.node_certificate,
        ]
        .into_iter()
        .flatten()
        .chain(&mut self.overlay.aor_certificates)
        {
            if path.is_relative() {
                *path = folder.join(&*path);
            }
        }
    }
}

/// Loads the effective configuration: `file` (default `<data dir>/config.toml`, where a
/// missing file means the defaults), with `data_dir` (from `--data-dir`) over the file's.
pub(crate) fn load(data_dir: Option<&Path>, file: Option<&Path>) -> anyhow::Result<Loaded> {
    let given_dir = data_dir.map(absolute).transpose()?;
    let (file, must_exist) = match file {
        Some(file) => (absolute(file)?, true),
        None => (default_file(given_dir.as_deref())?, false),
    };
    let (mut config, exists) = match read(&file)? {
        Some(text) => (Config::parse(&text, &file)?, true),
        None if must_exist => bail!(
            "the config file {} does not exist; check the path given with --config (or \
             P2PSIP_CONFIG), or run `p2psip init` to write one",
            file.display()
        ),
        None => (Config::default(), false),
    };
    config.resolve_paths(file.parent().unwrap_or(Path::new("/")));
    config.data_dir = match (given_dir, config.data_dir.take()) {
        (Some(dir), _) | (None, Some(dir)) => Some(dir),
        (None, None) => Some(default_data_dir()?),
    };
    Ok(Loaded {
        config,
        file,
        exists,
    })
}

/// Where the config file is when `--config` does not say: in the data directory given with
/// `--data-dir`, else in the platform's config directory (`~/.config/p2psip/config.toml` on
/// Linux).
pub(crate) fn default_file(data_dir: Option<&Path>) -> anyhow::Result<PathBuf> {
    match data_dir {
        Some(dir) => Ok(dir.join(FILE_NAME)),
        None => directories::ProjectDirs::from("", "", "p2psip")
            .map(|dirs| dirs.config_dir().join(FILE_NAME))
            .ok_or_else(|| {
                anyhow!(
                    "cannot find a home directory for the default config file; give one with \
                     --config FILE, or a data directory with --data-dir DIR"
                )
            }),
    }
}

/// The platform's data directory for p2psip, e.g. `~/.local/share/p2psip` on Linux.
pub(crate) fn default_data_dir() -> anyhow::Result<PathBuf> {
    directories::ProjectDirs::from("", "", "p2psip")
        .map(|dirs| dirs.data_dir().to_path_buf())
        .ok_or_else(|| {
            anyhow!(
                "cannot find a home directory for the default data directory; give one with \
                 --data-dir DIR (or P2PSIP_DATA_DIR)"
            )
        })
}

/// `path` made absolute against the working directory, so what is printed can be used from
/// anywhere.
pub(crate) fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(path).with_context(|| {
        format!(
            "cannot make {} an absolute path (is the working directory gone?); give an \
             absolute path",
            path.display()
        )
    })
}

/// The file's text, or `None` when there is no such file.
fn read(file: &Path) -> anyhow::Result<Option<String>> {
    let cannot = || {
        format!(
            "cannot read the config file {}; check that it is a file you may read",
            file.display()
        )
    };
    let handle = match std::fs::File::open(file) {
        Ok(handle) => handle,
        Err(error) if error.kind() == ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error).with_context(cannot),
    };
    let mut bytes = Vec::new();
    handle
        .take(MAX_FILE_SIZE + 1)
        .read_to_end(&mut bytes)
        .with_context(cannot)?;
    if bytes.len() as u64 > MAX_FILE_SIZE {
        bail!(
            "the config file {} is over 1 MiB; a config is a few lines of TOML, check that \
             this is the right file",
            file.display()
        );
    }
    String::from_utf8(bytes).map(Some).map_err(|_| {
        anyhow!(
            "the config file {} is not UTF-8 text; a config file is TOML, save it as UTF-8",
            file.display()
        )
    })
}

/// A list that must hold at least one item.
fn non_empty<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    let items = Vec::<T>::deserialize(deserializer)?;
    if items.is_empty() {
        return Err(serde::de::Error::custom(
            "the list is empty; give at least one address, e.g. [\"/ip4/0.0.0.0/udp/0/quic-v1\"]",
        ));
    }
    Ok(items)
}

#[cfg(test)]
mod tests;
