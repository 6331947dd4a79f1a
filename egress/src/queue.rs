//! The Redis side of out-of-process egress, shared by the SFU node (which queues jobs and sends
//! the publisher's RTP) and `aula egress worker` (which runs them).
//!
//! Layout under the namespace `ns` (default `aula:egress`):
//! - stream `{ns}:jobs`, consumer group `workers`: one entry per broadcast
//!   (`id`, `room`, `profile`, `video` = `vp8`|`h264`|``, `audio` = `1`|`0`). A worker that holds
//!   an entry re-claims it every lease/4 (its heartbeat); an entry idle for a whole lease belongs
//!   to a dead worker and the next `XAUTOCLAIM` hands it to another, which continues the
//!   broadcast after a discontinuity.
//! - hash `{ns}:job:{id}`: `rtp` (where the running worker takes RTP), `worker`, `status`
//!   (the job's JSON status, written by the worker), `stop` (`1`, written by the node).
//! - channel `{ns}:live`: live-playlist positions from workers, so the node's origin can hold
//!   LL-HLS blocking reloads.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use serde::{Deserialize, Serialize};
use transcoder::VideoCodec;

use crate::frame_size::FrameSize;
use crate::ids::valid_name;

/// `[egress]` in aula.toml.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueSettings {
    /// `redis://host:port/db`; empty: jobs run inside `aula serve`.
    pub redis: String,
    /// Key prefix for the stream, hashes and channel.
    pub namespace: String,
    /// A worker silent this long (milliseconds) is taken for dead and its job is taken over.
    pub lease_ms: u64,
    /// Address a worker binds for RTP and tells the node (its address as the SFU node sees it).
    pub rtp_bind: String,
    /// Jobs one worker runs at once.
    pub max_jobs: usize,
    /// Cores this node (or worker) encodes with; 0 = all of the machine's. A job starts with
    /// the rungs that fit beside the running jobs, and a worker takes a job only when the
    /// cheapest one fits.
    pub capacity_cores: f64,
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            redis: String::new(),
            namespace: "aula:egress".into(),
            lease_ms: 5000,
            rtp_bind: "127.0.0.1".into(),
            max_jobs: 2,
            capacity_cores: 0.0,
        }
    }
}

impl QueueSettings {
    pub fn enabled(&self) -> bool {
        !self.redis.is_empty()
    }

    pub fn check(&self) -> Result<(), String> {
        if self.enabled() {
            redis::Client::open(self.redis.as_str())
                .map_err(|e| format!("egress.redis {:?}: {e}", self.redis))?;
        }
        if self.lease_ms < 1000 {
            return Err("egress.lease_ms must be at least 1000".into());
        }
        if !(self.capacity_cores >= 0.0 && self.capacity_cores.is_finite()) {
            return Err(format!(
                "egress.capacity_cores {} must be 0 (all cores) or more",
                self.capacity_cores
            ));
        }
        if self.max_jobs == 0 {
            return Err("egress.max_jobs must be at least 1".into());
        }
        if self.rtp_bind.parse::<std::net::IpAddr>().is_err() {
            return Err(format!(
                "egress.rtp_bind {:?} is not an IP address",
                self.rtp_bind
            ));
        }
        Ok(())
    }

    pub(crate) fn lease(&self) -> Duration {
        Duration::from_millis(self.lease_ms)
    }

    pub(crate) fn stream(&self) -> String {
        format!("{}:jobs", self.namespace)
    }

    pub(crate) fn job_key(&self, id: &str) -> String {
        format!("{}:job:{id}", self.namespace)
    }

    pub(crate) fn live_channel(&self) -> String {
        format!("{}:live", self.namespace)
    }
}

pub(crate) const GROUP: &str = "workers";

/// A queued job as the stream entry carries it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct JobMessage {
    pub id: String,
    pub room: String,
    pub profile: String,
    pub video: Option<VideoCodec>,
    pub audio: bool,
    /// The publisher's picture size as the node read it (`WxH`; empty or absent: unknown).
    pub size: Option<FrameSize>,
}

