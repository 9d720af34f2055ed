//! The fetcher: one POP3 session per account, every message streamed into the spool, and a
//! message deleted from the server only after the spool commit that holds it.
//!
//! With PIPELINING (RFC 2449 §6.6) a window of `RETR` and `DELE` commands is kept in flight, each
//! burst written at once, so that a long round trip is paid once per session, not once per message.
//! Without it the same loop runs with a window of one command (lock-step).

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use spool::{AccountRecord, Envelope, Origin, Spool, SpoolError, Spooled, UidlSet};
use tokio::sync::Semaphore;

use crate::config::{Account, Config, SecretError};
use crate::envelope;
use crate::pop3::reply::Reply;
use crate::pop3::{ConnectOptions, Listed, Pop3Error, Session};

/// Commands kept in flight when the server pipelines. Enough to cover a satellite link's
/// bandwidth-delay product with small messages; RETR replies stream, so it costs no memory.
const PIPELINE_WINDOW: usize = 32;

/// A spool commit (fsync + index flush) is made at least this often while downloads continue...
const COMMIT_EVERY_MESSAGES: usize = 32;
/// ...or once this many bytes are waiting, so that deletions are not held back for long.
const COMMIT_EVERY_BYTES: u64 = 8 << 20;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(transparent)]
    Pop3(#[from] Pop3Error),
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error("secret: {0}")]
    Secret(#[from] SecretError),
    #[error("the server has no UIDL command, so keep = true cannot work (messages would be fetched again every time)")]
    KeepWithoutUidl,
    #[error("internal error: {0}")]
    Task(String),
}

impl FetchError {
    /// An authentication failure: the case a person must hear about (a changed password).
    pub fn is_auth_failure(&self) -> bool {
        matches!(
            self,
            FetchError::Pop3(Pop3Error::AuthFailed { .. }) | FetchError::Secret(_)
        )
    }
}

/// Live counters of one account's session, read by the progress display.
#[derive(Debug, Default)]
pub struct AccountProgress {
    pub name: String,
    pub messages: AtomicU64,
    pub bytes: AtomicU64,
    /// What the session plans to download (known after UIDL/LIST).
    pub planned_messages: AtomicU64,
    pub planned_bytes: AtomicU64,
    pub phase: Mutex<&'static str>,
}

impl AccountProgress {
    pub fn new(name: &str) -> Arc<Self> {
        Arc::new(AccountProgress {
            name: name.to_string(),
            phase: Mutex::new("waiting"),
            ..Default::default()
        })
    }

    fn set_phase(&self, phase: &'static str) {
        *self.phase.lock().unwrap_or_else(|p| p.into_inner()) = phase;
    }

    pub fn phase(&self) -> &'static str {
        *self.phase.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The outcome of one account in one window.
#[derive(Debug, Default)]
pub struct AccountReport {
    pub account: String,
    /// Messages spooled.
    pub fetched: u64,
    /// Bytes of the messages spooled.
    pub bytes: u64,
    /// Bytes received from the server, protocol and all (TLS overhead not counted): what the
    /// link carried for this account.
    pub wire_bytes: u64,
    /// Messages deleted from the server (confirmed by QUIT).
    pub deleted: u64,
    /// Messages left on the server for being larger than the limit: (UIDL, size).
    pub oversized: Vec<(String, u64)>,
    /// How many of those were seen for the first time in this window.
    pub new_oversized: usize,
    /// Messages the server refused to hand over (`-ERR` to RETR); left on the server.
    pub message_errors: Vec<String>,
    /// Why the session failed, if it did. What was committed before stays committed.
    pub error: Option<FetchError>,
    /// Why the account was not tried (LOGIN-DELAY).
    pub skipped: Option<String>,
    /// Why messages were left for the next window (a cap of the window, or shutdown).
    pub capped: Option<&'static str>,
    /// Catch-all: copies not delivered again (same Message-ID and recipient seen before).
    pub duplicates: u64,
    /// Catch-all: messages sent to the fallback address (recipients not found).
    pub fallback: u64,
    /// Catch-all: messages recognised as a mail loop and sent to badmail.
    pub loops: u64,
    pub elapsed: Duration,
}

impl AccountReport {
    pub fn failed(&self) -> bool {
        self.error.is_some() || !self.message_errors.is_empty()
    }
}

/// The outcome of one window: every account's report.
#[derive(Debug, Default)]
pub struct WindowReport {
    pub accounts: Vec<AccountReport>,
    pub elapsed: Duration,
}

impl WindowReport {
    pub fn failed(&self) -> bool {
        self.accounts.iter().any(AccountReport::failed)
    }
    pub fn fetched(&self) -> u64 {
        self.accounts.iter().map(|a| a.fetched).sum()
    }
    pub fn bytes(&self) -> u64 {
        self.accounts.iter().map(|a| a.bytes).sum()
    }
}

/// Caps shared by the sessions of one window, checked before each new message is started: a
/// message in progress always finishes, and every session still ends with QUIT so that its
/// deletions count.
#[derive(Debug, Default)]
pub struct Limits {
    pub deadline: Option<Instant>,
    /// Bytes that may still be started in this window.
    pub budget: Option<AtomicU64>,
    /// Set on shutdown.
    pub stop: std::sync::atomic::AtomicBool,
}

impl Limits {
    pub fn new(max_duration: Option<Duration>, max_bytes: Option<u64>) -> Limits {
        Limits {
            deadline: max_duration.map(|d| Instant::now() + d),
            budget: max_bytes.map(AtomicU64::new),
            stop: Default::default(),
        }
    }

