//! Exponential backoff with jitter, shared by job retries and webhook retries.

use std::time::Duration;

/// `base * 2^(attempt-1)`, capped at `cap`, scaled by a random factor in [0.5, 1]
/// so that many retries scheduled at once spread out.
pub fn exponential(base: Duration, attempt: u32, cap: Duration) -> Duration {
    let exponent = attempt.saturating_sub(1).min(30);
    let full = base.saturating_mul(1 << exponent).min(cap);
    // 80 random bits of a fresh ULID are plenty for jitter.
    let jitter = 0.5 + 0.5 * (ulid::Ulid::generate().random() as f64 / (1u128 << 80) as f64);
    full.mul_f64(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_within_jitter_and_caps() {
        let base = Duration::from_millis(100);
        let cap = Duration::from_secs(60);
        for attempt in 1..=4 {
            let full = base * (1 << (attempt - 1));
            let got = exponential(base, attempt, cap);
            assert!(got >= full / 2 && got <= full, "attempt {attempt}: {got:?}");
        }
        assert!(exponential(base, 40, cap) <= cap);
        assert!(exponential(base, 40, cap) >= cap / 2);
        assert_eq!(exponential(Duration::ZERO, 3, cap), Duration::ZERO);
    }
}
