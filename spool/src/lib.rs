//! The outpost spool: where mail is durable between the POP3 fetcher and the SMTP deliverer.
//!
//! # Layout
//! A spool is a directory:
//! - `queue/ID.msg`: one file per message, a short header block (origin and envelope) then the raw
//!   bytes as received (see [`FileHeader`]);
//! - `tmp/`: messages being written; whatever is here at open was never acknowledged and is removed;
//! - `db/`: the sled index (state, attempts, next try, seen UIDLs, oversized UIDLs, logins);
//! - `pickup/`, `badmail/`: plain `.eml` folders for people (used by the deliverer);
//! - `lock`: held (fs2, exclusive) by the one process that owns the spool.
//!
//! # Invariants
//! 1. **One way in.** Every message enters through [`Spool::writer`] then [`Spool::commit`], which
//!    indexes it and marks its UIDL seen in one atomic sled batch.
//! 2. **Durable before acknowledged.** A message file is written under `tmp/`, fsynced, renamed into
//!    `queue/`; [`Spool::commit`] fsyncs `queue/` and flushes the index. Only when `commit` returns may
//!    the caller acknowledge (POP3 `DELE`, removing a pickup file). One commit serves a batch.
//! 3. **Never fetched twice.** The seen mark of a UIDL is written in the same batch as the message
//!    and is recorded in the message file too, so a rebuilt index still knows it.
//! 4. **The files are the truth.** sled 0.34 flushes with `sync_file_range` and leaves large values
//!    un-fsynced, so after a power cut the index may lag behind the files or be damaged. At open the
//!    index is reconciled with `queue/` (files without an entry are indexed, entries without a file are
//!    dropped) and rebuilt from the files when sled cannot open it.
//! 5. **Recovery at open.** Half-written files are removed and messages that were in delivery are
//!    queued again.
//! 6. **Bounded memory.** Bodies are streamed to disk in the caller's chunks; the only buffer is the
//!    message's header section (at most [`HEADER_PREREAD`] bytes), read first so that the envelope can
//!    be derived from it before the file's own header block is written.

mod file;
mod writer;

use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

pub use file::FileHeader;
pub use writer::{MessageWriter, Resolved, Spooled, HEADER_PREREAD};

/// Errors of the spool. Every one of them means "not durable": the caller must not acknowledge.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("spool index: {0}")]
    Index(#[from] sled::Error),
    #[error("spool {0} is in use by another process")]
    Locked(PathBuf),
    #[error("spool index entry {0} is unreadable: {1}")]
    BadEntry(String, serde_json::Error),
    #[error("no message {0} in the spool")]
    NotFound(QueueId),
    #[error("invalid {what}: {value:?} (control characters are not allowed)")]
    Unclean { what: &'static str, value: String },
}

pub type Result<T, E = SpoolError> = std::result::Result<T, E>;

pub(crate) trait IoContext<T> {
    fn at(self, path: &Path) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, path: &Path) -> Result<T> {
        self.map_err(|source| SpoolError::Io {
            path: path.to_path_buf(),
            source,
        })
    }
}

/// A message's name in the queue: sixteen hex digits, increasing with the time of arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct QueueId(pub u64);

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016X}", self.0)
    }
}

impl FromStr for QueueId {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        u64::from_str_radix(s, 16).map(QueueId)
    }
}

/// Where a message came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// The configured account (or `pickup`) that brought it in.
    pub account: String,
    /// The POP3 UIDL, when the server gave one: the key of the seen mark.
    pub uidl: Option<String>,
    /// Seconds since the Unix epoch.
    pub arrived: u64,
}

/// The SMTP envelope the deliverer will use.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// `MAIL FROM` address without angle brackets; empty for the null sender `<>`.
    pub sender: String,
    pub recipients: Vec<String>,
}

/// Where a message stands in the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Queued,
    Deferred,
    Held,
    /// Handed to a delivery session; put back to `Queued` at open after a crash.
    Delivering,
}

/// The index's record of one queued message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub state: State,
    /// Bytes of the message as received (the file's header block not counted).
    pub size: u64,
    pub origin: Origin,
    pub envelope: Envelope,
    pub attempts: u32,
    /// Seconds since the epoch before which a deferred message is not tried.
    pub next_try: u64,
    pub last_error: Option<String>,
    /// How often the local server dropped the session while this message was in hand: a message
    /// that does it again and again is poison, and is isolated then sent to badmail.
    #[serde(default)]
    pub drops: u32,
    /// Whether the message has bytes outside 7-bit ASCII; `None` when not known (an index rebuilt
    /// from the files), and then the deliverer looks.
    #[serde(default)]
    pub eight_bit: Option<bool>,
}

