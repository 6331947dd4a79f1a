//! Simulcast layers: naming, bitrate metering, and the per-subscriber layer choice.

use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// What a subscriber asks for; the SFU gives the best layer at or under it that its
/// bandwidth estimate allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Quality {
    Low,
    Medium,
    #[default]
    High,
}

impl Quality {
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn parse(s: &str) -> Option<Quality> {
        match s {
            "low" | "q" | "l" => Some(Quality::Low),
            "medium" | "h" | "m" => Some(Quality::Medium),
            "high" | "f" => Some(Quality::High),
            _ => None,
        }
    }
}

/// Quality rank of a rid. aula's pages send `q` (quarter), `h` (half), `f` (full), as LiveKit
/// does; `l`/`m` are accepted too. Unknown rids fall back to their SDP order.
pub fn rid_rank(rid: &str, sdp_index: usize) -> usize {
    match rid {
        "q" | "l" | "low" => 0,
        "h" | "m" | "mid" | "medium" => 1,
        "f" | "high" | "full" => 2,
        _ => sdp_index,
    }
}

/// Bytes over a sliding one-second window, smoothed.
#[derive(Debug, Clone, Default)]
pub struct BitrateMeter {
    window_start: Option<Instant>,
    window_bytes: u64,
    bps: u64,
}

const WINDOW: Duration = Duration::from_millis(1000);

impl BitrateMeter {
    pub fn add(&mut self, now: Instant, bytes: usize) {
        let start = *self.window_start.get_or_insert(now);
        let elapsed = now.saturating_duration_since(start);
        if elapsed >= WINDOW {
            let measured = self.window_bytes * 8 * 1_000_000 / elapsed.as_micros().max(1) as u64;
            // Weighted towards the new window so a layer turning on is seen within ~2 s.
            self.bps = if self.bps == 0 {
                measured
            } else {
                (self.bps + 3 * measured) / 4
            };
            self.window_start = Some(now);
            self.window_bytes = 0;
        }
        self.window_bytes += bytes as u64;
    }

    pub fn bps(&self) -> u64 {
        self.bps
    }
}

/// What the chooser knows of one layer, in quality order.
#[derive(Debug, Clone, Copy)]
pub struct LayerView {
    pub active: bool,
    pub bps: u64,
}

/// Picks the layer (index into `layers`, lowest quality first) for a subscriber.
///
/// Starts from the preference (or the best active layer under it), steps down while the layer
/// does not fit the bandwidth `budget`; moving up from `current` needs 15% headroom so a
/// subscriber does not flap between layers. Returns `None` when no layer is active.
pub fn choose_layer(
    pref: Quality,
    layers: &[LayerView],
    budget_bps: Option<u64>,
    current: Option<usize>,
) -> Option<usize> {
    let top = pref.index().min(layers.len().checked_sub(1)?);
    let mut candidate = (0..=top).rev().find(|&i| layers[i].active)?;
    let Some(budget) = budget_bps else {
        return Some(candidate);
    };
    loop {
        let need = layers[candidate].bps;
        let headroom = match current {
            Some(c) if candidate > c => need + need * 15 / 100,
            _ => need,
        };
        if headroom <= budget {
            return Some(candidate);
        }
        match (0..candidate).rev().find(|&i| layers[i].active) {
            Some(lower) => candidate = lower,
            // Nothing lower: the lowest layer is sent even over budget (a frozen picture is worse).
            None => return Some(candidate),
        }
    }
}

/// A subscriber's video bandwidth, split: screen shares are served first (slides and code must
/// stay legible) and share the whole budget among themselves; cameras share what the screens'
/// chosen layers leave. `None` throughout while there is no estimate yet.
#[derive(Debug, Clone, Copy)]
pub struct VideoBudget {
    total: Option<u64>,
    left: Option<u64>,
    screens: u64,
    cameras: u64,
}

impl VideoBudget {
    pub fn new(total: Option<u64>, screens: u64, cameras: u64) -> VideoBudget {
        VideoBudget {
            total,
            left: total,
            screens,
            cameras,
        }
    }

