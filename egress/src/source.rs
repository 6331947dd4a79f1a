//! Where a job's RTP comes from.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sfu::tap::{RtpPacketizer, Tap, TapCodec, TapFrame};
use transcoder::testsrc::{RtpSource, AUDIO_PT, VIDEO_PT};
use transcoder::{AudioInput, Transcoder, VideoCodec, VideoInput};

use crate::frame_size::FrameSize;

/// How long a room source waits for its first frames before giving up.
const FIRST_MEDIA: Duration = Duration::from_secs(15);
/// After the first video frame, how long to wait for audio before going video-only.
const AUDIO_GRACE: Duration = Duration::from_secs(2);

/// One RTP packet for a [`Source::Rtp`]: video or audio.
pub struct RtpPacket {
    pub video: bool,
    pub data: Vec<u8>,
}

/// What a source sends: its video codec and payload type, whether it has audio, and its
/// picture size where a keyframe told it.
pub(crate) type Inputs = (Option<VideoInput>, Option<AudioInput>, Option<FrameSize>);

/// After the first video frame, how long to wait for a keyframe of the publisher's top
/// simulcast layer (its full size; lower layers come first while its send rate ramps up).
const TOP_LAYER_GRACE: Duration = Duration::from_secs(5);

pub enum Source {
    /// RTP packets from elsewhere (a UDP socket in a worker, a test). Ends when the sender is
    /// dropped or sends nothing for `idle`.
    Rtp {
        video: Option<VideoInput>,
        audio: Option<AudioInput>,
        rx: std::sync::mpsc::Receiver<RtpPacket>,
        idle: Duration,
        /// Asks the sender for a keyframe, where it can be reached.
        keyframe: Option<Arc<dyn Fn() + Send + Sync>>,
        /// The picture size, where the sender knows it.
        size: Option<FrameSize>,
    },
    /// A room's broadcaster, tapped in-process from the SFU. Ends when the publisher leaves or
    /// sends nothing for `idle`.
    Room {
        tap: Tap,
        idle: Duration,
        /// Frames read while finding out what the publisher sends.
        early: Vec<TapFrame>,
    },
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
            Source::Room { tap, .. } => format!("room publisher {}", tap.identity),
            Source::Rtp { video, audio, .. } => format!(
                "RTP{}{}",
                video.map_or(String::new(), |v| format!(" {}", v.codec.encoding_name())),
                if audio.is_some() { " + Opus" } else { "" }
            ),
            Source::TestPattern { width, height, .. } => {
                format!("test pattern {width}x{height} VP8 + Opus")
            }
        }
    }

    /// What the source sends; a room source reads its first frames to find out (blocking).
    pub(crate) fn prepare(&mut self) -> Result<Inputs, String> {
        match self {
            Source::Rtp {
                video, audio, size, ..
            } => Ok((*video, *audio, *size)),
            Source::TestPattern { width, height, .. } => Ok((
                Some(VideoInput {
                    codec: VideoCodec::Vp8,
                    payload_type: VIDEO_PT,
                }),
                Some(AudioInput {
                    payload_type: AUDIO_PT,
                }),
                Some(FrameSize {
                    width: *width,
                    height: *height,
                }),
            )),
            Source::Room { tap, early, .. } => {
                let start = Instant::now();
                let (mut video, mut audio) = (None, false);
                let mut first_video: Option<Instant> = None;
                // The largest keyframe seen, and whether it was of the top layer.
                let mut size: Option<(FrameSize, bool)> = None;
                loop {
                    let waited = start.elapsed();
                    let sized = size.is_some_and(|(_, top)| top)
                        || first_video.is_some_and(|t| t.elapsed() > TOP_LAYER_GRACE);
                    if audio && video.is_some() && sized {
                        break;
                    }
                    if video.is_none() && first_video.is_some_and(|t| t.elapsed() > AUDIO_GRACE) {
                        break;
                    }
                    if !audio && sized && first_video.is_some_and(|t| t.elapsed() > AUDIO_GRACE) {
                        break; // video-only broadcast
                    }
                    if waited > FIRST_MEDIA {
                        if audio {
                            break; // audio-only broadcast
                        }
                        return Err(format!(
                            "no media from {} within {FIRST_MEDIA:?}",
                            tap.identity
                        ));
                    }
                    match tap.recv_timeout(Duration::from_millis(100)) {
                        Ok(f) => {
                            match (f.video, f.codec) {
                                (true, TapCodec::Vp8) => video = video.or(Some(VideoCodec::Vp8)),
                                (true, TapCodec::H264) => video = video.or(Some(VideoCodec::H264)),
                                (false, TapCodec::Opus) => audio = true,
                                _ => {}
                            }
                            if f.video && first_video.is_none() {
                                first_video = Some(Instant::now());
                                // Start on a keyframe rather than wait for the next one.
                                tap.request_keyframe();
                            }
                            if f.video && f.keyframe {
                                let s = match f.codec {
                                    TapCodec::Vp8 => crate::frame_size::vp8_keyframe_size(&f.data),
                                    TapCodec::H264 => {
                                        crate::frame_size::h264_keyframe_size(&f.data)
                                    }
                                    _ => None,
                                };
                                tracing::debug!(layer = f.layer, top = f.top_layer, size = ?s, "egress: source keyframe");
                                if let Some(s) = s {
                                    let area =
                                        |s: FrameSize| u64::from(s.width) * u64::from(s.height);
                                    if size
                                        .is_none_or(|(old, _)| f.top_layer || area(s) > area(old))
                                    {
                                        size = Some((s, f.top_layer));
                                    }
                                }
                            }
                            early.push(f);
                        }
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                            return Err(format!("{} left before sending media", tap.identity))
                        }
                    }
                }
                Ok((
                    video.map(|codec| VideoInput {
                        codec,
                        payload_type: VIDEO_PT,
                    }),
                    audio.then_some(AudioInput {
                        payload_type: AUDIO_PT,
                    }),
                    size.map(|(s, _)| s),
                ))
            }
        }
    }

    /// `prepare` off the async runtime (a room source blocks reading its first frames).
    pub(crate) async fn prepared(self) -> Result<(Source, Inputs), String> {
        let (source, inputs) = tokio::task::spawn_blocking(move || {
            let mut source = self;
            let inputs = source.prepare();
            (source, inputs)
        })
        .await
        .map_err(|e| format!("source thread: {e}"))?;
        Ok((source, inputs?))
    }

    /// Asks the source for a keyframe (the transcoder lost one), where it can.
    pub(crate) fn keyframe_requester(&self) -> Option<Arc<dyn Fn() + Send + Sync>> {
        match self {
            Source::Room { tap, .. } => Some(tap.keyframe_requester()),
            Source::Rtp { keyframe, .. } => keyframe.clone(),
            Source::TestPattern { .. } => None,
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
            Source::Rtp { rx, idle, .. } => {
                let mut last = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    match rx.recv_timeout(Duration::from_millis(100).min(idle)) {
                        Ok(p) => {
                            last = Instant::now();
                            let _ = if p.video {
                                tc.push_video(&p.data)
                            } else {
                                tc.push_audio(&p.data)
                            };
                        }
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                            if last.elapsed() > idle {
                                break;
                            }
                        }
                        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                    }
                }
            }
            Source::Room { tap, idle, early } => {
                let mut packetizer = Packetizer::new();
                pump_room(&tap, idle, &early, &stop, |f| {
                    packetizer.packetize(f, |video, p| {
                        let _ = if video {
                            tc.push_video(p)
                        } else {
                            tc.push_audio(p)
                        };
                    })
                });
            }
            Source::TestPattern {
                seconds,
                width,
                height,
            } => {
                let src = RtpSource::start_pattern(VideoCodec::Vp8, width, height, "smpte")?;
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

/// A room publisher's frames as RTP with the payload types the transcoder expects.
pub(crate) struct Packetizer {
    video: RtpPacketizer,
    audio: RtpPacketizer,
}

impl Packetizer {
    pub(crate) fn new() -> Packetizer {
        Packetizer {
            video: RtpPacketizer::new(VIDEO_PT, 0x5eed_0000),
            audio: RtpPacketizer::new(AUDIO_PT, 0xa0d1_0000),
        }
    }

    pub(crate) fn packetize(&mut self, f: &TapFrame, mut out: impl FnMut(bool, &[u8])) {
        let p = if f.video {
            &mut self.video
        } else {
            &mut self.audio
        };
        for pkt in p.packetize(f) {
            out(f.video, &pkt);
        }
    }
}

/// Hands a room publisher's frames (the `early` ones first) to `on_frame` until the publisher
/// leaves, sends nothing for `idle`, or `stop` is set. Blocking.
pub(crate) fn pump_room(
    tap: &Tap,
    idle: Duration,
    early: &[TapFrame],
    stop: &AtomicBool,
    mut on_frame: impl FnMut(&TapFrame),
) {
    for f in early {
        on_frame(f);
    }
    let mut last = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        match tap.recv_timeout(Duration::from_millis(100)) {
            Ok(f) => {
                last = Instant::now();
                on_frame(&f);
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                if last.elapsed() > idle {
                    tracing::info!(publisher = %tap.identity, ?idle, "no media: ending the job");
                    break;
                }
            }
            // The publisher left: the broadcast is over.
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    if tap.dropped() > 0 {
        tracing::warn!(
            dropped = tap.dropped(),
            "egress fell behind the publisher: frames were lost"
        );
    }
}
