//! The edge's dialog table: which in-dialog requests a node lets through.
//!
//! A node Record-Routes every dialog it proxies, so the dialog's later requests (ACK, BYE,
//! re-INVITE...) come back through it with a To tag and a Route. Those must not be a way
//! around the edge's checks: the node lets an in-dialog request through only for a dialog it
//! saw being made, only from one of its two sides and only towards the other one.
//!
//! [`Dialogs`] holds, per dialog (Call-ID and the two tags, in either order), the two sides
//! as the proxy core saw them ([`p2psip_sip::proxy::Event::Dialog`]): the caller's side (where the
//! request came from) and the callee's (where the answering branch went). A side is an
//! overlay node (the [`Peer`] of an overlay link: the same node, authenticated by the
//! overlay) or a SIP client or server (the same IP address: a softphone may send from another
//! port or connection than the one it was reached on).
//!
//! Sans-IO (every call takes `now`) and bounded: early dialogs (a provisional answer only)
//! live [`Config::early`], confirmed ones [`Config::idle`] after their last request, a dialog
//! whose BYE went through [`Config::ending`] more (for the BYE's retransmissions and
//! challenges), and at most [`Config::max_dialogs`] are kept; beyond, the one used least
//! recently is forgotten.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use p2psip_sip::{DialogId, Peer};

/// How long dialogs are remembered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// An early dialog (a provisional response only) is forgotten this long after it was
    /// last seen. Default 300 s (Timer C is 180 s).
    pub early: Duration,
    /// A confirmed dialog is forgotten this long after its last request. Default 24 hours:
    /// a call without session timers may go that long without one.
    pub idle: Duration,
    /// A dialog whose BYE went through is forgotten this long after. Default 32 s (64*T1).
    pub ending: Duration,
    /// How many dialogs are kept at once. Default 65536.
    pub max_dialogs: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            early: Duration::from_secs(300),
            idle: Duration::from_secs(86_400),
            ending: Duration::from_secs(32),
            max_dialogs: 65_536,
        }
    }
}

/// Why an in-dialog request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No dialog with this Call-ID and these tags went through this node: 481.
    Unknown,
    /// The dialog is known, but the request does not come from one of its sides: 403.
    NotASide,
    /// The request comes from a side of the dialog but goes elsewhere than its other side
    /// (a Route or Request-URI of someone else's choosing): 403.
    Elsewhere,
}

impl Refusal {
    /// The reason phrase of the refusal.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::Unknown => "Call/Transaction Does Not Exist (no such dialog at this node)",
            Refusal::NotASide => "Forbidden (not a party of this dialog)",
            Refusal::Elsewhere => {
                "Forbidden (the request goes elsewhere than the dialog's other end)"
            }
        }
    }
}

/// The dialogs a node record-routed. See the module docs.
#[derive(Debug)]
pub struct Dialogs {
    config: Config,
    dialogs: HashMap<Key, Entry>,
    /// Whether a connection id names an overlay link (compared by link, not by address).
    is_link: fn(&Peer) -> bool,
    /// When expired dialogs are swept next.
    next_sweep: Option<Instant>,
}

/// How often expired dialogs are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Call-ID and the two tags, the smaller first: the same for requests of both sides.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    call_id: String,
    tags: (String, String),
}

impl Key {
    fn new(call_id: &str, a: &str, b: &str) -> Key {
        let (a, b) = if a <= b { (a, b) } else { (b, a) };
        Key {
            call_id: call_id.to_owned(),
            tags: (a.to_owned(), b.to_owned()),
        }
    }
}

#[derive(Debug)]
struct Entry {
    sides: [Peer; 2],
    confirmed: bool,
    /// When it is forgotten.
    expires: Instant,
    /// A BYE went through.
    ending: bool,
}

impl Dialogs {
    /// An empty table; `is_link` tells the peers that are overlay links.
    pub fn new(config: Config, is_link: fn(&Peer) -> bool) -> Dialogs {
        Dialogs {
            config,
            dialogs: HashMap::new(),
            is_link,
            next_sweep: None,
        }
    }

