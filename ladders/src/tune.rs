//! The rung optimiser: from measured rate-quality probe points and a throughput distribution,
//! pick the rungs that maximise expected delivered quality under a player model.

use crate::h264_level::{H264Level, H264Profile};
use crate::profile::{AudioSpec, Ladder, Network, Rung};
use crate::throughput::Throughput;

/// One encode of the probe clip at a resolution, frame rate and bitrate, and its measured quality
/// (computed at the source resolution, as a viewer's player upscales).
#[derive(Clone, Debug, PartialEq)]
pub struct ProbePoint {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub bitrate_kbps: u32,
    /// Bitrate the encoder really produced.
    pub actual_kbps: f64,
    pub psnr: f64,
    pub ssim: f64,
    pub vmaf: Option<f64>,
}

impl ProbePoint {
    /// The score the optimiser maximises: VMAF when measured, else PSNR (dB).
    pub fn quality(&self) -> f64 {
        self.vmaf.unwrap_or(self.psnr)
    }

    fn area(&self) -> u64 {
        self.width as u64 * self.height as u64
    }
}

/// How a player moves between rungs, and what stalls and data cost.
#[derive(Clone, Copy, Debug)]
pub struct PlayerModel {
    /// A rung is chosen only when its bandwidth <= this x measured throughput (hls.js: 0.7).
    pub up_factor: f64,
    /// Score lost per unit of stall share (1.0 = always stalled), in quality units.
    pub stall_penalty: f64,
    /// Score lost per Mbit/s delivered: learners pay for data.
    pub data_weight: f64,
}

impl Default for PlayerModel {
    fn default() -> Self {
        PlayerModel {
            up_factor: 0.7,
            stall_penalty: 200.0,
            data_weight: 0.5,
        }
    }
}

/// A rung as the optimiser sees it: bandwidth (video + audio, kbit/s) and quality.
#[derive(Clone, Debug, PartialEq)]
pub struct RatedRung {
    pub name: String,
    pub bandwidth_kbps: f64,
    pub quality: f64,
    pub psnr: f64,
    pub ssim: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    /// Expected quality while playing (PSNR dB, or VMAF).
    pub quality: f64,
    pub psnr: f64,
    pub ssim: f64,
    /// Expected share of session time spent stalled.
    pub stall_share: f64,
    /// Data a viewer downloads per hour of session, MB.
    pub mb_per_viewer_hour: f64,
    /// Share of sessions on each rung.
    pub rung_share: Vec<f64>,
    /// The objective: quality - stall_penalty x stall - data_weight x Mbit/s.
    pub score: f64,
}

/// The upper concave hull of (bitrate, quality): the best achievable quality per bitrate.
pub fn convex_hull(points: &[ProbePoint]) -> Vec<ProbePoint> {
    let mut p: Vec<ProbePoint> = points
        .iter()
        .filter(|p| p.quality().is_finite())
        .cloned()
        .collect();
    p.sort_by(|a, b| {
        a.actual_kbps
            .total_cmp(&b.actual_kbps)
            .then(b.quality().total_cmp(&a.quality()))
    });
    let mut hull: Vec<ProbePoint> = Vec::new();
    for pt in p {
        if hull.last().is_some_and(|h| pt.quality() <= h.quality()) {
            continue;
        }
        while hull.len() >= 2 {
            let (a, b) = (&hull[hull.len() - 2], &hull[hull.len() - 1]);
            // Drop b when it lies on or under the chord a -> pt.
            let cross = (b.actual_kbps - a.actual_kbps) * (pt.quality() - a.quality())
                - (b.quality() - a.quality()) * (pt.actual_kbps - a.actual_kbps);
            if cross >= 0.0 {
                hull.pop();
            } else {
                break;
            }
        }
        hull.push(pt);
    }
    hull
}

/// Which rung a viewer at `kbps` plays: the highest with bandwidth <= up_factor x kbps, or the lowest.
fn chosen(rungs: &[RatedRung], kbps: f64, m: &PlayerModel) -> usize {
    rungs
        .iter()
        .rposition(|r| r.bandwidth_kbps <= m.up_factor * kbps)
        .unwrap_or(0)
}

/// One viewer's (quality, stall share, delivered kbit/s) on a rung.
fn outcome(r: &RatedRung, kbps: f64) -> (f64, f64) {
    let stall = if r.bandwidth_kbps > kbps {
        1.0 - kbps / r.bandwidth_kbps
    } else {
        0.0
    };
    (stall, r.bandwidth_kbps.min(kbps))
}

