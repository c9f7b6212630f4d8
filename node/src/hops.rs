//! How far the initial INVITEs a node sent travelled in the overlay, by Call-ID: what the
//! testnet reports as a call's hops ([`crate::p2p::Node::invite_hops`]).
//!
//! The caller's node notes each initial INVITE (no To tag) when it hands it on:
//!
//! - **Over the overlay** to the callee's node: once the Route message that carried it was
//!   answered, with the number of overlay links that Route crossed
//!   ([`p2psip_overlay::node::Overlay::route`]). 1 means the caller's node sent it straight to
//!   the callee's node (they were connected, or it knew the node's address); each node in
//!   between adds one. A Route that failed notes nothing.
//! - **To a device registered at the caller's node itself**: 0, the INVITE never entered the
//!   overlay.
//!
//! # Bounds
//!
//! The `Table` keeps the last [`CAPACITY`] Call-IDs noted, the oldest forgotten first, and
//! ignores a Call-ID longer than [`MAX_CALL_ID`] bytes: at most about 1 MiB, whatever the
//! clients send. A Call-ID noted again (an INVITE sent again after a challenge, a branch of a
//! forked INVITE) takes the newer hops and keeps its place.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use libp2p::PeerId;
use p2psip_sip::header::{CallId, To};
use p2psip_sip::{Message, Method};

/// How many Call-IDs a node remembers the hops of.
pub const CAPACITY: usize = 4096;
/// The longest Call-ID noted, in bytes; a longer one is not.
pub const MAX_CALL_ID: usize = 256;

/// Where an initial INVITE went and how many overlay links it crossed to get there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InviteHops {
    /// The node it was sent to: the callee's device's node (this node for 0 hops).
    pub node: PeerId,
    /// How many overlay links it crossed: 0 when the device is registered at the caller's
    /// node, 1 when the caller's node sent it straight to the callee's, one more for each
    /// node in between.
    pub hops: u8,
}

/// The hops of the last [`CAPACITY`] initial INVITEs, by Call-ID; see the module docs.
#[derive(Debug)]
pub(crate) struct Table {
    capacity: usize,
    entries: HashMap<Arc<str>, InviteHops>,
    /// The Call-IDs of `entries`, oldest first.
    order: VecDeque<Arc<str>>,
}

impl Default for Table {
    fn default() -> Table {
        Table::new(CAPACITY)
    }
}

impl Table {
    /// A table that keeps `capacity` Call-IDs.
    pub(crate) fn new(capacity: usize) -> Table {
        Table {
            capacity,
            entries: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Notes the hops of the INVITE of `call_id`, forgetting the oldest Call-ID when full;
    /// false when the Call-ID is empty or longer than [`MAX_CALL_ID`] and was not noted.
    pub(crate) fn note(&mut self, call_id: &str, hops: InviteHops) -> bool {
        if call_id.is_empty() || call_id.len() > MAX_CALL_ID || self.capacity == 0 {
            return false;
        }
        if let Some(entry) = self.entries.get_mut(call_id) {
            *entry = hops;
            return true;
        }
        while self.order.len() >= self.capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.entries.remove(&oldest);
            }
        }
        let key: Arc<str> = Arc::from(call_id);
        self.order.push_back(key.clone());
        self.entries.insert(key, hops);
        true
    }

    /// The hops of the INVITE of `call_id`, if it is still remembered.
    pub(crate) fn get(&self, call_id: &str) -> Option<InviteHops> {
        self.entries.get(call_id).copied()
    }

    /// How many Call-IDs are remembered.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// The Call-ID of a SIP message if it is an initial INVITE (a request without a To tag);
/// `None` for anything else, a message that does not parse included. Cheap for the other
/// messages: only one that starts with `INVITE ` is parsed.
pub(crate) fn initial_invite(bytes: &Bytes) -> Option<String> {
    if !bytes.starts_with(b"INVITE ") {
        return None;
    }
    let Ok(Message::Request(request)) = Message::parse(bytes.clone()) else {
        return None;
    };
    if *request.method() != Method::Invite {
        return None;
    }
    let headers = request.headers();
    let to = headers.typed::<To>()?.ok()?;
    if to.tag().is_some() {
        return None;
    }
    let call_id = headers.typed::<CallId>()?.ok()?;
    Some(call_id.0.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hops(n: u8) -> InviteHops {
        InviteHops {
            node: PeerId::random(),
            hops: n,
        }
    }

    #[test]
    fn the_table_keeps_the_last_calls_and_forgets_the_oldest_first() {
        let mut table = Table::new(3);
        for i in 0..3u8 {
            assert!(table.note(&format!("call-{i}"), hops(i)));
        }
        assert_eq!(table.get("call-0").map(|h| h.hops), Some(0));
        // A fourth call pushes the first out.
        assert!(table.note("call-3", hops(3)));
        assert_eq!(table.len(), 3);
        assert_eq!(table.get("call-0"), None);
        assert_eq!(table.get("call-3").map(|h| h.hops), Some(3));
        // A Call-ID noted again takes the new hops and keeps its place: call-1 is still the
        // oldest and goes next.
        assert!(table.note("call-1", hops(7)));
        assert_eq!(table.get("call-1").map(|h| h.hops), Some(7));
        assert!(table.note("call-4", hops(4)));
        assert_eq!(table.get("call-1"), None);
        assert_eq!(table.get("call-2").map(|h| h.hops), Some(2));
        assert_eq!(table.len(), 3);
    }

    #[test]
    fn no_peer_input_grows_the_table_beyond_its_bound() {
        let mut table = Table::default();
        for i in 0..3 * CAPACITY {
            table.note(&format!("{i}@flood"), hops(1));
        }
        assert_eq!(table.len(), CAPACITY);
        assert_eq!(table.order.len(), CAPACITY);
        // Too long or empty Call-IDs are not noted at all.
        let long = "x".repeat(MAX_CALL_ID + 1);
        assert!(!table.note(&long, hops(1)));
        assert!(!table.note("", hops(1)));
        assert!(table.note(&long[..MAX_CALL_ID], hops(1)));
        assert_eq!(table.len(), CAPACITY);
        assert!(!Table::new(0).note("a", hops(1)));
    }

    fn request(method: &str, to_tag: &str, call_id: &str) -> Bytes {
        format!(
            "{method} sip:bob@example.p2p SIP/2.0\r\n\
             Via: SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bK-1\r\n\
             From: <sip:alice@example.p2p>;tag=a\r\n\
             To: <sip:bob@example.p2p>{to_tag}\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: 1 {method}\r\n\
             Max-Forwards: 70\r\n\
             Content-Length: 0\r\n\r\n"
        )
        .into()
    }

    #[test]
    fn only_initial_invites_give_their_call_id() {
        assert_eq!(
            initial_invite(&request("INVITE", "", "c1@host")).as_deref(),
            Some("c1@host")
        );
        // A re-INVITE, other methods, responses and garbage give nothing.
        assert_eq!(
            initial_invite(&request("INVITE", ";tag=b", "c1@host")),
            None
        );
        assert_eq!(initial_invite(&request("BYE", "", "c1@host")), None);
        assert_eq!(initial_invite(&request("CANCEL", "", "c1@host")), None);
        let response = Bytes::from_static(b"SIP/2.0 180 Ringing\r\nCall-ID: c1@host\r\n\r\n");
        assert_eq!(initial_invite(&response), None);
        assert_eq!(initial_invite(&Bytes::from_static(b"INVITE garbage")), None);
    }
}
