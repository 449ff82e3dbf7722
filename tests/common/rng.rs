//! A tiny seeded xorshift64* generator: reproducible schedules, delays and
//! sizes without another dependency. Shared by the library's tests
//! (`tests/common`) and the command's (`cli/tests/common`, by `#[path]`).

use std::time::Duration;

pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// A random duration in `0..=max_ms` milliseconds, with microsecond
    /// resolution.
    pub fn millis(&mut self, max_ms: u64) -> Duration {
        Duration::from_micros(self.below(max_ms * 1000 + 1))
    }

    /// Uniform in `lo..=hi` milliseconds.
    pub fn millis_between(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo + 1))
    }
}
