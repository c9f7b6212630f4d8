//! The kinds of NAT a lab host can sit behind, their RFC 4787 behaviour, and the nftables
//! rulesets that make them.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where a lab host sits: on the internet segment itself, or behind a kind of NAT.
///
/// The stable short name ([`Nat::name`], also its `Display`, `FromStr` and serde form) is
/// what reports and the command line use: `public`, `dual-stack`, `full-cone`,
/// `port-restricted`, `symmetric`, `cgnat`.
///
/// Behaviour in RFC 4787's terms (§4.1 mapping, §5 filtering), as [`Nat::mapping`] and
/// [`Nat::filtering`] return it and the lab's tests prove it with the probe:
///
/// | kind | mapping | filtering |
/// | --- | --- | --- |
/// | `public`, `dual-stack` | none (the host's own address) | none (anything reaches it) |
/// | `full-cone` | endpoint-independent, port-preserving | endpoint-independent |
/// | `port-restricted` | endpoint-independent, port-preserving | address-and-port-dependent |
/// | `symmetric` | address-and-port-dependent (a random port per flow) | address-and-port-dependent |
/// | `cgnat` | endpoint-independent through two NATs | address-and-port-dependent |
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Nat {
    /// No NAT, IPv4 only: a public address on the internet segment (a bootstrap or relay
    /// node). Mapping: none. Filtering: none.
    Public,
    /// No NAT, dual stack: a public IPv4 address and a public IPv6 address
    /// (2001:db8:1::/64) on the internet segment. Mapping: none. Filtering: none.
    DualStack,
    /// Full cone (RFC 3489's name): endpoint-independent mapping (RFC 4787 §4.1, port
    /// preserved) and endpoint-independent filtering (§5): once the host sent from a port,
    /// any outside address and port reaches it there. Made with an nftables dynamic map
    /// `protocol . public port -> inside address` written by outbound packets and read by an
    /// inbound dnat rule for packets from anywhere.
    FullCone,
    /// Port-restricted cone, the usual home router: endpoint-independent mapping (port
    /// preserved by a plain `snat`) and address-and-port-dependent filtering (only
    /// conntrack-established flows come back in).
    PortRestricted,
    /// Symmetric, the corporate case: address-and-port-dependent mapping (RFC 4787 §4.1:
    /// `snat ... random` gives every new flow a random public port) and
    /// address-and-port-dependent filtering.
    Symmetric,
    /// Carrier-grade NAT (RFC 6888): a port-restricted home router whose outside address is
    /// on a carrier segment (192.0.2.0/24), behind the carrier's own port-restricted NAT;
    /// the internet sees the carrier's address. Mapping: endpoint-independent (both NATs
    /// preserve the port). Filtering: address-and-port-dependent.
    Cgnat,
}

impl Nat {
    /// Every kind, in the order of the table above.
    pub const ALL: [Nat; 6] = [
        Nat::Public,
        Nat::DualStack,
        Nat::FullCone,
        Nat::PortRestricted,
        Nat::Symmetric,
        Nat::Cgnat,
    ];

    /// The stable short name: `public`, `dual-stack`, `full-cone`, `port-restricted`,
    /// `symmetric`, `cgnat`.
    pub fn name(self) -> &'static str {
        match self {
            Nat::Public => "public",
            Nat::DualStack => "dual-stack",
            Nat::FullCone => "full-cone",
            Nat::PortRestricted => "port-restricted",
            Nat::Symmetric => "symmetric",
            Nat::Cgnat => "cgnat",
        }
    }

    /// Whether the host is behind a NAT router (and so on a LAN), not on the internet.
    pub fn is_translated(self) -> bool {
        !matches!(self, Nat::Public | Nat::DualStack)
    }

    /// The mapping behaviour (RFC 4787 §4.1) a host of this kind shows.
    pub fn mapping(self) -> Mapping {
        match self {
            Nat::Public | Nat::DualStack => Mapping::Direct,
            Nat::FullCone | Nat::PortRestricted | Nat::Cgnat => Mapping::EndpointIndependent,
            Nat::Symmetric => Mapping::AddressAndPortDependent,
        }
    }

    /// The filtering behaviour (RFC 4787 §5) a host of this kind shows.
    pub fn filtering(self) -> Filtering {
        match self {
            Nat::Public | Nat::DualStack | Nat::FullCone => Filtering::EndpointIndependent,
            Nat::PortRestricted | Nat::Symmetric | Nat::Cgnat => Filtering::AddressAndPortDependent,
        }
    }
}

