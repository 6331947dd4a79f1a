//! A job's rules, sans-IO: when the masters go out, when the job is live, when a rung is shed
//! (the encoder fell behind) or added back (the machine has room again), and when the job
//! fails. `job.rs` feeds it transcoder events and a tick with the measured speeds once a second
//! and carries out the actions; tests drive it in virtual time.
//!
//! Shed, don't stall: a ladder the machine cannot encode in real time falls further and further
//! behind until a branch's queue fills and the whole pipeline blocks (issue 12). Dropping the
//! most expensive rung early keeps the others live; the players on it move down.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use transcoder::RenditionId;

use crate::speed::RenditionSpeed;

/// How slowness is judged and how long the machine must have room before a rung comes back.
#[derive(Clone, Debug)]
pub struct ShedPolicy {
    /// A video rendition below this speed (over the speed meter's window) is slow.
    pub slow_speed: f64,
    /// A video rendition further behind live than this is slow, whatever its speed.
    pub slow_lag: Duration,
    /// The pipeline dropping more than this share of the video input (it fell behind and its
    /// bounded queues overflowed) is slow, whatever speed and lag say: with bounded input a
    /// starved job stays near live by losing input, not by lagging.
    pub slow_drop_share: f64,
    /// Slow for this long: shed a rung.
    pub slow_for: Duration,
    /// After a shed or a re-add, the figures settle this long before the next judgement.
    pub settle: Duration,
    /// Keeping pace with this much idle CPU for this long: add a shed rung back.
    pub readd_after: Duration,
    /// Idle cores needed to add a rung back, as a multiple of its estimated cost.
    pub readd_headroom: f64,
    /// A rung shed again within this time of its re-add waits twice as long next time.
    pub flap_window: Duration,
    /// A rendition stalled this long (after the transcoder's own notice) while input arrives:
    /// the input cannot be decoded.
    pub undecodable: Duration,
}

impl Default for ShedPolicy {
    fn default() -> Self {
        ShedPolicy {
            slow_speed: 0.9,
            slow_lag: Duration::from_millis(2500),
            slow_drop_share: 0.03,
            slow_for: Duration::from_secs(3),
            settle: Duration::from_secs(6),
            readd_after: Duration::from_secs(30),
            readd_headroom: 1.5,
            flap_window: Duration::from_secs(90),
            undecodable: Duration::from_secs(8),
        }
    }
}

/// What the job must do.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Store the master playlists (measured bandwidth, the rungs now offered).
    WriteMasters,
    /// The first masters are stored (the job asks after they are): viewers may be sent.
    GoLive,
    /// Stop encoding this video rung; its playlist continues with gaps.
    Shed {
        rung: usize,
        reason: String,
    },
    /// Encode this rung again from the next segment boundary.
    Readd {
        rung: usize,
    },
    Fail(String),
}

/// One shed or re-add, for the job status.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RungChange {
    /// Seconds since the job started.
    pub at_s: f64,
    /// The rung's track (`v3`).
    pub rendition: String,
    /// `"shed"` or `"readded"`.
    pub change: String,
    pub reason: String,
}

/// One tick's measurements.
#[derive(Clone, Debug, Default)]
pub struct Tick {
    /// Time since the job started.
    pub now: Duration,
    /// Input arrived since the last tick.
    pub input_active: bool,
    /// Speed and lag of the renditions being encoded (shed ones are ignored).
    pub renditions: Vec<(RenditionId, RenditionSpeed)>,
    /// Idle CPU of the machine over the last tick, in cores; `None` where unknown.
    pub idle_cores: Option<f64>,
    /// Share of the video input the pipeline dropped since the last tick (0..=1).
    pub input_dropped: f64,
}

