//! How the broker waits between attempts to reach what is away (the database, an MQTT broker, a
//! notification receiver): delays that grow exponentially, each stretched by a random part of
//! itself (jitter, from `backon`), so that the instances and connections that lost the same
//! service do not all come back at the same instant. Every retry loop takes its delays here.

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use std::time::Duration;

/// The delays between the attempts of one retry loop.
pub struct Backoff {
    policy: ExponentialBuilder,
    delays: ExponentialBackoff,
    max: Duration,
}

impl Backoff {
    /// Delays from `first`, multiplied by `factor` after each attempt up to `max`, each one
    /// stretched by a random part of itself (d becomes between d and 2d); without end.
    pub fn new(first: Duration, factor: f32, max: Duration) -> Backoff {
        let policy = ExponentialBuilder::new()
            .with_min_delay(first)
            .with_factor(factor)
            .with_max_delay(max)
            .with_jitter()
            .without_max_times();
        Backoff {
            delays: policy.build(),
            policy,
            max,
        }
    }

    /// The policy of reconnecting to a service that is away: from 200 ms, doubling to 5 s.
    pub fn reconnect() -> Backoff {
        Backoff::new(Duration::from_millis(200), 2.0, Duration::from_secs(5))
    }

    /// The delay to wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        // The policy has no maximum of attempts: its delays never run out.
        self.delays.next().unwrap_or(self.max)
    }

    /// Starts again from the first delay (the service answered).
    pub fn reset(&mut self) {
        self.delays = self.policy.build();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_cap_with_jitter_and_start_again_after_a_reset() {
        let (first, max) = (Duration::from_millis(200), Duration::from_secs(5));
        let mut b = Backoff::reconnect();
        let delays: Vec<Duration> = (0..8).map(|_| b.next_delay()).collect();
        let mut base = first;
        for d in &delays {
            assert!(*d >= base && *d <= base * 2, "{d:?} for a base of {base:?}");
            base = (base * 2).min(max);
        }
        assert!(delays[7] >= max);
        b.reset();
        assert!(b.next_delay() <= first * 2);
    }
}
