//! A room: its participants, their published tracks and subscriptions, and the forwarding
//! between them. Plain state fed events and time by [`crate::Sfu`]; no sockets, no clocks.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use crate::error::SfuError;
use crate::hot_path;
use crate::ids::{ParticipantId, TrackId};
use crate::layer::{choose_layer, rid_rank, Quality, VideoBudget};
use crate::metrics::SfuMetrics;
use crate::outbox::Outbox;
use crate::participant::{Expect, Participant};
use crate::signal::{Departure, MuteTarget, ParticipantInfo, PeerKind, Signal, TrackSource};
use crate::speaker::SpeakerDetector;
use crate::subscription::{Answered, SubState, Subscription, Wants};
use crate::tap::TapSink;
use crate::track::{Track, MAX_LAYERS};
use crate::transport::{
    self, BweKind, Direction, Event, KeyframeRequestKind, MediaData, MediaKind, MediaTime, Mid,
    Output, Rid,
};

/// Audio is budgeted at this rate when splitting a subscriber's bandwidth among videos.
const AUDIO_BPS: u64 = 64_000;

/// How often a large room's clients get a presence batch (1-2 updates a second, as live-class
/// platforms budget presence at thousands of students).
pub const PRESENCE_INTERVAL: Duration = Duration::from_millis(500);

/// Joins and leaves not yet told to a large room's clients.
#[derive(Default)]
struct PresenceBatch {
    joined: Vec<ParticipantInfo>,
    left: Vec<Departure>,
    last_sent: Option<Instant>,
}

/// Source declarations kept per participant (a browser offer has a handful of m-lines).
const MAX_DECLARED_SOURCES: usize = 32;

pub struct Room {
    pub name: String,
    participants: HashMap<ParticipantId, Participant>,
    pub tracks: HashMap<TrackId, Track>,
    speakers: SpeakerDetector,
    /// Participants with output to drain; each also carries a `dirty` flag so it is queued once.
    dirty: Vec<ParticipantId>,
    /// Publishers' media copied out for egress.
    taps: Vec<TapSink>,
    /// Room clients from which presence goes out in batches.
    presence_batch_above: usize,
    presence: PresenceBatch,
}

/// Why a participant is removed.
pub enum Leave<'a> {
    /// It asked to (leave message, WHIP/WHEP DELETE, closed signaling).
    Asked,
    /// The SFU ends it and tells it why.
    Ended(&'a str),
}

impl Room {
    pub fn new(name: String, presence_batch_above: usize) -> Room {
        Room {
            name,
            participants: HashMap::new(),
            tracks: HashMap::new(),
            speakers: SpeakerDetector::default(),
            dirty: Vec::new(),
            taps: Vec::new(),
            presence_batch_above,
            presence: PresenceBatch::default(),
        }
    }

    fn mark_dirty(
        participants: &mut HashMap<ParticipantId, Participant>,
        dirty: &mut Vec<ParticipantId>,
        pid: ParticipantId,
    ) {
        if let Some(p) = participants.get_mut(&pid) {
            if !p.dirty {
                p.dirty = true;
                dirty.push(pid);
            }
        }
    }

    /// Queues a participant for draining (once, however often it is touched).
    pub fn touch(&mut self, pid: ParticipantId) {
        Self::mark_dirty(&mut self.participants, &mut self.dirty, pid);
    }

    fn broadcast(&self, out: &mut Outbox, except: Option<ParticipantId>, signal: &Signal) {
        for p in self.participants.values() {
            if Some(p.id) != except && p.kind == PeerKind::Room {
                out.signal(p.id, signal.clone());
            }
        }
    }

    /// Adds a participant; a room client is subscribed to every track already published.
    pub fn add(&mut self, p: Participant, out: &mut Outbox) {
        let pid = p.id;
        info!(room = %self.name, participant = %pid, identity = %p.identity, kind = ?p.kind, "participant joined");
        out.event("participant_joined", &self.name, Some(p.info()), None);
        if self.batching_presence() {
            self.presence.joined.push(p.info());
        } else {
            self.broadcast(
                out,
                None,
                &Signal::ParticipantJoined {
                    participant: p.info(),
                },
            );
        }
        let subscribes = p.kind == PeerKind::Room && p.perms.subscribe;
        let quality = p.default_quality;
        self.participants.insert(pid, p);
        if subscribes {
            // A newcomer is in the main room: it receives the main room's tracks.
            let ids: Vec<TrackId> = self
                .tracks
                .values()
                .filter(|t| self.same_group(t.publisher, pid))
                .map(|t| t.id)
                .collect();
            for t in ids {
                self.subscribe(pid, t, SubState::ToOpen, quality);
            }
        }
        self.touch(pid);
    }

    fn participant_mut(&mut self, pid: ParticipantId) -> Result<&mut Participant, SfuError> {
        self.participants
            .get_mut(&pid)
            .ok_or(SfuError::UnknownParticipant)
    }

    /// Whether media flows between two participants: both in the main room or in one breakout.
    fn same_group(&self, a: ParticipantId, b: ParticipantId) -> bool {
        let group = |p| self.participants.get(&p).map(|x| x.group.as_deref());
        group(a) == group(b)
    }

    /// Ends `pid`'s subscription to `tid` (its m-line is stopped in the next server offer).
    fn unsubscribe(&mut self, pid: ParticipantId, tid: TrackId) {
        if let Some(t) = self.tracks.get_mut(&tid) {
            t.subscribers.retain(|x| *x != pid);
            t.announced = None;
        }
        if let Some(p) = self.participants.get_mut(&pid) {
            p.subs.retain_mut(|s| s.track != tid || s.track_gone());
        }
        self.touch(pid);
    }