impl fmt::Display for Nat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Nat {
    type Err = UnknownNat;

    fn from_str(s: &str) -> Result<Nat, UnknownNat> {
        Nat::ALL
            .into_iter()
            .find(|nat| nat.name() == s)
            .ok_or_else(|| UnknownNat(s.to_owned()))
    }
}

/// A NAT name that [`Nat::from_str`] does not know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownNat(pub String);

impl fmt::Display for UnknownNat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown NAT kind `{}`; the kinds are", self.0)?;
        for (i, nat) in Nat::ALL.iter().enumerate() {
            let sep = if i == 0 { " " } else { ", " };
            write!(f, "{sep}{nat}")?;
        }
        Ok(())
    }
}

impl std::error::Error for UnknownNat {}

/// How a NAT maps inside addresses and ports to outside ones (RFC 4787 §4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mapping {
    /// No translation: the outside sees the host's own address and port.
    Direct,
    /// One mapping per inside address and port, whatever the destination (§4.1 "EIM").
    EndpointIndependent,
    /// One mapping per destination address (§4.1 "ADM").
    AddressDependent,
    /// One mapping per destination address and port (§4.1 "APDM", symmetric NAT).
    AddressAndPortDependent,
}

impl Mapping {
    /// The stable short name: `direct`, `endpoint-independent`, `address-dependent`,
    /// `address-and-port-dependent`.
    pub fn name(self) -> &'static str {
        match self {
            Mapping::Direct => "direct",
            Mapping::EndpointIndependent => "endpoint-independent",
            Mapping::AddressDependent => "address-dependent",
            Mapping::AddressAndPortDependent => "address-and-port-dependent",
        }
    }

    /// Whether the mapped address depends on the destination (ADM or APDM): what
    /// "endpoint-dependent mapping" means, and what defeats plain hole punching.
    pub fn is_endpoint_dependent(self) -> bool {
        matches!(
            self,
            Mapping::AddressDependent | Mapping::AddressAndPortDependent
        )
    }
}

impl fmt::Display for Mapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which outside endpoints may send to a mapping (RFC 4787 §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Filtering {
    /// Anyone (§5 "EIF"; also a host without a NAT or firewall).
    EndpointIndependent,
    /// Only addresses the host sent to, from any of their ports (§5 "ADF").
    AddressDependent,
    /// Only the addresses and ports the host sent to (§5 "APDF").
    AddressAndPortDependent,
}

impl Filtering {
    /// The stable short name: `endpoint-independent`, `address-dependent`,
    /// `address-and-port-dependent`.
    pub fn name(self) -> &'static str {
        match self {
            Filtering::EndpointIndependent => "endpoint-independent",
            Filtering::AddressDependent => "address-dependent",
            Filtering::AddressAndPortDependent => "address-and-port-dependent",
        }
    }
}

impl fmt::Display for Filtering {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How one NAT router translates: what [`ruleset`] writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Translation {
    /// Dynamic-map full cone (EIM, EIF).
    FullCone,
    /// Port-preserving snat with conntrack filtering (EIM, APDF).
    PortRestricted,
    /// Random-port snat (APDM, APDF).
    Symmetric,
}

/// What a NAT router's ruleset needs to know: its interfaces are always `wan` (outside) and
/// `lan` (inside).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rules {
    /// How it translates.
    pub(crate) translation: Translation,
    /// The inside network and its prefix length.
    pub(crate) inside: (Ipv4Addr, u8),
    /// The outside address every inside host is translated to.
    pub(crate) outside: Ipv4Addr,
}

/// The name of the nftables table of a lab router.
const TABLE: &str = "p2psip_lab";
/// How many full-cone mappings a router keeps (bound everything).
const CONE_MAP_SIZE: u32 = 65_536;
/// How long an unused full-cone mapping lives (RFC 4787 REQ-5: at least 2 minutes, 5
/// recommended).
const CONE_TIMEOUT: &str = "5m";

