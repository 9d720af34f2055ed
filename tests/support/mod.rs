//! Test support: the real Dovecot (started by `scripts/dovecot-start`), a small scripted POP3
//! server that produces faults on demand, and helpers to look into a spool.
#![allow(dead_code)]

pub mod crash;
pub mod scripted;
pub mod scripted_smtp;

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

/// A port that was free a moment ago on loopback.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A private Dovecot on loopback high ports, stopped when dropped.
pub struct Dovecot {
    pub dir: tempfile::TempDir,
    pub pop3_port: u16,
    pub pop3s_port: u16,
}

impl Dovecot {
    /// Starts Dovecot with these `(user, password)` mailboxes. Panics with Dovecot's log when it
    /// cannot start (the README's test command installs it).
    pub fn start(users: &[(&str, &str)]) -> Dovecot {
        let dir = tempfile::Builder::new()
            .prefix("outpost-dovecot-")
            .tempdir()
            .unwrap();
        let (pop3_port, pop3s_port) = (free_port(), free_port());
        let status = Command::new(repo_root().join("scripts/dovecot-start"))
            .arg(dir.path())
            .arg(pop3_port.to_string())
            .arg(pop3s_port.to_string())
            .args(users.iter().map(|(u, p)| format!("{u}:{p}")))
            .status()
            .expect("running scripts/dovecot-start");
        assert!(status.success(), "scripts/dovecot-start failed");
        Dovecot {
            dir,
            pop3_port,
            pop3s_port,
        }
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("tls/ca.crt")
    }

    fn maildir(&self, user: &str) -> PathBuf {
        self.dir.path().join("mail").join(user)
    }

    /// Puts a message into `user`'s mailbox, as a local delivery agent would (tmp, then rename).
    pub fn deliver(&self, user: &str, message: &[u8]) {
        self.deliver_with(user, |tmp| std::fs::write(tmp, message).unwrap());
    }

    /// Puts a copy of the file `message` into `user`'s mailbox, streaming it.
    pub fn deliver_file(&self, user: &str, message: &Path) {
        self.deliver_with(user, |tmp| {
            std::fs::copy(message, tmp).unwrap();
        });
    }

    fn deliver_with(&self, user: &str, write: impl FnOnce(&Path)) {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let name = format!("{secs}.M{n}P{}.outpost-test", std::process::id());
        let tmp = self.maildir(user).join("tmp").join(&name);
        write(&tmp);
        std::fs::rename(&tmp, self.maildir(user).join("new").join(&name)).unwrap();
    }

    /// How many messages `user`'s mailbox holds.
    pub fn count(&self, user: &str) -> usize {
        ["new", "cur"]
            .iter()
            .map(|d| {
                std::fs::read_dir(self.maildir(user).join(d))
                    .map(|r| r.count())
                    .unwrap_or(0)
            })
            .sum()
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        let _ = Command::new(repo_root().join("scripts/dovecot-stop"))
            .arg(self.dir.path())
            .status();
    }
}

/// A test message with a unique Message-ID, `extra` body bytes after a short text.
pub fn message(id: &str, body: &str) -> Vec<u8> {
    format!(
        "Return-Path: <sender@example.net>\r\nFrom: Sender <sender@example.net>\r\nTo: office@example.org\r\n\
         Subject: test {id}\r\nMessage-ID: <{id}@test.example.net>\r\n\r\n{body}\r\n"
    )
    .into_bytes()
}

/// The Message-ID of a message's bytes (`<id@...>` → `id`).
pub fn message_id(bytes: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(8192)]);
    let line = text
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("message-id:"))?;
    let start = line.find('<')? + 1;
    let end = line[start..].find('@')? + start;
    Some(line[start..end].to_string())
}

