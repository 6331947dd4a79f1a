//! The SFU node's side of out-of-process egress: queue the job, send the publisher's RTP over
//! UDP to whichever worker runs it (following a takeover), mirror the worker's status, and
//! feed the workers' live playlist positions into this node's origin.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hls::{LiveIndex, Position};
use redis::AsyncCommands;
use tracing::{info, warn};

use crate::queue::{connect, JobMessage, LiveNote, QueueSettings};
use crate::source::{pump_room, Packetizer, Source};
use crate::status::{JobShared, JobState, JobStatus};

/// How long the node waits for a worker to finish a job after the broadcast ended.
const FINISH_WAIT: Duration = Duration::from_secs(60);
/// Queued jobs' hashes outlive the job by a day (status for `GET /api/egress`).
const HASH_TTL_S: i64 = 24 * 3600;

pub(crate) struct Dispatch {
    pub client: redis::Client,
    pub queue: QueueSettings,
    pub room: String,
    pub profile: String,
}

pub(crate) async fn dispatch(d: Dispatch, source: Source, shared: Arc<JobShared>) {
    let result = dispatch_inner(d, source, &shared).await;
    shared.stop.store(true, Ordering::Relaxed);
    if let Err(e) = result {
        warn!(error = %e, "queued egress job failed");
        shared.update(|s| {
            s.state = JobState::Failed;
            s.error = Some(e);
            s.ended_at = Some(crate::status::now());
        });
    }
    shared.done.send_replace(true);
}

async fn dispatch_inner(
    d: Dispatch,
    source: Source,
    shared: &Arc<JobShared>,
) -> Result<(), String> {
    let id = shared
        .snapshot()
        .map(|s| s.id)
        .ok_or("job state poisoned")?;
    let (source, (video, audio, size)) = source.prepared().await?;
    let Source::Room { tap, idle, early } = source else {
        return Err("only room broadcasts are queued".into());
    };
    let described = shared.snapshot().map(|s| s.source).unwrap_or_default();
    let msg = JobMessage {
        id: id.clone(),
        room: d.room.clone(),
        profile: d.profile.clone(),
        video: video.map(|v| v.codec),
        audio: audio.is_some(),
        size,
    };
    let q = &d.queue;
    let key = q.job_key(&id);
    let mut conn = connect(&d.client, Some(Duration::from_secs(5)))
        .await
        .map_err(|e| format!("redis {}: {e}", q.redis))?;
    let status = serde_json::to_string(&shared.snapshot()).unwrap_or_default();
    let () = conn
        .hset_multiple(&key, &[("status", status.as_str()), ("stop", "0")])
        .await
        .map_err(|e| format!("redis: {e}"))?;
    let () = conn
        .expire(&key, HASH_TTL_S)
        .await
        .map_err(|e| format!("redis: {e}"))?;
    let _: String = conn
        .xadd(q.stream(), "*", &msg.fields())
        .await
        .map_err(|e| format!("redis: {e}"))?;
    info!(job = %id, room = %d.room, "egress job queued for a worker");

    // The publisher's frames go to whichever worker holds the job now.
    let target: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
    let keyframe = tap.keyframe_requester();
    let sender = {
        let (target, stop) = (target.clone(), shared.stop.clone());
        std::thread::spawn(move || send_rtp(&tap, idle, &early, &stop, &target))
    };

    let mut stop_sent: Option<Instant> = None;
    let mut worker: Option<String> = None;
    let mut plis = 0u64;
    let queued = Instant::now();
    let mut warned = false;
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if sender.is_finished() && stop_sent.is_none() {
            // The broadcast is over: the worker finishes the recording.
            if let Err(e) = conn.hset::<_, _, _, ()>(&key, "stop", "1").await {
                warn!(job = %id, error = %e, "redis: could not ask the worker to stop; retrying");
                continue;
            }
            stop_sent = Some(Instant::now());
        }
        if stop_sent.is_some_and(|t| t.elapsed() > FINISH_WAIT) {
            return Err(format!(
                "no egress worker finished the job within {}s after the broadcast ended",
                FINISH_WAIT.as_secs()
            ));
        }
        let fields: Result<(Option<String>, Option<String>, Option<u64>), _> = redis::cmd("HMGET")
            .arg(&key)
            .arg("rtp")
            .arg("status")
            .arg("pli")
            .query_async(&mut conn)
            .await;
        let (rtp, status, pli) = match fields {
            Ok(f) => f,
            Err(e) => {
                warn!(job = %id, error = %e, "redis: job status unavailable");
                continue;
            }
        };
        let addr = rtp.as_deref().and_then(|a| a.parse::<SocketAddr>().ok());
        if let Ok(mut t) = target.lock() {
            if *t != addr && addr.is_some() {
                info!(job = %id, rtp = ?addr, "egress worker takes the RTP");
                *t = addr;
                // A new worker's decoder starts from a keyframe.
                keyframe();
            }
        }
        if pli.is_some_and(|p| p > plis) {
            plis = pli.unwrap_or(plis);
            keyframe();
        }
        let Some(remote) = status.and_then(|s| serde_json::from_str::<JobStatus>(&s).ok()) else {
            continue;
        };
        if remote.worker.is_some() && remote.worker != worker {
            worker = remote.worker.clone();
        }
        if worker.is_none() && !warned && queued.elapsed() > Duration::from_secs(10) {
            warned = true;
            warn!(job = %id, "no egress worker has taken the job yet");
        }
        let over = remote.state.is_over() && remote.worker.is_some();
        let state = remote.state;
        shared.update(|s| {
            *s = JobStatus {
                source: described.clone(),
                ..remote
            }
        });
        if over {
            if state == JobState::Failed {
                shared.stop.store(true, Ordering::Relaxed);
            }
            return Ok(());
        }
    }
}

