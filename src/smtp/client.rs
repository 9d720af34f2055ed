//! The SMTP driver: one session with the local server, many messages through it.
//!
//! Our own rather than lettre's: lettre's `message()` takes the whole message as one slice (a 100 MB
//! message would sit in memory), drops SIZE from the EHLO capabilities, and times out only the
//! connect. Here the body streams from the spool file through [`DataEncoder`], every read and
//! write has a timeout, and each recipient gets its own answer (RFC 5321 §3.3).

use std::path::PathBuf;
use std::time::Duration;

use super::data::{has_eight_bit, DataEncoder};
use super::reply::{Extensions, Reply, ReplyBuilder, ReplyError, MAX_LINE};
use crate::net::{Connection, NetError, READ_CHUNK};
use crate::pop3::TlsMode;
use crate::secret::Secret;

/// Where and how to reach the local server.
#[derive(Debug, Clone)]
pub struct SmtpOptions {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    pub ca_file: Option<PathBuf>,
    /// The name given in EHLO.
    pub helo: String,
    /// Limit for the connect and for every read and write.
    pub timeout: Duration,
    /// Credentials for AUTH PLAIN, when the server wants them.
    pub auth: Option<(String, Secret)>,
}

/// A failure of the session (not of one message): the caller defers what it had in hand.
#[derive(Debug, thiserror::Error)]
pub enum SmtpError {
    #[error(transparent)]
    Net(#[from] NetError),
    #[error("protocol error: {0}")]
    Protocol(#[from] ReplyError),
    #[error("the server answered {stage} with {reply}")]
    Refused { stage: &'static str, reply: Reply },
    #[error("the server does not offer STARTTLS, and tls = \"starttls\" is configured")]
    NoStartTls,
    #[error("reading the spooled message: {0}")]
    Spool(std::io::Error),
}

/// What the server said to one message's transaction.
#[derive(Debug, Clone)]
pub struct Transaction {
    pub mail: Reply,
    /// One reply per recipient, in the order given (empty when MAIL FROM was refused without
    /// pipelining).
    pub rcpts: Vec<Reply>,
    /// The reply to the end of the data; `None` when no data was sent (MAIL FROM, every RCPT TO,
    /// or DATA itself was refused: then the reason is in `mail`, `rcpts` or `data_command`).
    pub data: Option<Reply>,
    /// The reply to the DATA command, when it was sent.
    pub data_command: Option<Reply>,
}

/// An open session.
pub struct SmtpSession {
    conn: Connection,
    ext: Extensions,
}

impl SmtpSession {
    /// Connects, reads the greeting, says EHLO (HELO if refused), does STARTTLS and AUTH as
    /// configured.
    pub async fn connect(opts: &SmtpOptions) -> Result<SmtpSession, SmtpError> {
        let mut conn = Connection::connect(&opts.host, opts.port, opts.timeout).await?;
        if opts.tls == TlsMode::Implicit {
            conn.start_tls(&opts.host, opts.ca_file.as_deref()).await?;
        }
        let mut session = SmtpSession {
            conn,
            ext: Extensions::default(),
        };
        let greeting = session.read_reply("greeting").await?;
        if greeting.code != 220 {
            return Err(SmtpError::Refused {
                stage: "the connection",
                reply: greeting,
            });
        }
        session.hello(&opts.helo).await?;
        if opts.tls == TlsMode::StartTls {
            if !session.ext.starttls {
                return Err(SmtpError::NoStartTls);
            }
            session
                .command("STARTTLS\r\n", "STARTTLS", |r| r.code == 220)
                .await?;
            if !session.conn.buffered().is_empty() {
                return Err(SmtpError::Protocol(ReplyError::Garbage(
                    "data injected before TLS (RFC 3207 §6)".into(),
                )));
            }
            session
                .conn
                .start_tls(&opts.host, opts.ca_file.as_deref())
                .await?;
            // RFC 3207 §4.2: forget what was said before TLS.
            session.hello(&opts.helo).await?;
        }
        if let Some((user, secret)) = &opts.auth {
            let token = crate::pop3::auth::plain_response(user, secret);
            session
                .command(&format!("AUTH PLAIN {token}\r\n"), "AUTH", |r| {
                    r.code == 235
                })
                .await?;
        }
        Ok(session)
    }

    async fn hello(&mut self, helo: &str) -> Result<(), SmtpError> {
        self.conn
            .send(format!("EHLO {helo}\r\n").as_bytes())
            .await?;
        let reply = self.read_reply("EHLO").await?;
        if reply.code == 250 {
            self.ext = Extensions::from_ehlo(&reply);
            return Ok(());
        }
        self.ext = Extensions::default();
        self.command(&format!("HELO {helo}\r\n"), "HELO", |r| r.code == 250)
            .await
            .map(|_| ())
    }

    /// Sends one command and requires a reply that `ok` accepts.
    async fn command(
        &mut self,
        line: &str,
        stage: &'static str,
        ok: impl Fn(&Reply) -> bool,
    ) -> Result<Reply, SmtpError> {
        self.conn.send(line.as_bytes()).await?;
        let reply = self.read_reply(stage).await?;
        if ok(&reply) {
            Ok(reply)
        } else {
            Err(SmtpError::Refused { stage, reply })
        }
    }

    /// What the server offers (from its last EHLO).
    pub fn extensions(&self) -> &Extensions {
        &self.ext
    }

    async fn read_reply(&mut self, waiting_for: &'static str) -> Result<Reply, SmtpError> {
        let mut builder = ReplyBuilder::default();
        loop {
            let line = self.conn.read_line(MAX_LINE, waiting_for).await?;
            tracing::trace!(target: "outpost::smtp::trace", "S: {line}");
            if let Some(reply) = builder.push(&line)? {
                return Ok(reply);
            }
        }
    }

    /// Sends one message: `MAIL FROM` with SIZE (and BODY=8BITMIME when the body has 8-bit bytes
    /// and the server offers it), one `RCPT TO` per recipient, and the body streamed from `body`
    /// (the message's bytes as stored). With PIPELINING the envelope and DATA go in one burst.
    ///
    /// Returns every reply; a session error means the message's fate is unknown to the server's
    /// side too (the caller defers it). After a failed transaction the caller sends RSET.
    pub async fn send_message(
        &mut self,
        sender: &str,
        recipients: &[String],
        size: u64,
        eight_bit: bool,
        body: &mut impl std::io::Read,
    ) -> Result<Transaction, SmtpError> {
        let mut mail = format!("MAIL FROM:<{sender}>");
        if self.ext.size.is_some() {
            mail.push_str(&format!(" SIZE={size}"));
        }
        if eight_bit && self.ext.eight_bit_mime {
            mail.push_str(" BODY=8BITMIME");
        }
        mail.push_str("\r\n");
        let rcpt_lines: Vec<String> = recipients
            .iter()
            .map(|r| format!("RCPT TO:<{r}>\r\n"))
            .collect();
        tracing::debug!(target: "outpost::smtp::trace", "C: {}", mail.trim_end());

        let (mail_reply, rcpts, data_command) = if self.ext.pipelining {
            // RFC 2920 §3.1: MAIL, RCPT and DATA may be sent as one group, DATA last.
            let burst = format!("{mail}{}DATA\r\n", rcpt_lines.concat());
            self.conn.send(burst.as_bytes()).await?;
            let mail_reply = self.read_reply("MAIL FROM").await?;
            let mut rcpts = Vec::with_capacity(recipients.len());
            for _ in recipients {
                rcpts.push(self.read_reply("RCPT TO").await?);
            }
            let data_command = self.read_reply("DATA").await?;
            (mail_reply, rcpts, Some(data_command))
        } else {
            self.conn.send(mail.as_bytes()).await?;
            let mail_reply = self.read_reply("MAIL FROM").await?;
            let mut rcpts = Vec::new();
            if mail_reply.is_positive() {
                for line in &rcpt_lines {
                    self.conn.send(line.as_bytes()).await?;
                    rcpts.push(self.read_reply("RCPT TO").await?);
                }
            }
            let data_command = if rcpts.iter().any(Reply::is_positive) {
                self.conn.send(b"DATA\r\n").await?;
                Some(self.read_reply("DATA").await?)
            } else {
                None
            };
            (mail_reply, rcpts, data_command)
        };
        let mut transaction = Transaction {
            mail: mail_reply,
            rcpts,
            data: None,
            data_command,
        };
        let go = transaction
            .data_command
            .as_ref()
            .is_some_and(|r| r.code == 354);
        if !go {
            return Ok(transaction);
        }
        if !transaction.mail.is_positive() || !transaction.rcpts.iter().any(Reply::is_positive) {
            // A server that said 354 with no recipient accepted: end the data at once, empty.
            self.conn.send(b".\r\n").await?;
            self.read_reply("end of data").await?;
            return Ok(transaction);
        }
        self.stream_body(body).await?;
        transaction.data = Some(self.read_reply("end of data").await?);
        Ok(transaction)
    }

    /// Streams the body, encoded, in chunks; the terminator goes out with the last bytes, so that
    /// the server does not wait for a delayed ACK before it sees the end.
    ///
    /// The body is read with plain blocking reads: it is a spool file, read in 64 kB chunks mostly
    /// from the page cache, and a hop to a blocking thread per read would cost more than the read.
    async fn stream_body(&mut self, body: &mut impl std::io::Read) -> Result<(), SmtpError> {
        let mut encoder = DataEncoder::new();
        let mut input = vec![0u8; READ_CHUNK];
        let mut out = Vec::with_capacity(READ_CHUNK + READ_CHUNK / 8);
        loop {
            let n = body.read(&mut input).map_err(SmtpError::Spool)?;
            if n == 0 {
                encoder.finish(&mut out);
                self.conn.send(&out).await?;
                return Ok(());
            }
            if !out.is_empty() {
                self.conn.send(&out).await?;
                out.clear();
            }
            encoder.encode(&input[..n], &mut out);
        }
    }

    /// Ends a transaction that went wrong (RFC 5321 §4.1.1.5).
    pub async fn rset(&mut self) -> Result<(), SmtpError> {
        self.command("RSET\r\n", "RSET", |r| r.code == 250)
            .await
            .map(|_| ())
    }

    /// Ends the session.
    pub async fn quit(mut self) {
        if self.conn.send(b"QUIT\r\n").await.is_ok() {
            let _ = self.read_reply("QUIT").await;
        }
        self.conn.shutdown().await;
    }
}

/// Reads a spooled message body to learn whether it has 8-bit bytes (for messages whose index
/// entry does not say, after a rebuild).
pub fn scan_eight_bit(body: &mut impl std::io::Read) -> std::io::Result<bool> {
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let n = body.read(&mut buf)?;
        if n == 0 {
            return Ok(false);
        }
        if has_eight_bit(&buf[..n]) {
            return Ok(true);
        }
    }
}
