//! Test support: the real Dovecot (started by `scripts/dovecot-start`), a small scripted POP3
//! server that produces faults on demand, and helpers to look into a spool.
#![allow(dead_code)]

pub mod scripted;

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
