//! Which peers a node takes into its routing table, its replica sets and its relay: the
//! overlay's admission rules (see [`crate::identity`]'s docs), sans-IO.
//!
//! A peer is admitted when its Node-ID carries the overlay's Node-ID work and, in an overlay
//! with an enrollment CA, when identify announced a valid certificate from that CA for it
//! (`p2psip/<version> p2psip-node-cert-v1:<hex>` in its agent version). Identify runs over the
//! connection's authenticated channel (noise or QUIC's TLS), so the announced certificate is
//! the peer's own: a certificate copied from another node names another Node-ID.

use libp2p::PeerId;
use libp2p::identity::PublicKey;

use super::Config;
use crate::identity::{NodeCertificate, node_id_work};

/// The admission rules of one overlay.
#[derive(Debug, Clone)]
pub(crate) struct Admission {
    ca: Option<PublicKey>,
    work: u32,
}

impl Admission {
    pub(crate) fn new(config: &Config) -> Admission {
        Admission {
            ca: config.enrollment_ca.clone(),
            work: config.node_id_work,
        }
    }

    /// Whether admission needs identify (an enrollment CA): without one, the Node-ID alone
    /// decides.
    pub(crate) fn needs_certificate(&self) -> bool {
        self.ca.is_some()
    }

    /// Whether a Node-ID carries the overlay's work: a cheap check for peers this node only
    /// heard of (Kademlia answers) before it uses them.
    pub(crate) fn has_work(&self, peer: &PeerId) -> bool {
        self.work == 0 || node_id_work(peer) >= self.work
    }

    /// Whether a peer that identify described with `agent_version` is admitted at `now_ms`;
    /// the error is the reason, for the log.
    pub(crate) fn check(
        &self,
        peer: &PeerId,
        agent_version: &str,
        now_ms: u64,
    ) -> Result<(), String> {
        if !self.has_work(peer) {
            return Err(format!(
                "its Node-ID has {} bits of work and this overlay asks for {}",
                node_id_work(peer),
                self.work
            ));
        }
        let Some(ca) = &self.ca else {
            return Ok(());
        };
        let text = announced_certificate(agent_version)
            .ok_or("it announced no Node-ID certificate from this overlay's enrollment CA")?;
        let certificate = NodeCertificate::from_text(text).map_err(|error| error.to_string())?;
        certificate
            .verify(ca, peer, now_ms)
            .map_err(|error| error.to_string())
    }
}

/// The Node-ID certificate a node announced in its agent version, as text, if any.
pub(crate) fn announced_certificate(agent_version: &str) -> Option<&str> {
    agent_version
        .split_whitespace()
        .find(|word| word.starts_with("p2psip-node-cert-"))
}

/// The agent version a node announces: its software, and its certificate when it has one.
pub(crate) fn agent_version(config: &Config) -> String {
    let software = format!("p2psip/{}", env!("CARGO_PKG_VERSION"));
    match &config.certificate {
        Some(certificate) => format!("{software} {}", certificate.to_text()),
        None => software,
    }
}

#[cfg(test)]
mod tests {
    use libp2p::identity::Keypair;

    use super::*;
    use crate::identity::NodeKey;

    #[test]
    fn an_open_overlay_admits_everyone() {
        let admission = Admission::new(&Config::default());
        assert!(admission.check(&PeerId::random(), "anything", 0).is_ok());
        assert!(!admission.needs_certificate());
    }

    #[test]
    fn work_is_checked_on_the_node_id() {
        let config = Config::default().with_node_id_work(8);
        let admission = Admission::new(&config);
        let cheap = loop {
            let peer = PeerId::random();
            if node_id_work(&peer) < 8 {
                break peer;
            }
        };
        let reason = admission.check(&cheap, "p2psip/0.1.0", 0).unwrap_err();
        assert!(reason.contains("bits of work"), "{reason}");
        let costly = NodeKey::generate_with_work(8).node_id();
        assert!(admission.check(&costly, "p2psip/0.1.0", 0).is_ok());
    }

    #[test]
    fn with_a_ca_only_the_certified_node_is_admitted() {
        let ca = Keypair::generate_ed25519();
        let node = NodeKey::generate().node_id();
        let certificate = NodeCertificate::issue(&ca, node, 10_000).unwrap();
        let config = Config::default().with_enrollment(ca.public(), Some(certificate.clone()));
        let admission = Admission::new(&config);
        let announced = agent_version(&config);
        assert!(admission.check(&node, &announced, 1).is_ok());
        // Copied to another node, the certificate names the wrong Node-ID.
        let thief = PeerId::random();
        let reason = admission.check(&thief, &announced, 1).unwrap_err();
        assert!(reason.contains("another Node-ID"), "{reason}");
        let reason = admission.check(&node, "p2psip/0.1.0", 1).unwrap_err();
        assert!(reason.contains("no Node-ID certificate"), "{reason}");
        assert!(admission.check(&node, &announced, 10_000).is_err());
        let other_ca = Keypair::generate_ed25519();
        let forged = NodeCertificate::issue(&other_ca, node, 10_000).unwrap();
        let reason = admission
            .check(&node, &format!("p2psip/0.1.0 {}", forged.to_text()), 1)
            .unwrap_err();
        assert!(reason.contains("not signed"), "{reason}");
    }
}
