//! Ladder benchmark: one 720p30 source through aula's live transcoder (fed as RTP, in real time)
//! and through ffmpeg doing the identical ladder with the same x264 settings (one process,
//! decode once, as fast as it can). Prints CPU seconds per output minute for each, their ratio,
//! and bitrate and PSNR per rung against the source.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use transcoder::{probe, Event, RenditionId, TranscodeSpec, Transcoder, VideoCodec, VideoInput};

#[derive(Parser)]
struct Args {
    /// Ladder profile (shipped name); rungs above the source height are left out.
    #[arg(long, default_value = "latam-mobile")]
    ladder: String,
    #[arg(long, default_value_t = 20)]
    seconds: u32,
    #[arg(long, default_value_t = 1280)]
    width: u32,
    #[arg(long, default_value_t = 720)]
    height: u32,
    #[arg(long, default_value = "veryfast")]
    preset: String,
    /// Scale every rung from the source (aula's default scales each size from the largest
    /// larger size within 3x: transcoder::scaling).
    #[arg(long)]
    direct_scaling: bool,
    /// Keep the outputs here (default: a temp dir, removed).
    #[arg(long)]
    keep: Option<PathBuf>,
}

/// CPU seconds (user + system) of this process, and of its waited-for children.
fn cpu_seconds() -> (f64, f64) {
    fn secs(who: libc::c_int) -> f64 {
        // SAFETY: getrusage writes into the zeroed struct we own.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        if unsafe { libc::getrusage(who, &mut ru) } != 0 {
            return 0.0;
        }
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        tv(ru.ru_utime) + tv(ru.ru_stime)
    }
    (secs(libc::RUSAGE_SELF), secs(libc::RUSAGE_CHILDREN))
}

/// Sends the clip's H.264 as RTP, paced by the clock, into the transcoder.
fn run_aula(
    clip: &Path,
    spec: TranscodeSpec,
    secs: u32,
    dir: &Path,
) -> Result<(f64, Vec<PathBuf>, f64)> {
    let feeder = gst::parse::launch(&format!(
        "filesrc location={} ! qtdemux ! h264parse ! rtph264pay pt=96 mtu=1200 config-interval=-1 aggregate-mode=zero-latency \
         ! appsink name=out sync=true max-buffers=0",
        clip.display()
    ))?
    .downcast::<gst::Pipeline>()
    .map_err(|_| anyhow::anyhow!("not a pipeline"))?;
    let out = feeder
        .by_name("out")
        .context("appsink")?
        .downcast::<gst_app::AppSink>()
        .map_err(|_| anyhow::anyhow!("not an appsink"))?;
    let rungs = spec.ladder.rungs.len();
    let cpu0 = cpu_seconds().0;
    let (tc, mut rx) = Transcoder::start(spec)?;
    feeder.set_state(gst::State::Playing)?;
    let start = Instant::now();
    let mut files: Vec<Vec<u8>> = vec![Vec::new(); rungs];
    let drain = |rx: &mut tokio::sync::mpsc::UnboundedReceiver<Event>,
                 files: &mut Vec<Vec<u8>>|
     -> Result<bool> {
        while let Ok(ev) = rx.try_recv() {
            match ev {
                Event::Init(i) => {
                    if let RenditionId::Video(n) = i.rendition {
                        files[n].splice(0..0, i.data);
                    }
                }
                Event::Part(p) => {
                    if let RenditionId::Video(n) = p.rendition {
                        files[n].extend_from_slice(&p.data);
                    }
                }
                Event::Error { element, message } => {
                    bail!("transcoder error: {element}: {message}")
                }
                Event::Stalled {
                    rendition,
                    silent_for,
                } => eprintln!("aula: {rendition} stalled for {silent_for:?}"),
                Event::Finished => return Ok(true),
                _ => {}
            }
        }
        Ok(false)
    };
    loop {
        match out.try_pull_sample(gst::ClockTime::from_mseconds(20)) {
            Some(s) => {
                if let Some(b) = s.buffer().and_then(|b| b.map_readable().ok()) {
                    let _ = tc.push_video(&b);
                }
            }
            None if out.is_eos() => break,
            None => {}
        }
        drain(&mut rx, &mut files)?;
        if start.elapsed() > Duration::from_secs(secs as u64 * 3 + 30) {
            bail!("feeding took too long");
        }
    }
    let _ = feeder.set_state(gst::State::Null);
    tc.finish(Duration::from_secs(30))?;
    while !drain(&mut rx, &mut files)? {
        std::thread::sleep(Duration::from_millis(10));
        if start.elapsed() > Duration::from_secs(secs as u64 * 3 + 60) {
            break;
        }
    }
    let stats = tc.stats();
    drop(tc);
    let cpu = cpu_seconds().0 - cpu0;
    let speed = stats.media_out.as_secs_f64() / stats.wall.as_secs_f64().max(1e-9);
    let mut paths = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let p = dir.join(format!("aula-{i}.mp4"));
        std::fs::write(&p, f)?;
        paths.push(p);
    }
    Ok((cpu, paths, speed))
}