    /// Whether a message of `size` bytes may be started; takes it from the budget if so.
    fn may_start(&self, size: u64) -> Result<(), &'static str> {
        if self.stop.load(Ordering::Relaxed) {
            return Err("shutdown");
        }
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return Err("time cap (window.max_duration)");
        }
        if let Some(budget) = &self.budget {
            budget
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                    left.checked_sub(size)
                })
                .map_err(|_| "byte budget (window.max_bytes)")?;
        }
        Ok(())
    }
}

/// Fetches every account of `accounts` into `spool`, without caps.
pub async fn run_window(
    config: &Config,
    spool: &Spool,
    accounts: &[(Account, Arc<AccountProgress>)],
) -> WindowReport {
    run_window_with(config, spool, accounts, Arc::new(Limits::default())).await
}

/// Fetches every account of `accounts` into `spool` within `limits`. An account's failure never
/// stops the others.
///
/// At most `config.fetch.concurrency` accounts download at once; twice as many may be connected,
/// so that the next accounts' logins (round trips, hardly any bytes) overlap the running downloads
/// instead of waiting for them: on a 600 ms link a login costs four round trips.
pub async fn run_window_with(
    config: &Config,
    spool: &Spool,
    accounts: &[(Account, Arc<AccountProgress>)],
    limits: Arc<Limits>,
) -> WindowReport {
    let started = Instant::now();
    let sessions = Arc::new(Semaphore::new(config.fetch.concurrency * 2));
    let downloads = Arc::new(Semaphore::new(config.fetch.concurrency));
    let mut tasks = Vec::new();
    for (account, progress) in accounts {
        let (account, progress, spool) = (account.clone(), progress.clone(), spool.clone());
        let (sessions, downloads, limits) = (sessions.clone(), downloads.clone(), limits.clone());
        let default_domain = config.default_domain.clone();
        tasks.push(tokio::spawn(async move {
            let _session = sessions.acquire_owned().await;
            let job = Job {
                account: &account,
                default_domain: default_domain.as_deref(),
                spool: &spool,
                progress: &progress,
                downloads: &downloads,
                limits: &limits,
            };
            fetch_account(&job).await
        }));
    }
    let mut reports = Vec::new();
    for ((account, _), task) in accounts.iter().zip(tasks) {
        reports.push(task.await.unwrap_or_else(|e| AccountReport {
            account: account.name.clone(),
            error: Some(FetchError::Task(e.to_string())),
            ..Default::default()
        }));
    }
    WindowReport {
        accounts: reports,
        elapsed: started.elapsed(),
    }
}

/// What one account's session works with.
pub struct Job<'a> {
    pub account: &'a Account,
    pub default_domain: Option<&'a str>,
    pub spool: &'a Spool,
    pub progress: &'a AccountProgress,
    /// Download slots shared by the window's sessions; held from the first RETR to the last body.
    pub downloads: &'a Semaphore,
    pub limits: &'a Limits,
}

