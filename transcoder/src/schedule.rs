//! Timing decisions shared by the renditions, kept free of GStreamer so they can be tested:
//! the segment grid, the per-rendition frame-rate cap, and where parts and fragments split.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Timestamps a little early still count as on time (jitter-buffer skew correction).
const TOLERANCE_NS: u64 = 5_000_000;

/// The segment grid: origin (the first media timestamp of the job) + k x period. Every rendition
/// and the audio track split fragments at the first timestamp at or past each grid point.
#[derive(Clone, Debug)]
pub struct Grid {
    origin: Arc<OnceLock<u64>>,
    period: u64,
    next: Option<u64>,
}

impl Grid {
    pub fn new(period: Duration) -> Self {
        Grid {
            origin: Arc::new(OnceLock::new()),
            period: (period.as_nanos() as u64).max(1),
            next: None,
        }
    }

    /// Another cursor on the same grid (same origin), for another track.
    pub fn cursor(&self) -> Self {
        Grid {
            origin: self.origin.clone(),
            period: self.period,
            next: None,
        }
    }

    /// True when `pts` (ns) is the first timestamp at or past the next grid point; the
    /// first timestamp a cursor sees also counts (its stream starts there).
    pub fn crosses(&mut self, pts: u64) -> bool {
        let origin = *self.origin.get_or_init(|| pts);
        let hit = match self.next {
            None => true,
            Some(next) => pts + TOLERANCE_NS >= next,
        };
        if hit {
            // Next grid point strictly after this one (skips points lost in a gap).
            let since = (pts + TOLERANCE_NS).saturating_sub(origin);
            self.next = Some(origin + (since / self.period + 1) * self.period);
        }
        hit
    }
}

/// The time in ns at which a muxer of `timescale` ticks per second writes the tick nearest to
/// `pts`. Frame times on a 30 fps grid are whole ns only by truncation (466,666,666 for frame
/// 14), and the muxer floors ns to ticks: frames came out one tick early (0.67 ms at a 15 fps
/// rung's default timescale), which a player's frame pairing reads as the previous picture
/// (`bench/ladder`'s PSNR of the 144p rung dropped 0.5 dB for it).
pub fn on_tick(pts: u64, timescale: u32) -> u64 {
    let ts = u128::from(timescale.max(1));
    let ticks = (u128::from(pts) * ts + 500_000_000) / 1_000_000_000;
    (ticks * 1_000_000_000).div_ceil(ts) as u64
}

/// Caps one rendition's frame rate without duplicating frames, but always keeps the frames the
/// grid made keyframes, so every rendition has an IDR at the same PTS.
#[derive(Clone, Debug)]
pub struct FpsCap {
    interval: u64,
    next: Option<u64>,
}

impl FpsCap {
    pub fn new(fps: u32) -> Self {
        FpsCap {
            interval: 1_000_000_000 / fps.max(1) as u64,
            next: None,
        }
    }

    /// Forgets the last frame kept (the rendition was not encoded for a while).
    pub fn reset(&mut self) {
        self.next = None;
    }