pub struct JobCore {
    policy: ShedPolicy,
    /// Estimated cores each video rung costs, by rung index.
    costs: Vec<f64>,
    closed: BTreeSet<RenditionId>,
    masters_written: u64,
    refresh_segments: u64,
    has_audio: bool,
    shed: BTreeSet<usize>,
    slow_since: Option<Duration>,
    comfortable_since: Option<Duration>,
    /// No judgement before this time (start-up, or just after a change).
    settled_at: Duration,
    readded_at: HashMap<usize, Duration>,
    /// Extra wait before re-adding a rung that flapped.
    readd_backoff: HashMap<usize, u32>,
    stalled: HashMap<RenditionId, Duration>,
    changes: Vec<RungChange>,
    failed: bool,
}

impl JobCore {
    /// `costs`: one estimate per video rung, lowest first (empty for audio-only jobs);
    /// `has_audio`: whether the job has an audio track.
    pub fn new(policy: ShedPolicy, costs: Vec<f64>, has_audio: bool) -> JobCore {
        JobCore {
            settled_at: policy.settle,
            policy,
            costs,
            closed: BTreeSet::new(),
            masters_written: 0,
            refresh_segments: 0,
            has_audio,
            shed: BTreeSet::new(),
            slow_since: None,
            comfortable_since: None,
            readded_at: HashMap::new(),
            readd_backoff: HashMap::new(),
            stalled: HashMap::new(),
            changes: Vec::new(),
            failed: false,
        }
    }

    /// Rungs not encoded now.
    pub fn shed(&self) -> &BTreeSet<usize> {
        &self.shed
    }

    pub fn is_shed(&self, r: RenditionId) -> bool {
        matches!(r, RenditionId::Video(i) if self.shed.contains(&i))
    }

    /// Every shed and re-add so far.
    pub fn changes(&self) -> &[RungChange] {
        &self.changes
    }

    /// A track closed a segment.
    pub fn segment_closed(&mut self, r: RenditionId) -> Vec<Action> {
        self.closed.insert(r);
        // The masters name measured bandwidth: first once every encoded track has a complete
        // segment, then refreshed every few segments (of the audio, or of the lowest rung).
        let refresh_track = if self.has_audio {
            RenditionId::Audio
        } else {
            RenditionId::Video(0)
        };
        if r == refresh_track {
            self.refresh_segments += 1;
        }
        let all = (0..self.costs.len())
            .all(|i| self.closed.contains(&RenditionId::Video(i)) || self.shed.contains(&i))
            && (!self.has_audio || self.closed.contains(&RenditionId::Audio));
        let refresh = r == refresh_track && self.refresh_segments.is_multiple_of(5);
        if all && (self.masters_written == 0 || refresh) {
            self.masters_written += 1;
            if self.masters_written == 1 {
                return vec![Action::WriteMasters, Action::GoLive];
            }
            return vec![Action::WriteMasters];
        }
        Vec::new()
    }

    pub fn stalled(&mut self, r: RenditionId, now: Duration) {
        if !self.is_shed(r) {
            self.stalled.entry(r).or_insert(now);
        }
    }

    pub fn resumed(&mut self, r: RenditionId) {
        self.stalled.remove(&r);
    }

