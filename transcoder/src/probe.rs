//! Offline encodes of a source clip with the live x264 settings, and their quality measured
//! against the source, for `aula ladder tune` and the ladder benchmark. Quality comes from the
//! installed `ffmpeg` filters (PSNR and SSIM; VMAF when `ffmpeg` was built with libvmaf), at
//! the source's resolution, as a viewer's player upscales.

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use gstreamer as gst;
use gstreamer::prelude::*;
use ladders::Rung;

use crate::error::TranscodeError;

/// What one encode produced.
#[derive(Clone, Debug, PartialEq)]
pub struct Encoded {
    pub frames: u64,
    pub bytes: u64,
    /// Media seconds encoded.
    pub seconds: f64,
}

impl Encoded {
    pub fn kbps(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.seconds.max(1e-9) / 1000.0
    }
}

#[derive(Clone, Debug, PartialEq)]
/// How close an encode is to its source (PSNR, SSIM, VMAF when available).
pub struct Fidelity {
    pub psnr: f64,
    pub ssim: f64,
    pub vmaf: Option<f64>,
}

fn run_to_eos(pipeline: &gst::Pipeline) -> Result<(), TranscodeError> {
    pipeline.set_state(gst::State::Playing)?;
    let bus = pipeline
        .bus()
        .ok_or_else(|| TranscodeError::Probe("no bus".into()))?;
    let mut result = Ok(());
    for msg in bus.iter_timed(gst::ClockTime::NONE) {
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => {
                result = Err(TranscodeError::Probe(format!(
                    "{}: {}",
                    msg.src()
                        .map(|s| s.path_string().to_string())
                        .unwrap_or_default(),
                    e.error()
                )));
                break;
            }
            _ => {}
        }
    }
    let _ = pipeline.set_state(gst::State::Null);
    result
}

/// Encodes `source` (any file GStreamer decodes) at a rung with aula's live x264 settings and
/// an IDR every keyframe interval, into an MP4 at `out`.
pub fn encode(
    source: &Path,
    rung: &Rung,
    preset: &str,
    out: &Path,
) -> Result<Encoded, TranscodeError> {
    crate::init()?;
    let desc = format!(
        "filesrc name=src ! decodebin ! videoconvert ! videoscale method=bilinear2 add-borders=false ! videorate \
         ! video/x-raw,format=I420,width={},height={},framerate={}/1,pixel-aspect-ratio=1/1 \
         ! x264enc name=enc ! capsfilter caps=\"{}\" ! h264parse name=parse ! mp4mux ! filesink name=sink",
        rung.width,
        rung.height,
        rung.fps,
        crate::x264::caps(rung)
    );
    let pipeline = gst::parse::launch(&desc)?
        .downcast::<gst::Pipeline>()
        .map_err(|_| TranscodeError::Probe("not a pipeline".into()))?;
    let get = |n: &str| {
        pipeline
            .by_name(n)
            .ok_or_else(|| TranscodeError::Probe(format!("no {n}")))
    };
    get("src")?.set_property("location", source.to_string_lossy().to_string());
    get("sink")?.set_property("location", out.to_string_lossy().to_string());
    let enc = get("enc")?;
    crate::x264::configure(&enc, rung, preset);
    // Sizes such as 426x240 are not exactly 16:9: stretch by a fraction of a pixel rather than
    // letterbox, which would shift the picture and cost PSNR for no visible reason.
    // Offline there is no grid to force keyframes: x264 places one every keyframe interval.
    enc.set_property(
        "key-int-max",
        (rung.keyframe_interval_s * rung.fps as f64).round() as u32,
    );
    let tally = Arc::new(Mutex::new(Encoded {
        frames: 0,
        bytes: 0,
        seconds: 0.0,
    }));
    if let Some(pad) = get("parse")?.static_pad("src") {
        let tally = tally.clone();
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let (Some(buf), Ok(mut t)) = (info.buffer(), tally.lock()) {
                t.frames += 1;
                t.bytes += buf.size() as u64;
            }
            gst::PadProbeReturn::Ok
        });
    }
    run_to_eos(&pipeline)?;
    let mut t = tally
        .lock()
        .map_err(|_| TranscodeError::Probe("tally poisoned".into()))?
        .clone();
    t.seconds = t.frames as f64 / rung.fps as f64;
    if t.frames == 0 {
        return Err(TranscodeError::Probe(format!(
            "{} produced no video frames",
            source.display()
        )));
    }
    Ok(t)
}

