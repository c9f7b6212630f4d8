//! # A network lab on one machine: hosts behind real NATs
//!
//! A [`Lab`] is a set of Linux network namespaces joined by veth links and bridges, with NAT
//! routers made of nftables rules, for tests, benches and the command line to run real
//! `p2psip node` processes, baresip softphones and in-process probes on hosts behind NATs of
//! known behaviour ([`Nat`]). It needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN), `ip`
//! (iproute2) and `nft` (nftables); [`require_lab`] is the tests' check.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use p2psip_testnet::lab::{Lab, Nat, Probe};
//!
//! let lab = Lab::builder()
//!     .public_host("relay")
//!     .public_host("stun")
//!     .host("alice", Nat::FullCone)
//!     .host("bob", Nat::Symmetric)
//!     .lan("office", Nat::PortRestricted)
//!     .host_on("carol", "office")
//!     .host_on("dave", "office")
//!     .build()?;
//! let relay = lab.host("relay")?;
//! let node = relay.command("p2psip").arg("node").spawn()?;
//! let socket = lab.host("alice")?.run(|| std::net::UdpSocket::bind("0.0.0.0:5060"))??;
//! let report = Probe::new(lab.host("bob")?, relay, lab.host("stun")?).udp()?;
//! assert!(report.mapping.is_endpoint_dependent());
//! # drop((node, socket)); Ok(()) }
//! ```
//!
//! # Topology and address plan
//!
//! Documentation ranges only (RFC 5737, RFC 3849): nothing in a lab can reach or shadow a
//! real network, and the root namespace gets no link, route or rule.
//!
//! ```text
//! Lab::builder().public_host("relay").host("carol", Nat::DualStack)
//!     .lan("home", Nat::PortRestricted).host_on("alice", "home").host_on("bob", "home")
//!     .lan("far", Nat::Cgnat).host_on("dave", "far")
//!
//! <prefix>inet: bridge br0, the internet: 203.0.113.0/24 and 2001:db8:1::/64, no routes
//!   |                   |                    |                       |
//! h-relay             h-carol              nat-home                cgn-far
//! eth0 203.0.113.10   eth0 203.0.113.11    wan 203.0.113.12        wan 203.0.113.13
//!                     2001:db8:1::11       lan 198.51.100.1/28     lan 192.0.2.17/28
//!                                            |         |             | carrier segment
//!                                          h-alice   h-bob         nat-far
//!                                          .2        .3            wan 192.0.2.18/28
//!                                                                  lan 198.51.100.17/28
//!                                                                    |
//!                                                                  h-dave .18
//! ```
//!
//! - **Namespaces** are named `<prefix><role>`, the prefix `p2l<pid>x<n>-` unique per lab
//!   (process id, then a counter of the process): `inet` (the internet bridge), `h-<host>`,
//!   `nat-<lan>` (a LAN's router), `cgn-<lan>` (a CGNAT LAN's carrier NAT).
//! - **The internet** (`inet`, bridge `br0`): 203.0.113.(10 + i)/24, one address per
//!   attachment in the order of the builder calls (a public host takes one, a LAN's router
//!   or carrier takes one). Dual-stack hosts also get 2001:db8:1::(the same digits)/64, e.g.
//!   203.0.113.11 and 2001:db8:1::11. There is no default route: the segment is all the
//!   internet there is.
//! - **LAN k** (the k-th LAN declared, k < 16), bridge `lan` in `nat-<lan>`:
//!   198.51.100.(16 k)/28, the router .(16 k + 1) (the hosts' default route), hosts from
//!   .(16 k + 2), up to 13 of them in the order they were added. Hosts keep an `eth0`
//!   each; LAN hosts see each other directly (multicast included: the bridges do no
//!   multicast snooping), which is what an mDNS test needs.
//! - **Carrier segment k** (only for a [`Nat::Cgnat`] LAN k): a veth between `cgn-<lan>`
//!   (`lan`, 192.0.2.(16 k + 1)/28, the home router's default route) and the home router
//!   (`wan`, 192.0.2.(16 k + 2)/28). The carrier's `wan` is on the internet.
//!
//! # The NATs
//!
//! A router's namespace has IPv4 forwarding on and one nftables table, `p2psip_lab`, with
//! its outside interface `wan` and inside interface `lan`: a filter `forward` chain (inside
//! to outside always; back in only for conntrack-established flows) and a nat `postrouting`
//! chain that snats the inside network to the outside address. The kinds ([`Nat`] has the
//! RFC 4787 behaviour of each):
//!
//! - `full-cone`: a dynamic map `cone` (`protocol . port -> inside address`, at most 65536
//!   entries, 5 minutes after the last outbound packet) that every outbound UDP or TCP
//!   packet updates, and a nat `prerouting` rule that dnats inbound packets from any
//!   address through it. Port-preserving snat, so the public port is the inside port.
//! - `port-restricted`: port-preserving snat (Linux keeps the source port when the tuple is
//!   free), conntrack filtering.
//! - `symmetric`: `snat to <outside>:1024-65535 random`: each flow a random port.
//! - `cgnat`: two port-restricted NATs in a row, the home router's and the carrier's.
//!
//! None of them hairpins (a LAN host cannot reach another through the public address) and
//! none translates IPv6; NAT hosts have no IPv6 address but their link-local ones.
//!
//! # Driving it
//!
//! [`Host::command`] is a `std::process::Command` that runs inside the host
//! (`ip netns exec`); [`Host::run`] runs a closure on a fresh thread inside the host's
//! namespace (`setns`) and [`Host::spawn`] starts such a thread for longer work (a server, a
//! tokio runtime). Sockets opened there stay in that namespace: the closure may return them
//! and the test uses them from any thread. [`Probe`] measures what a NAT does. A process in a
//! host has its own loopback: a node's control port on 127.0.0.1 inside a host is reached
//! from a thread in that host.
//!
//! [`scenario`] is the run behind `p2psip testnet run --lab`: a public relay and one host per
//! NAT kind, each with a real node, whose built-in agents register and call each other.
//!
//! # Cleanup
//!
//! Dropping the [`Lab`] kills (SIGKILL) every process whose network namespace is one of its
//! namespaces (whoever started it) and deletes its namespaces, with their links, bridges and
//! rules. Drop runs when a test panics, too; it reports what it could not remove on stderr
//! and never panics. A failed [`Builder::build`] removes what it made. A process killed
//! before its labs were dropped leaves namespaces behind: every build first deletes the
//! namespaces `p2l<pid>x<n>-...` whose process `<pid>` no longer exists, so a next run
//! never finds leftovers. Threads from [`Host::spawn`] are not stopped: end them before the
//! lab goes (a socket still open keeps its namespace alive, unnamed, until it is closed).