/// One session with one account's server.
pub async fn fetch_account(job: &Job<'_>) -> AccountReport {
    let (account, progress) = (job.account, job.progress);
    let started = Instant::now();
    let mut report = AccountReport {
        account: account.name.clone(),
        ..Default::default()
    };
    let result = session(job, &mut report).await;
    if let Err(e) = result {
        tracing::warn!(account = %account.name, error = %e, "fetch failed");
        progress.set_phase("failed");
        report.error = Some(e);
    } else if report.skipped.is_none() {
        progress.set_phase("done");
    }
    report.elapsed = started.elapsed();
    report
}

/// What to do with each listed message.
struct Plan {
    retrieve: VecDeque<Listed>,
    delete: VecDeque<u32>,
    /// Catch-all: "Message-ID recipient" keys already delivered (and those of this session).
    duplicates: Arc<Mutex<HashSet<String>>>,
}

/// What happens to a committed message besides its DELE (catch-all outcomes).
#[derive(Debug, Clone)]
enum AfterCommit {
    /// Queue it for delivery (the usual case).
    Queue,
    /// Every recipient had it already: it leaves the queue at once.
    Duplicate,
    /// A mail loop: to badmail with the reason.
    Loop(String),
}

fn login_too_soon(record: &AccountRecord, now: u64) -> Option<u64> {
    let next = record.last_login? + record.login_delay?;
    (now < next).then_some(next - now)
}

async fn session(job: &Job<'_>, report: &mut AccountReport) -> Result<(), FetchError> {
    let (account, spool, progress) = (job.account, job.spool, job.progress);
    let record = spool.account_record(&account.name)?;
    if let Some(wait) = login_too_soon(&record, spool::now()) {
        report.skipped = Some(format!(
            "the server's LOGIN-DELAY allows the next login in {wait}s"
        ));
        progress.set_phase("skipped");
        return Ok(());
    }
    let secret = account.secret.resolve().await?;
    progress.set_phase("connecting");
    let opts = ConnectOptions {
        host: account.server.clone(),
        port: account.port,
        tls: account.tls,
        ca_file: account.ca_file.clone(),
        timeout: account.timeout,
    };
    let mut pop = Session::connect(&opts, &account.name).await?;
    let login_delay = pop.capabilities().login_delay;
    let record = AccountRecord {
        login_delay,
        ..record
    };
    if let Some(wait) = login_too_soon(&record, spool::now()) {
        report.skipped = Some(format!(
            "the server's LOGIN-DELAY allows the next login in {wait}s"
        ));
        progress.set_phase("skipped");
        spool.set_account_record(&account.name, &record)?;
        return Ok(pop.quit().await?);
    }
    progress.set_phase("login");
    pop.login(
        &account.user,
        &secret,
        account.auth,
        account.allow_insecure_auth,
    )
    .await?;
    drop(secret);
    spool.set_account_record(
        &account.name,
        &AccountRecord {
            last_login: Some(spool::now()),
            ..record
        },
    )?;

    progress.set_phase("listing");
    let listed = pop.list_messages().await?;
    let mut plan = make_plan(account, spool, listed, report)?;
    if job.limits.budget.is_some() {
        // With a byte budget, as many messages as possible: the smallest first.
        plan.retrieve.make_contiguous().sort_by_key(|m| m.size);
    }
    progress
        .planned_messages
        .store(plan.retrieve.len() as u64, Ordering::Relaxed);
    progress.planned_bytes.store(
        plan.retrieve.iter().map(|m| m.size).sum(),
        Ordering::Relaxed,
    );

    let mut uncommitted = Vec::new();
    let outcome = transfer(job, &mut pop, &mut plan, &mut uncommitted, report).await;
    // Messages that arrived whole before a failure are kept: committing them now marks their
    // UIDLs seen, so the next session deletes them instead of downloading them again.
    report.wire_bytes = pop.bytes_in();
    commit(spool, &mut uncommitted, account, &mut plan, report).await?;
    let quit_sent = outcome?;
    progress.set_phase("quit");
    if quit_sent {
        pop.finish_quit().await?;
    } else {
        pop.quit().await?;
    }
    // Deletions count only now that QUIT was answered (RFC 1939 §6); until then they were provisional.
    Ok(())
}

