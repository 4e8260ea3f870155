//! The seeded randomness of the differential tests: every run picks a seed, prints it, and
//! `TWINLINK_DIFF_SEED` replays it; their end ([`conclude`]).

/// SplitMix64: small, seedable, good enough to pick test data.
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in 0..n.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// A number in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// One of `items`.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// A number from the environment variable `name`, if set.
pub fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// The seed of a run: `TWINLINK_DIFF_SEED`, else the clock.
pub fn seed() -> u64 {
    env_number("TWINLINK_DIFF_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    })
}

/// Ends a differential test that ran on the database at `url`: dropped when every comparison
/// agreed; otherwise kept for a look, and the test fails with the seed that replays it and the
/// first failures.
pub fn conclude(url: &str, seed: u64, failures: &[String]) {
    if failures.is_empty() {
        super::drop_database(url);
    }
    assert!(
        failures.is_empty(),
        "seed {seed} (TWINLINK_DIFF_SEED={seed}); database {url} kept; {} failure(s):\n{}",
        failures.len(),
        failures[..failures.len().min(20)].join("\n\n")
    );
}
