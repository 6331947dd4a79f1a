//! The egress service: starts and tracks jobs, serves their objects through the signed origin,
//! and tells viewers where a room's broadcast is.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hls::{LiveIndex, Origin, SigningKeys, Store};
use serde::Serialize;
use tracing::info;

use crate::encode_cost::{Capacity, CostModel};
use crate::error::EgressError;
use crate::ids::{new_broadcast_id, valid_name};
use crate::job::{run, JobRun};
use crate::queue::QueueSettings;
use crate::settings::HlsSettings;
use crate::source::Source;
use crate::status::{JobShared, JobState, JobStatus};

#[derive(Clone, Debug, Default)]
pub struct StartRequest {
    pub room: String,
    /// Continue this broadcast (a restarted job); a new id when absent.
    pub broadcast: Option<String>,
    /// Ladder profile; the configured default when absent.
    pub profile: Option<String>,
}

/// A room's broadcast as a viewer sees it (`GET /api/broadcasts/{room}`).
#[derive(Clone, Debug, Serialize)]
pub struct Broadcast {
    pub room: String,
    /// `idle` (never broadcast here), `starting` (no playable segment yet), `live`, `ended`.
    pub state: &'static str,
    pub broadcast: Option<String>,
    pub profile: Option<String>,
    /// The viewer's ladder profile (from `?geo=` or the CDN country header), when known.
    pub geo_profile: Option<String>,
    /// Signed master playlist path (live, or the whole recording once ended); the viewer
    /// profile's variant set when the broadcast has one.
    pub hls: Option<String>,
    /// Signed VOD master (the recording so far); absent when recordings are not kept.
    pub vod: Option<String>,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
}

struct Inner {
    store: Arc<Store>,
    keys: SigningKeys,
    origin: Origin,
    live: LiveIndex,
    settings: HlsSettings,
    /// Jobs by id (= broadcast id), and each room's latest job.
    jobs: Mutex<HashMap<String, Arc<JobShared>>>,
    latest: Mutex<HashMap<String, String>>,
    /// Out-of-process egress: room broadcasts are queued for `aula egress worker`s.
    queue: Option<Queue>,
    /// What this node can encode, and what its jobs hold of it.
    capacity: Arc<Capacity>,
}

pub(crate) struct Queue {
    pub settings: QueueSettings,
    pub client: redis::Client,
}

#[derive(Clone)]
pub struct Egress {
    inner: Arc<Inner>,
}

impl Egress {
    /// Jobs run in this process.
    pub fn new(store: Arc<Store>, keys: SigningKeys, settings: HlsSettings) -> Egress {
        Egress::build(store, keys, settings, LiveIndex::default(), None)
    }

    /// Room broadcasts are queued for `aula egress worker`s on `queue.redis` (test-pattern
    /// jobs still run here); the workers' live playlist positions feed this node's origin.
    /// Needs a tokio runtime.
    pub fn dispatching(
        store: Arc<Store>,
        keys: SigningKeys,
        settings: HlsSettings,
        queue: QueueSettings,
    ) -> Result<Egress, EgressError> {
        queue.check().map_err(EgressError::Queue)?;
        let client = redis::Client::open(queue.redis.as_str())
            .map_err(|e| EgressError::Queue(e.to_string()))?;
        let live = LiveIndex::default();
        tokio::spawn(crate::remote::follow_live(
            client.clone(),
            queue.live_channel(),
            live.clone(),
        ));
        Ok(Egress::build(
            store,
            keys,
            settings,
            live,
            Some(Queue {
                settings: queue,
                client,
            }),
        ))
    }

    pub(crate) fn build(
        store: Arc<Store>,
        keys: SigningKeys,
        settings: HlsSettings,
        live: LiveIndex,
        queue: Option<Queue>,
    ) -> Egress {
        Egress {
            inner: Arc::new(Inner {
                origin: Origin::new(store.clone(), keys.clone(), live.clone()),
                store,
                keys,
                live,
                settings,
                jobs: Mutex::new(HashMap::new()),
                latest: Mutex::new(HashMap::new()),
                queue,
                capacity: Arc::new(Capacity::new(0.0, CostModel::built_in())),
            }),
        }
    }

    /// The node's encode capacity (the machine's cores until set) and cost model (built-in
    /// figures until calibrated).
    pub fn capacity(&self) -> &Arc<Capacity> {
        &self.inner.capacity
    }

    /// The signed origin (`/s/{token}/{key}`) over this service's storage.
    pub fn origin(&self) -> &Origin {
        &self.inner.origin
    }

