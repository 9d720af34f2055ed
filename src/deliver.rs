//! The deliverer: drains the spool into the local mail server.
//!
//! A message leaves the queue in two ways only (DESIGN.md, invariant 4): the local server said 250
//! to its data for every recipient, or it was written durably into `badmail/` (a 5xx, a message
//! larger than the server accepts, a poison message, or one older than the give-up age). A 4xx, a
//! broken session or a timeout defers it with backoff. A server that cannot be reached at all
//! defers nothing and counts nothing against the messages: an outage only makes the queue wait.
//!
//! Recipients are tracked one by one: those the server accepted are recorded (and flushed) before
//! anything else is done with the message, so a retry never sends them the message again.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use spool::{BadmailReason, Entry, QueueId, Spool, SpoolError, State};

use crate::config::{Config, DeliverySettings, LocalServer};
use crate::envelope::is_valid_address;
use crate::smtp::client::scan_eight_bit;
use crate::smtp::{Reply, SmtpError, SmtpOptions, SmtpSession, Transaction};

#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error("the local server: {0}")]
    Smtp(#[from] SmtpError),
    #[error("secret for the local server: {0}")]
    Secret(#[from] crate::config::SecretError),
}

/// What one pass of the deliverer did.
#[derive(Debug, Default)]
pub struct DeliveryReport {
    /// Messages that left the queue delivered to every recipient.
    pub delivered: u64,
    /// Recipient deliveries the server accepted.
    pub recipients: u64,
    /// Messages (or parts of them) written to badmail.
    pub badmail: u64,
    /// Messages left for a later attempt.
    pub deferred: u64,
    /// Why the local server could not be used at all, when it could not (nothing was counted
    /// against the messages).
    pub outage: Option<String>,
    pub elapsed: Duration,
}

#[derive(Default)]
struct Counters {
    delivered: AtomicU64,
    recipients: AtomicU64,
    badmail: AtomicU64,
    deferred: AtomicU64,
}

/// What the workers share during one pass.
struct Pass<'a> {
    spool: &'a Spool,
    settings: &'a DeliverySettings,
    options: SmtpOptions,
    queue: Mutex<VecDeque<(QueueId, Entry)>>,
    /// Set when the server cannot be reached: every worker stops taking messages.
    outage: Mutex<Option<String>>,
    stop: AtomicBool,
    /// The daemon is stopping: finish the message in hand, take no other.
    shutdown: &'a AtomicBool,
    counters: Counters,
}

/// The SMTP options for the configured local server.
pub async fn smtp_options(local: &LocalServer) -> Result<SmtpOptions, DeliverError> {
    let auth = match &local.auth {
        Some((user, source)) => Some((user.clone(), source.resolve().await?)),
        None => None,
    };
    Ok(SmtpOptions {
        host: local.host.clone(),
        port: local.port,
        tls: local.tls,
        ca_file: local.ca_file.clone(),
        helo: local.helo.clone().unwrap_or_else(default_helo),
        timeout: local.timeout,
        auth,
    })
}

/// This host's name for EHLO, or a name that says what we are.
fn default_helo() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| {
            !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        })
        .unwrap_or_else(|| "outpost.localdomain".to_string())
}

/// Delivers every message that is due now, with `config.delivery.sessions` sessions in parallel,
/// and returns when none is left to try in this pass.
pub async fn deliver_due(config: &Config, spool: &Spool) -> Result<DeliveryReport, DeliverError> {
    deliver_due_until(config, spool, &AtomicBool::new(false)).await
}

