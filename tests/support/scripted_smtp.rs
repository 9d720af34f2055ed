//! A small SMTP server for fault injection: accepts mail like a plain MTA until told to misbehave
//! (421 in the middle of a session, a hang after the data of a poison message, Exchange's
//! MaxProtocolErrors). Not a stand-in for Postfix: the interop tests use the real one.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SmtpFault {
    /// Answer the MAIL FROM of the `n`th transaction (counted over all sessions) with 421 and
    /// close. Used once.
    Close421AtMail { n: usize },
    /// Never answer the end of data of a message that contains this text (always).
    HangOnDataWith(String),
}

#[derive(Debug, Default)]
pub struct SmtpState {
    /// Accepted messages: sender, recipients, data (unstuffed, CRLF line ends).
    pub received: Vec<(String, Vec<String>, Vec<u8>)>,
    pub faults: Vec<SmtpFault>,
    pub sessions: usize,
    pub transactions: usize,
    /// Replies with 501 to a syntactically bad address, as Exchange counts protocol errors.
    pub protocol_errors: usize,
    /// Every MAIL FROM line, parameters and all.
    pub mail_commands: Vec<String>,
    /// Whether EHLO offers 8BITMIME.
    pub eight_bit_mime: bool,
}

pub struct ScriptedSmtp {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<SmtpState>>,
}

/// Exchange's MaxProtocolErrors default: the session is dropped after this many.
const MAX_PROTOCOL_ERRORS: usize = 5;

impl ScriptedSmtp {
    pub async fn start() -> ScriptedSmtp {
        Self::start_with(true).await
    }

    /// A server that offers 8BITMIME or not.
    pub async fn start_with(eight_bit_mime: bool) -> ScriptedSmtp {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(SmtpState {
            eight_bit_mime,
            ..Default::default()
        }));
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let state = shared.clone();
                tokio::spawn(async move {
                    let _ = serve(socket, state).await;
                });
            }
        });
        ScriptedSmtp { addr, state }
    }

    pub fn add_fault(&self, fault: SmtpFault) {
        self.state.lock().unwrap().faults.push(fault);
    }

    pub fn received(&self) -> Vec<(String, Vec<String>, Vec<u8>)> {
        self.state.lock().unwrap().received.clone()
    }

    /// A `[local]` section for this server.
    pub fn local_section(&self, timeout: &str) -> String {
        format!("[local]\nhost = \"127.0.0.1\"\nport = {}\nhelo = \"outpost.test\"\ntimeout = {timeout:?}\n", self.addr.port())
    }
}

/// A path as Exchange would accept it: `<>` or `<local@domain>` with nothing odd inside.
fn valid_path(arg: &str) -> Option<String> {
    let inner = arg
        .split_whitespace()
        .next()?
        .strip_prefix('<')?
        .strip_suffix('>')?;
    if inner.is_empty() {
        return Some(String::new());
    }
    let (local, domain) = inner.split_once('@')?;
    let fine = !local.is_empty()
        && domain.contains('.')
        && inner
            .chars()
            .all(|c| c.is_ascii_graphic() && !"<>()[]\\,;:\"".contains(c));
    fine.then(|| inner.to_string())
}

async fn serve(socket: TcpStream, state: Arc<Mutex<SmtpState>>) -> std::io::Result<()> {
    state.lock().unwrap().sessions += 1;
    let (read, mut write) = socket.into_split();
    let mut reader = BufReader::new(read);
    write.write_all(b"220 scripted ESMTP\r\n").await?;
    let (mut sender, mut recipients): (Option<String>, Vec<String>) = (None, Vec::new());
    let mut errors = 0;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let command = line.trim_end().to_string();
        let upper = command.to_ascii_uppercase();
        let reply: String = if upper.starts_with("EHLO") {
            if state.lock().unwrap().eight_bit_mime {
                "250-scripted\r\n250-PIPELINING\r\n250-SIZE 10000000\r\n250 8BITMIME\r\n".into()
            } else {
                "250-scripted\r\n250-PIPELINING\r\n250 SIZE 10000000\r\n".into()
            }
        } else if upper.starts_with("HELO") || upper == "RSET" || upper == "NOOP" {
            if upper == "RSET" {
                (sender, recipients) = (None, Vec::new());
            }
            "250 OK\r\n".into()
        } else if upper == "QUIT" {
            write.write_all(b"221 bye\r\n").await?;
            return Ok(());
        } else if let Some(arg) = upper.strip_prefix("MAIL FROM:").map(|_| &command[10..]) {
            let n = {
                let mut s = state.lock().unwrap();
                s.mail_commands.push(command.clone());
                s.transactions += 1;
                s.transactions
            };
            let fault = {
                let mut s = state.lock().unwrap();
                let pos = s
                    .faults
                    .iter()
                    .position(|f| *f == SmtpFault::Close421AtMail { n });
                pos.map(|p| s.faults.remove(p))
            };
            if fault.is_some() {
                write.write_all(b"421 4.3.2 shutting down\r\n").await?;
                return Ok(());
            }
            match valid_path(arg) {
                Some(path) => {
                    sender = Some(path);
                    "250 2.1.0 OK\r\n".into()
                }
                None => {
                    errors += 1;
                    "501 5.1.7 Invalid address\r\n".into()
                }
            }
        } else if let Some(arg) = upper.strip_prefix("RCPT TO:").map(|_| &command[8..]) {
            match valid_path(arg).filter(|p| !p.is_empty()) {
                Some(_) if sender.is_none() => "503 5.5.1 MAIL first\r\n".into(),
                Some(path) => {
                    recipients.push(path);
                    "250 2.1.5 OK\r\n".into()
                }
                None => {
                    errors += 1;
                    "501 5.1.3 Invalid address\r\n".into()
                }
            }
        } else if upper == "DATA" {
            if sender.is_none() || recipients.is_empty() {
                "503 5.5.1 no valid recipients\r\n".into()
            } else {
                write.write_all(b"354 go ahead\r\n").await?;
                let data = read_data(&mut reader).await?;
                let hang = {
                    let s = state.lock().unwrap();
                    s.faults.iter().any(|f| matches!(f, SmtpFault::HangOnDataWith(m) if data.windows(m.len()).any(|w| w == m.as_bytes())))
                };
                if hang {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    return Ok(());
                }
                let from = sender.take().unwrap();
                state
                    .lock()
                    .unwrap()
                    .received
                    .push((from, std::mem::take(&mut recipients), data));
                "250 2.6.0 queued\r\n".into()
            }
        } else {
            errors += 1;
            "500 5.5.2 unrecognised command\r\n".into()
        };
        write.write_all(reply.as_bytes()).await?;
        if reply.starts_with("501") {
            state.lock().unwrap().protocol_errors += 1;
        }
        if errors >= MAX_PROTOCOL_ERRORS {
            write.write_all(b"421 4.7.0 Too many errors on this connection, closing transmission channel\r\n").await?;
            return Ok(());
        }
    }
}

/// Reads the data up to the `.` line and undoes the dot-stuffing.
async fn read_data(
    reader: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
) -> std::io::Result<Vec<u8>> {
    let mut data = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if line == b".\r\n" {
            return Ok(data);
        }
        let start = usize::from(line.first() == Some(&b'.'));
        data.extend_from_slice(&line[start..]);
    }
}