    /// Moves a room client to a breakout (`Some(group)`) or back to the main room (`None`) on
    /// the connection it has: its subscriptions to the old group's tracks are stopped and the
    /// new group's opened, and the same for its own tracks' subscribers, all by server
    /// renegotiation. Everyone is told (`grouped`).
    pub fn set_group(
        &mut self,
        now: Instant,
        pid: ParticipantId,
        group: Option<String>,
        by: &str,
        out: &mut Outbox,
    ) -> Result<(), SfuError> {
        let p = self.participant_mut(pid)?;
        if p.kind != PeerKind::Room {
            return Err(SfuError::Forbidden(
                "only room clients move between breakouts (WHIP and WHEP stay in the main room)",
            ));
        }
        if p.group == group {
            return Ok(());
        }
        p.group = group.clone();
        info!(room = %self.name, participant = %pid, group = ?group, by, "participant moved");
        // Every (subscriber, track) pair that involves `pid`, as it should be now.
        let pairs: Vec<(ParticipantId, TrackId, ParticipantId)> = self
            .tracks
            .values()
            .flat_map(|t| {
                let publisher = t.publisher;
                let tid = t.id;
                self.participants
                    .values()
                    .filter(move |o| o.id != publisher && (o.id == pid || publisher == pid))
                    .map(move |o| (o.id, tid, publisher))
            })
            .collect();
        for (sid, tid, publisher) in pairs {
            let Some(sub) = self.participants.get(&sid) else {
                continue;
            };
            if sub.kind != PeerKind::Room || !sub.perms.subscribe {
                continue;
            }
            let has = self
                .tracks
                .get(&tid)
                .is_some_and(|t| t.subscribers.contains(&sid));
            let want = self.same_group(sid, publisher);
            if want && !has {
                let q = sub.default_quality;
                self.subscribe(sid, tid, SubState::ToOpen, q);
                self.touch(sid);
            } else if !want && has {
                self.unsubscribe(sid, tid);
            }
        }
        self.broadcast(
            out,
            None,
            &Signal::Grouped {
                participant: pid,
                group,
                by: by.to_string(),
            },
        );
        self.refresh_layers(now, out);
        Ok(())
    }

    fn subscribe(&mut self, pid: ParticipantId, tid: TrackId, state: SubState, pref: Quality) {
        let Some(track) = self.tracks.get_mut(&tid) else {
            return;
        };
        let Some(p) = self.participants.get_mut(&pid) else {
            return;
        };
        // A subscription still being stopped (a move out and straight back) does not count:
        // a new m-line is opened beside it.
        if track.publisher == pid || p.subs.iter().any(|s| s.track == tid && !s.stopping()) {
            return;
        }
        p.subs.push(Subscription::new(
            tid,
            track.publisher,
            track.kind,
            state,
            pref,
        ));
        track.subscribers.push(pid);
        // Dynacast and layer targets see the newcomer at once, not at the next tick.
        track.announced = None;
    }

    /// Removes a participant, its tracks and its subscriptions.
    pub fn remove(&mut self, pid: ParticipantId, why: Leave<'_>, out: &mut Outbox) -> bool {
        let Some(mut p) = self.participants.remove(&pid) else {
            return false;
        };
        info!(room = %self.name, participant = %pid, identity = %p.identity, "participant left");
        out.event("participant_left", &self.name, Some(p.info()), None);
        // Dropping a tap's sender tells its consumer the publisher is gone.
        self.taps.retain(|t| t.publisher != pid);
        for (_, tid) in p.published.drain(..) {
            self.unpublish(tid, out);
        }
        for s in &p.subs {
            if let Some(t) = self.tracks.get_mut(&s.track) {
                t.subscribers.retain(|x| *x != pid);
                t.announced = None;
            }
        }
        self.speakers.remove(pid);
        self.dirty.retain(|x| *x != pid);
        if let Leave::Ended(reason) = why {
            out.signal(
                pid,
                Signal::Closed {
                    reason: reason.to_string(),
                },
            );
        }
        if self.batching_presence() {
            self.presence.left.push(Departure {
                participant: pid,
                identity: p.identity.clone(),
            });
        } else {
            self.broadcast(
                out,
                None,
                &Signal::ParticipantLeft {
                    participant: pid,
                    identity: p.identity.clone(),
                },
            );
        }
        p.rtc.disconnect();
        true
    }

    fn unpublish(&mut self, tid: TrackId, out: &mut Outbox) {
        let Some(track) = self.tracks.remove(&tid) else {
            return;
        };
        out.event("track_unpublished", &self.name, None, Some(track.info()));
        out.metrics
            .tracks
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        for sid in &track.subscribers {
            let Some(sub) = self.participants.get_mut(sid) else {
                continue;
            };
            if sub.kind == PeerKind::Whep {
                // A WHEP m-line outlives the track: it waits for the next publisher.
                if let Some(i) = sub.subs.iter().position(|s| s.track == tid) {
                    let s = sub.subs.remove(i);
                    if let Some(mid) = s.sending_mid() {
                        sub.unbound.push((mid, s.kind));
                    }
                }
                continue;
            }
            self.unsubscribe(*sid, tid);
        }
        self.broadcast(
            out,
            Some(track.publisher),
            &Signal::TrackUnpublished {
                track: tid,
                participant: track.publisher,
            },
        );
    }

