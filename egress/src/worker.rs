//! `aula egress worker`: takes queued jobs from the Redis stream (new ones, and those of
//! workers that stopped renewing their claim), receives their RTP on a UDP port it advertises,
//! and runs them like in-process jobs. A worker that stops hands its jobs over unfinished.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hls::{LiveIndex, SigningKeys, Store};
use redis::aio::MultiplexedConnection;
use redis::streams::{
    StreamAutoClaimOptions, StreamAutoClaimReply, StreamClaimOptions, StreamId, StreamReadOptions,
    StreamReadReply,
};
use redis::AsyncCommands;
use tokio::sync::{mpsc, watch, Semaphore};
use tracing::{info, warn};
use transcoder::testsrc::{AUDIO_PT, VIDEO_PT};
use transcoder::{AudioInput, VideoInput};

use crate::error::EgressError;
use crate::queue::{connect, JobMessage, LiveNote, QueueSettings, GROUP};
use crate::service::{Egress, StartRequest};
use crate::settings::HlsSettings;
use crate::source::{RtpPacket, Source};
use crate::status::{JobState, JobStatus};

/// RTP packets a job may have waiting before the UDP reader drops (the transcoder is behind).
const RTP_QUEUE: usize = 4096;

pub struct Worker {
    pub name: String,
    pub queue: QueueSettings,
    pub store: Arc<Store>,
    pub keys: SigningKeys,
    pub settings: HlsSettings,
    /// What encoding costs here (calibrated); the built-in figures when `None`.
    pub cost_model: Option<crate::encode_cost::CostModel>,
}

struct Ctx {
    name: String,
    queue: QueueSettings,
    egress: Egress,
    conn: MultiplexedConnection,
    shutdown: watch::Receiver<bool>,
}

impl Worker {
    /// Runs until `shutdown` turns true; running jobs are then handed over (left unfinished and
    /// unacknowledged, so another worker continues them after the lease).
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> Result<(), EgressError> {
        let q = self.queue.clone();
        q.check().map_err(EgressError::Queue)?;
        if !q.enabled() {
            return Err(EgressError::Queue(
                "egress.redis is not set (e.g. AULA_EGRESS__REDIS=redis://127.0.0.1:6379)".into(),
            ));
        }
        let qerr = |e: redis::RedisError| EgressError::Queue(e.to_string());
        let client = redis::Client::open(q.redis.as_str()).map_err(qerr)?;
        let mut conn = connect(&client, Some(Duration::from_secs(5)))
            .await
            .map_err(qerr)?;
        // Blocking reads wait up to a second; their connection waits longer than that.
        let mut reader = connect(&client, Some(Duration::from_secs(10)))
            .await
            .map_err(qerr)?;
        // "0": entries queued before any worker existed are delivered too.
        let created: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(q.stream())
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut conn)
            .await;
        if let Err(e) = created {
            if e.code() != Some("BUSYGROUP") {
                return Err(qerr(e));
            }
        }

