//! `aula`: the one binary. `serve` runs everything in one process; `token` mints access tokens.
#![deny(unsafe_code)]

mod config;
mod egress_cmd;
mod heap;
mod http_serve;
mod ladder_cmd;
mod log_writer;
mod stop;
mod tls;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use sfu::server::{ServerConfig, SfuHandle, TcpLimits, TcpMode};
use signaling::{AppState, Grants, TokenKeys};
use tracing::info;

use crate::config::Config;

#[derive(Parser)]
#[command(
    name = "aula",
    version,
    about = "Live classes and live broadcasts: SFU, signaling, egress"
)]
struct Cli {
    /// Config file (default: ./aula.toml when present).
    #[arg(long, global = true, env = "AULA_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the SFU, signaling and pages in one process.
    Serve,
    /// Ladder profiles: show, validate, tune.
    #[command(subcommand)]
    Ladder(ladder_cmd::LadderCmd),
    /// HLS helpers.
    #[command(subcommand)]
    Hls(HlsCmd),
    /// Egress jobs outside `serve`.
    #[command(subcommand)]
    Egress(egress_cmd::EgressCmd),
    /// Check the configuration and print it as it takes effect (aula.toml, then AULA_*
    /// variables, over the defaults), secrets shown as "<set>".
    Config,
    /// Mint an access token.
    Token {
        #[arg(long)]
        room: String,
        #[arg(long)]
        identity: String,
        #[arg(long)]
        publish: bool,
        /// Grant subscribe (default on; --no-subscribe to drop it).
        #[arg(long = "no-subscribe", action = clap::ArgAction::SetFalse, default_value_t = true)]
        subscribe: bool,
        #[arg(long)]
        publish_data: bool,
        #[arg(long)]
        admin: bool,
        /// Lifetime, e.g. 3600s, 90m, 6h.
        #[arg(long, default_value = "6h", value_parser = parse_duration)]
        ttl: Duration,
    },
}

#[derive(Subcommand)]
enum HlsCmd {
    /// Mint a signed-URL token for a path prefix: use it as /s/{token}/{prefix}...
    Sign {
        /// Path prefix the token grants, e.g. /math/b-20261123-3f9c/
        #[arg(long)]
        prefix: String,
        #[arg(long, default_value = "6h", value_parser = parse_duration)]
        ttl: Duration,
        /// Signing key id (rotate by adding a new id).
        #[arg(long)]
        key_id: String,
        #[arg(long, env = "AULA_HLS_SIGNING_SECRET", hide_env_values = true)]
        secret: String,
    },
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => return Err(format!("bad duration unit in {s:?} (s, m, h, d)")),
    };
    Ok(Duration::from_secs(secs))
}

fn main() -> Result<()> {
    heap::tune();
    let cli = Cli::parse();
    // Ladder commands work on files and need no server configuration.
    let config = cli.config;
    let cfg = move || Config::load(config.as_deref());
    match cli.cmd {
        Cmd::Ladder(cmd) => ladder_cmd::run(cmd, cfg().ok().map(|c| c.storage.dir)),
        Cmd::Hls(HlsCmd::Sign {
            prefix,
            ttl,
            key_id,
            secret,
        }) => {
            let keys = hls::SigningKeys::new(&key_id, [(key_id.clone(), secret.into_bytes())])
                .context("a key id must be non-empty and without '.'")?;
            println!("{}", keys.sign(&prefix, ttl));
            Ok(())
        }
        Cmd::Serve => serve(cfg()?),
        Cmd::Config => {
            print!("{}", cfg()?.shown()?);
            Ok(())
        }
        Cmd::Egress(cmd) => {
            logs();
            egress_cmd::run(cmd, cfg()?)
        }
        Cmd::Token {
            room,
            identity,
            publish,
            subscribe,
            publish_data,
            admin,
            ttl,
        } => {
            let (secret, _) = cfg()?.api_secret()?;
            let keys = TokenKeys::new(&cfg()?.auth.api_key, &secret);
            let grants = Grants {
                publish,
                subscribe,
                publish_data,
                admin,
            };
            println!("{}", keys.mint(&identity, &room, grants, ttl));
            Ok(())
        }
    }
}

