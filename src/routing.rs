//! Catch-all ("global") mailboxes, sans IO: which local recipients a message in a provider's
//! domain-wide mailbox is for.
//!
//! Recipients are looked for in this order, and the first source that yields any address in the
//! local domains wins:
//! 1. the provider's envelope headers (`Delivered-To`, `X-Original-To`, ... in the configured
//!    order), only the topmost `hop` copies of each: those the provider's own hop added. Copies
//!    further down came with the message, and a sender could have written them;
//! 2. `for <addr>` in the topmost `hop` `Received` headers;
//! 3. `To`, `Cc`, `Resent-To`, `Resent-Cc`.
//!
//! Local addresses are then mapped through the routes (exact address, local part, wildcard or
//! regular expression, first match wins); an address no route matches is delivered as it is.
//! Addresses outside the local domains are ignored. What yields nothing goes to the fallback, with
//! the reason. A message that has passed through a catch-all of ours too often is a loop.

use regex::Regex;

/// The header that counts the catch-alls a message went through.
pub const LOOP_HEADER: &str = "X-Outpost-Loop";
/// The header that says why a message went to the fallback.
pub const ROUTING_HEADER: &str = "X-Outpost-Routing";

/// What a route matches.
#[derive(Debug, Clone)]
pub enum Pattern {
    /// `sales@example.org`
    Address(String),
    /// `sales` (any local domain)
    LocalPart(String),
    /// `list-*@example.org`, `*@old.example.org`
    Wildcard(Regex),
    /// `/^(ann|bob)@example\.org$/`
    Regex(Regex),
}

impl Pattern {
    /// Reads a route's `match`: `/.../` is a regular expression, `*` or `?` make a wildcard, an
    /// `@` an address, anything else a local part. Matching ignores case.
    pub fn parse(text: &str) -> Result<Pattern, String> {
        if let Some(inner) = text.strip_prefix('/').and_then(|t| t.strip_suffix('/')) {
            return Regex::new(&format!("(?i){inner}"))
                .map(Pattern::Regex)
                .map_err(|e| e.to_string());
        }
        if text.contains(['*', '?']) {
            let mut re = String::from("(?i)^");
            for c in text.chars() {
                match c {
                    '*' => re.push_str(".*"),
                    '?' => re.push('.'),
                    c => re.push_str(&regex::escape(&c.to_string())),
                }
            }
            re.push('$');
            return Regex::new(&re)
                .map(Pattern::Wildcard)
                .map_err(|e| e.to_string());
        }
        if text.is_empty() {
            return Err("an empty pattern".into());
        }
        Ok(if text.contains('@') {
            Pattern::Address(text.to_ascii_lowercase())
        } else {
            Pattern::LocalPart(text.to_ascii_lowercase())
        })
    }

    fn matches(&self, address: &str) -> bool {
        match self {
            Pattern::Address(a) => a == address,
            Pattern::LocalPart(l) => address.split('@').next() == Some(l.as_str()),
            Pattern::Wildcard(re) | Pattern::Regex(re) => re.is_match(address),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Route {
    /// As written in the configuration, for the routing trace.
    pub text: String,
    pub pattern: Pattern,
    pub deliver_to: Vec<String>,
}

/// A catch-all account's rules.
#[derive(Debug, Clone)]
pub struct Routing {
    /// Local domains, lower case.
    pub domains: Vec<String>,
    /// Envelope headers to read, in order.
    pub envelope_headers: Vec<String>,
    /// How many of the topmost copies of an envelope header (and of `Received`) the provider's
    /// own hop added.
    pub hop: usize,
    pub routes: Vec<Route>,
    /// Where mail goes whose recipients cannot be found.
    pub fallback: String,
    /// The catch-all's own address at the provider: a `Delivered-To` with it counts as a pass.
    pub own_address: Option<String>,
    /// A message that passed more often than this through us is a loop.
    pub max_passes: usize,
}

pub const DEFAULT_ENVELOPE_HEADERS: [&str; 5] = [
    "Delivered-To",
    "X-Original-To",
    "Envelope-To",
    "X-Envelope-To",
    "X-Rcpt-To",
];

/// Where one recipient came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The address found in the message.
    pub address: String,
    /// The header it came from (`Delivered-To`, `Received`, `To`...).
    pub source: String,
    /// The route that mapped it, if any.
    pub route: Option<String>,
    /// Where it goes.
    pub deliver_to: Vec<String>,
}

/// The outcome for one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Deliver {
        recipients: Vec<String>,
        found: Vec<Found>,
        message_id: Option<String>,
    },
    Fallback {
        recipient: String,
        reason: String,
        message_id: Option<String>,
    },
    Loop {
        reason: String,
    },
}