    pub fn len(&self) -> usize {
        self.participants.len()
    }

    pub fn is_empty(&self) -> bool {
        self.participants.is_empty()
    }

    pub fn contains(&self, pid: ParticipantId) -> bool {
        self.participants.contains_key(&pid)
    }

    /// The participant of `identity` and `kind` already here (a second join replaces it).
    pub fn find(&self, identity: &str, kind: PeerKind) -> Option<ParticipantId> {
        self.participants
            .values()
            .find(|p| p.identity == identity && p.kind == kind)
            .map(|p| p.id)
    }

    pub fn identity_of(&self, pid: ParticipantId) -> Option<&str> {
        self.participants.get(&pid).map(|p| p.identity.as_str())
    }

    /// Everyone here, as `joined` and the room service API list them.
    pub fn infos(&self) -> Vec<ParticipantInfo> {
        self.participants.values().map(|p| p.info()).collect()
    }

    /// Room clients (those with signaling), with their identities.
    pub fn room_clients(&self) -> impl Iterator<Item = (ParticipantId, &str)> {
        self.participants
            .values()
            .filter(|p| p.kind == PeerKind::Room)
            .map(|p| (p.id, p.identity.as_str()))
    }

    /// The participant whose transport takes `input` (a first datagram from a new address).
    pub fn acceptor(&self, input: &transport::Input) -> Option<ParticipantId> {
        self.participants
            .values()
            .find(|p| p.rtc.accepts(input))
            .map(|p| p.id)
    }

    /// One datagram for a participant's transport; false when str0m refused it.
    pub fn receive(&mut self, now: Instant, pid: ParticipantId, input: transport::Input) -> bool {
        let Some(p) = self.participants.get_mut(&pid) else {
            return true;
        };
        p.last_rx = Some(now);
        match p.rtc.handle_input(input) {
            Ok(()) => true,
            Err(e) => {
                debug!(participant = %pid, "input refused: {e}");
                false
            }
        }
    }

    /// A timer queued for `pid` at `at` fired: runs its timeout and returns the next deadline
    /// to queue, if one is due later and none earlier is queued already.
    pub fn timer_fired(
        &mut self,
        now: Instant,
        pid: ParticipantId,
        at: Instant,
    ) -> Option<Instant> {
        if let Some(p) = self.participants.get_mut(&pid) {
            if p.scheduled == Some(at) {
                p.scheduled = None;
            }
        }
        self.timeout(now, pid);
        let p = self.participants.get_mut(&pid)?;
        let next = p.next_timeout.filter(|t| *t > now)?;
        if p.scheduled.is_some_and(|s| s <= next) {
            return None;
        }
        p.scheduled = Some(next);
        Some(next)
    }

    /// Feeds a timeout to one participant.
    pub fn timeout(&mut self, now: Instant, pid: ParticipantId) {
        if let Some(p) = self.participants.get_mut(&pid) {
            if p.next_timeout.is_some_and(|t| t <= now) {
                if let Err(e) = p.rtc.handle_input(transport::Input::Timeout(now)) {
                    warn!(participant = %pid, "transport timeout failed: {e}");
                    p.rtc.disconnect();
                }
                self.touch(pid);
            }
        }
    }

    /// Drains every participant with pending output; returns those whose transport died.
    pub fn drain(&mut self, now: Instant, out: &mut Outbox) -> Vec<ParticipantId> {
        let mut dead = Vec::new();
        while let Some(pid) = self.dirty.pop() {
            if let Some(p) = self.participants.get_mut(&pid) {
                p.dirty = false;
            }
            if !self.drain_one(now, pid, out) {
                dead.push(pid);
            }
        }
        dead
    }

    /// Polls one participant until it asks for a timeout. Returns false when it is dead.
    fn drain_one(&mut self, now: Instant, pid: ParticipantId, out: &mut Outbox) -> bool {
        self.negotiate(pid, out);
        loop {
            let Some(p) = self.participants.get_mut(&pid) else {
                return true;
            };
            if !p.rtc.is_alive() {
                return false;
            }
            let output = match p.rtc.poll_output() {
                Ok(o) => o,
                Err(e) => {
                    warn!(participant = %pid, "transport failed: {e}");
                    p.rtc.disconnect();
                    return false;
                }
            };
            match output {
                Output::Transmit(t) => out.transmit(t.proto, t.destination, t.contents.into()),
                Output::Timeout(t) => {
                    p.next_timeout = Some(t);
                    if p.scheduled.is_none_or(|s| t < s || s <= now) {
                        p.scheduled = Some(t);
                        out.schedule(t, pid);
                    }
                    return true;
                }
                Output::Event(e) => self.handle_event(now, pid, e, out),
            }
        }
    }