/// The nftables ruleset (for `nft -f -`) of a router: one table, filter `forward` (inside to
/// outside always; back in only for conntrack-established flows, or dnat'ed ones for the
/// full cone), nat `postrouting` (snat to the outside address), and for the full cone the
/// `cone` map and a nat `prerouting` dnat through it.
pub(crate) fn ruleset(router: Rules) -> String {
    let (net, len) = router.inside;
    let inside = format!("{net}/{len}");
    let outside = router.outside;
    let mut rules = String::new();
    rules.push_str(&format!("table ip {TABLE} {{\n"));
    if router.translation == Translation::FullCone {
        rules.push_str(&format!(
            "  map cone {{\n\
             \x20   type inet_proto . inet_service : ipv4_addr\n\
             \x20   flags dynamic, timeout\n\
             \x20   timeout {CONE_TIMEOUT}\n\
             \x20   size {CONE_MAP_SIZE}\n\
             \x20 }}\n\
             \x20 chain prerouting {{\n\
             \x20   type nat hook prerouting priority dstnat; policy accept;\n\
             \x20   iifname \"wan\" ip daddr {outside} meta l4proto {{ tcp, udp }} \
             dnat ip to meta l4proto . th dport map @cone\n\
             \x20 }}\n"
        ));
    }
    // Unsolicited packets to the router itself are dropped before conntrack keeps their
    // flow: otherwise a hole punch that arrives before the inside host's own punch leaves
    // an entry whose reply tuple is the mapping that host is about to use, and Linux then
    // snats that host to another port (no longer endpoint-independent).
    rules.push_str(
        "  chain input {\n\
         \x20   type filter hook input priority filter; policy accept;\n\
         \x20   iifname \"wan\" ct state new drop\n\
         \x20 }\n",
    );
    rules.push_str(
        "  chain forward {\n\
         \x20   type filter hook forward priority filter; policy drop;\n",
    );
    if router.translation == Translation::FullCone {
        // Every outbound packet writes (or refreshes) its mapping: the inside port is the
        // public port, as the snat below keeps it.
        rules.push_str(&format!(
            "    iifname \"lan\" oifname \"wan\" ip saddr {inside} meta l4proto {{ tcp, udp }} \
             update @cone {{ meta l4proto . th sport : ip saddr }}\n"
        ));
    }
    // Bridged traffic between LAN hosts passes this hook too when br_netfilter is loaded.
    rules.push_str(
        "    iifname \"lan\" oifname \"lan\" accept\n\
         \x20   iifname \"lan\" oifname \"wan\" accept\n\
         \x20   iifname \"wan\" oifname \"lan\" ct state established,related accept\n",
    );
    if router.translation == Translation::FullCone {
        rules.push_str("    iifname \"wan\" oifname \"lan\" ct status dnat accept\n");
    }
    // Without a port range Linux keeps the source port when the resulting tuple is free,
    // which it is for one host talking to many destinations: EIM. The symmetric NAT's
    // random ports need a port range, so a transport protocol; other protocols (ICMP) get
    // the plain snat.
    let random = match router.translation {
        Translation::Symmetric => format!(
            "    oifname \"wan\" ip saddr {inside} meta l4proto {{ tcp, udp }} \
             snat ip to {outside}:1024-65535 random\n"
        ),
        Translation::FullCone | Translation::PortRestricted => String::new(),
    };
    rules.push_str(&format!(
        "  }}\n\
         \x20 chain postrouting {{\n\
         \x20   type nat hook postrouting priority srcnat; policy accept;\n\
         {random}\
         \x20   oifname \"wan\" ip saddr {inside} snat ip to {outside}\n\
         \x20 }}\n\
         }}\n"
    ));
    rules
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for nat in Nat::ALL {
            assert_eq!(nat.to_string().parse::<Nat>(), Ok(nat));
            assert_eq!(
                serde_json::to_string(&nat).unwrap(),
                format!("\"{}\"", nat.name())
            );
        }
        let err = "cone".parse::<Nat>().unwrap_err().to_string();
        assert!(err.contains("full-cone, port-restricted"), "{err}");
    }

    #[test]
    fn full_cone_ruleset_maps_and_dnats() {
        let rules = ruleset(Rules {
            translation: Translation::FullCone,
            inside: (Ipv4Addr::new(198, 51, 100, 0), 28),
            outside: Ipv4Addr::new(203, 0, 113, 11),
        });
        assert!(rules.contains("update @cone"), "{rules}");
        assert!(rules.contains("dnat ip to meta l4proto . th dport map @cone"));
        assert!(rules.contains("ip saddr 198.51.100.0/28 snat ip to 203.0.113.11\n"));
    }
}
