//! Streaming one message into a file under `tmp/`, and moving it into `queue/` once it is on disk.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use crate::file::{is_clean, FileHeader};
use crate::{Envelope, IoContext, Origin, QueueId, Result, SpoolError};

/// How much of a message's start is held in memory to find its header section, from which the
/// envelope is derived. Header sections larger than this are cut off for that purpose only; the
/// message itself is stored whole.
pub const HEADER_PREREAD: usize = 64 * 1024;

/// What the caller decides once it has seen the header section.
#[derive(Debug, Clone, Default)]
pub struct Resolved {
    pub envelope: Envelope,
    /// Header lines put on top of the message as received (trace headers such as a loop counter).
    pub prefix: Vec<u8>,
    /// Keys recorded in [`crate::UidlSet::Duplicate`] for the message's account in the same
    /// commit as the message (so a crash cannot record them without the message).
    pub marks: Vec<String>,
}

type ResolveFn = Box<dyn FnOnce(&[u8]) -> Resolved + Send>;

/// A message being written. Dropping it without [`MessageWriter::finish`] removes its file, so an
/// aborted download leaves nothing behind.
pub struct MessageWriter {
    id: QueueId,
    origin: Origin,
    /// Present until the header section has been seen and the file's header block written.
    envelope: Option<ResolveFn>,
    marks: Vec<String>,
    preread: Vec<u8>,
    header: Option<FileHeader>,
    file: BufWriter<File>,
    tmp: PathBuf,
    dest: PathBuf,
    size: u64,
    eight_bit: bool,
    finished: bool,
}

/// A message that is complete on disk but not yet indexed: pass it to [`crate::Spool::commit`].
#[derive(Debug, Clone)]
pub struct Spooled {
    pub header: FileHeader,
    /// Bytes of the message as received.
    pub size: u64,
    /// Whether it has bytes outside 7-bit ASCII (SMTP then wants BODY=8BITMIME).
    pub eight_bit: bool,
    /// Duplicate marks to record with it.
    pub marks: Vec<String>,
}

impl Spooled {
    pub fn id(&self) -> QueueId {
        self.header.id
    }
}

impl MessageWriter {
    pub(crate) fn create(
        id: QueueId,
        origin: Origin,
        envelope: ResolveFn,
        tmp: PathBuf,
        dest: PathBuf,
    ) -> Result<MessageWriter> {
        let file = fs::OpenOptions::new()
            .write(true)
            .mode(0o600)
            .create_new(true)
            .open(&tmp)
            .at(&tmp)?;
        Ok(MessageWriter {
            id,
            origin,
            envelope: Some(envelope),
            marks: Vec::new(),
            preread: Vec::new(),
            header: None,
            file: BufWriter::with_capacity(64 * 1024, file),
            tmp,
            dest,
            size: 0,
            eight_bit: false,
            finished: false,
        })
    }

    pub fn id(&self) -> QueueId {
        self.id
    }

    /// Bytes of the message written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends the next bytes of the message.
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        self.size += data.len() as u64;
        self.eight_bit = self.eight_bit || data.iter().any(|&b| b >= 0x80);
        if self.envelope.is_none() {
            return self.file.write_all(data).at(&self.tmp);
        }
        let searched = self.preread.len().saturating_sub(3);
        self.preread.extend_from_slice(data);
        if headers_end(&self.preread[searched..]).is_some() || self.preread.len() >= HEADER_PREREAD
        {
            self.start_body()?;
        }
        Ok(())
    }

    /// Derives the envelope from the header section, writes the file's header block and what was
    /// held back.
    fn start_body(&mut self) -> Result<()> {
        let Some(resolve) = self.envelope.take() else {
            return Ok(());
        };
        let held = std::mem::take(&mut self.preread);
        let end = headers_end(&held).unwrap_or(held.len().min(HEADER_PREREAD));
        let Resolved {
            envelope,
            prefix,
            marks,
        } = resolve(&held[..end]);
        self.marks = marks;
        for value in std::iter::once(&envelope.sender).chain(&envelope.recipients) {
            if !is_clean(value) {
                return Err(SpoolError::Unclean {
                    what: "envelope address",
                    value: value.clone(),
                });
            }
        }
        let header = FileHeader {
            id: self.id,
            origin: self.origin.clone(),
            envelope,
        };
        self.file.write_all(&header.encode()).at(&self.tmp)?;
        self.file.write_all(&prefix).at(&self.tmp)?;
        self.size += prefix.len() as u64;
        self.file.write_all(&held).at(&self.tmp)?;
        self.header = Some(header);
        Ok(())
    }

    /// Fsyncs the file and renames it into `queue/`. The message is not yet indexed: it becomes
    /// visible (and may be acknowledged) only after [`crate::Spool::commit`].
    pub fn finish(mut self) -> Result<Spooled> {
        self.start_body()?;
        self.file.flush().at(&self.tmp)?;
        self.file.get_ref().sync_data().at(&self.tmp)?;
        fs::rename(&self.tmp, &self.dest).at(&self.dest)?;
        self.finished = true;
        let header = self.header.take().expect("start_body wrote the header");
        Ok(Spooled {
            header,
            size: self.size,
            eight_bit: self.eight_bit,
            marks: std::mem::take(&mut self.marks),
        })
    }
}

impl Drop for MessageWriter {
    fn drop(&mut self) {
        if !self.finished {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Offset just past the blank line that ends a header section (CRLF or bare LF form).
fn headers_end(data: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(pos) = data[i..].iter().position(|&b| b == b'\n') {
        let nl = i + pos;
        let rest = &data[nl + 1..];
        if rest.starts_with(b"\r\n") {
            return Some(nl + 3);
        }
        if rest.starts_with(b"\n") {
            return Some(nl + 2);
        }
        i = nl + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::headers_end;

    #[test]
    fn finds_the_end_of_the_header_section() {
        assert_eq!(headers_end(b"A: b\r\n\r\nbody"), Some(8));
        assert_eq!(headers_end(b"A: b\n\nbody"), Some(6));
        assert_eq!(headers_end(b"A: b\r\nC: d\r\n"), None);
    }
}