impl Entry {
    fn new(size: u64, origin: Origin, envelope: Envelope) -> Entry {
        Entry {
            state: State::Queued,
            size,
            origin,
            envelope,
            attempts: 0,
            next_try: 0,
            last_error: None,
            drops: 0,
            eight_bit: None,
        }
    }

    /// Whether the deliverer should try it at `now`.
    pub fn is_due(&self, now: u64) -> bool {
        match self.state {
            State::Queued => true,
            State::Deferred => self.next_try <= now,
            State::Held | State::Delivering => false,
        }
    }
}

/// What one connect window did, kept for `spoolctl windows` and the cost report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WindowRecord {
    /// Seconds since the epoch when the window began.
    pub started: u64,
    /// Seconds from the link-up command to the first server answering (0 without link control).
    pub link_up_seconds: f64,
    /// Seconds from the start of the window to the end of the link-down command.
    pub online_seconds: f64,
    /// Bytes received from the POP3 servers.
    pub bytes_in: u64,
    /// Messages spooled per account.
    pub messages: std::collections::BTreeMap<String, u64>,
    pub errors: Vec<String>,
    /// Estimated from the link's configured prices, when it has them.
    pub cost: Option<f64>,
    /// Why the window stopped starting new messages early (time cap, byte budget, shutdown).
    pub capped: Option<String>,
}

/// Why a message (or some of its recipients) went to badmail: written beside it as `ID.reason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadmailReason {
    /// The server's reply, or outpost's own words when the server was never asked.
    pub reply: String,
    pub attempts: u32,
}

/// A UIDL the spool knows for an account, with when it first saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UidlMark {
    pub first_seen: u64,
    pub size: u64,
}

/// What the spool remembers of an account between sessions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountRecord {
    /// Seconds since the epoch of the last successful login.
    pub last_login: Option<u64>,
    /// The server's LOGIN-DELAY (RFC 2449 §6.5) in seconds, as it last said.
    pub login_delay: Option<u64>,
    /// Seconds since the epoch of the last window that included this account.
    #[serde(default)]
    pub last_window: Option<u64>,
    /// When a session last went through without error.
    #[serde(default)]
    pub last_success: Option<u64>,
    /// The last error and when it happened.
    #[serde(default)]
    pub last_error: Option<(u64, String)>,
    /// Windows in a row in which the login was refused (a changed password).
    #[serde(default)]
    pub auth_failures: u32,
}

/// Which per-account UIDL set a call is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UidlSet {
    /// Spooled: never download again, delete from the server (unless the account keeps mail).
    Seen,
    /// Too large to fetch: left on the server, reported once.
    Oversized,
    /// Message-ID and recipient of a message a catch-all delivered: a copy seen again is not
    /// delivered again.
    Duplicate,
}

impl UidlSet {
    fn prefix(self) -> &'static [u8] {
        match self {
            UidlSet::Seen => b"s/",
            UidlSet::Oversized => b"o/",
            UidlSet::Duplicate => b"d/",
        }
    }
}

const MESSAGE_PREFIX: &[u8] = b"m/";
const ACCOUNT_PREFIX: &[u8] = b"a/";
const LOCAL_SIZE_KEY: &[u8] = b"c/local-size";
const WINDOW_PREFIX: &[u8] = b"w/";
const NOTE_PREFIX: &[u8] = b"n/";

fn message_key(id: QueueId) -> Vec<u8> {
    let mut key = MESSAGE_PREFIX.to_vec();
    key.extend_from_slice(&id.0.to_be_bytes());
    key
}

fn uidl_prefix(set: UidlSet, account: &str) -> Vec<u8> {
    let mut key = set.prefix().to_vec();
    key.extend_from_slice(account.as_bytes());
    key.push(0);
    key
}

fn uidl_key(set: UidlSet, account: &str, uidl: &str) -> Vec<u8> {
    let mut key = uidl_prefix(set, account);
    key.extend_from_slice(uidl.as_bytes());
    key
}