/// [`deliver_due`], stopping at a safe point (after the message in hand) once `shutdown` is set.
pub async fn deliver_due_until(
    config: &Config,
    spool: &Spool,
    shutdown: &AtomicBool,
) -> Result<DeliveryReport, DeliverError> {
    let started = Instant::now();
    let due = spool.due(spool::now())?;
    let mut report = DeliveryReport::default();
    if due.is_empty() {
        return Ok(report);
    }
    let pass = Pass {
        spool,
        settings: &config.delivery,
        options: smtp_options(&config.local).await?,
        queue: Mutex::new(due.into()),
        outage: Mutex::new(None),
        stop: AtomicBool::new(false),
        shutdown,
        counters: Counters::default(),
    };
    let workers = (0..config.delivery.sessions).map(|_| worker(&pass));
    futures_join_all(workers).await;
    report.delivered = pass.counters.delivered.load(Ordering::Relaxed);
    report.recipients = pass.counters.recipients.load(Ordering::Relaxed);
    report.badmail = pass.counters.badmail.load(Ordering::Relaxed);
    report.deferred = pass.counters.deferred.load(Ordering::Relaxed);
    report.outage = pass.outage.lock().unwrap_or_else(|p| p.into_inner()).take();
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Runs futures concurrently on this task (the workers borrow the pass, so they are not spawned).
async fn futures_join_all<F: std::future::Future<Output = ()>>(futures: impl Iterator<Item = F>) {
    let mut set: Vec<std::pin::Pin<Box<F>>> = futures.map(Box::pin).collect();
    std::future::poll_fn(|cx| {
        set.retain_mut(|f| f.as_mut().poll(cx).is_pending());
        if set.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await
}

impl Pass<'_> {
    fn next(&self) -> Option<(QueueId, Entry)> {
        if self.stop.load(Ordering::Relaxed) || self.shutdown.load(Ordering::Relaxed) {
            return None;
        }
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front()
    }

    fn give_back(&self, message: (QueueId, Entry)) {
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_front(message);
    }

    fn outage(&self, why: String) {
        tracing::warn!(error = %why, "the local server cannot be reached; the queue waits");
        self.outage
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(why);
        self.stop.store(true, Ordering::Relaxed);
    }

    async fn connect(&self) -> Option<SmtpSession> {
        match SmtpSession::connect(&self.options).await {
            Ok(session) => {
                if let Err(e) = self
                    .spool
                    .set_local_size_limit(session.extensions().size_limit())
                {
                    tracing::warn!(error = %e, "cannot record the local server's size limit");
                }
                Some(session)
            }
            Err(e) => {
                self.outage(e.to_string());
                None
            }
        }
    }
}

/// One SMTP session's worth of work: takes messages until the queue is empty, reconnecting after a
/// session breaks, and isolating a message that broke a session before.
async fn worker(pass: &Pass<'_>) {
    let mut session: Option<SmtpSession> = None;
    while let Some((id, entry)) = pass.next() {
        let alone = entry.drops > 0;
        if alone {
            // A suspected poison message gets a session of its own, so that it cannot take others
            // down with it.
            if let Some(s) = session.take() {
                s.quit().await;
            }
        }
        if session.is_none() {
            session = pass.connect().await;
            if session.is_none() {
                pass.give_back((id, entry));
                return;
            }
        }
        let s = session.as_mut().expect("connected above");
        match deliver_one(pass, s, id, &entry).await {
            Ok(true) => {}
            Ok(false) => {
                if s.rset().await.is_err() {
                    session = None;
                }
            }
            Err(e) => {
                tracing::warn!(id = %id, error = %e, "delivery failed");
                session = None;
            }
        }
        if alone {
            if let Some(s) = session.take() {
                s.quit().await;
            }
        }
    }
    if let Some(s) = session {
        s.quit().await;
    }
}

/// Sends one message and records the outcome. `Ok(true)` when the transaction went through
/// cleanly, `Ok(false)` when the session needs an RSET, `Err` when the session is broken.
async fn deliver_one(
    pass: &Pass<'_>,
    session: &mut SmtpSession,
    id: QueueId,
    entry: &Entry,
) -> Result<bool, DeliverError> {
    let spool = pass.spool;
    let now = spool::now();
    if let Some(limit) = session
        .extensions()
        .size_limit()
        .filter(|&limit| entry.size > limit)
    {
        let reply = format!(
            "not sent: the message has {} bytes and the local server accepts at most {limit}",
            entry.size
        );
        badmail(pass, id, entry, &entry.envelope.recipients, reply, true)?;
        return Ok(true);
    }
    if entry.envelope.recipients.is_empty() {
        // A catch-all's loop or duplicate whose fate a crash interrupted: nobody to send it to.
        badmail(
            pass,
            id,
            entry,
            &[],
            "not sent: the message has no recipient".into(),
            true,
        )?;
        return Ok(true);
    }
    let (valid, invalid): (Vec<String>, Vec<String>) = entry
        .envelope
        .recipients
        .iter()
        .cloned()
        .partition(|r| is_valid_address(r));
    let sender_ok = entry.envelope.sender.is_empty() || is_valid_address(&entry.envelope.sender);
    if !invalid.is_empty() || !sender_ok {
        // Never put a bad address on the wire; a spool entry should not have one, but a hand-made
        // file could.
        let bad = if sender_ok {
            invalid
        } else {
            entry.envelope.recipients.clone()
        };
        badmail(
            pass,
            id,
            entry,
            &bad,
            "not sent: invalid envelope address".into(),
            bad.len() == entry.envelope.recipients.len(),
        )?;
        if !sender_ok || valid.is_empty() {
            return Ok(true);
        }
    }

    // Known from ingest; only an index rebuilt from the files makes us look.
    let eight_bit = match entry.eight_bit {
        Some(known) => known,
        None => scan_eight_bit(&mut spool.open_message(id)?.1).map_err(SmtpError::Spool)?,
    };
    let (_, mut body) = spool.open_message(id)?;
    spool.set_state(id, State::Delivering)?;

    let transaction = match session
        .send_message(
            &entry.envelope.sender,
            &valid,
            entry.size,
            eight_bit,
            &mut body,
        )
        .await
    {
        Ok(t) => t,
        Err(e) => {
            // The session broke with this message in hand: it may be the message's fault.
            let drops = entry.drops + 1;
            if drops >= pass.settings.poison_limit {
                let reply = format!("the local server dropped the session {drops} times while this message was sent; last: {e}");
                badmail(pass, id, entry, &valid, reply, true)?;
            } else {
                defer(pass, id, entry, &format!("session broke: {e}"), drops, now)?;
            }
            return Err(e.into());
        }
    };
    let outcome = Outcome::of(&transaction, &valid);
    tracing::info!(id = %id, accepted = outcome.done.len(), failed = outcome.failed.len(), later = outcome.later.len(), "delivery attempt");
    pass.counters
        .recipients
        .fetch_add(outcome.done.len() as u64, Ordering::Relaxed);
    if outcome.failed.is_empty() && outcome.later.is_empty() {
        spool.remove_delivered(id)?;
        pass.counters.delivered.fetch_add(1, Ordering::Relaxed);
        return Ok(true);
    }
    if !outcome.done.is_empty() {
        spool.recipients_done(id, &outcome.done)?;
    }
    if !outcome.failed.is_empty() {
        let reasons = outcome
            .failed
            .iter()
            .map(|(r, reply)| format!("<{r}>: {reply}"))
            .collect::<Vec<_>>()
            .join(" | ");
        let failed: Vec<String> = outcome.failed.iter().map(|(r, _)| r.clone()).collect();
        badmail(pass, id, entry, &failed, reasons, outcome.later.is_empty())?;
    }
    if !outcome.later.is_empty() {
        let reasons = outcome
            .later
            .iter()
            .map(|(r, reply)| format!("<{r}>: {reply}"))
            .collect::<Vec<_>>()
            .join(" | ");
        defer(pass, id, entry, &reasons, entry.drops, now)?;
    }
    Ok(false)
}

/// Where each recipient stands after a transaction.
struct Outcome {
    done: Vec<String>,
    /// Refused for good, with the reply that refused them.
    failed: Vec<(String, Reply)>,
    /// Refused for now.
    later: Vec<(String, Reply)>,
}

impl Outcome {
    fn of(t: &Transaction, recipients: &[String]) -> Outcome {
        let mut outcome = Outcome {
            done: Vec::new(),
            failed: Vec::new(),
            later: Vec::new(),
        };
        let mut file = |r: &String, reply: &Reply| {
            if reply.is_permanent() {
                outcome.failed.push((r.clone(), reply.clone()));
            } else {
                outcome.later.push((r.clone(), reply.clone()));
            }
        };
        if !t.mail.is_positive() {
            recipients.iter().for_each(|r| file(r, &t.mail));
            return outcome;
        }
        // The reply that decides for the accepted recipients: the end of data, else why no
        // data was sent.
        let data = t
            .data
            .as_ref()
            .or(t.data_command.as_ref().filter(|r| r.code != 354));
        for (i, r) in recipients.iter().enumerate() {
            match t.rcpts.get(i) {
                Some(reply) if !reply.is_positive() => file(r, reply),
                Some(_) => match data {
                    Some(reply) if reply.is_positive() => outcome.done.push(r.clone()),
                    Some(reply) => file(r, reply),
                    None => file(
                        r,
                        &Reply {
                            code: 451,
                            lines: vec!["no data was sent".into()],
                        },
                    ),
                },
                None => file(
                    r,
                    &Reply {
                        code: 451,
                        lines: vec!["no answer to RCPT TO".into()],
                    },
                ),
            }
        }
        outcome
    }
}

fn badmail(
    pass: &Pass<'_>,
    id: QueueId,
    entry: &Entry,
    recipients: &[String],
    reply: String,
    remove: bool,
) -> Result<(), DeliverError> {
    let reason = BadmailReason {
        reply,
        attempts: entry.attempts + 1,
    };
    pass.spool.to_badmail(id, recipients, &reason, remove)?;
    pass.counters.badmail.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// Defers a message for its backoff, or sends it to badmail once it is older than the give-up age.
fn defer(
    pass: &Pass<'_>,
    id: QueueId,
    entry: &Entry,
    error: &str,
    drops: u32,
    now: u64,
) -> Result<(), DeliverError> {
    let age = Duration::from_secs(now.saturating_sub(entry.origin.arrived));
    if age >= pass.settings.give_up_after {
        let current = pass.spool.entry(id)?;
        let reply = format!(
            "gave up after {}: {error}",
            humantime::format_duration(pass.settings.give_up_after)
        );
        return badmail(
            pass,
            id,
            &current,
            &current.envelope.recipients,
            reply,
            true,
        );
    }
    let attempts = entry.attempts + 1;
    let wait = pass.settings.retry_after(attempts);
    pass.spool.update(id, |e| {
        e.state = State::Deferred;
        e.attempts = attempts;
        e.drops = drops;
        e.next_try = now + wait.as_secs();
        e.last_error = Some(error.to_string());
    })?;
    pass.counters.deferred.fetch_add(1, Ordering::Relaxed);
    tracing::info!(id = %id, attempts, retry_in = %humantime::format_duration(wait), error, "delivery deferred");
    Ok(())
}
