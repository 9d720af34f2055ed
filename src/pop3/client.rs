//! The POP3 driver: the one place that owns the socket, TLS, timeouts and the read buffer.
//!
//! Parsing is delegated to [`super::reply`] and [`super::body`]; this file moves bytes and keeps
//! the protocol's order (RFC 1939, CAPA and PIPELINING from RFC 2449, STLS from RFC 2595, AUTH
//! from RFC 5034).

use std::path::PathBuf;
use std::time::Duration;

use super::auth::{self, Mechanism};
use super::body::BodyDecoder;
use super::reply::{self, Capabilities, Reply, ReplyError, ResponseCode};
use crate::net::{Connection, NetError, READ_CHUNK};
use crate::secret::Secret;

/// How the connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// TLS from the first byte (POP3S, port 995).
    Implicit,
    /// Plain connect, then STLS (RFC 2595); fails if the server does not offer it.
    StartTls,
    /// No encryption at all.
    None,
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    pub ca_file: Option<PathBuf>,
    /// Limit for the connect and for every single read and write.
    pub timeout: Duration,
}

/// Which mechanism to log in with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthChoice {
    Auto,
    Exact(Mechanism),
}

/// Everything that can end a POP3 session early. The fetcher turns each into an account error;
/// none of them is ever a reason to delete anything.
#[derive(Debug, thiserror::Error)]
pub enum Pop3Error {
    #[error(transparent)]
    Net(#[from] NetError),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("the server refused {command}: {text}")]
    Refused {
        command: String,
        code: Option<ResponseCode>,
        text: String,
    },
    #[error("authentication failed ({mechanism}): {text}")]
    AuthFailed {
        mechanism: &'static str,
        text: String,
    },
    #[error("the server allows no login yet (LOGIN-DELAY): {0}")]
    LoginDelay(String),
    #[error("the mailbox is in use by another session: {0}")]
    InUse(String),
    #[error("{0}")]
    NoMechanism(String),
    #[error("the server does not offer STLS, and the account asks for tls = \"starttls\"")]
    NoStartTls,
    #[error("the server sent data after its STLS answer, before TLS began: refused (RFC 2595 §4)")]
    StartTlsInjection,
}

impl From<ReplyError> for Pop3Error {
    fn from(e: ReplyError) -> Self {
        Pop3Error::Protocol(e.to_string())
    }
}

impl From<auth::AuthError> for Pop3Error {
    fn from(e: auth::AuthError) -> Self {
        Pop3Error::Protocol(e.to_string())
    }
}

pub type Result<T, E = Pop3Error> = std::result::Result<T, E>;

/// Most lines a CAPA, UIDL or LIST listing may have (a mailbox of a million messages).
const MAX_LISTING: usize = 1_000_000;

/// One message as listed by UIDL and LIST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub number: u32,
    /// `None` when the server has no UIDL command.
    pub uidl: Option<String>,
    pub size: u64,
}

/// A POP3 session from greeting to QUIT.
pub struct Session {
    conn: Connection,
    host: String,
    port: u16,
    greeting: String,
    caps: Capabilities,
    account: String,
    /// UIDL and LIST already went out with the login burst (pipelining saves a round trip).
    listing_sent: bool,
}