/// Seconds since the Unix epoch, now.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// What [`Spool::open`] found and repaired.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Half-written files removed from `tmp/`.
    pub removed_partial: usize,
    /// Files in `queue/` the index did not know, now indexed.
    pub indexed: usize,
    /// Index entries whose file was gone, now dropped.
    pub dropped: usize,
    /// Messages that were in delivery, queued again.
    pub requeued: usize,
    /// Files in `queue/` that are not spool files, moved to `queue/damaged/`.
    pub damaged: usize,
    /// The index could not be opened and was rebuilt from the files.
    pub rebuilt: bool,
}

/// An open spool. Cheap to clone; all clones share one index and one lock.
#[derive(Clone)]
pub struct Spool {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    db: sled::Db,
    /// Held for the spool's lifetime: sled allows one process per database and so do we.
    _lock: File,
    /// Last id handed out, so that ids stay unique and increasing within the process.
    last_id: Mutex<u64>,
    recovery: std::sync::OnceLock<Recovery>,
}

impl fmt::Debug for Spool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Spool")
            .field("dir", &self.inner.dir)
            .finish()
    }
}

impl Spool {
    /// Opens (creating if needed) the spool in `dir`, takes its lock and repairs what a crash left.
    ///
    /// Fails with [`SpoolError::Locked`] at once when another process holds the spool.
    pub fn open(dir: impl AsRef<Path>) -> Result<Spool> {
        let dir = dir.as_ref().to_path_buf();
        // Mail is private: the queue, the index and badmail are the owner's alone (0700), the
        // spool itself may only be passed through (0711) so that pickup/ stays reachable for
        // whoever the administrator lets write there.
        for (sub, mode) in [
            ("", 0o711),
            ("queue", 0o700),
            ("tmp", 0o700),
            ("pickup", 0o755),
            ("badmail", 0o700),
        ] {
            let path = dir.join(sub);
            let existed = path.is_dir();
            fs::create_dir_all(&path).at(&path)?;
            if !existed || mode == 0o700 {
                set_mode(&path, mode)?;
            }
        }
        let lock_path = dir.join("lock");
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .at(&lock_path)?;
        // Called through the trait: std's own File::try_lock shadows fs2's on recent Rust.
        if fs2::FileExt::try_lock_exclusive(&lock).is_err() {
            return Err(SpoolError::Locked(dir));
        }
        let mut recovery = Recovery::default();
        let db_path = dir.join("db");
        let db = match sled::open(&db_path) {
            Ok(db) => db,
            Err(sled::Error::Corruption { .. }) | Err(sled::Error::Unsupported(_)) => {
                let aside = dir.join(format!("db.damaged-{}", now()));
                tracing::error!(index = %db_path.display(), moved_to = %aside.display(),
                    "spool index is damaged; rebuilding it from the message files");
                fs::rename(&db_path, &aside).at(&db_path)?;
                recovery.rebuilt = true;
                sled::open(&db_path)?
            }
            Err(e) => return Err(e.into()),
        };
        let spool = Spool {
            inner: Arc::new(Inner {
                dir,
                db,
                _lock: lock,
                last_id: Mutex::new(0),
                recovery: std::sync::OnceLock::new(),
            }),
        };
        let found = spool.recover(recovery)?;
        spool.inner.recovery.get_or_init(|| found);
        Ok(spool)
    }

