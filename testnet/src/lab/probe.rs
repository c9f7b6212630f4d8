//! A NAT probe in the manner of RFC 5780 (NAT behaviour discovery), with both ends in
//! process: the client's socket and the servers' sockets are opened inside their hosts'
//! namespaces ([`Host::run`]) and then used from the calling thread.
//!
//! **Mapping.** One client socket sends to three server endpoints: two ports of the first
//! server and one port of the second. Each server reports the source address it saw (the
//! mapping). All equal to the socket's own address: [`Mapping::Direct`]; all equal:
//! endpoint-independent; equal for the first server's two ports only: address-dependent;
//! else address-and-port-dependent.
//!
//! **Filtering.** A new client socket sends to one server endpoint; then a new port of that
//! server (same address, other port) and a new port of the second server (other address)
//! send to the mapping. Which of them the client hears within [`Probe::silence`] says the
//! filtering: both, endpoint-independent; the same address only, address-dependent; none,
//! address-and-port-dependent. Last, the endpoint the client did contact sends to it and
//! must be heard within [`Probe::wait`]: so a silence is the NAT's doing, not a broken path.
//! The filtering phase uses its own client socket because an unsolicited packet leaves a
//! conntrack entry on a Linux NAT that would make it remap the socket's next flow to that
//! sender (a clash of tuples), which the mapping phase would take for endpoint-dependent
//! mapping.
//!
//! Positive results are waited for, with retransmission (UDP) every [`Probe::RESEND`], up to
//! [`Probe::wait`]; negative ones are a silence of [`Probe::silence`]. With TCP a "send" is
//! a connection: the mapping phase connects from one local port (`SO_REUSEPORT`) to the three
//! endpoints, the filtering phase listens on the port of its connection and the strangers
//! try to connect to the mapping; the control is a byte sent on the contacted connection.

use std::io::{self, Read as _, Write as _};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use serde::Serialize;
use socket2::{Domain, Protocol, Socket, Type};

use super::Host;
use super::nat::{Filtering, Mapping};

/// The longest datagram the probe reads.
const MAX_DATAGRAM: usize = 512;
/// How many interrupted waits an `accept` takes up again.
const MAX_INTERRUPTS: u32 = 8;

/// A NAT probe from one host to two public servers; see the module docs for the method.
#[derive(Clone, Copy, Debug)]
pub struct Probe<'a> {
    client: &'a Host,
    servers: [&'a Host; 2],
    ipv6: bool,
    wait: Duration,
    silence: Duration,
}

/// What a probe found.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// UDP or TCP.
    pub transport: Transport,
    /// The client socket's own address (mapping phase).
    pub local: SocketAddr,
    /// What each contacted server endpoint saw as the client's address, in order: the first
    /// server's two ports, then the second server's.
    pub observed: Vec<Observation>,
    /// The mapping behaviour that follows from `observed`.
    pub mapping: Mapping,
    /// Whether a new port of a contacted address reached the filtering phase's mapping.
    pub from_other_port: bool,
    /// Whether an address the client never sent to reached the filtering phase's mapping.
    pub from_other_address: bool,
    /// The filtering behaviour that follows from the two.
    pub filtering: Filtering,
}

impl Report {
    /// The first mapped address the servers saw: the client's address and port as the
    /// internet knows it.
    pub fn mapped(&self) -> Option<SocketAddr> {
        self.observed.first().map(|o| o.mapped)
    }
}

/// One server endpoint and the client address it saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Observation {
    /// The server endpoint the client sent to.
    pub server: SocketAddr,
    /// The source address its packet arrived from.
    pub mapped: SocketAddr,
}

/// The transport a probe used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// Datagrams.
    Udp,
    /// Connections.
    Tcp,
}

impl<'a> Probe<'a> {
    /// How often an unanswered UDP probe is sent again.
    pub const RESEND: Duration = Duration::from_millis(200);
    /// The default of [`Probe::wait`].
    pub const WAIT: Duration = Duration::from_secs(2);
    /// The default of [`Probe::silence`].
    pub const SILENCE: Duration = Duration::from_millis(300);

