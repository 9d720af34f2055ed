//! A small POP3 server for fault injection: correct POP3 (RFC 1939 semantics: deletions happen
//! only at QUIT) until told to misbehave. Not a stand-in for Dovecot: the interop tests use the
//! real server; this one exists to cut, stall and garble on demand.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use md5::Md5;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// A misbehaviour, used once and then forgotten, so that the next session goes through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Close the connection after sending `after` bytes of the body of the `n`th message (1-based).
    CutInRetr { n: usize, after: usize },
    /// Close the connection right after answering the first DELE (so QUIT never happens).
    CutAfterDele,
    /// Greet with bytes that are not POP3.
    GibberishGreeting,
    /// Answer the RETR of the `n`th message with -ERR.
    ErrOnRetr { n: usize },
    /// Say nothing (but keep the connection open) when this command arrives.
    StallOn(&'static str),
    /// Send an endless line instead of the greeting.
    EndlessLine,
}

#[derive(Debug, Default)]
pub struct State {
    /// (UIDL, message) of what the mailbox holds.
    pub mailbox: Vec<(String, Vec<u8>)>,
    pub faults: Vec<Fault>,
    /// How often each UIDL was sent whole to a client.
    pub retrieved: Vec<String>,
    pub sessions: usize,
    /// Commands received, with PASS values and SASL lines left out.
    pub commands: Vec<String>,
    /// Whether a command ever arrived while an earlier one was unanswered (pipelining).
    pub saw_pipelining: bool,
}

/// Options fixed for the server's life.
#[derive(Debug, Clone)]
pub struct Options {
    pub pipelining: bool,
    pub user: String,
    pub password: String,
    /// Offer SASL NTLM (and check NTLMv2 answers).
    pub ntlm: bool,
    /// Advertise LOGIN-DELAY with this many seconds.
    pub login_delay: Option<u64>,
    /// Advertise STLS; the server answers it by injecting a second reply before any TLS (the
    /// attack RFC 2595 §4 warns of), so the client must give up.
    pub stls_injection: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            pipelining: true,
            user: "user".into(),
            password: "secret".into(),
            ntlm: false,
            login_delay: None,
            stls_injection: false,
        }
    }
}

pub struct ScriptedPop3 {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<State>>,
}

impl ScriptedPop3 {
    /// Starts serving on 127.0.0.1 with the given messages (UIDLs `uid-1`, `uid-2`, ...).
    pub async fn start(options: Options, messages: Vec<Vec<u8>>) -> ScriptedPop3 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mailbox = messages
            .into_iter()
            .enumerate()
            .map(|(i, m)| (format!("uid-{}", i + 1), m))
            .collect();
        let state = Arc::new(Mutex::new(State {
            mailbox,
            ..Default::default()
        }));
        let shared = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                let (state, options) = (shared.clone(), options.clone());
                tokio::spawn(async move {
                    let _ = serve(socket, state, options).await;
                });
            }
        });
        ScriptedPop3 { addr, state }
    }

    pub fn add_fault(&self, fault: Fault) {
        self.state.lock().unwrap().faults.push(fault);
    }

    pub fn remaining(&self) -> usize {
        self.state.lock().unwrap().mailbox.len()
    }

    pub fn retrieved(&self) -> Vec<String> {
        self.state.lock().unwrap().retrieved.clone()
    }

    pub fn saw_pipelining(&self) -> bool {
        self.state.lock().unwrap().saw_pipelining
    }

    pub fn commands(&self) -> Vec<String> {
        self.state.lock().unwrap().commands.clone()
    }

    /// An `[[account]]` body for this server (plain TCP, USER/PASS allowed in clear: loopback).
    pub fn account(&self, name: &str, extra: &str) -> String {
        format!(
            "name = {name:?}\nserver = \"127.0.0.1\"\nport = {}\ntls = \"none\"\nallow_insecure_auth = true\n\
             user = \"user\"\npassword = \"secret\"\ndeliver_to = \"office@example.org\"\ntimeout = \"2s\"\n{extra}\n",
            self.addr.port()
        )
    }
}

fn take_fault(state: &Mutex<State>, pick: impl Fn(&Fault) -> bool) -> Option<Fault> {
    let mut state = state.lock().unwrap();
    let pos = state.faults.iter().position(pick)?;
    Some(state.faults.remove(pos))
}

