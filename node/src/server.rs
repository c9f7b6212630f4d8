//! The node's SIP server: the proxy core, the registrar and digest authentication of
//! `p2psip-sip`, driven by a tokio task over the node's [`Transports`].
//!
//! For each out-of-dialog request the proxy asks where it goes ([`proxy::Event::Locate`]);
//! the server answers:
//! 1. with authentication on (required when a SIP address is not loopback), a request without
//!    valid credentials gets 401 (REGISTER) or 407 (anything else);
//! 2. a REGISTER goes to the registrar, whose bindings live behind [`registrar::Bindings`];
//! 3. a request for one of our domains goes to the AOR's bindings (forking by q-value), or is
//!    redirected with 302 in redirect mode; no binding is 404;
//! 4. a request for another domain is forwarded to its Request-URI only from an
//!    authenticated client, or when the node serves loopback only (never an open relay).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Instant as StdInstant, SystemTime};

use p2psip_sip::proxy::{self, Proxy, Target};
use p2psip_sip::registrar::{self, Bindings, MemoryBindings, Registrar};
use p2psip_sip::{HeaderName, Ids, Method, Peer, Request, StatusCode, Uri, auth};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::{Instrument, debug, info_span, warn};

use crate::clock::{now, sleep_until};
use crate::transport::{self, Incoming, Transports};

/// Who may use the server, when authentication is on.
#[derive(Debug, Clone)]
pub struct Users {
    /// The digest realm, algorithms and nonce secret (draw the secret from the operating
    /// system: [`Users::new`] does).
    pub digest: auth::Config,
    /// Passwords by user name.
    pub passwords: HashMap<String, String>,
}

impl Users {
    /// Users of `realm`, with a nonce secret from the operating system's RNG.
    pub fn new(realm: &str, passwords: HashMap<String, String>) -> Result<Users, Error> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret)
            .map_err(|e| Error::Config(format!("the operating system's RNG failed: {e}")))?;
        Ok(Users {
            digest: auth::Config::new(realm, secret),
            passwords,
        })
    }
}

/// How the server runs.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// The sockets.
    pub transports: transport::Config,
    /// The proxy (its `listen` is filled in from the bound sockets).
    pub proxy: proxy::Config,
    /// The registrar.
    pub registrar: registrar::Config,
    /// Answer calls for our users with 302 and their contacts instead of proxying them.
    pub redirect: bool,
    /// Digest authentication; required when a SIP address is not loopback.
    pub users: Option<Users>,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The sockets could not be set up.
    #[error(transparent)]
    Transport(#[from] transport::Error),
    /// The configuration is refused.
    #[error("{0}")]
    Config(String),
}

/// A running server; dropping it stops it.
#[derive(Debug)]
pub struct Server {
    local: Vec<Peer>,
    _stop: oneshot::Sender<()>,
}

impl Server {
    /// Binds the sockets and starts serving.
    pub async fn start(mut config: Config) -> Result<Server, Error> {
        let listens_wide = config
            .transports
            .udp
            .iter()
            .chain(&config.transports.tcp)
            .chain(&config.transports.tls)
            .any(|a| !a.ip().is_loopback());
        if listens_wide && config.users.is_none() {
            return Err(Error::Config(
                "a SIP address other than loopback needs digest authentication: configure users, or listen on 127.0.0.1".into(),
            ));
        }
        let verifier = match &config.users {
            Some(users) => Some(
                auth::Verifier::new(users.digest.clone())
                    .map_err(|e| Error::Config(e.to_string()))?,
            ),
            None => None,
        };
        let (sockets, incoming) = Transports::bind(config.transports.clone()).await?;
        config.proxy.listen = sockets.local_addrs().to_vec();
        let local = config.proxy.listen.clone();
        let (stop, stopped) = oneshot::channel();
        let ids = || {
            Ids::from_os()
                .map_err(|e| Error::Config(format!("the operating system's RNG failed: {e}")))
        };
        let state = State {
            store: MemoryBindings::new(&config.registrar),
            registrar: Registrar::with_ids(config.registrar.clone(), ids()?),
            proxy: Proxy::with_ids(config.proxy.clone(), ids()?),
            ids: ids()?,
            verifier,
            config,
        };
        let span = info_span!("server", local = %local.first().map(ToString::to_string).unwrap_or_default());
        tokio::spawn(run(state, sockets, incoming, stopped).instrument(span));
        Ok(Server { local, _stop: stop })
    }

    /// Where the server listens.
    pub fn local_addrs(&self) -> &[Peer] {
        &self.local
    }
}

struct State {
    config: Config,
    proxy: Proxy,
    registrar: Registrar,
    store: MemoryBindings,
    verifier: Option<auth::Verifier>,
    /// The To tags of the server's own challenges.
    ids: Ids,
}

