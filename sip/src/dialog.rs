//! Dialogs (RFC 3261 §12): the peer-to-peer relationship an INVITE sets up, and what every
//! request inside it must carry. Sans-IO and clock-free: a [`Dialog`] is state plus the rules
//! of §12.1 (creation), §12.2.1 (requests sent) and §12.2.2 (requests received), with the
//! re-INVITE rules of §14.

use std::fmt;

use crate::header::{CSeq, CallId, Contact, From, RecordRoute, To, TypedHeader};
use crate::text::first_element;
use crate::uri::Uri;
use crate::{Error, HeaderName, Headers, Method, Rejection, Request, Response, StatusCode};

/// What identifies a dialog: Call-ID and the two tags, from this side's point of view
/// (§12).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DialogId {
    /// The Call-ID.
    pub call_id: String,
    /// This side's tag (From of our requests, To of our responses).
    pub local_tag: String,
    /// The other side's tag ("" for an RFC 2543 peer that sent none).
    pub remote_tag: String,
}

impl DialogId {
    /// The dialog a received request belongs to, as a UAS sees it: local tag from To,
    /// remote tag from From. `None` without a To tag (an out-of-dialog request).
    pub fn of_request(request: &Request) -> Option<DialogId> {
        DialogId::from_headers(request.headers(), true)
    }

    /// The dialog a received response belongs to, as the UAC sees it: local tag from From,
    /// remote tag from To. `None` without a To tag.
    pub fn of_response(response: &Response) -> Option<DialogId> {
        DialogId::from_headers(response.headers(), false)
    }

    fn from_headers(h: &Headers, local_is_to: bool) -> Option<DialogId> {
        let to = h.typed::<To>()?.ok()?.tag()?.to_owned();
        let from = h
            .typed::<From>()?
            .ok()?
            .tag()
            .unwrap_or_default()
            .to_owned();
        let call_id = h.typed::<CallId>()?.ok()?.0.to_owned();
        let (local_tag, remote_tag) = if local_is_to { (to, from) } else { (from, to) };
        Some(DialogId {
            call_id,
            local_tag,
            remote_tag,
        })
    }
}

impl fmt::Display for DialogId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{};local={};remote={}",
            self.call_id, self.local_tag, self.remote_tag
        )
    }
}

/// Early (after a provisional response with a tag) or confirmed (after a 2xx).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialogState {
    /// Created by a 1xx; ends if the INVITE gets a non-2xx.
    Early,
    /// Created or confirmed by a 2xx.
    Confirmed,
}

/// One dialog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialog {
    id: DialogId,
    state: DialogState,
    /// The CSeq of our last request; `None` until we send one (§12.1.1).
    local_seq: Option<u32>,
    /// The CSeq of the peer's last request.
    remote_seq: Option<u32>,
    /// Our address with our tag, as it goes in From (requests) or To (responses).
    local: String,
    /// The peer's address with its tag.
    remote: String,
    /// Where our requests go: the peer's Contact URI.
    remote_target: String,
    /// The route set: Record-Route entries as written (`<sip:p1;lr>`), in the order our
    /// requests visit them.
    route_set: Vec<String>,
    /// Whether a re-INVITE of ours is waiting for its final response (§14.1).
    invite_sent: bool,
    /// Whether a re-INVITE of the peer's waits for our final response (§14.2).
    invite_received: bool,
}

impl Dialog {
    /// The UAC's dialog from a response (1xx or 2xx, with a To tag) to its INVITE (§12.1.2):
    /// the route set is the response's Record-Route reversed, the remote target its Contact.
    pub fn from_response(request: &Request, response: &Response) -> Result<Dialog, Error> {
        let id = DialogId::of_response(response).ok_or(Error::NotAllowed(
            "a response without a To tag creates no dialog",
        ))?;
        let state = if response.status().is_success() {
            DialogState::Confirmed
        } else {
            DialogState::Early
        };
        let rh = response.headers();
        let mut route_set = record_routes(rh)?;
        route_set.reverse();
        let remote_target = contact_uri(rh)?.unwrap_or_else(|| request.uri_str().to_owned());
        Ok(Dialog {
            id,
            state,
            local_seq: Some(cseq(request.headers())?),
            remote_seq: None,
            local: value(request.headers(), HeaderName::From)?,
            remote: value(rh, HeaderName::To)?,
            remote_target,
            route_set,
            invite_sent: false,
            invite_received: false,
        })
    }