    /// What the last [`Spool::open`] repaired.
    pub fn recovery(&self) -> Recovery {
        self.inner.recovery.get().cloned().unwrap_or_default()
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    pub fn pickup_dir(&self) -> PathBuf {
        self.inner.dir.join("pickup")
    }

    pub fn badmail_dir(&self) -> PathBuf {
        self.inner.dir.join("badmail")
    }

    fn queue_dir(&self) -> PathBuf {
        self.inner.dir.join("queue")
    }

    fn tmp_dir(&self) -> PathBuf {
        self.inner.dir.join("tmp")
    }

    /// The file of a queued message.
    pub fn message_path(&self, id: QueueId) -> PathBuf {
        self.queue_dir().join(format!("{id}.msg"))
    }

    fn next_id(&self) -> QueueId {
        let mut last = self.inner.last_id.lock().unwrap_or_else(|p| p.into_inner());
        *last = now_micros().max(*last + 1);
        QueueId(*last)
    }

    fn bump_last_id(&self, id: QueueId) {
        let mut last = self.inner.last_id.lock().unwrap_or_else(|p| p.into_inner());
        *last = (*last).max(id.0);
    }

    /// Starts a new message from `origin`. The writer buffers the message's header section, calls
    /// `envelope` with it, and then streams the rest to disk; see [`MessageWriter`].
    pub fn writer(
        &self,
        origin: Origin,
        envelope: impl FnOnce(&[u8]) -> Envelope + Send + 'static,
    ) -> Result<MessageWriter> {
        self.writer_resolved(origin, move |headers| Resolved {
            envelope: envelope(headers),
            ..Default::default()
        })
    }

    /// Like [`Spool::writer`], for a caller that also adds trace headers on top of the message or
    /// records duplicate marks with it.
    pub fn writer_resolved(
        &self,
        origin: Origin,
        resolve: impl FnOnce(&[u8]) -> Resolved + Send + 'static,
    ) -> Result<MessageWriter> {
        if !file::is_clean(&origin.account) {
            return Err(SpoolError::Unclean {
                what: "account name",
                value: origin.account,
            });
        }
        if let Some(uidl) = origin.uidl.as_ref().filter(|u| !file::is_clean(u)) {
            return Err(SpoolError::Unclean {
                what: "UIDL",
                value: uidl.clone(),
            });
        }
        let id = self.next_id();
        let tmp = self.tmp_dir().join(format!("{id}.tmp"));
        let dest = self.message_path(id);
        MessageWriter::create(id, origin, Box::new(resolve), tmp, dest)
    }

    /// Makes a batch of finished messages durable and visible: fsyncs `queue/`, indexes every
    /// message and marks its UIDL seen in one atomic batch, and flushes the index.
    ///
    /// Only after this returns `Ok` may the caller acknowledge these messages to their source.
    pub fn commit(&self, batch: &[Spooled]) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let queue = self.queue_dir();
        File::open(&queue).and_then(|d| d.sync_all()).at(&queue)?;
        let mut writes = sled::Batch::default();
        for msg in batch {
            index_message(
                &mut writes,
                &msg.header,
                msg.size,
                Some(msg.eight_bit),
                &msg.marks,
            );
        }
        self.inner.db.apply_batch(writes)?;
        self.inner.db.flush()?;
        Ok(())
    }

    /// The UIDLs of `account` in `set`.
    pub fn uidls(&self, set: UidlSet, account: &str) -> Result<HashMap<String, UidlMark>> {
        let prefix = uidl_prefix(set, account);
        let mut out = HashMap::new();
        for item in self.inner.db.scan_prefix(&prefix) {
            let (key, value) = item?;
            let uidl = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
            out.insert(uidl, decode(&key, &value)?);
        }
        Ok(out)
    }

    /// Records `uidl` in `set` unless it is there already; returns whether it is new.
    pub fn add_uidl(&self, set: UidlSet, account: &str, uidl: &str, size: u64) -> Result<bool> {
        let key = uidl_key(set, account, uidl);
        let mark = UidlMark {
            first_seen: now(),
            size,
        };
        let previous =
            self.inner
                .db
                .compare_and_swap(&key, None as Option<&[u8]>, Some(encode(&mark)))?;
        Ok(previous.is_ok())
    }