impl Session {
    /// Connects, reads the greeting, asks CAPA, and does STLS when asked to.
    pub async fn connect(opts: &ConnectOptions, account: &str) -> Result<Session> {
        let mut session = Session {
            conn: Connection::connect(&opts.host, opts.port, opts.timeout).await?,
            host: opts.host.clone(),
            port: opts.port,
            greeting: String::new(),
            caps: Capabilities::default(),
            account: account.to_string(),
            listing_sent: false,
        };
        if opts.tls == TlsMode::Implicit {
            session
                .conn
                .start_tls(&opts.host, opts.ca_file.as_deref())
                .await?;
        }
        match session.read_reply("greeting").await? {
            Reply::Ok(text) => session.greeting = text,
            Reply::Err { text, .. } => {
                return Err(Pop3Error::Refused {
                    command: "connection".into(),
                    code: None,
                    text,
                })
            }
            Reply::Continue(_) => {
                return Err(Pop3Error::Protocol("greeting is a continuation".into()))
            }
        }
        session.capa().await?;
        if opts.tls == TlsMode::StartTls {
            if !session.caps.stls {
                return Err(Pop3Error::NoStartTls);
            }
            session.send("STLS\r\n").await?;
            session.expect_ok("STLS").await?;
            if !session.conn.buffered().is_empty() {
                return Err(Pop3Error::StartTlsInjection);
            }
            session
                .conn
                .start_tls(&opts.host, opts.ca_file.as_deref())
                .await?;
            // RFC 2595 §4: forget what was learnt before TLS and ask again.
            session.capa().await?;
        }
        Ok(session)
    }

    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    pub fn greeting(&self) -> &str {
        &self.greeting
    }

    pub fn is_encrypted(&self) -> bool {
        self.conn.is_encrypted()
    }

    /// Bytes received so far, TLS overhead not counted.
    pub fn bytes_in(&self) -> u64 {
        self.conn.bytes_in()
    }

    async fn capa(&mut self) -> Result<()> {
        self.send("CAPA\r\n").await?;
        let mut caps = Capabilities::default();
        if let Reply::Ok(_) = self.read_reply("CAPA").await? {
            caps.known = true;
            for line in self.read_listing("CAPA").await? {
                caps.add_line(&line);
            }
        }
        self.caps = caps;
        Ok(())
    }

    /// Writes raw protocol bytes in one write (a pipelined burst stays one segment).
    pub async fn send(&mut self, data: &str) -> Result<()> {
        for line in data.lines() {
            tracing::debug!(target: "outpost::pop3::trace", account = %self.account, "C: {}", redact(line));
        }
        Ok(self.conn.send(data.as_bytes()).await?)
    }

    async fn read_line(&mut self, waiting_for: &'static str) -> Result<String> {
        Ok(self.conn.read_line(reply::MAX_LINE, waiting_for).await?)
    }

    /// Reads one status line or continuation.
    pub async fn read_reply(&mut self, waiting_for: &'static str) -> Result<Reply> {
        let line = self.read_line(waiting_for).await?;
        tracing::debug!(target: "outpost::pop3::trace", account = %self.account, "S: {line}");
        Ok(reply::parse_reply(line.as_bytes())?)
    }

    /// Reads a status line that must be `+OK`.
    pub async fn expect_ok(&mut self, command: &'static str) -> Result<String> {
        match self.read_reply(command).await? {
            Reply::Ok(text) => Ok(text),
            Reply::Err { code, text } => Err(refused(command, code, text)),
            Reply::Continue(_) => Err(Pop3Error::Protocol(format!(
                "unexpected continuation after {command}"
            ))),
        }
    }

    /// Reads the lines of a multi-line listing (CAPA, UIDL, LIST), unstuffed, up to the `.` line.
    async fn read_listing(&mut self, command: &'static str) -> Result<Vec<String>> {
        let mut lines = Vec::new();
        loop {
            let line = self.read_line(command).await?;
            if line == "." {
                return Ok(lines);
            }
            if lines.len() == MAX_LISTING {
                return Err(Pop3Error::Protocol(format!(
                    "{command} listing longer than {MAX_LISTING} lines"
                )));
            }
            lines.push(line.strip_prefix('.').map(str::to_string).unwrap_or(line));
        }
    }