mod nat;
mod netns;
mod node;
mod plan;
mod probe;
pub mod scenario;

pub use nat::{Filtering, Mapping, Nat, UnknownNat};
pub use netns::Namespace;
pub use node::{NodeProcess, RELAY_LISTEN, SIP};
pub use probe::{Observation, Probe, Report, Transport};

use std::collections::HashSet;
use std::ffi::OsStr;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

use anyhow::{Context as _, Result, bail, ensure};

use nat::{Rules, Translation};
use netns::LAB_MARK;

/// The longest host or LAN name.
pub const MAX_NAME: usize = 24;

/// A network lab: its namespaces, hosts and LANs, removed when it is dropped. Made by
/// [`Lab::builder`]; see the [module docs](self).
#[derive(Debug)]
pub struct Lab {
    prefix: String,
    internet: Namespace,
    hosts: Vec<Host>,
    lans: Vec<Lan>,
    /// Every namespace made, in the order it was made.
    made: Vec<Namespace>,
}

impl Lab {
    /// A builder for a lab with nothing in it yet.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// The prefix of every namespace name of this lab, `p2l<pid>x<n>-`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The host called `name`.
    pub fn host(&self, name: &str) -> Result<&Host> {
        match self.hosts.iter().find(|h| h.name == name) {
            Some(host) => Ok(host),
            None => bail!(
                "the lab has no host `{name}` (it has: {})",
                self.hosts
                    .iter()
                    .map(Host::name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    /// Every host, public ones and LAN ones, in the order they were made.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// The LAN called `name` (a host added with [`Builder::host`] behind a NAT has a LAN of
    /// its own, of its name).
    pub fn lan(&self, name: &str) -> Result<&Lan> {
        match self.lans.iter().find(|l| l.name == name) {
            Some(lan) => Ok(lan),
            None => bail!(
                "the lab has no LAN `{name}` (it has: {})",
                self.lans
                    .iter()
                    .map(Lan::name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    /// Every LAN, in the order they were declared.
    pub fn lans(&self) -> &[Lan] {
        &self.lans
    }

    /// The namespace holding the internet bridge (`br0`).
    pub fn internet(&self) -> &Namespace {
        &self.internet
    }

    /// Every namespace of the lab.
    pub fn namespaces(&self) -> &[Namespace] {
        &self.made
    }

    /// Creates the namespace `<prefix><role>`, remembered for Drop before it is configured.
    fn namespace(&mut self, role: &str) -> Result<Namespace> {
        let namespace = Namespace::add(format!("{}{role}", self.prefix))?;
        self.made.push(namespace.clone());
        namespace.ip(&["link", "set", "lo", "up"])?;
        Ok(namespace)
    }

    /// Links `namespace` to the internet bridge as its `ifname` (the bridge port is
    /// `p<i>`), with the `i`-th internet address; returns that address.
    fn attach(
        &self,
        namespace: &Namespace,
        i: usize,
        ifname: &str,
        ipv6: bool,
    ) -> Result<Ipv4Addr> {
        let port = format!("p{i}");
        self.internet.ip(&[
            "link",
            "add",
            &port,
            "master",
            "br0",
            "up",
            "type",
            "veth",
            "peer",
            "name",
            ifname,
            "netns",
            namespace.name(),
        ])?;
        let v4 = plan::internet_v4(i);
        namespace.ip(&["addr", "add", &cidr(v4, plan::INTERNET_V4.1), "dev", ifname])?;
        if ipv6 {
            let v6 = plan::internet_v6(i);
            namespace.ip(&[
                "-6",
                "addr",
                "add",
                &format!("{v6}/{}", plan::INTERNET_V6.1),
                "dev",
                ifname,
                "nodad",
            ])?;
        }
        namespace.ip(&["link", "set", ifname, "up"])?;
        Ok(v4)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Processes first (they would keep the namespaces alive, unnamed), then namespaces.
        for namespace in &self.made {
            if let Err(e) = namespace.kill_all() {
                report_leftover(namespace, &e);
            }
        }
        for namespace in self.made.iter().rev() {
            if let Err(e) = namespace.delete() {
                report_leftover(namespace, &e);
            }
        }
    }
}

/// A host of a lab: a network namespace with one interface, `eth0`.
#[derive(Clone, Debug)]
pub struct Host {
    name: String,
    nat: Nat,
    namespace: Namespace,
    ipv4: Ipv4Addr,
    ipv6: Option<Ipv6Addr>,
    public_ipv4: Ipv4Addr,
    gateway: Option<Ipv4Addr>,
    lan: Option<String>,
}

impl Host {
    /// Its name in the lab.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where it sits.
    pub fn nat(&self) -> Nat {
        self.nat
    }

    /// Its network namespace's name (for `ip netns exec`).
    pub fn netns(&self) -> &str {
        self.namespace.name()
    }

    /// Its network namespace.
    pub fn namespace(&self) -> &Namespace {
        &self.namespace
    }

    /// Its own IPv4 address: on its LAN behind a NAT, on the internet for a public host.
    pub fn ipv4(&self) -> Ipv4Addr {
        self.ipv4
    }

    /// Its public IPv6 address (dual-stack hosts only).
    pub fn ipv6(&self) -> Option<Ipv6Addr> {
        self.ipv6
    }

    /// The IPv4 address the internet sees it at: its own for a public host, its NAT's
    /// outside address (the carrier's for CGNAT) for the others. The port a NAT maps to is
    /// for [`Probe`] to find out.
    pub fn public_ipv4(&self) -> Ipv4Addr {
        self.public_ipv4
    }

    /// Its default gateway (LAN hosts only; the internet has no routes).
    pub fn gateway(&self) -> Option<Ipv4Addr> {
        self.gateway
    }

    /// The name of its LAN (hosts behind a NAT only).
    pub fn lan(&self) -> Option<&str> {
        self.lan.as_deref()
    }

    /// See [`Namespace::command`].
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        self.namespace.command(program)
    }

    /// See [`Namespace::run`].
    pub fn run<F, T>(&self, f: F) -> Result<T>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        self.namespace.run(f)
    }

    /// See [`Namespace::spawn`].
    pub fn spawn<F, T>(&self, f: F) -> Result<JoinHandle<T>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.namespace.spawn(f)
    }
}

/// A LAN behind a NAT router (and, for CGNAT, a carrier NAT).
#[derive(Clone, Debug)]
pub struct Lan {
    name: String,
    nat: Nat,
    network: (Ipv4Addr, u8),
    router: Router,
    carrier: Option<Router>,
    hosts: Vec<String>,
}

impl Lan {
    /// Its name in the lab.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The kind of NAT its hosts are behind.
    pub fn nat(&self) -> Nat {
        self.nat
    }

    /// Its network address and prefix length (a /28 of 198.51.100.0/24).
    pub fn network(&self) -> (Ipv4Addr, u8) {
        self.network
    }

    /// Its NAT router (for CGNAT: the home router).
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// The carrier NAT in front of the home router (CGNAT only).
    pub fn carrier(&self) -> Option<&Router> {
        self.carrier.as_ref()
    }

    /// The address its hosts appear at on the internet.
    pub fn public_ipv4(&self) -> Ipv4Addr {
        self.carrier
            .as_ref()
            .map_or(self.router.outside, |c| c.outside)
    }

    /// The names of its hosts.
    pub fn hosts(&self) -> impl Iterator<Item = &str> {
        self.hosts.iter().map(String::as_str)
    }
}

/// A NAT router of a lab: a namespace with interfaces `wan` (outside) and `lan` (inside).
#[derive(Clone, Debug)]
pub struct Router {
    namespace: Namespace,
    inside: Ipv4Addr,
    outside: Ipv4Addr,
}

impl Router {
    /// Its namespace (to look at its rules: `router.namespace().command("nft")`).
    pub fn namespace(&self) -> &Namespace {
        &self.namespace
    }

    /// Its address on the inside segment: the gateway of what is behind it.
    pub fn inside_ipv4(&self) -> Ipv4Addr {
        self.inside
    }

    /// Its address on the outside segment: what it translates to.
    pub fn outside_ipv4(&self) -> Ipv4Addr {
        self.outside
    }
}

/// What a lab will hold; [`Builder::build`] makes it. Names are 1 to [`MAX_NAME`]
/// characters of `a-z`, `0-9` and `-`, starting with a letter; host names and LAN names
/// are each unique. Addresses are given in the order of the calls (see the module docs).
#[derive(Clone, Debug, Default)]
pub struct Builder {
    sites: Vec<Site>,
    /// (host, LAN) pairs, in the order they were added.
    members: Vec<(String, String)>,
}

/// Something attached to the internet: a public host, or a LAN's router.
#[derive(Clone, Debug)]
enum Site {
    Public { name: String, nat: Nat },
    Lan { name: String, nat: Nat },
}

impl Builder {
    /// Adds a public IPv4 host on the internet segment (a bootstrap or relay node, a probe
    /// server).
    pub fn public_host(self, name: impl Into<String>) -> Builder {
        self.host(name, Nat::Public)
    }

    /// Adds a host of kind `nat`: on the internet for [`Nat::Public`] and
    /// [`Nat::DualStack`], else alone on a LAN of its own (named after it) behind a NAT of
    /// that kind.
    pub fn host(mut self, name: impl Into<String>, nat: Nat) -> Builder {
        let name = name.into();
        if nat.is_translated() {
            self.sites.push(Site::Lan {
                name: name.clone(),
                nat,
            });
            self.members.push((name.clone(), name));
        } else {
            self.sites.push(Site::Public { name, nat });
        }
        self
    }

    /// Declares a LAN behind a NAT of kind `nat` (not [`Nat::Public`] or
    /// [`Nat::DualStack`]); add hosts to it with [`Builder::host_on`].
    pub fn lan(mut self, name: impl Into<String>, nat: Nat) -> Builder {
        self.sites.push(Site::Lan {
            name: name.into(),
            nat,
        });
        self
    }

    /// Adds a host to the LAN `lan` (declared with [`Builder::lan`], before or after).
    pub fn host_on(mut self, name: impl Into<String>, lan: impl Into<String>) -> Builder {
        self.members.push((name.into(), lan.into()));
        self
    }

    /// Makes the lab: checks the plan, that the process may make it ([`check`]), removes
    /// what dead labs left, then creates the namespaces, links, addresses, routes and rules.
    /// On an error, what was made is removed again.
    pub fn build(self) -> Result<Lab> {
        self.validate()?;
        check()?;
        netns::sweep_dead()?;
        static NEXT_LAB: AtomicU32 = AtomicU32::new(0);
        let prefix = format!(
            "{LAB_MARK}{}x{}-",
            std::process::id(),
            NEXT_LAB.fetch_add(1, Ordering::Relaxed)
        );
        let started = Instant::now();
        let mut lab = Lab {
            internet: Namespace::named(format!("{prefix}inet")),
            prefix,
            hosts: Vec::new(),
            lans: Vec::new(),
            made: Vec::new(),
        };
        self.make(&mut lab)
            .with_context(|| format!("could not build the network lab {}", lab.prefix))?;
        tracing::debug!(
            prefix = lab.prefix,
            namespaces = lab.made.len(),
            elapsed = ?started.elapsed(),
            "network lab built"
        );
        Ok(lab)
    }

    /// Creates everything in `lab` (which removes it when dropped).
    fn make(&self, lab: &mut Lab) -> Result<()> {
        lab.internet = lab.namespace("inet")?;
        lab.internet.ip(&[
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ])?;
        lab.internet.ip(&["link", "set", "br0", "up"])?;
        let mut lan_index = 0;
        for (i, site) in self.sites.iter().enumerate() {
            match site {
                Site::Public { name, nat } => {
                    let namespace = lab.namespace(&format!("h-{name}"))?;
                    let dual = *nat == Nat::DualStack;
                    let ipv4 = lab.attach(&namespace, i, "eth0", dual)?;
                    lab.hosts.push(Host {
                        name: name.clone(),
                        nat: *nat,
                        namespace,
                        ipv4,
                        ipv6: dual.then(|| plan::internet_v6(i)),
                        public_ipv4: ipv4,
                        gateway: None,
                        lan: None,
                    });
                }
                Site::Lan { name, nat } => {
                    self.make_lan(lab, i, lan_index, name, *nat)?;
                    lan_index += 1;
                }
            }
        }
        Ok(())
    }

    /// Creates LAN `k` (the `i`-th attachment to the internet), its NAT(s) and its hosts.
    fn make_lan(&self, lab: &mut Lab, i: usize, k: usize, name: &str, nat: Nat) -> Result<()> {
        let router = lab.namespace(&format!("nat-{name}"))?;
        let (outside, carrier) = if nat == Nat::Cgnat {
            let cgn = lab.namespace(&format!("cgn-{name}"))?;
            let public = lab.attach(&cgn, i, "wan", false)?;
            let (gateway, customer) = (plan::carrier_gateway(k), plan::carrier_customer(k));
            cgn.ip(&[
                "link",
                "add",
                "lan",
                "type",
                "veth",
                "peer",
                "name",
                "wan",
                "netns",
                router.name(),
            ])?;
            cgn.ip(&[
                "addr",
                "add",
                &cidr(gateway, plan::SUBNET_LEN),
                "dev",
                "lan",
            ])?;
            cgn.ip(&["link", "set", "lan", "up"])?;
            router.ip(&[
                "addr",
                "add",
                &cidr(customer, plan::SUBNET_LEN),
                "dev",
                "wan",
            ])?;
            router.ip(&["link", "set", "wan", "up"])?;
            router.ip(&["route", "add", "default", "via", &gateway.to_string()])?;
            cgn.sysctl("net.ipv4.ip_forward", "1")?;
            cgn.nft(&nat::ruleset(Rules {
                translation: Translation::PortRestricted,
                inside: (plan::carrier_net(k), plan::SUBNET_LEN),
                outside: public,
            }))?;
            let carrier = Router {
                namespace: cgn,
                inside: gateway,
                outside: public,
            };
            (customer, Some(carrier))
        } else {
            (lab.attach(&router, i, "wan", false)?, None)
        };
        let gateway = plan::lan_gateway(k);
        router.ip(&[
            "link",
            "add",
            "lan",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ])?;
        router.ip(&[
            "addr",
            "add",
            &cidr(gateway, plan::SUBNET_LEN),
            "dev",
            "lan",
        ])?;
        router.ip(&["link", "set", "lan", "up"])?;
        router.sysctl("net.ipv4.ip_forward", "1")?;
        let translation = match nat {
            Nat::FullCone => Translation::FullCone,
            Nat::Symmetric => Translation::Symmetric,
            _ => Translation::PortRestricted,
        };
        let network = (plan::lan_net(k), plan::SUBNET_LEN);
        router.nft(&nat::ruleset(Rules {
            translation,
            inside: network,
            outside,
        }))?;
        let public_ipv4 = carrier.as_ref().map_or(outside, |c| c.outside);

        let members: Vec<&str> = self
            .members
            .iter()
            .filter(|(_, lan)| lan == name)
            .map(|(host, _)| host.as_str())
            .collect();
        for (j, host) in members.iter().enumerate() {
            let namespace = lab.namespace(&format!("h-{host}"))?;
            let port = format!("h{j}");
            router.ip(&[
                "link",
                "add",
                &port,
                "master",
                "lan",
                "up",
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                namespace.name(),
            ])?;
            let ipv4 = plan::lan_host(k, j);
            namespace.ip(&["addr", "add", &cidr(ipv4, plan::SUBNET_LEN), "dev", "eth0"])?;
            namespace.ip(&["link", "set", "eth0", "up"])?;
            namespace.ip(&["route", "add", "default", "via", &gateway.to_string()])?;
            lab.hosts.push(Host {
                name: (*host).to_owned(),
                nat,
                namespace,
                ipv4,
                ipv6: None,
                public_ipv4,
                gateway: Some(gateway),
                lan: Some(name.to_owned()),
            });
        }
        lab.lans.push(Lan {
            name: name.to_owned(),
            nat,
            network,
            router: Router {
                namespace: router,
                inside: gateway,
                outside,
            },
            carrier,
            hosts: members.iter().map(|&h| h.to_owned()).collect(),
        });
        Ok(())
    }

    /// Refuses a plan the lab cannot make, with a sentence saying why.
    fn validate(&self) -> Result<()> {
        let mut hosts = HashSet::new();
        let mut lans = HashSet::new();
        for site in &self.sites {
            match site {
                Site::Public { name, .. } => {
                    valid_name("host", name)?;
                    ensure!(hosts.insert(name.as_str()), "two hosts are called `{name}`");
                }
                Site::Lan { name, nat } => {
                    valid_name("LAN", name)?;
                    ensure!(lans.insert(name.as_str()), "two LANs are called `{name}`");
                    ensure!(
                        nat.is_translated(),
                        "LAN `{name}` is declared `{nat}`, which is no NAT: put such hosts \
                         on the internet with `public_host` or `host`"
                    );
                }
            }
        }
        for (host, lan) in &self.members {
            valid_name("host", host)?;
            ensure!(hosts.insert(host.as_str()), "two hosts are called `{host}`");
            ensure!(
                lans.contains(lan.as_str()),
                "host `{host}` is added to LAN `{lan}`, which is not declared (use `lan`)"
            );
        }
        ensure!(
            self.sites.len() <= plan::MAX_INTERNET,
            "the lab has {} public hosts and LANs; the internet segment takes at most {}",
            self.sites.len(),
            plan::MAX_INTERNET
        );
        ensure!(
            lans.len() <= plan::MAX_LANS,
            "the lab has {} LANs; at most {} fit the address plan",
            lans.len(),
            plan::MAX_LANS
        );
        for lan in &lans {
            let count = self.members.iter().filter(|(_, l)| l == lan).count();
            ensure!(
                count <= plan::MAX_LAN_HOSTS,
                "LAN `{lan}` has {count} hosts; a LAN takes at most {}",
                plan::MAX_LAN_HOSTS
            );
        }
        Ok(())
    }
}

/// Whether this process can build a lab: root, `ip` and `nft`. The error says what is
/// missing.
pub fn check() -> Result<()> {
    ensure!(
        nix::unistd::geteuid().is_root(),
        "the network lab needs root: it creates network namespaces, veth links and nftables \
         rules (run as root, e.g. `sudo -E cargo test -p p2psip-testnet --test lab`)"
    );
    netns::checked(Command::new("ip").arg("-V"))?;
    netns::checked(Command::new("nft").arg("--version"))?;
    Ok(())
}

/// For a test that needs a lab: true when [`check`] passes. When it does not: panics in CI
/// (`CI` set, and not to empty, `0` or `false`: CI must never skip silently), else prints
/// `skipped: <why>` and returns false, and the test should return. Use as
/// `if !lab::require_lab() { return; }`.
pub fn require_lab() -> bool {
    match check() {
        Ok(()) => true,
        Err(e) => {
            if in_ci() {
                panic!("{e:#}, and CI is set: the network lab tests must run in CI");
            }
            eprintln!("skipped: {e:#}");
            false
        }
    }
}

/// Whether the tests run in CI: `CI` is set, and not to empty, `0` or `false`.
fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// Refuses a name that would not make a good namespace name.
fn valid_name(what: &str, name: &str) -> Result<()> {
    let good = !name.is_empty()
        && name.len() <= MAX_NAME
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !good {
        bail!(
            "{what} name `{name}` is not 1 to {MAX_NAME} characters of a-z, 0-9 and `-` \
             starting with a letter"
        );
    }
    Ok(())
}

/// `addr/len`.
fn cidr(addr: Ipv4Addr, len: u8) -> String {
    format!("{addr}/{len}")
}

/// Says on stderr (and in the log) that a part of a lab could not be removed.
fn report_leftover(namespace: &Namespace, error: &anyhow::Error) {
    tracing::warn!(
        netns = namespace.name(),
        "could not clean up the lab: {error:#}"
    );
    eprintln!(
        "network lab: could not clean up {}: {error:#}",
        namespace.name()
    );
}
