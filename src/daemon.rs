//! `outpost run`: the service a site leaves running for months.
//!
//! Three loops share the spool: the deliverer (always, link up or down), the pickup watcher, and
//! the scheduler that runs connect windows. A shutdown stops them at safe points: the deliverer
//! finishes the message in hand, a window starts no new message, QUITs every session (so its
//! deletions count) and takes the link down. SIGHUP reloads the configuration; a new one with
//! errors is reported and the old one kept.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::Local;
use spool::Spool;
use tokio::sync::Notify;

use crate::config::{Account, Config};
use crate::fetch::Limits;
use crate::schedule::local_time;

/// How often the pickup folder is rescanned.
const PICKUP_EVERY: Duration = Duration::from_secs(5);
/// The longest the deliverer sleeps when nothing is due (a safety net; new mail wakes it).
const DELIVER_IDLE: Duration = Duration::from_secs(60);
/// After an outage of the local server, the next try.
const OUTAGE_RETRY: Duration = Duration::from_secs(30);
/// How long a shutdown may take before the process exits anyway.
pub const SHUTDOWN_LIMIT: Duration = Duration::from_secs(60);

/// A window asked for now, and where its summary goes.
type FetchRequest = (Option<String>, tokio::sync::oneshot::Sender<(String, bool)>);

/// What the loops share.
pub struct Shared {
    config: RwLock<Arc<Config>>,
    config_path: PathBuf,
    pub spool: Spool,
    /// Set at shutdown; also read by the deliverer between messages.
    stopping: AtomicBool,
    /// Wakes every loop at shutdown (a watch, so that a loop that was busy still sees it).
    stop: tokio::sync::watch::Sender<bool>,
    /// Wakes the deliverer (new mail spooled).
    deliver_now: Notify,
    /// Asks the scheduler for a window at once (`spoolctl fetch`): the accounts (all when `None`)
    /// and where to send the window's summary.
    fetch_now: tokio::sync::mpsc::UnboundedSender<FetchRequest>,
    fetch_requests: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<FetchRequest>>>,
    /// The caps of the window in progress, so that a shutdown can stop it.
    window: Mutex<Option<Arc<Limits>>>,
}

impl Shared {
    pub fn new(config: Config, config_path: PathBuf, spool: Spool) -> Arc<Shared> {
        let (fetch_now, fetch_requests) = tokio::sync::mpsc::unbounded_channel();
        Arc::new(Shared {
            config: RwLock::new(Arc::new(config)),
            config_path,
            spool,
            stopping: AtomicBool::new(false),
            stop: tokio::sync::watch::Sender::new(false),
            deliver_now: Notify::new(),
            fetch_now,
            fetch_requests: Mutex::new(Some(fetch_requests)),
            window: Mutex::new(None),
        })
    }

    pub fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Begins a shutdown at safe points.
    pub fn shutdown(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        if let Some(limits) = self
            .window
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            limits.stop.store(true, Ordering::SeqCst);
        }
        self.stop.send_replace(true);
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Asks for a window now (for `account`, or all) and waits for its summary and whether it
    /// failed. A provider's minimum interval is respected even then.
    pub async fn fetch_now(&self, account: Option<String>) -> Result<(String, bool), String> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.fetch_now
            .send((account, tx))
            .map_err(|_| "the daemon is stopping".to_string())?;
        rx.await.map_err(|_| "the daemon is stopping".to_string())
    }

    /// Reads the configuration file again; keeps the old configuration when the new one is wrong.
    pub fn reload(&self) -> Result<(), String> {
        match Config::load(&self.config_path) {
            Ok(new) => {
                if new.spool_dir != self.config().spool_dir {
                    tracing::warn!("spool_dir changed; the new spool is used after a restart");
                }
                *self.config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(new);
                tracing::info!(file = %self.config_path.display(), "configuration reloaded");
                self.deliver_now.notify_one();
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "the new configuration has errors; the old one stays in force");
                Err(e.to_string())
            }
        }
    }

    /// Sleeps for `duration`, or until `also` is notified or a shutdown begins. Returns false
    /// when stopping.
    async fn sleep_or_stop(&self, duration: Duration, also: &Notify) -> bool {
        let mut stop = self.stop.subscribe();
        if *stop.borrow_and_update() {
            return false;
        }
        tokio::select! {
            _ = tokio::time::sleep(duration) => {}
            _ = also.notified() => {}
            _ = stop.changed() => {}
        }
        !self.is_stopping()
    }
}

