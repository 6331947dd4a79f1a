//! Encoder speed and lag per rendition, from the transcoder's counters sampled once a second.
//! Sans-IO: fed (wall time, each rendition's furthest part end), so tests drive it in virtual
//! time.
//!
//! Speed is media produced per wall second over the last [`WINDOW`] (a cumulative ratio would
//! hide a rendition that fell behind after a good start, and one far behind but now keeping
//! pace reads 1.0 too: that is what lag is for). Lag is how far a rendition's newest output is
//! behind the live edge: wall time since the pipeline started minus its running-time end.
//! The job's figure is its slowest video rendition's: audio is cheap and keeps up, and
//! judging by the furthest track said 1.00 while video fell seconds behind (issue 18).

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use transcoder::RenditionId;

/// The span speed is measured over.
pub const WINDOW: Duration = Duration::from_secs(10);
/// No speed is reported before this much wall time: the first parts are still on their way.
const WARMUP: Duration = Duration::from_secs(2);

/// One rendition's figures in the job status.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RenditionSpeed {
    /// The rendition's track name (`v0`, `v1`, ..., `audio`).
    pub rendition: String,
    /// Media produced per wall second over the last 10 s (1.0 = real time).
    pub speed: f64,
    /// How far its newest output is behind the live edge.
    pub lag_ms: u64,
}

#[derive(Default)]
pub struct SpeedMeter {
    samples: HashMap<RenditionId, VecDeque<(Duration, Duration)>>,
}

impl SpeedMeter {
    /// Takes a sample: `wall` since the pipeline started, and each rendition's end.
    pub fn sample(&mut self, wall: Duration, ends: &[(RenditionId, Duration)]) {
        for (r, end) in ends {
            let q = self.samples.entry(*r).or_default();
            q.push_back((wall, *end));
            // Keep one sample at or before the window's start, so the span is a full window.
            while q.len() > 2
                && q.get(1)
                    .is_some_and(|(t, _)| wall.saturating_sub(*t) >= WINDOW)
            {
                q.pop_front();
            }
        }
    }

    /// Forgets the samples: input stopped (a publisher paused or ended), and a window that
    /// spans the pause would read as a slow encoder.
    pub fn reset(&mut self) {
        self.samples.clear();
    }

    /// Forgets one rendition (shed, or re-added after a pause a window would span).
    pub fn forget(&mut self, r: RenditionId) {
        self.samples.remove(&r);
    }

    /// Each rendition's speed and lag at the last sample, in rendition order; empty during the
    /// warm-up.
    pub fn renditions(&self) -> Vec<(RenditionId, RenditionSpeed)> {
        let mut out: Vec<_> = self
            .samples
            .iter()
            .filter_map(|(r, q)| {
                let (t1, e1) = *q.back()?;
                let (t0, e0) = *q.front()?;
                if t1 < WARMUP || t1 <= t0 {
                    return None;
                }
                let speed = e1.saturating_sub(e0).as_secs_f64() / (t1 - t0).as_secs_f64();
                Some((
                    *r,
                    RenditionSpeed {
                        rendition: crate::renditions::rendition_name(*r),
                        speed: (speed * 1000.0).round() / 1000.0,
                        lag_ms: t1.saturating_sub(e1).as_millis() as u64,
                    },
                ))
            })
            .collect();
        out.sort_by_key(|(r, _)| *r);
        out
    }

    /// The job's speed and lag: its slowest and furthest-behind video rendition (audio where
    /// it has no video); `None` during the warm-up.
    pub fn job(&self) -> Option<(f64, u64)> {
        let all = self.renditions();
        let video: Vec<_> = all
            .iter()
            .filter(|(r, _)| matches!(r, RenditionId::Video(_)))
            .collect();
        let pick = if video.is_empty() {
            all.iter().collect()
        } else {
            video
        };
        let speed = pick.iter().map(|(_, s)| s.speed).reduce(f64::min)?;
        let lag = pick.iter().map(|(_, s)| s.lag_ms).max()?;
        Some((speed, lag))
    }
}