    fn handle_event(&mut self, now: Instant, pid: ParticipantId, e: Event, out: &mut Outbox) {
        match e {
            Event::MediaData(d) => self.forward(now, pid, d, out),
            Event::Connected => {
                if let Some(p) = self.participants.get_mut(&pid) {
                    p.connected = true;
                    debug!(participant = %pid, "connected");
                }
            }
            Event::IceConnectionStateChange(s) => {
                debug!(participant = %pid, state = ?s, "ICE state");
            }
            Event::MediaAdded(m) => {
                let rids: Vec<Rid> = m
                    .simulcast
                    .map(|s| {
                        let layers = if s.recv.is_empty() { s.send } else { s.recv };
                        layers.into_iter().map(|l| l.rid).collect()
                    })
                    .unwrap_or_default();
                match m.direction {
                    Direction::RecvOnly | Direction::SendRecv => {
                        self.publish(now, pid, m.mid, m.kind, rids, out)
                    }
                    Direction::SendOnly => self.bind_whep(pid, m.mid, m.kind),
                    Direction::Inactive => {}
                }
            }
            Event::KeyframeRequest(req) => self.keyframe_from_subscriber(now, pid, req.mid, out),
            Event::ChannelOpen(cid, label) => {
                if let Some(p) = self.participants.get_mut(&pid) {
                    // Chat goes over the room WebSocket (ordered, durable: signaling's
                    // `chat`); other channels than the document's are not ours.
                    if label == "yjs" {
                        p.app = Some(cid);
                        out.signal(pid, Signal::AppOpen);
                    }
                }
            }
            Event::ChannelData(d)
                if self.participants.get(&pid).and_then(|p| p.app) == Some(d.id) =>
            {
                out.signal(pid, Signal::AppData { data: d.data });
            }
            Event::EgressBitrateEstimate(BweKind::Twcc { estimate, .. }) => {
                if let Some(p) = self.participants.get_mut(&pid) {
                    p.bwe_bps = Some(estimate.as_u64());
                }
            }
            Event::Closed => {
                if let Some(p) = self.participants.get_mut(&pid) {
                    p.rtc.disconnect();
                }
            }
            _ => {}
        }
    }

    fn publish(
        &mut self,
        _now: Instant,
        pid: ParticipantId,
        mid: Mid,
        kind: MediaKind,
        mut rids: Vec<Rid>,
        out: &mut Outbox,
    ) {
        let Some(p) = self.participants.get_mut(&pid) else {
            return;
        };
        if !p.perms.publish || p.track_for_mid(mid).is_some() {
            return;
        }
        let order: Vec<Rid> = rids.clone();
        rids.sort_by_key(|r| {
            let idx = order.iter().position(|x| x == r).unwrap_or(0);
            rid_rank(r, idx)
        });
        let tid = out.next_track_id();
        p.published.push((mid, tid));
        let source = p.source_of(mid, kind);
        let track = Track::new(tid, pid, p.identity.clone(), mid, kind, source, rids);
        info!(room = %self.name, participant = %pid, track = %tid, kind = ?kind, ?source, layers = track.layers.len(), "track published");
        let info = track.info();
        out.event("track_published", &self.name, None, Some(info.clone()));
        self.tracks.insert(tid, track);
        SfuMetrics::inc(&out.metrics.tracks, 1);
        self.broadcast(out, Some(pid), &Signal::TrackPublished { track: info });

        let group = self.participants.get(&pid).and_then(|p| p.group.clone());
        let others: Vec<(ParticipantId, PeerKind, bool, Quality)> = self
            .participants
            .values()
            .filter(|o| o.id != pid && (o.kind != PeerKind::Room || o.group == group))
            .map(|o| (o.id, o.kind, o.perms.subscribe, o.default_quality))
            .collect();
        for (oid, okind, can_sub, q) in others {
            match okind {
                PeerKind::Room if can_sub => self.subscribe(oid, tid, SubState::ToOpen, q),
                PeerKind::Whep => {
                    let Some(o) = self.participants.get_mut(&oid) else {
                        continue;
                    };
                    if let Some(i) = o.unbound.iter().position(|(_, k)| *k == kind) {
                        let (m, _) = o.unbound.remove(i);
                        self.subscribe(oid, tid, SubState::Open(m), q);
                    }
                }
                _ => {}
            }
            self.touch(oid);
        }
    }

    /// Binds a WHEP viewer's offered m-line to the room's broadcast track of that kind
    /// (a WHIP publisher's first, else any publisher's).
    fn bind_whep(&mut self, pid: ParticipantId, mid: Mid, kind: MediaKind) {
        let Some(p) = self.participants.get(&pid) else {
            return;
        };
        if p.kind != PeerKind::Whep {
            return;
        }
        let q = p.default_quality;
        let pick = self
            .tracks
            .values()
            .filter(|t| t.kind == kind && t.publisher != pid)
            .min_by_key(|t| {
                let whip = self
                    .participants
                    .get(&t.publisher)
                    .is_some_and(|o| o.kind == PeerKind::Whip);
                (!whip, t.id)
            })
            .map(|t| t.id);
        match pick {
            Some(tid) => self.subscribe(pid, tid, SubState::Open(mid), q),
            None => {
                if let Some(p) = self.participants.get_mut(&pid) {
                    p.unbound.push((mid, kind));
                }
            }
        }
    }