async fn run(
    mut state: State,
    sockets: Transports,
    mut incoming: Incoming,
    mut stopped: oneshot::Receiver<()>,
) {
    loop {
        let deadline = state.proxy.poll_timeout().map(Instant::from_std);
        tokio::select! {
            received = incoming.recv() => {
                let Some(received) = received else { break };
                if let Err(e) = state.proxy.handle(now(), received.message, received.source) {
                    debug!(source = %received.source, error = %e, "message dropped");
                }
            }
            () = sleep_until(deadline) => state.proxy.handle_timeout(now()),
            _ = &mut stopped => break,
        }
        while let Some(event) = state.proxy.poll_event() {
            if let proxy::Event::Locate {
                context, request, ..
            } = event
            {
                state.locate(context, &request);
            }
        }
        while let Some(t) = state.proxy.poll_transmit() {
            if let Err(e) = sockets.send(t.to, t.bytes).await {
                warn!(to = %t.to, error = %e, "send failed");
                if let Some(txn) = t.transaction {
                    state.proxy.transport_error(now(), txn);
                }
            }
        }
    }
}

impl State {
    /// Where an out-of-dialog request goes; see the module docs.
    fn locate(&mut self, context: proxy::Context, request: &Request) {
        let t = now();
        let register = *request.method() == Method::Register;
        let mut authenticated = false;
        if let (Some(verifier), Some(users)) = (&self.verifier, &self.config.users) {
            let proxy_auth = !register;
            let lookup = |user: &str, _realm: &str| {
                users
                    .passwords
                    .get(user)
                    .map(|p| auth::Credential::Password(p.clone()))
            };
            match verifier.verify(request, SystemTime::now(), proxy_auth, lookup) {
                auth::Verdict::Ok { .. } => authenticated = true,
                verdict => {
                    debug!(?verdict, method = %request.method(), "authentication required");
                    let stale = matches!(verdict, auth::Verdict::Stale);
                    let tag = self.ids.tag();
                    let reject =
                        verifier.reject(request, SystemTime::now(), proxy_auth, stale, Some(&tag));
                    let _ = self.proxy.respond_with(t, context, reject);
                    return;
                }
            }
        }
        if register {
            let response = self.registrar.register(request, t, &mut self.store);
            let _ = self.proxy.respond_with(t, context, response);
            return;
        }
        let uri = request.uri_str().to_owned();
        if self.is_ours(&uri) {
            let bindings = self.lookup(&uri, t);
            if bindings.is_empty() {
                let _ = self.proxy.respond(
                    t,
                    context,
                    StatusCode::NOT_FOUND,
                    "Not Found (no registration)",
                    &[],
                );
            } else if self.config.redirect {
                let contacts: Vec<_> = bindings
                    .iter()
                    .map(|b| {
                        (
                            HeaderName::Contact,
                            format!("<{}>{}", b.contact, b.q.map(q_param).unwrap_or_default()),
                        )
                    })
                    .collect();
                let _ = self.proxy.respond(
                    t,
                    context,
                    StatusCode::MOVED_TEMPORARILY,
                    "Moved Temporarily",
                    &contacts,
                );
            } else {
                let targets = bindings
                    .iter()
                    .map(|b| Target {
                        q: b.q,
                        ..Target::new(b.contact.clone())
                    })
                    .collect();
                let _ = self.proxy.forward(t, context, targets);
            }
            return;
        }
        // Another domain: only for a client we know (never an open relay).
        if authenticated || self.verifier.is_none() {
            let _ = self.proxy.forward(t, context, vec![Target::new(uri)]);
        } else {
            let _ = self
                .proxy
                .respond(t, context, StatusCode::FORBIDDEN, "Relaying denied", &[]);
        }
    }

    /// The bindings of the AOR a Request-URI names. A URI that names this server by address
    /// and port (`sip:bob@192.0.2.1:5060`) means the AOR without the port, as registered.
    fn lookup(&mut self, uri: &str, now: StdInstant) -> Vec<registrar::Binding> {
        let Ok(parsed) = Uri::parse(uri) else {
            return Vec::new();
        };
        let Some(aor) = registrar::aor(&parsed) else {
            return Vec::new();
        };
        let found = self.store.get(&aor, now).unwrap_or_default();
        if !found.is_empty() {
            return found;
        }
        let Some(sip) = parsed.as_sip() else {
            return found;
        };
        let host = sip.host().to_string();
        let ours = sip.port().is_some_and(|port| {
            self.config
                .proxy
                .listen
                .iter()
                .any(|p| p.addr.port() == port && same_host(p.addr, &host))
        });
        let (Some(user), true) = (sip.user(), ours) else {
            return found;
        };
        Uri::parse(&format!("sip:{user}@{host}"))
            .ok()
            .and_then(|u| registrar::aor(&u))
            .and_then(|aor| self.store.get(&aor, now).ok())
            .unwrap_or_default()
    }

    /// Whether a Request-URI is for a domain this server serves: a registrar domain, or one
    /// of its own addresses.
    fn is_ours(&self, uri: &str) -> bool {
        let Ok(parsed) = Uri::parse(uri) else {
            return false;
        };
        let Some(sip) = parsed.as_sip() else {
            return false;
        };
        let host = sip.host().to_string();
        if self
            .config
            .registrar
            .domains
            .iter()
            .any(|d| d.eq_ignore_ascii_case(&host))
        {
            return true;
        }
        self.config
            .proxy
            .listen
            .iter()
            .any(|p| same_host(p.addr, &host))
    }
}

fn same_host(addr: SocketAddr, host: &str) -> bool {
    let ip = addr.ip().to_string();
    host == ip || host.trim_matches(['[', ']']) == ip
}

fn q_param(q: u16) -> String {
    format!(";q={}.{:03}", q / 1000, q % 1000)
}