/// Commits the downloaded messages in one spool commit, then queues their deletion.
async fn commit(
    spool: &Spool,
    uncommitted: &mut Vec<(Spooled, u32, AfterCommit)>,
    account: &Account,
    plan: &mut Plan,
    report: &mut AccountReport,
) -> Result<(), FetchError> {
    if uncommitted.is_empty() {
        return Ok(());
    }
    let batch = std::mem::take(uncommitted);
    let spool = spool.clone();
    let batch = tokio::task::spawn_blocking(move || {
        let spooled: Vec<Spooled> = batch.iter().map(|(s, _, _)| s.clone()).collect();
        spool.commit(&spooled)?;
        // Durable now; what a catch-all decided for some of them happens after the commit, so
        // that a crash in between leaves the message in the queue, never lost.
        for (spooled, _, after) in &batch {
            match after {
                AfterCommit::Queue => {}
                AfterCommit::Duplicate => spool.remove_delivered(spooled.id())?,
                AfterCommit::Loop(reason) => {
                    let reason = spool::BadmailReason {
                        reply: reason.clone(),
                        attempts: 0,
                    };
                    spool.to_badmail(spooled.id(), &[], &reason, true)?;
                }
            }
        }
        Ok::<_, SpoolError>(batch)
    })
    .await
    .map_err(|e| FetchError::Task(e.to_string()))??;
    for (spooled, number, after) in batch {
        match after {
            AfterCommit::Queue => {}
            AfterCommit::Duplicate => report.duplicates += 1,
            AfterCommit::Loop(_) => report.loops += 1,
        }
        report.fetched += 1;
        report.bytes += spooled.size;
        if !account.keep {
            plan.delete.push_back(number);
        }
    }
    Ok(())
}

/// The RETR/DELE loop: keeps up to a window of commands in flight, commits downloaded messages in
/// batches, and sends the DELE of a message only after the commit that holds it. With pipelining,
/// QUIT goes out with the last burst; returns whether it did.
async fn transfer(
    job: &Job<'_>,
    pop: &mut Session,
    plan: &mut Plan,
    uncommitted: &mut Vec<(Spooled, u32, AfterCommit)>,
    report: &mut AccountReport,
) -> Result<bool, FetchError> {
    let (account, spool) = (job.account, job.spool);
    let mut download_slot = None;
    if !plan.retrieve.is_empty() {
        job.progress.set_phase("waiting");
        download_slot = Some(
            job.downloads
                .acquire()
                .await
                .map_err(|e| FetchError::Task(e.to_string()))?,
        );
        job.progress.set_phase("fetching");
    }
    let pipelining = pop.capabilities().pipelining;
    let window = if pipelining { PIPELINE_WINDOW } else { 1 };
    let mut in_flight: VecDeque<Command> = VecDeque::new();
    let mut uncommitted_bytes = 0u64;
    loop {
        let mut burst = String::new();
        while in_flight.len() < window {
            let command = match plan.delete.pop_front() {
                Some(number) => Command::Dele(number),
                None => match plan.retrieve.pop_front() {
                    Some(message) => match job.limits.may_start(message.size) {
                        Ok(()) => Command::Retr(message),
                        Err(why) => {
                            // Nothing new from here on; what is in flight finishes, then QUIT.
                            report.capped = Some(why);
                            plan.retrieve.clear();
                            continue;
                        }
                    },
                    None => break,
                },
            };
            burst.push_str(&command.line());
            in_flight.push_back(command);
        }
        let last_burst = pipelining
            && plan.retrieve.is_empty()
            && plan.delete.is_empty()
            && uncommitted.is_empty()
            && !in_flight.iter().any(|c| matches!(c, Command::Retr(_)));
        if last_burst {
            // Nothing more can follow: QUIT rides along and saves a round trip.
            burst.push_str("QUIT\r\n");
            pop.send(&burst).await?;
            for command in in_flight.drain(..) {
                read_dele(pop, account, command, report).await?;
            }
            return Ok(true);
        }
        if !burst.is_empty() {
            pop.send(&burst).await?;
        }
        let retr_in_flight = in_flight.iter().any(|c| matches!(c, Command::Retr(_)));
        if !retr_in_flight && plan.retrieve.is_empty() {
            // The last body is in: let the next account download while this one finishes.
            download_slot.take();
        }
        let batch_full =
            uncommitted.len() >= COMMIT_EVERY_MESSAGES || uncommitted_bytes >= COMMIT_EVERY_BYTES;
        if !uncommitted.is_empty() && (batch_full || !retr_in_flight) {
            commit(spool, uncommitted, account, plan, report).await?;
            uncommitted_bytes = 0;
            continue;
        }
        let Some(command) = in_flight.pop_front() else {
            return Ok(false);
        };
        match command {
            Command::Dele(_) => read_dele(pop, account, command, report).await?,
            Command::Retr(message) => {
                if let Some((spooled, after)) = retrieve(job, pop, plan, &message, report).await? {
                    uncommitted_bytes += spooled.size;
                    uncommitted.push((spooled, message.number, after));
                }
            }
        }
    }
}

