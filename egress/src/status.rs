//! What a job reports (`GET /api/egress/{id}`, webhooks, the Redis queue's notes) and the
//! shared handle the service, the job and the dispatcher hold it by.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use hls::UploadStats;
use serde::{Deserialize, Serialize};

use crate::job_core::RungChange;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Starting,
    Live,
    Ended,
    Failed,
}

impl JobState {
    /// Ended or failed: the job runs no more.
    pub fn is_over(self) -> bool {
        matches!(self, JobState::Ended | JobState::Failed)
    }
}

/// What `GET /api/egress` reports for a job.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobStatus {
    pub id: String,
    pub room: String,
    pub broadcast: String,
    pub profile: String,
    pub source: String,
    pub state: JobState,
    pub error: Option<String>,
    /// This run's epoch (part of its object names).
    pub epoch: String,
    pub started_at: String,
    pub ended_at: Option<String>,
    /// Segments taken over from an earlier run of this broadcast (a restart), per track.
    pub resumed_segments: usize,
    /// Segments completed by this run (lowest video rendition; audio for audio-only broadcasts).
    pub segments: u64,
    pub parts: u64,
    pub keyframe_requests: u64,
    pub packets_in: u64,
    pub packets_rejected: u64,
    /// Media produced per wall second over the last 10 s by the slowest video rendition
    /// (1.0 = real time; audio where there is no video).
    pub encoder_speed: f64,
    /// How far the furthest-behind video rendition's newest output is behind live.
    #[serde(default)]
    pub lag_ms: u64,
    /// Speed and lag of each rendition.
    #[serde(default)]
    pub renditions: Vec<crate::speed::RenditionSpeed>,
    pub objects_stored: u64,
    pub bytes_stored: u64,
    /// Time from queueing to stored of the latest object.
    pub upload_lag_ms: u64,
    /// Time the job waited for room in the upload queue (storage slower than the stream).
    pub upload_blocked_ms: u64,
    pub upload_failed_attempts: u64,
    pub upload_queued: u64,
    /// Viewer profiles with their own master (`master-{profile}.m3u8`): a subset of the rungs.
    pub variant_sets: Vec<String>,
    /// The `aula egress worker` running it (out-of-process egress); none in-process.
    #[serde(default)]
    pub worker: Option<String>,
    /// The source's picture size (`WxH`) from its first keyframes, where known.
    #[serde(default)]
    pub source_size: Option<String>,
    /// The profile's rungs this job encodes, lowest first.
    #[serde(default)]
    pub rungs: Vec<String>,
    /// Rungs of the profile left out, each with why (`"1080p: above the 1280x720 source"`).
    #[serde(default)]
    pub skipped_rungs: Vec<String>,
    /// Rungs not encoded now because the encoder fell behind (`v5`); not in the masters.
    #[serde(default)]
    pub shed_rungs: Vec<String>,
    /// Every shed and re-add of this job, oldest first.
    #[serde(default)]
    pub rung_changes: Vec<RungChange>,
    /// Cores admission estimated for the rungs it kept (and the job's decoding).
    #[serde(default)]
    pub estimated_cores: f64,
    /// Share of the video input the pipeline dropped in the last second, in percent: it fell
    /// behind and its bounded queues overflowed.
    #[serde(default)]
    pub input_dropped_pct: f64,
}

impl JobStatus {
    /// A job about to start, with a new epoch.
    pub(crate) fn starting(id: &str, room: &str, profile: &str, source: String) -> JobStatus {
        JobStatus {
            id: id.into(),
            room: room.into(),
            broadcast: id.into(),
            profile: profile.into(),
            source,
            state: JobState::Starting,
            error: None,
            epoch: crate::ids::new_epoch(),
            started_at: now(),
            ended_at: None,
            resumed_segments: 0,
            segments: 0,
            parts: 0,
            keyframe_requests: 0,
            packets_in: 0,
            packets_rejected: 0,
            encoder_speed: 0.0,
            lag_ms: 0,
            renditions: Vec::new(),
            objects_stored: 0,
            bytes_stored: 0,
            upload_lag_ms: 0,
            upload_blocked_ms: 0,
            upload_failed_attempts: 0,
            upload_queued: 0,
            variant_sets: Vec::new(),
            worker: None,
            source_size: None,
            rungs: Vec::new(),
            skipped_rungs: Vec::new(),
            shed_rungs: Vec::new(),
            rung_changes: Vec::new(),
            estimated_cores: 0.0,
            input_dropped_pct: 0.0,
        }
    }
}

/// A running or finished job as the service holds it.
pub struct JobShared {
    pub(crate) status: Mutex<JobStatus>,
    pub(crate) stop: Arc<AtomicBool>,
    /// Stop without finishing the playlists: another run (a worker taking over) continues them.
    pub(crate) abandon: AtomicBool,
    pub(crate) done: tokio::sync::watch::Sender<bool>,
    pub(crate) uploads: Mutex<Option<Arc<UploadStats>>>,
}

impl JobShared {
    pub(crate) fn new(status: JobStatus) -> JobShared {
        JobShared {
            status: Mutex::new(status),
            stop: Arc::new(AtomicBool::new(false)),
            abandon: AtomicBool::new(false),
            done: tokio::sync::watch::channel(false).0,
            uploads: Mutex::new(None),
        }
    }

    /// The status with the upload counters as they are now.
    pub fn snapshot(&self) -> Option<JobStatus> {
        let mut s = self.status.lock().ok()?.clone();
        if let Some(u) = self.uploads.lock().ok()?.as_ref() {
            s.objects_stored = u.stored.load(Ordering::Relaxed);
            s.bytes_stored = u.bytes.load(Ordering::Relaxed);
            s.upload_lag_ms = u.last_lag_ms.load(Ordering::Relaxed);
            s.upload_blocked_ms = u.blocked_ms.load(Ordering::Relaxed);
            s.upload_failed_attempts = u.failed_attempts.load(Ordering::Relaxed);
            s.upload_queued = u.queued.load(Ordering::Relaxed);
        }
        Some(s)
    }

    pub(crate) fn update(&self, f: impl FnOnce(&mut JobStatus)) {
        if let Ok(mut s) = self.status.lock() {
            f(&mut s);
        }
    }
}

/// Now, as `started_at` and `ended_at` write it (RFC 3339, milliseconds, UTC).
pub(crate) fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
