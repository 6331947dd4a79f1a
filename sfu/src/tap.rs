//! Taps: a publisher's media copied out of the room for in-process consumers (the HLS egress).
//! The room hands each tapped frame to a bounded channel without blocking or allocating (the
//! payload is shared); a slow consumer loses frames, which it learns from `gap`. Video follows
//! the highest active simulcast layer, switching only at keyframes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::format::Codec;
use str0m::unversioned::{H264Packetizer, OpusPacketizer, Packetizer, Vp8Packetizer};

use crate::ids::ParticipantId;
use crate::track::Track;
use crate::transport::{MediaData, MediaKind};

/// Frames a tap buffers before it starts losing them (about 8 s of audio + 30 fps video).
pub const TAP_CAPACITY: usize = 640;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TapCodec {
    Vp8,
    H264,
    Opus,
    Other,
}

/// One encoded frame of the tapped publisher.
#[derive(Clone, Debug)]
pub struct TapFrame {
    pub video: bool,
    pub codec: TapCodec,
    /// The frame's RTP timestamp (90 kHz video, 48 kHz audio) on its layer's own line.
    pub rtp_time: u32,
    pub keyframe: bool,
    /// Simulcast layer index (0 = lowest); a change means another RTP timestamp line.
    pub layer: u8,
    /// The frame is of the publisher's highest configured layer (its full picture size).
    pub top_layer: bool,
    /// Frames of this kind were lost before this one (consumer too slow, or loss upstream).
    pub gap: bool,
    pub data: Arc<[u8]>,
}

/// The room's side of a tap.
pub(crate) struct TapSink {
    pub publisher: ParticipantId,
    tx: SyncSender<TapFrame>,
    dropped: Arc<AtomicU64>,
    video_layer: Option<usize>,
    gap: [bool; 2],
    pub closed: bool,
}

pub(crate) fn channel(publisher: ParticipantId) -> (TapSink, Receiver<TapFrame>, Arc<AtomicU64>) {
    let (tx, rx) = sync_channel(TAP_CAPACITY);
    let dropped = Arc::new(AtomicU64::new(0));
    (
        TapSink {
            publisher,
            tx,
            dropped: dropped.clone(),
            video_layer: None,
            gap: [false; 2],
            closed: false,
        },
        rx,
        dropped,
    )
}

fn codec_of(data: &MediaData) -> TapCodec {
    match data.params.spec().codec {
        Codec::Vp8 => TapCodec::Vp8,
        Codec::H264 => TapCodec::H264,
        Codec::Opus => TapCodec::Opus,
        _ => TapCodec::Other,
    }
}

impl TapSink {
    /// Offers a frame of `track`'s layer `li`. Returns a layer that needs a keyframe (the tap
    /// wants to move up to it) if any.
    pub fn offer(
        &mut self,
        track: &Track,
        li: usize,
        keyframe: bool,
        data: &MediaData,
        now: Instant,
    ) -> Option<usize> {
        if self.closed {
            return None;
        }
        let video = track.kind == MediaKind::Video;
        let mut want = None;
        if video {
            let target = track
                .layers
                .iter()
                .rposition(|l| l.active(now))
                .unwrap_or(li);
            if self.video_layer != Some(li) {
                // Only the highest active layer is taken up, at a keyframe.
                if li != target {
                    return None;
                }
                if !keyframe {
                    return Some(li);
                }
                self.video_layer = Some(li);
            } else if target > li {
                // A better layer is flowing: ask for its keyframe to move up.
                want = Some(target);
            }
        }
        let k = usize::from(video);
        let frame = TapFrame {
            video,
            codec: codec_of(data),
            rtp_time: data.time.numer() as u32,
            keyframe,
            layer: li as u8,
            top_layer: li + 1 >= track.layers.len(),
            gap: self.gap[k] || (video && !data.contiguous),
            data: data.data.clone(),
        };
        match self.tx.try_send(frame) {
            Ok(()) => self.gap[k] = false,
            Err(TrySendError::Full(_)) => {
                self.gap[k] = true;
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => self.closed = true,
        }
        want
    }

    pub fn video_layer(&self) -> Option<usize> {
        self.video_layer
    }
}

/// The consumer's side: frames, and a way to ask the publisher for a keyframe.
pub struct Tap {
    pub participant: ParticipantId,
    pub identity: String,
    pub(crate) rx: Receiver<TapFrame>,
    pub(crate) dropped: Arc<AtomicU64>,
    pub(crate) keyframe: Arc<dyn Fn() + Send + Sync>,
}

impl Tap {
    /// The next frame; `Disconnected` once the publisher has left the room.
    pub fn recv_timeout(&self, d: Duration) -> Result<TapFrame, RecvTimeoutError> {
        self.rx.recv_timeout(d)
    }

    /// Asks the publisher for a keyframe on the layer the tap follows (a PLI).
    pub fn request_keyframe(&self) {
        (self.keyframe)()
    }

    /// The keyframe request as a function, for a thread that does not hold the tap.
    pub fn keyframe_requester(&self) -> Arc<dyn Fn() + Send + Sync> {
        self.keyframe.clone()
    }

    /// Frames lost because the consumer was too slow.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Turns tapped frames back into RTP packets (for a transcoder's RTP input, or a remote worker):
/// one SSRC per simulcast layer, sequence numbers skipping where frames were lost so the
/// receiver's depayloader sees the loss.
pub struct RtpPacketizer {
    payload_type: u8,
    ssrc_base: u32,
    seq: u16,
    vp8: Vp8Packetizer,
    h264: H264Packetizer,
    opus: OpusPacketizer,
}

/// RTP payload size (leaves room for headers inside a 1200-byte datagram).
const RTP_MTU: usize = 1150;

impl RtpPacketizer {
    pub fn new(payload_type: u8, ssrc_base: u32) -> RtpPacketizer {
        RtpPacketizer {
            payload_type,
            ssrc_base,
            seq: 0,
            vp8: Vp8Packetizer::default(),
            h264: H264Packetizer::default(),
            opus: OpusPacketizer,
        }
    }

    /// The RTP packets of one frame, in order (the last has the marker bit).
    pub fn packetize(&mut self, f: &TapFrame) -> Vec<Vec<u8>> {
        let payloads = match f.codec {
            TapCodec::Vp8 => self.vp8.packetize(RTP_MTU, &f.data),
            TapCodec::H264 => self.h264.packetize(RTP_MTU, &f.data),
            TapCodec::Opus => self.opus.packetize(RTP_MTU, &f.data),
            TapCodec::Other => return Vec::new(),
        };
        let Ok(payloads) = payloads else {
            return Vec::new();
        };
        if f.gap {
            self.seq = self.seq.wrapping_add(1);
        }
        let ssrc = self.ssrc_base.wrapping_add(u32::from(f.layer));
        let n = payloads.len();
        payloads
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                let mut pkt = Vec::with_capacity(12 + p.len());
                let marker = if i + 1 == n { 0x80 } else { 0 };
                pkt.extend_from_slice(&[0x80, marker | (self.payload_type & 0x7f)]);
                pkt.extend_from_slice(&self.seq.to_be_bytes());
                pkt.extend_from_slice(&f.rtp_time.to_be_bytes());
                pkt.extend_from_slice(&ssrc.to_be_bytes());
                pkt.extend_from_slice(&p);
                self.seq = self.seq.wrapping_add(1);
                pkt
            })
            .collect()
    }
}
