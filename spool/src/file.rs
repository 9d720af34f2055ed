//! The on-disk form of one spooled message: a short header block of `Name: value` lines, a blank
//! line, then the message bytes exactly as received.
//!
//! The header block is ours, not the message's: it carries what the index would otherwise be the
//! only copy of (origin and envelope), so that the index can be rebuilt from the files alone.

use std::io::{self, BufRead, Read};

use crate::{Envelope, Origin, QueueId};

/// First line of every message file; the number is the format version.
pub(crate) const MAGIC: &str = "X-Outpost-Spool: 1";

/// A header block longer than this is not ours: refuse it instead of reading without bound.
const MAX_HEADER_BLOCK: usize = 1024 * 1024;

/// What the header block of a message file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileHeader {
    pub id: QueueId,
    pub origin: Origin,
    pub envelope: Envelope,
}

/// A value may not contain a line break (it would end the header block early) nor other
/// control characters. Callers validate before they get here; this is the last line of defence.
pub(crate) fn is_clean(value: &str) -> bool {
    !value.chars().any(|c| c.is_control())
}

impl FileHeader {
    /// The bytes of the block, blank line included.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = String::with_capacity(256);
        out.push_str(MAGIC);
        out.push('\n');
        push(&mut out, "Id", &self.id.to_string());
        push(&mut out, "Account", &self.origin.account);
        if let Some(uidl) = &self.origin.uidl {
            push(&mut out, "Uidl", uidl);
        }
        push(&mut out, "Arrived", &self.origin.arrived.to_string());
        push(&mut out, "Sender", &self.envelope.sender);
        for rcpt in &self.envelope.recipients {
            push(&mut out, "Recipient", rcpt);
        }
        out.push('\n');
        out.into_bytes()
    }

    /// Reads the block from the start of a message file and returns it with its length in bytes,
    /// which is where the message begins.
    pub(crate) fn decode(reader: impl Read) -> io::Result<(FileHeader, u64)> {
        let mut reader = io::BufReader::new(reader.take(MAX_HEADER_BLOCK as u64));
        let mut consumed = 0u64;
        let mut line = String::new();
        let mut fields: Vec<(String, String)> = Vec::new();
        let mut first = true;
        loop {
            line.clear();
            let n = reader.read_line(&mut line)?;
            if n == 0 {
                return Err(invalid("message file ends inside its header block"));
            }
            consumed += n as u64;
            let text = line
                .strip_suffix('\n')
                .ok_or_else(|| invalid("header block too long"))?;
            if first {
                if text != MAGIC {
                    return Err(invalid("not an outpost spool file"));
                }
                first = false;
                continue;
            }
            if text.is_empty() {
                break;
            }
            let (name, value) = text
                .split_once(": ")
                .or_else(|| text.split_once(':'))
                .ok_or_else(|| invalid("header line without a colon"))?;
            fields.push((name.to_ascii_lowercase(), value.to_string()));
        }
        let get = |name: &str| {
            fields
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        let id = get("id")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| invalid("missing or bad Id"))?;
        let arrived = get("arrived")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| invalid("missing or bad Arrived"))?;
        let header = FileHeader {
            id,
            origin: Origin {
                account: get("account").ok_or_else(|| invalid("missing Account"))?,
                uidl: get("uidl"),
                arrived,
            },
            envelope: Envelope {
                sender: get("sender").unwrap_or_default(),
                recipients: fields
                    .iter()
                    .filter(|(n, _)| n == "recipient")
                    .map(|(_, v)| v.clone())
                    .collect(),
            },
        };
        Ok((header, consumed))
    }
}

fn push(out: &mut String, name: &str, value: &str) {
    out.push_str(name);
    out.push_str(": ");
    out.push_str(value);
    out.push('\n');
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_block_round_trips() {
        let header = FileHeader {
            id: QueueId(0x1234),
            origin: Origin {
                account: "office".into(),
                uidl: Some("UID-1.2".into()),
                arrived: 1_700_000_000,
            },
            envelope: Envelope {
                sender: "a@example.net".into(),
                recipients: vec!["x@example.org".into(), "y@example.org".into()],
            },
        };
        let mut bytes = header.encode();
        let len = bytes.len() as u64;
        bytes.extend_from_slice(b"Subject: hi\r\n\r\nbody\r\n");
        let (decoded, consumed) = FileHeader::decode(&bytes[..]).unwrap();
        assert_eq!(decoded, header);
        assert_eq!(consumed, len);
    }

    #[test]
    fn refuses_foreign_files() {
        assert!(FileHeader::decode(&b"From: someone\n\nbody"[..]).is_err());
        assert!(FileHeader::decode(&b"X-Outpost-Spool: 1\nId: 0000000000000001\n"[..]).is_err());
    }
}
