use std::time::{Duration, Instant};

/// Keyframe requests (PLI/FIR) towards a publisher are expensive: a keyframe is 5-10x a delta
/// frame. Many subscribers asking at once must become one request.
#[derive(Debug, Default, Clone)]
pub struct KeyframeLimiter {
    last: Option<Instant>,
}

pub const KEYFRAME_INTERVAL: Duration = Duration::from_millis(500);

impl KeyframeLimiter {
    pub fn allow(&mut self, now: Instant) -> bool {
        match self.last {
            Some(t) if now.saturating_duration_since(t) < KEYFRAME_INTERVAL => false,
            _ => {
                self.last = Some(now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn many_requests_in_a_burst_become_one() {
        let t0 = Instant::now();
        let mut l = KeyframeLimiter::default();
        assert!(l.allow(t0));
        for ms in 1..500 {
            assert!(!l.allow(t0 + Duration::from_millis(ms)));
        }
        assert!(l.allow(t0 + Duration::from_millis(500)));
    }
}