    /// A probe from `client` to the public hosts `first` and `second` (their own
    /// addresses, so they must not be behind a NAT), over IPv4.
    pub fn new(client: &'a Host, first: &'a Host, second: &'a Host) -> Probe<'a> {
        Probe {
            client,
            servers: [first, second],
            ipv6: false,
            wait: Probe::WAIT,
            silence: Probe::SILENCE,
        }
    }

    /// Probes over IPv6 instead: every host needs an IPv6 address ([`super::Nat::DualStack`]).
    pub fn ipv6(mut self) -> Probe<'a> {
        self.ipv6 = true;
        self
    }

    /// How long a packet that should arrive may take (default [`Probe::WAIT`]); a probe that
    /// waits longer fails.
    pub fn wait(mut self, wait: Duration) -> Probe<'a> {
        self.wait = wait;
        self
    }

    /// How long a packet that a filtering NAT drops is waited for (default [`Probe::SILENCE`]).
    pub fn silence(mut self, silence: Duration) -> Probe<'a> {
        self.silence = silence;
        self
    }

    /// Probes with UDP.
    pub fn udp(&self) -> Result<Report> {
        let [first, second] = self.servers;
        let (client_ip, first_ip, second_ip) = self.addresses()?;
        let bind = |host: &Host, ip: IpAddr| -> Result<UdpSocket> {
            host.run(move || UdpSocket::bind((ip, 0)))?
                .with_context(|| format!("could not bind a UDP socket to {ip} in {}", host.name()))
        };

        // Mapping: one socket to three endpoints.
        let client = bind(self.client, client_ip)?;
        let local = client.local_addr()?;
        let endpoints = [
            bind(first, first_ip)?,
            bind(first, first_ip)?,
            bind(second, second_ip)?,
        ];
        let mut observed = Vec::with_capacity(endpoints.len());
        for endpoint in &endpoints {
            let server = endpoint.local_addr()?;
            let mapped = self.deliver(&client, server, endpoint)?;
            observed.push(Observation { server, mapped });
        }

        // Filtering: a new socket, one contacted endpoint, two strangers.
        let client = bind(self.client, client_ip)?;
        let contacted = bind(first, first_ip)?;
        let mapped = self.deliver(&client, contacted.local_addr()?, &contacted)?;
        let other_port = bind(first, first_ip)?;
        let other_address = bind(second, second_ip)?;
        let token = token();
        for stranger in [&other_port, &other_address] {
            // Twice, as a lost first datagram would read as filtering; nothing is lost here.
            for _ in 0..2 {
                stranger.send_to(token.as_bytes(), mapped)?;
            }
        }
        let strangers = [other_port.local_addr()?, other_address.local_addr()?];
        let heard = self.listen(&client, &token, strangers)?;
        // The control: the contacted endpoint does get through.
        self.deliver(&contacted, mapped, &client)
            .context("the contacted server could not answer the client: the path is broken")?;

        Ok(report(Transport::Udp, local, observed, heard))
    }

    /// Probes with TCP.
    pub fn tcp(&self) -> Result<Report> {
        let [first, second] = self.servers;
        let (client_ip, first_ip, second_ip) = self.addresses()?;

        // Mapping: connections from one local port to three endpoints.
        let endpoints = [
            self.listener(first, SocketAddr::new(first_ip, 0))?,
            self.listener(first, SocketAddr::new(first_ip, 0))?,
            self.listener(second, SocketAddr::new(second_ip, 0))?,
        ];
        let mut local = SocketAddr::new(client_ip, 0);
        let mut observed = Vec::with_capacity(endpoints.len());
        let mut connections = Vec::with_capacity(endpoints.len());
        for endpoint in &endpoints {
            let server = socket_addr(endpoint)?;
            let stream = self
                .connect(self.client, local, server, self.wait)?
                .with_context(|| format!("could not connect from {local} to {server}"))?;
            local = stream.local_addr()?;
            let (_, mapped) = accept(endpoint, server)?;
            observed.push(Observation { server, mapped });
            connections.push(stream);
        }

        // Filtering: a connection and a listener on one new port, two strangers.
        let contacted = self.listener(first, SocketAddr::new(first_ip, 0))?;
        let server = socket_addr(&contacted)?;
        let mut outbound = self
            .connect(
                self.client,
                SocketAddr::new(client_ip, 0),
                server,
                self.wait,
            )?
            .with_context(|| format!("could not connect from {client_ip} to {server}"))?;
        let _listening = self.listener(self.client, outbound.local_addr()?)?;
        let (mut inbound, mapped) = accept(&contacted, server)?;
        let passed = |host: &Host, ip: IpAddr| -> Result<bool> {
            match self.connect(host, SocketAddr::new(ip, 0), mapped, self.silence)? {
                Ok(_) => Ok(true),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionRefused
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::WouldBlock
                    ) =>
                {
                    Ok(false)
                }
                Err(e) => {
                    Err(e).with_context(|| format!("connecting from {} to {mapped}", host.name()))
                }
            }
        };
        let heard = [passed(first, first_ip)?, passed(second, second_ip)?];
        // The control: a byte on the contacted connection.
        inbound.write_all(b"!")?;
        outbound.set_read_timeout(Some(self.wait))?;
        let mut byte = [0; 1];
        outbound
            .read_exact(&mut byte)
            .context("the contacted server could not answer the client: the path is broken")?;

        Ok(report(Transport::Tcp, local, observed, heard))
    }

    /// The client's and the two servers' addresses of the probe's family.
    fn addresses(&self) -> Result<(IpAddr, IpAddr, IpAddr)> {
        for server in self.servers {
            ensure!(
                !server.nat().is_translated(),
                "probe server {} is behind a NAT ({}): servers must be public hosts",
                server.name(),
                server.nat()
            );
        }
        let [first, second] = self.servers;
        Ok((self.ip(self.client)?, self.ip(first)?, self.ip(second)?))
    }

    /// A host's address of the probe's family.
    fn ip(&self, host: &Host) -> Result<IpAddr> {
        if !self.ipv6 {
            return Ok(host.ipv4().into());
        }
        host.ipv6().map(IpAddr::from).with_context(|| {
            format!(
                "host {} has no IPv6 address (only dual-stack hosts have one)",
                host.name()
            )
        })
    }

    /// Sends a fresh token from `from` to `to` every [`Probe::RESEND`] until `receiver` reads it
    /// (up to [`Probe::wait`]); returns the source address it arrived from.
    fn deliver(
        &self,
        from: &UdpSocket,
        to: SocketAddr,
        receiver: &UdpSocket,
    ) -> Result<SocketAddr> {
        let token = token();
        let deadline = Instant::now() + self.wait;
        let mut buf = [0; MAX_DATAGRAM];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!(
                    "nothing sent from {} to {to} arrived within {:?}",
                    from.local_addr()?,
                    self.wait
                );
            }
            from.send_to(token.as_bytes(), to)?;
            let resend = Instant::now() + Probe::RESEND.min(left);
            // Read until the next resend, skipping what is not this token.
            loop {
                let left = resend.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                receiver.set_read_timeout(Some(left))?;
                match receiver.recv_from(&mut buf) {
                    Ok((n, source)) if buf[..n] == *token.as_bytes() => return Ok(source),
                    Ok(_) => {}
                    Err(e) if is_timeout(&e) => break,
                    // A signal (or a freeze and thaw of the process) cut the wait short.
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e).context("receiving a probe"),
                }
            }
        }
    }

    /// Which of `senders` the client hears `token` from within [`Probe::silence`].
    fn listen(
        &self,
        client: &UdpSocket,
        token: &str,
        senders: [SocketAddr; 2],
    ) -> Result<[bool; 2]> {
        let deadline = Instant::now() + self.silence;
        let mut heard = [false; 2];
        let mut buf = [0; MAX_DATAGRAM];
        while !heard.iter().all(|&h| h) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            client.set_read_timeout(Some(left))?;
            match client.recv_from(&mut buf) {
                Ok((n, source)) if buf[..n] == *token.as_bytes() => {
                    for (sender, heard) in senders.iter().zip(&mut heard) {
                        *heard |= *sender == source;
                    }
                }
                Ok(_) => {}
                Err(e) if is_timeout(&e) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e).context("listening for strangers"),
            }
        }
        Ok(heard)
    }

    /// A TCP listener on `addr` in `host` (port 0: any), sharing its port (`SO_REUSEPORT`);
    /// `accept` on it gives up after [`Probe::wait`].
    fn listener(&self, host: &Host, addr: SocketAddr) -> Result<Socket> {
        let wait = self.wait;
        host.run(move || -> io::Result<Socket> {
            let socket = reusable(addr)?;
            socket.bind(&addr.into())?;
            socket.listen(8)?;
            socket.set_read_timeout(Some(wait))?;
            Ok(socket)
        })?
        .with_context(|| format!("could not listen on {addr} in {}", host.name()))
    }

    /// A TCP connection from `local` (sharing its port) in `host` to `to`, or the error of
    /// the attempt.
    fn connect(
        &self,
        host: &Host,
        local: SocketAddr,
        to: SocketAddr,
        timeout: Duration,
    ) -> Result<io::Result<TcpStream>> {
        host.run(move || -> io::Result<TcpStream> {
            let socket = reusable(local)?;
            socket.bind(&local.into())?;
            socket.connect_timeout(&to.into(), timeout)?;
            Ok(socket.into())
        })
    }
}