    /// The UAS's dialog from a request it answers with a 1xx or 2xx carrying `local_tag`
    /// (§12.1.1): the route set is the request's Record-Route in order, the remote target
    /// its Contact (or, from an RFC 2543 peer that sent none, its From URI).
    pub fn from_request(
        request: &Request,
        local_tag: &str,
        state: DialogState,
    ) -> Result<Dialog, Error> {
        let h = request.headers();
        let call_id = h
            .typed::<CallId>()
            .ok_or(Error::MissingHeaders {
                names: vec!["Call-ID"],
            })??
            .0
            .to_owned();
        let remote_tag = h
            .typed::<From>()
            .ok_or(Error::MissingHeaders {
                names: vec!["From"],
            })??
            .tag()
            .unwrap_or_default()
            .to_owned();
        // An RFC 2543 peer may send no Contact; its From is then the best target there is.
        let remote_target = match contact_uri(h)? {
            Some(target) => target,
            None => h
                .typed::<From>()
                .ok_or(Error::MissingHeaders {
                    names: vec!["Contact"],
                })??
                .0
                .uri()
                .as_str()
                .to_owned(),
        };
        let to = value(h, HeaderName::To)?;
        let local = if h
            .typed::<To>()
            .and_then(Result::ok)
            .is_some_and(|t| t.tag().is_some())
        {
            to
        } else {
            format!("{to};tag={local_tag}")
        };
        Ok(Dialog {
            id: DialogId {
                call_id,
                local_tag: local_tag.to_owned(),
                remote_tag,
            },
            state,
            local_seq: None,
            remote_seq: Some(cseq(h)?),
            local,
            remote: value(h, HeaderName::From)?,
            remote_target,
            route_set: record_routes(h)?,
            invite_sent: false,
            invite_received: false,
        })
    }

    /// The dialog id.
    pub fn id(&self) -> &DialogId {
        &self.id
    }

    /// Early or confirmed.
    pub fn state(&self) -> DialogState {
        self.state
    }

    /// Where requests go: the peer's Contact URI.
    pub fn remote_target(&self) -> &str {
        &self.remote_target
    }

    /// The route set, in the order requests visit it.
    pub fn route_set(&self) -> &[String] {
        &self.route_set
    }

    /// The CSeq of our last request.
    pub fn local_seq(&self) -> Option<u32> {
        self.local_seq
    }

    /// The CSeq of the peer's last request.
    pub fn remote_seq(&self) -> Option<u32> {
        self.remote_seq
    }

    /// The UAC's early dialog gets its 2xx (§13.2.2.4): confirmed, with the route set and
    /// remote target of the 2xx.
    pub fn confirm(&mut self, response: &Response) -> Result<(), Error> {
        let h = response.headers();
        if self.state == DialogState::Early {
            let mut routes = record_routes(h)?;
            routes.reverse();
            self.route_set = routes;
        }
        if let Some(target) = contact_uri(h)? {
            self.remote_target = target;
        }
        self.state = DialogState::Confirmed;
        Ok(())
    }

    /// A 2xx to our re-INVITE (or UPDATE) refreshes the remote target (§12.2.1.2), and ends
    /// the pending re-INVITE.
    pub fn refreshed(&mut self, response: &Response) -> Result<(), Error> {
        if response.status().is_success()
            && let Some(target) = contact_uri(response.headers())?
        {
            self.remote_target = target;
        }
        if response.status().is_final() {
            self.invite_sent = false;
        }
        Ok(())
    }

    /// A request to send in this dialog (§12.2.1.1), with the next CSeq (a CANCEL or ACK
    /// takes its INVITE's number instead: see [`Dialog::ack`]). `via` is the complete top Via
    /// value, branch included. The Request-URI and Route follow loose routing (first route
    /// with `lr`) or strict routing (first route as Request-URI, remote target last).
    pub fn request(&mut self, method: Method, via: &str) -> Result<Request, Error> {
        if method == Method::Invite {
            if self.invite_sent || self.invite_received {
                return Err(Error::NotAllowed(
                    "a re-INVITE is already in progress in this dialog (§14.1)",
                ));
            }
            self.invite_sent = true;
        }
        let seq = self.local_seq.map_or(1, |s| s.wrapping_add(1).max(1));
        self.local_seq = Some(seq);
        self.build(method, seq, via)
    }

    /// The ACK for a 2xx to the INVITE with CSeq `invite_seq` (§13.2.2.4): built like any
    /// request of the dialog, with the INVITE's sequence number.
    pub fn ack(&self, invite_seq: u32, via: &str) -> Result<Request, Error> {
        self.build(Method::Ack, invite_seq, via)
    }

    /// The URI the next request goes to (§8.1.2): the first route, or the remote target.
    pub fn next_hop(&self) -> String {
        match self.route_set.first() {
            Some(route) => strip_angle(route).to_owned(),
            None => self.remote_target.clone(),
        }
    }

