//! A token bucket: `rate` per second sustained, `burst` at once. Every client stream (collab
//! messages, room signaling messages and offers, WebSocket pings) is charged through one.

use std::time::Instant;

#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    refilled: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate_per_s: u32, burst: u32, now: Instant) -> TokenBucket {
        TokenBucket {
            rate: f64::from(rate_per_s),
            burst: f64::from(burst.max(1)),
            tokens: f64::from(burst.max(1)),
            refilled: now,
        }
    }

    /// Takes one token; `false` when the bucket is empty (the caller refuses).
    pub fn take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }

    /// Charges `cost` for work already done (its cost was known only after it): `false` once
    /// the bucket is in debt (the caller stops serving that client).
    pub fn charge(&mut self, now: Instant, cost: f64) -> bool {
        self.refill(now);
        self.tokens -= cost;
        self.tokens >= 0.0
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.refilled = now;
    }
}

#[cfg(test)]
mod tests {
    use super::TokenBucket;
    use std::time::{Duration, Instant};

    #[test]
    fn a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 5, t0);
        assert_eq!((0..8).filter(|_| b.take(t0)).count(), 5);
        // 0.5 s later: 5 more.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!((0..8).filter(|_| b.take(t1)).count(), 5);
        // Never above the burst, however long it rested.
        let t2 = t1 + Duration::from_secs(3600);
        assert_eq!((0..8).filter(|_| b.take(t2)).count(), 5);
    }

    #[test]
    fn work_is_charged_after_the_fact_and_debt_refills() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(100, 1000, t0);
        assert!(b.charge(t0, 900.0));
        assert!(!b.charge(t0, 300.0), "in debt");
        // 2 s at 100/s pays the 200 of debt back.
        assert!(b.charge(t0 + Duration::from_secs(2), 0.0));
    }
}