    pub fn keep(&mut self, pts: u64, boundary: bool) -> bool {
        match self.next {
            Some(next) if !boundary && pts + TOLERANCE_NS < next => false,
            Some(next) if !boundary && pts < next + self.interval => {
                self.next = Some(next + self.interval);
                true
            }
            _ => {
                self.next = Some(pts + self.interval);
                true
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    None,
    /// End the part here; the next buffer starts a new part of the same segment.
    Part,
    /// End the segment here; the next buffer (a keyframe) starts a new one.
    Segment,
}

/// Splits an encoded stream into parts no longer than the target, and into segments at
/// segment starts (keyframes for video, grid crossings for audio).
#[derive(Clone, Debug)]
pub struct PartSplitter {
    target: u64,
    part_start: Option<u64>,
    last_pts: Option<u64>,
}

impl PartSplitter {
    pub fn new(target: Duration) -> Self {
        PartSplitter {
            target: target.as_nanos() as u64,
            part_start: None,
            last_pts: None,
        }
    }

    /// Decides what to do before a buffer at `pts` lasting `duration` ns goes in. A buffer is
    /// taken to last at least as long as the gap before it (a capped frame rate leaves buffers
    /// with the source's shorter durations).
    pub fn before(&mut self, pts: u64, duration: u64, segment_start: bool) -> Split {
        let gap = self.last_pts.map_or(0, |l| pts.saturating_sub(l));
        self.last_pts = Some(pts);
        let duration = duration.max(gap);
        let Some(start) = self.part_start else {
            self.part_start = Some(pts);
            return Split::None;
        };
        if segment_start {
            self.part_start = Some(pts);
            return Split::Segment;
        }
        // Split when this buffer would push the part past the target.
        if (pts + duration).saturating_sub(start) > self.target + 1_000_000 {
            self.part_start = Some(pts);
            return Split::Part;
        }
        Split::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_times_land_on_their_tick() {
        // Frame 14 at 30 fps, truncated to whole ns.
        let t = on_tick(466_666_666, 90_000);
        assert_eq!(
            t * 90_000 / 1_000_000_000,
            42_000,
            "floors to the intended tick"
        );
        assert!(t - 466_666_666 < 12_000, "moved by less than a tick");
        for ts in [1500u32, 3000, 2400, 90_000] {
            for n in 0..3000u64 {
                let pts = n * 1_000_000_000 / 30;
                let want = (u128::from(n) * u128::from(ts) + 15) / 30;
                let got = u128::from(on_tick(pts, ts)) * u128::from(ts) / 1_000_000_000;
                assert_eq!(got, want, "frame {n} at timescale {ts}");
            }
        }
        assert_eq!(on_tick(0, 90_000), 0);
    }

    const MS: u64 = 1_000_000;

    #[test]
    fn grid_cursors_share_the_origin_and_skip_gaps() {
        let mut v = Grid::new(Duration::from_secs(2));
        let mut a = v.cursor();
        assert!(v.crosses(1000 * MS)); // origin
        assert!(a.crosses(1010 * MS)); // audio's first buffer
        assert!(!a.crosses(2990 * MS));
        assert!(a.crosses(3001 * MS));
        assert!(!v.crosses(2966 * MS));
        assert!(v.crosses(2999 * MS)); // within tolerance of 3000
        assert!(!v.crosses(3033 * MS));
        // A 7 s gap: the next frame is a boundary and the grid resumes after it.
        assert!(v.crosses(10_033 * MS));
        assert!(!v.crosses(10_900 * MS));
        assert!(v.crosses(11_000 * MS));
    }

    #[test]
    fn fps_cap_halves_30_to_15_and_keeps_boundaries() {
        let mut c = FpsCap::new(15);
        let kept: Vec<u64> = (0..30u64)
            .map(|i| i * 33_333_333)
            .filter(|&t| c.keep(t, t == 11 * 33_333_333))
            .collect();
        assert!(kept.contains(&(11 * 33_333_333)));
        assert!((15..=17).contains(&kept.len()), "{}", kept.len());
        let mut c = FpsCap::new(30);
        assert_eq!(
            (0..30u64)
                .filter(|&i| c.keep(i * 33_333_333, false))
                .count(),
            30
        );
    }

    #[test]
    fn parts_never_exceed_the_target() {
        let mut s = PartSplitter::new(Duration::from_millis(500));
        let mut part_start = 0;
        for i in 0..300u64 {
            let pts = i * 66_666_666; // 15 fps
            let key = i % 30 == 0 && i > 0;
            match s.before(pts, 33_333_333, key) {
                Split::None => {}
                Split::Part | Split::Segment => {
                    assert!(pts - part_start <= 500 * MS + MS);
                    part_start = pts;
                }
            }
        }
    }
}
