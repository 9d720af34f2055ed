//! The pickup folder: anyone drops a `.eml` file into `pickup/` and it is delivered.
//!
//! A file may start with Exchange's replay lines (`X-Sender:`, `X-Receiver:`), which give the
//! envelope; a badmail file is written that way, so moving it here replays it exactly as meant.
//! Without them the envelope comes from the headers: the sender as for fetched mail, the
//! recipients from `To`, `Cc` and `Bcc`, and `Bcc` is removed from the copy that is delivered.
//!
//! Only names ending in `.eml` are read, so a writer creates another name and renames it when
//! done. A file is removed only after the spool commit that holds its message; its name, inode
//! and modification time are recorded as a seen mark in the same commit, so a crash between the
//! commit and the removal never ingests it twice. A file that is not a message, or names no
//! recipient, is moved to badmail with the reason: nothing is silently dropped.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use spool::{Envelope, Origin, Spool, SpoolError, Spooled, UidlSet, HEADER_PREREAD};

use crate::envelope::{recipients_from_headers, replay_address, sender_from_headers};

/// The account name pickup messages carry as their origin.
pub const PICKUP_ACCOUNT: &str = "pickup";

/// What one scan of the pickup folder did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PickupReport {
    pub ingested: usize,
    /// Files whose message was already in the spool (a crash before their removal).
    pub already_ingested: usize,
    /// Files moved to badmail.
    pub badmail: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum PickupError {
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error("pickup file {0}: {1}")]
    Io(PathBuf, io::Error),
}

/// How a file becomes a message.
#[derive(Debug, PartialEq, Eq)]
struct Prepared {
    envelope: Envelope,
    /// Bytes at the start that are replay lines, not message.
    skip: usize,
    /// Byte ranges of the header section to leave out (Bcc).
    strip: Vec<std::ops::Range<usize>>,
}

/// Reads the start of a file and decides its envelope, or why it cannot be mail.
fn prepare(head: &[u8], default_domain: Option<&str>) -> Result<Prepared, String> {
    let mut pos = 0;
    let mut sender = None;
    let mut receivers = Vec::new();
    let mut replay = false;
    while let Some(len) = head[pos..].iter().position(|&b| b == b'\n') {
        let line = String::from_utf8_lossy(&head[pos..pos + len]);
        let line = line.trim_end_matches('\r');
        let (name, value) = line.split_once(':').unwrap_or((line, ""));
        match name.to_ascii_lowercase().as_str() {
            "x-sender" => {
                sender = Some(
                    replay_address(value, default_domain)
                        .ok_or(format!("invalid X-Sender: {value:?}"))?,
                )
            }
            "x-receiver" => receivers.push(
                replay_address(value, default_domain)
                    .filter(|a| !a.is_empty())
                    .ok_or(format!("invalid X-Receiver: {value:?}"))?,
            ),
            "x-endofinjectedxheaders" | "x-createdby" if replay => {}
            _ => break,
        }
        replay = true;
        pos += len + 1;
    }
    let message = &head[pos..];
    let headers_end = header_section_end(message).unwrap_or(message.len());
    let first = message.split(|&b| b == b'\n').next().unwrap_or_default();
    let looks_like_header = first
        .iter()
        .position(|&b| b == b':')
        .is_some_and(|colon| colon > 0 && first[..colon].iter().all(|&b| b.is_ascii_graphic()));
    if message.is_empty() || !looks_like_header {
        return Err("not a message: it does not start with a header field".into());
    }
    let headers = &message[..headers_end];
    let envelope = if replay {
        if receivers.is_empty() {
            return Err("replay lines without an X-Receiver".into());
        }
        Envelope {
            sender: sender.unwrap_or_else(|| sender_from_headers(headers, default_domain)),
            recipients: receivers,
        }
    } else {
        let recipients = recipients_from_headers(headers, default_domain);
        if recipients.is_empty() {
            return Err("no recipient: no X-Receiver line and no address in To, Cc or Bcc".into());
        }
        Envelope {
            sender: sender_from_headers(headers, default_domain),
            recipients,
        }
    };
    let strip = if replay {
        Vec::new()
    } else {
        bcc_ranges(headers)
            .into_iter()
            .map(|r| r.start + pos..r.end + pos)
            .collect()
    };
    Ok(Prepared {
        envelope,
        skip: pos,
        strip,
    })
}

/// Offset just past the blank line ending the header section.
fn header_section_end(data: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(p) = data[i..].iter().position(|&b| b == b'\n') {
        let next = i + p + 1;
        match data.get(next) {
            Some(b'\n') => return Some(next + 1),
            Some(b'\r') if data.get(next + 1) == Some(&b'\n') => return Some(next + 2),
            _ => i = next,
        }
    }
    None
}

