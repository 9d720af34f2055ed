//! POP3 replies, sans IO: status lines (RFC 1939 §3), extended response codes (RFC 2449 §8,
//! RFC 3206) and SASL continuations (RFC 5034 §4).
//!
//! Nothing here touches a socket: the driver hands in the bytes it has, and gets back a reply or
//! "need more input".

/// Longest reply line accepted (RFC 2449 §4 allows 512 octets for status lines; servers are often
/// longer in their text, and SASL challenges can be long). Anything longer is a protocol error.
pub const MAX_LINE: usize = 8 * 1024;

/// Why a reply could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("reply is neither +OK, -ERR nor a continuation: {0:?}")]
    Garbage(String),
}

/// One status line, or a SASL continuation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Ok(String),
    Err {
        code: Option<ResponseCode>,
        text: String,
    },
    /// `+ base64` (RFC 5034): the server wants the next SASL step.
    Continue(String),
}

/// The extended response codes that change what the client does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseCode {
    /// RFC 2449 §8.1.1: the mailbox is locked by another session; try later.
    InUse,
    /// RFC 2449 §8.1.2: logged in too soon after the last login.
    LoginDelay,
    /// RFC 3206 §4: the credentials were refused.
    Auth,
    /// RFC 3206 §5: a system problem, not the credentials; try later.
    SysTemp,
    /// RFC 3206 §5: a permanent system problem.
    SysPerm,
    Other(String),
}

/// Parses one status line (without its line ending).
pub fn parse_reply(line: &[u8]) -> Result<Reply, ReplyError> {
    let text = String::from_utf8_lossy(line);
    if let Some(rest) = strip_status(&text, "+OK") {
        return Ok(Reply::Ok(rest.to_string()));
    }
    if let Some(rest) = strip_status(&text, "-ERR") {
        return Ok(parse_err(rest));
    }
    if text == "+" {
        return Ok(Reply::Continue(String::new()));
    }
    if let Some(rest) = text.strip_prefix("+ ") {
        return Ok(Reply::Continue(rest.trim().to_string()));
    }
    Err(ReplyError::Garbage(text.chars().take(80).collect()))
}

/// `+OK`, `+OK text`, case-insensitive as RFC 2449 §3 asks; `+OKAY` is not `+OK`.
fn strip_status<'a>(text: &'a str, status: &str) -> Option<&'a str> {
    let head = text.get(..status.len())?;
    if !head.eq_ignore_ascii_case(status) {
        return None;
    }
    let rest = &text[status.len()..];
    if rest.is_empty() {
        Some("")
    } else {
        rest.strip_prefix(' ')
    }
}

fn parse_err(rest: &str) -> Reply {
    let (code, text) = match rest.strip_prefix('[').and_then(|r| r.split_once(']')) {
        Some((code, text)) => {
            let code = match code.to_ascii_uppercase().as_str() {
                "IN-USE" => ResponseCode::InUse,
                "LOGIN-DELAY" => ResponseCode::LoginDelay,
                "AUTH" => ResponseCode::Auth,
                "SYS/TEMP" => ResponseCode::SysTemp,
                "SYS/PERM" => ResponseCode::SysPerm,
                _ => ResponseCode::Other(code.to_string()),
            };
            (Some(code), text.trim_start())
        }
        None => (None, rest),
    };
    Reply::Err {
        code,
        text: text.to_string(),
    }
}

/// The APOP timestamp (RFC 1939 §7) in a greeting: `<...@...>`, brackets included.
pub fn apop_timestamp(greeting: &str) -> Option<&str> {
    let start = greeting.find('<')?;
    let end = start + greeting[start..].find('>')?;
    let stamp = &greeting[start..=end];
    stamp.contains('@').then_some(stamp)
}

/// What a CAPA response (RFC 2449 §5) says, as far as the client cares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    pub pipelining: bool,
    pub stls: bool,
    pub user: bool,
    pub uidl: bool,
    pub top: bool,
    /// SASL mechanisms, upper case.
    pub sasl: Vec<String>,
    /// Minimum seconds between logins (RFC 2449 §6.5).
    pub login_delay: Option<u64>,
    /// Days the server keeps messages (RFC 2449 §6.6); `None` when it never expires them.
    pub expire_days: Option<u64>,
    /// Whether CAPA was answered at all (a server without CAPA gets the RFC 1939 basics).
    pub known: bool,
}