/// Reads the answer to a DELE. A refused DELE only leaves the message on the server, where the
/// next session finds it seen and tries again.
async fn read_dele(
    pop: &mut Session,
    account: &Account,
    command: Command,
    report: &mut AccountReport,
) -> Result<(), FetchError> {
    let Command::Dele(number) = command else {
        unreachable!("only DELE commands remain in the last burst")
    };
    match pop.read_reply("DELE").await? {
        Reply::Ok(_) => report.deleted += 1,
        other => {
            tracing::warn!(account = %account.name, number, reply = ?other, "DELE refused; the message stays on the server")
        }
    }
    Ok(())
}

enum Command {
    Retr(Listed),
    Dele(u32),
}

impl Command {
    fn line(&self) -> String {
        match self {
            Command::Retr(m) => format!("RETR {}\r\n", m.number),
            Command::Dele(n) => format!("DELE {n}\r\n"),
        }
    }
}

/// Sorts the listing into what to download, what to delete, and what to leave alone, and keeps the
/// spool's UIDL marks in step with what the server lists.
fn make_plan(
    account: &Account,
    spool: &Spool,
    listed: Vec<Listed>,
    report: &mut AccountReport,
) -> Result<Plan, FetchError> {
    let has_uidl = listed.iter().all(|m| m.uidl.is_some());
    if !has_uidl && account.keep && !listed.is_empty() {
        return Err(FetchError::KeepWithoutUidl);
    }
    let seen = spool.uidls(UidlSet::Seen, &account.name)?;
    let oversized = spool.uidls(UidlSet::Oversized, &account.name)?;
    if has_uidl {
        let on_server: HashSet<&str> = listed.iter().filter_map(|m| m.uidl.as_deref()).collect();
        for (set, known) in [(UidlSet::Seen, &seen), (UidlSet::Oversized, &oversized)] {
            let gone: Vec<&str> = known
                .keys()
                .map(String::as_str)
                .filter(|u| !on_server.contains(u))
                .collect();
            spool.forget_uidls(set, &account.name, gone)?;
        }
    }
    let now = spool::now();
    // The local server's own limit (from its EHLO SIZE) applies too: fetching what it would refuse
    // only moves the message from the provider to badmail.
    let limit = match spool.local_size_limit()? {
        Some(local) => local.min(account.max_message_size),
        None => account.max_message_size,
    };
    let duplicates = match &account.routing {
        Some(catch_all) => {
            let marks = spool.uidls(UidlSet::Duplicate, &account.name)?;
            let expired: Vec<&str> = marks
                .iter()
                .filter(|(_, m)| {
                    now.saturating_sub(m.first_seen) > catch_all.duplicate_window.as_secs()
                })
                .map(|(k, _)| k.as_str())
                .collect();
            spool.forget_uidls(UidlSet::Duplicate, &account.name, expired.iter().copied())?;
            marks
                .keys()
                .filter(|k| !expired.contains(&k.as_str()))
                .cloned()
                .collect()
        }
        None => HashSet::new(),
    };
    let mut plan = Plan {
        retrieve: VecDeque::new(),
        delete: VecDeque::new(),
        duplicates: Arc::new(Mutex::new(duplicates)),
    };
    for message in listed {
        let mark = message.uidl.as_ref().and_then(|u| seen.get(u));
        if let Some(mark) = mark {
            let old_enough = account
                .delete_after
                .is_some_and(|after| now.saturating_sub(mark.first_seen) >= after.as_secs());
            if !account.keep || old_enough {
                plan.delete.push_back(message.number);
            }
            continue;
        }
        if message.size > limit {
            let uidl = message
                .uidl
                .clone()
                .unwrap_or_else(|| format!("#{}", message.number));
            if spool.add_uidl(UidlSet::Oversized, &account.name, &uidl, message.size)? {
                report.new_oversized += 1;
                tracing::warn!(account = %account.name, uidl, size = message.size, limit,
                    "message larger than max_message_size left on the server");
            }
            report.oversized.push((uidl, message.size));
            continue;
        }
        plan.retrieve.push_back(message);
    }
    Ok(plan)
}

