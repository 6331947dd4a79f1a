use std::time::Instant;

/// Keeps a subscriber's outgoing RTP timeline continuous when the forwarded simulcast layer
/// changes: each layer has its own random RTP timestamp offset, so switching layers without
/// rewriting would make the receiver's jitter buffer see a jump.
#[derive(Debug, Default, Clone)]
pub struct TimeRewriter {
    offset: u64,
    last_out: Option<(u64, Instant)>,
}

impl TimeRewriter {
    /// Called on the first frame of a new layer (always a keyframe).
    pub fn switch(&mut self, incoming: u64, arrival: Instant, clock_hz: u32) {
        let target = match self.last_out {
            None => incoming,
            Some((last, at)) => {
                let elapsed = arrival.saturating_duration_since(at);
                let ticks = (elapsed.as_micros() as u64 * clock_hz as u64 / 1_000_000).max(1);
                last.wrapping_add(ticks)
            }
        };
        self.offset = target.wrapping_sub(incoming);
    }

    pub fn rewrite(&mut self, incoming: u64, arrival: Instant) -> u64 {
        let out = incoming.wrapping_add(self.offset);
        self.last_out = Some((out, arrival));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn switching_layers_keeps_time_advancing_by_wall_clock() {
        let t0 = Instant::now();
        let mut r = TimeRewriter::default();
        r.switch(1_000_000, t0, 90_000);
        assert_eq!(r.rewrite(1_000_000, t0), 1_000_000);
        assert_eq!(
            r.rewrite(1_003_000, t0 + Duration::from_millis(33)),
            1_003_000
        );
        // Another layer, far away on its own random base, 33 ms later.
        let t1 = t0 + Duration::from_millis(66);
        r.switch(77, t1, 90_000);
        let out = r.rewrite(77, t1);
        assert_eq!(out, 1_003_000 + 2_970);
        assert_eq!(r.rewrite(77 + 3000, t1), out + 3000);
    }
}