impl Capabilities {
    /// Adds one line of a CAPA response.
    pub fn add_line(&mut self, line: &str) {
        let mut words = line.split_ascii_whitespace();
        let Some(name) = words.next() else { return };
        let first_number =
            |mut w: std::str::SplitAsciiWhitespace| w.next().and_then(|n| n.parse().ok());
        match name.to_ascii_uppercase().as_str() {
            "PIPELINING" => self.pipelining = true,
            "STLS" => self.stls = true,
            "USER" => self.user = true,
            "UIDL" => self.uidl = true,
            "TOP" => self.top = true,
            "SASL" => self.sasl.extend(words.map(|w| w.to_ascii_uppercase())),
            "LOGIN-DELAY" => self.login_delay = first_number(words),
            "EXPIRE" => self.expire_days = first_number(words),
            _ => {}
        }
    }

    pub fn has_sasl(&self, mechanism: &str) -> bool {
        self.sasl.iter().any(|m| m == mechanism)
    }
}

/// One line of a UIDL listing (RFC 1939 §7): message number and unique id.
pub fn parse_uidl_line(line: &str) -> Option<(u32, String)> {
    let mut words = line.split_ascii_whitespace();
    let number = words.next()?.parse().ok()?;
    let uidl = words.next()?;
    let printable = uidl.bytes().all(|b| (0x21..=0x7e).contains(&b));
    (printable && uidl.len() <= 70).then(|| (number, uidl.to_string()))
}

/// One line of a LIST listing (RFC 1939 §5): message number and size in octets.
pub fn parse_list_line(line: &str) -> Option<(u32, u64)> {
    let mut words = line.split_ascii_whitespace();
    Some((words.next()?.parse().ok()?, words.next()?.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(parse_reply(b"+OK ready"), Ok(Reply::Ok("ready".into())));
        assert_eq!(parse_reply(b"+ok"), Ok(Reply::Ok(String::new())));
        assert_eq!(
            parse_reply(b"-ERR [IN-USE] locked"),
            Ok(Reply::Err {
                code: Some(ResponseCode::InUse),
                text: "locked".into()
            })
        );
        assert_eq!(
            parse_reply(b"-ERR [AUTH] Authentication failed."),
            Ok(Reply::Err {
                code: Some(ResponseCode::Auth),
                text: "Authentication failed.".into()
            })
        );
        assert_eq!(
            parse_reply(b"+ PDEyMz4="),
            Ok(Reply::Continue("PDEyMz4=".into()))
        );
        assert_eq!(parse_reply(b"+"), Ok(Reply::Continue(String::new())));
        assert!(matches!(parse_reply(b"+OKAY"), Err(ReplyError::Garbage(_))));
        assert!(matches!(
            parse_reply(b"HTTP/1.1 400 Bad Request"),
            Err(ReplyError::Garbage(_))
        ));
        assert!(matches!(
            parse_reply(b"\0\0\0"),
            Err(ReplyError::Garbage(_))
        ));
    }

    #[test]
    fn capabilities() {
        let mut caps = Capabilities::default();
        for line in [
            "TOP",
            "USER",
            "PIPELINING",
            "UIDL",
            "SASL PLAIN cram-md5 XOAUTH2",
            "LOGIN-DELAY 900",
            "STLS",
        ] {
            caps.add_line(line);
        }
        assert!(caps.pipelining && caps.stls && caps.user && caps.uidl && caps.top);
        assert!(caps.has_sasl("CRAM-MD5"));
        assert_eq!(caps.login_delay, Some(900));
    }

    #[test]
    fn listings_and_timestamps() {
        assert_eq!(
            parse_uidl_line("1 whqtswO00WBw418f9t5JxYwZ"),
            Some((1, "whqtswO00WBw418f9t5JxYwZ".into()))
        );
        assert_eq!(parse_uidl_line("1"), None);
        assert_eq!(parse_uidl_line("x abc"), None);
        assert_eq!(parse_list_line("2 200"), Some((2, 200)));
        assert_eq!(parse_list_line("2 -1"), None);
        assert_eq!(
            apop_timestamp("+OK POP3 server ready <1896.697170952@dbc.mtview.ca.us>"),
            Some("<1896.697170952@dbc.mtview.ca.us>")
        );
        assert_eq!(apop_timestamp("+OK Dovecot ready."), None);
    }
}