/// Reads one RETR reply and streams its body into a new spool file. `Ok(None)` when the server
/// refused this one message (the session goes on; the message stays on the server).
async fn retrieve(
    job: &Job<'_>,
    pop: &mut Session,
    plan: &Plan,
    message: &Listed,
    report: &mut AccountReport,
) -> Result<Option<(Spooled, AfterCommit)>, FetchError> {
    let (account, spool, progress) = (job.account, job.spool, job.progress);
    match pop.read_reply("RETR").await? {
        Reply::Ok(_) => {}
        Reply::Err { text, .. } => {
            let what = format!(
                "message {} ({}): the server refused RETR: {text}",
                message.number,
                message.uidl.as_deref().unwrap_or("no UIDL")
            );
            tracing::warn!(account = %account.name, "{what}");
            report.message_errors.push(what);
            return Ok(None);
        }
        Reply::Continue(_) => {
            return Err(Pop3Error::Protocol("continuation in answer to RETR".into()).into())
        }
    }
    let origin = Origin {
        account: account.name.clone(),
        uidl: message.uidl.clone(),
        arrived: spool::now(),
    };
    let domain = job.default_domain.map(str::to_string);
    let after = Arc::new(Mutex::new((AfterCommit::Queue, false)));
    let mut writer = match &account.routing {
        None => {
            let recipients = account.deliver_to.clone();
            spool.writer(origin, move |headers| Envelope {
                sender: envelope::sender_from_headers(headers, domain.as_deref()),
                recipients,
            })?
        }
        Some(catch_all) => {
            let (rules, name) = (catch_all.rules.clone(), account.name.clone());
            let (seen, after) = (plan.duplicates.clone(), after.clone());
            spool.writer_resolved(origin, move |headers| {
                route(&rules, &name, headers, domain.as_deref(), &seen, &after)
            })?
        }
    };
    let body = pop
        .read_body(|chunk| {
            progress
                .bytes
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
            writer.write(chunk)
        })
        .await?;
    body?;
    let spooled = tokio::task::spawn_blocking(move || writer.finish())
        .await
        .map_err(|e| FetchError::Task(e.to_string()))??;
    progress.messages.fetch_add(1, Ordering::Relaxed);
    let (after, fallback) = after.lock().unwrap_or_else(|p| p.into_inner()).clone();
    report.fallback += u64::from(fallback);
    Ok(Some((spooled, after)))
}

/// A catch-all's decision for one message, as the spool writer wants it: the envelope, the trace
/// headers on top, and the duplicate marks to record with it.
fn route(
    rules: &crate::routing::Routing,
    account: &str,
    headers: &[u8],
    default_domain: Option<&str>,
    seen: &Mutex<HashSet<String>>,
    after: &Mutex<(AfterCommit, bool)>,
) -> spool::Resolved {
    let decision = rules.route(headers, account);
    let sender = envelope::sender_from_headers(headers, default_domain);
    let prefix = decision.trace_headers(account);
    if let crate::routing::Decision::Loop { reason } = &decision {
        after.lock().unwrap_or_else(|p| p.into_inner()).0 = AfterCommit::Loop(reason.clone());
        return spool::Resolved {
            envelope: Envelope {
                sender,
                recipients: Vec::new(),
            },
            prefix,
            marks: Vec::new(),
        };
    }
    let mut recipients = decision.recipients();
    let mut marks = Vec::new();
    if let Some(id) = decision.message_id() {
        let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
        recipients.retain(|r| {
            let key = format!("{id} {}", r.to_ascii_lowercase());
            let new = seen.insert(key.clone());
            if new {
                marks.push(key);
            }
            new
        });
        if recipients.is_empty() {
            after.lock().unwrap_or_else(|p| p.into_inner()).0 = AfterCommit::Duplicate;
        }
    }
    if matches!(decision, crate::routing::Decision::Fallback { .. }) {
        after.lock().unwrap_or_else(|p| p.into_inner()).1 = true;
    }
    spool::Resolved {
        envelope: Envelope { sender, recipients },
        prefix,
        marks,
    }
}