    pub fn settings(&self) -> &HlsSettings {
        &self.inner.settings
    }

    /// Starts a job for `req.room` fed by `source`; returns its first status.
    pub fn start(&self, req: StartRequest, source: Source) -> Result<JobStatus, EgressError> {
        if !valid_name(&req.room) {
            return Err(EgressError::BadName(req.room));
        }
        let profile = req
            .profile
            .clone()
            .unwrap_or_else(|| self.inner.settings.default_profile.clone());
        let ladder = crate::profiles::ladder(&profile)?;
        let resume = req.broadcast.is_some();
        let broadcast = req.broadcast.unwrap_or_else(new_broadcast_id);
        if !valid_name(&broadcast) {
            return Err(EgressError::BadName(broadcast));
        }
        let status = JobStatus::starting(&broadcast, &req.room, &profile, source.describe());
        let shared = Arc::new(JobShared::new(status.clone()));
        {
            let mut jobs = self.jobs_lock();
            if let Some(j) = jobs.get(&broadcast) {
                if j.snapshot().is_some_and(|s| !s.state.is_over()) {
                    return Err(EgressError::AlreadyLive(req.room, broadcast));
                }
            }
            if let Some(id) = self.latest_lock().get(&req.room) {
                if let Some(s) = jobs.get(id).and_then(|j| j.snapshot()) {
                    if !s.state.is_over() {
                        return Err(EgressError::AlreadyLive(req.room, s.id));
                    }
                }
            }
            jobs.insert(broadcast.clone(), shared.clone());
            let mut latest = self.latest_lock();
            latest.insert(req.room.clone(), broadcast.clone());
            forget_old_jobs(&mut jobs, &latest);
        }
        info!(room = %req.room, %broadcast, profile = %status.profile, source = %status.source, "egress job starting");
        let run_args = JobRun {
            webhooks: crate::webhook::Webhooks::new(
                self.inner.settings.webhooks.clone(),
                Some(self.inner.settings.webhook_secret.clone()),
            ),
            prefix: format!("{}/{}", req.room, broadcast),
            ladder,
            settings: self.inner.settings.clone(),
            store: self.inner.store.clone(),
            live: self.inner.live.clone(),
            resume,
            capacity: self.inner.capacity.clone(),
        };
        match (&self.inner.queue, &source) {
            (Some(q), Source::Room { .. }) => {
                let remote = crate::remote::Dispatch {
                    client: q.client.clone(),
                    queue: q.settings.clone(),
                    room: req.room.clone(),
                    profile: status.profile.clone(),
                };
                tokio::spawn(crate::remote::dispatch(remote, source, shared));
            }
            _ => {
                tokio::spawn(run(run_args, source, shared));
            }
        }
        Ok(status)
    }