        // Live playlist positions go to the node(s) serving viewers.
        let (notes, mut notes_rx) = mpsc::unbounded_channel::<LiveNote>();
        let live = LiveIndex::with_listener(Arc::new(move |key, pos, target| {
            let _ = notes.send(LiveNote {
                key: key.to_string(),
                msn: pos.map(|p| p.msn),
                part: pos.map_or(0, |p| p.part),
                target_ms: target.as_millis() as u64,
            });
        }));
        {
            let (mut conn, channel) = (conn.clone(), q.live_channel());
            tokio::spawn(async move {
                while let Some(n) = notes_rx.recv().await {
                    let Ok(text) = serde_json::to_string(&n) else {
                        continue;
                    };
                    if let Err(e) = conn.publish::<_, _, ()>(&channel, text).await {
                        warn!(error = %e, "redis: live playlist note lost");
                    }
                }
            });
        }
        let egress = Egress::build(self.store, self.keys, self.settings, live, None);
        egress.capacity().set_total(q.capacity_cores);
        if let Some(m) = self.cost_model.clone() {
            egress.capacity().set_model(m);
        }
        let ctx = Arc::new(Ctx {
            name: self.name.clone(),
            queue: q.clone(),
            egress,
            conn: conn.clone(),
            shutdown: shutdown.clone(),
        });
        info!(worker = %self.name, stream = %q.stream(), max_jobs = q.max_jobs, "egress worker waiting for jobs");
        let slots = Arc::new(Semaphore::new(q.max_jobs));
        let mut jobs = tokio::task::JoinSet::new();
        let mut full = false;
        loop {
            let permit = tokio::select! {
                p = slots.clone().acquire_owned() => Some(p.map_err(|e| EgressError::Queue(e.to_string()))?),
                r = shutdown.wait_for(|s| *s) => { let _ = r.is_ok(); None }
            };
            let Some(permit) = permit else { break };
            if *shutdown.borrow() {
                break;
            }
            // A job is taken only when this worker can encode at least its cheapest form.
            let capacity = ctx.egress.capacity();
            let need = ladders::shipped("global").map_or(0.0, |l| capacity.minimum(&l));
            let free = capacity.free();
            if free < need {
                if !full {
                    full = true;
                    info!(worker = %self.name, free, need, "egress worker has no room for another job: not taking one");
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                drop(permit);
                continue;
            }
            full = false;
            match next_entry(&ctx, &mut conn, &mut reader).await {
                Ok(Some(entry)) => {
                    let ctx = ctx.clone();
                    jobs.spawn(async move {
                        run_entry(&ctx, entry).await;
                        drop(permit);
                    });
                }
                Ok(None) => {}
                Err(e) => {
                    warn!(error = %e, "redis: reading the job queue failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        info!(worker = %self.name, "egress worker stopping: handing its jobs over");
        while jobs.join_next().await.is_some() {}
        Ok(())
    }
}

/// A job to run: first one a dead worker left (idle past the lease), else a new one.
async fn next_entry(
    ctx: &Ctx,
    conn: &mut MultiplexedConnection,
    reader: &mut MultiplexedConnection,
) -> redis::RedisResult<Option<StreamId>> {
    let q = &ctx.queue;
    let claimed: StreamAutoClaimReply = conn
        .xautoclaim_options(
            q.stream(),
            GROUP,
            &ctx.name,
            q.lease_ms,
            "0-0",
            StreamAutoClaimOptions::default().count(1),
        )
        .await?;
    if let Some(e) = claimed.claimed.into_iter().next() {
        info!(worker = %ctx.name, entry = %e.id, "taking over a job whose worker went silent");
        return Ok(Some(e));
    }
    let opts = StreamReadOptions::default()
        .group(GROUP, &ctx.name)
        .count(1)
        .block(1000);
    let read: Option<StreamReadReply> = reader.xread_options(&[q.stream()], &[">"], &opts).await?;
    Ok(read.and_then(|r| r.keys.into_iter().next()?.ids.into_iter().next()))
}

async fn run_entry(ctx: &Ctx, entry: StreamId) {
    let mut conn = ctx.conn.clone();
    let q = &ctx.queue;
    let msg = JobMessage::parse(|k| entry.get::<String>(k));
    let msg = match msg {
        Ok(m) => m,
        Err(e) => {
            // It will never run: drop it rather than hand it around forever.
            warn!(entry = %entry.id, error = %e, "dropping a malformed job entry");
            let _: redis::RedisResult<()> = conn.xack(q.stream(), GROUP, &[&entry.id]).await;
            let _: redis::RedisResult<()> = conn.xdel(q.stream(), &[&entry.id]).await;
            return;
        }
    };
    let key = q.job_key(&msg.id);
    // A worker that died after finishing but before acknowledging: nothing left to do.
    let previous: Option<String> = conn.hget(&key, "status").await.unwrap_or(None);
    if let Some(st) = previous.and_then(|s| serde_json::from_str::<JobStatus>(&s).ok()) {
        if st.worker.is_some() && st.state.is_over() {
            let _: redis::RedisResult<()> = conn.xack(q.stream(), GROUP, &[&entry.id]).await;
            let _: redis::RedisResult<()> = conn.xdel(q.stream(), &[&entry.id]).await;
            return;
        }
    }
    if let Err(e) = run_job(ctx, &mut conn, &entry, &msg).await {
        warn!(job = %msg.id, error = %e, "egress worker job error");
    }
}

async fn run_job(
    ctx: &Ctx,
    conn: &mut MultiplexedConnection,
    entry: &StreamId,
    msg: &JobMessage,
) -> Result<(), String> {
    let q = &ctx.queue;
    let key = q.job_key(&msg.id);
    let bind: SocketAddr = format!("{}:0", q.rtp_bind)
        .parse()
        .map_err(|e| format!("egress.rtp_bind: {e}"))?;
    let sock = UdpSocket::bind(bind).map_err(|e| format!("RTP socket on {bind}: {e}"))?;
    let addr = sock.local_addr().map_err(|e| e.to_string())?;
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::sync_channel(RTP_QUEUE);
    let reader = {
        let stop = stop.clone();
        std::thread::spawn(move || read_rtp(&sock, &tx, &stop))
    };
    let plis = Arc::new(AtomicU64::new(0));
    let source = Source::Rtp {
        video: msg.video.map(|codec| VideoInput {
            codec,
            payload_type: VIDEO_PT,
        }),
        audio: msg.audio.then_some(AudioInput {
            payload_type: AUDIO_PT,
        }),
        rx,
        idle: Duration::from_secs(ctx.egress.settings().idle_timeout_s),
        keyframe: Some({
            let plis = plis.clone();
            Arc::new(move || {
                plis.fetch_add(1, Ordering::Relaxed);
            })
        }),
        size: msg.size,
    };
    let started = ctx.egress.start(
        StartRequest {
            room: msg.room.clone(),
            broadcast: Some(msg.id.clone()),
            profile: Some(msg.profile.clone()),
        },
        source,
    );
    let result = match started {
        Ok(_) => {
            info!(job = %msg.id, worker = %ctx.name, rtp = %addr, "egress worker running a job");
            let () = conn
                .hset_multiple(
                    &key,
                    &[("rtp", addr.to_string()), ("worker", ctx.name.clone())],
                )
                .await
                .map_err(|e| format!("redis: {e}"))?;
            heartbeat(ctx, conn, entry, msg, &plis).await
        }
        Err(e) => {
            // It cannot run anywhere (e.g. the broadcast already ended): report and drop it.
            let s = failed_status(msg, &ctx.name, e.to_string());
            let _: redis::RedisResult<()> = conn
                .hset(
                    &key,
                    "status",
                    serde_json::to_string(&s).unwrap_or_default(),
                )
                .await;
            let _: redis::RedisResult<()> = conn.xack(q.stream(), GROUP, &[&entry.id]).await;
            let _: redis::RedisResult<()> = conn.xdel(q.stream(), &[&entry.id]).await;
            Err(e.to_string())
        }
    };
    stop.store(true, Ordering::Relaxed);
    let _ = reader.join();
    result
}

/// Keeps the entry claimed, mirrors status and keyframe requests, passes on the node's stop,
/// and acknowledges the entry once the job is over.
async fn heartbeat(
    ctx: &Ctx,
    conn: &mut MultiplexedConnection,
    entry: &StreamId,
    msg: &JobMessage,
    plis: &AtomicU64,
) -> Result<(), String> {
    let q = &ctx.queue;
    let key = q.job_key(&msg.id);
    let mut tick = tokio::time::interval(q.lease() / 5);
    let mut shutdown = ctx.shutdown.clone();
    let mut sent_plis = 0;
    loop {
        let stopping = tokio::select! {
            _ = tick.tick() => false,
            r = shutdown.wait_for(|s| *s) => r.is_ok(),
        };
        if stopping {
            let _ = ctx.egress.abandon(&msg.id);
            ctx.egress.wait(&msg.id, Duration::from_secs(20)).await;
            return Ok(());
        }
        let Some(mut status) = ctx.egress.job(&msg.id) else {
            return Err("job vanished".into());
        };
        status.worker = Some(ctx.name.clone());
        let over = status.state.is_over();
        let json = serde_json::to_string(&status).unwrap_or_default();
        if let Err(e) = conn.hset::<_, _, _, ()>(&key, "status", json).await {
            warn!(job = %msg.id, error = %e, "redis: status not written");
        }
        if over {
            let _: redis::RedisResult<()> = conn.hset(&key, "rtp", "").await;
            let _: redis::RedisResult<()> = conn.xack(q.stream(), GROUP, &[&entry.id]).await;
            let _: redis::RedisResult<()> = conn.xdel(q.stream(), &[&entry.id]).await;
            info!(job = %msg.id, state = ?status.state, "egress worker finished a job");
            return Ok(());
        }
        // Re-claiming resets the entry's idle time: the heartbeat. An empty answer means
        // another worker took it (this one was presumed dead): stop without finishing.
        let mine: redis::RedisResult<Vec<String>> = conn
            .xclaim_options(
                q.stream(),
                GROUP,
                &ctx.name,
                0,
                &[&entry.id],
                StreamClaimOptions::default().with_justid(),
            )
            .await;
        match mine {
            Ok(ids) if ids.is_empty() => {
                // The entry and the job's hash are the other worker's now: leave both alone.
                warn!(job = %msg.id, "job entry gone (taken over or removed): handing over");
                let _ = ctx.egress.abandon(&msg.id);
                ctx.egress.wait(&msg.id, Duration::from_secs(20)).await;
                return Ok(());
            }
            Ok(_) => {}
            Err(e) => warn!(job = %msg.id, error = %e, "redis: heartbeat failed"),
        }
        let p = plis.load(Ordering::Relaxed);
        if p != sent_plis {
            sent_plis = p;
            let _: redis::RedisResult<()> = conn.hincr(&key, "pli", 1).await;
        }
        let stop: Option<String> = conn.hget(&key, "stop").await.unwrap_or(None);
        if stop.as_deref() == Some("1") {
            let _ = ctx.egress.stop(&msg.id);
        }
    }
}

fn failed_status(msg: &JobMessage, worker: &str, error: String) -> JobStatus {
    let mut s = JobStatus::starting(&msg.id, &msg.room, &msg.profile, "queued".into());
    s.state = JobState::Failed;
    s.ended_at = Some(s.started_at.clone());
    s.error = Some(error);
    s.worker = Some(worker.into());
    s
}

/// Reads RTP datagrams into the job (video or audio by payload type; anything else is
/// dropped). Blocking; ends when `stop` is set or the job is gone.
fn read_rtp(sock: &UdpSocket, tx: &std::sync::mpsc::SyncSender<RtpPacket>, stop: &AtomicBool) {
    let _ = sock.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = [0u8; 2048];
    let mut dropped = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let n = match sock.recv_from(&mut buf) {
            Ok((n, _)) => n,
            Err(_) => continue, // timeout
        };
        let d = &buf[..n];
        if n < 12 || d[0] >> 6 != 2 {
            continue;
        }
        let video = match d[1] & 0x7f {
            pt if pt == VIDEO_PT => true,
            pt if pt == AUDIO_PT => false,
            _ => continue,
        };
        match tx.try_send(RtpPacket {
            video,
            data: d.to_vec(),
        }) {
            Ok(()) => {}
            Err(std::sync::mpsc::TrySendError::Full(_)) => dropped += 1,
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => break,
        }
    }
    if dropped > 0 {
        warn!(dropped, "egress worker fell behind its RTP input");
    }
}
