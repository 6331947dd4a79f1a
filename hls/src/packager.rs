//! Turns a job's init segments and parts into stored objects and playlists. Pure: it returns
//! the objects to write, in the order they must be written (media before any playlist naming
//! it); the uploader keeps that order.

use std::collections::BTreeMap;
use std::time::SystemTime;

use crate::object::Object;
use crate::playlist::{render_master, MediaState, PartEntry, SegmentEntry, VariantEntry, View};

#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    #[error("stored playlist of track {0} does not parse: {1}")]
    Unparsable(String, String),
    #[error("track {0}: the broadcast already ended (its playlist has EXT-X-ENDLIST)")]
    Ended(String),
}

/// A track the packager writes: a video rendition or the audio.
#[derive(Clone, Debug)]
pub struct RenditionInfo {
    /// Short name used in object keys and playlists, e.g. "v0", "audio".
    pub name: String,
    pub codecs: String,
    pub resolution: Option<(u32, u32)>,
    pub frame_rate: Option<f64>,
    pub is_audio: bool,
}

#[derive(Clone, Debug)]
pub struct PackagerConfig {
    /// Key prefix of this broadcast, e.g. `math/b-20261123t021500-3f9c`; unique per broadcast.
    pub prefix: String,
    /// Epoch of this packager run; part of every media name, so a restarted job never reuses one.
    pub epoch: String,
    pub segment_target: f64,
    pub part_target: f64,
    /// Complete segments in the live playlist.
    pub window: usize,
    /// Delete segments that left the live window (when the recording is not kept).
    pub delete_old: bool,
}

#[derive(Debug)]
struct Track {
    info: RenditionInfo,
    state: MediaState,
    /// Parts' bytes of the open segment, concatenated into the full segment when it closes.
    open_bytes: Vec<u8>,
    next_msn: u64,
    /// Segment sizes and durations for BANDWIDTH / AVERAGE-BANDWIDTH.
    peak_bps: f64,
    total_bytes: u64,
    total_secs: f64,
    init_written: bool,
    /// The next segment follows a restart.
    pending_discontinuity: bool,
    /// Offered in the masters (a shed rung is not).
    listed: bool,
}

/// The packager's position for a track: the next part to appear (for blocking reloads).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub msn: u64,
    pub part: u64,
}

pub struct Packager {
    cfg: PackagerConfig,
    tracks: BTreeMap<String, Track>,
    /// Extra masters (`master-{name}.m3u8`, `vod-{name}.m3u8`) offering only some video tracks.
    variant_sets: Vec<(String, Vec<String>)>,
}

fn secs(d: std::time::Duration) -> f64 {
    d.as_secs_f64()
}

impl Packager {
    pub fn new(cfg: PackagerConfig, tracks: Vec<RenditionInfo>) -> Packager {
        let tracks = tracks
            .into_iter()
            .map(|info| {
                let state = MediaState {
                    init_uri: format!("{}/{}-init.mp4", info.name, cfg.epoch).into(),
                    target_duration: cfg.segment_target,
                    part_target: cfg.part_target,
                    ..Default::default()
                };
                (
                    info.name.clone(),
                    Track {
                        info,
                        state,
                        open_bytes: Vec::new(),
                        next_msn: 0,
                        peak_bps: 0.0,
                        total_bytes: 0,
                        total_secs: 0.0,
                        init_written: false,
                        pending_discontinuity: false,
                        listed: true,
                    },
                )
            })
            .collect();
        Packager {
            cfg,
            tracks,
            variant_sets: Vec::new(),
        }
    }

    /// Adds masters `master-{name}.m3u8` / `vod-{name}.m3u8` listing only these video tracks
    /// (and the audio): variant sets for viewers on weaker networks.
    pub fn set_variant_sets(&mut self, sets: Vec<(String, Vec<String>)>) {
        self.variant_sets = sets;
    }

    /// Continues a broadcast after a restart: segments already listed in the stored event
    /// playlists stay, numbering continues, and the next segment carries a discontinuity.
    pub fn resume(
        &mut self,
        track: &str,
        segments: Vec<SegmentEntry>,
        discontinuity_sequence: u64,
    ) {
        if let Some(t) = self.tracks.get_mut(track) {
            t.next_msn = segments.last().map_or(0, |s| s.msn + 1);
            t.state.segments = segments;
            t.state.discontinuity_sequence = discontinuity_sequence;
            t.pending_discontinuity = !t.state.segments.is_empty();
        }
    }

