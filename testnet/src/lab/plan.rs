//! The lab's address plan: documentation ranges only (RFC 5737, RFC 3849), so nothing the
//! lab does can reach or shadow a real network.

use std::net::{Ipv4Addr, Ipv6Addr};

/// The internet segment's IPv4 network (TEST-NET-3).
pub(crate) const INTERNET_V4: (Ipv4Addr, u8) = (Ipv4Addr::new(203, 0, 113, 0), 24);
/// The internet segment's IPv6 network.
pub(crate) const INTERNET_V6: (Ipv6Addr, u8) = (Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0), 64);
/// The last octet of the first internet address; the ones below are left free.
const INTERNET_FIRST: u8 = 10;
/// How many attachments the internet segment takes (203.0.113.10 to .209).
pub(crate) const MAX_INTERNET: usize = 200;

/// The LANs' supernet (TEST-NET-2), cut into /28s.
const LANS: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 0);
/// The carrier segments' supernet (TEST-NET-1), cut into /28s.
const CARRIERS: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 0);
/// The prefix length of a LAN and of a carrier segment.
pub(crate) const SUBNET_LEN: u8 = 28;
/// How many /28s fit in a /24: the most LANs a lab has.
pub(crate) const MAX_LANS: usize = 16;
/// How many hosts fit on a LAN: .2 to .14 of its /28 (.0 network, .1 router, .15
/// broadcast).
pub(crate) const MAX_LAN_HOSTS: usize = 13;

/// The `i`-th address of the internet segment: 203.0.113.(10 + i).
pub(crate) fn internet_v4(i: usize) -> Ipv4Addr {
    let [a, b, c, _] = INTERNET_V4.0.octets();
    Ipv4Addr::new(a, b, c, last_octet(i))
}

/// The `i`-th IPv6 address of the internet segment: 2001:db8:1:: followed by the same digits
/// as the IPv4 address's last octet (203.0.113.12 and 2001:db8:1::12), for readable logs.
pub(crate) fn internet_v6(i: usize) -> Ipv6Addr {
    let digits = last_octet(i).to_string();
    // Three decimal digits read as hex fit a u16.
    let group = u16::from_str_radix(&digits, 16).unwrap_or(0);
    let [a, b, c, ..] = INTERNET_V6.0.segments();
    Ipv6Addr::new(a, b, c, 0, 0, 0, 0, group)
}

/// LAN `k`'s network: 198.51.100.(16 k)/28.
pub(crate) fn lan_net(k: usize) -> Ipv4Addr {
    nth_subnet(LANS, k, 0)
}

/// LAN `k`'s router (its hosts' gateway): 198.51.100.(16 k + 1).
pub(crate) fn lan_gateway(k: usize) -> Ipv4Addr {
    nth_subnet(LANS, k, 1)
}

/// The `j`-th host of LAN `k`: 198.51.100.(16 k + 2 + j).
pub(crate) fn lan_host(k: usize, j: usize) -> Ipv4Addr {
    nth_subnet(LANS, k, 2 + j)
}

/// Carrier segment `k`'s network (the CGNAT of LAN `k`): 192.0.2.(16 k)/28.
pub(crate) fn carrier_net(k: usize) -> Ipv4Addr {
    nth_subnet(CARRIERS, k, 0)
}

/// The carrier NAT's inside address on segment `k`: 192.0.2.(16 k + 1).
pub(crate) fn carrier_gateway(k: usize) -> Ipv4Addr {
    nth_subnet(CARRIERS, k, 1)
}

/// The home router's outside address on carrier segment `k`: 192.0.2.(16 k + 2).
pub(crate) fn carrier_customer(k: usize) -> Ipv4Addr {
    nth_subnet(CARRIERS, k, 2)
}

/// 203.0.113.(10 + i), saturating at .254 (the builder refuses more than [`MAX_INTERNET`]).
fn last_octet(i: usize) -> u8 {
    u8::try_from(usize::from(INTERNET_FIRST) + i)
        .unwrap_or(254)
        .min(254)
}

/// Address `offset` of the `k`-th /28 of a /24 (the builder keeps both in range).
fn nth_subnet(base: Ipv4Addr, k: usize, offset: usize) -> Ipv4Addr {
    let [a, b, c, _] = base.octets();
    let last = (k % MAX_LANS) * 16 + offset % 16;
    Ipv4Addr::new(a, b, c, u8::try_from(last).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_follow_the_plan() {
        assert_eq!(internet_v4(0), Ipv4Addr::new(203, 0, 113, 10));
        assert_eq!(internet_v6(2).to_string(), "2001:db8:1::12");
        assert_eq!(internet_v6(MAX_INTERNET - 1).to_string(), "2001:db8:1::209");
        assert_eq!(lan_net(1), Ipv4Addr::new(198, 51, 100, 16));
        assert_eq!(lan_gateway(1), Ipv4Addr::new(198, 51, 100, 17));
        assert_eq!(lan_host(1, 0), Ipv4Addr::new(198, 51, 100, 18));
        assert_eq!(
            lan_host(MAX_LANS - 1, MAX_LAN_HOSTS - 1),
            Ipv4Addr::new(198, 51, 100, 254)
        );
        assert_eq!(carrier_gateway(2), Ipv4Addr::new(192, 0, 2, 33));
        assert_eq!(carrier_customer(2), Ipv4Addr::new(192, 0, 2, 34));
    }
}
