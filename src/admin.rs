//! Seeing and steering the queue, for `spoolctl`: each operation returns data (serializable, for
//! `--json`), and the binary renders it. The same functions serve a spool opened directly and,
//! later, the daemon's control socket, so the output is the same either way.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;

use serde::Serialize;
use spool::{BadmailReason, Entry, QueueId, Spool, SpoolError, State, UidlSet, WindowRecord};

use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error("no message {0} in the queue or in badmail")]
    NotFound(String),
    #[error("message {id} is {state}; only {wanted} messages can be {action}")]
    WrongState {
        id: String,
        state: String,
        wanted: &'static str,
        action: &'static str,
    },
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
}

/// One line of `spoolctl list`.
#[derive(Debug, Clone, Serialize)]
pub struct MessageRow {
    pub id: String,
    /// queued, deferred, held, delivering, or badmail.
    pub state: String,
    pub age_seconds: u64,
    pub account: String,
    /// Empty for the null sender.
    pub sender: String,
    pub recipients: Vec<String>,
    pub size: u64,
    pub subject: String,
    pub attempts: u32,
    /// Seconds since the epoch; 0 when due now.
    pub next_try: u64,
    /// The last error, or for badmail the reason.
    pub last_error: Option<String>,
}

fn state_name(state: State) -> &'static str {
    match state {
        State::Queued => "queued",
        State::Deferred => "deferred",
        State::Held => "held",
        State::Delivering => "delivering",
    }
}

/// The Subject of a message, from its first bytes.
fn subject_of(head: &[u8]) -> String {
    mail_parser::MessageParser::new()
        .parse_headers(head)
        .and_then(|m| m.subject().map(str::to_string))
        .unwrap_or_default()
}

fn read_head(reader: impl Read) -> Vec<u8> {
    let mut head = Vec::new();
    let _ = reader
        .take(spool::HEADER_PREREAD as u64)
        .read_to_end(&mut head);
    head
}

/// A `Name: value` line of a badmail `.reason` file.
fn reason_field(text: &str, name: &str) -> Option<String> {
    text.lines().find_map(|l| {
        l.strip_prefix(name)
            .and_then(|v| v.strip_prefix(": "))
            .map(str::to_string)
    })
}

/// The row of one badmail file.
fn badmail_row(path: &std::path::Path, now: u64) -> MessageRow {
    let id = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_string();
    let reason = std::fs::read_to_string(path.with_extension("reason")).unwrap_or_default();
    let head = std::fs::File::open(path).map(read_head).unwrap_or_default();
    let replay = |name: &str| -> Vec<String> {
        String::from_utf8_lossy(&head)
            .lines()
            .take_while(|l| l.starts_with("X-"))
            .filter_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
            .collect()
    };
    let time: u64 = reason_field(&reason, "Time")
        .and_then(|t| t.parse().ok())
        .unwrap_or(now);
    MessageRow {
        id,
        state: "badmail".into(),
        age_seconds: now.saturating_sub(time),
        account: reason_field(&reason, "Account").unwrap_or_default(),
        sender: replay("X-Sender:").into_iter().next().unwrap_or_default(),
        recipients: replay("X-Receiver:"),
        size: std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
        subject: subject_of(&head),
        attempts: reason_field(&reason, "Attempts")
            .and_then(|a| a.parse().ok())
            .unwrap_or(0),
        next_try: 0,
        last_error: reason_field(&reason, "Reply"),
    }
}

/// The row of one queued message.
fn queue_row(spool: &Spool, id: QueueId, e: Entry, now: u64) -> MessageRow {
    let head = spool
        .open_message(id)
        .map(|(_, f)| read_head(f))
        .unwrap_or_default();
    MessageRow {
        id: id.to_string(),
        state: state_name(e.state).into(),
        age_seconds: now.saturating_sub(e.origin.arrived),
        account: e.origin.account,
        sender: e.envelope.sender,
        recipients: e.envelope.recipients,
        size: e.size,
        subject: subject_of(&head),
        attempts: e.attempts,
        next_try: e.next_try,
        last_error: e.last_error,
    }
}