fn logs() {
    tracing_subscriber::fmt()
        // Escaped, and so without colour codes: request bytes cannot forge log lines.
        .with_writer(log_writer::EscapedStderr)
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,str0m=warn,dimpl=warn".into()),
        )
        .init();
}

fn serve(cfg: Config) -> Result<()> {
    logs();
    let (secret, dev) = cfg.api_secret()?;
    let keys = TokenKeys::new(&cfg.auth.api_key, &secret);
    let (room_events, mut room_events_rx) = tokio::sync::mpsc::unbounded_channel();
    // Bound before the media thread starts: ICE-TCP on the HTTP port announces its address.
    let http_listener = std::net::TcpListener::bind(cfg.http.bind)
        .with_context(|| format!("binding HTTP {}", cfg.http.bind))?;
    http_listener.set_nonblocking(true)?;
    let http_addr = http_listener.local_addr()?;
    let tcp = match (cfg.media.tcp, cfg.media.tcp_on_http) {
        (false, _) => None,
        (true, true) => Some(TcpMode::OnHttp(http_addr)),
        (true, false) => Some(TcpMode::Listen(
            cfg.media.tcp_bind.unwrap_or(cfg.media.bind),
        )),
    };
    if tcp.is_none() && !cfg.media.udp_candidate {
        anyhow::bail!(
            "media.udp_candidate = false needs media.tcp = true: peers would have no candidate"
        );
    }
    let sfu = SfuHandle::start(ServerConfig {
        bind: cfg.media.bind,
        public_ip: cfg.media.public_ip,
        silence_timeout: Duration::from_secs(cfg.rooms.silence_timeout_s),
        max_participants_per_room: cfg.rooms.max_participants,
        presence_batch_above: cfg.rooms.presence_batch_above,
        events: (!cfg.rooms.webhooks.is_empty()).then_some(room_events),
        tcp,
        tcp_limits: TcpLimits::default(),
        udp_candidate: cfg.media.udp_candidate,
    })
    .with_context(|| {
        format!(
            "binding media UDP {} (and TCP {:?})",
            cfg.media.bind, cfg.media.tcp_bind
        )
    })?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        // Listening for SIGINT/SIGTERM before anything says we are up.
        let stop = stop::requested();
        let listener = tokio::net::TcpListener::from_std(http_listener)?;
        let http = http_addr;
        let tls = match (&cfg.http.tls_cert, &cfg.http.tls_key) {
            (Some(c), Some(k)) => Some(tls::Tls::start(c.clone(), k.clone())?),
            (None, None) => None,
            _ => anyhow::bail!("http.tls_cert and http.tls_key go together: set both or neither"),
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        // Room lifecycle events to `rooms.webhooks`, signed like the egress webhooks.
        let hooks = egress::Webhooks::new(
            cfg.rooms.webhooks.clone(),
            Some(cfg.rooms.webhook_secret.clone()),
        );
        tokio::spawn(async move {
            // Deliveries run side by side (one slow receiver must not hold the others), so
            // they may arrive out of order: `seq` says the order they happened in.
            #[derive(serde::Serialize)]
            struct Numbered<'a> {
                seq: u64,
                #[serde(flatten)]
                event: &'a sfu::RoomEvent,
            }
            let mut seq = 0u64;
            while let Some(e) = room_events_rx.recv().await {
                seq += 1;
                hooks.send_event(e.event, &Numbered { seq, event: &e });
            }
        });
        let tcp_media = sfu.tcp_addr().map_or("off".to_string(), |a| a.to_string());
        // Printed once everything below has started: a script that waits for the line (tests
        // bind port 0) must not see it from a server about to fail on its storage.
        let mut banner = vec![format!(
            "aula listening http={scheme}://{http} media={} tcp_media={tcp_media}",
            sfu.media_addr()
        )];
        let serving = (http, sfu.media_addr(), tcp_media);
        if dev {
            banner.push(format!(
                "development API key {} secret {} (kept in {})",
                cfg.auth.api_key,
                secret,
                cfg.storage.dir.join("dev-secret").display()
            ));
            let t = keys.mint(
                "tutor",
                "demo",
                Grants {
                    publish: true,
                    subscribe: true,
                    publish_data: true,
                    admin: false,
                },
                Duration::from_secs(6 * 3600),
            );
            banner.push(format!("try: {scheme}://{http}/room/demo?token={t}"));
            banner.push(format!("     {scheme}://{http}/broadcast/demo?token={t}"));
        }
        let store = cfg.store().await?;
        info!(storage = %store.describe(), "HLS storage");
        let store = std::sync::Arc::new(store);
        // With S3/R2 storage, collaboration snapshots are kept in the bucket too.
        let collab_remote = (cfg.storage.backend == config::Backend::S3).then(|| {
            Arc::new(signaling::collab_bucket::Bucket(store.clone()))
                as Arc<dyn collab::SnapshotStore>
        });
        let egress = if cfg.egress.enabled() {
            info!(redis = %cfg.egress.redis, "egress jobs are queued for `aula egress worker`s");
            egress::Egress::dispatching(
                store,
                cfg.signing_keys()?,
                cfg.hls.clone(),
                cfg.egress.clone(),
            )?
        } else {
            egress::Egress::new(store, cfg.signing_keys()?, cfg.hls.clone())
        };
        egress.capacity().set_total(cfg.egress.capacity_cores);
        {
            // Measured once per machine (cached in the data directory); the built-in figures
            // serve the jobs that start before it is done.
            let (capacity, dir) = (egress.capacity().clone(), cfg.storage.dir.clone());
            tokio::task::spawn_blocking(move || {
                capacity.set_model(egress::encode_cost::CostModel::load_or_calibrate(
                    &dir, "veryfast",
                ))
            });
        }
        let collab = collab::Collab::with_remote(
            cfg.storage.dir.join("collab"),
            cfg.collab.clone(),
            collab_remote,
        )
        .context("opening the collaboration store")?;
        let chat = signaling::chat::Chat::new(cfg.storage.dir.join("chat"), cfg.chat.clone())
            .context("opening the chat history store")?;
        let sfu_for_http = sfu.clone();
        let state = AppState::new(sfu, keys)
            .with_egress(egress.clone(), cfg.signing.public_broadcasts)
            .with_collab(collab.clone())
            .with_chat(chat)
            .with_classroom(
                signaling::classroom::Classroom::new(cfg.storage.dir.join("classroom"))
                    .context("opening the classroom store")?,
            );
        let refusals = Arc::new(http_serve::Refusals::default());
        let state = {
            let r = refusals.clone();
            let mut state = state;
            state.extra_metrics = Some(Arc::new(move |out: &mut String| {
                r.render(out);
                heap::render(out);
            }));
            state.turn = cfg.turn.clone();
            state
        };
        heap::spawn_trimmer(Duration::from_secs(5));
        let app = signaling::router(state);
        let (stopping_tx, stopping) = tokio::sync::oneshot::channel::<()>();
        let limits = http_serve::Limits {
            header_timeout: Duration::from_secs(cfg.http.header_timeout_s.max(1)),
            max_connections: cfg.http.max_connections.max(1),
            max_pending_per_ip: cfg.http.max_pending_per_ip.max(1),
        };
        let media_on_http = cfg.media.tcp_on_http.then(|| sfu_for_http.clone());
        let (http, media, tcp_media) = serving;
        info!(%http, %media, %tcp_media, scheme, "aula serving");
        for line in banner {
            println!("{line}");
        }
        let server = tokio::spawn(http_serve::serve(
            listener,
            app,
            limits,
            refusals,
            tls,
            media_on_http,
            async {
                let _ = stopping.await;
            },
        ));
        stop.await;
        info!("shutting down: finishing egress jobs");
        // Running broadcasts are finalised (VOD playlists written) before the process ends.
        egress.shutdown(Duration::from_secs(20)).await;
        let _ = stopping_tx.send(());
        // Players keep connections open (blocking reloads, keep-alive): do not wait for them long.
        let served = match tokio::time::timeout(Duration::from_secs(3), server).await {
            Ok(Ok(())) | Err(_) => Ok(()),
            Ok(Err(e)) => Err(anyhow::anyhow!("HTTP server task: {e}")),
        };
        // Document logs synced and the collab journal emptied: nothing to replay next start.
        if tokio::time::timeout(Duration::from_secs(10), collab.flush())
            .await
            .is_err()
        {
            tracing::warn!("collab journal not flushed in 10 s; the next start replays it");
        }
        served
    })
}
