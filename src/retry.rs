//! Retries for transient faults. A fault is transient only when a status or error code
//! says so (HTTP 5xx, 429 and SlowDown; refused, reset or timed-out connections; Postgres
//! SQLSTATE classes 08, 53, 57P and 40001), never because of what a message says. The run
//! retries its fetch phase, which writes nothing, with exponential backoff and jitter.

use std::time::Duration;

/// A failure that may clear by itself: the source was unreachable or overloaded.
#[derive(Debug, thiserror::Error)]
#[error("{0} (transient)")]
pub struct Transient(pub String);

/// True when any error in the chain was marked transient.
pub fn is_transient(err: &anyhow::Error) -> bool {
    // as the error itself, or as a context added on the way up
    err.downcast_ref::<Transient>().is_some() || err.chain().any(|e| e.is::<Transient>())
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 = no retry).
    pub attempts: u32,
    pub initial_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 4,
            initial_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `next` (2, 3, …): doubling from the initial delay, capped,
    /// with "full jitter" between half and all of it so that tenants do not retry in step.
    pub fn delay(&self, next: u32, jitter: f64) -> Duration {
        let exp = self
            .initial_delay
            .saturating_mul(1u32 << (next.saturating_sub(2)).min(20));
        let capped = exp.min(self.max_delay);
        capped.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
    }
}

/// A number in [0, 1) that differs between processes and calls.
pub fn jitter() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mixed =
        (nanos as u64 ^ (std::process::id() as u64) << 32).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (mixed >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_then_cap() {
        let p = RetryPolicy {
            attempts: 6,
            initial_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(10),
        };
        assert_eq!(p.delay(2, 1.0), Duration::from_secs(2));
        assert_eq!(p.delay(3, 1.0), Duration::from_secs(4));
        assert_eq!(p.delay(4, 1.0), Duration::from_secs(8));
        assert_eq!(p.delay(5, 1.0), Duration::from_secs(10));
        assert_eq!(p.delay(3, 0.0), Duration::from_secs(2));
    }

    #[test]
    fn transient_is_found_anywhere_in_the_chain() {
        let e = anyhow::Error::new(Transient("connection refused".into())).context("reading x");
        assert!(is_transient(&e));
        let e = anyhow::anyhow!("cannot connect")
            .context(Transient("unreachable".into()))
            .context("source `pg`");
        assert!(is_transient(&e));
        assert!(!is_transient(&anyhow::anyhow!("HTTP 403")));
    }

    #[test]
    fn jitter_stays_in_range() {
        for _ in 0..100 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j));
        }
    }
}
