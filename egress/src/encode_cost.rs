//! What a ladder costs to encode on this machine, and admission: a job starts with the rungs
//! the node can sustain in real time beside the jobs already running (issue 12).
//!
//! The model is linear in output pixels per second, fitted on two calibration encodes (640x360
//! and 1280x720 at 30 fps, the live x264 settings, a moving test picture) run once and cached
//! in the data directory (`encode-cost.json`); a job's fixed part (decoding the source once,
//! the audio) is [`JOB_OVERHEAD_CORES`].

use std::path::Path;
use std::sync::{Arc, Mutex};

use ladders::{Ladder, Rung};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

/// Cores a job needs besides its rungs: decoding a 720p VP8 source, the audio, muxing. An
/// estimate (0.12 cores measured for the 720p decode here with `gst-launch-1.0`), not fitted.
pub const JOB_OVERHEAD_CORES: f64 = 0.15;

/// The file the calibration is cached in, under the data directory.
pub const CACHE_FILE: &str = "encode-cost.json";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CostModel {
    /// The x264 preset measured.
    pub preset: String,
    /// Cores per megapixel of output per second (width x height x fps / 10^6): scale + encode.
    pub cores_per_mpixel_s: f64,
    /// Cores per rung whatever its size.
    pub cores_per_rung: f64,
    /// The machine measured (`/proc/cpuinfo`'s model name and core count): a cache from
    /// another machine is measured again.
    pub machine: String,
    /// How the figures came about: `"calibrated"` or `"built-in"`.
    pub source: String,
}

impl CostModel {
    /// Used until (or where) this machine is calibrated: the figures calibrated on the 2-core
    /// development machine (see `bench/README.md`).
    pub fn built_in() -> CostModel {
        CostModel {
            preset: "veryfast".into(),
            cores_per_mpixel_s: 0.0037,
            cores_per_rung: 0.12,
            machine: machine(),
            source: "built-in".into(),
        }
    }

    /// Estimated cores to encode one rung live.
    pub fn rung_cores(&self, r: &Rung) -> f64 {
        let mpix = r.width as f64 * r.height as f64 * r.fps as f64 / 1e6;
        self.cores_per_rung + self.cores_per_mpixel_s * mpix
    }

    /// Each rung's estimate, lowest first.
    pub fn ladder_cores(&self, l: &Ladder) -> Vec<f64> {
        l.rungs.iter().map(|r| self.rung_cores(r)).collect()
    }

    /// Fits the model on two encodes: `(mpixel/s, cores)` at two sizes.
    pub fn fit(preset: &str, small: (f64, f64), large: (f64, f64)) -> CostModel {
        let slope = ((large.1 - small.1) / (large.0 - small.0).max(1e-9)).max(0.0);
        let fixed = (small.1 - slope * small.0).max(0.0);
        CostModel {
            preset: preset.into(),
            cores_per_mpixel_s: round(slope),
            cores_per_rung: round(fixed),
            machine: machine(),
            source: "calibrated".into(),
        }
    }

    /// Measures this machine (a few CPU-seconds; call with nothing else encoding).
    pub fn calibrate(preset: &str) -> Result<CostModel, String> {
        let frames = transcoder::cost::source_frames(transcoder::cost::CALIBRATION_FRAMES)
            .map_err(|e| e.to_string())?;
        let media_s = frames.len() as f64 / 30.0;
        let point = |w: u32, h: u32, kbps: u32| -> Result<(f64, f64), String> {
            let rung = calibration_rung(w, h, kbps);
            let cpu =
                transcoder::cost::encode_cpu(&rung, preset, &frames).map_err(|e| e.to_string())?;
            Ok((
                w as f64 * h as f64 * 30.0 / 1e6,
                cpu.as_secs_f64() / media_s,
            ))
        };
        let small = point(640, 360, 800)?;
        let large = point(1280, 720, 2500)?;
        Ok(CostModel::fit(preset, small, large))
    }

    /// The cached calibration in `dir`, or a new one (stored there); the built-in figures if
    /// calibrating fails.
    pub fn load_or_calibrate(dir: &Path, preset: &str) -> CostModel {
        let path = dir.join(CACHE_FILE);
        if let Some(m) = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<CostModel>(&b).ok())
            .filter(|m| m.preset == preset && m.machine == machine())
        {
            return m;
        }
        let started = std::time::Instant::now();
        match CostModel::calibrate(preset) {
            Ok(m) => {
                info!(
                    cores_per_mpixel_s = m.cores_per_mpixel_s,
                    cores_per_rung = m.cores_per_rung,
                    took_ms = started.elapsed().as_millis() as u64,
                    "encode cost calibrated"
                );
                if let Ok(text) = serde_json::to_vec_pretty(&m) {
                    let _ = std::fs::create_dir_all(dir);
                    if let Err(e) = std::fs::write(&path, text) {
                        warn!(path = %path.display(), error = %e, "could not cache the encode cost");
                    }
                }
                m
            }
            Err(e) => {
                warn!(error = %e, "encode cost calibration failed: using the built-in figures");
                CostModel::built_in()
            }
        }
    }
}

