//! SFU fan-out benchmark: one WHIP publisher (~2.5 Mbit/s VP8 + Opus) to N WHEP subscribers,
//! all clients on the webrtc-rs `webrtc` crate, a WebRTC stack independent of the server's
//! str0m, so every run is also an interop test.
//!
//! Prints, per N: subscribers connected, forwarded packets/s (received by subscribers and sent
//! by the server), server CPU seconds per second per 100 subscriber tracks, p50/p99 forwarding
//! delay (publisher send -> subscriber receive, same process clock) and loss (sequence gaps).
#![deny(unsafe_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bench::{clock, micros, AulaServer};
use bytes::Bytes;
use clap::Parser;
use rtc::interceptor::Registry;
use rtc::media::Sample;
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

#[derive(Parser)]
#[command(about = "aula SFU fan-out benchmark (webrtc-rs clients)")]
struct Args {
    /// Subscriber counts to run, comma separated.
    #[arg(long, default_value = "1,10,50,100", value_delimiter = ',')]
    subscribers: Vec<usize>,
    /// Measurement window per run, after warm-up.
    #[arg(long, default_value_t = 15)]
    seconds: u64,
    /// Publisher video bitrate.
    #[arg(long, default_value_t = 2500)]
    video_kbps: u64,
    /// The aula binary (built with --release for meaningful figures).
    #[arg(long, default_value = "target/release/aula")]
    aula: String,
}

const MARK: &[u8; 4] = b"AULA";

