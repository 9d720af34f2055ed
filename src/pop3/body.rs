//! The body of a multi-line POP3 response (RFC 1939 §3), sans IO: removes the byte-stuffing dot
//! and finds the terminating `.` line, in any chunking of the input, without holding a line.
//!
//! A line is what ends in LF (a CR before it is kept as data), so bare-LF servers work too. Per
//! RFC 1939 §3 a line that starts with `.` has that dot removed, whatever follows; a line that is
//! just `.` ends the body. Bytes are otherwise passed through as received (NUL included): the
//! message is stored exactly as the server sent it.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the first byte of a line.
    LineStart,
    /// Inside a line.
    InLine,
    /// After a leading dot.
    Dot,
    /// After a leading dot and a CR.
    DotCr,
    Done,
}

/// Decodes one multi-line body. Memory: none beyond the caller's output buffer.
#[derive(Debug, Clone)]
pub struct BodyDecoder {
    state: State,
}

impl Default for BodyDecoder {
    fn default() -> Self {
        BodyDecoder {
            state: State::LineStart,
        }
    }
}

impl BodyDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes from `input`, appending body bytes to `out`. Returns how many input bytes were used:
    /// all of them, unless the terminator was reached, in which case the bytes after it (the next
    /// pipelined reply) are left unused.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> usize {
        let mut i = 0;
        while i < input.len() && self.state != State::Done {
            match self.state {
                State::InLine => {
                    // Fast path: copy up to and including the next LF in one go.
                    match input[i..].iter().position(|&b| b == b'\n') {
                        Some(pos) => {
                            out.extend_from_slice(&input[i..=i + pos]);
                            i += pos + 1;
                            self.state = State::LineStart;
                        }
                        None => {
                            out.extend_from_slice(&input[i..]);
                            i = input.len();
                        }
                    }
                }
                State::LineStart => {
                    if input[i] == b'.' {
                        self.state = State::Dot;
                        i += 1;
                    } else {
                        self.state = State::InLine;
                    }
                }
                State::Dot => {
                    match input[i] {
                        b'\r' => self.state = State::DotCr,
                        b'\n' => self.state = State::Done,
                        _ => self.state = State::InLine,
                    }
                    if self.state != State::InLine {
                        i += 1;
                    }
                }
                State::DotCr => {
                    if input[i] == b'\n' {
                        self.state = State::Done;
                        i += 1;
                    } else {
                        // ".\rX": the dot was stuffing; the CR is data.
                        out.push(b'\r');
                        self.state = State::InLine;
                    }
                }
                State::Done => unreachable!(),
            }
        }
        i
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `wire` fed in two pieces split at every position, and checks that every split gives
    /// the same body and leaves the same rest.
    fn decode_split_everywhere(wire: &[u8]) -> (Vec<u8>, Vec<u8>, bool) {
        let mut reference = None;
        for split in 0..=wire.len() {
            let mut decoder = BodyDecoder::new();
            let mut out = Vec::new();
            let mut rest = Vec::new();
            for piece in [&wire[..split], &wire[split..]] {
                if decoder.is_done() {
                    rest.extend_from_slice(piece);
                    continue;
                }
                let used = decoder.decode(piece, &mut out);
                rest.extend_from_slice(&piece[used..]);
            }
            let result = (out, rest, decoder.is_done());
            match &reference {
                None => reference = Some(result),
                Some(r) => assert_eq!(r, &result, "split at {split}"),
            }
        }
        reference.unwrap()
    }

    #[test]
    fn unstuffs_and_stops_at_the_terminator() {
        let (body, rest, done) = decode_split_everywhere(
            b"Subject: x\r\n\r\n..hidden\r\n..\r\nend\r\n.\r\n+OK next\r\n",
        );
        assert!(done);
        assert_eq!(body, b"Subject: x\r\n\r\n.hidden\r\n.\r\nend\r\n");
        assert_eq!(rest, b"+OK next\r\n");
    }

    #[test]
    fn an_empty_body() {
        let (body, rest, done) = decode_split_everywhere(b".\r\n");
        assert!(done && body.is_empty() && rest.is_empty());
    }

    #[test]
    fn bare_lf_and_nul_pass_through() {
        let (body, _, done) = decode_split_everywhere(b"a\nb\0c\r\n..d\n.\n");
        assert!(done);
        assert_eq!(body, b"a\nb\0c\r\n.d\n");
    }

    #[test]
    fn a_dot_then_cr_that_is_not_the_end() {
        let (body, _, done) = decode_split_everywhere(b".\rx\r\n.\r\n");
        assert!(done);
        assert_eq!(body, b"\rx\r\n");
    }

    #[test]
    fn an_unterminated_body_is_never_done() {
        let (body, rest, done) = decode_split_everywhere(b"line\r\n.. still going\r\n");
        assert!(!done);
        assert_eq!(body, b"line\r\n. still going\r\n");
        assert!(rest.is_empty());
    }

    #[test]
    fn a_one_megabyte_line_streams_through() {
        let mut wire = vec![b'x'; 1 << 20];
        wire.extend_from_slice(b"\r\n.\r\n");
        let mut decoder = BodyDecoder::new();
        let mut out = Vec::new();
        let mut total = 0;
        for chunk in wire.chunks(4096) {
            out.clear();
            total += decoder.decode(chunk, &mut out);
            assert!(out.len() <= 4096);
        }
        assert!(decoder.is_done());
        assert_eq!(total, wire.len());
    }

    #[test]
    fn byte_by_byte() {
        let wire = b"..\r\n.a\r\n\r\n.\r\n";
        let mut decoder = BodyDecoder::new();
        let mut out = Vec::new();
        for b in wire {
            assert_eq!(decoder.decode(&[*b], &mut out), 1);
        }
        assert!(decoder.is_done());
        assert_eq!(out, b".\r\na\r\n\r\n");
    }
}