/// Counts the messages in a spool's `queue/` by Message-ID, reading the files directly (no lock
/// needed, so it works beside a running process too).
pub fn spooled_ids(spool_dir: &Path) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    let Ok(entries) = std::fs::read_dir(spool_dir.join("queue")) else {
        return counts;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "msg") {
            let bytes = std::fs::read(&path).unwrap();
            if let Some(id) = message_id(&bytes) {
                *counts.entry(id).or_insert(0) += 1;
            }
        }
    }
    counts
}

/// The body of a spooled message, without the spool's own header block.
pub fn spooled_message(path: &Path) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap();
    let end = bytes
        .windows(2)
        .position(|w| w == b"\n\n")
        .expect("header block")
        + 2;
    bytes[end..].to_vec()
}

/// A configuration text with the spool in `spool_dir` and the given `[[account]]` blocks.
pub fn config_text(spool_dir: &Path, accounts: &[String]) -> String {
    let mut text = format!(
        "spool_dir = {:?}\ndefault_domain = \"example.org\"\n",
        spool_dir
    );
    for a in accounts {
        text.push_str("\n[[account]]\n");
        text.push_str(a);
    }
    text
}

/// An `[[account]]` body for a Dovecot user.
pub fn dovecot_account(
    dovecot: &Dovecot,
    name: &str,
    user: &str,
    password: &str,
    extra: &str,
) -> String {
    format!(
        "name = {name:?}\nserver = \"localhost\"\nport = {}\ntls = \"implicit\"\nca_file = {:?}\nuser = {user:?}\n\
         password = {password:?}\ndeliver_to = \"{user}@example.org\"\n{extra}\n",
        dovecot.pop3s_port,
        dovecot.ca_file()
    )
}

/// Runs one window with this configuration text, as `outpost fetch` would (the spool is opened for
/// the window and closed after it).
pub async fn fetch_once(text: &str) -> outpost::fetch::WindowReport {
    let config = outpost::config::Config::parse(text, Path::new("/")).expect("valid test config");
    let spool = spool::Spool::open(&config.spool_dir).unwrap();
    let accounts: Vec<_> = config
        .accounts
        .iter()
        .map(|a| (a.clone(), outpost::fetch::AccountProgress::new(&a.name)))
        .collect();
    outpost::fetch::run_window(&config, &spool, &accounts).await
}

/// Runs `outpost` with `args`, returning its output.
pub fn outpost(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_outpost"))
        .args(args)
        .output()
        .expect("running outpost")
}

/// A private Postfix on a loopback high port (queue and maildir on a tmpfs), stopped when dropped.
/// Every recipient's copy lands in one maildir, with the recipient in `Delivered-To`.
pub struct Postfix {
    pub dir: tempfile::TempDir,
    pub port: u16,
}

/// One copy Postfix delivered.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub recipient: String,
    pub return_path: String,
    /// The message as received, without the headers Postfix added on top (Return-Path,
    /// X-Original-To, Delivered-To, Received), with Postfix's LF line ends.
    pub message: Vec<u8>,
}

impl Postfix {
    pub fn start(message_size_limit: u64) -> Postfix {
        let base = if Path::new("/dev/shm").is_dir() {
            Path::new("/dev/shm")
        } else {
            Path::new("/tmp")
        };
        let dir = tempfile::Builder::new()
            .prefix("outpost-postfix-")
            .tempdir_in(base)
            .unwrap();
        let port = free_port();
        let postfix = Postfix { dir, port };
        postfix.run_start(message_size_limit);
        postfix
    }

    fn run_start(&self, message_size_limit: u64) {
        let status = Command::new(repo_root().join("scripts/postfix-start"))
            .arg(self.dir.path())
            .arg(self.port.to_string())
            .arg(message_size_limit.to_string())
            .status()
            .expect("running scripts/postfix-start");
        assert!(status.success(), "scripts/postfix-start failed");
    }