    /// The next media sequence number `track` will use.
    pub fn next_msn(&self, track: &str) -> Option<u64> {
        self.tracks.get(track).map(|t| t.next_msn)
    }

    /// Appends a complete segment of an earlier run (one salvaged from its stored parts, or a
    /// gap) to a resumed track.
    pub fn append_resumed(&mut self, track: &str, segment: SegmentEntry) {
        if let Some(t) = self.tracks.get_mut(track) {
            t.next_msn = segment.msn + 1;
            t.state.segments.push(segment);
            t.pending_discontinuity = true;
        }
    }

    /// The stored event playlist (`{track}-vod.m3u8`) of an earlier run, to continue after.
    /// Returns the number of segments taken over; refuses a playlist that already ended.
    pub fn resume_from_playlist(&mut self, track: &str, text: &[u8]) -> Result<usize, ResumeError> {
        let pl = m3u8_rs::parse_media_playlist_res(text)
            .map_err(|e| ResumeError::Unparsable(track.to_string(), e.to_string()))?;
        if pl.end_list {
            return Err(ResumeError::Ended(track.to_string()));
        }
        let segments = crate::playlist::segments_from(&pl);
        let n = segments.len();
        self.resume(track, segments, pl.discontinuity_sequence);
        Ok(n)
    }

    /// The stored playlist a restarted run continues from: the event playlist, or the live
    /// one when the recording is not kept.
    pub fn resume_key(&self, track: &str) -> String {
        if self.cfg.delete_old {
            self.key(&format!("{track}.m3u8"))
        } else {
            self.key(&format!("{track}-vod.m3u8"))
        }
    }

    pub fn prefix(&self) -> &str {
        &self.cfg.prefix
    }

    pub fn config(&self) -> &PackagerConfig {
        &self.cfg
    }

    fn key(&self, rel: &str) -> String {
        format!("{}/{}", self.cfg.prefix, rel)
    }

    pub fn position(&self, track: &str) -> Option<Position> {
        let t = self.tracks.get(track)?;
        Some(Position {
            msn: t.next_msn,
            part: t.state.open.as_ref().map_or(0, |o| o.parts.len() as u64),
        })
    }

    /// The live media playlist as served (and stored).
    pub fn live_playlist(&self, track: &str) -> Option<String> {
        let t = self.tracks.get(track)?;
        Some(t.state.render(self.live_view()))
    }

    fn live_view(&self) -> View {
        // Parts for segments within the last 3 target durations (LL-HLS).
        View::Live {
            segments: self.cfg.window,
            part_segments: 2,
        }
    }

    pub fn on_init(&mut self, track: &str, data: Vec<u8>) -> Vec<Object> {
        let key = {
            let Some(t) = self.tracks.get_mut(track) else {
                return Vec::new();
            };
            if t.init_written {
                return Vec::new();
            }
            t.init_written = true;
            t.state.init_uri.clone()
        };
        vec![Object {
            key: self.key(&key),
            body: data,
        }]
    }

