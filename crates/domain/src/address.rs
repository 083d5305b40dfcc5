//! Address syntax checks. They catch what is certainly wrong at intake; a provider still
//! decides whether an address exists.

/// A pragmatic RFC 5321/5322 subset: `local@domain`, no spaces or control characters, a
/// dotted domain of letters, digits and hyphens, within the SMTP length limits.
pub fn is_valid_email(s: &str) -> bool {
    if s.len() > 254 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return false;
    }
    let Some((local, domain)) = s.rsplit_once('@') else { return false };
    if local.is_empty() || local.len() > 64 || local.contains('@') || local.starts_with('.') || local.ends_with('.') {
        return false;
    }
    if local.contains("..") || local.contains(['<', '>', '(', ')', '[', ']', ',', ';', ':', '\\', '"']) {
        return false;
    }
    let labels: Vec<&str> = domain.split('.').collect();
    labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_alphanumeric() || c == '-')
        })
}

/// E.164: `+`, a country code not starting with 0, at most 15 digits in all.
pub fn is_valid_e164(s: &str) -> bool {
    let Some(digits) = s.strip_prefix('+') else { return false };
    (2..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) && !digits.starts_with('0')
}

/// An address a tenant's client must not reach: private, loopback, link-local,
/// unique-local, carrier-grade NAT, unspecified, broadcast, multicast or documentation
/// ranges, in IPv4 or IPv6 (an IPv4-mapped IPv6 address as its IPv4 address).
pub fn is_private_ip(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                // "This network" (0/8) and IETF protocol assignments (192.0.0/24).
                || a == 0
                || (a, b, c) == (192, 0, 0)
                // Carrier-grade NAT, shared address space (RFC 6598).
                || (a == 100 && (64..128).contains(&b))
                // Benchmarking (198.18/15) and reserved (240/4).
                || (a == 198 && (b & 0xfe) == 18)
                || a >= 240
        }
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_private_ip(std::net::IpAddr::V4(v4)),
            None => {
                let [first, second, ..] = v6.segments();
                v6.is_loopback()
                    || v6.is_unspecified()
                    || v6.is_multicast()
                    // Unique-local fc00::/7, link-local fe80::/10, site-local fec0::/10.
                    || (first & 0xfe00) == 0xfc00
                    || (first & 0xffc0) == 0xfe80
                    || (first & 0xffc0) == 0xfec0
                        // Documentation 2001:db8::/32.
                    || (first, second) == (0x2001, 0x0db8)
                    // NAT64 (64:ff9b::/96) reaches the IPv4 address inside it.
                    || ((first, second) == (0x0064, 0xff9b) && {
                        let [.., a, b, c, d] = v6.octets();
                        is_private_ip(std::net::IpAddr::V4(std::net::Ipv4Addr::new(a, b, c, d)))
                    })
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        for ok in ["a@example.com", "first.last+tag@sub.example.org", "x@b.co"] {
            assert!(is_valid_email(ok), "{ok}");
        }
        for bad in ["", "a", "a@", "@b.com", "a@b", "a b@c.com", "a@@b.com", "a@b..com", ".a@b.com", "a@-b.com"] {
            assert!(!is_valid_email(bad), "{bad}");
        }
    }

    #[test]
    fn phones() {
        for ok in ["+15551234567", "+447911123456", "+12"] {
            assert!(is_valid_e164(ok), "{ok}");
        }
        for bad in ["15551234567", "+0123", "+1555123456789012", "+1 555", "+", "+1a"] {
            assert!(!is_valid_e164(bad), "{bad}");
        }
    }
}