    /// The hot path: one media frame from a publisher to every subscriber of its track.
    /// Payloads are shared (`Arc<[u8]>`); nothing is allocated here per frame.
    fn forward(&mut self, now: Instant, from: ParticipantId, data: MediaData, out: &mut Outbox) {
        let _hot = hot_path::Mark::forwarding();
        SfuMetrics::inc(&out.metrics.frames_in, 1);
        let Room {
            participants,
            tracks,
            speakers,
            dirty,
            taps,
            ..
        } = self;
        let Some(tid) = participants
            .get(&from)
            .and_then(|p| p.track_for_mid(data.mid))
        else {
            return;
        };
        let Some(track) = tracks.get_mut(&tid) else {
            return;
        };
        let Some(li) = track.layer_index(data.rid) else {
            return;
        };
        let layer = &mut track.layers[li];
        layer.meter.add(now, data.data.len());
        layer.last_packet = Some(now);
        if track.muted {
            // Not forwarded, not tapped, not a speaker: muted means silent for everyone.
            return;
        }
        let video = track.kind == MediaKind::Video;
        if track.source == TrackSource::Microphone {
            if let Some(level) = data.ext_vals.audio_level {
                speakers.observe(from, level, now);
            }
        }
        let keyframe = video && data.is_keyframe();
        let mut want_keyframe = [false; MAX_LAYERS];
        if video && !data.contiguous {
            // Loss upstream that NACK did not repair: the decoders downstream need a keyframe.
            want_keyframe[li] = true;
        }
        // Egress takes a publisher's camera and microphone, not its screen share.
        let tapped = !track.source.is_screen();
        for tap in taps.iter_mut().filter(|t| tapped && t.publisher == from) {
            if let Some(l) = tap.offer(track, li, keyframe, &data, now) {
                want_keyframe[l.min(MAX_LAYERS - 1)] = true;
            }
        }
        let clock = transport::clock_hz(track.kind);
        let (mut frames, mut bytes) = (0u64, 0u64);
        for &sid in &track.subscribers {
            let Some(sub) = participants.get_mut(&sid) else {
                continue;
            };
            let Some(s) = sub.subs.iter_mut().find(|s| s.track == tid) else {
                continue;
            };
            let Some(mid) = s.sending_mid() else {
                continue;
            };
            if s.current != Some(li) {
                let target = match s.target {
                    Some(t) => t,
                    None if !video => li,
                    // Not yet chosen (new subscription): start on the layer that has a keyframe.
                    None => {
                        s.target = Some(li);
                        li
                    }
                };
                if target != li {
                    if s.current.is_none()
                        || s.current.is_some_and(|c| !track_active(track, c, now))
                    {
                        want_keyframe[target.min(MAX_LAYERS - 1)] = true;
                    }
                    continue;
                }
                if video && !keyframe {
                    want_keyframe[li] = true;
                    continue;
                }
                s.current = Some(li);
                s.rewriter
                    .switch(data.time.numer(), data.network_time, clock);
            }
            let ts = s.rewriter.rewrite(data.time.numer(), data.network_time);
            let written = {
                let _str0m = hot_path::Mark::outside();
                let Some(mut writer) = sub.rtc.writer(mid) else {
                    continue;
                };
                let Some(pt) = writer.match_params(data.params) else {
                    continue;
                };
                if let Some(level) = data.ext_vals.audio_level {
                    writer =
                        writer.audio_level(level, data.ext_vals.voice_activity.unwrap_or(false));
                }
                let time = MediaTime::new(ts, data.time.frequency());
                writer.write(pt, data.network_time, time, data.data.clone())
            };
            if let Err(e) = written {
                debug!(participant = %sid, "write failed: {e}");
                continue;
            }
            frames += 1;
            bytes += data.data.len() as u64;
            if !sub.dirty {
                sub.dirty = true;
                dirty.push(sid);
            }
        }
        SfuMetrics::inc(&out.metrics.frames_forwarded, frames);
        SfuMetrics::inc(&out.metrics.bytes_forwarded, bytes);
        if want_keyframe.iter().any(|w| *w) {
            let (mid, publisher) = (track.mid, track.publisher);
            for (i, layer) in track.layers.iter_mut().enumerate() {
                if want_keyframe[i] && layer.keyframes.allow(now) {
                    request_keyframe(participants, dirty, publisher, mid, layer.rid, out);
                }
            }
        }
    }

    /// Copies `publisher`'s media into `sink` from now on.
    pub fn add_tap(&mut self, sink: TapSink) {
        self.taps.retain(|t| !t.closed);
        self.taps.push(sink);
    }

    /// The room's broadcaster for egress: `identity`'s participant if given, else the WHIP
    /// publisher, else the first participant publishing video.
    pub fn tap_candidate(&self, identity: Option<&str>) -> Option<ParticipantId> {
        let publishing = |p: &&Participant| !p.published.is_empty();
        let mut ps: Vec<&Participant> = self.participants.values().filter(publishing).collect();
        ps.sort_by_key(|p| (p.kind != PeerKind::Whip, p.id));
        match identity {
            Some(i) => ps.into_iter().find(|p| p.identity == i).map(|p| p.id),
            None => ps.first().map(|p| p.id),
        }
    }

    /// A tap of `publisher` wants a keyframe (its transcoder lost one).
    pub fn tap_keyframe(&mut self, now: Instant, publisher: ParticipantId, out: &mut Outbox) {
        let layer = self
            .taps
            .iter()
            .find(|t| t.publisher == publisher && !t.closed)
            .and_then(|t| t.video_layer());
        let Room {
            participants,
            tracks,
            dirty,
            ..
        } = self;
        for track in tracks
            .values_mut()
            .filter(|t| t.publisher == publisher && t.kind == MediaKind::Video)
        {
            let mid = track.mid;
            let top = track.layers.len().saturating_sub(1);
            if let Some(l) = track.layers.get_mut(layer.unwrap_or(top)) {
                if l.keyframes.allow(now) {
                    request_keyframe(participants, dirty, publisher, mid, l.rid, out);
                }
            }
        }
    }