    pub fn stop(&self) {
        let _ = Command::new(repo_root().join("scripts/postfix-stop"))
            .arg(self.dir.path())
            .status();
        // The listener goes away with the master; wait until connections are refused.
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    pub fn start_again(&self, message_size_limit: u64) {
        self.run_start(message_size_limit);
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("tls/ca.crt")
    }

    /// Replaces the recipient access map (regexp lines) and makes Postfix read it.
    pub fn set_access(&self, map: &str) {
        std::fs::write(self.dir.path().join("conf/access"), map).unwrap();
        let conf = self.dir.path().join("conf");
        let status = Command::new("postfix")
            .arg("-c")
            .arg(&conf)
            .arg("reload")
            .output()
            .unwrap();
        assert!(status.status.success());
    }

    /// A `[local]` section for this server.
    pub fn local_section(&self, extra: &str) -> String {
        format!("[local]\nhost = \"127.0.0.1\"\nport = {}\nhelo = \"outpost.test\"\ntimeout = \"10s\"\n{extra}\n", self.port)
    }

    /// Every copy delivered so far.
    pub fn delivered(&self) -> Vec<Delivered> {
        let dir = self.dir.path().join("mail/all/new");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        entries
            .map(|e| {
                let bytes = std::fs::read(e.unwrap().path()).unwrap();
                parse_delivered(&bytes)
            })
            .collect()
    }

    /// Waits (up to 60 s) until `n` copies are delivered, and returns them.
    pub fn wait_for(&self, n: usize) -> Vec<Delivered> {
        for _ in 0..600 {
            let got = self.delivered();
            if got.len() >= n {
                return got;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let got = self.delivered();
        panic!("Postfix delivered {} of {n} copies", got.len());
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = Command::new(repo_root().join("scripts/postfix-stop"))
            .arg(self.dir.path())
            .status();
    }
}

fn parse_delivered(bytes: &[u8]) -> Delivered {
    let mut rest = bytes;
    let (mut recipient, mut return_path) = (String::new(), String::new());
    // Postfix's own header lines come first; Received may be folded over several lines.
    loop {
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .map_or(rest.len(), |p| p + 1);
        let line = String::from_utf8_lossy(&rest[..end]).into_owned();
        let lower = line.to_ascii_lowercase();
        let ours = lower.starts_with("return-path:")
            || lower.starts_with("x-original-to:")
            || lower.starts_with("delivered-to:")
            || lower.starts_with("received:");
        if lower.starts_with("delivered-to:") {
            recipient = line[13..].trim().to_string();
        }
        if lower.starts_with("return-path:") {
            return_path = line[12..].trim().trim_matches(['<', '>']).to_string();
        }
        if ours {
            rest = &rest[end..];
            // Skip the continuation lines of a folded Received header.
            while rest.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
                let end = rest
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(rest.len(), |p| p + 1);
                rest = &rest[end..];
            }
            continue;
        }
        break;
    }
    Delivered {
        recipient,
        return_path,
        message: rest.to_vec(),
    }
}

/// Puts a message straight into a spool, as the fetcher would, for delivery tests.
pub fn queue_message(
    spool: &spool::Spool,
    sender: &str,
    recipients: &[&str],
    message: &[u8],
) -> spool::QueueId {
    let origin = spool::Origin {
        account: "test".into(),
        uidl: None,
        arrived: spool::now(),
    };
    let envelope = spool::Envelope {
        sender: sender.into(),
        recipients: recipients.iter().map(|r| r.to_string()).collect(),
    };
    let mut writer = spool.writer(origin, move |_| envelope).unwrap();
    writer.write(message).unwrap();
    let spooled = writer.finish().unwrap();
    spool.commit(std::slice::from_ref(&spooled)).unwrap();
    spooled.id()
}

/// CRLF to LF, as a maildir stores a message.
pub fn unix_line_ends(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\r' && bytes.get(i + 1) == Some(&b'\n') {
            i += 1;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// The text of the (first) `.reason` file in a spool's badmail folder.
pub fn badmail_reason(spool: &spool::Spool) -> String {
    std::fs::read_dir(spool.badmail_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "reason"))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .expect("a badmail reason")
}
