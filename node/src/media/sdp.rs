//! Reading and rewriting SDP (RFC 4566, with `sdp-types`): where a softphone wants its media,
//! and an offer or answer from the other end node rewritten so that the media goes to this
//! node's ports.

use std::net::{IpAddr, SocketAddr};

use sdp_types::{Connection, Media, Session};

use super::Error;

/// The attributes of ICE (RFC 8839) and of the pre-ICE `a=rtcp` (RFC 3605), removed from a
/// rewritten SDP: the softphone talks to this node's ports, never to the far side's
/// candidates, and RTCP is on RTP+1 of the node's pair.
const REMOVED: &[&str] = &[
    "candidate",
    "remote-candidates",
    "ice-ufrag",
    "ice-pwd",
    "ice-options",
    "ice-lite",
    "ice-mismatch",
    "ice-pacing",
    "end-of-candidates",
    "rtcp",
];

/// Parses an SDP body; the error says which line is wrong.
pub(crate) fn parse(body: &[u8]) -> Result<Session, Error> {
    Session::parse(body).map_err(|e| Error::BadSdp(e.to_string()))
}

/// Prints an SDP.
pub(crate) fn print(session: &Session) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    // Writing into a Vec cannot fail.
    let _ = session.write(&mut out);
    out
}

/// Where a softphone wants one m-line's media: RTP and RTCP addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Declared {
    /// RTP: the m-line's c= (or the session's) and port.
    pub(crate) rtp: Option<SocketAddr>,
    /// RTCP: `a=rtcp` when given, the RTP address with `a=rtcp-mux`, else RTP port + 1.
    pub(crate) rtcp: Option<SocketAddr>,
}

/// Whether an m-line carries media (a zero port disables it, RFC 3264 §6).
pub(crate) fn is_active(media: &Media) -> bool {
    media.port != 0
}

/// What each m-line of `session` declares; `None` for disabled lines. An address of
/// `0.0.0.0`/`::` (the old way to hold) or one that is not an IP declares no address.
pub(crate) fn declared(session: &Session) -> Vec<Option<Declared>> {
    session
        .medias
        .iter()
        .map(|media| {
            if !is_active(media) {
                return None;
            }
            let ip = media
                .connections
                .first()
                .or(session.connection.as_ref())
                .and_then(|c| c.try_address().ok())
                .map(|a| a.ip)
                .filter(|ip| !ip.is_unspecified() && !ip.is_multicast());
            let rtp = ip.map(|ip| SocketAddr::new(ip, media.port));
            let rtcp = if media.has_attribute("rtcp-mux") {
                rtp
            } else if let Some(Some(value)) = media.get_first_attribute_value("rtcp") {
                rtcp_attribute(value, ip)
            } else {
                ip.map(|ip| SocketAddr::new(ip, media.port.saturating_add(1)))
            };
            Some(Declared { rtp, rtcp })
        })
        .collect()
}

/// `a=rtcp:<port> [IN IP4 <address>]` (RFC 3605).
fn rtcp_attribute(value: &str, ip: Option<IpAddr>) -> Option<SocketAddr> {
    let mut words = value.split_ascii_whitespace();
    let port: u16 = words.next()?.parse().ok()?;
    let address = match (words.next(), words.next(), words.next()) {
        (Some("IN"), Some(_), Some(address)) => address.parse().ok(),
        _ => ip,
    };
    address.map(|ip| SocketAddr::new(ip, port))
}