impl JobMessage {
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        let video = match self.video {
            Some(VideoCodec::Vp8) => "vp8",
            Some(VideoCodec::H264) => "h264",
            None => "",
        };
        vec![
            ("id", self.id.clone()),
            ("room", self.room.clone()),
            ("profile", self.profile.clone()),
            ("video", video.into()),
            ("audio", if self.audio { "1" } else { "0" }.into()),
            ("size", self.size.map(|s| s.to_string()).unwrap_or_default()),
        ]
    }

    /// Reads an entry; anything missing or malformed is an error naming the field (entries
    /// come from whoever can write to the stream).
    pub fn parse(get: impl Fn(&str) -> Option<String>) -> Result<JobMessage, String> {
        let field = |k: &str| get(k).ok_or_else(|| format!("job entry without {k:?}"));
        let id = field("id")?;
        let room = field("room")?;
        if !valid_name(&id) || !valid_name(&room) {
            return Err(format!("job entry with a bad id or room: {id:?} {room:?}"));
        }
        let profile = field("profile")?;
        crate::profiles::ladder(&profile).map_err(|e| e.to_string())?;
        let video = match field("video")?.as_str() {
            "vp8" => Some(VideoCodec::Vp8),
            "h264" => Some(VideoCodec::H264),
            "" => None,
            v => return Err(format!("job entry with an unknown video codec {v:?}")),
        };
        let audio = match field("audio")?.as_str() {
            "1" => true,
            "0" => false,
            a => return Err(format!("job entry with a bad audio flag {a:?}")),
        };
        if video.is_none() && !audio {
            return Err("job entry with neither video nor audio".into());
        }
        // Absent from entries queued by an older node: unknown, the whole ladder is encoded.
        let size = match get("size").filter(|s| !s.is_empty()) {
            None => None,
            Some(s) => {
                Some(parse_size(&s).ok_or_else(|| format!("job entry with a bad size {s:?}"))?)
            }
        };
        Ok(JobMessage {
            id,
            room,
            profile,
            video,
            audio,
            size,
        })
    }
}

/// `WxH`, each side 1..=16384.
fn parse_size(s: &str) -> Option<FrameSize> {
    let (w, h) = s.split_once('x')?;
    let (width, height) = (w.parse().ok()?, h.parse().ok()?);
    let ok = |v: u32| (1..=16_384).contains(&v);
    (ok(width) && ok(height)).then_some(FrameSize { width, height })
}

/// A live-index change sent from a worker to the node.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct LiveNote {
    pub key: String,
    /// `None`: the playlist ended.
    pub msn: Option<u64>,
    pub part: u64,
    pub target_ms: u64,
}

/// A connection for short commands (500 ms response timeout is too short for a loaded
/// machine; blocking reads use their own connection).
pub(crate) async fn connect(
    client: &redis::Client,
    timeout: Option<Duration>,
) -> redis::RedisResult<MultiplexedConnection> {
    let cfg = redis::AsyncConnectionConfig::new()
        .set_response_timeout(timeout)
        .set_connection_timeout(Some(Duration::from_secs(5)));
    client
        .get_multiplexed_async_connection_with_config(&cfg)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(pairs: &[(&str, &str)]) -> Result<JobMessage, String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        JobMessage::parse(|k| m.get(k).cloned())
    }

    #[test]
    fn job_entries_round_trip_and_bad_ones_are_named() {
        let m = JobMessage {
            id: "b-1".into(),
            room: "r".into(),
            profile: "test".into(),
            video: Some(VideoCodec::H264),
            audio: true,
            size: Some(FrameSize {
                width: 1280,
                height: 720,
            }),
        };
        let fields = m.fields();
        let pairs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(parse(&pairs).unwrap(), m);
        for bad in ["0x720", "1280x", "x", "99999x10", "-1x5"] {
            let mut p = pairs.clone();
            p.retain(|(k, _)| *k != "size");
            p.push(("size", bad));
            assert!(parse(&p).unwrap_err().contains("size"), "{bad}");
        }

        let ok = [
            ("id", "b-1"),
            ("room", "r"),
            ("profile", "test"),
            ("video", "vp8"),
            ("audio", "0"),
        ];
        assert!(parse(&ok).is_ok());
        for (i, bad) in [
            ("id", "../x"),
            ("room", "a b"),
            ("profile", "nope"),
            ("video", "av1"),
            ("audio", "yes"),
        ]
        .iter()
        .enumerate()
        {
            let mut p = ok.to_vec();
            p[i] = *bad;
            assert!(parse(&p).is_err(), "{bad:?}");
            p.remove(i);
            assert!(parse(&p).unwrap_err().contains("without"), "{bad:?}");
        }
        let silent = [
            ("id", "b-1"),
            ("room", "r"),
            ("profile", "test"),
            ("video", ""),
            ("audio", "0"),
        ];
        assert!(parse(&silent).is_err());
    }
}