    /// Once a second: judges speed, lag and idle CPU.
    pub fn tick(&mut self, t: &Tick) -> Vec<Action> {
        if self.failed {
            return Vec::new();
        }
        if let Some((r, _)) = self
            .stalled
            .iter()
            .filter(|(r, _)| !self.is_shed(**r))
            .find(|(_, since)| t.now.saturating_sub(**since) > self.policy.undecodable)
        {
            self.failed = true;
            return vec![Action::Fail(format!(
                "rendition {r} produced nothing for over {}s while input arrived: the input cannot be decoded",
                self.policy.undecodable.as_secs() + 6
            ))];
        }
        if !t.input_active || t.now < self.settled_at {
            // No input: nothing to judge the encoder by. Settling: the figures still span
            // the last change.
            self.slow_since = None;
            self.comfortable_since = None;
            return Vec::new();
        }
        let video: Vec<&RenditionSpeed> = t
            .renditions
            .iter()
            .filter(|(r, _)| matches!(r, RenditionId::Video(_)) && !self.is_shed(*r))
            .map(|(_, s)| s)
            .collect();
        if video.is_empty() {
            return Vec::new();
        }
        let slowest = video.iter().map(|s| s.speed).fold(f64::INFINITY, f64::min);
        let furthest = video.iter().map(|s| s.lag_ms).max().unwrap_or(0);
        let behind =
            slowest < self.policy.slow_speed || furthest > self.policy.slow_lag.as_millis() as u64;
        let dropping = t.input_dropped > self.policy.slow_drop_share;
        if behind || dropping {
            self.comfortable_since = None;
            let since = *self.slow_since.get_or_insert(t.now);
            if t.now.saturating_sub(since) >= self.policy.slow_for {
                let reason = if behind {
                    format!(
                        "encoder behind live: slowest rendition at speed {slowest:.2}, {:.1} s behind",
                        furthest as f64 / 1000.0
                    )
                } else {
                    format!(
                        "encoder behind live: dropping {:.0}% of the video input to keep up",
                        t.input_dropped * 100.0
                    )
                };
                return self.shed_one(t.now, reason);
            }
            return Vec::new();
        }
        self.slow_since = None;
        // Keeping pace: a shed rung comes back once the machine has had room for it a while.
        let Some(&next) = self.shed.iter().next() else {
            self.comfortable_since = None;
            return Vec::new();
        };
        let cost = self.costs.get(next).copied().unwrap_or(0.0);
        let room = t
            .idle_cores
            .is_some_and(|idle| idle >= cost * self.policy.readd_headroom);
        let keeping_pace = furthest * 2 <= self.policy.slow_lag.as_millis() as u64
            && t.input_dropped * 2.0 <= self.policy.slow_drop_share;
        if !(room && keeping_pace) {
            self.comfortable_since = None;
            return Vec::new();
        }
        let since = *self.comfortable_since.get_or_insert(t.now);
        let wait =
            self.policy.readd_after * 2u32.pow(self.readd_backoff.get(&next).copied().unwrap_or(0));
        if t.now.saturating_sub(since) < wait {
            return Vec::new();
        }
        self.shed.remove(&next);
        self.readded_at.insert(next, t.now);
        self.after_change(t.now);
        self.record(
            t.now,
            next,
            "readded",
            format!(
                "kept pace for {} s with {:.1} idle cores (the rung costs about {cost:.2})",
                wait.as_secs(),
                t.idle_cores.unwrap_or(0.0)
            ),
        );
        vec![Action::Readd { rung: next }, Action::WriteMasters]
    }

    /// Sheds the most expensive rung still encoded; the lowest always stays.
    fn shed_one(&mut self, now: Duration, reason: String) -> Vec<Action> {
        let candidate = (1..self.costs.len())
            .filter(|i| !self.shed.contains(i))
            .max_by(|a, b| {
                self.costs[*a]
                    .partial_cmp(&self.costs[*b])
                    .unwrap_or(std::cmp::Ordering::Equal)
                    .then(a.cmp(b))
            });
        let Some(rung) = candidate else {
            // Only the lowest rung is left: nothing to shed; it stays as live as it can.
            self.slow_since = None;
            self.settled_at = now + self.policy.settle;
            return Vec::new();
        };
        if self
            .readded_at
            .get(&rung)
            .is_some_and(|at| now.saturating_sub(*at) < self.policy.flap_window)
        {
            let b = self.readd_backoff.entry(rung).or_default();
            *b = (*b + 1).min(4);
        }
        self.shed.insert(rung);
        self.after_change(now);
        self.record(now, rung, "shed", reason.clone());
        vec![Action::Shed { rung, reason }, Action::WriteMasters]
    }

    fn after_change(&mut self, now: Duration) {
        self.slow_since = None;
        self.comfortable_since = None;
        self.settled_at = now + self.policy.settle;
    }

    fn record(&mut self, now: Duration, rung: usize, change: &str, reason: String) {
        self.changes.push(RungChange {
            at_s: (now.as_secs_f64() * 10.0).round() / 10.0,
            rendition: crate::renditions::rendition_name(RenditionId::Video(rung)),
            change: change.into(),
            reason,
        });
    }
}
