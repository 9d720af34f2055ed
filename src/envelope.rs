//! The SMTP envelope of a fetched message, derived from its header section.
//!
//! Sender (DESIGN.md, Envelope): `Return-Path`, else `Sender`, else `From`; a bare local part gets
//! the configured default domain; whatever cannot be made a valid address becomes the null sender.
//! Recipients come from the account's `deliver_to`. Nothing a header says can inject SMTP commands:
//! only addresses that pass [`is_valid_address`] are used.

use mail_parser::{HeaderName, MessageParser};

/// Longest address accepted (RFC 5321 §4.5.3.1.3 limits a path to 256 octets).
const MAX_ADDRESS: usize = 254;

/// Whether `addr` is a plain `local@domain` mailbox that is safe to put in `MAIL FROM` or `RCPT
/// TO`: no spaces, no control characters, no angle brackets, one `@`, a dotted domain.
pub fn is_valid_address(addr: &str) -> bool {
    let Some((local, domain)) = addr.rsplit_once('@') else {
        return false;
    };
    addr.len() <= MAX_ADDRESS
        && !local.is_empty()
        && !domain.is_empty()
        && addr
            .chars()
            .all(|c| c.is_ascii_graphic() || (!c.is_ascii() && !c.is_control()))
        && !addr.contains(['<', '>', ',', ';', '(', ')', '[', ']', '\\', '"'])
        && !local.contains('@')
        && domain.split('.').all(|l| !l.is_empty())
}

/// Makes `raw` (from a header) an envelope address: angle brackets and spaces trimmed, the default
/// domain added to a bare local part. `None` when the result is not a valid address.
fn normalise(raw: &str, default_domain: Option<&str>) -> Option<String> {
    let trimmed = raw
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .trim();
    if trimmed.is_empty() {
        return None;
    }
    let addr = match (trimmed.contains('@'), default_domain) {
        (true, _) => trimmed.to_string(),
        (false, Some(domain)) => format!("{trimmed}@{domain}"),
        (false, None) => return None,
    };
    is_valid_address(&addr).then_some(addr)
}

/// The envelope sender for a message whose header section is `headers`; empty for `<>`.
pub fn sender_from_headers(headers: &[u8], default_domain: Option<&str>) -> String {
    let Some(message) = MessageParser::new().parse_headers(headers) else {
        return String::new();
    };
    // Return-Path is returned raw by mail-parser, brackets and all. `<>` is a deliberate null
    // sender (a bounce): keep it null rather than fall back to From.
    if let Some(raw) = message.header_raw(HeaderName::ReturnPath) {
        let inner = raw.trim();
        if inner == "<>" {
            return String::new();
        }
        if let Some(addr) = normalise(inner, default_domain) {
            return addr;
        }
    }
    // A bare `From: root` parses as a display name without an address: take it as a local part.
    let from_header = |addr: Option<&mail_parser::Address>| {
        let first = addr.and_then(|a| a.first())?;
        let text = first
            .address()
            .or_else(|| first.name().filter(|n| !n.contains(char::is_whitespace)))?;
        normalise(text, default_domain)
    };
    from_header(message.sender())
        .or_else(|| from_header(message.from()))
        .unwrap_or_default()
}

/// Every address in the `To`, `Cc` and `Bcc` headers (all copies of each), first occurrence kept,
/// without duplicates (compared ignoring case); addresses that are not valid are left out.
pub fn recipients_from_headers(headers: &[u8], default_domain: Option<&str>) -> Vec<String> {
    let Some(message) = MessageParser::new().parse_headers(headers) else {
        return Vec::new();
    };
    let mut out: Vec<String> = Vec::new();
    for name in [HeaderName::To, HeaderName::Cc, HeaderName::Bcc] {
        for value in message.header_values(name) {
            let Some(list) = value.as_address() else {
                continue;
            };
            for addr in list
                .iter()
                .filter_map(|a| a.address())
                .filter_map(|a| normalise(a, default_domain))
            {
                if !out.iter().any(|o| o.eq_ignore_ascii_case(&addr)) {
                    out.push(addr);
                }
            }
        }
    }
    out
}

/// Normalises an address given in a replay line (`X-Sender: <a@b>`); `Some("")` for `<>`.
pub fn replay_address(raw: &str, default_domain: Option<&str>) -> Option<String> {
    if raw.trim() == "<>" {
        return Some(String::new());
    }
    normalise(raw, default_domain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sender_precedence() {
        let h = b"From: Ann <ann@example.net>\r\nSender: list@example.net\r\nReturn-Path: <bounce@example.net>\r\n\r\n";
        assert_eq!(sender_from_headers(h, None), "bounce@example.net");
        let h = b"From: Ann <ann@example.net>\r\nSender: list@example.net\r\n\r\n";
        assert_eq!(sender_from_headers(h, None), "list@example.net");
        let h = b"From: Ann <ann@example.net>\r\n\r\n";
        assert_eq!(sender_from_headers(h, None), "ann@example.net");
        let h = b"Return-Path: <>\r\nFrom: ann@example.net\r\n\r\n";
        assert_eq!(sender_from_headers(h, None), "");
    }

    #[test]
    fn bad_senders_become_null_or_get_the_default_domain() {
        let h = b"From: root\r\n\r\n";
        assert_eq!(
            sender_from_headers(h, Some("example.org")),
            "root@example.org"
        );
        assert_eq!(sender_from_headers(h, None), "");
        let h = b"Return-Path: <a@b>\r\n RCPT TO:<victim@x>\r\n\r\n";
        assert_eq!(sender_from_headers(h, None), "");
        assert_eq!(sender_from_headers(b"\0\0garbage", None), "");
    }

    #[test]
    fn recipients_from_every_copy_of_to_cc_and_bcc() {
        let h = b"To: a@example.org, B <b@example.org>\r\nCc: c@example.org\r\nTo: d@example.org\r\nBcc: hidden@example.org, A@example.org\r\n\r\n";
        assert_eq!(
            recipients_from_headers(h, None),
            [
                "a@example.org",
                "b@example.org",
                "d@example.org",
                "c@example.org",
                "hidden@example.org"
            ]
        );
        assert!(recipients_from_headers(b"Subject: none\r\n\r\n", None).is_empty());
        assert_eq!(replay_address("<>", None).as_deref(), Some(""));
        assert_eq!(replay_address(" <x@y.z> ", None).as_deref(), Some("x@y.z"));
    }

    #[test]
    fn address_validation() {
        assert!(is_valid_address("user@example.org"));
        assert!(is_valid_address("first.last+tag@sub.example.org"));
        for bad in [
            "user",
            "@x",
            "u@",
            "a b@x",
            "a@b\r\nRCPT TO:<x@y>",
            "<a@b>",
            "a@b..c",
            "a\0@b",
        ] {
            assert!(!is_valid_address(bad), "{bad:?}");
        }
    }
}
