//! A running user agent: the sans-IO [`UserAgent`] of `p2psip-sip` driven by a tokio task
//! over the node's [`Transports`].
//!
//! The task owns the agent. It wakes on a received message, a command, or the agent's next
//! deadline; after each, it sends what the agent wants sent (reporting failed sends back to
//! the transaction) and forwards the agent's events. Commands and events travel on bounded
//! channels; events beyond [`EVENT_CAPACITY`] unread are dropped with a warning rather than
//! stall the agent.

use p2psip_sip::ua::{self, Call, UserAgent};
use p2psip_sip::{Error as SipError, Peer, StatusCode};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{Instrument, debug, info_span, warn};

use crate::clock::{now, sleep_until};
use crate::transport::{self, Incoming, Transports};

/// How many unread events a running agent keeps.
pub const EVENT_CAPACITY: usize = 4096;

/// Why the agent could not do what was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The SIP layer refused it (a bad URI, an unknown call, a call in the wrong state).
    #[error(transparent)]
    Sip(#[from] SipError),
    /// The transports could not be set up.
    #[error(transparent)]
    Transport(#[from] transport::Error),
    /// The agent's task has ended.
    #[error("the user agent has stopped")]
    Stopped,
}

enum Command {
    Invite {
        target: String,
        reply: oneshot::Sender<Result<Call, SipError>>,
    },
    Answer {
        call: Call,
        reply: oneshot::Sender<Result<(), SipError>>,
    },
    Reject {
        call: Call,
        status: StatusCode,
        reply: oneshot::Sender<Result<(), SipError>>,
    },
    Hangup {
        call: Call,
        reply: oneshot::Sender<Result<(), SipError>>,
    },
}

/// A handle on a running user agent. Dropping it stops the agent.
#[derive(Debug)]
pub struct Agent {
    commands: mpsc::Sender<Command>,
    events: mpsc::Receiver<ua::Event>,
    local: Vec<Peer>,
}

impl Agent {
    /// Binds the transports of `transports` and starts a user agent on them. The agent's
    /// `listen` addresses are filled in from the sockets actually bound.
    pub async fn start(
        transports: transport::Config,
        mut config: ua::Config,
        seed: u64,
    ) -> Result<Agent, Error> {
        let (sockets, incoming) = Transports::bind(transports).await?;
        config.listen = sockets.local_addrs().to_vec();
        let local = config.listen.clone();
        let (commands, command_rx) = mpsc::channel(64);
        let (event_tx, events) = mpsc::channel(EVENT_CAPACITY);
        let agent = UserAgent::new(config, seed);
        let span = info_span!("agent", local = %local.first().map(ToString::to_string).unwrap_or_default());
        tokio::spawn(run(agent, sockets, incoming, command_rx, event_tx).instrument(span));
        Ok(Agent {
            commands,
            events,
            local,
        })
    }

    /// Where the agent listens.
    pub fn local_addrs(&self) -> &[Peer] {
        &self.local
    }

    /// Places a call to a `sip:` URI.
    pub async fn invite(&self, target: &str) -> Result<Call, Error> {
        let target = target.to_owned();
        self.ask(|reply| Command::Invite { target, reply }).await
    }

    /// Answers an incoming call with 200.
    pub async fn answer(&self, call: Call) -> Result<(), Error> {
        self.ask(|reply| Command::Answer { call, reply }).await
    }

    /// Refuses an incoming call.
    pub async fn reject(&self, call: Call, status: StatusCode) -> Result<(), Error> {
        self.ask(|reply| Command::Reject {
            call,
            status,
            reply,
        })
        .await
    }

    /// Hangs up (BYE, CANCEL, or 486, as the call's state wants).
    pub async fn hangup(&self, call: Call) -> Result<(), Error> {
        self.ask(|reply| Command::Hangup { call, reply }).await
    }

    /// The next event; `None` once the agent has stopped.
    pub async fn next_event(&mut self) -> Option<ua::Event> {
        self.events.recv().await
    }

    async fn ask<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<T, SipError>>) -> Command,
    ) -> Result<T, Error> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(command(reply))
            .await
            .map_err(|_| Error::Stopped)?;
        Ok(answer.await.map_err(|_| Error::Stopped)??)
    }
}

async fn run(
    mut agent: UserAgent,
    sockets: Transports,
    mut incoming: Incoming,
    mut commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<ua::Event>,
) {
    loop {
        let deadline = agent.poll_timeout().map(Instant::from_std);
        tokio::select! {
            received = incoming.recv() => {
                let Some(received) = received else { break };
                if let Err(e) = agent.handle(now(), received.message, received.source) {
                    debug!(source = %received.source, error = %e, "message dropped");
                }
            }
            command = commands.recv() => {
                let Some(command) = command else { break };
                execute(&mut agent, command);
            }
            () = sleep_until(deadline) => agent.handle_timeout(now()),
        }
        while let Some(t) = agent.poll_transmit() {
            if let Err(e) = sockets.send(t.to, t.bytes).await {
                warn!(to = %t.to, error = %e, "send failed");
                if let Some(txn) = t.transaction {
                    agent.transport_error(now(), txn);
                }
            }
        }
        while let Some(event) = agent.poll_event() {
            if events.try_send(event).is_err() {
                warn!("an event was dropped: the application reads too slowly");
            }
        }
    }
}

fn execute(agent: &mut UserAgent, command: Command) {
    let t = now();
    // A caller that stopped waiting for the answer has nothing to be told.
    match command {
        Command::Invite { target, reply } => drop(reply.send(agent.invite(t, &target))),
        Command::Answer { call, reply } => drop(reply.send(agent.answer(t, call))),
        Command::Reject {
            call,
            status,
            reply,
        } => drop(reply.send(agent.reject(t, call, status))),
        Command::Hangup { call, reply } => drop(reply.send(agent.hangup(t, call))),
    }
}
