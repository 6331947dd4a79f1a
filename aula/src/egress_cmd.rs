//! `aula egress run`: one egress job in the foreground, into the configured storage. Running it
//! again with the same `--broadcast` continues that broadcast after a discontinuity (a crashed
//! or killed run loses at most its open segment).
//!
//! `aula egress worker`: runs queued jobs (`egress.redis`) for `aula serve` nodes.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Subcommand;

use crate::config::Config;

#[derive(Subcommand)]
pub enum EgressCmd {
    /// Run one job until its source ends (Ctrl-C ends it cleanly, finalising the recording).
    Run {
        #[arg(long)]
        room: String,
        /// Continue this broadcast (after a crash); a new broadcast id when absent.
        #[arg(long)]
        broadcast: Option<String>,
        /// Ladder profile (shipped name, or `test` for a small 3-rung ladder).
        #[arg(long)]
        profile: Option<String>,
        /// Where media comes from: `test` (a test pattern and tone).
        #[arg(long, default_value = "test")]
        source: String,
        /// End after this many seconds of input (test source).
        #[arg(long)]
        seconds: Option<u64>,
    },
    /// Take jobs from the Redis queue (`egress.redis`) until Ctrl-C; running jobs are then
    /// handed over to other workers unfinished.
    Worker {
        /// This worker's name in the consumer group (unique per worker); host-pid by default.
        #[arg(long)]
        name: Option<String>,
    },
}

pub fn run(cmd: EgressCmd, cfg: Config) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match cmd {
            EgressCmd::Worker { name } => {
                let name = name.unwrap_or_else(|| {
                    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
                    format!("{}-{}", host.trim(), std::process::id())
                });
                let (tx, rx) = tokio::sync::watch::channel(false);
                tokio::spawn(async move {
                    crate::stop::requested().await;
                    let _ = tx.send(true);
                });
                let worker = egress::Worker {
                    name: name.clone(),
                    queue: cfg.egress.clone(),
                    store: Arc::new(cfg.store().await?),
                    keys: cfg.signing_keys()?,
                    settings: cfg.hls.clone(),
                    cost_model: Some(egress::encode_cost::CostModel::load_or_calibrate(
                        &cfg.storage.dir,
                        "veryfast",
                    )),
                };
                // One line a script can wait for.
                println!("egress worker {name} ready");
                worker.run(rx).await.context("egress worker")?;
                Ok(())
            }
            EgressCmd::Run {
                room,
                broadcast,
                profile,
                source,
                seconds,
            } => {
                let src = match source.as_str() {
                    "test" => egress::Source::TestPattern {
                        seconds,
                        width: 640,
                        height: 360,
                    },
                    other => bail!("unknown source {other:?} (test)"),
                };
                let store = cfg.store().await?;
                let e = egress::Egress::new(Arc::new(store), cfg.signing_keys()?, cfg.hls.clone());
                let status = e
                    .start(
                        egress::StartRequest {
                            room,
                            broadcast,
                            profile,
                        },
                        src,
                    )
                    .context("starting the egress job")?;
                // One line a script can parse.
                println!(
                    "egress job {} prefix {}/{} epoch {}",
                    status.id, status.room, status.broadcast, status.epoch
                );
                let id = status.id.clone();
                let stopper = e.clone();
                let stop_id = id.clone();
                tokio::spawn(async move {
                    crate::stop::requested().await;
                    let _ = stopper.stop(&stop_id);
                });
                let end = loop {
                    if let Some(s) = e.wait(&id, Duration::from_secs(3600)).await {
                        if matches!(s.state, egress::JobState::Ended | egress::JobState::Failed) {
                            break s;
                        }
                    }
                };
                println!("{}", serde_json::to_string(&end)?);
                if end.state == egress::JobState::Failed {
                    bail!(
                        "egress job failed: {}",
                        end.error.unwrap_or_else(|| "unknown".into())
                    );
                }
                Ok(())
            }
        }
    })
}
