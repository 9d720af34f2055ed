//! The control channel: what `spoolctl` asks, executed in one place whether `spoolctl` opened the
//! spool itself or asked the running daemon over its Unix socket, so the output is the same.
//!
//! Socket protocol (`SPOOL/control.sock`, mode 0600): the client writes one JSON line, a [`Call`];
//! the server answers with frames, `D <n>\n` followed by `n` bytes of standard output (so that
//! `show --body` of a large message streams), and finally `E <exit code> <JSON string>\n` with
//! what goes to standard error.

use std::io::{self, BufRead, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use spool::Spool;

use crate::admin::{self, MessageRow, Status};
use crate::config::Config;
use crate::progress::format_bytes;

/// One `spoolctl` command.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    List {
        state: Option<String>,
    },
    Show {
        id: String,
        body: bool,
    },
    Requeue {
        ids: Vec<String>,
        all: bool,
        state: Option<String>,
    },
    Hold {
        id: String,
    },
    Release {
        id: String,
    },
    /// Confirmation is the client's business; this one deletes.
    Delete {
        id: String,
    },
    Fetch {
        account: Option<String>,
    },
    Status,
    Windows {
        last: usize,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Call {
    pub request: Request,
    /// Machine-readable output.
    pub json: bool,
}

/// Runs a window for `spoolctl fetch` and returns its printed summary and whether it failed.
pub type FetchFn<'a> = &'a dyn Fn(Option<String>) -> Result<(String, bool), String>;

/// Executes `call` on `spool`, writing what `spoolctl` prints to `out`. Returns the exit code; an
/// error's text goes to standard error.
pub fn execute(
    call: &Call,
    config: &Config,
    spool: &Spool,
    out: &mut dyn Write,
    fetch: FetchFn,
) -> Result<i32, String> {
    execute_inner(call, config, spool, out, fetch).map_err(|e| format!("{e:#}"))
}

fn execute_inner(
    call: &Call,
    config: &Config,
    spool: &Spool,
    out: &mut dyn Write,
    fetch: FetchFn,
) -> anyhow::Result<i32> {
    let json = call.json;
    match &call.request {
        Request::List { state } => write_rows(out, &admin::list(spool, state.as_deref())?, json)?,
        Request::Show { id, body } => {
            let (row, path) = admin::find(spool, id)?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&row)?)?;
            } else {
                write_row_long(out, &row, &path)?;
                let catch_all = config
                    .accounts
                    .iter()
                    .find(|a| a.name == row.account)
                    .and_then(|a| a.routing.as_ref());
                if let Some(catch_all) = catch_all {
                    let decision = catch_all
                        .rules
                        .route(&admin::head(spool, id)?, &row.account);
                    writeln!(out, "routing (by the current rules):")?;
                    for line in decision.explain().lines() {
                        writeln!(out, "  {line}")?;
                    }
                }
            }
            if *body {
                writeln!(out)?;
                admin::copy_body(spool, id, out)?;
            }
        }
        Request::Requeue { ids, all, state } => {
            let ids = if *all {
                admin::list(spool, state.as_deref())?
                    .into_iter()
                    .filter(|r| r.state != "delivering")
                    .map(|r| r.id)
                    .collect()
            } else {
                anyhow::ensure!(!ids.is_empty(), "name a message, or give --all");
                ids.clone()
            };
            for id in admin::requeue(spool, &ids)? {
                writeln!(out, "{id}: requeued")?;
            }
        }
        Request::Hold { id } => {
            admin::hold(spool, id)?;
            writeln!(out, "{id}: held")?;
        }
        Request::Release { id } => {
            admin::release(spool, id)?;
            writeln!(out, "{id}: released")?;
        }
        Request::Delete { id } => {
            let (row, _) = admin::find(spool, id)?;
            admin::delete(spool, id)?;
            let what = if row.state == "badmail" {
                "removed"
            } else {
                "deleted (a copy is kept in badmail/)"
            };
            writeln!(out, "{}: {what}", row.id)?;
        }
        Request::Fetch { account } => {
            if let Some(name) = account {
                anyhow::ensure!(
                    config.accounts.iter().any(|a| &a.name == name),
                    "no account named {name:?}"
                );
            }
            let (summary, failed) = fetch(account.clone()).map_err(anyhow::Error::msg)?;
            out.write_all(summary.as_bytes())?;
            return Ok(i32::from(failed));
        }
        Request::Status => {
            let status = admin::status(config, spool)?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&status)?)?;
            } else {
                write_status(out, &status)?;
            }
        }
        Request::Windows { last } => {
            let windows = admin::windows(spool, *last)?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&windows)?)?;
            } else {
                writeln!(
                    out,
                    "{:<19}  {:>8}  {:>9}  {:>6}  {:>8}  errors",
                    "started", "online", "bytes in", "mails", "cost"
                )?;
                for w in &windows {
                    let cost = w
                        .cost
                        .map(|c| format!("{c:.2}"))
                        .unwrap_or_else(|| "-".into());
                    let capped = w
                        .capped
                        .as_deref()
                        .map(|c| format!(" (stopped early: {c})"))
                        .unwrap_or_default();
                    let mails: u64 = w.messages.values().sum();
                    writeln!(
                        out,
                        "{:<19}  {:>7.1}s  {:>9}  {mails:>6}  {cost:>8}  {}{capped}",
                        when(w.started),
                        w.online_seconds,
                        format_bytes(w.bytes_in),
                        w.errors.len()
                    )?;
                }
            }
        }
    }
    Ok(0)
}