/// The report of a probe from what it saw.
fn report(
    transport: Transport,
    local: SocketAddr,
    observed: Vec<Observation>,
    [from_other_port, from_other_address]: [bool; 2],
) -> Report {
    let mapping = mapping(local, &observed);
    let filtering = if from_other_address {
        Filtering::EndpointIndependent
    } else if from_other_port {
        Filtering::AddressDependent
    } else {
        Filtering::AddressAndPortDependent
    };
    Report {
        transport,
        local,
        observed,
        mapping,
        from_other_port,
        from_other_address,
        filtering,
    }
}

/// The mapping behaviour from what the first server's two ports and the second server saw.
fn mapping(local: SocketAddr, observed: &[Observation]) -> Mapping {
    let mapped: Vec<SocketAddr> = observed.iter().map(|o| o.mapped).collect();
    match mapped.as_slice() {
        all if all.iter().all(|&m| m == local) => Mapping::Direct,
        [a, b, c] if a == b && b == c => Mapping::EndpointIndependent,
        [a, b, _] if a == b => Mapping::AddressDependent,
        _ => Mapping::AddressAndPortDependent,
    }
}

/// A TCP socket for `addr`'s family that shares its address and port with others.
fn reusable(addr: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    Ok(socket)
}

/// Accepts the probe's connection on `listener` (listening on `server`, with its accept
/// timeout); the connection and its peer (the mapped address). An interrupted wait is taken
/// up again, [`MAX_INTERRUPTS`] times at most.
fn accept(listener: &Socket, server: SocketAddr) -> Result<(TcpStream, SocketAddr)> {
    let mut interrupts = 0;
    let (socket, peer) = loop {
        match listener.accept() {
            Ok(accepted) => break accepted,
            Err(e) if e.kind() == io::ErrorKind::Interrupted && interrupts < MAX_INTERRUPTS => {
                interrupts += 1;
            }
            Err(e) => return Err(e).with_context(|| format!("no connection reached {server}")),
        }
    };
    let peer = peer
        .as_socket()
        .with_context(|| format!("{server} accepted a connection without an IP peer"))?;
    Ok((socket.into(), peer))
}

