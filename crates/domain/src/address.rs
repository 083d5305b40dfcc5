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