    fn keyframe_from_subscriber(
        &mut self,
        now: Instant,
        pid: ParticipantId,
        mid: Mid,
        out: &mut Outbox,
    ) {
        let Some((tid, layer)) = self
            .participants
            .get(&pid)
            .and_then(|p| p.sub_for_mid(mid))
            .map(|s| (s.track, s.current.or(s.target).unwrap_or(0)))
        else {
            return;
        };
        let Some(track) = self.tracks.get_mut(&tid) else {
            return;
        };
        let (tmid, publisher) = (track.mid, track.publisher);
        if let Some(l) = track.layers.get_mut(layer) {
            if l.keyframes.allow(now) {
                request_keyframe(
                    &mut self.participants,
                    &mut self.dirty,
                    publisher,
                    tmid,
                    l.rid,
                    out,
                );
            }
        }
    }

    /// Mutes or unmutes tracks. Their publisher may do both; a moderator may mute anyone's but
    /// unmute only its own (a moderator turning on someone's microphone is not a thing).
    /// `by: None` is the server API (an admin token, no participant): a moderator.
    pub fn set_muted(
        &mut self,
        by: Option<ParticipantId>,
        moderator: bool,
        target: MuteTarget,
        muted: bool,
        out: &mut Outbox,
    ) -> Result<(), SfuError> {
        let by_identity = match by {
            Some(by) => self
                .participants
                .get(&by)
                .map(|p| p.identity.clone())
                .ok_or(SfuError::UnknownParticipant)?,
            None => "the room service API".to_string(),
        };
        let tids: Vec<TrackId> = match target {
            MuteTarget::Track(t) => {
                let track = self.tracks.get(&t).ok_or(SfuError::UnknownTrack)?;
                if Some(track.publisher) != by && !(moderator && muted) {
                    return Err(SfuError::Forbidden(
                        "only a track's publisher may unmute it, and only a moderator may mute another's",
                    ));
                }
                vec![t]
            }
            MuteTarget::Own(source) => self
                .tracks
                .values()
                .filter(|t| Some(t.publisher) == by && t.source == source)
                .map(|t| t.id)
                .collect(),
        };
        for tid in tids {
            let Some(track) = self.tracks.get_mut(&tid) else {
                continue;
            };
            if track.muted == muted {
                continue;
            }
            track.muted = muted;
            let (publisher, mid, kind, kind_name, source) = (
                track.publisher,
                track.mid,
                track.kind,
                track.kind_name(),
                track.source,
            );
            let rids: Vec<Option<Rid>> = track.layers.iter().map(|l| l.rid).collect();
            info!(room = %self.name, participant = %publisher, track = %tid, muted, by = %by_identity, "track mute changed");
            if !muted && kind == MediaKind::Video {
                // Subscribers' decoders start again from a keyframe.
                for rid in rids {
                    request_keyframe(
                        &mut self.participants,
                        &mut self.dirty,
                        publisher,
                        mid,
                        rid,
                        out,
                    );
                }
            }
            self.broadcast(
                out,
                None,
                &Signal::TrackMuted {
                    track: tid,
                    participant: publisher,
                    kind: kind_name,
                    source,
                    muted,
                    by: by_identity.clone(),
                },
            );
        }
        Ok(())
    }

    /// Sends `data` on the participant's `yjs` data channel.
    pub fn app_send(&mut self, pid: ParticipantId, data: &[u8]) -> bool {
        let Some(p) = self.participants.get_mut(&pid) else {
            return false;
        };
        let Some(mut ch) = p.app.and_then(|c| p.rtc.channel(c)) else {
            return false;
        };
        let ok = ch.write(true, data).is_ok();
        self.touch(pid);
        ok
    }

    /// Server-initiated renegotiation for a room client: add m-lines for new subscriptions,
    /// stop those of removed tracks.
    fn negotiate(&mut self, pid: ParticipantId, out: &mut Outbox) {
        let Some(p) = self.participants.get_mut(&pid) else {
            return;
        };
        if p.kind != PeerKind::Room || !p.negotiated || p.pending.is_some() {
            return;
        }
        let Participant { rtc, subs, .. } = p;
        let mut change = rtc.sdp_api();
        for s in subs.iter_mut() {
            match s.wants() {
                Wants::Add => {
                    let mid = change.add_media(
                        s.kind,
                        Direction::SendOnly,
                        Some(s.publisher.0.to_string()),
                        Some(s.track.0.to_string()),
                        None,
                    );
                    s.offered(mid);
                }
                Wants::Stop(mid) => {
                    change.stop_media(mid);
                    s.offered(mid);
                }
                Wants::Nothing => {}
            }
        }
        if !change.has_changes() {
            return;
        }
        if let Some((offer, pending)) = change.apply() {
            p.pending = Some(pending);
            out.signal(
                pid,
                Signal::Offer {
                    sdp: offer.to_sdp_string(),
                },
            );
        }
    }

    /// A participant's (re)offer. Server-side pending changes are rolled back and redone.
    pub fn accept_offer(
        &mut self,
        pid: ParticipantId,
        sdp: &str,
        expect: Expect,
        sources: &[(String, TrackSource)],
        out: &mut Outbox,
    ) -> Result<String, SfuError> {
        let p = self.participant_mut(pid)?;
        let (answer, silent) = p.accept_offer(sdp, expect)?;
        // Declarations accumulate (an offer need not repeat them), bounded like the m-lines.
        for (mid, source) in sources.iter().take(MAX_DECLARED_SOURCES) {
            let mid = Mid::from(mid.as_str());
            p.sources.retain(|(m, _)| *m != mid);
            p.sources.push((mid, *source));
        }
        if p.sources.len() > MAX_DECLARED_SOURCES {
            let extra = p.sources.len() - MAX_DECLARED_SOURCES;
            p.sources.drain(..extra);
        }
        let mut stopped = Vec::new();
        p.published.retain(|(mid, tid)| {
            let gone = silent.iter().any(|m| Mid::from(m.as_str()) == *mid);
            if gone {
                stopped.push(*tid);
            }
            !gone
        });
        for tid in stopped {
            info!(room = %self.name, participant = %pid, track = %tid, "track stopped by its publisher");
            self.unpublish(tid, out);
        }
        self.touch(pid);
        Ok(answer)
    }