    /// A part arrived. `independent` parts start a new segment (closing the previous one).
    pub fn on_part(
        &mut self,
        track: &str,
        independent: bool,
        duration: std::time::Duration,
        wallclock: SystemTime,
        data: Vec<u8>,
    ) -> Vec<Object> {
        let mut out = Vec::new();
        let prefix = self.cfg.prefix.clone();
        let epoch = self.cfg.epoch.clone();
        let view = self.live_view();
        let keep_parts = self.keep_parts();
        let Some(t) = self.tracks.get_mut(track) else {
            return out;
        };
        let name = t.info.name.clone();
        let mut closed = false;
        if independent && t.state.open.as_ref().is_some_and(|o| !o.parts.is_empty()) {
            out.extend(close_segment(t, &prefix, &epoch, keep_parts));
            closed = true;
        }
        if t.state.open.is_none() && !independent {
            // Parts before the first keyframe cannot start a segment: drop them.
            return out;
        }
        let discontinuity = std::mem::take(&mut t.pending_discontinuity) && t.state.open.is_none();
        let open = t.state.open.get_or_insert_with(|| SegmentEntry {
            msn: t.next_msn,
            uri: String::new(),
            duration: 0.0,
            parts: Vec::new(),
            program_date_time_ms: wallclock
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
            discontinuity,
            init_uri: t.state.init_uri.clone(),
            gap: false,
        });
        let uri = format!("{name}/{epoch}-{}.{}.m4s", open.msn, open.parts.len());
        open.parts.push(PartEntry {
            uri: uri.clone(),
            duration: secs(duration),
            independent,
        });
        open.duration += secs(duration);
        let next = format!("{name}/{epoch}-{}.{}.m4s", open.msn, open.parts.len());
        t.state.preload_hint = Some(next);
        t.open_bytes.extend_from_slice(&data);
        out.push(Object {
            key: format!("{prefix}/{uri}"),
            body: data,
        });
        // Playlists last: everything they name is written before them.
        out.push(Object {
            key: format!("{prefix}/{name}.m3u8"),
            body: t.state.render(view).into_bytes(),
        });
        // Without a kept recording there is no event playlist: it would name deleted segments.
        if closed && !self.cfg.delete_old {
            out.push(Object {
                key: format!("{prefix}/{name}-vod.m3u8"),
                body: t.state.render(View::Full).into_bytes(),
            });
        }
        out
    }

    /// Offers `track` in the masters written from now on, or not (a shed rung: players that
    /// loaded an earlier master find gaps in its playlist and move to another rung).
    pub fn set_listed(&mut self, track: &str, listed: bool) {
        if let Some(t) = self.tracks.get_mut(track) {
            t.listed = listed;
        }
    }

    /// Brings a track that is not producing media (a shed rung) up to segment `until_msn`
    /// (exclusive): its open segment is closed as it is, and every number still missing becomes
    /// a gap (`EXT-X-GAP`) of `duration` seconds starting at `pdt_ms`, so its numbering and
    /// timeline stay those of the other tracks. Returns the objects to store.
    pub fn fill_gaps(
        &mut self,
        track: &str,
        until_msn: u64,
        duration: f64,
        pdt_ms: i64,
    ) -> Vec<Object> {
        let mut out = Vec::new();
        let prefix = self.cfg.prefix.clone();
        let epoch = self.cfg.epoch.clone();
        let (view, keep) = (self.live_view(), !self.cfg.delete_old);
        let keep_parts = self.keep_parts();
        let Some(t) = self.tracks.get_mut(track) else {
            return out;
        };
        let before = t.next_msn;
        if t.state.open.as_ref().is_some_and(|o| !o.parts.is_empty()) && t.next_msn < until_msn {
            out.extend(close_segment(t, &prefix, &epoch, keep_parts));
        }
        if t.state.open.as_ref().is_some_and(|o| o.parts.is_empty()) {
            t.state.open = None;
        }
        let missing = until_msn.saturating_sub(t.next_msn);
        for k in 0..missing {
            let msn = t.next_msn;
            let back = (missing - 1 - k) as f64 * duration * 1000.0;
            t.state.segments.push(SegmentEntry {
                msn,
                uri: format!("{}/gap-{epoch}-{msn}.m4s", t.info.name),
                duration,
                parts: Vec::new(),
                program_date_time_ms: pdt_ms - back as i64,
                discontinuity: false,
                init_uri: t.state.init_uri.clone(),
                gap: true,
            });
            t.next_msn = msn + 1;
        }
        if t.next_msn == before {
            return out;
        }
        t.state.preload_hint = None;
        let name = t.info.name.clone();
        out.push(Object {
            key: format!("{prefix}/{name}.m3u8"),
            body: t.state.render(view).into_bytes(),
        });
        if keep {
            out.push(Object {
                key: format!("{prefix}/{name}-vod.m3u8"),
                body: t.state.render(View::Full).into_bytes(),
            });
        }
        out
    }