    /// How many dialogs are known.
    pub fn len(&self) -> usize {
        self.dialogs.len()
    }

    /// Whether no dialog is known.
    pub fn is_empty(&self) -> bool {
        self.dialogs.is_empty()
    }

    /// A dialog seen being made ([`p2psip_sip::proxy::Event::Dialog`]): `upstream` made the
    /// request, `downstream` answered it; `confirmed` for a 2xx.
    pub fn learn(
        &mut self,
        now: Instant,
        id: &DialogId,
        upstream: Peer,
        downstream: Peer,
        confirmed: bool,
    ) {
        let key = Key::new(&id.call_id, &id.local_tag, &id.remote_tag);
        if self.next_sweep.is_none_or(|at| now >= at) {
            self.sweep(now);
            self.next_sweep = Some(now + SWEEP_EVERY);
        }
        if !self.dialogs.contains_key(&key) && self.dialogs.len() >= self.config.max_dialogs {
            self.sweep(now);
            if self.dialogs.len() >= self.config.max_dialogs {
                let oldest = self
                    .dialogs
                    .iter()
                    .min_by_key(|(_, e)| e.expires)
                    .map(|(k, _)| k.clone());
                if let Some(oldest) = oldest {
                    self.dialogs.remove(&oldest);
                }
            }
        }
        let confirmed = confirmed || self.dialogs.get(&key).is_some_and(|e| e.confirmed);
        let life = if confirmed {
            self.config.idle
        } else {
            self.config.early
        };
        self.dialogs.insert(
            key,
            Entry {
                sides: [upstream, downstream],
                confirmed,
                expires: now + life,
                ending: false,
            },
        );
    }

    /// Whether a request of the dialog `id` (either side's view) from `source` may go
    /// to `next`: the dialog is known, `source` is one of its sides and `next` the other
    /// (`None`, a next hop that names no address, is never the other side).
    /// `bye` marks the dialog as ending. A request let through keeps the dialog alive.
    pub fn check(
        &mut self,
        now: Instant,
        id: &DialogId,
        source: &Peer,
        next: Option<&Peer>,
        bye: bool,
    ) -> Result<(), Refusal> {
        let key = Key::new(&id.call_id, &id.local_tag, &id.remote_tag);
        let is_link = self.is_link;
        let (idle, ending) = (self.config.idle, self.config.ending);
        let entry = match self.dialogs.get_mut(&key) {
            Some(entry) if entry.expires > now => entry,
            Some(_) => {
                self.dialogs.remove(&key);
                return Err(Refusal::Unknown);
            }
            None => return Err(Refusal::Unknown),
        };
        let same = |a: &Peer, b: &Peer| same_side(a, b, is_link);
        let other = if same(source, &entry.sides[0]) {
            &entry.sides[1]
        } else if same(source, &entry.sides[1]) {
            &entry.sides[0]
        } else {
            return Err(Refusal::NotASide);
        };
        if !next.is_some_and(|next| same(next, other)) {
            return Err(Refusal::Elsewhere);
        }
        if bye || entry.ending {
            entry.ending = true;
            entry.expires = entry.expires.min(now + ending);
        } else if entry.confirmed {
            entry.expires = now + idle;
        }
        Ok(())
    }

    /// Forgets the dialogs whose time is up.
    pub fn sweep(&mut self, now: Instant) {
        self.dialogs.retain(|_, e| e.expires > now);
    }
}

