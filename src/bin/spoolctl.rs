//! `spoolctl`: see and steer outpost's queue, in the manner of Postfix's postqueue/postsuper.
//!
//! It opens the spool itself, taking the spool's lock, so it works while no daemon runs. While
//! `outpost run` owns the spool it says so and stops: the daemon's control socket is not built yet.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use outpost::admin::{self, MessageRow};
use outpost::cli;
use outpost::config::Config;
use outpost::progress::format_bytes;
use spool::{Spool, SpoolError};

#[derive(Parser)]
#[command(version, about = "See and steer outpost's mail queue")]
struct Args {
    #[command(flatten)]
    config: cli::ConfigArg,
    /// Machine-readable output (for list, show, status, windows).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the queued messages (oldest first) and the badmail files.
    List {
        /// Only this state: queued, deferred, held, delivering or badmail.
        #[arg(long)]
        state: Option<String>,
    },
    /// Show one message's envelope and state, and with --body the message itself.
    Show {
        id: String,
        #[arg(long)]
        body: bool,
    },
    /// Make deferred or held messages due now; put badmail files back into pickup/ to replay them.
    Requeue {
        ids: Vec<String>,
        /// Every message (of --state, if given).
        #[arg(long)]
        all: bool,
        #[arg(long)]
        state: Option<String>,
    },
    /// Stop a message from being delivered.
    Hold { id: String },
    /// Let a held message go.
    Release { id: String },
    /// Take a message out of the queue (it is kept in badmail); remove a badmail file for good.
    Delete {
        id: String,
        /// Do not ask.
        #[arg(long)]
        yes: bool,
    },
    /// Run a connect window now (the SBS "Retrieve now") and print its summary.
    Fetch {
        #[arg(long)]
        account: Option<String>,
    },
    /// Accounts (last success, last error, oversized messages waiting, next window) and the queue.
    Status,
    /// The window history: bytes, seconds, cost.
    Windows {
        #[arg(long, default_value_t = 10)]
        last: usize,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("spoolctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.config.config)?;
    let spool = match Spool::open(&config.spool_dir) {
        Ok(spool) => spool,
        Err(SpoolError::Locked(dir)) => anyhow::bail!(
            "the spool {} is in use by another process (is `outpost run` running?); spoolctl cannot talk to a running daemon yet",
            dir.display()
        ),
        Err(e) => return Err(e).context(format!("opening the spool in {}", config.spool_dir.display())),
    };
    let json = args.json;
    match args.command {
        Command::List { state } => print_rows(&admin::list(&spool, state.as_deref())?, json)?,
        Command::Show { id, body } => {
            let (row, path) = admin::find(&spool, &id)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&row)?);
            } else {
                print_row_long(&row, &path);
            }
            if body {
                let stdout = std::io::stdout();
                let mut out = stdout.lock();
                writeln!(out)?;
                admin::copy_body(&spool, &id, &mut out)?;
            }
        }
        Command::Requeue { ids, all, state } => {
            let ids = if all {
                admin::list(&spool, state.as_deref())?
                    .into_iter()
                    .filter(|r| r.state != "delivering")
                    .map(|r| r.id)
                    .collect()
            } else {
                anyhow::ensure!(!ids.is_empty(), "name a message, or give --all");
                ids
            };
            for id in admin::requeue(&spool, &ids)? {
                println!("{id}: requeued");
            }
        }
        Command::Hold { id } => {
            admin::hold(&spool, &id)?;
            println!("{id}: held");
        }
        Command::Release { id } => {
            admin::release(&spool, &id)?;
            println!("{id}: released");
        }
        Command::Delete { id, yes } => {
            let (row, _) = admin::find(&spool, &id)?;
            if !yes {
                eprint!(
                    "delete {} ({}, from {}, subject {:?})? [y/N] ",
                    row.id,
                    row.state,
                    or_null(&row.sender),
                    row.subject
                );
                let mut answer = String::new();
                std::io::stdin().read_line(&mut answer)?;
                if !matches!(answer.trim(), "y" | "Y" | "yes") {
                    println!("not deleted");
                    return Ok(ExitCode::FAILURE);
                }
            }
            admin::delete(&spool, &id)?;
            println!(
                "{}: {}",
                row.id,
                if row.state == "badmail" {
                    "removed"
                } else {
                    "deleted (a copy is kept in badmail/)"
                }
            );
        }
        Command::Fetch { account } => {
            let accounts: Vec<_> = config
                .accounts
                .iter()
                .filter(|a| account.as_deref().is_none_or(|n| a.name == n))
                .cloned()
                .collect();
            anyhow::ensure!(
                !accounts.is_empty(),
                "no account named {:?}",
                account.unwrap_or_default()
            );
            let runtime = tokio::runtime::Runtime::new()?;
            let limits = Arc::new(outpost::fetch::Limits::new(
                config.window.max_duration,
                config.window.max_bytes,
            ));
            let (report, _) =
                runtime.block_on(outpost::window::run(&config, &spool, &accounts, limits));
            print!("{}", outpost::progress::summary(&report));
            if report.failed() {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Status => {
            let status = admin::status(&config, &spool)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print_status(&status);
            }
        }
        Command::Windows { last } => {
            let windows = admin::windows(&spool, last)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&windows)?);
            } else {
                println!(
                    "{:<19}  {:>8}  {:>9}  {:>6}  {:>8}  errors",
                    "started", "online", "bytes in", "mails", "cost"
                );
                for w in &windows {
                    println!(
                        "{:<19}  {:>7.1}s  {:>9}  {:>6}  {:>8}  {}{}",
                        when(w.started),
                        w.online_seconds,
                        format_bytes(w.bytes_in),
                        w.messages.values().sum::<u64>(),
                        w.cost
                            .map(|c| format!("{c:.2}"))
                            .unwrap_or_else(|| "-".into()),
                        w.errors.len(),
                        w.capped
                            .as_deref()
                            .map(|c| format!(" (stopped early: {c})"))
                            .unwrap_or_default()
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn or_null(sender: &str) -> &str {
    if sender.is_empty() {
        "<>"
    } else {
        sender
    }
}

fn when(secs: u64) -> String {
    outpost::schedule::local_time(secs)
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

fn print_rows(rows: &[MessageRow], json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(rows)?);
        return Ok(());
    }
    println!(
        "{:<16}  {:>5}  {:<10}  {:<8}  {:>8}  {:<26}  {:<26}  subject",
        "id", "age", "account", "state", "size", "sender", "recipients"
    );
    for r in rows {
        println!(
            "{:<16}  {:>5}  {:<10}  {:<8}  {:>8}  {:<26}  {:<26}  {}",
            r.id,
            age(r.age_seconds),
            r.account,
            r.state,
            format_bytes(r.size),
            or_null(&r.sender),
            r.recipients.join(","),
            r.subject
        );
        if r.attempts > 0 || r.last_error.is_some() {
            let next = if r.next_try > 0 && r.state == "deferred" {
                format!(", next try {}", when(r.next_try))
            } else {
                String::new()
            };
            println!(
                "{:18}{} attempt(s){next}: {}",
                "",
                r.attempts,
                r.last_error.as_deref().unwrap_or("-")
            );
        }
    }
    println!(
        "{} message(s), {}",
        rows.len(),
        format_bytes(rows.iter().map(|r| r.size).sum())
    );
    Ok(())
}

fn print_row_long(r: &MessageRow, path: &std::path::Path) {
    println!("id:          {}", r.id);
    println!("state:       {}", r.state);
    println!("file:        {}", path.display());
    println!("account:     {}", r.account);
    println!("age:         {}", age(r.age_seconds));
    println!("sender:      {}", or_null(&r.sender));
    println!("recipients:  {}", r.recipients.join(", "));
    println!("size:        {}", format_bytes(r.size));
    println!("subject:     {}", r.subject);
    println!("attempts:    {}", r.attempts);
    if r.next_try > 0 {
        println!("next try:    {}", when(r.next_try));
    }
    if let Some(e) = &r.last_error {
        println!("last error:  {e}");
    }
}

fn print_status(status: &admin::Status) {
    for a in &status.accounts {
        println!("{}:", a.name);
        if a.auth_failures > 0 {
            println!(
                "  !! AUTHENTICATION FAILING for {} window(s) in a row: check the password",
                a.auth_failures
            );
        }
        println!(
            "  last window:   {}",
            a.last_window.map(when).unwrap_or_else(|| "never".into())
        );
        println!(
            "  last success:  {}",
            a.last_success.map(when).unwrap_or_else(|| "never".into())
        );
        if let Some((at, e)) = &a.last_error {
            println!("  last error:    {} {e}", when(*at));
        }
        for (uidl, size) in &a.oversized {
            println!(
                "  too large, waiting on the server: {uidl} ({})",
                format_bytes(*size)
            );
        }
        println!(
            "  next window:   {}",
            a.next_window
                .map(|t| when(t.max(0) as u64))
                .unwrap_or_else(|| "none scheduled (spoolctl fetch)".into())
        );
    }
    let counts: Vec<String> = status
        .queue
        .iter()
        .map(|(state, n)| format!("{n} {state}"))
        .collect();
    println!(
        "queue: {}",
        if counts.is_empty() {
            "empty".to_string()
        } else {
            counts.join(", ")
        }
    );
    if let Some(limit) = status.local_size_limit {
        println!(
            "local server accepts messages up to {}",
            format_bytes(limit)
        );
    }
}