    fn jobs_lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<JobShared>>> {
        self.inner.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn latest_lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.inner.latest.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every job this process knows, newest first.
    pub fn jobs(&self) -> Vec<JobStatus> {
        let mut v: Vec<JobStatus> = self
            .jobs_lock()
            .values()
            .filter_map(|j| j.snapshot())
            .collect();
        v.sort_by(|a, b| b.started_at.cmp(&a.started_at));
        v
    }

    pub fn job(&self, id: &str) -> Option<JobStatus> {
        self.jobs_lock().get(id).and_then(|j| j.snapshot())
    }

    /// Asks a job to end (its input stops; the recording is finalised).
    pub fn stop(&self, id: &str) -> Result<(), EgressError> {
        let jobs = self.jobs_lock();
        let j = jobs
            .get(id)
            .ok_or_else(|| EgressError::NoSuchJob(id.into()))?;
        j.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Stops a job without finishing its playlists, for another run to continue (a worker
    /// handing its jobs over).
    pub fn abandon(&self, id: &str) -> Result<(), EgressError> {
        let jobs = self.jobs_lock();
        let j = jobs
            .get(id)
            .ok_or_else(|| EgressError::NoSuchJob(id.into()))?;
        j.abandon.store(true, std::sync::atomic::Ordering::Relaxed);
        j.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Waits until the job has ended or failed, up to `timeout`.
    pub async fn wait(&self, id: &str, timeout: Duration) -> Option<JobStatus> {
        let j = self.jobs_lock().get(id).cloned()?;
        let mut rx = j.done.subscribe();
        let _ = tokio::time::timeout(timeout, rx.wait_for(|d| *d)).await;
        j.snapshot()
    }

    /// Ends every running job and waits (up to `timeout`) until each has finalised its playlists.
    pub async fn shutdown(&self, timeout: Duration) {
        let running: Vec<String> = self
            .jobs()
            .into_iter()
            .filter(|j| !j.state.is_over())
            .map(|j| j.id)
            .collect();
        for id in &running {
            let _ = self.stop(id);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        for id in &running {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            self.wait(id, left).await;
        }
    }

    /// A signed path for everything under `{room}/{broadcast}/`.
    pub fn signed_prefix(&self, room: &str, broadcast: &str) -> String {
        let scope = format!("/{room}/{broadcast}/");
        let token = self
            .inner
            .keys
            .sign(&scope, Duration::from_secs(self.inner.settings.url_ttl_s));
        format!("/s/{token}{scope}")
    }

    /// The room's latest broadcast, with signed URLs for this viewer; `geo` (a country code or
    /// a profile name) picks the master's variant set.
    pub fn broadcast(&self, room: &str, geo: Option<&str>) -> Broadcast {
        let geo_profile = geo.and_then(|g| self.inner.settings.viewer_profile(g));
        let latest = self.latest_lock().get(room).cloned();
        let status = latest.and_then(|id| self.job(&id));
        let Some(s) = status else {
            return Broadcast {
                room: room.into(),
                state: "idle",
                geo_profile,
                broadcast: None,
                profile: None,
                hls: None,
                vod: None,
                started_at: None,
                ended_at: None,
            };
        };
        let base = self.signed_prefix(room, &s.broadcast);
        let keep = self.inner.settings.keep_recording;
        // A failed job that produced nothing has no playlist to offer.
        let playable = s.state == JobState::Live || (s.state.is_over() && s.segments > 0);
        let suffix = geo_profile
            .as_ref()
            .filter(|p| s.variant_sets.contains(p))
            .map_or(String::new(), |p| format!("-{p}"));
        Broadcast {
            room: room.into(),
            state: match s.state {
                JobState::Starting => "starting",
                JobState::Live => "live",
                JobState::Ended | JobState::Failed => "ended",
            },
            hls: playable.then(|| format!("{base}master{suffix}.m3u8")),
            vod: (playable && keep).then(|| format!("{base}vod{suffix}.m3u8")),
            geo_profile,
            broadcast: Some(s.broadcast),
            profile: Some(s.profile),
            started_at: Some(s.started_at),
            ended_at: s.ended_at,
        }
    }

    /// Prometheus text for the egress jobs.
    pub fn render_metrics(&self, out: &mut String) {
        use metrics_text::Kind::{Counter, Gauge};
        let jobs = self.jobs();
        let count = |st: JobState| jobs.iter().filter(|j| j.state == st).count();
        let mut m = metrics_text::Exposition::new(out);
        m.family("aula_egress_jobs", Gauge, |f| {
            for (name, st) in [
                ("starting", JobState::Starting),
                ("live", JobState::Live),
                ("ended", JobState::Ended),
                ("failed", JobState::Failed),
            ] {
                f.sample(&[("state", name)], count(st));
            }
        });
        let sum = |f: fn(&JobStatus) -> u64| jobs.iter().map(f).sum::<u64>();
        m.counter("aula_egress_parts_total", sum(|j| j.parts));
        m.counter("aula_egress_segments_total", sum(|j| j.segments));
        m.counter("aula_egress_bytes_stored_total", sum(|j| j.bytes_stored));
        m.counter(
            "aula_egress_rungs_skipped_total",
            jobs.iter().map(|j| j.skipped_rungs.len()).sum::<usize>(),
        );
        m.family("aula_egress_rung_changes_total", Counter, |f| {
            for change in ["shed", "readded"] {
                let n = jobs
                    .iter()
                    .flat_map(|j| &j.rung_changes)
                    .filter(|c| c.change == change)
                    .count();
                f.sample(&[("change", change)], n);
            }
        });
        m.counter(
            "aula_egress_upload_failed_attempts_total",
            sum(|j| j.upload_failed_attempts),
        );
        m.counter(
            "aula_egress_upload_blocked_ms_total",
            sum(|j| j.upload_blocked_ms),
        );
        // Per running job: each family's samples together, as the format requires.
        let running: Vec<&JobStatus> = jobs.iter().filter(|j| !j.state.is_over()).collect();
        let per_job = |m: &mut metrics_text::Exposition<'_>,
                       name: &str,
                       value: &dyn Fn(&JobStatus) -> String| {
            m.family(name, Gauge, |f| {
                for j in &running {
                    f.sample(&[("job", &j.id)], value(j));
                }
            });
        };
        per_job(&mut m, "aula_egress_upload_lag_ms", &|j| {
            j.upload_lag_ms.to_string()
        });
        per_job(&mut m, "aula_egress_encoder_speed", &|j| {
            format!("{:.3}", j.encoder_speed)
        });
        per_job(&mut m, "aula_egress_lag_ms", &|j| j.lag_ms.to_string());
        m.family("aula_egress_rendition_speed", Gauge, |f| {
            for j in &running {
                for r in &j.renditions {
                    f.sample(
                        &[("job", &j.id), ("rendition", &r.rendition)],
                        format_args!("{:.3}", r.speed),
                    );
                }
            }
        });
        m.family("aula_egress_rendition_lag_ms", Gauge, |f| {
            for j in &running {
                for r in &j.renditions {
                    f.sample(&[("job", &j.id), ("rendition", &r.rendition)], r.lag_ms);
                }
            }
        });
        per_job(&mut m, "aula_egress_upload_queued", &|j| {
            j.upload_queued.to_string()
        });
        per_job(&mut m, "aula_egress_rungs_shed", &|j| {
            j.shed_rungs.len().to_string()
        });
    }
}

/// Finished jobs kept for `GET /api/egress` besides each room's latest (which
/// `/api/broadcasts/{room}` and its recording need, and is always kept). Without a bound every
/// job ever run stayed in memory and in every listing: a publisher reconnecting in a loop
/// added one a second.
pub const FINISHED_JOBS_KEPT: usize = 200;

/// Drops the oldest finished jobs that are no room's latest, past `FINISHED_JOBS_KEPT`.
fn forget_old_jobs(jobs: &mut HashMap<String, Arc<JobShared>>, latest: &HashMap<String, String>) {
    let mut finished: Vec<(String, String)> = jobs
        .iter()
        .filter_map(|(id, j)| {
            let s = j.snapshot()?;
            let kept = latest.get(&s.room).is_some_and(|l| l == id);
            (s.state.is_over() && !kept).then(|| (s.ended_at.unwrap_or(s.started_at), id.clone()))
        })
        .collect();
    if finished.len() <= FINISHED_JOBS_KEPT {
        return;
    }
    finished.sort();
    let excess = finished.len() - FINISHED_JOBS_KEPT;
    for (_, id) in finished.into_iter().take(excess) {
        jobs.remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str, room: &str, state: JobState, ended: &str) -> Arc<JobShared> {
        let mut s = JobStatus::starting(id, room, "test", "test".into());
        s.state = state;
        s.ended_at = Some(ended.into());
        Arc::new(JobShared::new(s))
    }

    /// A publisher reconnecting in a loop starts a job each time: the finished ones are
    /// forgotten past `FINISHED_JOBS_KEPT`, oldest first; running jobs and each room's latest
    /// (its recording) are always kept.
    #[test]
    fn finished_jobs_are_bounded_and_each_rooms_latest_is_kept() {
        let mut jobs = HashMap::new();
        let mut latest = HashMap::new();
        jobs.insert(
            "old-class".into(),
            job(
                "old-class",
                "class",
                JobState::Ended,
                "2026-01-01T00:00:00.000Z",
            ),
        );
        latest.insert("class".to_string(), "old-class".to_string());
        jobs.insert(
            "running".into(),
            job(
                "running",
                "other",
                JobState::Live,
                "2026-01-01T00:00:00.000Z",
            ),
        );
        for i in 0..FINISHED_JOBS_KEPT + 50 {
            let id = format!("churn{i:04}");
            jobs.insert(
                id.clone(),
                job(
                    &id,
                    "seats",
                    JobState::Failed,
                    &format!("2026-02-01T00:{:02}:{:02}.000Z", i / 60, i % 60),
                ),
            );
            latest.insert("seats".to_string(), id);
            forget_old_jobs(&mut jobs, &latest);
        }
        assert!(
            jobs.contains_key("old-class"),
            "a room's latest job is kept, however old"
        );
        assert!(
            jobs.contains_key("running"),
            "a running job is never forgotten"
        );
        let last = format!("churn{:04}", FINISHED_JOBS_KEPT + 49);
        assert!(jobs.contains_key(&last));
        assert!(
            !jobs.contains_key("churn0000"),
            "the oldest finished job went first"
        );
        // The kept room latests, the running job, and the bound.
        assert_eq!(jobs.len(), FINISHED_JOBS_KEPT + 3);
    }
}