    pub fn accept_answer(
        &mut self,
        pid: ParticipantId,
        sdp: &str,
        out: &mut Outbox,
    ) -> Result<(), SfuError> {
        let p = self.participant_mut(pid)?;
        let answer = transport::parse_answer(sdp)?;
        let pending = p.pending.take().ok_or(SfuError::NoPendingOffer)?;
        p.rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .map_err(|e| SfuError::Negotiation(e.to_string()))?;
        p.subs.retain_mut(|s| match s.answered() {
            Answered::Opened(m) => {
                out.signal(
                    pid,
                    Signal::Subscribed {
                        track: s.track,
                        participant: s.publisher,
                        mid: m.to_string(),
                    },
                );
                true
            }
            Answered::Unchanged => true,
            Answered::Finished => false,
        });
        self.touch(pid);
        Ok(())
    }

    pub fn add_candidate(&mut self, pid: ParticipantId, line: &str) -> Result<(), SfuError> {
        let p = self.participant_mut(pid)?;
        // Browsers without camera permission trickle mDNS host names (`….local`). An ICE-lite
        // server learns the peer's address from its STUN checks and needs none of them.
        if is_mdns_candidate(line) {
            debug!(participant = %pid, "ignoring an mDNS ICE candidate");
            return Ok(());
        }
        let c = transport::parse_candidate(line)?;
        p.rtc.add_remote_candidate(c);
        Ok(())
    }

    pub fn set_preference(
        &mut self,
        now: Instant,
        pid: ParticipantId,
        track: Option<TrackId>,
        q: Quality,
        out: &mut Outbox,
    ) -> Result<(), SfuError> {
        let p = self.participant_mut(pid)?;
        match track {
            Some(t) => p.sub_mut(t).ok_or(SfuError::UnknownTrack)?.pref = q,
            None => {
                p.default_quality = q;
                for s in &mut p.subs {
                    s.pref = q;
                }
            }
        }
        self.refresh_layers(now, out);
        Ok(())
    }

    /// Whether joins and leaves go out in batches: a large room, or a batch already waiting
    /// (so nothing overtakes it as the room shrinks).
    fn batching_presence(&self) -> bool {
        !self.presence.joined.is_empty()
            || !self.presence.left.is_empty()
            || self.room_clients().count() >= self.presence_batch_above
    }

    /// Sends the waiting presence batch, at most once per [`PRESENCE_INTERVAL`]. Each client
    /// gets it without its own join (its `joined` answer already has the room).
    fn flush_presence(&mut self, now: Instant, out: &mut Outbox) {
        let b = &mut self.presence;
        if (b.joined.is_empty() && b.left.is_empty())
            || b.last_sent
                .is_some_and(|t| now.saturating_duration_since(t) < PRESENCE_INTERVAL)
        {
            return;
        }
        b.last_sent = Some(now);
        let joined = std::mem::take(&mut b.joined);
        let left = std::mem::take(&mut b.left);
        for p in self.participants.values() {
            if p.kind != PeerKind::Room {
                continue;
            }
            let mine: Vec<ParticipantInfo> =
                joined.iter().filter(|j| j.id != p.id).cloned().collect();
            if mine.is_empty() && left.is_empty() {
                continue;
            }
            out.signal(
                p.id,
                Signal::Presence {
                    joined: mine,
                    left: left.clone(),
                },
            );
        }
    }

    /// Periodic work: layer targets, dynacast, speakers, presence batches, vanished
    /// participants. Returns the participants to remove.
    pub fn housekeeping(
        &mut self,
        now: Instant,
        silence: Duration,
        out: &mut Outbox,
    ) -> Vec<ParticipantId> {
        self.refresh_layers(now, out);
        self.flush_presence(now, out);
        if let Some(speaking) = self.speakers.poll(now) {
            self.broadcast(
                out,
                None,
                &Signal::Speakers {
                    participants: speaking,
                },
            );
        }
        self.participants
            .values()
            .filter(|p| {
                let since = p.last_rx.unwrap_or(p.created);
                now.saturating_duration_since(since) > silence
            })
            .map(|p| p.id)
            .collect()
    }