async fn serve(
    socket: TcpStream,
    state: Arc<Mutex<State>>,
    options: Options,
) -> std::io::Result<()> {
    state.lock().unwrap().sessions += 1;
    let (read, mut write) = socket.into_split();
    let mut lines = BufReader::new(read);
    if take_fault(&state, |f| *f == Fault::GibberishGreeting).is_some() {
        write.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await?;
        return Ok(());
    }
    if take_fault(&state, |f| *f == Fault::EndlessLine).is_some() {
        let chunk = vec![b'x'; 64 * 1024];
        write.write_all(b"+OK ").await?;
        for _ in 0..64 {
            write.write_all(&chunk).await?;
        }
        return Ok(());
    }
    write
        .write_all(b"+OK scripted POP3 ready <1234.5678@scripted>\r\n")
        .await?;
    let mut authenticated = false;
    let mut user_ok = false;
    let mut deleted: Vec<String> = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let command = line.trim_end().to_string();
        if !lines.buffer().is_empty() {
            state.lock().unwrap().saw_pipelining = true;
        }
        let mut words = command.split(' ');
        let verb = words.next().unwrap_or_default().to_ascii_uppercase();
        let arg = words.next().unwrap_or_default().to_string();
        let shown = if verb == "PASS" || verb == "APOP" {
            format!("{verb} [secret]")
        } else {
            command.clone()
        };
        state.lock().unwrap().commands.push(shown);
        if take_fault(
            &state,
            |f| matches!(f, Fault::StallOn(c) if c.eq_ignore_ascii_case(&verb)),
        )
        .is_some()
        {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return Ok(());
        }
        // The mailbox as this session sees it: numbered in order, minus what it marked deleted.
        let listing: Vec<(usize, String, usize)> = {
            let state = state.lock().unwrap();
            state
                .mailbox
                .iter()
                .enumerate()
                .map(|(i, (u, m))| (i + 1, u.clone(), m.len()))
                .filter(|(_, u, _)| !deleted.contains(u))
                .collect()
        };
        let reply: Vec<u8> = match verb.as_str() {
            "CAPA" => {
                let mut caps = String::from("+OK\r\nUSER\r\nUIDL\r\nTOP\r\n");
                if options.pipelining {
                    caps.push_str("PIPELINING\r\n");
                }
                if options.ntlm {
                    caps.push_str("SASL NTLM\r\n");
                }
                if let Some(delay) = options.login_delay {
                    caps.push_str(&format!("LOGIN-DELAY {delay}\r\n"));
                }
                if options.stls_injection {
                    caps.push_str("STLS\r\n");
                }
                caps.push_str(".\r\n");
                caps.into_bytes()
            }
            "USER" => {
                user_ok = arg == options.user;
                b"+OK\r\n".to_vec()
            }
            "PASS" => {
                if user_ok && command[5..] == options.password {
                    authenticated = true;
                    b"+OK logged in\r\n".to_vec()
                } else {
                    b"-ERR [AUTH] invalid login\r\n".to_vec()
                }
            }
            "APOP" => {
                let digest = format!(
                    "{:x}",
                    <Md5 as md5::Digest>::digest(format!(
                        "<1234.5678@scripted>{}",
                        options.password
                    ))
                );
                if arg == options.user && words.next() == Some(digest.as_str()) {
                    authenticated = true;
                    b"+OK logged in\r\n".to_vec()
                } else {
                    b"-ERR [AUTH] invalid login\r\n".to_vec()
                }
            }
            "AUTH" if arg.eq_ignore_ascii_case("NTLM") && options.ntlm => {
                authenticated = ntlm_exchange(&mut lines, &mut write, &options).await?;
                continue;
            }
            "QUIT" => {
                state
                    .lock()
                    .unwrap()
                    .mailbox
                    .retain(|(u, _)| !deleted.contains(u));
                write.write_all(b"+OK bye\r\n").await?;
                return Ok(());
            }
            "STLS" if options.stls_injection => {
                b"+OK begin TLS\r\n+OK injected in clear\r\n".to_vec()
            }
            _ if !authenticated => b"-ERR not logged in\r\n".to_vec(),
            "UIDL" => {
                let mut out = String::from("+OK\r\n");
                for (n, uidl, _) in &listing {
                    out.push_str(&format!("{n} {uidl}\r\n"));
                }
                out.push_str(".\r\n");
                out.into_bytes()
            }
            "LIST" => {
                let mut out = format!("+OK {} messages\r\n", listing.len());
                for (n, _, size) in &listing {
                    out.push_str(&format!("{n} {size}\r\n"));
                }
                out.push_str(".\r\n");
                out.into_bytes()
            }
            "RETR" => {
                let n: usize = arg.parse().unwrap_or(0);
                let found = listing.iter().find(|(i, _, _)| *i == n).cloned();
                match found {
                    None => b"-ERR no such message\r\n".to_vec(),
                    Some(_) if take_fault(&state, |f| *f == Fault::ErrOnRetr { n }).is_some() => {
                        b"-ERR cannot read message\r\n".to_vec()
                    }
                    Some((_, uidl, size)) => {
                        let message = state.lock().unwrap().mailbox[n - 1].1.clone();
                        let body = outpost::demo::pop3::stuff(&message);
                        write
                            .write_all(format!("+OK {size} octets\r\n").as_bytes())
                            .await?;
                        if let Some(Fault::CutInRetr { after, .. }) = take_fault(
                            &state,
                            |f| matches!(f, Fault::CutInRetr { n: m, .. } if *m == n),
                        ) {
                            write.write_all(&body[..after.min(body.len())]).await?;
                            return Ok(());
                        }
                        write.write_all(&body).await?;
                        state.lock().unwrap().retrieved.push(uidl);
                        continue;
                    }
                }
            }
            "DELE" => {
                let n: usize = arg.parse().unwrap_or(0);
                match listing.iter().find(|(i, _, _)| *i == n) {
                    Some((_, uidl, _)) => {
                        deleted.push(uidl.clone());
                        if take_fault(&state, |f| *f == Fault::CutAfterDele).is_some() {
                            write.write_all(b"+OK marked\r\n").await?;
                            return Ok(());
                        }
                        b"+OK marked\r\n".to_vec()
                    }
                    None => b"-ERR no such message\r\n".to_vec(),
                }
            }
            "NOOP" => b"+OK\r\n".to_vec(),
            _ => b"-ERR unknown command\r\n".to_vec(),
        };
        write.write_all(&reply).await?;
    }
}