    /// The number of `track`'s segment that starts at wall-clock `pdt_ms`: the one listed
    /// with that start (within half a segment), or counted on from its newest segment.
    pub fn msn_at(&self, track: &str, pdt_ms: i64) -> Option<u64> {
        let t = self.tracks.get(track)?;
        let target_ms = self.cfg.segment_target * 1000.0;
        let newest = t
            .state
            .open
            .iter()
            .chain(t.state.segments.iter().rev())
            .find(|s| !s.gap)?;
        if let Some(s) = t
            .state
            .open
            .iter()
            .chain(t.state.segments.iter().rev())
            .take(16)
            .find(|s| ((s.program_date_time_ms - pdt_ms).abs() as f64) < target_ms / 2.0)
        {
            return Some(s.msn);
        }
        let steps = ((pdt_ms - newest.program_date_time_ms) as f64 / target_ms).round();
        Some((newest.msn as i64 + steps as i64).max(0) as u64)
    }

    /// The master playlists (live and event/VOD, and those of each variant set), with bandwidth
    /// measured so far.
    pub fn masters(&self) -> Vec<Object> {
        let mut out = self.masters_of("", None);
        for (name, tracks) in &self.variant_sets {
            out.extend(self.masters_of(&format!("-{name}"), Some(tracks)));
        }
        out
    }

    fn masters_of(&self, suffix: &str, only: Option<&Vec<String>>) -> Vec<Object> {
        let audio = self.tracks.values().find(|t| t.info.is_audio);
        let audio_bw = audio.map_or((0.0, 0.0), |a| (a.peak_bps, avg(a)));
        let mut live = Vec::new();
        let mut vod = Vec::new();
        // Video variants first (players start with the first listed), the audio-only last.
        let ordered = self
            .tracks
            .values()
            .filter(|t| !t.info.is_audio && t.listed)
            .filter(|t| only.is_none_or(|o| o.contains(&t.info.name)))
            .chain(self.tracks.values().filter(|t| t.info.is_audio));
        for t in ordered {
            let (peak, average) = if t.info.is_audio {
                (t.peak_bps, avg(t))
            } else {
                (t.peak_bps + audio_bw.0, avg(t) + audio_bw.1)
            };
            let codecs = match (t.info.is_audio, audio) {
                (false, Some(a)) => format!("{},{}", t.info.codecs, a.info.codecs),
                _ => t.info.codecs.clone(),
            };
            let v = VariantEntry {
                uri: format!("{}.m3u8", t.info.name),
                bandwidth: peak.ceil() as u64,
                average_bandwidth: average.ceil() as u64,
                codecs,
                resolution: t.info.resolution,
                frame_rate: t.info.frame_rate,
            };
            vod.push(VariantEntry {
                uri: format!("{}-vod.m3u8", t.info.name),
                ..v.clone()
            });
            live.push(v);
        }
        let audio_uri = audio.map(|a| format!("{}.m3u8", a.info.name));
        let audio_vod = audio.map(|a| format!("{}-vod.m3u8", a.info.name));
        let mut out = vec![Object {
            key: self.key(&format!("master{suffix}.m3u8")),
            body: render_master(audio_uri.as_deref(), &live).into_bytes(),
        }];
        if !self.cfg.delete_old {
            out.push(Object {
                key: self.key(&format!("vod{suffix}.m3u8")),
                body: render_master(audio_vod.as_deref(), &vod).into_bytes(),
            });
        }
        out
    }

    /// The broadcast ended: close open segments and write the final event playlists (VOD).
    pub fn finish(&mut self) -> Vec<Object> {
        let mut out = Vec::new();
        let prefix = self.cfg.prefix.clone();
        let epoch = self.cfg.epoch.clone();
        let keep = !self.cfg.delete_old;
        let window = self.live_view();
        let keep_parts = self.keep_parts();
        for t in self.tracks.values_mut() {
            if t.state.open.as_ref().is_some_and(|o| !o.parts.is_empty()) {
                out.extend(close_segment(t, &prefix, &epoch, keep_parts));
            }
            t.state.open = None;
            t.state.preload_hint = None;
            t.state.ended = true;
            let name = &t.info.name;
            // Kept: the live playlist becomes the whole recording; otherwise its last window.
            let view = if keep { View::Full } else { window };
            if keep {
                out.push(Object {
                    key: format!("{prefix}/{name}-vod.m3u8"),
                    body: t.state.render(View::Full).into_bytes(),
                });
            }
            out.push(Object {
                key: format!("{prefix}/{name}.m3u8"),
                body: t.state.render(view).into_bytes(),
            });
        }
        out.extend(self.masters());
        out
    }