/// Every queued message (oldest first) and every badmail file, optionally of one state only.
pub fn list(spool: &Spool, state: Option<&str>) -> Result<Vec<MessageRow>, AdminError> {
    let now = spool::now();
    let mut rows: Vec<MessageRow> = spool
        .list()?
        .into_iter()
        .map(|(id, e)| queue_row(spool, id, e, now))
        .collect();
    let dir = spool.badmail_dir();
    let mut badmail: Vec<MessageRow> = std::fs::read_dir(&dir)
        .map_err(|e| AdminError::Io(dir.clone(), e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "eml"))
        .map(|p| badmail_row(&p, now))
        .collect();
    badmail.sort_by(|a, b| a.id.cmp(&b.id));
    rows.extend(badmail);
    if let Some(state) = state {
        rows.retain(|r| r.state == state);
    }
    Ok(rows)
}

/// One message, found in the queue or in badmail, with the path of its file. Reads only that
/// message, however long the queue.
pub fn find(spool: &Spool, id: &str) -> Result<(MessageRow, PathBuf), AdminError> {
    let now = spool::now();
    if let Ok(queue_id) = id.parse::<QueueId>() {
        match spool.entry(queue_id) {
            Ok(entry) => {
                return Ok((
                    queue_row(spool, queue_id, entry, now),
                    spool.message_path(queue_id),
                ))
            }
            Err(SpoolError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let file = std::path::Path::new(id)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let path = spool.badmail_dir().join(format!("{file}.eml"));
    if file.is_empty() || !path.is_file() {
        return Err(AdminError::NotFound(id.into()));
    }
    Ok((badmail_row(&path, now), path))
}

fn queue_id(id: &str) -> Result<QueueId, AdminError> {
    id.parse().map_err(|_| AdminError::NotFound(id.into()))
}

/// The start of a message (its header section, as far as [`spool::HEADER_PREREAD`] goes).
pub fn head(spool: &Spool, id: &str) -> Result<Vec<u8>, AdminError> {
    let (row, path) = find(spool, id)?;
    Ok(if row.state == "badmail" {
        std::fs::File::open(&path)
            .map(read_head)
            .map_err(|e| AdminError::Io(path, e))?
    } else {
        read_head(spool.open_message(queue_id(&row.id)?)?.1)
    })
}

/// The message's bytes as received (without the spool's header block), streamed into `out`.
pub fn copy_body(spool: &Spool, id: &str, out: &mut dyn std::io::Write) -> Result<(), AdminError> {
    let (row, path) = find(spool, id)?;
    let io = |e| AdminError::Io(path.clone(), e);
    if row.state == "badmail" {
        std::io::copy(&mut std::fs::File::open(&path).map_err(io)?, out).map_err(io)?;
    } else {
        let (_, mut file) = spool.open_message(queue_id(&row.id)?)?;
        std::io::copy(&mut file, out).map_err(io)?;
    }
    Ok(())
}

/// Makes deferred and held messages due now; moves badmail files to pickup/ to be replayed.
/// Returns the ids it changed.
pub fn requeue(spool: &Spool, ids: &[String]) -> Result<Vec<String>, AdminError> {
    let mut done = Vec::new();
    for id in ids {
        let (row, path) = find(spool, id)?;
        match row.state.as_str() {
            "badmail" => {
                let to = spool.pickup_dir().join(format!("{}.eml", row.id));
                std::fs::rename(&path, &to).map_err(|e| AdminError::Io(path.clone(), e))?;
                let _ = std::fs::remove_file(path.with_extension("reason"));
            }
            "deferred" | "held" | "queued" => {
                spool.update(queue_id(&row.id)?, |e| {
                    e.state = State::Queued;
                    e.next_try = 0;
                })?;
            }
            other => {
                return Err(AdminError::WrongState {
                    id: row.id,
                    state: other.into(),
                    wanted: "deferred, held or badmail",
                    action: "requeued",
                })
            }
        }
        done.push(row.id);
    }
    Ok(done)
}

/// Stops a message from being delivered until it is released.
pub fn hold(spool: &Spool, id: &str) -> Result<(), AdminError> {
    let (row, _) = find(spool, id)?;
    if !matches!(row.state.as_str(), "queued" | "deferred") {
        return Err(AdminError::WrongState {
            id: row.id,
            state: row.state,
            wanted: "queued or deferred",
            action: "held",
        });
    }
    spool.set_state(queue_id(&row.id)?, State::Held)?;
    Ok(())
}

/// Lets a held message be delivered again (now).
pub fn release(spool: &Spool, id: &str) -> Result<(), AdminError> {
    let (row, _) = find(spool, id)?;
    if row.state != "held" {
        return Err(AdminError::WrongState {
            id: row.id,
            state: row.state,
            wanted: "held",
            action: "released",
        });
    }
    spool.update(queue_id(&row.id)?, |e| {
        e.state = State::Queued;
        e.next_try = 0;
    })?;
    Ok(())
}

/// Takes a message out of the queue. It is not destroyed: it goes to badmail with the reason
/// "deleted by the administrator", where it can be read, replayed, or removed for good. A badmail
/// file is removed for good.
pub fn delete(spool: &Spool, id: &str) -> Result<(), AdminError> {
    let (row, path) = find(spool, id)?;
    if row.state == "badmail" {
        std::fs::remove_file(&path).map_err(|e| AdminError::Io(path.clone(), e))?;
        let _ = std::fs::remove_file(path.with_extension("reason"));
        return Ok(());
    }
    let reason = BadmailReason {
        reply: "deleted by the administrator".into(),
        attempts: row.attempts,
    };
    spool.to_badmail(queue_id(&row.id)?, &row.recipients, &reason, true)?;
    Ok(())
}

/// One account in `spoolctl status`.
#[derive(Debug, Clone, Serialize)]
pub struct AccountStatus {
    pub name: String,
    pub last_window: Option<u64>,
    pub last_success: Option<u64>,
    pub last_error: Option<(u64, String)>,
    /// Windows in a row whose login was refused.
    pub auth_failures: u32,
    /// Messages left on the server for their size: (UIDL, bytes).
    pub oversized: Vec<(String, u64)>,
    /// The next scheduled window, seconds since the epoch.
    pub next_window: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub accounts: Vec<AccountStatus>,
    /// Messages per state, badmail included.
    pub queue: BTreeMap<String, usize>,
    pub local_size_limit: Option<u64>,
}

pub fn status(config: &Config, spool: &Spool) -> Result<Status, AdminError> {
    let now = chrono::Local::now();
    let mut accounts = Vec::new();
    for account in &config.accounts {
        let record = spool.account_record(&account.name)?;
        let mut oversized: Vec<(String, u64)> = spool
            .uidls(UidlSet::Oversized, &account.name)?
            .into_iter()
            .map(|(u, m)| (u, m.size))
            .collect();
        oversized.sort();
        let last = record.last_window.map(crate::schedule::local_time);
        let next_window = account
            .effective_schedule(&config.schedule)
            .next_window(now, last)
            .map(|t| t.timestamp());
        accounts.push(AccountStatus {
            name: account.name.clone(),
            last_window: record.last_window,
            last_success: record.last_success,
            last_error: record.last_error,
            auth_failures: record.auth_failures,
            oversized,
            next_window,
        });
    }
    let mut queue = BTreeMap::new();
    for row in list(spool, None)? {
        *queue.entry(row.state).or_insert(0) += 1;
    }
    Ok(Status {
        accounts,
        queue,
        local_size_limit: spool.local_size_limit()?,
    })
}

/// The last `n` windows.
pub fn windows(spool: &Spool, n: usize) -> Result<Vec<WindowRecord>, AdminError> {
    Ok(spool.windows(n)?)
}