/// ffmpeg: decode once, split, scale + fps per rung, the same x264 settings per output.
fn run_ffmpeg(
    clip: &Path,
    ladder: &ladders::Ladder,
    preset: &str,
    dir: &Path,
) -> Result<(f64, Vec<PathBuf>)> {
    let n = ladder.rungs.len();
    let mut graph = format!(
        "[0:v]split={n}{}",
        (0..n).map(|i| format!("[s{i}]")).collect::<String>()
    );
    for (i, r) in ladder.rungs.iter().enumerate() {
        // GStreamer's videoscale is bilinear by default: use the same filter.
        graph += &format!(
            ";[s{i}]scale={}:{}:flags=bilinear,fps={}[o{i}]",
            r.width, r.height, r.fps
        );
    }
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-loglevel", "error", "-y", "-i"])
        .arg(clip)
        .args(["-filter_complex", &graph]);
    let mut paths = Vec::new();
    for (i, r) in ladder.rungs.iter().enumerate() {
        let p = dir.join(format!("ffmpeg-{i}.mp4"));
        cmd.args(["-map", &format!("[o{i}]")])
            .args(transcoder::x264::ffmpeg_args(r, preset))
            .arg(&p);
        paths.push(p);
    }
    let before = cpu_seconds().1;
    let status = cmd
        .status()
        .context("running ffmpeg (scripts/install-deps.sh installs it)")?;
    if !status.success() {
        bail!("ffmpeg failed: {status}");
    }
    Ok((cpu_seconds().1 - before, paths))
}

fn kbps(path: &Path, secs: f64) -> f64 {
    std::fs::metadata(path)
        .map(|m| m.len() as f64 * 8.0 / secs / 1000.0)
        .unwrap_or(0.0)
}

fn main() -> Result<()> {
    let a = Args::parse();
    transcoder::init()?;
    let mut ladder =
        ladders::shipped(&a.ladder).with_context(|| format!("unknown ladder {:?}", a.ladder))?;
    ladder.rungs.retain(|r| r.height <= a.height);
    let dir = match &a.keep {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("aula-bench-ladder-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir)?;
    let clip = dir.join("source.mp4");
    eprintln!(
        "making a {}x{}p30 {} s source",
        a.width, a.height, a.seconds
    );
    probe::make_test_clip(&clip, a.width, a.height, 30, a.seconds)?;
    let secs = a.seconds as f64;
    let minutes = secs / 60.0;

    eprintln!("aula: {} rungs in real time", ladder.rungs.len());
    let mut spec = TranscodeSpec::new(
        ladder.clone(),
        Some(VideoInput {
            codec: VideoCodec::H264,
            payload_type: 96,
        }),
        None,
    );
    spec.x264_preset = a.preset.clone();
    spec.cascade_scaling = !a.direct_scaling;
    let (aula_cpu, aula_files, speed) = run_aula(&clip, spec, a.seconds, &dir)?;
    eprintln!("ffmpeg: the same ladder");
    let (ff_cpu, ff_files) = run_ffmpeg(&clip, &ladder, &a.preset, &dir)?;

    println!(
        "ladder {} ({} rungs) from a {}x{}p30 {} s source, x264 preset {}, machine: {} cores",
        ladder.name,
        ladder.rungs.len(),
        a.width,
        a.height,
        a.seconds,
        a.preset,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!(
        "{:<10} {:>9} {:>11} {:>13} {:>10} {:>12}",
        "rung", "target", "aula kbit/s", "ffmpeg kbit/s", "aula PSNR", "ffmpeg PSNR"
    );
    for (i, r) in ladder.rungs.iter().enumerate() {
        let qa = probe::measure(&aula_files[i], &clip, a.width, a.height)?;
        let qf = probe::measure(&ff_files[i], &clip, a.width, a.height)?;
        println!(
            "{:<10} {:>9} {:>11.0} {:>13.0} {:>10.2} {:>12.2}",
            r.name,
            r.bitrate_kbps,
            kbps(&aula_files[i], secs),
            kbps(&ff_files[i], secs),
            qa.psnr,
            qf.psnr
        );
    }
    println!(
        "CPU seconds per output minute: aula {:.1} (real time, speed {:.2}x), ffmpeg {:.1} (as fast as it can); aula/ffmpeg = {:.2}",
        aula_cpu / minutes,
        speed,
        ff_cpu / minutes,
        aula_cpu / ff_cpu.max(1e-9)
    );
    if a.keep.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}
