//! Collaboration load: R rooms x E editors, each editor sending Yjs updates (a text insert
//! carrying its id and send time) at a steady rate over a y-websocket connection; every other
//! editor in the room receives it. Prints propagation latency p50/p95/p99, throughput and server
//! CPU, for `aula serve` (`/collab/{room}`) and for the Node y-websocket server
//! (`y-websocket/bin/server.cjs` from web/node_modules), and the ratio.
//!
//! `cargo run --release -p bench --bin collab -- --rooms 50 --editors 30 --rate 7.5 --seconds 20`
#![deny(unsafe_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use bench::collab_client::{editor, Pace, Stats};
use bench::{clock, cpu_seconds, host_ticks, steal_share, AulaServer};
use clap::Parser;
use tokio::sync::watch;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 50)]
    rooms: usize,
    #[arg(long, default_value_t = 30)]
    editors: usize,
    /// Updates per second per editor.
    #[arg(long, default_value_t = 7.5)]
    rate: f64,
    /// Measured seconds (after a 3 s warm-up).
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    #[arg(long, default_value = "target/release/aula")]
    aula: String,
    /// Skip the Node y-websocket server run.
    #[arg(long)]
    no_peer: bool,
}

struct Outcome {
    p50: f64,
    p95: f64,
    p99: f64,
    sent_per_s: f64,
    delivered_per_s: f64,
    expected_per_s: f64,
    cpu_cores: f64,
    errors: u64,
    steal: f64,
}

async fn run_load(
    args: &Args,
    url_for: impl Fn(usize, usize) -> String,
    server_pid: u32,
) -> Result<Outcome> {
    let stats = Arc::new(Stats::default());
    let stop = Arc::new(AtomicBool::new(false));
    // Editors send as soon as they are connected; the warm-up below covers the start.
    let (_go, go) = watch::channel(true);
    let pace = Pace {
        rate: args.rate,
        go,
        stop: stop.clone(),
        linger: Duration::ZERO,
    };
    let mut tasks = Vec::new();
    for r in 0..args.rooms {
        for e in 0..args.editors {
            let id = r * args.editors + e;
            tasks.push(tokio::spawn(editor(
                url_for(r, e),
                id,
                pace.clone(),
                stats.clone(),
            )));
            if id % 50 == 49 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cpu0 = cpu_seconds(server_pid)?;
    let host0 = host_ticks()?;
    let t0 = Instant::now();
    stats.measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    stats.measuring.store(false, Ordering::Relaxed);
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds(server_pid)? - cpu0;
    let steal = steal_share(host0, host_ticks()?);
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        if let Ok(Err(e)) = t.await {
            eprintln!("editor: {e:#}");
            stats.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
    let mut l = std::mem::take(&mut *stats.latencies_us.lock().map_err(|_| anyhow!("poisoned"))?);
    l.sort_unstable();
    let pct = |p: f64| -> f64 {
        if l.is_empty() {
            f64::NAN
        } else {
            l[((l.len() - 1) as f64 * p) as usize] as f64 / 1000.0
        }
    };
    let sent = stats.sent.load(Ordering::Relaxed) as f64;
    Ok(Outcome {
        p50: pct(0.50),
        p95: pct(0.95),
        p99: pct(0.99),
        sent_per_s: sent / secs,
        delivered_per_s: stats.received.load(Ordering::Relaxed) as f64 / secs,
        expected_per_s: sent / secs * (args.editors.saturating_sub(1)) as f64,
        cpu_cores: cpu / secs,
        errors: stats.errors.load(Ordering::Relaxed),
        steal,
    })
}

fn print(name: &str, o: &Outcome) {
    println!(
        "{name:<12} latency p50={:.1}ms p95={:.1}ms p99={:.1}ms  updates/s={:.0}  deliveries/s={:.0} (expected {:.0})  server_cpu={:.2} cores  errors={}  host_steal={:.0}%",
        o.p50, o.p95, o.p99, o.sent_per_s, o.delivered_per_s, o.expected_per_s, o.cpu_cores, o.errors, o.steal * 100.0
    );
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    clock();
    println!(
        "collab load: {} rooms x {} editors at {}/s each, {} s measured, loopback",
        args.rooms, args.editors, args.rate, args.seconds
    );
    // Rate limits sized for the load; snapshots as shipped.
    let server = AulaServer::start(
        &args.aula,
        &[
            ("AULA_COLLAB__RATE_PER_S", "1000"),
            ("AULA_COLLAB__BURST", "2000"),
        ],
    )?;
    let ws_base = server.base.replace("http://", "ws://");
    // One identity per editor, as in a class (aula caps connections per identity per
    // document: collab.max_clients_per_identity).
    let mut tokens = Vec::new();
    for r in 0..args.rooms {
        let mut room = Vec::new();
        for e in 0..args.editors {
            room.push(server.token(
                &format!("room{r}"),
                &format!("editor{e}"),
                &["--publish-data"],
            )?);
        }
        tokens.push(room);
    }
    let ours = run_load(
        &args,
        |r, e| format!("{ws_base}/collab/room{r}?token={}", tokens[r][e]),
        server.pid(),
    )
    .await?;
    drop(server);
    print("aula", &ours);

    if args.no_peer {
        return Ok(());
    }
    let script = "web/node_modules/y-websocket/bin/server.cjs";
    if !std::path::Path::new(script).exists() {
        println!("(no {script}: run scripts/install-deps.sh for the Node peer)");
        return Ok(());
    }
    let port = free_port()?;
    let mut node = std::process::Command::new("node")
        .arg(script)
        .env("HOST", "127.0.0.1")
        .env("PORT", port.to_string())
        .stdout(std::process::Stdio::null())
        .spawn()
        .context("starting node y-websocket server")?;
    let ready = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if ready.elapsed() > Duration::from_secs(15) {
            let _ = node.kill();
            return Err(anyhow!("node y-websocket server did not start"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let theirs = run_load(
        &args,
        |r, _| format!("ws://127.0.0.1:{port}/room{r}"),
        node.id(),
    )
    .await;
    let _ = node.kill();
    let _ = node.wait();
    let theirs = theirs?;
    print("y-websocket", &theirs);
    println!(
        "ratio (y-websocket / aula): p50 {:.2}x  p95 {:.2}x  p99 {:.2}x  cpu per delivery {:.2}x",
        theirs.p50 / ours.p50,
        theirs.p95 / ours.p95,
        theirs.p99 / ours.p99,
        (theirs.cpu_cores / theirs.delivered_per_s) / (ours.cpu_cores / ours.delivered_per_s)
    );
    Ok(())
}
