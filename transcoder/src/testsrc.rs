//! Live RTP test sources: GStreamer test video (VP8 or H.264) and Opus audio, payloaded as a
//! browser would send them. For tests and benchmarks of this crate and the crates above it.

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use crate::spec::VideoCodec;

/// A small ladder that a 2-core machine encodes in real time beside its source.
pub fn test_ladder() -> ladders::Ladder {
    let text = r#"
name = "test"
network = "mobile"
[audio]
codec = "aac-lc"
bitrate_kbps = 64
sample_rate = 48000
channels = 2
[[rung]]
name = "144p"
width = 256
height = 144
fps = 15
bitrate_kbps = 150
profile = "baseline"
level = "3.0"
keyframe_interval_s = 2.0
[[rung]]
name = "240p"
width = 426
height = 240
fps = 30
bitrate_kbps = 400
profile = "main"
level = "3.0"
keyframe_interval_s = 2.0
[[rung]]
name = "360p"
width = 640
height = 360
fps = 30
bitrate_kbps = 800
profile = "main"
level = "3.0"
keyframe_interval_s = 2.0
"#;
    // A constant that this crate's tests validate; it cannot fail at run time.
    ladders::Ladder::from_toml(text, "test ladder").unwrap_or_else(|e| panic!("{e}"))
}

/// Payload types the sources use.
pub const VIDEO_PT: u8 = 96;
pub const AUDIO_PT: u8 = 111;

/// A live GStreamer sender: test video (VP8 or H.264) and Opus audio, payloaded to RTP.
pub struct RtpSource {
    pipeline: gst::Pipeline,
    vcaps: gst::Element,
    vout: gst_app::AppSink,
    aout: gst_app::AppSink,
}

impl RtpSource {
    pub fn start(
        codec: VideoCodec,
        width: u32,
        height: u32,
    ) -> Result<RtpSource, crate::TranscodeError> {
        Self::start_pattern(codec, width, height, "snow")
    }

    /// As [`RtpSource::start`] with another `videotestsrc` pattern (e.g. `smpte` for a
    /// picture a person can recognise; `snow` is the hardest to compress).
    pub fn start_pattern(
        codec: VideoCodec,
        width: u32,
        height: u32,
        pattern: &str,
    ) -> Result<RtpSource, crate::TranscodeError> {
        crate::init()?;
        if !pattern
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(crate::TranscodeError::Pipeline(format!(
                "bad test pattern {pattern:?}"
            )));
        }
        let enc = match codec {
            // Real-time VP8 as browsers send it; snow keeps the content hard to compress so the
            // ladder's rate control is exercised rather than idling.
            VideoCodec::Vp8 => format!(
                "vp8enc deadline=1 cpu-used=8 target-bitrate=2500000 keyframe-max-dist=90 ! rtpvp8pay pt={VIDEO_PT} mtu=1200"
            ),
            VideoCodec::H264 => format!(
                "x264enc tune=zerolatency speed-preset=ultrafast bitrate=6000 key-int-max=90 \
                 ! video/x-h264,profile=constrained-baseline ! rtph264pay pt={VIDEO_PT} mtu=1200 config-interval=-1 aggregate-mode=zero-latency"
            ),
        };
        let desc = format!(
            "videotestsrc is-live=true pattern={pattern} ! capsfilter name=vcaps caps=video/x-raw,width={width},height={height},framerate=30/1 \
             ! videoconvert ! {enc} ! appsink name=vout sync=false max-buffers=0 \
             audiotestsrc is-live=true wave=ticks ! audio/x-raw,rate=48000,channels=2 ! opusenc bitrate=64000 \
             ! rtpopuspay pt={AUDIO_PT} ! appsink name=aout sync=false"
        );
        let pipeline = gst::parse::launch(&desc)?
            .downcast::<gst::Pipeline>()
            .map_err(|_| crate::TranscodeError::Pipeline("not a pipeline".into()))?;
        let get = |n: &str| {
            pipeline
                .by_name(n)
                .ok_or_else(|| crate::TranscodeError::Pipeline(format!("no {n}")))
        };
        let sink = |n: &str| {
            get(n)?
                .downcast::<gst_app::AppSink>()
                .map_err(|_| crate::TranscodeError::Pipeline(format!("{n} is not an appsink")))
        };
        let (vout, aout, vcaps) = (sink("vout")?, sink("aout")?, get("vcaps")?);
        pipeline.set_state(gst::State::Playing)?;
        Ok(RtpSource {
            pipeline,
            vcaps,
            vout,
            aout,
        })
    }

    /// Changes the sender's resolution mid-stream (the encoder starts a new keyframe at it).
    pub fn resize(&self, width: u32, height: u32) {
        let caps = gst::Caps::builder("video/x-raw")
            .field("width", width as i32)
            .field("height", height as i32)
            .field("framerate", gst::Fraction::new(30, 1))
            .build();
        self.vcaps.set_property("caps", caps);
    }

    /// Answers a keyframe request as a browser answers a PLI.
    pub fn force_keyframe(&self) {
        let ev = gstreamer_video::UpstreamForceKeyUnitEvent::builder()
            .all_headers(true)
            .build();
        self.vout.send_event(ev);
    }

    pub fn next_video(&self) -> Option<Vec<u8>> {
        pull(&self.vout)
    }

    pub fn next_audio(&self) -> Option<Vec<u8>> {
        pull(&self.aout)
    }
}

fn pull(sink: &gst_app::AppSink) -> Option<Vec<u8>> {
    let s = sink.try_pull_sample(gst::ClockTime::from_mseconds(0))?;
    let b = s.buffer()?.map_readable().ok()?;
    Some(b.to_vec())
}

impl Drop for RtpSource {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}