    /// Recomputes every subscription's target and desired layer from its preference and the
    /// subscriber's bandwidth estimate, then tells publishers which layers are needed.
    fn refresh_layers(&mut self, now: Instant, out: &mut Outbox) {
        let Room {
            participants,
            tracks,
            taps,
            ..
        } = self;
        for p in participants.values_mut() {
            let open = |kind: MediaKind, screen: bool| {
                p.subs
                    .iter()
                    .filter(|s| s.kind == kind && s.sending_mid().is_some())
                    .filter(|s| {
                        tracks
                            .get(&s.track)
                            .is_some_and(|t| t.source.is_screen() == screen)
                    })
                    .count() as u64
            };
            // Only negotiated subscriptions share the estimate.
            let audios = open(MediaKind::Audio, false) + open(MediaKind::Audio, true);
            let (screens, cameras) = (open(MediaKind::Video, true), open(MediaKind::Video, false));
            let videos = screens + cameras;
            let mut split = VideoBudget::new(
                p.bwe_bps.map(|b| b.saturating_sub(audios * AUDIO_BPS)),
                screens,
                cameras,
            );
            let mut desired_total = audios * AUDIO_BPS;
            for screen_pass in [true, false] {
                let budget = if screen_pass {
                    split.per_screen()
                } else {
                    split.per_camera()
                };
                for s in &mut p.subs {
                    let Some(track) = tracks.get(&s.track) else {
                        continue;
                    };
                    if s.kind == MediaKind::Audio {
                        s.target = Some(0);
                        s.desired = Some(0);
                        continue;
                    }
                    if track.source.is_screen() != screen_pass {
                        continue;
                    }
                    let (views, n) = track.views(now, false);
                    s.target = choose_layer(s.pref, &views[..n], budget, s.current).or(s.target);
                    let (all, n) = track.views(now, true);
                    s.desired = choose_layer(s.pref, &all[..n], budget, s.desired);
                    // Ask the estimator to probe up to the preferred layer.
                    if let Some(top) = choose_layer(s.pref, &all[..n], None, None) {
                        desired_total += all[top].bps.max(300_000);
                    }
                    if screen_pass && s.sending_mid().is_some() {
                        split.spend(s.target.map_or(0, |t| views[t.min(MAX_LAYERS - 1)].bps));
                    }
                }
            }
            if videos > 0 {
                use transport::Bitrate;
                p.rtc.bwe().set_bitrate(
                    Bitrate::kbps(300),
                    Bitrate::from(desired_total.max(500_000) as f64),
                );
            }
        }
        // Dynacast.
        for track in tracks.values_mut() {
            if !track.is_simulcast() {
                continue;
            }
            let Some(publisher) = participants.get(&track.publisher) else {
                continue;
            };
            if publisher.kind != PeerKind::Room {
                continue;
            }
            let mut needed = [false; MAX_LAYERS];
            // An egress tap takes the best layer.
            if taps
                .iter()
                .any(|t| t.publisher == track.publisher && !t.closed)
            {
                needed[track.layers.len().saturating_sub(1).min(MAX_LAYERS - 1)] = true;
            }
            for sid in &track.subscribers {
                if let Some(s) = participants
                    .get(sid)
                    .and_then(|p| p.subs.iter().find(|s| s.track == track.id))
                {
                    for l in [s.desired, s.target, s.current].into_iter().flatten() {
                        if l < MAX_LAYERS {
                            needed[l] = true;
                        }
                    }
                }
            }
            if track.announced != Some(needed) {
                track.announced = Some(needed);
                let rids = track
                    .layers
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| needed[*i])
                    .filter_map(|(_, l)| l.rid.map(|r| r.to_string()))
                    .collect();
                out.signal(
                    track.publisher,
                    Signal::LayersNeeded {
                        track: track.id,
                        mid: track.mid.to_string(),
                        rids,
                    },
                );
            }
        }
    }
}

fn track_active(track: &Track, layer: usize, now: Instant) -> bool {
    track.layers.get(layer).is_some_and(|l| l.active(now))
}

fn request_keyframe(
    participants: &mut HashMap<ParticipantId, Participant>,
    dirty: &mut Vec<ParticipantId>,
    publisher: ParticipantId,
    mid: Mid,
    rid: Option<Rid>,
    out: &mut Outbox,
) {
    let Some(p) = participants.get_mut(&publisher) else {
        return;
    };
    let requested = {
        let _str0m = hot_path::Mark::outside();
        let Some(mut w) = p.rtc.writer(mid) else {
            return;
        };
        if !w.is_request_keyframe_possible(KeyframeRequestKind::Pli) {
            return;
        }
        w.request_keyframe(rid, KeyframeRequestKind::Pli)
    };
    if let Err(e) = requested {
        debug!(participant = %publisher, "keyframe request failed: {e}");
        return;
    }
    SfuMetrics::inc(&out.metrics.keyframe_requests, 1);
    Room::mark_dirty(participants, dirty, publisher);
}

/// Whether an ICE candidate line names its address as an mDNS host name (`<uuid>.local`).
fn is_mdns_candidate(line: &str) -> bool {
    // candidate:<foundation> <component> <transport> <priority> <address> <port> typ ...
    line.trim()
        .strip_prefix("a=")
        .unwrap_or(line.trim())
        .split_ascii_whitespace()
        .nth(4)
        .is_some_and(|a| a.to_ascii_lowercase().ends_with(".local"))
}

#[cfg(test)]
mod mdns_tests {
    use super::is_mdns_candidate;

    #[test]
    fn mdns_candidates_are_recognised() {
        assert!(is_mdns_candidate(
            "candidate:1 1 udp 2122260223 4b1e1f6c-0a6d-4c3e-9a53-2f1d4f6a1b2c.local 54400 typ host generation 0"
        ));
        assert!(is_mdns_candidate(
            "a=candidate:1 1 UDP 2122260223 abc.LOCAL 9 typ host"
        ));
        assert!(!is_mdns_candidate(
            "candidate:1 1 udp 2122260223 127.0.0.1 54400 typ host"
        ));
        assert!(!is_mdns_candidate("garbage"));
    }
}
