//! What encoding costs on this machine: short offline encodes of a moving test picture through
//! the live branch's elements (scale from a 1280x720 picture, x264 with the live settings),
//! timed in this process's CPU time. `egress` fits its cost model on these.
//!
//! The appsrc queues every frame before the encoder starts: the timed span is the branch alone
//! (copying a frame costs microseconds beside its encode).

use std::time::Duration;

use gstreamer as gst;
use gstreamer::prelude::*;
use ladders::Rung;

use crate::error::TranscodeError;

/// Frames each calibration encode runs (a few seconds of media: long enough for `/proc`'s
/// 10 ms CPU clock, short enough for a first start).
pub const CALIBRATION_FRAMES: u32 = 150;
const SOURCE: (u32, u32) = (1280, 720);

/// CPU time (user + system) this process has used, all threads, from `/proc/self/stat`;
/// `None` off Linux.
pub fn process_cpu() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name may hold spaces: fields are counted after its closing parenthesis.
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    // USER_HZ is 100 on every Linux target.
    Some(Duration::from_secs_f64((utime + stime) / 100.0))
}

/// Pictures of the ladder benchmark's clip (`probe::make_test_clip`: moving bars under a
/// moving zone plate), rendered once so the encodes time the branch, not the source. A still or
/// plain picture would cost x264 next to nothing.
pub fn source_frames(frames: u32) -> Result<Vec<gst::Buffer>, TranscodeError> {
    crate::init()?;
    let (w, h) = SOURCE;
    let desc = format!(
        "compositor name=mix sink_1::alpha=0.5 ! video/x-raw,format=I420,width={w},height={h},framerate=30/1 \
         ! appsink name=out sync=false \
         videotestsrc num-buffers={frames} pattern=smpte horizontal-speed=3 \
         ! video/x-raw,width={w},height={h},framerate=30/1 ! mix.sink_0 \
         videotestsrc num-buffers={frames} pattern=zone-plate kx2=4 ky2=4 kt=2 \
         ! video/x-raw,width={w},height={h},framerate=30/1 ! mix.sink_1"
    );
    let pipeline = gst::parse::launch(&desc)?
        .downcast::<gst::Pipeline>()
        .map_err(|_| TranscodeError::Probe("not a pipeline".into()))?;
    let sink = pipeline
        .by_name("out")
        .and_then(|e| e.downcast::<gstreamer_app::AppSink>().ok())
        .ok_or_else(|| TranscodeError::Probe("no appsink".into()))?;
    pipeline.set_state(gst::State::Playing)?;
    let mut out = Vec::new();
    while let Ok(sample) = sink.pull_sample() {
        if let Some(b) = sample.buffer_owned() {
            out.push(b);
        }
    }
    let _ = pipeline.set_state(gst::State::Null);
    if out.is_empty() {
        return Err(TranscodeError::Probe(
            "the test picture rendered no frames".into(),
        ));
    }
    Ok(out)
}

/// CPU time to scale `frames` to `rung`'s size (from 1280x720) and encode them with the live
/// x264 settings, at `rung`'s frame rate.
pub fn encode_cpu(
    rung: &Rung,
    preset: &str,
    frames: &[gst::Buffer],
) -> Result<Duration, TranscodeError> {
    crate::init()?;
    let (w, h) = SOURCE;
    let desc = format!(
        "appsrc name=src format=time caps=video/x-raw,format=I420,width={w},height={h},framerate={fps}/1 \
         ! videoscale method=bilinear2 add-borders=true \
         ! video/x-raw,width={},height={},pixel-aspect-ratio=1/1 ! x264enc name=enc ! fakesink sync=false",
        rung.width,
        rung.height,
        fps = rung.fps,
    );
    let pipeline = gst::parse::launch(&desc)?
        .downcast::<gst::Pipeline>()
        .map_err(|_| TranscodeError::Probe("not a pipeline".into()))?;
    let enc = pipeline
        .by_name("enc")
        .ok_or_else(|| TranscodeError::Probe("no encoder".into()))?;
    crate::x264::configure(&enc, rung, preset);
    let src = pipeline
        .by_name("src")
        .and_then(|e| e.downcast::<gstreamer_app::AppSrc>().ok())
        .ok_or_else(|| TranscodeError::Probe("no appsrc".into()))?;
    let before = process_cpu().ok_or_else(|| TranscodeError::Probe("no /proc/self/stat".into()))?;
    pipeline.set_state(gst::State::Playing)?;
    let frame = 1_000_000_000 / rung.fps.max(1) as u64;
    for (i, b) in frames.iter().enumerate() {
        let mut b = b.copy();
        if let Some(b) = b.get_mut() {
            b.set_pts(gst::ClockTime::from_nseconds(i as u64 * frame));
            b.set_duration(gst::ClockTime::from_nseconds(frame));
        }
        if src.push_buffer(b).is_err() {
            break;
        }
    }
    let _ = src.end_of_stream();
    let bus = pipeline
        .bus()
        .ok_or_else(|| TranscodeError::Probe("no bus".into()))?;
    let mut result = Ok(());
    for msg in bus.iter_timed(gst::ClockTime::from_seconds(60)) {
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => {
                result = Err(TranscodeError::Probe(e.error().to_string()));
                break;
            }
            _ => {}
        }
    }
    let _ = pipeline.set_state(gst::State::Null);
    result?;
    let after = process_cpu().ok_or_else(|| TranscodeError::Probe("no /proc/self/stat".into()))?;
    Ok(after.saturating_sub(before))
}