/// Whether the installed ffmpeg has the libvmaf filter.
pub fn ffmpeg_has_vmaf() -> bool {
    Command::new("ffmpeg")
        .args(["-hide_banner", "-filters"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(" libvmaf "))
        .unwrap_or(false)
}

/// Measures `encoded` against `reference` at the reference's size (`ref_w` x `ref_h`), with
/// ffmpeg's psnr and ssim filters (and libvmaf when present). Timestamps are aligned to start
/// at zero; a lower-rate encode is compared as a player shows it (each frame held).
pub fn measure(
    encoded: &Path,
    reference: &Path,
    ref_w: u32,
    ref_h: u32,
) -> Result<Fidelity, TranscodeError> {
    let vmaf = ffmpeg_has_vmaf();
    let (n, extra) = if vmaf {
        (3, ";[d3][r3]libvmaf")
    } else {
        (2, "")
    };
    let outs = |p: &str| (1..=n).map(|i| format!("[{p}{i}]")).collect::<String>();
    let graph = format!(
        "[0:v]scale={ref_w}:{ref_h}:flags=bicubic,setpts=PTS-STARTPTS,split={n}{}; \
         [1:v]setpts=PTS-STARTPTS,split={n}{}; [d1][r1]psnr; [d2][r2]ssim{extra}",
        outs("d"),
        outs("r")
    );
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostats", "-i"])
        .arg(encoded)
        .arg("-i")
        .arg(reference)
        .args(["-lavfi", &graph, "-f", "null", "-"])
        .output()
        .map_err(|e| {
            TranscodeError::Probe(format!(
                "running ffmpeg (install it: scripts/install-deps.sh): {e}"
            ))
        })?;
    let log = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let tail: Vec<&str> = log.lines().rev().take(3).collect();
        return Err(TranscodeError::Probe(format!(
            "ffmpeg failed: {}",
            tail.join(" | ")
        )));
    }
    parse_quality(&log, vmaf)
        .ok_or_else(|| TranscodeError::Probe("no PSNR/SSIM in ffmpeg's output".into()))
}

/// Reads `PSNR ... average:36.1` and `SSIM ... All:0.95` (and `VMAF score: 91.2`) lines.
pub fn parse_quality(log: &str, vmaf: bool) -> Option<Fidelity> {
    let field = |tag: &str, key: &str| -> Option<f64> {
        let line = log
            .lines()
            .rev()
            .find(|l| l.contains(tag) && l.contains(key))?;
        let rest = &line[line.find(key)? + key.len()..];
        let num: String = rest
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == '-')
            .collect();
        match num.parse::<f64>() {
            Ok(v) => Some(v),
            // Identical inputs: ffmpeg prints "inf".
            Err(_) if rest.starts_with("inf") => Some(100.0),
            Err(_) => None,
        }
    };
    Some(Fidelity {
        psnr: field("PSNR", "average:")?,
        ssim: field("SSIM", "All:")?,
        vmaf: if vmaf {
            field("VMAF", "VMAF score: ")
        } else {
            None
        },
    })
}

/// Writes a synthetic source clip (moving zone plate over SMPTE bars, with a ball: detail,
/// motion and flat areas) as near-lossless H.264 in MP4, for tests and benchmarks.
pub fn make_test_clip(
    out: &Path,
    width: u32,
    height: u32,
    fps: u32,
    seconds: u32,
) -> Result<(), TranscodeError> {
    crate::init()?;
    let frames = fps * seconds;
    let desc = format!(
        "compositor name=mix sink_1::alpha=0.5 ! video/x-raw,format=I420,width={width},height={height},framerate={fps}/1 \
         ! x264enc speed-preset=veryfast pass=quant quantizer=12 key-int-max={fps} \
         ! video/x-h264,profile=high ! h264parse ! mp4mux ! filesink name=sink \
         videotestsrc num-buffers={frames} pattern=smpte horizontal-speed=3 \
         ! video/x-raw,width={width},height={height},framerate={fps}/1 ! mix.sink_0 \
         videotestsrc num-buffers={frames} pattern=zone-plate kx2=4 ky2=4 kt=2 \
         ! video/x-raw,width={width},height={height},framerate={fps}/1 ! mix.sink_1"
    );
    let pipeline = gst::parse::launch(&desc)?
        .downcast::<gst::Pipeline>()
        .map_err(|_| TranscodeError::Probe("not a pipeline".into()))?;
    pipeline
        .by_name("sink")
        .ok_or_else(|| TranscodeError::Probe("no sink".into()))?
        .set_property("location", out.to_string_lossy().to_string());
    run_to_eos(&pipeline)
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_ffmpeg_quality_lines() {
        let log =
            "[Parsed_psnr_4 @ 0x55] PSNR y:38.1 u:42.0 v:42.3 average:39.12 min:35.0 max:41.0\n\
                   [Parsed_ssim_5 @ 0x56] SSIM Y:0.951 (13.1) U:0.97 V:0.97 All:0.9612 (14.1)\n";
        let q = super::parse_quality(log, false).expect("parsed");
        assert_eq!((q.psnr, q.ssim, q.vmaf), (39.12, 0.9612, None));
        assert!(super::parse_quality("nothing", false).is_none());
        let inf = "PSNR y:inf u:inf v:inf average:inf min:inf max:inf\nSSIM All:1.000000 (inf)";
        assert_eq!(
            super::parse_quality(inf, false).map(|q| q.psnr),
            Some(100.0)
        );
    }
}
