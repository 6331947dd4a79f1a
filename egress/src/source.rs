//! Where a job's RTP comes from.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use transcoder::testsrc::{Codec, RtpSource, AUDIO_PT, VIDEO_PT};
use transcoder::{AudioInput, Transcoder, VideoCodec, VideoInput};

pub enum Source {
    /// A test picture (SMPTE bars) and tone sent as a browser would (VP8 + Opus RTP): checks
    /// storage, CDN and players end to end without a camera. Ends after `seconds`, if given.
    TestPattern {
        seconds: Option<u64>,
        width: u32,
        height: u32,
    },
}

impl Source {
    pub fn describe(&self) -> String {
        match self {
            Source::TestPattern { width, height, .. } => {
                format!("test pattern {width}x{height} VP8 + Opus")
            }
        }
    }

    pub(crate) fn inputs(&self) -> (Option<VideoInput>, Option<AudioInput>) {
        match self {
            Source::TestPattern { .. } => (
                Some(VideoInput {
                    codec: VideoCodec::Vp8,
                    payload_type: VIDEO_PT,
                }),
                Some(AudioInput {
                    payload_type: AUDIO_PT,
                }),
            ),
        }
    }

    /// Feeds the transcoder until the source ends or `stop` is set, then drains it. Blocking:
    /// runs on its own thread.
    pub(crate) fn feed(
        self,
        tc: Arc<Transcoder>,
        stop: Arc<AtomicBool>,
    ) -> Result<(), transcoder::TranscodeError> {
        match self {
            Source::TestPattern {
                seconds,
                width,
                height,
            } => {
                let src = RtpSource::start_pattern(Codec::Vp8, width, height, "smpte")?;
                let t = Instant::now();
                let limit = seconds.map(Duration::from_secs);
                while !stop.load(Ordering::Relaxed) && limit.is_none_or(|l| t.elapsed() < l) {
                    let mut idle = true;
                    while let Some(p) = src.next_video() {
                        let _ = tc.push_video(&p);
                        idle = false;
                    }
                    while let Some(p) = src.next_audio() {
                        let _ = tc.push_audio(&p);
                        idle = false;
                    }
                    if idle {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                }
            }
        }
        tc.finish(Duration::from_secs(10))
    }
}
