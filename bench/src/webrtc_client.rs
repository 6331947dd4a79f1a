//! A webrtc-rs `webrtc` client (the second, independent WebRTC stack; every bench using it is
//! also an interop test against str0m): WHIP publishers and WHEP subscribers that count what
//! they receive.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use rtc::interceptor::Registry;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::{
    MediaEngine, MIME_TYPE_OPUS, MIME_TYPE_VP8,
};
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use tokio::sync::watch;
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCIceGatheringState,
    RTCPeerConnectionState,
};

use crate::micros;

/// Marks the first packet of a frame; the publisher's send time (`micros()`) follows.
pub const MARK: &[u8; 4] = b"AULA";

/// What one or more subscribers received (counted while `measuring`).
#[derive(Default)]
pub struct Stats {
    pub video_packets: AtomicU64,
    pub audio_packets: AtomicU64,
    pub bytes: AtomicU64,
    pub lost: AtomicU64,
    pub delays_us: Mutex<Vec<u32>>,
    pub measuring: AtomicBool,
}

struct Handler {
    connected: watch::Sender<bool>,
    gathered: watch::Sender<bool>,
    stats: Option<Arc<Stats>>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.gathered.send(true);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self
            .connected
            .send(state == RTCPeerConnectionState::Connected);
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let Some(stats) = self.stats.clone() else {
            return;
        };
        tokio::spawn(async move {
            let video = track.kind().await == RtpCodecKind::Video;
            let mut last_seq: Option<u16> = None;
            while let Some(evt) = track.poll().await {
                let TrackRemoteEvent::OnRtpPacket(p) = evt else {
                    continue;
                };
                let now = micros();
                if !stats.measuring.load(Ordering::Relaxed) {
                    last_seq = Some(p.header.sequence_number);
                    continue;
                }
                stats
                    .bytes
                    .fetch_add(p.payload.len() as u64, Ordering::Relaxed);
                if !video {
                    stats.audio_packets.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                stats.video_packets.fetch_add(1, Ordering::Relaxed);
                let seq = p.header.sequence_number;
                if let Some(l) = last_seq {
                    let gap = seq.wrapping_sub(l);
                    if gap > 1 && gap < 1000 {
                        stats.lost.fetch_add(u64::from(gap - 1), Ordering::Relaxed);
                    }
                }
                last_seq = Some(seq);
                // The first packet of each frame carries the publisher's send time.
                let head = &p.payload[..p.payload.len().min(24)];
                if let Some(i) = head.windows(4).position(|w| w == MARK) {
                    if let Some(b) = p.payload.get(i + 4..i + 12) {
                        let mut a = [0u8; 8];
                        a.copy_from_slice(b);
                        let sent = u64::from_be_bytes(a);
                        if let Ok(mut d) = stats.delays_us.lock() {
                            d.push(now.saturating_sub(sent) as u32);
                        }
                    }
                }
            }
        });
    }
}

pub fn codecs() -> (RTCRtpCodecParameters, RTCRtpCodecParameters) {
    let audio = RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: MIME_TYPE_OPUS.to_owned(),
            clock_rate: 48000,
            channels: 2,
            sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
            rtcp_feedback: vec![],
        },
        payload_type: 111,
    };
    let video = RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: MIME_TYPE_VP8.to_owned(),
            clock_rate: 90000,
            channels: 0,
            sdp_fmtp_line: "".to_owned(),
            rtcp_feedback: vec![],
        },
        payload_type: 96,
    };
    (audio, video)
}

pub async fn peer(
    stats: Option<Arc<Stats>>,
) -> Result<(
    impl PeerConnection,
    watch::Receiver<bool>,
    watch::Receiver<bool>,
)> {
    let (audio, video) = codecs();
    let mut me = MediaEngine::default();
    me.register_codec(audio, RtpCodecKind::Audio)?;
    me.register_codec(video, RtpCodecKind::Video)?;
    let registry = register_default_interceptors(Registry::new(), &mut me)?;
    let (ctx, crx) = watch::channel(false);
    let (gtx, grx) = watch::channel(false);
    let runtime = webrtc::runtime::default_runtime().ok_or_else(|| anyhow!("no runtime"))?;
    let pc = PeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(me)
        .with_interceptor_registry(registry)
        .with_handler(Arc::new(Handler {
            connected: ctx,
            gathered: gtx,
            stats,
        }))
        .with_runtime(runtime)
        .with_udp_addrs(vec!["127.0.0.1:0".to_string()])
        .build()
        .await?;
    Ok((pc, crx, grx))
}

