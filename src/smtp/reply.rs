//! SMTP replies, sans IO (RFC 5321 §4.2): a three-digit code, lines joined by `-` until the one
//! with a space, and what a client learns from the EHLO reply (RFC 5321 §4.1.1.1 and the
//! extensions' RFCs).

/// Longest reply line accepted (RFC 5321 §4.5.3.1.5 says 512 octets; servers' texts are often
/// longer, so allow more but not without bound).
pub const MAX_LINE: usize = 4096;
/// Most lines in one reply (an EHLO reply has a dozen).
pub const MAX_LINES: usize = 100;

/// A complete reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// The text of every line, without the code and separator.
    pub lines: Vec<String>,
}

impl Reply {
    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }

    /// 4xx: try again later.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// 5xx: do not try again.
    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }

    /// `550 5.1.1 text; more text`: the code and every line, for logs and badmail reasons.
    pub fn text(&self) -> String {
        format!("{} {}", self.code, self.lines.join("; "))
    }
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("reply line is not an SMTP reply: {0:?}")]
    Garbage(String),
    #[error("reply lines disagree on the code: {0:?}")]
    MixedCodes(String),
    #[error("reply has more than {MAX_LINES} lines")]
    TooManyLines,
}

/// Builds a reply from its lines, one at a time.
#[derive(Debug, Default)]
pub struct ReplyBuilder {
    code: Option<u16>,
    lines: Vec<String>,
}

impl ReplyBuilder {
    /// Adds one line (without CRLF). Returns the reply once its last line has come.
    pub fn push(&mut self, line: &str) -> Result<Option<Reply>, ReplyError> {
        let bytes = line.as_bytes();
        let code_ok = bytes.len() >= 3
            && bytes[..3].iter().all(u8::is_ascii_digit)
            && (b'2'..=b'5').contains(&bytes[0]);
        let sep = bytes.get(3).copied();
        if !code_ok || !matches!(sep, None | Some(b' ') | Some(b'-')) {
            return Err(ReplyError::Garbage(line.chars().take(80).collect()));
        }
        let code: u16 = line[..3].parse().expect("three digits");
        if self.code.is_some_and(|c| c != code) {
            return Err(ReplyError::MixedCodes(line.chars().take(80).collect()));
        }
        if self.lines.len() == MAX_LINES {
            return Err(ReplyError::TooManyLines);
        }
        self.code = Some(code);
        self.lines.push(line.get(4..).unwrap_or("").to_string());
        if sep == Some(b'-') {
            return Ok(None);
        }
        Ok(Some(Reply {
            code,
            lines: std::mem::take(&mut self.lines),
        }))
    }
}

/// What the server's EHLO reply offers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extensions {
    /// RFC 1870: the largest message it accepts; `Some(0)` means no fixed limit.
    pub size: Option<u64>,
    /// RFC 6152.
    pub eight_bit_mime: bool,
    /// RFC 2920.
    pub pipelining: bool,
    /// RFC 3207.
    pub starttls: bool,
    /// RFC 4954: SASL mechanisms, upper case.
    pub auth: Vec<String>,
}

impl Extensions {
    /// Reads the EHLO reply (its first line is the greeting, the rest are keywords).
    pub fn from_ehlo(reply: &Reply) -> Extensions {
        let mut ext = Extensions::default();
        for line in reply.lines.iter().skip(1) {
            let mut words = line.split_ascii_whitespace();
            let Some(keyword) = words.next() else {
                continue;
            };
            match keyword.to_ascii_uppercase().as_str() {
                "SIZE" => ext.size = Some(words.next().and_then(|n| n.parse().ok()).unwrap_or(0)),
                "8BITMIME" => ext.eight_bit_mime = true,
                "PIPELINING" => ext.pipelining = true,
                "STARTTLS" => ext.starttls = true,
                "AUTH" => ext.auth.extend(words.map(|w| w.to_ascii_uppercase())),
                _ => {}
            }
        }
        ext
    }

    /// The server's size limit, if it states one.
    pub fn size_limit(&self) -> Option<u64> {
        self.size.filter(|&n| n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(lines: &[&str]) -> Result<Option<Reply>, ReplyError> {
        let mut builder = ReplyBuilder::default();
        let mut last = None;
        for line in lines {
            last = builder.push(line)?;
        }
        Ok(last)
    }

    #[test]
    fn single_and_multi_line_replies() {
        assert_eq!(
            parse(&["250 OK"]),
            Ok(Some(Reply {
                code: 250,
                lines: vec!["OK".into()]
            }))
        );
        assert_eq!(
            parse(&["354"]),
            Ok(Some(Reply {
                code: 354,
                lines: vec!["".into()]
            }))
        );
        let ehlo = parse(&[
            "250-mail.example.org",
            "250-PIPELINING",
            "250-SIZE 10240000",
            "250-STARTTLS",
            "250-AUTH PLAIN login",
            "250 8BITMIME",
        ])
        .unwrap()
        .unwrap();
        let ext = Extensions::from_ehlo(&ehlo);
        assert!(ext.pipelining && ext.starttls && ext.eight_bit_mime);
        assert_eq!(ext.size_limit(), Some(10_240_000));
        assert_eq!(ext.auth, ["PLAIN", "LOGIN"]);
        assert_eq!(parse(&["250-first"]), Ok(None));
    }

    #[test]
    fn classes() {
        let reply = |code| Reply {
            code,
            lines: vec![],
        };
        assert!(reply(250).is_positive() && reply(354).is_positive());
        assert!(reply(421).is_transient() && reply(451).is_transient());
        assert!(reply(550).is_permanent() && reply(552).is_permanent());
        assert_eq!(
            Reply {
                code: 550,
                lines: vec!["5.1.1 no such user".into(), "really".into()]
            }
            .text(),
            "550 5.1.1 no such user; really"
        );
    }

    #[test]
    fn garbage_is_refused() {
        for bad in [
            "HTTP/1.1 200 OK",
            "25",
            "2500 x",
            "999 no",
            "+OK pop3",
            "250x",
        ] {
            assert!(
                matches!(parse(&[bad]), Err(ReplyError::Garbage(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            parse(&["250-a", "251 b"]),
            Err(ReplyError::MixedCodes(_))
        ));
        let many: Vec<&str> = std::iter::repeat_n("250-x", MAX_LINES + 1).collect();
        assert_eq!(parse(&many), Err(ReplyError::TooManyLines));
    }
}
