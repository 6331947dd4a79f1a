//! `aula ladder show|validate|tune`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use egress::encode_cost::{self, CostModel};
use ladders::tune::{self, Evaluation, PlayerModel, ProbePoint, RatedRung};
use ladders::{
    shipped, shipped_names, shipped_throughput, H264Level, H264Profile, Ladder, Rung, Throughput,
};
use serde_json::json;
use transcoder::probe;

#[derive(Subcommand)]
pub enum LadderCmd {
    /// Print a shipped profile (or a profile file); all shipped profiles without an argument.
    Show {
        /// A shipped profile name or a TOML file.
        profile: Option<String>,
    },
    /// Check profile files; prints every problem with its field, exits 1 if any.
    Validate {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Pick rungs for a throughput distribution from measured rate-quality of a source clip.
    Tune(Box<TuneArgs>),
    /// Measure what encoding costs on this machine (a few CPU-seconds) and keep it in
    /// `{storage.dir}/encode-cost.json`, where `aula serve` and workers read it for admission.
    Calibrate {
        /// Write the result here instead.
        #[arg(long)]
        out: Option<PathBuf>,
        /// x264 preset, as the live transcoder uses.
        #[arg(long, default_value = "veryfast")]
        preset: String,
    },
}

#[derive(Args)]
pub struct TuneArgs {
    /// A shipped geography: its throughput distribution, audio and network class.
    #[arg(long)]
    geo: Option<String>,
    /// Throughput CSV (kbit/s samples, or percentile,kbps); overrides the geography's.
    #[arg(long)]
    throughput: Option<PathBuf>,
    /// Source clip (any file GStreamer decodes; a representative lesson, 10-30 s).
    #[arg(long, conflicts_with = "test_clip")]
    clip: Option<PathBuf>,
    /// Generate a synthetic clip instead, WIDTHxHEIGHTxSECONDS (e.g. 1280x720x10).
    #[arg(long)]
    test_clip: Option<String>,
    /// At most this many video rungs.
    #[arg(long, default_value_t = 5)]
    rungs: usize,
    /// The profile to compare against.
    #[arg(long, default_value = "global")]
    compare: String,
    /// Name of the tuned profile (default: "<geo>-tuned").
    #[arg(long)]
    name: Option<String>,
    /// Write the tuned profile here (default: print it).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Probe heights (default: 144,234,360,432,540,720,1080 up to the clip's height).
    #[arg(long, value_delimiter = ',')]
    heights: Vec<u32>,
    /// Probe bitrates in kbit/s (default: 60 to 8000 in steps of 1.5x).
    #[arg(long, value_delimiter = ',')]
    bitrates: Vec<u32>,
    /// x264 preset, as the live transcoder uses.
    #[arg(long, default_value = "veryfast")]
    preset: String,
    /// Player model: a rung is chosen only when its bandwidth <= this x throughput (hls.js 0.7).
    #[arg(long, default_value_t = 0.7)]
    up_factor: f64,
    /// Score lost per unit of stall share.
    #[arg(long, default_value_t = 200.0)]
    stall_penalty: f64,
    /// Score lost per Mbit/s delivered (learners pay for data).
    #[arg(long, default_value_t = 0.5)]
    data_weight: f64,
    /// Print the comparison as JSON.
    #[arg(long)]
    json: bool,
}

/// `data_dir`: the storage directory, where the encode-cost calibration is cached.
pub fn run(cmd: LadderCmd, data_dir: Option<PathBuf>) -> Result<()> {
    match cmd {
        LadderCmd::Show { profile } => {
            let ladders = match profile {
                None => shipped_names().filter_map(shipped).collect(),
                Some(p) => vec![load(&p)?],
            };
            let cached = data_dir.as_ref().and_then(|d| {
                let path = d.join(encode_cost::CACHE_FILE);
                let bytes = std::fs::read(&path).ok()?;
                serde_json::from_slice::<CostModel>(&bytes)
                    .ok()
                    .map(|m| (m, path))
            });
            let model = match &cached {
                Some((m, path)) => {
                    println!(
                        "encode cost: calibrated on {} ({})",
                        m.machine,
                        path.display()
                    );
                    m.clone()
                }
                None => {
                    println!("encode cost: built-in figures (`aula ladder calibrate` measures this machine)");
                    CostModel::built_in()
                }
            };
            for l in ladders {
                print_ladder(&l, &model);
            }
            Ok(())
        }
        LadderCmd::Calibrate { out, preset } => {
            let model = CostModel::calibrate(&preset).map_err(|e| anyhow::anyhow!(e))?;
            let path = match out {
                Some(p) => p,
                None => {
                    let dir = data_dir.context("no storage directory configured")?;
                    std::fs::create_dir_all(&dir)
                        .with_context(|| format!("creating {}", dir.display()))?;
                    dir.join(encode_cost::CACHE_FILE)
                }
            };
            std::fs::write(&path, serde_json::to_vec_pretty(&model)?)
                .with_context(|| format!("writing {}", path.display()))?;
            println!(
                "{}: {:.4} cores per megapixel/s + {:.3} per rung ({}, x264 {})",
                path.display(),
                model.cores_per_mpixel_s,
                model.cores_per_rung,
                model.machine,
                model.preset
            );
            Ok(())
        }
        LadderCmd::Validate { files } => {
            let mut bad = 0;
            for f in &files {
                match load(&f.to_string_lossy()) {
                    Ok(l) => println!("{}: ok ({}, {} rungs)", f.display(), l.name, l.rungs.len()),
                    Err(e) => {
                        bad += 1;
                        eprintln!("{}: {e:#}", f.display());
                    }
                }
            }
            if bad > 0 {
                bail!("{bad} of {} profiles invalid", files.len());
            }
            Ok(())
        }
        LadderCmd::Tune(a) => tune_cmd(*a),
    }
}

/// A shipped profile by name, or a TOML file.
fn load(what: &str) -> Result<Ladder> {
    if let Some(l) = shipped(what) {
        return Ok(l);
    }
    let path = Path::new(what);
    if !path.exists() {
        bail!(
            "{what:?} is neither a shipped profile ({}) nor a file",
            shipped_names().collect::<Vec<_>>().join(", ")
        );
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(Ladder::from_toml(&text, &path.display().to_string())?)
}

fn print_ladder(l: &Ladder, model: &CostModel) {
    println!("{} ({:?}): {}", l.name, l.network, l.description);
    println!(
        "  {:<10} {:>9} {:>4} {:>7} {:>9} {:>6} {:>6} {:<12} {:>10} {:>6}",
        "rung", "size", "fps", "kbit/s", "profile", "level", "bpp", "codecs", "bandwidth", "cores"
    );
    for r in &l.rungs {
        println!(
            "  {:<10} {:>9} {:>4} {:>7} {:>9} {:>6} {:>6.3} {:<12} {:>10} {:>6.2}",
            r.name,
            format!("{}x{}", r.width, r.height),
            r.fps,
            r.bitrate_kbps,
            r.profile.as_str(),
            r.level.to_string(),
            r.bits_per_pixel(),
            r.codecs(),
            l.variant_bandwidth(r),
            model.rung_cores(r)
        );
    }
    let total: f64 = model.ladder_cores(l).iter().sum::<f64>() + encode_cost::JOB_OVERHEAD_CORES;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "  encoding all of it live: ~{total:.2} cores with decoding (this machine has {cores})"
    );
    println!(
        "  audio: AAC-LC {} kbit/s, {} Hz, {} ch; keyframe every {} s; audio-only variant: {}",
        l.audio.bitrate_kbps,
        l.audio.sample_rate,
        l.audio.channels,
        l.keyframe_interval_s(),
        if l.audio_only { "yes" } else { "no" }
    );
}

struct Clip {
    path: PathBuf,
    width: u32,
    height: u32,
    fps: u32,
}

fn probe_clip(path: &Path) -> Result<Clip> {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=width,height,r_frame_rate",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .context("running ffprobe (scripts/install-deps.sh installs ffmpeg)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let f: Vec<&str> = text.trim().split(',').collect();
    let (Some(w), Some(h), Some(r)) = (f.first(), f.get(1), f.get(2)) else {
        bail!(
            "{}: no video stream ({})",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    };
    let fps = match r.split_once('/') {
        Some((n, d)) => n.parse::<f64>().unwrap_or(30.0) / d.parse::<f64>().unwrap_or(1.0).max(1.0),
        None => r.parse().unwrap_or(30.0),
    };
    Ok(Clip {
        path: path.to_path_buf(),
        width: w.parse().context("clip width")?,
        height: h.parse().context("clip height")?,
        fps: fps.round().clamp(1.0, 60.0) as u32,
    })
}

fn rung(name: String, width: u32, height: u32, fps: u32, kbps: u32, kf: f64) -> Option<Rung> {
    let level = H264Level::lowest_for(H264Profile::Main, width, height, fps as f64, kbps)?;
    Some(Rung {
        name,
        width,
        height,
        fps,
        bitrate_kbps: kbps,
        profile: H264Profile::Main,
        level,
        keyframe_interval_s: kf,
    })
}

/// Encodes `r` from the clip and measures it.
fn measure_rung(clip: &Clip, r: &Rung, preset: &str, dir: &Path) -> Result<ProbePoint> {
    let out = dir.join(format!(
        "{}x{}-{}-{}.mp4",
        r.width, r.height, r.fps, r.bitrate_kbps
    ));
    let e = probe::encode(&clip.path, r, preset, &out)?;
    let q = probe::measure(&out, &clip.path, clip.width, clip.height)?;
    let _ = std::fs::remove_file(&out);
    Ok(ProbePoint {
        width: r.width,
        height: r.height,
        fps: r.fps,
        bitrate_kbps: r.bitrate_kbps,
        actual_kbps: e.kbps(),
        psnr: q.psnr,
        ssim: q.ssim,
        vmaf: q.vmaf,
    })
}

fn tune_cmd(a: TuneArgs) -> Result<()> {
    let base = match &a.geo {
        Some(g) => shipped(g).with_context(|| format!("unknown geography {g:?}"))?,
        None => shipped(&a.compare).with_context(|| format!("unknown profile {:?}", a.compare))?,
    };
    let throughput = match (&a.throughput, &a.geo) {
        (Some(p), _) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            Throughput::from_csv(&text, &p.display().to_string())?
        }
        (None, Some(g)) => {
            shipped_throughput(g).with_context(|| format!("no throughput for {g:?}"))?
        }
        (None, None) => bail!("give --geo or --throughput"),
    };
    let compare = load(&a.compare)?;
    let model = PlayerModel {
        up_factor: a.up_factor,
        stall_penalty: a.stall_penalty,
        data_weight: a.data_weight,
    };
    let work = std::env::temp_dir().join(format!("aula-tune-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let clip = match (&a.clip, &a.test_clip) {
        (Some(p), _) => probe_clip(p)?,
        (None, Some(spec)) => {
            let n: Vec<u32> = spec
                .split('x')
                .map(|s| s.parse())
                .collect::<Result<_, _>>()
                .context("--test-clip WxHxSECONDS")?;
            let [w, h, s] = n[..] else {
                bail!("--test-clip WxHxSECONDS, e.g. 1280x720x10")
            };
            let path = work.join("clip.mp4");
            eprintln!("making a {w}x{h} {s} s test clip");
            probe::make_test_clip(&path, w, h, 30, s)?;
            probe_clip(&path)?
        }
        (None, None) => {
            bail!("give --clip FILE (a representative lesson) or --test-clip WxHxSECONDS")
        }
    };
    let kf = base.keyframe_interval_s();
    let heights: Vec<u32> = if a.heights.is_empty() {
        [144, 234, 360, 432, 540, 720, 1080]
            .into_iter()
            .filter(|h| *h <= clip.height)
            .collect()
    } else {
        a.heights.clone()
    };
    let bitrates: Vec<u32> = if a.bitrates.is_empty() {
        (0..12).map(|i| (60.0 * 1.5f64.powi(i)) as u32).collect()
    } else {
        a.bitrates.clone()
    };
    // Candidate rungs: each height at the clip's rate (<= 30), small ones also at 15 fps.
    let mut candidates = Vec::new();
    for &h in &heights {
        let w = ((h as f64 * clip.width as f64 / clip.height as f64 / 2.0).round() as u32) * 2;
        let top = clip.fps.min(30);
        let mut rates = vec![top];
        if h <= 288 && top > 15 {
            rates.push(15);
        }
        for fps in rates {
            for &b in &bitrates {
                if let Some(r) = rung(format!("{h}p"), w, h, fps, b, kf) {
                    let bpp = r.bits_per_pixel();
                    if (ladders::BPP_RANGE.0..=ladders::BPP_RANGE.1).contains(&bpp) {
                        candidates.push(r);
                    }
                }
            }
        }
    }
    if candidates.is_empty() {
        bail!("no probe points: widen --heights or --bitrates");
    }
    let mut points = Vec::new();
    for (i, r) in candidates.iter().enumerate() {
        let p = measure_rung(&clip, r, &a.preset, &work)?;
        eprintln!(
            "probe {:>3}/{}: {}x{}@{} {:>5} kbit/s -> {:>7.1} kbit/s, PSNR {:.2} dB, SSIM {:.4}{}",
            i + 1,
            candidates.len(),
            r.width,
            r.height,
            r.fps,
            r.bitrate_kbps,
            p.actual_kbps,
            p.psnr,
            p.ssim,
            p.vmaf.map(|v| format!(", VMAF {v:.1}")).unwrap_or_default()
        );
        points.push(p);
    }
    let hull = tune::convex_hull(&points);
    let picked = tune::pick(&hull, a.rungs, base.audio.bitrate_kbps, &throughput, &model);
    let name = a
        .name
        .clone()
        .unwrap_or_else(|| format!("{}-tuned", a.geo.as_deref().unwrap_or("custom")));
    let tuned = tune::to_ladder(
        &name,
        &format!(
            "tuned by aula ladder tune on {} for {}",
            clip.path.display(),
            a.geo.as_deref().unwrap_or("a custom distribution")
        ),
        base.network,
        base.audio.clone(),
        kf,
        &picked,
    );
    tuned
        .validate()
        .context("the tuned ladder failed validation")?;
    let tuned_rated: Vec<RatedRung> = picked
        .iter()
        .map(|p| tune::rate(p, base.audio.bitrate_kbps))
        .collect();
    let mut compare_rated = Vec::new();
    for r in &compare.rungs {
        let p = measure_rung(&clip, r, &a.preset, &work)?;
        eprintln!(
            "compare {}: {} kbit/s -> PSNR {:.2} dB, SSIM {:.4}",
            r.name, r.bitrate_kbps, p.psnr, p.ssim
        );
        compare_rated.push(RatedRung {
            name: r.name.clone(),
            ..tune::rate(&p, compare.audio.bitrate_kbps)
        });
    }
    let et = tune::evaluate(&tuned_rated, &throughput, &model);
    let ec = tune::evaluate(&compare_rated, &throughput, &model);
    let _ = std::fs::remove_dir_all(&work);
    if a.json {
        println!(
            "{}",
            json!({
                "tuned": eval_json(&tuned.name, &et),
                "compare": eval_json(&compare.name, &ec),
                "rungs": tuned.rungs.iter().map(|r| json!({"name": r.name, "width": r.width, "height": r.height, "fps": r.fps, "kbps": r.bitrate_kbps})).collect::<Vec<_>>(),
                "probes": points.len(),
            })
        );
    } else {
        println!(
            "{:<22} {:>12} {:>8} {:>10} {:>14}",
            "profile", "PSNR dB", "SSIM", "stalls %", "MB/viewer-h"
        );
        for (n, e) in [(&tuned.name, &et), (&compare.name, &ec)] {
            println!(
                "{:<22} {:>12.2} {:>8.4} {:>10.2} {:>14.1}",
                n,
                e.psnr,
                e.ssim,
                e.stall_share * 100.0,
                e.mb_per_viewer_hour
            );
        }
        print_ladder(&tuned, &CostModel::built_in());
    }
    match &a.out {
        Some(p) => {
            std::fs::write(p, tuned.to_toml())
                .with_context(|| format!("writing {}", p.display()))?;
            eprintln!("wrote {}", p.display());
        }
        None if !a.json => println!("\n{}", tuned.to_toml()),
        None => {}
    }
    Ok(())
}

fn eval_json(name: &str, e: &Evaluation) -> serde_json::Value {
    json!({
        "name": name,
        "quality": e.quality,
        "psnr": e.psnr,
        "ssim": e.ssim,
        "stall_share": e.stall_share,
        "mb_per_viewer_hour": e.mb_per_viewer_hour,
        "score": e.score,
        "rung_share": e.rung_share,
    })
}