/// Offer, wait for ICE gathering, POST to WHIP/WHEP, apply the answer; the WHIP/WHEP session's
/// `Location`.
pub async fn signal(
    pc: &impl PeerConnection,
    mut gathered: watch::Receiver<bool>,
    url: String,
    token: String,
) -> Result<String> {
    let offer = pc.create_offer(None).await?;
    pc.set_local_description(offer).await?;
    tokio::time::timeout(Duration::from_secs(10), gathered.wait_for(|g| *g)).await??;
    let sdp = pc
        .local_description()
        .await
        .ok_or_else(|| anyhow!("no local description"))?
        .sdp;
    let (answer, location) = tokio::task::spawn_blocking(move || -> Result<(String, String)> {
        let mut r = ureq::post(&url)
            .header("Authorization", &format!("Bearer {token}"))
            .header("Content-Type", "application/sdp")
            .send(sdp.as_str())?;
        if r.status() != 201 {
            bail!("{url}: {}", r.status());
        }
        let location = r
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .unwrap_or_default()
            .to_string();
        Ok((r.body_mut().read_to_string()?, location))
    })
    .await??;
    pc.set_remote_description(RTCSessionDescription::answer(answer)?)
        .await?;
    Ok(location)
}

/// A WHEP subscriber (video + audio, receive only) of `url`, connected; its stats go to `stats`.
pub async fn subscriber(
    url: String,
    token: String,
    stats: Arc<Stats>,
) -> Result<(impl PeerConnection, String)> {
    let (pc, mut conn, gather) = peer(Some(stats)).await?;
    for kind in [RtpCodecKind::Video, RtpCodecKind::Audio] {
        pc.add_transceiver_from_kind(
            kind,
            Some(RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Recvonly,
                ..Default::default()
            }),
        )
        .await?;
    }
    let location = signal(&pc, gather, url, token).await?;
    tokio::time::timeout(Duration::from_secs(30), conn.wait_for(|c| *c)).await??;
    Ok((pc, location))
}

pub fn local_track(
    kind: RtpCodecKind,
    codec: RTCRtpCodec,
    ssrc: u32,
) -> Result<Arc<TrackLocalStaticSample>> {
    Ok(Arc::new(TrackLocalStaticSample::new(
        Instant::now(),
        MediaStreamTrack::new(
            "bench".to_string(),
            format!("bench-{kind}"),
            format!("bench-{kind}"),
            kind,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                codec,
                ..Default::default()
            }],
        ),
    )?))
}

/// A WHIP publisher on `url` with one VP8 (SSRC 0x1111, PT 96) and one Opus (0x2222, PT 111)
/// track, connected: the media is written to the returned tracks.
pub async fn publisher(
    url: String,
    token: String,
) -> Result<(
    impl PeerConnection,
    Arc<TrackLocalStaticSample>,
    Arc<TrackLocalStaticSample>,
)> {
    let (audio_codec, video_codec) = codecs();
    let (pc, mut conn, gather) = peer(None).await?;
    let video = local_track(RtpCodecKind::Video, video_codec.rtp_codec.clone(), 0x1111)?;
    let audio = local_track(RtpCodecKind::Audio, audio_codec.rtp_codec.clone(), 0x2222)?;
    pc.add_track(video.clone() as Arc<dyn TrackLocal>).await?;
    pc.add_track(audio.clone() as Arc<dyn TrackLocal>).await?;
    signal(&pc, gather, url, token).await?;
    tokio::time::timeout(Duration::from_secs(15), conn.wait_for(|c| *c))
        .await
        .context("publisher did not connect")??;
    Ok((pc, video, audio))
}
