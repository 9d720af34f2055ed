//! What a person sees of a window: a live line per account on a terminal, and a summary.

use std::io::IsTerminal;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::fetch::{AccountProgress, WindowReport};

/// `1.5 MB`, `830 B`: decimal units, as link speeds and bills use.
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["kB", "MB", "GB", "TB"];
    if bytes < 1000 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1000.0;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// The live display: one line per account, redrawn a few times a second. Draws nothing when
/// standard error is not a terminal (logs and cron mail stay clean).
pub struct LiveDisplay {
    ticker: Option<tokio::task::JoinHandle<()>>,
    stop: Arc<tokio::sync::Notify>,
}

impl LiveDisplay {
    pub fn start(accounts: Vec<Arc<AccountProgress>>) -> LiveDisplay {
        let stop = Arc::new(tokio::sync::Notify::new());
        if !std::io::stderr().is_terminal() {
            return LiveDisplay { ticker: None, stop };
        }
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(5));
        let style =
            ProgressStyle::with_template("{spinner} {prefix:<16} {msg}").expect("static template");
        let width = accounts.iter().map(|a| a.name.len()).max().unwrap_or(8);
        let bars: Vec<_> = accounts
            .iter()
            .map(|a| {
                let bar = multi.add(ProgressBar::new_spinner().with_style(style.clone()));
                bar.set_prefix(format!("{:<width$}", a.name));
                bar
            })
            .collect();
        let started = Instant::now();
        let notified = stop.clone();
        let ticker = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = notified.notified() => break,
                }
                for (bar, account) in bars.iter().zip(&accounts) {
                    bar.set_message(line(account, started.elapsed()));
                    bar.tick();
                }
            }
            for (bar, account) in bars.iter().zip(&accounts) {
                bar.finish_with_message(line(account, started.elapsed()));
            }
        });
        LiveDisplay {
            ticker: Some(ticker),
            stop,
        }
    }

    pub async fn finish(self) {
        if let Some(ticker) = self.ticker {
            self.stop.notify_one();
            let _ = ticker.await;
        }
    }
}

fn line(account: &AccountProgress, elapsed: Duration) -> String {
    let messages = account.messages.load(Ordering::Relaxed);
    let bytes = account.bytes.load(Ordering::Relaxed);
    let planned = account.planned_messages.load(Ordering::Relaxed);
    let planned_bytes = account.planned_bytes.load(Ordering::Relaxed);
    let rate = bytes as f64 / elapsed.as_secs_f64().max(0.001);
    format!(
        "{:<10} {messages}/{planned} messages  {} of {}  {}/s",
        account.phase(),
        format_bytes(bytes),
        format_bytes(planned_bytes),
        format_bytes(rate as u64)
    )
}

/// The summary printed after a window: one line per account, then the totals.
pub fn summary(report: &WindowReport) -> String {
    let mut out = String::new();
    for a in &report.accounts {
        let state = match (&a.error, &a.skipped) {
            (Some(e), _) if e.is_auth_failure() => format!("AUTHENTICATION FAILED: {e}"),
            (Some(e), _) => format!("FAILED: {e}"),
            (None, Some(why)) => format!("skipped: {why}"),
            (None, None) => "ok".to_string(),
        };
        out.push_str(&format!(
            "{}: {} message(s), {} fetched, {} deleted from the server, {:.1}s: {state}\n",
            a.account,
            a.fetched,
            format_bytes(a.bytes),
            a.deleted,
            a.elapsed.as_secs_f64()
        ));
        if a.duplicates + a.fallback + a.loops > 0 {
            out.push_str(&format!(
                "  catch-all: {} duplicate cop(ies) not delivered again, {} to the fallback, {} loop(s) to badmail\n",
                a.duplicates, a.fallback, a.loops
            ));
        }
        for (uidl, size) in &a.oversized {
            out.push_str(&format!(
                "  left on the server, too large: {uidl} ({})\n",
                format_bytes(*size)
            ));
        }
        for e in &a.message_errors {
            out.push_str(&format!("  {e}\n"));
        }
    }
    let errors = report.accounts.iter().filter(|a| a.failed()).count();
    out.push_str(&format!(
        "total: {} message(s), {} in {:.1}s, {errors} account(s) with errors\n",
        report.fetched(),
        format_bytes(report.bytes()),
        report.elapsed.as_secs_f64()
    ));
    out
}

/// The summary printed after a delivery pass.
pub fn delivery_summary(report: &crate::deliver::DeliveryReport) -> String {
    let mut out = format!(
        "delivered: {} message(s) ({} recipient deliveries), {} to badmail, {} deferred, {:.1}s\n",
        report.delivered,
        report.recipients,
        report.badmail,
        report.deferred,
        report.elapsed.as_secs_f64()
    );
    if let Some(why) = &report.outage {
        out.push_str(&format!(
            "the local server could not be reached, the queue waits: {why}\n"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::format_bytes;

    #[test]
    fn bytes() {
        assert_eq!(format_bytes(830), "830 B");
        assert_eq!(format_bytes(1_500_000), "1.5 MB");
        assert_eq!(format_bytes(104_857_600), "104.9 MB");
    }
}
