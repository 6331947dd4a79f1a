//! What a transcode job is asked to do.

use std::time::Duration;

use ladders::Ladder;

use crate::error::TranscodeError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VideoCodec {
    Vp8,
    H264,
}

impl VideoCodec {
    pub fn encoding_name(self) -> &'static str {
        match self {
            VideoCodec::Vp8 => "VP8",
            VideoCodec::H264 => "H264",
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct VideoInput {
    pub codec: VideoCodec,
    pub payload_type: u8,
}

#[derive(Clone, Copy, Debug)]
pub struct AudioInput {
    /// Opus, 48 kHz clock.
    pub payload_type: u8,
}

#[derive(Clone, Debug)]
pub struct TranscodeSpec {
    pub ladder: Ladder,
    pub video: Option<VideoInput>,
    pub audio: Option<AudioInput>,
    /// Part (CMAF chunk) target; parts never exceed it. Segments are the ladder's keyframe interval.
    pub part_duration: Duration,
    /// Jitter buffer depth: how long a late or retransmitted packet is waited for.
    pub jitter_latency: Duration,
    /// x264 speed preset (ultrafast .. medium); live default "veryfast".
    pub x264_preset: String,
    /// Scale each size from the largest larger size within [`crate::scaling::MAX_STEP`]
    /// (the default); off, every size from the source (kept for `bench/ladder`).
    pub cascade_scaling: bool,
}

impl TranscodeSpec {
    pub fn new(ladder: Ladder, video: Option<VideoInput>, audio: Option<AudioInput>) -> Self {
        TranscodeSpec {
            ladder,
            video,
            audio,
            part_duration: Duration::from_millis(500),
            jitter_latency: Duration::from_millis(200),
            x264_preset: "veryfast".into(),
            cascade_scaling: true,
        }
    }

    pub fn check(&self) -> Result<(), TranscodeError> {
        self.ladder
            .validate()
            .map_err(|e| TranscodeError::Spec(e.to_string()))?;
        if self.video.is_none() && self.audio.is_none() {
            return Err(TranscodeError::Spec("neither video nor audio input".into()));
        }
        let seg = self.segment_duration();
        if self.part_duration < Duration::from_millis(100) || self.part_duration > seg {
            return Err(TranscodeError::Spec(format!(
                "part duration {:?} must be within 100 ms and the segment duration {seg:?}",
                self.part_duration
            )));
        }
        if !crate::x264::PRESETS.contains(&self.x264_preset.as_str()) {
            return Err(TranscodeError::Spec(format!(
                "unknown x264 preset {:?} (one of {})",
                self.x264_preset,
                crate::x264::PRESETS.join(", ")
            )));
        }
        Ok(())
    }

    /// Segment duration: the ladder's keyframe interval.
    pub fn segment_duration(&self) -> Duration {
        Duration::from_secs_f64(self.ladder.keyframe_interval_s())
    }
}