    /// How many newest segments keep their part list: the live window's parts and the
    /// segment `expired` deletes next.
    fn keep_parts(&self) -> usize {
        self.cfg.window * 2 + 2
    }

    /// Keys of segments (and their parts) that left the live window, for deletion when the
    /// recording is not kept. Only call after the playlists without them are stored.
    pub fn expired(&self) -> Vec<String> {
        // Reads the parts of segment `n - 2 * window - 1`: within `keep_parts`.
        if !self.cfg.delete_old {
            return Vec::new();
        }
        let mut keys = Vec::new();
        for t in self.tracks.values() {
            let n = t.state.segments.len();
            // Keep a margin past the window: players may still be fetching them.
            if n > self.cfg.window * 2 {
                let s = &t.state.segments[n - self.cfg.window * 2 - 1];
                keys.push(format!("{}/{}", self.cfg.prefix, s.uri));
                keys.extend(
                    s.parts
                        .iter()
                        .map(|p| format!("{}/{}", self.cfg.prefix, p.uri)),
                );
            }
        }
        keys
    }

    pub fn tracks(&self) -> impl Iterator<Item = &RenditionInfo> {
        self.tracks.values().map(|t| &t.info)
    }

    pub fn state(&self, track: &str) -> Option<&MediaState> {
        self.tracks.get(track).map(|t| &t.state)
    }
}

fn avg(t: &Track) -> f64 {
    if t.total_secs > 0.0 {
        t.total_bytes as f64 * 8.0 / t.total_secs
    } else {
        0.0
    }
}

/// Closes the open segment: stores the whole segment (concatenated parts) for non-LL players.
/// Closes the open segment. Parts are kept for the last `keep_parts` segments only (the live
/// playlist lists parts for its newest few, `expired` deletes those of the segment leaving the
/// margin): a two-hour recording otherwise kept ~14,000 part entries per track it never lists
/// again (the soak's heap grew ~0.15 MiB every 100 s with one rendition and audio).
fn close_segment(t: &mut Track, prefix: &str, epoch: &str, keep_parts: usize) -> Vec<Object> {
    let Some(mut seg) = t.state.open.take() else {
        return Vec::new();
    };
    seg.uri = format!("{}/{epoch}-{}.m4s", t.info.name, seg.msn);
    let body = std::mem::take(&mut t.open_bytes);
    if seg.duration > 0.0 {
        t.peak_bps = t.peak_bps.max(body.len() as f64 * 8.0 / seg.duration);
        t.total_bytes += body.len() as u64;
        t.total_secs += seg.duration;
    }
    let obj = Object {
        key: format!("{prefix}/{}", seg.uri),
        body,
    };
    t.next_msn = seg.msn + 1;
    t.state.segments.push(seg);
    if let Some(old) = t.state.segments.len().checked_sub(keep_parts + 1) {
        t.state.segments[old].parts = Vec::new();
    }
    vec![obj]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    /// A long recording keeps part lists only for the newest segments: the rest are never
    /// listed again, and kept they grew the heap for as long as the broadcast ran.
    #[test]
    fn old_segments_drop_their_parts() {
        let cfg = PackagerConfig {
            prefix: "r/b".into(),
            epoch: "e".into(),
            segment_target: 2.0,
            part_target: 0.5,
            window: 6,
            delete_old: false,
        };
        let track = RenditionInfo {
            name: "v0".into(),
            codecs: "avc1.4d401e".into(),
            resolution: Some((640, 360)),
            frame_rate: Some(30.0),
            is_audio: false,
        };
        let mut p = Packager::new(cfg, vec![track]);
        p.on_init("v0", vec![0; 10]);
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        for s in 0..100u64 {
            for k in 0..4u64 {
                let wall = t0 + Duration::from_millis(s * 2000 + k * 500);
                p.on_part("v0", k == 0, Duration::from_millis(500), wall, vec![1; 10]);
            }
        }
        let segs = &p.tracks["v0"].state.segments;
        assert_eq!(segs.len(), 99);
        let with_parts = segs.iter().filter(|s| !s.parts.is_empty()).count();
        assert_eq!(with_parts, p.keep_parts());
        assert!(segs[segs.len() - p.keep_parts()..]
            .iter()
            .all(|s| s.parts.len() == 4));
    }
}
