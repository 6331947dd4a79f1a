//! Classroom load: N room clients (no media) on the room WebSocket (`/rtc/{room}`), each sending
//! chat messages (text carrying its sender and send time) and raising/lowering its hand at a
//! steady rate; every client receives every message. Prints chat delivery latency p50/p95/p99
//! (send to receipt, through the server's fsync before acknowledgement), deliveries per second,
//! and the server's CPU. There is no peer server for this protocol here; the figure to watch
//! is deliveries per server CPU-second.
//!
//! `cargo run --release -p bench --bin chat -- --clients 1000 --rate 0.05 --seconds 20`
#![deny(unsafe_code)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use bench::{micros, AulaServer};
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message as WsMessage;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// Rooms the clients are spread over.
    #[arg(long, default_value_t = 1)]
    rooms: usize,
    /// Chat messages per second per client.
    #[arg(long, default_value_t = 0.05)]
    rate: f64,
    /// Hand raises/lowers per second per client (presence traffic).
    #[arg(long, default_value_t = 0.02)]
    hands: f64,
    /// Measured seconds (after a 3 s warm-up).
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    #[arg(long, default_value = "target/release/aula")]
    aula: String,
}

#[derive(Default)]
struct Stats {
    sent: AtomicU64,
    received: AtomicU64,
    hands: AtomicU64,
    latencies_us: Mutex<Vec<u32>>,
    measuring: AtomicBool,
    errors: AtomicU64,
    failed: AtomicU64,
}

/// The send time inside a chat frame's text (`"text":"c{client}@{micros}"`), if another's.
fn sent_at(frame: &str, me: usize) -> Option<u64> {
    let i = frame.find("\"text\":\"c")? + 9;
    let rest = &frame[i..];
    let at = rest.find('@')?;
    let from: usize = rest[..at].parse().ok()?;
    if from == me {
        return None;
    }
    let end = rest[at + 1..].find('"')?;
    rest[at + 1..at + 1 + end].parse().ok()
}

async fn client(
    url: String,
    me: usize,
    args: (f64, f64),
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
) -> Result<()> {
    let (ws, _) = tokio_tungstenite::connect_async(&url)
        .await
        .with_context(|| format!("client {me} connecting"))?;
    let (mut tx, mut rx) = ws.split();
    let (rate, hands) = args;
    let every = Duration::from_secs_f64(1.0 / rate.max(1e-6));
    // Spread the clients' send times over the interval.
    let offset = every.mul_f64((me as f64 * 0.618_034) % 1.0);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + offset, every);
    let hand_every = Duration::from_secs_f64(1.0 / hands.max(1e-6));
    let mut hand = tokio::time::interval_at(
        tokio::time::Instant::now() + hand_every.mul_f64((me as f64 * 0.414_214) % 1.0),
        hand_every,
    );
    let mut raised = false;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        tokio::select! {
            _ = tick.tick() => {
                n += 1;
                let text = format!("c{me}@{}", micros());
                let msg = format!("{{\"type\":\"chat\",\"id\":\"{me}-{n}\",\"text\":\"{text}\"}}");
                tx.send(WsMessage::Text(msg.into())).await?;
                if stats.measuring.load(Ordering::Relaxed) {
                    stats.sent.fetch_add(1, Ordering::Relaxed);
                }
            }
            _ = hand.tick(), if hands > 0.0 => {
                raised = !raised;
                let msg = format!("{{\"type\":\"hand\",\"raised\":{raised}}}");
                tx.send(WsMessage::Text(msg.into())).await?;
                stats.hands.fetch_add(1, Ordering::Relaxed);
            }
            m = rx.next() => {
                let Some(m) = m else { return Err(anyhow!("client {me}: closed")) };
                let m = m?;
                if let WsMessage::Text(t) = m {
                    if t.contains("\"type\":\"error\"") {
                        stats.errors.fetch_add(1, Ordering::Relaxed);
                    } else if let Some(at) = sent_at(&t, me) {
                        if stats.measuring.load(Ordering::Relaxed) {
                            stats.received.fetch_add(1, Ordering::Relaxed);
                            let lat = micros().saturating_sub(at).min(u32::MAX as u64) as u32;
                            if let Ok(mut l) = stats.latencies_us.lock() {
                                l.push(lat);
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

fn pct(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[i]) / 1000.0
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let max = (args.clients / args.rooms.max(1) + 1).to_string();
    let server = AulaServer::start(
        &args.aula,
        &[
            ("AULA_HLS__AUTO_EGRESS", "false"),
            ("AULA_ROOMS__MAX_PARTICIPANTS", max.as_str()),
            // These clients never start media; the SFU removes a participant silent on UDP
            // for rooms.silence_timeout_s (15 s), which would end them mid-run.
            ("AULA_ROOMS__SILENCE_TIMEOUT_S", "3600"),
        ],
    )?;
    let ws_base = server.base.replace("http://", "ws://");
    let stats = Arc::new(Stats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for c in 0..args.clients {
        let room = format!("class{}", c % args.rooms.max(1));
        let token = server.token(&room, &format!("s{c}"), &["--publish-data"])?;
        let url = format!("{ws_base}/rtc/{room}?token={token}");
        let (stats, stop) = (stats.clone(), stop.clone());
        let rates = (args.rate, args.hands);
        tasks.push(tokio::spawn(async move {
            if let Err(e) = client(url, c, rates, stats.clone(), stop.clone()).await {
                if !stop.load(Ordering::Relaxed) {
                    stats.failed.fetch_add(1, Ordering::Relaxed);
                    eprintln!("{e:#}");
                }
            }
        }));
        // A few joins at a time: the server caps unfinished requests per address.
        if c % 32 == 31 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cpu0 = server.cpu_seconds()?;
    let t0 = Instant::now();
    stats.measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    stats.measuring.store(false, Ordering::Relaxed);
    let wall = t0.elapsed().as_secs_f64();
    let cpu = server.cpu_seconds()? - cpu0;
    stop.store(true, Ordering::Relaxed);
    let failed = stats.failed.load(Ordering::Relaxed);
    for t in tasks {
        t.abort();
    }
    let mut lat = stats
        .latencies_us
        .lock()
        .map(|l| l.clone())
        .unwrap_or_default();
    lat.sort_unstable();
    let sent = stats.sent.load(Ordering::Relaxed);
    let received = stats.received.load(Ordering::Relaxed);
    let per_room = args.clients / args.rooms.max(1);
    let expected = sent as f64 * (per_room.saturating_sub(1)) as f64;
    println!(
        "chat load: {} clients in {} room(s), {}/s chat and {}/s hand changes each, {} s measured, loopback",
        args.clients, args.rooms, args.rate, args.hands, args.seconds
    );
    println!(
        "sent {sent}, delivered {received} of {expected:.0} ({:.1}%), {:.0} deliveries/s; hand changes {}; refusals {}; clients failed {failed}",
        100.0 * received as f64 / expected.max(1.0),
        received as f64 / wall,
        stats.hands.load(Ordering::Relaxed),
        stats.errors.load(Ordering::Relaxed),
    );
    println!(
        "delivery latency ms: p50 {:.1}  p95 {:.1}  p99 {:.1}  max {:.1}",
        pct(&lat, 0.5),
        pct(&lat, 0.95),
        pct(&lat, 0.99),
        pct(&lat, 1.0)
    );
    println!(
        "server CPU {:.2} s/s; {:.0} deliveries per CPU-second",
        cpu / wall,
        received as f64 / cpu.max(1e-9)
    );
    Ok(())
}
