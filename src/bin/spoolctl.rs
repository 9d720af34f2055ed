//! `spoolctl`: see the spool. Works on the spool directly (it takes the spool's lock, so it
//! refuses while another process owns it); the daemon's control socket comes with `outpost run`.

use std::io::Read;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use outpost::cli;
use outpost::config::Config;
use outpost::progress::format_bytes;
use spool::{QueueId, Spool};

#[derive(Parser)]
#[command(version, about = "See and steer outpost's mail queue")]
struct Args {
    #[command(flatten)]
    config: cli::ConfigArg,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the queued messages, oldest first.
    List {
        /// One JSON object per message, as a JSON array.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("spoolctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let config = Config::load(&args.config.config)?;
    let spool = Spool::open(&config.spool_dir)
        .with_context(|| format!("opening the spool in {}", config.spool_dir.display()))?;
    match args.command {
        Command::List { json } => list(&spool, json),
    }
}

/// The Subject of a queued message, read from its first bytes.
fn subject(spool: &Spool, id: QueueId) -> String {
    let Ok((_, file)) = spool.open_message(id) else {
        return String::new();
    };
    let mut head = Vec::new();
    let _ = file
        .take(spool::HEADER_PREREAD as u64)
        .read_to_end(&mut head);
    mail_parser::MessageParser::new()
        .parse_headers(&head)
        .and_then(|m| m.subject().map(str::to_string))
        .unwrap_or_default()
}

fn list(spool: &Spool, json: bool) -> anyhow::Result<()> {
    let now = spool::now();
    let entries = spool.list()?;
    if json {
        let rows: Vec<serde_json::Value> = entries
            .iter()
            .map(|(id, e)| {
                serde_json::json!({
                    "id": id.to_string(), "state": e.state, "arrived": e.origin.arrived, "account": e.origin.account,
                    "sender": e.envelope.sender, "recipients": e.envelope.recipients, "size": e.size,
                    "subject": subject(spool, *id), "attempts": e.attempts, "next_try": e.next_try, "last_error": e.last_error,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{:<16}  {:>6}  {:<10}  {:<9}  {:>8}  {:<28}  {:<28}  subject",
        "id", "age", "account", "state", "size", "sender", "recipients"
    );
    for (id, e) in &entries {
        let age = humantime::format_duration(std::time::Duration::from_secs(
            now.saturating_sub(e.origin.arrived) / 60 * 60,
        ));
        let sender = if e.envelope.sender.is_empty() {
            "<>"
        } else {
            &e.envelope.sender
        };
        println!(
            "{id}  {:>6}  {:<10}  {:<9}  {:>8}  {:<28}  {:<28}  {}",
            if age.to_string().is_empty() {
                "0m".to_string()
            } else {
                age.to_string()
            },
            e.origin.account,
            format!("{:?}", e.state).to_lowercase(),
            format_bytes(e.size),
            sender,
            e.envelope.recipients.join(","),
            subject(spool, *id)
        );
    }
    println!(
        "{} message(s), {}",
        entries.len(),
        format_bytes(entries.iter().map(|(_, e)| e.size).sum())
    );
    Ok(())
}
