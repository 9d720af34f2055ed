//! The DATA stream of a message, sans IO (RFC 5321 §4.5.2): line endings normalised to CRLF, a dot
//! doubled at the start of every line, and the `.` terminator, for input in any chunking and
//! without holding a line.
//!
//! Normalising matters because mail at rest often has bare LF or lone CR, which SMTP servers
//! reject or mangle (RFC 5321 §2.3.8); a message that ends without a line break gets one, and one
//! that ends with CRLF gets no extra blank line.

/// Encodes one message body.
#[derive(Debug, Clone)]
pub struct DataEncoder {
    at_line_start: bool,
    /// The previous input byte was a CR whose LF may still come in the next chunk.
    pending_cr: bool,
}

impl Default for DataEncoder {
    fn default() -> Self {
        DataEncoder {
            at_line_start: true,
            pending_cr: false,
        }
    }
}

impl DataEncoder {
    pub fn new() -> Self {
        Self::default()
    }

    fn end_line(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"\r\n");
        self.at_line_start = true;
    }

    /// Encodes the next chunk of the message, appending wire bytes to `out`.
    pub fn encode(&mut self, input: &[u8], out: &mut Vec<u8>) {
        out.reserve(input.len() + input.len() / 32 + 8);
        for &b in input {
            if self.pending_cr {
                self.pending_cr = false;
                self.end_line(out);
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\r' => self.pending_cr = true,
                b'\n' => self.end_line(out),
                _ => {
                    if self.at_line_start && b == b'.' {
                        out.push(b'.');
                    }
                    out.push(b);
                    self.at_line_start = false;
                }
            }
        }
    }

    /// Ends the message: closes an unfinished line and adds the terminator.
    pub fn finish(mut self, out: &mut Vec<u8>) {
        if self.pending_cr {
            self.pending_cr = false;
            self.end_line(out);
        }
        if !self.at_line_start {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
    }
}

/// Whether a chunk has bytes outside 7-bit ASCII (then BODY=8BITMIME is due, RFC 6152).
pub fn has_eight_bit(chunk: &[u8]) -> bool {
    chunk.iter().any(|&b| b >= 0x80)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode_split_everywhere(input: &[u8]) -> Vec<u8> {
        let mut reference = None;
        for split in 0..=input.len() {
            let mut encoder = DataEncoder::new();
            let mut out = Vec::new();
            encoder.encode(&input[..split], &mut out);
            encoder.encode(&input[split..], &mut out);
            encoder.finish(&mut out);
            match &reference {
                None => reference = Some(out),
                Some(r) => assert_eq!(r, &out, "split at {split}"),
            }
        }
        reference.unwrap()
    }

    #[test]
    fn crlf_stays_and_no_blank_line_is_added() {
        assert_eq!(encode_split_everywhere(b"a\r\nb\r\n"), b"a\r\nb\r\n.\r\n");
    }

    #[test]
    fn bare_lf_and_lone_cr_become_crlf() {
        assert_eq!(
            encode_split_everywhere(b"a\nb\rc\r\n"),
            b"a\r\nb\r\nc\r\n.\r\n"
        );
        assert_eq!(encode_split_everywhere(b"a\r"), b"a\r\n.\r\n");
        assert_eq!(encode_split_everywhere(b"\r\r\n"), b"\r\n\r\n.\r\n");
    }

    #[test]
    fn dots_are_doubled_after_every_kind_of_line_end() {
        assert_eq!(
            encode_split_everywhere(b".\r\n..\n.x\r.y"),
            b"..\r\n...\r\n..x\r\n..y\r\n.\r\n"
        );
    }

    #[test]
    fn an_unterminated_last_line_is_closed() {
        assert_eq!(
            encode_split_everywhere(b"no newline"),
            b"no newline\r\n.\r\n"
        );
        assert_eq!(encode_split_everywhere(b""), b".\r\n");
    }

    #[test]
    fn nul_and_eight_bit_pass_through() {
        assert_eq!(
            encode_split_everywhere(b"a\0\xc3\xa9\n"),
            b"a\0\xc3\xa9\r\n.\r\n"
        );
        assert!(has_eight_bit(b"caf\xc3\xa9"));
        assert!(!has_eight_bit(b"plain\0text"));
    }
}