/// The server's half of NTLM: sends a Challenge, and checks the client's NTLMv2 proof against
/// the configured password (MS-NLMP §3.3.2), as a real server would.
async fn ntlm_exchange(
    lines: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
    write: &mut tokio::net::tcp::OwnedWriteHalf,
    options: &Options,
) -> std::io::Result<bool> {
    let mut line = String::new();
    write.write_all(b"+ \r\n").await?;
    lines.read_line(&mut line).await?;
    let negotiate = B64.decode(line.trim()).unwrap_or_default();
    if !negotiate.starts_with(b"NTLMSSP\0\x01\0\0\0") {
        write.write_all(b"-ERR bad negotiate\r\n").await?;
        return Ok(false);
    }
    let server_challenge = [1u8, 2, 3, 4, 5, 6, 7, 8];
    let challenge = ntlmclient::Message::Challenge(ntlmclient::ChallengeMessage {
        target_name: "SCRIPTED".into(),
        flags: ntlmclient::Flags::NEGOTIATE_UNICODE
            | ntlmclient::Flags::NEGOTIATE_NTLM
            | ntlmclient::Flags::NEGOTIATE_TARGET_INFO,
        challenge: server_challenge,
        context: (0, 0),
        target_information: vec![],
        os_version: Default::default(),
    });
    write
        .write_all(format!("+ {}\r\n", B64.encode(challenge.to_bytes().unwrap())).as_bytes())
        .await?;
    line.clear();
    lines.read_line(&mut line).await?;
    let bytes = B64.decode(line.trim()).unwrap_or_default();
    let ok = match ntlmclient::Message::try_from(bytes.as_slice()) {
        Ok(ntlmclient::Message::Authenticate(auth))
            if auth.user_name == options.user && auth.ntlm_response.len() > 16 =>
        {
            let creds = ntlmclient::Credentials {
                username: options.user.clone(),
                password: options.password.clone(),
                domain: auth.domain_name.clone(),
            };
            let key = ntlmclient::ntlm_v2_password_func(&creds);
            let mut mac = <Hmac<Md5> as Mac>::new_from_slice(&key).unwrap();
            mac.update(&server_challenge);
            mac.update(&auth.ntlm_response[16..]);
            mac.verify_slice(&auth.ntlm_response[..16]).is_ok()
        }
        _ => false,
    };
    let reply: &[u8] = if ok {
        b"+OK NTLM accepted\r\n"
    } else {
        b"-ERR [AUTH] NTLM refused\r\n"
    };
    write.write_all(reply).await?;
    Ok(ok)
}