    /// Streams a multi-line body to `sink` in chunks of at most [`READ_CHUNK`] bytes, unstuffed.
    /// Bytes after the terminator stay in the buffer for the next reply.
    pub async fn read_body<E>(
        &mut self,
        mut sink: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<Result<(), E>> {
        let mut decoder = BodyDecoder::new();
        let mut out = Vec::with_capacity(READ_CHUNK);
        let mut sink_error = None;
        loop {
            if !self.conn.buffered().is_empty() {
                out.clear();
                let used = decoder.decode(self.conn.buffered(), &mut out);
                self.conn.consume(used);
                // After a sink error the rest of the body is still read, so that the session
                // stays in step with the server, but it is thrown away.
                if sink_error.is_none() && !out.is_empty() {
                    if let Err(e) = sink(&out) {
                        sink_error = Some(e);
                    }
                }
                if decoder.is_done() {
                    return Ok(sink_error.map_or(Ok(()), Err));
                }
            }
            self.conn.fill("message body").await?;
        }
    }

    /// Logs in. On failure the session is useless; drop it.
    pub async fn login(
        &mut self,
        user: &str,
        secret: &Secret,
        choice: AuthChoice,
        allow_insecure: bool,
    ) -> Result<Mechanism> {
        let stamp = reply::apop_timestamp(&self.greeting).map(str::to_string);
        let mechanism = match choice {
            AuthChoice::Exact(m) => m,
            AuthChoice::Auto => auth::choose_auto(&self.caps, stamp.is_some(), self.conn.is_encrypted(), allow_insecure)
                .ok_or_else(|| {
                    Pop3Error::NoMechanism(if self.conn.is_encrypted() || allow_insecure {
                        format!("the server offers no login mechanism that outpost knows (SASL: {:?})", self.caps.sasl)
                    } else {
                        "the server offers no way to log in without sending the password in clear over this \
                         unencrypted connection; use tls, or set allow_insecure_auth = true"
                            .to_string()
                    })
                })?,
        };
        if mechanism.reveals_secret() && !self.conn.is_encrypted() && !allow_insecure {
            return Err(Pop3Error::NoMechanism(format!(
                "{} would send the secret in clear over an unencrypted connection; use tls, or set allow_insecure_auth = true",
                mechanism.config_name()
            )));
        }
        let name = mechanism.config_name();
        let failed = |code: Option<ResponseCode>, text: String| match code {
            Some(ResponseCode::LoginDelay) => Pop3Error::LoginDelay(text),
            Some(ResponseCode::InUse) => Pop3Error::InUse(text),
            Some(ResponseCode::SysTemp) | Some(ResponseCode::SysPerm) => {
                refused("login", code, text)
            }
            _ => Pop3Error::AuthFailed {
                mechanism: name,
                text,
            },
        };
        match mechanism {
            Mechanism::User => {
                // USER, PASS, UIDL and LIST in one burst when the server pipelines: two round trips
                // saved. After a refused login the listing is refused too, and the session dropped.
                if self.caps.pipelining {
                    self.send(&format!(
                        "USER {user}\r\nPASS {}\r\nUIDL\r\nLIST\r\n",
                        secret.expose()
                    ))
                    .await?;
                    self.listing_sent = true;
                    let user_reply = self.read_reply("USER").await?;
                    let pass_reply = self.read_reply("PASS").await?;
                    if let Reply::Err { code, text } = user_reply {
                        return Err(failed(code, text));
                    }
                    return ok_or(pass_reply, failed).map(|()| mechanism);
                }
                self.send(&format!("USER {user}\r\n")).await?;
                if let Reply::Err { code, text } = self.read_reply("USER").await? {
                    return Err(failed(code, text));
                }
                self.send(&format!("PASS {}\r\n", secret.expose())).await?;
                ok_or(self.read_reply("PASS").await?, failed)
            }
            Mechanism::Apop => {
                let stamp = stamp.ok_or_else(|| {
                    Pop3Error::NoMechanism("the server's greeting has no APOP timestamp".into())
                })?;
                self.send(&format!("{}\r\n", auth::apop_command(user, &stamp, secret)))
                    .await?;
                ok_or(self.read_reply("APOP").await?, failed)
            }
            Mechanism::Plain => {
                self.sasl_one_shot("PLAIN", auth::plain_response(user, secret), failed)
                    .await
            }
            Mechanism::XOauth2 => {
                self.sasl_one_shot("XOAUTH2", auth::xoauth2_response(user, secret), failed)
                    .await
            }
            Mechanism::OauthBearer => {
                let response = auth::oauthbearer_response(user, &self.host, self.port, secret);
                self.sasl_one_shot("OAUTHBEARER", response, failed).await
            }
            Mechanism::Login => {
                self.send("AUTH LOGIN\r\n").await?;
                self.challenge("AUTH LOGIN", &failed).await?;
                self.send(&format!("{}\r\n", auth::base64(user))).await?;
                self.challenge("AUTH LOGIN", &failed).await?;
                self.send(&format!("{}\r\n", auth::base64(secret.expose())))
                    .await?;
                ok_or(self.read_reply("AUTH LOGIN").await?, failed)
            }
            Mechanism::CramMd5 => {
                self.send("AUTH CRAM-MD5\r\n").await?;
                let challenge = self.challenge("AUTH CRAM-MD5", &failed).await?;
                self.send(&format!(
                    "{}\r\n",
                    auth::cram_md5_response(user, secret, &challenge)?
                ))
                .await?;
                ok_or(self.read_reply("AUTH CRAM-MD5").await?, failed)
            }
            Mechanism::Ntlm => {
                self.send("AUTH NTLM\r\n").await?;
                self.challenge("AUTH NTLM", &failed).await?;
                self.send(&format!("{}\r\n", auth::ntlm_negotiate()))
                    .await?;
                let challenge = self.challenge("AUTH NTLM", &failed).await?;
                self.send(&format!(
                    "{}\r\n",
                    auth::ntlm_authenticate(user, secret, &challenge)?
                ))
                .await?;
                ok_or(self.read_reply("AUTH NTLM").await?, failed)
            }
        }
        .map(|_| mechanism)
    }

    /// Reads the server's next SASL challenge (`+ base64`).
    async fn challenge(
        &mut self,
        command: &'static str,
        failed: &impl Fn(Option<ResponseCode>, String) -> Pop3Error,
    ) -> Result<String> {
        match self.read_reply(command).await? {
            Reply::Continue(challenge) => Ok(challenge),
            Reply::Err { code, text } => Err(failed(code, text)),
            Reply::Ok(_) => Err(Pop3Error::Protocol(format!(
                "{command} ended before its last step"
            ))),
        }
    }

    /// A SASL mechanism whose client speaks once: initial response on the AUTH line (RFC 5034 §4)
    /// when the line fits in 255 octets, else after the server's empty challenge. An OAuth error
    /// arrives as a continuation carrying JSON, which is acknowledged so the server ends with -ERR.
    async fn sasl_one_shot(
        &mut self,
        name: &'static str,
        response: String,
        failed: impl Fn(Option<ResponseCode>, String) -> Pop3Error,
    ) -> Result<()> {
        let line = format!("AUTH {name} {response}\r\n");
        if line.len() <= 255 {
            self.send(&line).await?;
        } else {
            self.send(&format!("AUTH {name}\r\n")).await?;
            self.challenge("AUTH", &failed).await?;
            self.send(&format!("{response}\r\n")).await?;
        }
        match self.read_reply("AUTH").await? {
            Reply::Ok(_) => Ok(()),
            Reply::Err { code, text } => Err(failed(code, text)),
            Reply::Continue(challenge) => {
                let detail = auth::oauth_error_text(&challenge);
                let mechanism = if name == "OAUTHBEARER" {
                    Mechanism::OauthBearer
                } else {
                    Mechanism::XOauth2
                };
                self.send(&format!("{}\r\n", auth::oauth_error_ack(mechanism)))
                    .await?;
                let text = match self.read_reply("AUTH").await? {
                    Reply::Err { text, .. } => format!("{text} ({detail})"),
                    _ => detail,
                };
                Err(failed(None, text))
            }
        }
    }

    /// UIDL and LIST, sent together when the server pipelines. A server without UIDL gives
    /// listings without ids (the fetcher then cannot keep mail on the server).
    pub async fn list_messages(&mut self) -> Result<Vec<Listed>> {
        let pipelined = self.caps.pipelining;
        if self.listing_sent {
            self.listing_sent = false;
        } else if pipelined {
            self.send("UIDL\r\nLIST\r\n").await?;
        } else {
            self.send("UIDL\r\n").await?;
        }
        let mut uidls = std::collections::HashMap::new();
        let has_uidl = matches!(self.read_reply("UIDL").await?, Reply::Ok(_));
        if has_uidl {
            for line in self.read_listing("UIDL").await? {
                let (n, uidl) = reply::parse_uidl_line(&line)
                    .ok_or_else(|| Pop3Error::Protocol(format!("bad UIDL line {line:?}")))?;
                uidls.insert(n, uidl);
            }
        }
        if !pipelined {
            self.send("LIST\r\n").await?;
        }
        self.expect_ok("LIST").await?;
        let mut listed = Vec::new();
        for line in self.read_listing("LIST").await? {
            let (number, size) = reply::parse_list_line(&line)
                .ok_or_else(|| Pop3Error::Protocol(format!("bad LIST line {line:?}")))?;
            let uidl = uidls.remove(&number);
            if has_uidl && uidl.is_none() {
                return Err(Pop3Error::Protocol(format!(
                    "message {number} is in LIST but not in UIDL"
                )));
            }
            listed.push(Listed { number, uidl, size });
        }
        Ok(listed)
    }

    /// Ends the session. Only a `+OK` to QUIT makes the server's deletions happen (RFC 1939 §6).
    pub async fn quit(mut self) -> Result<()> {
        self.send("QUIT\r\n").await?;
        self.finish_quit().await
    }

    /// Reads the answer to a QUIT that went out with the last burst of commands.
    pub async fn finish_quit(mut self) -> Result<()> {
        self.expect_ok("QUIT").await?;
        self.conn.shutdown().await;
        Ok(())
    }
}

fn refused(command: &str, code: Option<ResponseCode>, text: String) -> Pop3Error {
    match code {
        Some(ResponseCode::InUse) => Pop3Error::InUse(text),
        Some(ResponseCode::LoginDelay) => Pop3Error::LoginDelay(text),
        code => Pop3Error::Refused {
            command: command.to_string(),
            code,
            text,
        },
    }
}

fn ok_or(reply: Reply, failed: impl Fn(Option<ResponseCode>, String) -> Pop3Error) -> Result<()> {
    match reply {
        Reply::Ok(_) => Ok(()),
        Reply::Err { code, text } => Err(failed(code, text)),
        Reply::Continue(_) => Err(Pop3Error::Protocol("unexpected continuation".into())),
    }
}

/// A protocol trace line with credentials removed: `PASS`, the APOP digest and every SASL line.
fn redact(line: &str) -> String {
    let upper = line.to_ascii_uppercase();
    if upper.starts_with("PASS ") || upper.starts_with("APOP ") {
        let command: String = line.chars().take(4).collect();
        return format!("{command} [redacted]");
    }
    if upper.starts_with("AUTH ") {
        let mut words = line.split(' ');
        let auth = words.next().unwrap_or_default();
        let mech = words.next().unwrap_or_default();
        return format!(
            "{auth} {mech}{}",
            if words.next().is_some() {
                " [redacted]"
            } else {
                ""
            }
        );
    }
    let is_command = upper.split(' ').next().is_some_and(|w| {
        [
            "USER", "CAPA", "STLS", "UIDL", "LIST", "RETR", "DELE", "QUIT", "NOOP", "RSET", "TOP",
            "STAT",
        ]
        .contains(&w)
    });
    if is_command {
        line.to_string()
    } else {
        "[SASL data redacted]".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn traces_never_show_credentials() {
        assert_eq!(redact("PASS hunter2"), "PASS [redacted]");
        assert_eq!(redact("APOP u 0123abcd"), "APOP [redacted]");
        assert_eq!(redact("AUTH PLAIN AHUAcA=="), "AUTH PLAIN [redacted]");
        assert_eq!(redact("AUTH CRAM-MD5"), "AUTH CRAM-MD5");
        assert_eq!(redact("dGltIGI5MTNh"), "[SASL data redacted]");
        assert_eq!(redact("RETR 1"), "RETR 1");
    }
}
