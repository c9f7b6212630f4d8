//! The Via header (RFC 3261 §20.42, §18.2.1; rport from RFC 3581).

use super::typed_header;
use crate::Params;
use crate::text::{Expected, Lex, Scanner};
use crate::uri::{self, Host};

/// The RFC 3261 magic cookie that starts every branch of an RFC 3261 element (§8.1.1.7).
pub const MAGIC_COOKIE: &str = "z9hG4bK";

/// One Via value: `SIP/2.0/UDP host:port;branch=z9hG4bK...;rport`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via<'a> {
    protocol: &'a str,
    version: &'a str,
    transport: &'a str,
    host: Host<'a>,
    port: Option<u16>,
    params: Params<'a>,
    /// The `branch` parameter, found while the parameters were checked.
    branch: Option<&'a str>,
}

impl<'a> Via<'a> {
    /// The protocol name (`SIP`).
    pub fn protocol(&self) -> &'a str {
        self.protocol
    }

    /// The protocol version (`2.0`).
    pub fn version(&self) -> &'a str {
        self.version
    }

    /// The transport as written (`UDP`, `TCP`, `TLS`, `SCTP`, or any token).
    pub fn transport(&self) -> &'a str {
        self.transport
    }

    /// The host of sent-by.
    pub fn host(&self) -> Host<'a> {
        self.host
    }

    /// The port of sent-by, if given.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// All parameters.
    pub fn params(&self) -> Params<'a> {
        self.params
    }

    /// The `branch` parameter.
    pub fn branch(&self) -> Option<&'a str> {
        self.branch
    }

    /// Whether the branch starts with the magic cookie and has more after it, so that
    /// RFC 3261 transaction matching applies (§17.2.3); otherwise the RFC 2543 rules do.
    pub fn has_rfc3261_branch(&self) -> bool {
        self.branch()
            .is_some_and(|b| b.len() > MAGIC_COOKIE.len() && b.starts_with(MAGIC_COOKIE))
    }

    /// The `received` parameter.
    pub fn received(&self) -> Option<&'a str> {
        self.params.get("received").flatten()
    }

    /// The `rport` parameter: `Some(None)` when requested (no value), `Some(Some(port))`
    /// when filled in, `None` when absent.
    pub fn rport(&self) -> Option<Option<u16>> {
        self.params
            .get("rport")
            .map(|v| v.and_then(|p| p.parse().ok()))
    }

    /// The `maddr` parameter.
    pub fn maddr(&self) -> Option<&'a str> {
        self.params.get("maddr").flatten()
    }

    /// The `ttl` parameter.
    pub fn ttl(&self) -> Option<u8> {
        self.params
            .get("ttl")
            .flatten()
            .and_then(|t| t.parse().ok())
    }
}

fn via(s: &str) -> Lex<Via<'_>> {
    let mut sc = Scanner::new(s);
    sc.skip_lws();
    let protocol = sc.token("a protocol name (SIP)")?;
    sc.expect_sep(b'/', "'/' after the protocol name")?;
    let version = sc.token("a protocol version (2.0)")?;
    sc.expect_sep(b'/', "'/' after the protocol version")?;
    let transport = sc.token("a transport (UDP, TCP, TLS...)")?;
    if !sc.skip_lws() {
        return sc.fail("white space after the transport");
    }
    let (host, after) = uri::host(s, sc.pos())?;
    sc.set_pos(after);
    let mut port = None;
    if sc.eat_sep(b':') {
        let at = sc.pos();
        let d = sc.digits("a port number")?;
        port = Some(uri::port_number(d.as_bytes()).ok_or(Expected {
            what: "a port number from 0 to 65535",
            at,
        })?);
    }
    let mut branch = None;
    let params = Params::new(sc.header_params(|name, value| {
        if !via_param_ok(name, value) {
            return Err(Expected {
                what: VIA_PARAM_RULES,
                at: 0,
            });
        }
        if branch.is_none() && name.eq_ignore_ascii_case("branch") {
            branch = Some(value);
        }
        Ok(())
    })?);
    sc.finish("';' and a parameter, or the end of the Via value")?;
    Ok(Via {
        protocol,
        version,
        transport,
        host,
        port,
        params,
        branch: branch.flatten(),
    })
}

/// The grammar of the Via parameters RFC 3261 and RFC 3581 define (§20.42, §25.1).
fn via_param_ok(name: &str, value: Option<&str>) -> bool {
    let is = |n: &str| name.eq_ignore_ascii_case(n);
    match name.len() {
        6 if is("branch") => value.is_some_and(|v| !v.starts_with('"')),
        8 if is("received") => value.is_some_and(|v| uri::ip_address(v).is_some()),
        5 if is("rport") => value.is_none_or(|p| uri::port_number(p.as_bytes()).is_some()),
        5 if is("maddr") => value.is_some_and(|h| uri::host(h, 0).is_ok_and(|(_, n)| n == h.len())),
        3 if is("ttl") => value.is_some_and(|t| t.len() <= 3 && t.parse::<u8>().is_ok()),
        _ => true,
    }
}

const VIA_PARAM_RULES: &str =
    "branch=token, received=IP address, rport[=port], ttl=0..255 and maddr=host";

typed_header!(Via, Via, via);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::TypedHeader;

    #[test]
    fn lws_everywhere_rfc4475_wsinv() {
        let v = Via::parse(b"SIP  /   2.0\r\n /UDP\r\n    192.0.2.2;branch=390skdjuw").unwrap();
        assert_eq!(
            (v.protocol(), v.version(), v.transport()),
            ("SIP", "2.0", "UDP")
        );
        assert_eq!(v.branch(), Some("390skdjuw"));
        assert!(!v.has_rfc3261_branch());
        let v = Via::parse(
            b"SIP  / 2.0  / TCP     spindle.example.com   ;\r\n  branch  =   z9hG4bK9ikj8",
        )
        .unwrap();
        assert_eq!(v.host(), Host::Domain("spindle.example.com"));
        assert!(v.has_rfc3261_branch());
    }

    #[test]
    fn rport_received_and_ipv6() {
        let v = Via::parse(
            b"SIP/2.0/UDP [2001:db8::9:1]:5070;branch=z9hG4bKas;rport;received=192.0.2.1",
        )
        .unwrap();
        assert_eq!(v.port(), Some(5070));
        assert_eq!(v.rport(), Some(None));
        assert_eq!(v.received(), Some("192.0.2.1"));
        let v = Via::parse(b"SIP/2.0/TCP h;rport=5061").unwrap();
        assert_eq!(v.rport(), Some(Some(5061)));
    }

    #[test]
    fn malformed_vias() {
        for s in [
            &b"SIP/2.0/UDP 192.0.2.15;;"[..],
            b"SIP/2.0/UDP",
            b"SIP/2.0 UDP host",
            b"SIP/2.0/UDP host:70000",
            b"SIP/2.0/UDP host;received=somewhere",
            b"SIP/2.0/UDP host;ttl=300",
            b"SIP/2.0/UDP host;branch",
            b"SIP/2.0/UDP host extra",
        ] {
            assert!(Via::parse(s).is_err(), "{}", String::from_utf8_lossy(s));
        }
        assert!(
            Via::parse(b"SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK")
                .is_ok_and(|v| !v.has_rfc3261_branch())
        );
    }
}