/// Runs the service until a shutdown completes.
pub async fn run(shared: Arc<Shared>) {
    let deliverer = tokio::spawn(deliver_loop(shared.clone()));
    let scheduler = tokio::spawn(schedule_loop(shared.clone()));
    let control = tokio::spawn(control_loop(shared.clone()));
    let watcher = {
        let shared2 = shared.clone();
        let stop = Arc::new(Notify::new());
        let stop2 = stop.clone();
        let config = shared.config();
        let task = tokio::spawn(crate::pickup::watch(
            shared.spool.clone(),
            config.default_domain.clone(),
            PICKUP_EVERY,
            stop2,
            move |_| shared2.deliver_now.notify_one(),
        ));
        (task, stop)
    };
    let _ = scheduler.await;
    let _ = deliverer.await;
    let _ = control.await;
    watcher.1.notify_one();
    let _ = watcher.0.await;
}

/// Delivers whenever something is due, link up or down.
async fn deliver_loop(shared: Arc<Shared>) {
    loop {
        if shared.is_stopping() {
            return;
        }
        let config = shared.config();
        let spool = shared.spool.clone();
        let domain = config.default_domain.clone();
        match tokio::task::spawn_blocking(move || {
            crate::pickup::ingest_pickup(&spool, domain.as_deref())
        })
        .await
        {
            Ok(Err(e)) => tracing::error!(error = %e, "pickup scan failed"),
            Err(e) => tracing::error!(error = %e, "pickup scan panicked"),
            Ok(Ok(_)) => {}
        }
        let wait = match crate::deliver::deliver_due_until(&config, &shared.spool, &shared.stopping)
            .await
        {
            Ok(report) if report.outage.is_some() => OUTAGE_RETRY,
            Ok(report) => {
                if report.badmail > 0 {
                    let notice = crate::alerts::badmail_grew(&shared.spool);
                    match notice.and_then(|n| {
                        crate::alerts::send(&config, &shared.spool, n.into_iter().collect())
                    }) {
                        // The notice itself is mail: deliver it now.
                        Ok(n) if n > 0 => shared.deliver_now.notify_one(),
                        Ok(_) => {}
                        Err(e) => {
                            tracing::error!(error = %e, "cannot queue a notice for the postmaster")
                        }
                    }
                }
                next_due_in(&shared.spool)
            }
            Err(e) => {
                tracing::error!(error = %e, "delivery pass failed");
                OUTAGE_RETRY
            }
        };
        if !shared.sleep_or_stop(wait, &shared.deliver_now).await {
            return;
        }
    }
}

/// How long until the next deferred message is due (at most [`DELIVER_IDLE`]).
fn next_due_in(spool: &Spool) -> Duration {
    let now = spool::now();
    spool
        .list()
        .ok()
        .and_then(|entries| {
            entries
                .iter()
                .filter(|(_, e)| {
                    e.state == spool::State::Deferred || e.state == spool::State::Queued
                })
                .map(|(_, e)| e.next_try.saturating_sub(now))
                .min()
        })
        .map(|secs| Duration::from_secs(secs.max(1)).min(DELIVER_IDLE))
        .unwrap_or(DELIVER_IDLE)
}

/// When each account's next window is due; `None` for an account without a schedule.
fn next_windows(
    config: &Config,
    spool: &Spool,
) -> HashMap<String, Option<chrono::DateTime<Local>>> {
    let now = Local::now();
    config
        .accounts
        .iter()
        .map(|a| {
            let last = spool
                .account_record(&a.name)
                .ok()
                .and_then(|r| r.last_window)
                .map(local_time);
            (
                a.name.clone(),
                a.effective_schedule(&config.schedule)
                    .next_window(now, last),
            )
        })
        .collect()
}

/// Whether a window for `account` right now would break its minimum interval.
fn too_soon(config: &Config, spool: &Spool, account: &Account) -> bool {
    let Some(min) = account.effective_schedule(&config.schedule).min_interval else {
        return false;
    };
    let last = spool
        .account_record(&account.name)
        .ok()
        .and_then(|r| r.last_window);
    last.is_some_and(|last| spool::now() < last + min.as_secs())
}

