//! What the crash tests share: how many kills they aim for, and replayable randomness.

/// xorshift64*: enough randomness for kill times, replayable from the printed seed.
pub struct Rng(u64);

impl Rng {
    /// From `OUTPOST_CRASH_SEED`, else the clock; prints the seed so that a run can be replayed.
    pub fn from_env(test: &str) -> Rng {
        let seed = std::env::var("OUTPOST_CRASH_SEED")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        println!("{test}: seed {seed} (OUTPOST_CRASH_SEED={seed} replays it)");
        Rng(seed)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// How many kills must land mid-run: `OUTPOST_CRASH_KILLS`, else `default`.
pub fn kills_wanted(default: usize) -> usize {
    std::env::var("OUTPOST_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
