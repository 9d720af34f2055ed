//! Randomised tests of the sans-IO parsers and encoders (a poor man's fuzzing, replayable with
//! `OUTPOST_RANDOM_SEED`): thousands of inputs made of the bytes that matter (dots, CR, LF, NUL,
//! 8-bit), split at random points. Nothing may panic, and SMTP's encoding undone by POP3's decoding
//! (the same dot-stuffing) must give back the message with its line ends normalised.

use outpost::pop3::body::BodyDecoder;
use outpost::pop3::reply::{parse_reply, Capabilities};
use outpost::smtp::data::DataEncoder;
use outpost::smtp::reply::ReplyBuilder;

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    }
    fn bytes(&mut self, max: usize) -> Vec<u8> {
        const ALPHABET: &[u8] = b"..\r\r\n\n\nab \0\xc3\xa9-:+OK";
        let len = self.below(max as u64 + 1) as usize;
        (0..len)
            .map(|_| ALPHABET[self.below(ALPHABET.len() as u64) as usize])
            .collect()
    }
    /// `data` cut into pieces at random points.
    fn chunks<'a>(&mut self, data: &'a [u8]) -> Vec<&'a [u8]> {
        let mut out = Vec::new();
        let mut rest = data;
        while !rest.is_empty() {
            let n = 1 + self.below(rest.len() as u64) as usize;
            out.push(&rest[..n]);
            rest = &rest[n..];
        }
        out
    }
}

fn rng() -> Rng {
    let seed = std::env::var("OUTPOST_RANDOM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED_0F0D_7905_u64);
    Rng(seed | 1)
}

/// CRLF, lone CR and lone LF all become CRLF; a last line without an end gets one.
fn normalised(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'\r' if input.get(i + 1) == Some(&b'\n') => {
                out.extend_from_slice(b"\r\n");
                i += 1;
            }
            b'\r' | b'\n' => out.extend_from_slice(b"\r\n"),
            b => out.push(b),
        }
        i += 1;
    }
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[test]
fn smtp_stuffing_undone_by_pop3_unstuffing_gives_the_normalised_message() {
    let mut rng = rng();
    for case in 0..5000 {
        let message = rng.bytes(300);
        let mut encoder = DataEncoder::new();
        let mut wire = Vec::new();
        for piece in rng.chunks(&message) {
            encoder.encode(piece, &mut wire);
        }
        encoder.finish(&mut wire);
        wire.extend_from_slice(b"+OK next reply\r\n");
        let mut decoder = BodyDecoder::new();
        let mut decoded = Vec::new();
        let mut used = 0;
        for piece in rng.chunks(&wire) {
            if decoder.is_done() {
                break;
            }
            used += decoder.decode(piece, &mut decoded);
        }
        assert!(decoder.is_done(), "case {case}: {message:?}");
        assert_eq!(
            &wire[used..],
            b"+OK next reply\r\n",
            "case {case}: the next reply is left alone"
        );
        assert_eq!(decoded, normalised(&message), "case {case}: {message:?}");
    }
}

#[test]
fn garbage_never_panics_the_parsers() {
    let mut rng = rng();
    for _ in 0..5000 {
        let input = rng.bytes(500);
        let mut decoder = BodyDecoder::new();
        let mut out = Vec::new();
        let mut used = 0;
        for piece in rng.chunks(&input) {
            used += decoder.decode(piece, &mut out);
        }
        assert!(used <= input.len() && out.len() <= input.len());
        for line in input.split(|&b| b == b'\n') {
            let _ = parse_reply(line);
            let text = String::from_utf8_lossy(line);
            let _ = ReplyBuilder::default().push(&text);
            Capabilities::default().add_line(&text);
        }
        let _ = outpost::envelope::sender_from_headers(&input, Some("example.org"));
        let _ = outpost::envelope::recipients_from_headers(&input, None);
        let _ = outpost::routing::header_fields(&input);
    }
}