/// Runs windows when the schedule (or `spoolctl fetch`) says so.
async fn schedule_loop(shared: Arc<Shared>) {
    let Some(mut requests) = shared
        .fetch_requests
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
    else {
        return;
    };
    loop {
        let config = shared.config();
        let next = next_windows(&config, &shared.spool);
        let earliest = next.values().flatten().min().copied();
        let wait = earliest.map_or(Duration::from_secs(3600), |t| {
            (t - Local::now()).to_std().unwrap_or(Duration::ZERO)
        });
        if let Some(t) = earliest {
            tracing::debug!(next_window = %t.format("%Y-%m-%d %H:%M:%S"), "scheduler waiting");
        }
        let mut stop = shared.stop.subscribe();
        if *stop.borrow_and_update() {
            return;
        }
        let forced = tokio::select! {
            _ = tokio::time::sleep(wait) => None,
            Some(request) = requests.recv() => Some(request),
            _ = stop.changed() => return,
        };
        if shared.is_stopping() {
            return;
        }
        let config = shared.config();
        let now = Local::now();
        let due: Vec<Account> = config
            .accounts
            .iter()
            .filter(|a| match &forced {
                Some((only, _)) => only.as_ref().is_none_or(|name| &a.name == name),
                None => next
                    .get(&a.name)
                    .copied()
                    .flatten()
                    .is_some_and(|t| t <= now + chrono::Duration::milliseconds(500)),
            })
            .filter(|a| !too_soon(&config, &shared.spool, a))
            .cloned()
            .collect();
        if due.is_empty() {
            if let Some((_, reply)) = forced {
                let _ = reply.send(("no account may fetch now: each is within its minimum interval since its last window\n".into(), true));
            }
            continue;
        }
        let limits = Arc::new(Limits::new(
            config.window.max_duration,
            config.window.max_bytes,
        ));
        *shared.window.lock().unwrap_or_else(|p| p.into_inner()) = Some(limits.clone());
        let started = spool::now();
        for account in &due {
            let mut record = shared
                .spool
                .account_record(&account.name)
                .unwrap_or_default();
            record.last_window = Some(started);
            if let Err(e) = shared.spool.set_account_record(&account.name, &record) {
                tracing::error!(error = %e, "cannot record the window time");
            }
        }
        let (report, _) = crate::window::run(&config, &shared.spool, &due, limits).await;
        *shared.window.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let notices = crate::alerts::after_window(&shared.spool, &report);
        if let Err(e) = notices.and_then(|n| crate::alerts::send(&config, &shared.spool, n)) {
            tracing::error!(error = %e, "cannot queue a notice for the postmaster");
        }
        shared.deliver_now.notify_one();
        if let Some((_, reply)) = forced {
            let _ = reply.send((crate::progress::summary(&report), report.failed()));
        }
    }
}

/// Binds the control socket so that nobody but its owner can ever connect: it is made in the
/// spool's private `tmp/` (mode 0700), given mode 0600 there, and only then renamed into place.
/// A socket file left by a crash is ours to replace, since we hold the spool's lock.
fn bind_private(
    spool: &Spool,
    path: &std::path::Path,
) -> std::io::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let staging = spool.dir().join("tmp").join("control.sock");
    let _ = std::fs::remove_file(&staging);
    let listener = tokio::net::UnixListener::bind(&staging)?;
    std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o600))?;
    std::fs::rename(&staging, path)?;
    Ok(listener)
}

/// Serves `spoolctl` on the control socket until shutdown.
async fn control_loop(shared: Arc<Shared>) {
    let path = crate::control::socket_path(shared.spool.dir());
    // A socket file left by a crash: ours to replace, since we hold the spool's lock.
    let listener = match bind_private(&shared.spool, &path) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(socket = %path.display(), error = %e, "cannot open the control socket; spoolctl will not reach the daemon");
            return;
        }
    };
    let mut stop = shared.stop.subscribe();
    loop {
        if *stop.borrow_and_update() {
            break;
        }
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "control socket accept failed");
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let shared = shared.clone();
        let handle = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            let Ok(stream) = stream
                .into_std()
                .and_then(|s| s.set_nonblocking(false).map(|()| s))
            else {
                return;
            };
            let config = shared.config();
            let fetch = |account: Option<String>| handle.block_on(shared.fetch_now(account));
            if let Err(e) = crate::control::serve_connection(stream, &config, &shared.spool, &fetch)
            {
                tracing::warn!(error = %e, "control connection failed");
            }
            // A requeue or release may have made something due (or put a file into pickup/).
            shared.deliver_now.notify_one();
        });
    }
    let _ = std::fs::remove_file(&path);
}