impl Decision {
    /// The envelope recipients.
    pub fn recipients(&self) -> Vec<String> {
        match self {
            Decision::Deliver { recipients, .. } => recipients.clone(),
            Decision::Fallback { recipient, .. } => vec![recipient.clone()],
            Decision::Loop { .. } => Vec::new(),
        }
    }

    pub fn message_id(&self) -> Option<&str> {
        match self {
            Decision::Deliver { message_id, .. } | Decision::Fallback { message_id, .. } => {
                message_id.as_deref()
            }
            Decision::Loop { .. } => None,
        }
    }

    /// Header lines (CRLF ended) to put on top of the message: the loop counter always, and the
    /// reason when it went to the fallback.
    pub fn trace_headers(&self, account: &str) -> Vec<u8> {
        let mut out = format!("{LOOP_HEADER}: {account}\r\n");
        if let Decision::Fallback { reason, .. } = self {
            out.push_str(&format!("{ROUTING_HEADER}: fallback: {reason}\r\n"));
        }
        out.into_bytes()
    }

    /// A readable account of the decision (for `outpost route` and `spoolctl show`).
    pub fn explain(&self) -> String {
        match self {
            Decision::Deliver {
                found, recipients, ..
            } => {
                let mut out = String::new();
                for f in found {
                    let via = f
                        .route
                        .as_ref()
                        .map(|r| format!(" via route {r:?}"))
                        .unwrap_or_default();
                    out.push_str(&format!(
                        "{} (from {}){via} -> {}\n",
                        f.address,
                        f.source,
                        f.deliver_to.join(", ")
                    ));
                }
                out.push_str(&format!("recipients: {}\n", recipients.join(", ")));
                out
            }
            Decision::Fallback {
                recipient, reason, ..
            } => format!("fallback -> {recipient}: {reason}\n"),
            Decision::Loop { reason } => format!("loop -> badmail: {reason}\n"),
        }
    }
}

/// The header fields of a header section, unfolded, in order (topmost first).
pub fn header_fields(headers: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(headers);
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = fields.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
            continue;
        }
        if let Some((name, value)) = line.split_once(':') {
            fields.push((name.trim().to_string(), value.trim().to_string()));
        }
    }
    fields
}

/// The values of every field called `name`, topmost first.
fn named<'a>(fields: &'a [(String, String)], name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    fields
        .iter()
        .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Addresses in a header value: `<a@b>` forms, else bare words with an `@`; lower-cased, with RFC
/// 2047 encoded words and comments left out.
fn addresses_in(value: &str) -> Vec<String> {
    // Split at commas outside quotes, then take each part's <address>, else its bare word with @.
    let mut parts = Vec::new();
    let (mut current, mut quoted) = (String::new(), false);
    for c in value.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' | ';' if !quoted => {
                parts.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    parts.push(current);
    let mut out = Vec::new();
    for part in parts {
        let candidate = match part.rfind('<').and_then(|start| {
            part[start + 1..]
                .find('>')
                .map(|end| &part[start + 1..start + 1 + end])
        }) {
            Some(inner) => inner.to_string(),
            None => part
                .split_whitespace()
                .find(|w| w.contains('@'))
                .unwrap_or_default()
                .to_string(),
        };
        let address = candidate
            .trim()
            .trim_matches(['"', '\'', '(', ')', '<', '>'])
            .to_ascii_lowercase();
        if crate::envelope::is_valid_address(&address) && !out.contains(&address) {
            out.push(address);
        }
    }
    out
}

impl Routing {
    fn is_local(&self, address: &str) -> bool {
        address
            .rsplit_once('@')
            .is_some_and(|(_, domain)| self.domains.iter().any(|d| d == domain))
    }