/// The byte ranges of every `Bcc:` field in a header section, folded lines included.
fn bcc_ranges(headers: &[u8]) -> Vec<std::ops::Range<usize>> {
    let mut ranges = Vec::new();
    let mut pos = 0;
    let mut inside: Option<usize> = None;
    while pos < headers.len() {
        let end = headers[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(headers.len(), |p| pos + p + 1);
        let line = &headers[pos..end];
        let folded = line.first().is_some_and(|&b| b == b' ' || b == b'\t');
        if !folded {
            if let Some(start) = inside.take() {
                ranges.push(start..pos);
            }
            if line.len() >= 4 && line[..4].eq_ignore_ascii_case(b"bcc:") {
                inside = Some(pos);
            }
        }
        pos = end;
    }
    if let Some(start) = inside {
        ranges.push(start..pos);
    }
    ranges
}

/// A key that tells this file apart from a later one of the same name.
fn file_key(path: &Path, meta: &fs::Metadata) -> String {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("?")
        .replace(|c: char| c.is_control(), "_");
    format!(
        "{name}:{}:{}",
        meta.ino(),
        meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128
    )
}

/// Ingests every `.eml` file in the spool's pickup folder and removes the files (blocking file
/// I/O: call it from a blocking thread in async code).
pub fn ingest_pickup(
    spool: &Spool,
    default_domain: Option<&str>,
) -> Result<PickupReport, PickupError> {
    take_in(spool, default_domain)?.remove_files()
}

/// Files whose messages are durable in the spool and that may now be removed.
#[must_use = "the files stay in pickup/ until remove_files is called"]
pub struct Ingested {
    files: Vec<PathBuf>,
    report: PickupReport,
}

impl Ingested {
    /// Removes the files. A crash before this leaves them in place; the next scan finds their
    /// seen marks and removes them without taking them in again.
    pub fn remove_files(self) -> Result<PickupReport, PickupError> {
        for path in &self.files {
            match fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(PickupError::Io(path.clone(), e)),
            }
        }
        if self.report != PickupReport::default() {
            tracing::info!(report = ?self.report, "pickup folder scanned");
        }
        Ok(self.report)
    }
}

/// Takes every `.eml` file of the pickup folder into the spool (one commit for all) and returns
/// the files to remove; see [`ingest_pickup`].
pub fn take_in(spool: &Spool, default_domain: Option<&str>) -> Result<Ingested, PickupError> {
    let dir = spool.pickup_dir();
    let io_err = |p: &Path| {
        let p = p.to_path_buf();
        move |e| PickupError::Io(p, e)
    };
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .map_err(io_err(&dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "eml") && p.is_file())
        .collect();
    files.sort();
    let seen = spool.uidls(UidlSet::Seen, PICKUP_ACCOUNT)?;
    let mut report = PickupReport::default();
    let mut present = HashSet::new();
    let mut batch: Vec<(Spooled, PathBuf)> = Vec::new();
    let mut already: Vec<PathBuf> = Vec::new();
    for path in files {
        let Ok(meta) = fs::metadata(&path) else {
            continue;
        };
        let key = file_key(&path, &meta);
        present.insert(key.clone());
        if seen.contains_key(&key) {
            already.push(path);
            continue;
        }
        let mut file = File::open(&path).map_err(io_err(&path))?;
        let mut head = Vec::new();
        (&mut file)
            .take(HEADER_PREREAD as u64)
            .read_to_end(&mut head)
            .map_err(io_err(&path))?;
        let prepared = match prepare(&head, default_domain) {
            Ok(p) => p,
            Err(reason) => {
                spool.badmail_file(&path, &reason)?;
                report.badmail += 1;
                continue;
            }
        };
        let origin = Origin {
            account: PICKUP_ACCOUNT.into(),
            uidl: Some(key),
            arrived: spool::now(),
        };
        let envelope = prepared.envelope.clone();
        let mut writer = spool.writer(origin, move |_| envelope)?;
        let mut at = prepared.skip;
        for range in &prepared.strip {
            writer.write(&head[at..range.start])?;
            at = range.end;
        }
        writer.write(&head[at..])?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = file.read(&mut buf).map_err(io_err(&path))?;
            if n == 0 {
                break;
            }
            writer.write(&buf[..n])?;
        }
        batch.push((writer.finish()?, path));
    }
    let spooled: Vec<Spooled> = batch.iter().map(|(s, _)| s.clone()).collect();
    spool.commit(&spooled)?;
    report.ingested = batch.len();
    report.already_ingested = already.len();
    let gone: Vec<&str> = seen
        .keys()
        .map(String::as_str)
        .filter(|k| !present.contains(*k))
        .collect();
    spool.forget_uidls(UidlSet::Seen, PICKUP_ACCOUNT, gone)?;
    let files = batch.into_iter().map(|(_, p)| p).chain(already).collect();
    Ok(Ingested { files, report })
}