fn round(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

fn calibration_rung(w: u32, h: u32, kbps: u32) -> Rung {
    Rung {
        name: format!("{h}p"),
        width: w,
        height: h,
        fps: 30,
        bitrate_kbps: kbps,
        profile: ladders::H264Profile::Main,
        level: ladders::H264Level::highest(),
        keyframe_interval_s: 2.0,
    }
}

/// The share of the process's cores that jobs may hold when `egress.capacity_cores` is 0: the
/// rest is for the SFU, HTTP and what the model leaves out. On one core, 100% admitted the
/// `global` ladder to 540p and the job ran at 0.83x real time before any neighbour
/// (`web/tests/shed.test.mjs`); at 80% it keeps real time.
pub const MACHINE_SHARE: f64 = 0.8;

fn cores_or_machine(total: f64) -> f64 {
    if total > 0.0 {
        total
    } else {
        MACHINE_SHARE * std::thread::available_parallelism().map_or(1, |n| n.get()) as f64
    }
}

fn machine() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!("{model} x{cores}")
}

/// The node's encode capacity and what running jobs have taken of it.
pub struct Capacity {
    total: Mutex<f64>,
    used: Mutex<f64>,
    model: Mutex<CostModel>,
}

/// Cores a job holds; given back when dropped.
pub struct Reservation {
    capacity: Arc<Capacity>,
    cores: f64,
}

impl Reservation {
    pub fn cores(&self) -> f64 {
        self.cores
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Ok(mut u) = self.capacity.used.lock() {
            *u = (*u - self.cores).max(0.0);
        }
    }
}

/// What admission decided for a job.
pub struct Admitted {
    /// The rungs it encodes, lowest first.
    pub ladder: Ladder,
    /// Each kept rung's estimated cores.
    pub costs: Vec<f64>,
    /// Rungs left out, with why.
    pub skipped: Vec<String>,
    pub reservation: Reservation,
}

impl Capacity {
    /// `total` cores for encoding; 0 = [`MACHINE_SHARE`] of the machine's cores.
    pub fn new(total: f64, model: CostModel) -> Capacity {
        Capacity {
            total: Mutex::new(cores_or_machine(total)),
            used: Mutex::new(0.0),
            model: Mutex::new(model),
        }
    }

    pub fn total(&self) -> f64 {
        self.total.lock().map_or(0.0, |t| *t)
    }

    /// `total` cores for encoding; 0 = [`MACHINE_SHARE`] of the machine's cores.
    pub fn set_total(&self, total: f64) {
        if let Ok(mut t) = self.total.lock() {
            *t = cores_or_machine(total);
        }
    }

    /// Cores not held by a running job.
    pub fn free(&self) -> f64 {
        self.total() - self.used.lock().map_or(0.0, |u| *u)
    }

    pub fn model(&self) -> CostModel {
        self.model
            .lock()
            .map(|m| m.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    pub fn set_model(&self, m: CostModel) {
        if let Ok(mut g) = self.model.lock() {
            *g = m;
        }
    }

    /// Cores the cheapest job needs: the overhead and the lowest rung of `ladder`.
    pub fn minimum(&self, ladder: &Ladder) -> f64 {
        let m = self.model();
        JOB_OVERHEAD_CORES + ladder.rungs.first().map_or(0.0, |r| m.rung_cores(r))
    }

    /// Keeps `ladder`'s rungs, lowest first, while they fit in what is free (the lowest always
    /// stays: a job never starts without video) and holds their cores.
    pub fn admit(self: &Arc<Self>, ladder: &Ladder) -> Admitted {
        let m = self.model();
        let total = self.total();
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        let free = total - *used;
        let mut take = JOB_OVERHEAD_CORES;
        let (mut kept, mut costs, mut skipped) = (Vec::new(), Vec::new(), Vec::new());
        for (i, r) in ladder.rungs.iter().enumerate() {
            let c = m.rung_cores(r);
            // Contiguous from the bottom: once a rung does not fit, none above it does.
            if i == 0 || (skipped.is_empty() && take + c <= free) {
                take += c;
                kept.push(r.clone());
                costs.push(c);
            } else {
                skipped.push(format!(
                    "{}: over the node's encode capacity (needs {c:.2} cores, {:.2} of {:.2} free)",
                    r.name,
                    (free - take).max(0.0),
                    total
                ));
            }
        }
        *used += take;
        drop(used);
        let mut ladder = ladder.clone();
        ladder.rungs = kept;
        Admitted {
            ladder,
            costs,
            skipped,
            reservation: Reservation {
                capacity: self.clone(),
                cores: take,
            },
        }
    }
}
