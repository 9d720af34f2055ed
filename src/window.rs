//! A connect window: bring the link up, wait for the first POP3 server, run the `on_up` hooks,
//! fetch the due accounts within the window's caps, and take the link down whatever happened
//! (an error, a panic in a session, a cap, a shutdown). Every window is recorded in the spool.

use std::sync::Arc;
use std::time::{Duration, Instant};

use spool::{Spool, WindowRecord};
use tokio::process::Command;

use crate::config::{Account, Config, LinkSettings};
use crate::fetch::{self, AccountProgress, Limits, WindowReport};

/// Runs one shell command with a time limit; its output goes to the log.
async fn run_command(what: &str, command: &str, limit: Duration) -> Result<(), String> {
    tracing::info!(what, command, "running");
    let child = Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(limit, child).await {
        Err(_) => Err(format!(
            "{what} command did not finish within {}",
            humantime::format_duration(limit)
        )),
        Ok(Err(e)) => Err(format!("{what} command could not run: {e}")),
        Ok(Ok(out)) if out.status.success() => Ok(()),
        Ok(Ok(out)) => Err(format!(
            "{what} command failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or_default()
        )),
    }
}

/// Waits until `host:port` accepts a TCP connection, trying every second, for at most `limit`.
async fn wait_ready(host: &str, port: u16, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    loop {
        let attempt = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::net::TcpStream::connect((host, port)),
        )
        .await;
        if let Ok(Ok(_)) = attempt {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "the link came up but {host}:{port} did not answer within {}",
                humantime::format_duration(limit)
            ));
        }
        tokio::time::sleep(Duration::from_secs(1).min(deadline - Instant::now())).await;
    }
}

/// Brings the link up (if there is a command for it) and waits for the first account's server.
async fn link_up(link: &LinkSettings, first: &Account) -> Result<(), String> {
    let Some(up) = &link.up else { return Ok(()) };
    run_command("link up", up, link.command_timeout).await?;
    wait_ready(&first.server, first.port, link.ready_timeout).await
}

/// Runs a window for `accounts` and records it. `limits` carries the caps (and the shutdown flag).
pub async fn run(
    config: &Config,
    spool: &Spool,
    accounts: &[Account],
    limits: Arc<Limits>,
) -> (WindowReport, WindowRecord) {
    let started_at = spool::now();
    let started = Instant::now();
    let link = &config.link;
    let mut record = WindowRecord {
        started: started_at,
        ..Default::default()
    };
    let with_progress: Vec<_> = accounts
        .iter()
        .map(|a| (a.clone(), AccountProgress::new(&a.name)))
        .collect();

    let up = match accounts.first() {
        Some(first) => link_up(link, first).await,
        None => Ok(()),
    };
    record.link_up_seconds = started.elapsed().as_secs_f64();
    let report = match up {
        Err(e) => {
            tracing::error!(error = %e, "the link did not come up; no fetch in this window");
            record.errors.push(e);
            WindowReport::default()
        }
        Ok(()) => {
            for hook in &link.on_up {
                if let Err(e) = run_command("on_up", hook, link.command_timeout).await {
                    tracing::warn!(error = %e, "an on_up hook failed; fetching anyway");
                    record.errors.push(e);
                }
            }
            // In a task of its own, so that even a panic comes back here and the link goes down.
            let (config, spool, limits) = (config.clone(), spool.clone(), limits.clone());
            let task = tokio::spawn(async move {
                fetch::run_window_with(&config, &spool, &with_progress, limits).await
            });
            match task.await {
                Ok(report) => report,
                Err(e) => {
                    record.errors.push(format!("the fetch failed: {e}"));
                    WindowReport::default()
                }
            }
        }
    };
    if let Some(down) = &link.down {
        if let Err(e) = run_command("link down", down, link.command_timeout).await {
            tracing::error!(error = %e, "the link may still be up");
            record.errors.push(e);
        }
    }
    record.online_seconds = started.elapsed().as_secs_f64();
    let now = spool::now();
    for account in &report.accounts {
        if let Err(e) = record_result(spool, account, started_at, now) {
            tracing::error!(error = %e, "cannot record the account's result");
        }
        record
            .messages
            .insert(account.account.clone(), account.fetched);
        if let Some(e) = &account.error {
            record.errors.push(format!("{}: {e}", account.account));
        }
        if let Some(why) = account.capped {
            record.capped.get_or_insert_with(|| why.to_string());
        }
    }
    record.bytes_in = report.accounts.iter().map(|a| a.wire_bytes).sum();
    let minutes = record.online_seconds / 60.0;
    let megabytes = record.bytes_in as f64 / 1e6;
    record.cost = match (link.cost_per_minute, link.cost_per_mb) {
        (None, None) => None,
        (per_minute, per_mb) => {
            Some(per_minute.unwrap_or(0.0) * minutes + per_mb.unwrap_or(0.0) * megabytes)
        }
    };
    if let Err(e) = spool.record_window(&record) {
        tracing::error!(error = %e, "cannot record the window");
    }
    tracing::info!(
        messages = report.fetched(),
        bytes = record.bytes_in,
        seconds = format!("{:.1}", record.online_seconds),
        errors = record.errors.len(),
        cost = record.cost.map(|c| format!("{c:.2}")),
        capped = record.capped.as_deref(),
        "window done"
    );
    (report, record)
}

/// Remembers how an account's session went: the last success, the last error, and how many
/// windows in a row its login was refused (for the postmaster's notice).
fn record_result(
    spool: &Spool,
    account: &crate::fetch::AccountReport,
    window_started: u64,
    now: u64,
) -> Result<(), spool::SpoolError> {
    let mut r = spool.account_record(&account.account)?;
    r.last_window = Some(window_started);
    match &account.error {
        None if account.skipped.is_none() => {
            r.last_success = Some(now);
            r.auth_failures = 0;
        }
        None => {}
        Some(e) => {
            r.last_error = Some((now, e.to_string()));
            r.auth_failures = if e.is_auth_failure() {
                r.auth_failures + 1
            } else {
                0
            };
        }
    }
    spool.set_account_record(&account.account, &r)
}