/// Whether two peers are the same side of a dialog: the same overlay link, or (neither an
/// overlay link) the same IP address.
fn same_side(a: &Peer, b: &Peer, is_link: fn(&Peer) -> bool) -> bool {
    match (is_link(a), is_link(b)) {
        (true, true) => a.connection == b.connection,
        (false, false) => a.addr.ip() == b.addr.ip(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use p2psip_sip::{ConnectionId, Transport};

    use super::*;

    fn link(n: u64) -> Peer {
        Peer {
            transport: Transport::Tcp,
            addr: SocketAddr::from(([0x100, 0, 0, 0, 0, 0, 0, n as u16], 5060)),
            connection: Some(ConnectionId((1 << 62) + n)),
        }
    }

    fn client(ip: u8, port: u16) -> Peer {
        Peer::new(Transport::Udp, SocketAddr::from(([192, 0, 2, ip], port)))
    }

    fn is_link(p: &Peer) -> bool {
        p.connection.is_some_and(|c| c.0 >= 1 << 62)
    }

    fn did(call_id: &str, a: &str, b: &str) -> DialogId {
        DialogId {
            call_id: call_id.into(),
            local_tag: a.into(),
            remote_tag: b.into(),
        }
    }

    fn id() -> DialogId {
        DialogId {
            call_id: "c1".into(),
            local_tag: "a".into(),
            remote_tag: "b".into(),
        }
    }

    #[test]
    fn only_the_sides_of_a_known_dialog_pass() {
        let t0 = Instant::now();
        let mut d = Dialogs::new(Config::default(), is_link);
        let (alice, node_b) = (client(1, 5060), link(1));
        assert_eq!(
            d.check(t0, &did("c1", "a", "b"), &alice, Some(&node_b), false),
            Err(Refusal::Unknown)
        );
        d.learn(t0, &id(), alice, node_b, true);
        // Both directions, tags either way round, another port of the same host.
        assert_eq!(
            d.check(
                t0,
                &did("c1", "a", "b"),
                &client(1, 7000),
                Some(&node_b),
                false
            ),
            Ok(())
        );
        assert_eq!(
            d.check(t0, &did("c1", "b", "a"), &node_b, Some(&alice), false),
            Ok(())
        );
        assert_eq!(
            d.check(t0, &did("c1", "a", "b"), &link(2), Some(&alice), false),
            Err(Refusal::NotASide)
        );
        assert_eq!(
            d.check(
                t0,
                &did("c1", "a", "b"),
                &alice,
                Some(&client(9, 5060)),
                false
            ),
            Err(Refusal::Elsewhere)
        );
        assert_eq!(
            d.check(t0, &did("c1", "a", "b"), &alice, Some(&link(2)), false),
            Err(Refusal::Elsewhere)
        );
        assert_eq!(
            d.check(t0, &did("c2", "a", "b"), &alice, Some(&node_b), false),
            Err(Refusal::Unknown)
        );
    }

    #[test]
    fn dialogs_expire_end_and_stay_bounded() {
        let t0 = Instant::now();
        let config = Config {
            max_dialogs: 2,
            ..Config::default()
        };
        let mut d = Dialogs::new(config.clone(), is_link);
        let (alice, bob) = (client(1, 1), client(2, 2));
        d.learn(t0, &id(), alice, bob, false);
        let later = t0 + config.early + Duration::from_secs(1);
        assert_eq!(
            d.check(later, &did("c1", "a", "b"), &alice, Some(&bob), false),
            Err(Refusal::Unknown)
        );
        d.learn(t0, &id(), alice, bob, true);
        assert_eq!(
            d.check(t0, &did("c1", "a", "b"), &alice, Some(&bob), true),
            Ok(())
        );
        let after_bye = t0 + config.ending + Duration::from_secs(1);
        assert_eq!(
            d.check(after_bye, &did("c1", "a", "b"), &alice, Some(&bob), false),
            Err(Refusal::Unknown)
        );
        for n in 0..10 {
            let id = DialogId {
                call_id: format!("x{n}"),
                ..id()
            };
            d.learn(t0 + Duration::from_secs(n), &id, alice, bob, true);
        }
        assert_eq!(d.len(), 2);
        assert_eq!(
            d.check(
                t0 + Duration::from_secs(9),
                &did("x9", "a", "b"),
                &alice,
                Some(&bob),
                false
            ),
            Ok(())
        );
    }
}
