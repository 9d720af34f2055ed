//! A small POP3 server for the demo (and for tests that need an honest server in-process):
//! USER/PASS, CAPA with PIPELINING, STAT, UIDL, LIST, RETR (dot-stuffed), DELE, RSET, NOOP, QUIT,
//! with RFC 1939's rule that deletions happen only at QUIT. Plain TCP only; not for production.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// One mailbox: its password and messages (UIDL, bytes).
#[derive(Debug, Default)]
pub struct Mailbox {
    pub password: String,
    pub messages: Vec<(String, Vec<u8>)>,
}

pub type Mailboxes = Arc<Mutex<HashMap<String, Mailbox>>>;

/// Longest command line accepted (RFC 2449 §4: 255 octets).
const MAX_COMMAND: u64 = 255;

/// Serves `mailboxes` on 127.0.0.1 (a free port) until the runtime ends. Returns the address.
pub async fn serve(mailboxes: Mailboxes) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let mailboxes = mailboxes.clone();
            tokio::spawn(async move {
                if let Err(e) = session(socket, mailboxes).await {
                    tracing::debug!(error = %e, "demo POP3 session ended");
                }
            });
        }
    });
    Ok(addr)
}

/// Byte-stuffs a message and ends it with the `.` line (RFC 1939 §3).
pub fn stuff(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 16);
    let mut at_line_start = true;
    for &b in message {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
    if !at_line_start {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// Removes what the session marked deleted (RFC 1939 §6: the UPDATE state, at QUIT).
fn expunge(mailboxes: &Mailboxes, name: &str, deleted: &[usize]) {
    let mut boxes = mailboxes.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(mailbox) = boxes.get_mut(name) {
        let mut i = 0;
        mailbox.messages.retain(|_| {
            i += 1;
            !deleted.contains(&i)
        });
    }
}

async fn session(socket: TcpStream, mailboxes: Mailboxes) -> std::io::Result<()> {
    socket.set_nodelay(true)?;
    let (read, mut write) = socket.into_split();
    let mut reader = BufReader::new(read);
    write
        .write_all(b"+OK outpost demo POP3 server ready\r\n")
        .await?;
    let mut user: Option<String> = None;
    let mut logged_in: Option<String> = None;
    let mut deleted: Vec<usize> = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if (&mut reader)
            .take(MAX_COMMAND + 2)
            .read_line(&mut line)
            .await?
            == 0
        {
            return Ok(());
        }
        if !line.ends_with('\n') {
            write.write_all(b"-ERR line too long\r\n").await?;
            return Ok(());
        }
        let mut words = line.split_whitespace();
        let verb = words.next().unwrap_or_default().to_ascii_uppercase();
        let arg = words.next().unwrap_or_default().to_string();
        let number: usize = arg.parse().unwrap_or(0);
        // The session's view: messages numbered from 1, minus those marked deleted.
        let view =
            |mailboxes: &HashMap<String, Mailbox>, name: &str| -> Vec<(usize, String, usize)> {
                mailboxes.get(name).map_or_else(Vec::new, |m| {
                    m.messages
                        .iter()
                        .enumerate()
                        .map(|(i, (u, b))| (i + 1, u.clone(), b.len()))
                        .filter(|(i, _, _)| !deleted.contains(i))
                        .collect()
                })
            };
        let reply: Vec<u8> = match (verb.as_str(), &logged_in) {
            ("CAPA", _) => b"+OK\r\nUSER\r\nUIDL\r\nPIPELINING\r\n.\r\n".to_vec(),
            ("QUIT", Some(name)) => {
                expunge(&mailboxes, name, &deleted);
                write.write_all(b"+OK bye\r\n").await?;
                return Ok(());
            }
            ("QUIT", None) => {
                write.write_all(b"+OK bye\r\n").await?;
                return Ok(());
            }
            ("USER", None) => {
                user = Some(arg);
                b"+OK\r\n".to_vec()
            }
            ("PASS", None) => {
                let password = line
                    .trim_end_matches(['\r', '\n'])
                    .get(5..)
                    .unwrap_or_default();
                let boxes = mailboxes.lock().unwrap_or_else(|p| p.into_inner());
                match user.as_ref().and_then(|u| boxes.get(u).map(|m| (u, m))) {
                    Some((u, m)) if m.password == password => {
                        logged_in = Some(u.clone());
                        b"+OK logged in\r\n".to_vec()
                    }
                    _ => b"-ERR [AUTH] invalid login\r\n".to_vec(),
                }
            }
            (_, None) => b"-ERR log in first\r\n".to_vec(),
            ("STAT", Some(name)) => {
                let v = view(&mailboxes.lock().unwrap_or_else(|p| p.into_inner()), name);
                format!(
                    "+OK {} {}\r\n",
                    v.len(),
                    v.iter().map(|m| m.2).sum::<usize>()
                )
                .into_bytes()
            }
            ("UIDL", Some(name)) | ("LIST", Some(name)) => {
                let v = view(&mailboxes.lock().unwrap_or_else(|p| p.into_inner()), name);
                let mut out = String::from("+OK\r\n");
                for (n, uidl, size) in v {
                    out.push_str(&if verb == "UIDL" {
                        format!("{n} {uidl}\r\n")
                    } else {
                        format!("{n} {size}\r\n")
                    });
                }
                out.push_str(".\r\n");
                out.into_bytes()
            }
            ("RETR", Some(name)) => {
                let found = {
                    let boxes = mailboxes.lock().unwrap_or_else(|p| p.into_inner());
                    let listed = view(&boxes, name).iter().any(|(n, _, _)| *n == number);
                    boxes
                        .get(name)
                        .and_then(|m| m.messages.get(number.wrapping_sub(1)))
                        .filter(|_| listed)
                        .map(|(_, b)| b.clone())
                };
                match found {
                    Some(bytes) => {
                        let mut out = format!("+OK {} octets\r\n", bytes.len()).into_bytes();
                        out.extend_from_slice(&stuff(&bytes));
                        out
                    }
                    None => b"-ERR no such message\r\n".to_vec(),
                }
            }
            ("DELE", Some(name)) => {
                let listed = view(&mailboxes.lock().unwrap_or_else(|p| p.into_inner()), name)
                    .iter()
                    .any(|(n, _, _)| *n == number);
                if listed {
                    deleted.push(number);
                    b"+OK marked\r\n".to_vec()
                } else {
                    b"-ERR no such message\r\n".to_vec()
                }
            }
            ("RSET", Some(_)) => {
                deleted.clear();
                b"+OK\r\n".to_vec()
            }
            ("NOOP", Some(_)) => b"+OK\r\n".to_vec(),
            _ => b"-ERR unknown command\r\n".to_vec(),
        };
        write.write_all(&reply).await?;
    }
}