pub fn or_null(sender: &str) -> &str {
    if sender.is_empty() {
        "<>"
    } else {
        sender
    }
}

fn when(secs: u64) -> String {
    crate::schedule::local_time(secs)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

fn age(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

fn write_rows(out: &mut dyn Write, rows: &[MessageRow], json: bool) -> io::Result<()> {
    if json {
        return writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(rows).map_err(io::Error::other)?
        );
    }
    writeln!(
        out,
        "{:<16}  {:>5}  {:<10}  {:<8}  {:>8}  {:<26}  {:<26}  subject",
        "id", "age", "account", "state", "size", "sender", "recipients"
    )?;
    for r in rows {
        writeln!(
            out,
            "{:<16}  {:>5}  {:<10}  {:<8}  {:>8}  {:<26}  {:<26}  {}",
            r.id,
            age(r.age_seconds),
            r.account,
            r.state,
            format_bytes(r.size),
            or_null(&r.sender),
            r.recipients.join(","),
            r.subject
        )?;
        if r.attempts > 0 || r.last_error.is_some() {
            let next = if r.next_try > 0 && r.state == "deferred" {
                format!(", next try {}", when(r.next_try))
            } else {
                String::new()
            };
            writeln!(
                out,
                "{:18}{} attempt(s){next}: {}",
                "",
                r.attempts,
                r.last_error.as_deref().unwrap_or("-")
            )?;
        }
    }
    writeln!(
        out,
        "{} message(s), {}",
        rows.len(),
        format_bytes(rows.iter().map(|r| r.size).sum())
    )
}

fn write_row_long(out: &mut dyn Write, r: &MessageRow, path: &Path) -> io::Result<()> {
    writeln!(out, "id:          {}", r.id)?;
    writeln!(out, "state:       {}", r.state)?;
    writeln!(out, "file:        {}", path.display())?;
    writeln!(out, "account:     {}", r.account)?;
    writeln!(out, "age:         {}", age(r.age_seconds))?;
    writeln!(out, "sender:      {}", or_null(&r.sender))?;
    writeln!(out, "recipients:  {}", r.recipients.join(", "))?;
    writeln!(out, "size:        {}", format_bytes(r.size))?;
    writeln!(out, "subject:     {}", r.subject)?;
    writeln!(out, "attempts:    {}", r.attempts)?;
    if r.next_try > 0 {
        writeln!(out, "next try:    {}", when(r.next_try))?;
    }
    if let Some(e) = &r.last_error {
        writeln!(out, "last error:  {e}")?;
    }
    Ok(())
}

fn write_status(out: &mut dyn Write, status: &Status) -> io::Result<()> {
    for a in &status.accounts {
        writeln!(out, "{}:", a.name)?;
        if a.auth_failures > 0 {
            writeln!(
                out,
                "  !! AUTHENTICATION FAILING for {} window(s) in a row: check the password",
                a.auth_failures
            )?;
        }
        let never = || "never".to_string();
        writeln!(
            out,
            "  last window:   {}",
            a.last_window.map(when).unwrap_or_else(never)
        )?;
        writeln!(
            out,
            "  last success:  {}",
            a.last_success.map(when).unwrap_or_else(never)
        )?;
        if let Some((at, e)) = &a.last_error {
            writeln!(out, "  last error:    {} {e}", when(*at))?;
        }
        for (uidl, size) in &a.oversized {
            writeln!(
                out,
                "  too large, waiting on the server: {uidl} ({})",
                format_bytes(*size)
            )?;
        }
        let next = a
            .next_window
            .map(|t| when(t.max(0) as u64))
            .unwrap_or_else(|| "none scheduled (spoolctl fetch)".into());
        writeln!(out, "  next window:   {next}")?;
    }
    let counts: Vec<String> = status
        .queue
        .iter()
        .map(|(state, n)| format!("{n} {state}"))
        .collect();
    writeln!(
        out,
        "queue: {}",
        if counts.is_empty() {
            "empty".to_string()
        } else {
            counts.join(", ")
        }
    )?;
    if let Some(limit) = status.local_size_limit {
        writeln!(
            out,
            "local server accepts messages up to {}",
            format_bytes(limit)
        )?;
    }
    Ok(())
}

/// The control socket of a spool.
pub fn socket_path(spool_dir: &Path) -> PathBuf {
    spool_dir.join("control.sock")
}

/// Standard output as frames on the socket.
struct Frames<W: Write>(W);

impl<W: Write> Write for Frames<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !buf.is_empty() {
            writeln!(self.0, "D {}", buf.len())?;
            self.0.write_all(buf)?;
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// Longest request line accepted on the socket.
const MAX_REQUEST: u64 = 64 * 1024;

/// Serves one connection (blocking; run it on a blocking thread).
pub fn serve_connection(
    stream: std::os::unix::net::UnixStream,
    config: &Config,
    spool: &Spool,
    fetch: FetchFn,
) -> io::Result<()> {
    stream.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
    let mut line = String::new();
    io::BufReader::new((&stream).take(MAX_REQUEST)).read_line(&mut line)?;
    let mut writer = io::BufWriter::new(&stream);
    let (code, stderr) = match serde_json::from_str::<Call>(&line) {
        Ok(call) => match execute(&call, config, spool, &mut Frames(&mut writer), fetch) {
            Ok(code) => (code, String::new()),
            Err(e) => (1, e),
        },
        Err(e) => (2, format!("bad request: {e}")),
    };
    writeln!(
        writer,
        "E {code} {}",
        serde_json::to_string(&stderr).unwrap_or_default()
    )?;
    writer.flush()
}

/// Sends `call` to the daemon and copies its answer to `out`; returns the exit code and the text
/// for standard error.
pub fn call_daemon(
    spool_dir: &Path,
    call: &Call,
    out: &mut dyn Write,
) -> io::Result<(i32, String)> {
    let stream = std::os::unix::net::UnixStream::connect(socket_path(spool_dir))?;
    let mut request = serde_json::to_string(call).map_err(io::Error::other)?;
    request.push('\n');
    (&stream).write_all(request.as_bytes())?;
    let mut reader = io::BufReader::new(&stream);
    let mut header = String::new();
    loop {
        header.clear();
        if reader.by_ref().take(4096).read_line(&mut header)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the daemon closed the connection",
            ));
        }
        let (kind, rest) = header
            .trim_end()
            .split_once(' ')
            .unwrap_or((header.trim_end(), ""));
        match kind {
            "D" => {
                let n: u64 = rest
                    .parse()
                    .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad frame"))?;
                io::copy(&mut reader.by_ref().take(n), out)?;
            }
            "E" => {
                let (code, text) = rest.split_once(' ').unwrap_or((rest, "\"\""));
                let code = code.parse().unwrap_or(1);
                let text: String = serde_json::from_str(text).unwrap_or_default();
                return Ok((code, text));
            }
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("bad frame {header:?}"),
                ))
            }
        }
    }
}
