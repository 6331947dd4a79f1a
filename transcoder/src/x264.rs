//! The one definition of aula's x264 settings, applied to GStreamer's `x264enc` for live jobs and
//! probe encodes, and spelled as `ffmpeg` arguments for the ladder benchmark.

use gstreamer as gst;
use gstreamer::prelude::*;
use ladders::Rung;

pub const PRESETS: &[&str] = &[
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
];

/// VBV buffer in milliseconds of the target bitrate: tight enough for live, loose enough for quality.
pub const VBV_MS: u32 = 1000;

/// x264 never places keyframes itself (the segment grid forces them); this only bounds a GOP if
/// forcing ever stops.
fn keyint_max(rung: &Rung) -> u32 {
    (rung.keyframe_interval_s * rung.fps as f64).round() as u32 * 10
}

/// Sets up an `x264enc` for a rung: zero-latency (no B-frames, no lookahead), CBR-capped ABR,
/// no scene-cut keyframes, the rung's level.
pub fn configure(enc: &gst::Element, rung: &Rung, preset: &str) {
    enc.set_property_from_str("tune", "zerolatency");
    enc.set_property_from_str("speed-preset", preset);
    enc.set_property_from_str("pass", "cbr");
    enc.set_property("bitrate", rung.bitrate_kbps);
    enc.set_property("vbv-buf-capacity", VBV_MS);
    enc.set_property("key-int-max", keyint_max(rung));
    enc.set_property("bframes", 0u32);
    enc.set_property("option-string", format!("scenecut=0:level={}", rung.level));
}

/// Caps after the encoder: the rung's profile, AVC in access units (what `cmafmux` wants).
pub fn caps(rung: &Rung) -> String {
    format!(
        "video/x-h264,profile={},stream-format=avc,alignment=au",
        rung.profile
    )
}

/// The same encoder settings for `ffmpeg -c:v libx264`, with keyframes every keyframe interval.
pub fn ffmpeg_args(rung: &Rung, preset: &str) -> Vec<String> {
    let b = format!("{}k", rung.bitrate_kbps);
    let buf = format!("{}k", rung.bitrate_kbps as u64 * VBV_MS as u64 / 1000);
    [
        "-c:v",
        "libx264",
        "-preset",
        preset,
        "-tune",
        "zerolatency",
        "-b:v",
        &b,
        "-maxrate",
        &b,
        "-bufsize",
        &buf,
        "-bf",
        "0",
        "-g",
        &keyint_max(rung).to_string(),
        "-sc_threshold",
        "0",
        "-force_key_frames",
        &format!("expr:gte(t,n_forced*{})", rung.keyframe_interval_s),
        "-profile:v",
        rung.profile.as_str(),
        "-level",
        &rung.level.to_string(),
        "-pix_fmt",
        "yuv420p",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}