/// Packetizes the publisher's frames and sends them to the current target. Blocking.
fn send_rtp(
    tap: &sfu::tap::Tap,
    idle: Duration,
    early: &[sfu::tap::TapFrame],
    stop: &std::sync::atomic::AtomicBool,
    target: &Mutex<Option<SocketAddr>>,
) {
    let mut packetizer = Packetizer::new();
    let mut sock: Option<(SocketAddr, UdpSocket)> = None;
    pump_room(tap, idle, early, stop, |f| {
        let Some(to) = target.lock().ok().and_then(|t| *t) else {
            return; // no worker yet: frames before it are of no use
        };
        if sock.as_ref().is_none_or(|(a, _)| *a != to) {
            let local: SocketAddr = if to.ip().is_loopback() {
                "127.0.0.1:0"
            } else {
                "0.0.0.0:0"
            }
            .parse()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
            match UdpSocket::bind(local) {
                Ok(s) => sock = Some((to, s)),
                Err(e) => {
                    warn!(error = %e, "egress RTP socket");
                    return;
                }
            }
        }
        if let Some((to, s)) = &sock {
            packetizer.packetize(f, |_, p| {
                let _ = s.send_to(p, to);
            });
        }
    });
}

/// Follows the workers' live-playlist notes into `live` (for blocking reloads), reconnecting
/// when Redis goes away.
pub(crate) async fn follow_live(client: redis::Client, channel: String, live: LiveIndex) {
    loop {
        match client.get_async_pubsub().await {
            Ok(mut ps) => {
                if let Err(e) = ps.subscribe(&channel).await {
                    warn!(error = %e, "redis: cannot follow live playlists");
                } else {
                    let mut msgs = ps.on_message();
                    while let Some(m) = msgs.next().await {
                        match serde_json::from_slice::<LiveNote>(m.get_payload_bytes()) {
                            Ok(n) => match n.msn {
                                Some(msn) => live.publish(
                                    &n.key,
                                    Position { msn, part: n.part },
                                    Duration::from_millis(n.target_ms),
                                ),
                                None => live.end(&n.key),
                            },
                            Err(e) => warn!(error = %e, "redis: bad live playlist note"),
                        }
                    }
                }
            }
            Err(e) => warn!(error = %e, "redis: cannot follow live playlists"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
