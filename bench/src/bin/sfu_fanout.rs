//! SFU fan-out benchmark: one WHIP publisher (~2.5 Mbit/s VP8 + Opus) to N WHEP subscribers,
//! all clients on the webrtc-rs `webrtc` crate, a WebRTC stack independent of the server's
//! str0m, so every run is also an interop test.
//!
//! Prints, per N: subscribers connected, forwarded packets/s (received by subscribers and sent
//! by the server), server CPU seconds per second per 100 subscriber tracks, p50/p99 forwarding
//! delay (publisher send -> subscriber receive, same process clock) and loss (sequence gaps).
#![deny(unsafe_code)]

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use bench::webrtc_client::{publisher, subscriber, Stats, MARK};
use bench::{clock, micros, AulaServer};
use bytes::Bytes;
use clap::Parser;
use rtc::media::Sample;
use webrtc::peer_connection::PeerConnection;

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

async fn run(args: &Args, n: usize) -> Result<()> {
    let server = AulaServer::start(&args.aula, &[])?;
    let room = "bench";
    let token = server.token(room, "publisher", &["--publish"])?;
    let (pub_pc, vtrack, atrack) = publisher(format!("{}/whip/{room}", server.base), token).await?;

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
                anyhow::Ok(subscriber(url, token, stats).await?.0)
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
