//! Client addresses as personal data: the anonymised form kept after 30
//! days (the seed's GDPR rule): IPv4 to its /24, IPv6 to its /48.

use std::net::IpAddr;

/// Days a full client address is kept.
pub const FULL_ADDRESS_DAYS: i64 = 30;

pub fn anonymise(address: IpAddr) -> String {
    match address {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            format!("{a}.{b}.{c}.0")
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}::", s[0], s[1], s[2])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_the_network() {
        assert_eq!(anonymise("203.0.113.77".parse().unwrap()), "203.0.113.0");
        assert_eq!(
            anonymise("2001:db8:85a3:8d3:1319:8a2e:370:7348".parse().unwrap()),
            "2001:db8:85a3::"
        );
    }
}