/// Rewrites an offer or answer from the other end node for this node's softphone: `c=` at
/// session level and on every active m-line set to `ip`, each active m-line's port set to
/// `ports[index]` (the RTP port of the node's pair; RTCP is the next one), `a=rtcp` and the
/// ICE attributes removed, the o= version set to `version`. Disabled (zero-port) m-lines
/// are left as they are; `ports` has an entry for each active one.
pub(crate) fn rewrite(session: &mut Session, ip: IpAddr, ports: &[Option<u16>], version: u64) {
    session.origin.sess_version = version;
    session.connection = Some(Connection::from_ip_addr(ip));
    session
        .attributes
        .retain(|a| !REMOVED.contains(&a.attribute.as_str()));
    for (index, media) in session.medias.iter_mut().enumerate() {
        let Some(Some(port)) = ports.get(index) else {
            continue;
        };
        if !is_active(media) {
            continue;
        }
        media.port = *port;
        media.num_ports = None;
        if !media.connections.is_empty() {
            media.connections = vec![Connection::from_ip_addr(ip)];
        }
        media
            .attributes
            .retain(|a| !REMOVED.contains(&a.attribute.as_str()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\n\
o=alice 2890844526 2890844526 IN IP4 192.168.1.20\r\n\
s=-\r\n\
c=IN IP4 192.168.1.20\r\n\
t=0 0\r\n\
a=ice-ufrag:F7gI\r\n\
a=ice-pwd:x9cml/YzichV2+XlhiMu8g\r\n\
a=ice-options:trickle\r\n\
m=audio 49170 RTP/AVP 0 8\r\n\
c=IN IP4 192.168.1.20\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtcp:49171 IN IP4 192.168.1.20\r\n\
a=candidate:1 1 UDP 2130706431 192.168.1.20 49170 typ host\r\n\
a=candidate:2 1 UDP 1694498815 203.0.113.7 61000 typ srflx raddr 192.168.1.20 rport 49170\r\n\
a=remote-candidates:1 192.0.2.3 45664\r\n\
a=end-of-candidates\r\n\
a=sendrecv\r\n\
m=video 0 RTP/AVP 31\r\n\
c=IN IP4 192.168.1.20\r\n\
m=audio 50000 RTP/AVP 0\r\n\
a=rtcp-mux\r\n";

    #[test]
    fn what_a_softphone_declares_per_m_line() {
        let session = parse(OFFER.as_bytes()).unwrap();
        let declared = declared(&session);
        assert_eq!(
            declared,
            vec![
                Some(Declared {
                    rtp: Some("192.168.1.20:49170".parse().unwrap()),
                    rtcp: Some("192.168.1.20:49171".parse().unwrap()),
                }),
                None,
                Some(Declared {
                    rtp: Some("192.168.1.20:50000".parse().unwrap()),
                    rtcp: Some("192.168.1.20:50000".parse().unwrap()),
                }),
            ]
        );
    }

    #[test]
    fn rtcp_is_the_next_port_without_a_rtcp_attribute_and_hold_declares_nothing() {
        let sdp = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
m=audio 4000 RTP/AVP 0\r\nm=audio 4002 RTP/AVP 0\r\nc=IN IP4 0.0.0.0\r\n";
        let declared = declared(&parse(sdp.as_bytes()).unwrap());
        assert_eq!(
            declared[0].unwrap().rtcp,
            Some("10.0.0.1:4001".parse().unwrap())
        );
        assert_eq!(
            declared[1],
            Some(Declared {
                rtp: None,
                rtcp: None
            })
        );
    }

    #[test]
    fn the_rewrite_points_media_at_the_node_and_drops_ice() {
        let mut session = parse(OFFER.as_bytes()).unwrap();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        rewrite(
            &mut session,
            ip,
            &[Some(30000), None, Some(30002)],
            2890844527,
        );
        let text = String::from_utf8(print(&session)).unwrap();
        let again = parse(text.as_bytes()).unwrap();
        assert_eq!(again.origin.sess_version, 2890844527);
        assert_eq!(
            again.connection.as_ref().unwrap().connection_address,
            "127.0.0.1"
        );
        assert_eq!(again.medias[0].port, 30000);
        assert_eq!(
            again.medias[0].connections[0].connection_address,
            "127.0.0.1"
        );
        assert_eq!(again.medias[2].port, 30002);
        assert!(
            again.medias[2].connections.is_empty(),
            "no c= added where none was"
        );
        // The disabled line is untouched, its own c= included.
        assert_eq!(again.medias[1].port, 0);
        assert_eq!(
            again.medias[1].connections[0].connection_address,
            "192.168.1.20"
        );
        for removed in ["ice-", "candidate", "a=rtcp:", "192.0.2.3", "203.0.113.7"] {
            assert!(!text.contains(removed), "{removed} left in:\n{text}");
        }
        // What the softphone needs is kept.
        for kept in [
            "a=rtpmap:0 PCMU/8000",
            "a=sendrecv",
            "a=rtcp-mux",
            "m=video 0 ",
        ] {
            assert!(text.contains(kept), "{kept} lost:\n{text}");
        }
        // The rewritten SDP declares the node's pair.
        let declared = declared(&again);
        assert_eq!(
            declared[0].unwrap().rtp,
            Some("127.0.0.1:30000".parse().unwrap())
        );
        assert_eq!(
            declared[0].unwrap().rtcp,
            Some("127.0.0.1:30001".parse().unwrap())
        );
    }

    #[test]
    fn a_bad_sdp_is_an_error_that_says_why() {
        let error = parse(b"v=0\r\no=broken\r\n").unwrap_err();
        let Error::BadSdp(reason) = &error else {
            panic!("{error:?}");
        };
        assert!(!reason.is_empty());
        assert!(error.to_string().contains(reason.as_str()));
        assert!(parse(b"hello").is_err());
    }

    #[test]
    fn print_then_parse_is_the_identity_on_a_rewritten_sdp() {
        let mut session = parse(OFFER.as_bytes()).unwrap();
        rewrite(
            &mut session,
            "::1".parse().unwrap(),
            &[Some(4000), None, Some(4002)],
            1,
        );
        let printed = print(&session);
        assert_eq!(print(&parse(&printed).unwrap()), printed);
        assert!(String::from_utf8(printed).unwrap().contains("c=IN IP6 ::1"));
    }
}