/// The address a socket2 socket is bound to.
fn socket_addr(socket: &Socket) -> Result<SocketAddr> {
    socket
        .local_addr()?
        .as_socket()
        .context("a probe socket has no IP address")
}

/// Whether an I/O error is a read timeout.
fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// A token no other probe of any process sends.
fn token() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "p2psip-lab-probe {} {}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(mapped: &[&str]) -> (SocketAddr, Vec<Observation>) {
        let local = "198.51.100.2:4000".parse().unwrap();
        let server = "203.0.113.10:1".parse().unwrap();
        let observed = mapped
            .iter()
            .map(|m| Observation {
                server,
                mapped: m.parse().unwrap(),
            })
            .collect();
        (local, observed)
    }

    #[test]
    fn mappings_are_classified() {
        let (local, o) = obs(&["198.51.100.2:4000"; 3]);
        assert_eq!(mapping(local, &o), Mapping::Direct);
        let (local, o) = obs(&["203.0.113.11:4000"; 3]);
        assert_eq!(mapping(local, &o), Mapping::EndpointIndependent);
        let (local, o) = obs(&["203.0.113.11:4000", "203.0.113.11:4000", "203.0.113.11:5"]);
        assert_eq!(mapping(local, &o), Mapping::AddressDependent);
        let (local, o) = obs(&["203.0.113.11:4000", "203.0.113.11:6", "203.0.113.11:5"]);
        assert_eq!(mapping(local, &o), Mapping::AddressAndPortDependent);
    }
}