pub fn evaluate(rungs: &[RatedRung], t: &Throughput, m: &PlayerModel) -> Evaluation {
    let mut e = Evaluation {
        quality: 0.0,
        psnr: 0.0,
        ssim: 0.0,
        stall_share: 0.0,
        mb_per_viewer_hour: 0.0,
        rung_share: vec![0.0; rungs.len()],
        score: 0.0,
    };
    if rungs.is_empty() {
        return e;
    }
    let mut kbps_sum = 0.0;
    for &(kbps, w) in t.points() {
        let i = chosen(rungs, kbps, m);
        let r = &rungs[i];
        let (stall, delivered) = outcome(r, kbps);
        e.quality += w * r.quality;
        e.psnr += w * r.psnr;
        e.ssim += w * r.ssim;
        e.stall_share += w * stall;
        kbps_sum += w * delivered;
        e.rung_share[i] += w;
    }
    e.mb_per_viewer_hour = kbps_sum * 3600.0 / 8.0 / 1000.0;
    e.score = e.quality - m.stall_penalty * e.stall_share - m.data_weight * kbps_sum / 1000.0;
    e
}

/// Picks at most `k` rungs from the hull maximising the objective; rungs go up in bandwidth and
/// never down in resolution. Exact, by dynamic programming over the hull points.
pub fn pick(
    hull: &[ProbePoint],
    k: usize,
    audio_kbps: u32,
    t: &Throughput,
    m: &PlayerModel,
) -> Vec<ProbePoint> {
    let n = hull.len();
    if n == 0 || k == 0 {
        return Vec::new();
    }
    let rated: Vec<RatedRung> = hull.iter().map(|p| rate(p, audio_kbps)).collect();
    let gate = |i: usize| rated[i].bandwidth_kbps / m.up_factor;
    // Score of viewers in [lo, hi) kbit/s on rung i.
    let band = |i: usize, lo: f64, hi: f64| -> f64 {
        let r = &rated[i];
        t.points()
            .iter()
            .filter(|(v, _)| *v >= lo && *v < hi)
            .map(|&(v, w)| {
                let (stall, delivered) = outcome(r, v);
                w * (r.quality - m.stall_penalty * stall - m.data_weight * delivered / 1000.0)
            })
            .sum()
    };
    const NONE: f64 = f64::NEG_INFINITY;
    // best[c][i]: best score of viewers below gate(i) with c+1 rungs, the highest being i.
    let mut best = vec![vec![NONE; n]; k];
    let mut from = vec![vec![usize::MAX; n]; k];
    for (i, b) in best[0].iter_mut().enumerate() {
        *b = band(i, 0.0, gate(i));
    }
    for c in 1..k {
        for i in 0..n {
            for j in 0..i {
                if best[c - 1][j] == NONE || hull[i].area() < hull[j].area() {
                    continue;
                }
                let s = best[c - 1][j] + band(j, gate(j), gate(i));
                if s > best[c][i] {
                    best[c][i] = s;
                    from[c][i] = j;
                }
            }
        }
    }
    let mut top = (NONE, 0, 0);
    for (c, row) in best.iter().enumerate() {
        for (i, &s) in row.iter().enumerate() {
            if s == NONE {
                continue;
            }
            let total = s + band(i, gate(i), f64::INFINITY);
            if total > top.0 {
                top = (total, c, i);
            }
        }
    }
    let (_, mut c, mut i) = top;
    let mut out = vec![hull[i].clone()];
    while c > 0 {
        i = from[c][i];
        c -= 1;
        out.push(hull[i].clone());
    }
    out.reverse();
    out
}

/// A probe point as a rung the player model can rate (bandwidth adds audio).
pub fn rate(p: &ProbePoint, audio_kbps: u32) -> RatedRung {
    RatedRung {
        name: format!("{}p", p.height),
        bandwidth_kbps: p.bitrate_kbps as f64 + audio_kbps as f64,
        quality: p.quality(),
        psnr: p.psnr,
        ssim: p.ssim,
    }
}

/// Turns picked probe points into a ladder profile (main profile, lowest fitting level).
pub fn to_ladder(
    name: &str,
    description: &str,
    network: Network,
    audio: AudioSpec,
    keyframe_interval_s: f64,
    picked: &[ProbePoint],
) -> Ladder {
    let mut seen = std::collections::HashMap::new();
    let rungs = picked
        .iter()
        .map(|p| {
            let n = seen.entry(p.height).or_insert(0u32);
            *n += 1;
            let name = if *n == 1 {
                format!("{}p", p.height)
            } else {
                format!("{}p-{}", p.height, n)
            };
            let profile = H264Profile::Main;
            let level =
                H264Level::lowest_for(profile, p.width, p.height, p.fps as f64, p.bitrate_kbps)
                    .unwrap_or_else(H264Level::highest);
            Rung {
                name,
                width: p.width,
                height: p.height,
                fps: p.fps,
                bitrate_kbps: p.bitrate_kbps,
                profile,
                level,
                keyframe_interval_s,
            }
        })
        .collect();
    Ladder {
        name: name.to_string(),
        description: description.to_string(),
        network,
        audio_only: true,
        audio,
        rungs,
    }
}