    /// Forgets UIDLs of `account` in `set`: those the server no longer lists.
    ///
    /// Not flushed: a forgotten mark that comes back after a crash is forgotten again next time.
    pub fn forget_uidls<'a>(
        &self,
        set: UidlSet,
        account: &str,
        uidls: impl IntoIterator<Item = &'a str>,
    ) -> Result<()> {
        let mut writes = sled::Batch::default();
        for uidl in uidls {
            writes.remove(uidl_key(set, account, uidl));
        }
        self.inner.db.apply_batch(writes)?;
        Ok(())
    }

    /// What the spool remembers of an account between sessions.
    pub fn account_record(&self, account: &str) -> Result<AccountRecord> {
        let key = [ACCOUNT_PREFIX, account.as_bytes()].concat();
        Ok(self
            .inner
            .db
            .get(&key)?
            .map(|v| decode(&key, &v))
            .transpose()?
            .unwrap_or_default())
    }

    pub fn set_account_record(&self, account: &str, record: &AccountRecord) -> Result<()> {
        let key = [ACCOUNT_PREFIX, account.as_bytes()].concat();
        self.inner.db.insert(key, encode(record))?;
        Ok(())
    }

    /// The index entry of one message.
    pub fn entry(&self, id: QueueId) -> Result<Entry> {
        let key = message_key(id);
        match self.inner.db.get(&key)? {
            Some(v) => decode(&key, &v),
            None => Err(SpoolError::NotFound(id)),
        }
    }

    /// Every queued message, oldest first.
    pub fn list(&self) -> Result<Vec<(QueueId, Entry)>> {
        let mut out = Vec::new();
        for item in self.inner.db.scan_prefix(MESSAGE_PREFIX) {
            let (key, value) = item?;
            out.push((id_of_key(&key), decode(&key, &value)?));
        }
        Ok(out)
    }

    /// Opens a queued message: its header block, and the file positioned at the message's first byte.
    pub fn open_message(&self, id: QueueId) -> Result<(FileHeader, File)> {
        let path = self.message_path(id);
        let mut file = File::open(&path).at(&path)?;
        let (header, offset) = FileHeader::decode(&mut file).at(&path)?;
        file.seek(SeekFrom::Start(offset)).at(&path)?;
        Ok((header, file))
    }

    /// Changes the state of a queued message.
    pub fn set_state(&self, id: QueueId, state: State) -> Result<()> {
        self.update(id, |e| e.state = state).map(|_| ())
    }

    /// Changes a message's index entry and returns the new one. Not flushed: what it records
    /// (attempts, next try, remaining recipients) is made durable by the next flush; a crash
    /// before it at worst repeats an attempt, never loses mail.
    pub fn update(&self, id: QueueId, change: impl FnOnce(&mut Entry)) -> Result<Entry> {
        let mut entry = self.entry(id)?;
        change(&mut entry);
        self.inner.db.insert(message_key(id), encode(&entry))?;
        Ok(entry)
    }

    /// Records the recipients that the local server accepted, durably: after this they never
    /// get the message again, whatever happens to the others.
    pub fn recipients_done(&self, id: QueueId, done: &[String]) -> Result<Entry> {
        let entry = self.update(id, |e| e.envelope.recipients.retain(|r| !done.contains(r)))?;
        self.inner.db.flush()?;
        Ok(entry)
    }

    /// The messages due for delivery at `now`, oldest first.
    pub fn due(&self, now: u64) -> Result<Vec<(QueueId, Entry)>> {
        Ok(self
            .list()?
            .into_iter()
            .filter(|(_, e)| e.is_due(now))
            .collect())
    }

    /// A small number the caller keeps under `name` (when a notice was last sent, a count seen).
    pub fn note(&self, name: &str) -> Result<Option<u64>> {
        let key = [NOTE_PREFIX, name.as_bytes()].concat();
        self.inner
            .db
            .get(&key)?
            .map(|v| decode(&key, &v))
            .transpose()
    }

    pub fn set_note(&self, name: &str, value: u64) -> Result<()> {
        let key = [NOTE_PREFIX, name.as_bytes()].concat();
        self.inner.db.insert(key, encode(&value))?;
        Ok(())
    }

    /// Records a window, durably.
    pub fn record_window(&self, record: &WindowRecord) -> Result<()> {
        // Keyed by a fresh id (microseconds, increasing): two windows in one second both count.
        let mut key = WINDOW_PREFIX.to_vec();
        key.extend_from_slice(&self.next_id().0.to_be_bytes());
        self.inner.db.insert(key, encode(record))?;
        self.inner.db.flush()?;
        Ok(())
    }

    /// The last `n` windows, oldest first.
    pub fn windows(&self, n: usize) -> Result<Vec<WindowRecord>> {
        let mut out = Vec::new();
        for item in self.inner.db.scan_prefix(WINDOW_PREFIX).rev().take(n) {
            let (key, value) = item?;
            out.push(decode(&key, &value)?);
        }
        out.reverse();
        Ok(out)
    }

    /// The largest message the local server accepts, as it last said (EHLO SIZE).
    pub fn local_size_limit(&self) -> Result<Option<u64>> {
        self.inner
            .db
            .get(LOCAL_SIZE_KEY)?
            .map(|v| decode(LOCAL_SIZE_KEY, &v))
            .transpose()
    }

    pub fn set_local_size_limit(&self, limit: Option<u64>) -> Result<()> {
        match limit {
            Some(n) => self.inner.db.insert(LOCAL_SIZE_KEY, encode(&n))?,
            None => self.inner.db.remove(LOCAL_SIZE_KEY)?,
        };
        Ok(())
    }

    /// A name in `badmail/` that is not taken: `STEM`, else `STEM-2`, `STEM-3`...
    fn free_badmail_name(&self, stem: &str) -> String {
        let dir = self.badmail_dir();
        (1..)
            .map(|n| {
                if n == 1 {
                    stem.to_string()
                } else {
                    format!("{stem}-{n}")
                }
            })
            .find(|name| !dir.join(format!("{name}.eml")).exists())
            .expect("some name is free")
    }

    /// Writes `badmail/NAME.reason`, fsynced, under a temporary name first.
    fn write_reason(&self, name: &str, text: &str) -> Result<()> {
        let tmp = self.tmp_dir().join(format!("{name}.reason"));
        let mut file = create_private(&tmp)?;
        file.write_all(text.as_bytes())
            .and_then(|_| file.sync_all())
            .at(&tmp)?;
        let path = self.badmail_dir().join(format!("{name}.reason"));
        fs::rename(&tmp, &path).at(&path)
    }

    /// Moves a file that cannot become a message (a pickup file that is not mail, or has no
    /// recipient) into `badmail/` as it is, with a `.reason` beside it. A rename: nothing is lost.
    pub fn badmail_file(&self, path: &Path, reason: &str) -> Result<PathBuf> {
        let dir = self.badmail_dir();
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("file");
        let name = self.free_badmail_name(stem);
        let text = format!(
            "Reply: {}\nTime: {}\nAttempts: 0\nFile: {}\n",
            reason.replace(['\r', '\n'], " "),
            now(),
            path.display()
        );
        self.write_reason(&name, &text)?;
        let eml = dir.join(format!("{name}.eml"));
        fs::rename(path, &eml).at(path)?;
        File::open(&dir).and_then(|d| d.sync_all()).at(&dir)?;
        tracing::warn!(file = %path.display(), badmail = %eml.display(), reason, "file moved to badmail");
        Ok(eml)
    }

    /// Writes a message into `badmail/` for `recipients`, in the replay format (`X-Sender:` and
    /// `X-Receiver:` lines, then the message as received) with a `.reason` file beside it, both
    /// fsynced. With `remove`, the message then leaves the queue (it had no other recipients).
    ///
    /// Returns the path of the `.eml` file.
    pub fn to_badmail(
        &self,
        id: QueueId,
        recipients: &[String],
        reason: &BadmailReason,
        remove: bool,
    ) -> Result<PathBuf> {
        let (header, mut body) = self.open_message(id)?;
        let dir = self.badmail_dir();
        let name = self.free_badmail_name(&id.to_string());
        let eml = dir.join(format!("{name}.eml"));
        let tmp = self.tmp_dir().join(format!("{name}.badmail"));
        {
            let mut out = io::BufWriter::new(create_private(&tmp)?);
            let sender = if header.envelope.sender.is_empty() {
                "<>"
            } else {
                &header.envelope.sender
            };
            write!(out, "X-Sender: {sender}\r\n").at(&tmp)?;
            for rcpt in recipients {
                write!(out, "X-Receiver: {rcpt}\r\n").at(&tmp)?;
            }
            io::copy(&mut body, &mut out).at(&tmp)?;
            let file = out.into_inner().map_err(|e| e.into_error()).at(&tmp)?;
            file.sync_all().at(&tmp)?;
        }
        let text = format!(
            "Reply: {}\nTime: {}\nAttempts: {}\nAccount: {}\nUidl: {}\nRecipients: {}\n",
            reason.reply.replace(['\r', '\n'], " "),
            now(),
            reason.attempts,
            header.origin.account,
            header.origin.uidl.as_deref().unwrap_or("-"),
            recipients.join(", ")
        );
        self.write_reason(&name, &text)?;
        fs::rename(&tmp, &eml).at(&eml)?;
        File::open(&dir).and_then(|d| d.sync_all()).at(&dir)?;
        tracing::warn!(id = %id, file = %eml.display(), reason = %reason.reply, "message written to badmail");
        if remove {
            self.remove_delivered(id)?;
        } else {
            self.recipients_done(id, recipients)?;
        }
        Ok(eml)
    }

    /// Removes a message whose delivery the local server has accepted: the file first, then the
    /// entry, so that a crash in between leaves an entry without a file, which open drops.
    ///
    /// The unlink is the record that counts, and it is not waited for on disk: the index is not
    /// flushed and the directory not fsynced. A killed process cannot resend the message; a power
    /// cut right after may bring the file back and deliver it again (at least once, never lost),
    /// which is the price of not paying a flush per delivered message.
    pub fn remove_delivered(&self, id: QueueId) -> Result<()> {
        let path = self.message_path(id);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).at(&path),
        }
        self.inner.db.remove(message_key(id))?;
        Ok(())
    }

    /// Brings the index in line with the files; see the invariants at the top of this file.
    fn recover(&self, mut found: Recovery) -> Result<Recovery> {
        let tmp = self.tmp_dir();
        for item in fs::read_dir(&tmp).at(&tmp)? {
            let path = item.at(&tmp)?.path();
            fs::remove_file(&path).at(&path)?;
            found.removed_partial += 1;
        }
        let db = &self.inner.db;
        let queue = self.queue_dir();
        let mut on_disk = std::collections::HashSet::new();
        let mut writes = sled::Batch::default();
        for item in fs::read_dir(&queue).at(&queue)? {
            let path = item.at(&queue)?.path();
            let Some(id) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".msg"))
                .and_then(|n| n.parse::<QueueId>().ok())
            else {
                continue;
            };
            self.bump_last_id(id);
            on_disk.insert(id);
            if db.contains_key(message_key(id))? {
                continue;
            }
            let header = File::open(&path).and_then(|f| {
                let len = f.metadata()?.len();
                FileHeader::decode(f).map(|(h, offset)| (h, len - offset))
            });
            let (header, size) = match header {
                Ok(found) => found,
                Err(e) => {
                    let damaged = queue.join("damaged");
                    tracing::error!(file = %path.display(), error = %e, "not a spool file; moved aside");
                    fs::create_dir_all(&damaged).at(&damaged)?;
                    let to = damaged.join(path.file_name().unwrap_or_default());
                    fs::rename(&path, &to).at(&path)?;
                    on_disk.remove(&id);
                    found.damaged += 1;
                    continue;
                }
            };
            // The 8-bit flag is not in the file: the deliverer looks when it needs to.
            index_message(&mut writes, &header, size, None, &[]);
            found.indexed += 1;
        }
        for item in db.scan_prefix(MESSAGE_PREFIX) {
            let (key, value) = item?;
            let id = id_of_key(&key);
            if !on_disk.contains(&id) {
                writes.remove(key);
                found.dropped += 1;
                continue;
            }
            let mut entry: Entry = decode(&key, &value)?;
            if entry.state == State::Delivering {
                entry.state = State::Queued;
                writes.insert(key, encode(&entry));
                found.requeued += 1;
            }
        }
        db.apply_batch(writes)?;
        db.flush()?;
        if found != Recovery::default() {
            tracing::warn!(?found, "spool recovered from an unclean stop");
        }
        Ok(found)
    }
}