    /// A request received in this dialog (§12.2.2): a CSeq lower than the last is out of
    /// order (500), a re-INVITE while ours is pending is glare (491), a second re-INVITE
    /// before we answered the first gets 500 with Retry-After (§14.2); a target-refresh
    /// request updates the remote target. On `Ok`, the peer's CSeq is taken.
    pub fn receive(&mut self, request: &Request) -> Result<(), Rejection> {
        let h = request.headers();
        let seq = cseq(h).map_err(|e| Rejection::from_error(&e))?;
        let method = request.method();
        if *method != Method::Ack && *method != Method::Cancel {
            if let Some(last) = self.remote_seq
                && seq <= last
            {
                return Err(
                    Rejection::new(StatusCode::SERVER_INTERNAL_ERROR, "CSeq out of order")
                        .with_detail(format!(
                            "CSeq {seq} is not above the last one, {last} (RFC 3261 §12.2.2)"
                        )),
                );
            }
            if *method == Method::Invite {
                if self.invite_sent {
                    return Err(Rejection::new(
                        StatusCode::REQUEST_PENDING,
                        "Request Pending",
                    ));
                }
                if self.invite_received {
                    let mut r = Rejection::new(
                        StatusCode::SERVER_INTERNAL_ERROR,
                        "Previous INVITE still pending",
                    );
                    r.detail = Some(
                        "a re-INVITE arrived before the previous one was answered (RFC 3261 §14.2)"
                            .into(),
                    );
                    return Err(r);
                }
                self.invite_received = true;
            }
            self.remote_seq = Some(seq);
        }
        if matches!(method, Method::Invite | Method::Update)
            && let Ok(Some(target)) = contact_uri(h)
        {
            self.remote_target = target;
        }
        Ok(())
    }

    /// Our final response to the peer's re-INVITE went out.
    pub fn answered_invite(&mut self) {
        self.invite_received = false;
    }

    fn build(&self, method: Method, seq: u32, via: &str) -> Result<Request, Error> {
        let strict = self.route_set.first().is_some_and(|r| !is_loose(r));
        let uri = if strict {
            strip_angle(&self.route_set[0]).to_owned()
        } else {
            self.remote_target.clone()
        };
        let mut req = Request::new(method.clone(), &uri)?;
        let h = req.headers_mut();
        h.push(HeaderName::Via, via);
        h.push(HeaderName::MaxForwards, "70");
        if strict {
            for route in &self.route_set[1..] {
                h.push(HeaderName::Route, route);
            }
            h.push(HeaderName::Route, format!("<{}>", self.remote_target));
        } else {
            for route in &self.route_set {
                h.push(HeaderName::Route, route);
            }
        }
        h.push(HeaderName::From, &self.local);
        h.push(HeaderName::To, &self.remote);
        h.push(HeaderName::CallId, &self.id.call_id);
        h.push(HeaderName::CSeq, format!("{seq} {method}"));
        h.push(HeaderName::ContentLength, "0");
        Ok(req)
    }
}

/// Every Record-Route value, each one element, as written.
fn record_routes(h: &Headers) -> Result<Vec<String>, Error> {
    let mut routes = Vec::new();
    for field in h.get_all(HeaderName::RecordRoute) {
        for element in crate::text::split_list(field.value) {
            // Check the grammar; keep the text as written.
            RecordRoute::parse(element).map_err(|e| e.at_line(field.line))?;
            routes.push(crate::text::ascii(element).to_owned());
        }
    }
    Ok(routes)
}

/// The URI of the first Contact, if there is one.
fn contact_uri(h: &Headers) -> Result<Option<String>, Error> {
    match h.typed::<Contact>() {
        None => Ok(None),
        Some(Err(e)) => Err(e),
        Some(Ok(Contact::Star)) => Err(Error::NotAllowed("Contact: * names no target")),
        Some(Ok(Contact::Address(a))) => Ok(Some(a.uri().as_str().to_owned())),
    }
}

fn cseq(h: &Headers) -> Result<u32, Error> {
    Ok(h.typed::<CSeq>()
        .ok_or(Error::MissingHeaders {
            names: vec!["CSeq"],
        })??
        .seq())
}

fn value(h: &Headers, name: HeaderName) -> Result<String, Error> {
    let v = h.get(name).ok_or(Error::MissingHeaders {
        names: vec![name.as_str()],
    })?;
    Ok(crate::text::ascii(first_element(v)).to_owned())
}

/// `<uri>;params` -> `uri`.
fn strip_angle(route: &str) -> &str {
    let start = route.find('<').map_or(0, |i| i + 1);
    let end = route[start..].find('>').map_or(route.len(), |i| start + i);
    &route[start..end]
}

/// Whether a route entry's URI has the `lr` parameter (a loose router, RFC 3261 §16.12).
fn is_loose(route: &str) -> bool {
    Uri::parse(strip_angle(route))
        .ok()
        .and_then(|u| u.as_sip().map(|s| s.params().contains("lr")))
        .unwrap_or(false)
}