    /// Decides for a message whose header section is `headers`.
    pub fn route(&self, headers: &[u8], account: &str) -> Decision {
        let fields = header_fields(headers);
        let message_id = named(&fields, "Message-ID")
            .next()
            .map(|v| v.trim().trim_matches(['<', '>']).to_string())
            .filter(|v| !v.is_empty());

        let ours = named(&fields, LOOP_HEADER)
            .filter(|v| v.trim().eq_ignore_ascii_case(account))
            .count();
        let own_delivered = self.own_address.as_ref().map_or(0, |own| {
            named(&fields, "Delivered-To")
                .filter(|v| addresses_in(v).contains(own))
                .count()
        });
        let passes = ours.max(own_delivered.saturating_sub(1));
        if passes > self.max_passes {
            return Decision::Loop {
                reason: format!("the message has passed through catch-all {account} {passes} times ({LOOP_HEADER} or Delivered-To): a mail loop"),
            };
        }

        let mut sources: Vec<(String, Vec<String>)> = Vec::new();
        for name in &self.envelope_headers {
            let found: Vec<String> = named(&fields, name)
                .take(self.hop)
                .flat_map(addresses_in)
                .collect();
            sources.push((name.clone(), found));
        }
        let received: Vec<String> = named(&fields, "Received")
            .take(self.hop)
            .filter_map(|v| {
                let lower = v.to_ascii_lowercase();
                let at = lower.find(" for ")?;
                addresses_in(&v[at + 5..]).into_iter().next()
            })
            .collect();
        sources.push(("Received".into(), received));
        let mut visible = Vec::new();
        for name in ["To", "Cc", "Resent-To", "Resent-Cc"] {
            for value in named(&fields, name) {
                visible.extend(
                    addresses_in(value)
                        .into_iter()
                        .map(|a| (name.to_string(), a)),
                );
            }
        }

        // The first source with a local address wins; To/Cc count as one source.
        let chosen: Vec<(String, String)> = sources
            .into_iter()
            .map(|(name, list)| {
                list.into_iter()
                    .filter(|a| self.is_local(a))
                    .map(|a| (name.clone(), a))
                    .collect::<Vec<_>>()
            })
            .find(|list| !list.is_empty())
            .unwrap_or_else(|| {
                visible
                    .into_iter()
                    .filter(|(_, a)| self.is_local(a))
                    .collect()
            });

        if chosen.is_empty() {
            return Decision::Fallback {
                recipient: self.fallback.clone(),
                reason: "no address in a local domain in the envelope headers, Received or To/Cc (Bcc, or a list that hides its recipients)".into(),
                message_id,
            };
        }
        let mut found = Vec::new();
        let mut recipients: Vec<String> = Vec::new();
        for (source, address) in chosen {
            if found.iter().any(|f: &Found| f.address == address) {
                continue;
            }
            let route = self.routes.iter().find(|r| r.pattern.matches(&address));
            let deliver_to = route.map_or_else(|| vec![address.clone()], |r| r.deliver_to.clone());
            for target in &deliver_to {
                if !recipients.iter().any(|r| r.eq_ignore_ascii_case(target)) {
                    recipients.push(target.clone());
                }
            }
            found.push(Found {
                address,
                source,
                route: route.map(|r| r.text.clone()),
                deliver_to,
            });
        }
        Decision::Deliver {
            recipients,
            found,
            message_id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_fields_unfold_and_keep_order() {
        let f = header_fields(
            b"Received: from a\r\n\tby b\r\nTo: x@y.z\r\nReceived: from c\r\n\r\nbody: no\r\n",
        );
        assert_eq!(
            f,
            [
                ("Received".into(), "from a by b".into()),
                ("To".into(), "x@y.z".into()),
                ("Received".into(), "from c".into())
            ]
        );
    }

    #[test]
    fn addresses_in_header_values() {
        assert_eq!(
            addresses_in("Ann <ANN@Example.org>, \"Bob\" <bob@example.org>"),
            ["ann@example.org", "bob@example.org"]
        );
        assert_eq!(
            addresses_in("ann@example.org, bob@example.org"),
            ["ann@example.org", "bob@example.org"]
        );
        assert_eq!(
            addresses_in("undisclosed-recipients:;"),
            Vec::<String>::new()
        );
    }

    #[test]
    fn patterns() {
        assert!(Pattern::parse("sales@example.org")
            .unwrap()
            .matches("sales@example.org"));
        assert!(Pattern::parse("Sales")
            .unwrap()
            .matches("sales@example.com"));
        assert!(Pattern::parse("list-*@example.org")
            .unwrap()
            .matches("list-news@example.org"));
        assert!(!Pattern::parse("list-*@example.org")
            .unwrap()
            .matches("list-news@example.org.evil"));
        assert!(Pattern::parse("/^(ann|bob)@/")
            .unwrap()
            .matches("bob@example.org"));
        assert!(Pattern::parse("/[/").is_err());
    }
}