/// The index writes for one message on disk: its entry, the seen mark of its UIDL, and its
/// duplicate marks; used by [`Spool::commit`] and by recovery alike.
fn index_message(
    writes: &mut sled::Batch,
    header: &FileHeader,
    size: u64,
    eight_bit: Option<bool>,
    marks: &[String],
) {
    let entry = Entry {
        eight_bit,
        ..Entry::new(size, header.origin.clone(), header.envelope.clone())
    };
    writes.insert(message_key(header.id), encode(&entry));
    let mark = encode(&UidlMark {
        first_seen: header.origin.arrived,
        size,
    });
    let account = &header.origin.account;
    if let Some(uidl) = &header.origin.uidl {
        writes.insert(uidl_key(UidlSet::Seen, account, uidl), mark.clone());
    }
    for key in marks {
        writes.insert(uidl_key(UidlSet::Duplicate, account, key), mark.clone());
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).at(path)
}

/// Creates a file only its owner can read (mail and its reasons).
pub(crate) fn create_private(path: &Path) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .at(path)
}

fn id_of_key(key: &[u8]) -> QueueId {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&key[MESSAGE_PREFIX.len()..]);
    QueueId(u64::from_be_bytes(bytes))
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("index values always serialize")
}

fn decode<T: for<'de> Deserialize<'de>>(key: &[u8], value: &[u8]) -> Result<T> {
    serde_json::from_slice(value)
        .map_err(|e| SpoolError::BadEntry(String::from_utf8_lossy(key).into_owned(), e))
}