#[derive(Default)]
struct Stats {
    video_packets: AtomicU64,
    audio_packets: AtomicU64,
    bytes: AtomicU64,
    lost: AtomicU64,
    delays_us: Mutex<Vec<u32>>,
    measuring: std::sync::atomic::AtomicBool,
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

fn codecs() -> (RTCRtpCodecParameters, RTCRtpCodecParameters) {
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

async fn peer(
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

/// Offer, wait for ICE gathering, POST to WHIP/WHEP, apply the answer.
async fn signal(
    pc: &impl PeerConnection,
    mut gathered: watch::Receiver<bool>,
    url: String,
    token: String,
) -> Result<()> {
    let offer = pc.create_offer(None).await?;
    pc.set_local_description(offer).await?;
    tokio::time::timeout(Duration::from_secs(10), gathered.wait_for(|g| *g)).await??;
    let sdp = pc
        .local_description()
        .await
        .ok_or_else(|| anyhow!("no local description"))?
        .sdp;
    let answer = tokio::task::spawn_blocking(move || -> Result<String> {
        let mut r = ureq::post(&url)
            .header("Authorization", &format!("Bearer {token}"))
            .header("Content-Type", "application/sdp")
            .send(sdp.as_str())?;
        if r.status() != 201 {
            bail!("{url}: {}", r.status());
        }
        Ok(r.body_mut().read_to_string()?)
    })
    .await??;
    pc.set_remote_description(RTCSessionDescription::answer(answer)?)
        .await?;
    Ok(())
}

fn local_track(
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

async fn run(args: &Args, n: usize) -> Result<()> {
    let server = AulaServer::start(&args.aula, &[])?;
    let room = "bench";
    let (audio_codec, video_codec) = codecs();

    // Publisher over WHIP.
    let (pub_pc, mut pub_conn, pub_gather) = peer(None).await?;
    let vtrack = local_track(RtpCodecKind::Video, video_codec.rtp_codec.clone(), 0x1111)?;
    let atrack = local_track(RtpCodecKind::Audio, audio_codec.rtp_codec.clone(), 0x2222)?;
    pub_pc
        .add_track(vtrack.clone() as Arc<dyn TrackLocal>)
        .await?;
    pub_pc
        .add_track(atrack.clone() as Arc<dyn TrackLocal>)
        .await?;
    let token = server.token(room, "publisher", &["--publish"])?;
    signal(
        &pub_pc,
        pub_gather,
        format!("{}/whip/{room}", server.base),
        token,
    )
    .await?;
    tokio::time::timeout(Duration::from_secs(15), pub_conn.wait_for(|c| *c))
        .await
        .context("publisher did not connect")??;

    let frame_bytes = (args.video_kbps * 1000 / 8 / 30) as usize;
    let media = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        let start = Instant::now();
        let (mut frames, mut audio) = (0u64, 0u64);
        loop {
            tick.tick().await;
            let ms = start.elapsed().as_millis() as u64;
            while audio * 20 <= ms {
                audio += 1;
                let s = Sample {
                    data: Bytes::from(vec![0xfcu8; 80]),
                    duration: Duration::from_millis(20),
                    ..Sample::new(Instant::now())
                };
                let _ = atrack.sample_writer(0x2222, 111).write_sample(&s).await;
            }
            while frames * 33 <= ms {
                frames += 1;
                let mut data = vec![0u8; frame_bytes];
                // VP8 frame tag: P bit clear = keyframe (one a second so subscribers start fast).
                data[0] = if frames % 30 == 1 { 0x10 } else { 0x11 };
                data[4..8].copy_from_slice(MARK);
                data[8..16].copy_from_slice(&micros().to_be_bytes());
                let s = Sample {
                    data: Bytes::from(data),
                    duration: Duration::from_millis(33),
                    ..Sample::new(Instant::now())
                };
                let _ = vtrack.sample_writer(0x1111, 96).write_sample(&s).await;
            }
        }
    });

    // Subscribers over WHEP, connected in batches.
    let stats = Arc::new(Stats::default());
    let mut subs = Vec::new();
    let t_connect = Instant::now();
    for batch in (0..n).collect::<Vec<_>>().chunks(25) {
        let mut joins = Vec::new();
        for i in batch {
            let stats = stats.clone();
            let url = format!("{}/whep/{room}", server.base);
            let token = server.token(room, &format!("sub{i}"), &[])?;
            joins.push(tokio::spawn(async move {
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
                signal(&pc, gather, url, token).await?;
                tokio::time::timeout(Duration::from_secs(30), conn.wait_for(|c| *c)).await??;
                anyhow::Ok(pc)
            }));
        }
        for j in joins {
            match j.await? {
                Ok(pc) => subs.push(pc),
                Err(e) => eprintln!("subscriber failed: {e}"),
            }
        }
    }
    let connect_s = t_connect.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Measure.
    let cpu0 = server.cpu_seconds()?;
    let out0 = server.metric("aula_sfu_datagrams_out_total")?;
    stats.measuring.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    stats.measuring.store(false, Ordering::Relaxed);
    let secs = t0.elapsed().as_secs_f64();
    let cpu = server.cpu_seconds()? - cpu0;
    let out = server.metric("aula_sfu_datagrams_out_total")? - out0;

    let video = stats.video_packets.load(Ordering::Relaxed) as f64;
    let audio = stats.audio_packets.load(Ordering::Relaxed) as f64;
    let lost = stats.lost.load(Ordering::Relaxed) as f64;
    let mut d = stats
        .delays_us
        .lock()
        .map(|d| d.clone())
        .unwrap_or_default();
    d.sort_unstable();
    let pct = |p: f64| {
        d.get(((d.len() as f64 - 1.0) * p) as usize)
            .map(|v| *v as f64 / 1000.0)
            .unwrap_or(f64::NAN)
    };
    let tracks = (subs.len() * 2) as f64;
    println!(
        "N={n:<4} connected={:<4} (in {connect_s:.1}s)  fwd_pkts/s={:>8.0} (server sent {:>8.0}/s)  rx_Mbit/s={:>7.1}  server_cpu={:.2} cores, {:.3} cpu-s/s per 100 tracks  delay p50={:.1}ms p99={:.1}ms  loss={:.2}%",
        subs.len(),
        (video + audio) / secs,
        out as f64 / secs,
        stats.bytes.load(Ordering::Relaxed) as f64 * 8.0 / secs / 1e6,
        cpu / secs,
        if tracks > 0.0 { cpu / secs / tracks * 100.0 } else { f64::NAN },
        pct(0.5),
        pct(0.99),
        if video > 0.0 { lost / (video + lost) * 100.0 } else { f64::NAN },
    );
    media.abort();
    for pc in subs {
        let _ = pc.close().await;
    }
    let _ = pub_pc.close().await;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    clock();
    println!(
        "aula SFU fan-out: 1 WHIP publisher ({} kbit/s VP8 + Opus) -> N WHEP subscribers, webrtc-rs clients, {} s window, {} cores",
        args.video_kbps,
        args.seconds,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
    for &n in &args.subscribers {
        if let Err(e) = run(&args, n).await {
            println!("N={n}: failed: {e:#}");
        }
    }
    Ok(())
}