    /// What each screen share may use.
    pub fn per_screen(&self) -> Option<u64> {
        self.total.map(|t| t / self.screens.max(1))
    }

    /// A screen share's chosen layer uses this much.
    pub fn spend(&mut self, bps: u64) {
        self.left = self.left.map(|l| l.saturating_sub(bps));
    }

    /// What each camera may use, once the screens are served.
    pub fn per_camera(&self) -> Option<u64> {
        self.left.map(|l| l / self.cameras.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(active: bool, kbps: u64) -> LayerView {
        LayerView {
            active,
            bps: kbps * 1000,
        }
    }

    #[test]
    fn preference_caps_the_layer() {
        let layers = [l(true, 150), l(true, 500), l(true, 1500)];
        assert_eq!(choose_layer(Quality::Low, &layers, None, None), Some(0));
        assert_eq!(choose_layer(Quality::Medium, &layers, None, None), Some(1));
        assert_eq!(choose_layer(Quality::High, &layers, None, None), Some(2));
    }

    #[test]
    fn bandwidth_estimate_steps_down() {
        let layers = [l(true, 150), l(true, 500), l(true, 1500)];
        assert_eq!(
            choose_layer(Quality::High, &layers, Some(800_000), None),
            Some(1)
        );
        assert_eq!(
            choose_layer(Quality::High, &layers, Some(100_000), None),
            Some(0)
        );
    }

    #[test]
    fn moving_up_needs_headroom() {
        let layers = [l(true, 150), l(true, 500), l(true, 1500)];
        assert_eq!(
            choose_layer(Quality::High, &layers, Some(1_600_000), Some(1)),
            Some(1)
        );
        assert_eq!(
            choose_layer(Quality::High, &layers, Some(1_800_000), Some(1)),
            Some(2)
        );
    }

    #[test]
    fn screen_shares_are_served_before_cameras() {
        let screen = [l(true, 700)];
        let camera = [l(true, 50), l(true, 200), l(true, 720)];
        // 1 Mbit/s for one screen share and two cameras: the screen keeps its 700 kbit/s and
        // the cameras drop to their lowest layer; split evenly, each camera would take 200k.
        let mut b = VideoBudget::new(Some(1_000_000), 1, 2);
        let s = choose_layer(Quality::High, &screen, b.per_screen(), None);
        assert_eq!(s, Some(0));
        b.spend(screen[0].bps);
        assert_eq!(b.per_camera(), Some(150_000));
        assert_eq!(
            choose_layer(Quality::High, &camera, b.per_camera(), None),
            Some(0)
        );
        // Without a screen, the cameras share it all.
        let b = VideoBudget::new(Some(1_000_000), 0, 2);
        assert_eq!(
            choose_layer(Quality::High, &camera, b.per_camera(), None),
            Some(1)
        );
        // No estimate yet: no cap.
        let b = VideoBudget::new(None, 1, 1);
        assert_eq!(b.per_screen(), None);
        assert_eq!(b.per_camera(), None);
    }

    #[test]
    fn paused_layers_are_skipped() {
        let layers = [l(true, 150), l(false, 0), l(false, 0)];
        assert_eq!(choose_layer(Quality::High, &layers, None, None), Some(0));
        let none = [l(false, 0), l(false, 0)];
        assert_eq!(choose_layer(Quality::High, &none, None, None), None);
        assert_eq!(choose_layer(Quality::High, &[], None, None), None);
    }

    #[test]
    fn meter_measures_a_constant_rate() {
        let t0 = Instant::now();
        let mut m = BitrateMeter::default();
        // 100 packets/s of 1250 bytes = 1 Mbit/s, for 3 s.
        for i in 0..=300u64 {
            m.add(t0 + Duration::from_millis(i * 10), 1250);
        }
        let bps = m.bps();
        assert!((900_000..=1_100_000).contains(&bps), "{bps}");
    }
}