/// Watches the pickup folder: scans it every `every` (a periodic rescan is what finds files
/// renamed into place by any writer, on any file system), until `stop` is notified. Each scan
/// that took something in is passed to `scanned`, so that the caller can wake the deliverer.
/// A failed scan is logged and retried at the next tick; it never stops the watcher.
pub async fn watch(
    spool: Spool,
    default_domain: Option<String>,
    every: std::time::Duration,
    stop: std::sync::Arc<tokio::sync::Notify>,
    scanned: impl Fn(PickupReport),
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.notified() => return,
        }
        let (spool, domain) = (spool.clone(), default_domain.clone());
        match tokio::task::spawn_blocking(move || ingest_pickup(&spool, domain.as_deref())).await {
            Ok(Ok(report)) if report != PickupReport::default() => scanned(report),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %e, "pickup scan failed; trying again at the next tick")
            }
            Err(e) => {
                tracing::error!(error = %e, "pickup scan panicked; trying again at the next tick")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_lines_give_the_envelope() {
        let file = b"X-Sender: <a@example.net>\r\nX-Receiver: b@example.org\r\nX-Receiver: <c@example.org>\r\nFrom: x@y.z\r\nTo: other@example.org\r\n\r\nbody\r\n";
        let p = prepare(file, None).unwrap();
        assert_eq!(p.envelope.sender, "a@example.net");
        assert_eq!(p.envelope.recipients, ["b@example.org", "c@example.org"]);
        assert_eq!(&file[p.skip..p.skip + 5], b"From:");
        assert!(p.strip.is_empty());
    }

    #[test]
    fn headers_give_the_envelope_and_bcc_is_stripped() {
        let file = b"From: Ann <ann@example.net>\r\nTo: b@example.org\r\nBcc: secret@example.org,\r\n  other@example.org\r\nSubject: hi\r\n\r\nBcc: in the body stays\r\n";
        let p = prepare(file, None).unwrap();
        assert_eq!(p.envelope.sender, "ann@example.net");
        assert_eq!(
            p.envelope.recipients,
            ["b@example.org", "secret@example.org", "other@example.org"]
        );
        assert_eq!(p.strip.len(), 1);
        let mut kept = file[..p.strip[0].start].to_vec();
        kept.extend_from_slice(&file[p.strip[0].end..]);
        assert_eq!(kept, b"From: Ann <ann@example.net>\r\nTo: b@example.org\r\nSubject: hi\r\n\r\nBcc: in the body stays\r\n");
    }

    #[tokio::test]
    async fn the_watcher_takes_in_a_file_renamed_into_place() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let stop = std::sync::Arc::new(tokio::sync::Notify::new());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let watcher = tokio::spawn(watch(
            spool.clone(),
            None,
            std::time::Duration::from_millis(50),
            stop.clone(),
            move |r| {
                let _ = tx.send(r);
            },
        ));
        let pickup = spool.pickup_dir();
        std::fs::write(
            pickup.join("new.tmp"),
            "To: a@example.org\r\nSubject: w\r\n\r\nx\r\n",
        )
        .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert!(
            rx.try_recv().is_err(),
            "a file not yet named .eml is left alone"
        );
        std::fs::rename(pickup.join("new.tmp"), pickup.join("new.eml")).unwrap();
        let report = tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(report.ingested, 1);
        assert_eq!(spool.list().unwrap().len(), 1);
        stop.notify_one();
        watcher.await.unwrap();
    }

    #[test]
    fn what_cannot_be_mail_says_why() {
        assert!(prepare(b"", None).unwrap_err().contains("not a message"));
        assert!(prepare(b"\x89PNG\r\n\x1a\n\0\0\0", None)
            .unwrap_err()
            .contains("not a message"));
        assert!(prepare(b"Subject: nobody\r\n\r\nbody", None)
            .unwrap_err()
            .contains("no recipient"));
        assert!(prepare(b"X-Sender: a@b.c\r\nSubject: x\r\n\r\n", None)
            .unwrap_err()
            .contains("X-Receiver"));
        assert!(
            prepare(b"X-Receiver: not an address\r\nSubject: x\r\n\r\n", None)
                .unwrap_err()
                .contains("invalid X-Receiver")
        );
    }
}
