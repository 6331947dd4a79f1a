//! The sans-IO SFU core over all rooms: routes datagrams to participants, runs timers,
//! collects transmits and signals. Time is always passed in.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use crate::error::SfuError;
use crate::ids::{ParticipantId, TrackId};
use crate::layer::Quality;
use crate::metrics::SfuMetrics;
use crate::outbox::{Datagram, Outbox};
use crate::participant::Expect;
use crate::participant::Participant;
use crate::room::{Leave, Room};
use crate::signal::{
    ParticipantInfo, PeerKind, Permissions, RoomEvent, Signal, TrackInfo, TrackSource,
};
use crate::transport::{self, Input, Protocol, Receive};

#[derive(Debug, Clone)]
pub struct SfuConfig {
    /// The address peers send media to over UDP (the UDP host candidate).
    pub public_addr: SocketAddr,
    /// The address peers reach over TCP (a passive TCP host candidate, RFC 6544), if any.
    pub tcp_addr: Option<SocketAddr>,
    /// Offer the UDP candidate; off only to prove ICE-TCP (`media.udp_candidate`).
    pub udp_candidate: bool,
    /// A participant silent this long (no datagram at all) is removed.
    pub silence_timeout: Duration,
    pub max_participants_per_room: usize,
    /// Collect [`RoomEvent`]s (for webhooks); off, nothing is kept.
    pub room_events: bool,
    /// From this many room clients on, joins and leaves reach a room's clients in batches
    /// ([`Signal::Presence`]) instead of one message each (which is N^2 messages as a
    /// class of N joins).
    pub presence_batch_above: usize,
}

impl SfuConfig {
    pub fn new(public_addr: SocketAddr) -> SfuConfig {
        SfuConfig {
            public_addr,
            tcp_addr: None,
            udp_candidate: true,
            silence_timeout: Duration::from_secs(15),
            max_participants_per_room: 1000,
            room_events: false,
            presence_batch_above: 50,
        }
    }
}

/// What a new participant asks for.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub room: String,
    pub identity: String,
    pub kind: PeerKind,
    pub perms: Permissions,
    /// WHIP/WHEP send their offer with the join; room clients send it later.
    pub offer: Option<String>,
    pub quality: Quality,
}

#[derive(Debug, Clone)]
pub struct Joined {
    pub participant: ParticipantId,
    pub answer: Option<String>,
    pub participants: Vec<ParticipantInfo>,
    pub tracks: Vec<TrackInfo>,
}

/// Whose media a tap takes.
#[derive(Clone, Debug)]
pub enum TapWho {
    Participant(ParticipantId),
    Identity(String),
    /// The room's WHIP publisher, else the first participant publishing.
    Broadcaster,
}

/// A new tap's receiving side (see [`Sfu::tap`]).
pub struct TapOpened {
    pub participant: ParticipantId,
    pub identity: String,
    pub rx: std::sync::mpsc::Receiver<crate::tap::TapFrame>,
    pub dropped: Arc<std::sync::atomic::AtomicU64>,
}

const HOUSEKEEPING: Duration = Duration::from_millis(250);

/// Breakout names: 1-64 of `A-Z a-z 0-9 - _` (they may name a chat history or a document).
fn check_group_name(g: &str) -> Result<(), SfuError> {
    if g.is_empty() || g.len() > 64 {
        return Err(SfuError::BadGroup("1 to 64 characters"));
    }
    if !g
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(SfuError::BadGroup("letters, digits, - and _ only"));
    }
    Ok(())
}

pub struct Sfu {
    config: SfuConfig,
    rooms: HashMap<String, Room>,
    /// Which room each participant is in (shared name: timers clone it per firing).
    located: HashMap<ParticipantId, Arc<str>>,
    /// Source (protocol and address) -> participant, learned from the first datagram a
    /// participant accepts.
    routes: HashMap<(Protocol, SocketAddr), ParticipantId>,
    out: Outbox,
    /// `handle_timeout`'s batch of due timers, kept for its capacity.
    due: Vec<(Instant, ParticipantId)>,
    next_participant: u64,
    next_housekeeping: Option<Instant>,
}

impl Sfu {
    pub fn new(config: SfuConfig, metrics: Arc<SfuMetrics>) -> Sfu {
        transport::init_crypto();
        let room_events = config.room_events;
        Sfu {
            config,
            rooms: HashMap::new(),
            located: HashMap::new(),
            routes: HashMap::new(),
            out: Outbox::new(metrics, room_events),
            due: Vec::new(),
            next_participant: 0,
            next_housekeeping: None,
        }
    }

    pub fn metrics(&self) -> &Arc<SfuMetrics> {
        &self.out.metrics
    }

    pub fn join(&mut self, now: Instant, req: JoinRequest) -> Result<Joined, SfuError> {
        // One room connection and one WHIP publisher per identity, as LiveKit does: a second
        // join replaces the first, so one token cannot fill a room. WHEP viewers may share an
        // identity (a public watch link), and are capped by the room size only.
        let replaced = (req.kind != PeerKind::Whep)
            .then(|| self.rooms.get(&req.room))
            .flatten()
            .and_then(|r| r.find(&req.identity, req.kind));
        let present =
            self.rooms.get(&req.room).map_or(0, |r| r.len()) - usize::from(replaced.is_some());
        if present >= self.config.max_participants_per_room {
            return Err(SfuError::RoomFull(present));
        }
        let udp = self.config.udp_candidate.then_some(self.config.public_addr);
        let rtc = transport::new_peer(now, udp, self.config.tcp_addr, req.kind)?;
        let pid = ParticipantId(self.next_participant + 1);
        let mut p = Participant::new(
            pid,
            req.identity.clone(),
            req.kind,
            req.perms,
            rtc,
            now,
            req.quality,
        );
        // WHIP/WHEP offers are settled before the room hears of the participant: a refused
        // offer leaves no trace (no joined/left pair for the others).
        let answer = match &req.offer {
            None => None,
            Some(sdp) => {
                let expect = match req.kind {
                    PeerKind::Whip => Expect::Publish,
                    PeerKind::Whep => Expect::Subscribe,
                    PeerKind::Room => Expect::Any,
                };
                Some(p.accept_offer(sdp, expect)?.0)
            }
        };
        self.next_participant += 1;
        if let Some(old) = replaced {
            info!(room = %req.room, identity = %req.identity, participant = %old, "replaced by a new connection of the same identity");
            self.remove(
                now,
                old,
                Leave::Ended("replaced: the same identity joined again elsewhere"),
            )?;
        }
        if !self.rooms.contains_key(&req.room) {
            self.out.event("room_started", &req.room, None, None);
        }
        let room = self
            .rooms
            .entry(req.room.clone())
            .or_insert_with(|| Room::new(req.room.clone(), self.config.presence_batch_above));
        let participants = room.infos();
        let tracks = room.tracks.values().map(|t| t.info()).collect();
        let name: Arc<str> = Arc::from(req.room.as_str());
        room.add(p, &mut self.out);
        self.located.insert(pid, name.clone());
        self.update_gauges();
        self.drain_room(now, &name, None);
        Ok(Joined {
            participant: pid,
            answer,
            participants,
            tracks,
        })
    }

    fn room_of(&mut self, pid: ParticipantId) -> Result<(&mut Room, &mut Outbox), SfuError> {
        let name = self.located.get(&pid).ok_or(SfuError::UnknownParticipant)?;
        let room = self
            .rooms
            .get_mut(&**name)
            .ok_or(SfuError::UnknownParticipant)?;
        Ok((room, &mut self.out))
    }

    pub fn offer(
        &mut self,
        now: Instant,
        pid: ParticipantId,
        sdp: &str,
    ) -> Result<String, SfuError> {
        self.offer_with_sources(now, pid, sdp, &[])
    }

    /// A room client's (re)offer, with what its m-lines carry (`mid`, source); a published
    /// m-line the offer no longer sends on is unpublished (a screen share stopped).
    pub fn offer_with_sources(
        &mut self,
        now: Instant,
        pid: ParticipantId,
        sdp: &str,
        sources: &[(String, TrackSource)],
    ) -> Result<String, SfuError> {
        let (room, out) = self.room_of(pid)?;
        let r = room.accept_offer(pid, sdp, Expect::Any, sources, out);
        self.drain_room_of(now, pid);
        r
    }

    pub fn answer(&mut self, now: Instant, pid: ParticipantId, sdp: &str) -> Result<(), SfuError> {
        let (room, out) = self.room_of(pid)?;
        let r = room.accept_answer(pid, sdp, out);
        self.drain_room_of(now, pid);
        r
    }

    pub fn candidate(&mut self, pid: ParticipantId, line: &str) -> Result<(), SfuError> {
        let (room, _) = self.room_of(pid)?;
        room.add_candidate(pid, line)
    }

    pub fn set_preference(
        &mut self,
        now: Instant,
        pid: ParticipantId,
        track: Option<TrackId>,
        q: Quality,
    ) -> Result<(), SfuError> {
        let (room, out) = self.room_of(pid)?;
        let r = room.set_preference(now, pid, track, q, out);
        self.drain_room_of(now, pid);
        r
    }

    /// Starts copying a room broadcaster's media out (see [`Room::tap_candidate`]).
    pub fn tap(&mut self, room: &str, who: &TapWho) -> Result<TapOpened, SfuError> {
        let r = self
            .rooms
            .get_mut(room)
            .ok_or_else(|| SfuError::NothingToTap(room.to_string()))?;
        let pid = match who {
            TapWho::Participant(p) if r.contains(*p) => Some(*p),
            TapWho::Participant(_) => None,
            TapWho::Identity(i) => r.tap_candidate(Some(i)),
            TapWho::Broadcaster => r.tap_candidate(None),
        }
        .ok_or_else(|| SfuError::NothingToTap(room.to_string()))?;
        let who = r.identity_of(pid).unwrap_or_default().to_string();
        let (sink, rx, dropped) = crate::tap::channel(pid);
        r.add_tap(sink);
        info!(%room, participant = %pid, identity = %who, "media tapped for egress");
        Ok(TapOpened {
            participant: pid,
            identity: who,
            rx,
            dropped,
        })
    }

    /// A tap's consumer asks for a keyframe from the tapped publisher.
    pub fn tap_keyframe(&mut self, now: Instant, pid: ParticipantId) -> Result<(), SfuError> {
        let (room, out) = self.room_of(pid)?;
        room.tap_keyframe(now, pid, out);
        self.drain_room_of(now, pid);
        Ok(())
    }

    /// Writes to the participant's `yjs` data channel.
    pub fn app_send(
        &mut self,
        now: Instant,
        pid: ParticipantId,
        data: &[u8],
    ) -> Result<bool, SfuError> {
        let (room, _) = self.room_of(pid)?;
        let ok = room.app_send(pid, data);
        self.drain_room_of(now, pid);
        Ok(ok)
    }

    /// `by` mutes or unmutes a track of its room (see [`Room::set_muted`]).
    pub fn set_muted(
        &mut self,
        now: Instant,
        by: ParticipantId,
        moderator: bool,
        target: crate::signal::MuteTarget,
        muted: bool,
    ) -> Result<(), SfuError> {
        let (room, out) = self.room_of(by)?;
        let r = room.set_muted(Some(by), moderator, target, muted, out);
        self.drain_room_of(now, by);
        r
    }

    /// A moderator (`by`) moves `target` of its room to a breakout or back to the main room
    /// (see [`Room::set_group`]); a moderator may move itself (to visit a breakout).
    pub fn set_group(
        &mut self,
        now: Instant,
        by: ParticipantId,
        moderator: bool,
        target: ParticipantId,
        group: Option<String>,
    ) -> Result<(), SfuError> {
        if !moderator {
            return Err(SfuError::Forbidden(
                "moving participants between breakouts is for moderators (a token with the admin grant)",
            ));
        }
        let room = self
            .located
            .get(&by)
            .cloned()
            .ok_or(SfuError::UnknownParticipant)?;
        let who = self
            .rooms
            .get(&*room)
            .and_then(|r| r.identity_of(by))
            .unwrap_or("a moderator")
            .to_string();
        self.group_in(now, &room, target, group, &who)
    }

    /// Moves `target` of `room` to a breakout or back (`by`: who, for everyone's `grouped`);
    /// the room service API calls this directly.
    pub fn group_in(
        &mut self,
        now: Instant,
        room: &str,
        target: ParticipantId,
        group: Option<String>,
        by: &str,
    ) -> Result<(), SfuError> {
        if let Some(g) = &group {
            check_group_name(g)?;
        }
        if self.located.get(&target).is_none_or(|r| &**r != room) {
            return Err(SfuError::UnknownParticipant);
        }
        let r = self
            .rooms
            .get_mut(room)
            .ok_or(SfuError::UnknownParticipant)?;
        let res = r.set_group(now, target, group, by, &mut self.out);
        self.drain_room(now, room, None);
        res
    }

    /// The room service API mutes a track of `room` (it cannot unmute: only its publisher does).
    pub fn mute_in(&mut self, now: Instant, room: &str, track: TrackId) -> Result<(), SfuError> {
        let r = self.rooms.get_mut(room).ok_or(SfuError::UnknownTrack)?;
        let res = r.set_muted(
            None,
            true,
            crate::signal::MuteTarget::Track(track),
            true,
            &mut self.out,
        );
        self.drain_room(now, room, None);
        res
    }

    /// The room service API removes `target` from `room`.
    pub fn remove_in(
        &mut self,
        now: Instant,
        room: &str,
        target: ParticipantId,
    ) -> Result<(), SfuError> {
        if self.located.get(&target).is_none_or(|r| &**r != room) {
            return Err(SfuError::UnknownParticipant);
        }
        info!(participant = %target, %room, "removed through the room service API");
        self.remove(now, target, Leave::Ended("removed by a moderator"))
    }

    /// The room service API sends an application message to `room`'s clients (those on the
    /// room WebSocket; WHIP and WHEP sessions have none), or only to those whose identity is in
    /// `to`. Returns how many participants it was queued for.
    pub fn send_data(
        &mut self,
        room: &str,
        to: Option<&[String]>,
        data: &crate::signal::DataMessage,
    ) -> Result<usize, SfuError> {
        let r = self.rooms.get(room).ok_or(SfuError::UnknownRoom)?;
        let mut n = 0;
        for (pid, identity) in r.room_clients() {
            if to.is_some_and(|ids| !ids.iter().any(|i| i == identity)) {
                continue;
            }
            self.out.signal(pid, Signal::Data(data.clone()));
            n += 1;
        }
        Ok(n)
    }

    /// Every room: name, participants, tracks.
    pub fn rooms(&self) -> Vec<(String, usize, usize)> {
        let mut v: Vec<_> = self
            .rooms
            .iter()
            .map(|(n, r)| (n.to_string(), r.len(), r.tracks.len()))
            .collect();
        v.sort();
        v
    }

    /// A moderator (`by`) removes `target` from its room: `target` is told why and leaves.
    pub fn remove_by(
        &mut self,
        now: Instant,
        by: ParticipantId,
        target: ParticipantId,
    ) -> Result<(), SfuError> {
        let same_room = match (self.located.get(&by), self.located.get(&target)) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        };
        if !same_room {
            return Err(SfuError::UnknownParticipant);
        }
        info!(participant = %target, by = %by, "removed by a moderator");
        self.remove(now, target, Leave::Ended("removed by a moderator"))
    }

    /// Removes a participant that asked to leave (or whose signaling closed).
    pub fn leave(&mut self, now: Instant, pid: ParticipantId) -> Result<(), SfuError> {
        self.remove(now, pid, Leave::Asked)
    }

    fn remove(&mut self, now: Instant, pid: ParticipantId, why: Leave<'_>) -> Result<(), SfuError> {
        let name = self
            .located
            .remove(&pid)
            .ok_or(SfuError::UnknownParticipant)?;
        if let Some(room) = self.rooms.get_mut(&*name) {
            room.remove(pid, why, &mut self.out);
        }
        self.routes.retain(|_, p| *p != pid);
        self.drop_room_if_empty(&name);
        self.update_gauges();
        // The others in the room have output now (track removals, renegotiations).
        self.drain_room(now, &name, None);
        Ok(())
    }

    fn drop_room_if_empty(&mut self, name: &str) {
        if self.rooms.get(name).is_some_and(|r| r.is_empty()) {
            self.rooms.remove(name);
            info!(room = %name, "room closed");
            self.out.event("room_finished", name, None, None);
        }
    }

    fn update_gauges(&self) {
        let m = &self.out.metrics;
        SfuMetrics::set(&m.rooms, self.rooms.len() as u64);
        SfuMetrics::set(&m.participants, self.located.len() as u64);
    }

    /// One datagram from the media socket (`Protocol::Udp`), or one RFC 4571 frame from a TCP
    /// connection (`Protocol::Tcp`, `source` its peer address).
    ///
    /// The destination str0m sees is the announced candidate, not the socket's own address:
    /// a socket bound to `0.0.0.0` or behind 1:1 NAT (`media.public_ip`) receives on an
    /// address no candidate names, and str0m drops STUN for unknown interfaces.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        proto: Protocol,
        source: SocketAddr,
        bytes: &[u8],
    ) -> bool {
        SfuMetrics::inc(&self.out.metrics.datagrams_in, 1);
        let destination = match proto {
            Protocol::Tcp => match self.config.tcp_addr {
                Some(a) => a,
                None => return false,
            },
            _ => self.config.public_addr,
        };
        let Ok(contents) = bytes.try_into() else {
            SfuMetrics::inc(&self.out.metrics.datagrams_bad, 1);
            debug!(%source, len = bytes.len(), "datagram is not STUN, DTLS, RTP or RTCP");
            return false;
        };
        let input = Input::Receive(
            now,
            Receive {
                proto,
                source,
                destination,
                contents,
            },
        );
        let pid = match self.routes.get(&(proto, source)) {
            Some(pid) => Some(*pid),
            // A new address (first STUN of a peer, or an ICE restart): ask each peer.
            None => self.find_acceptor(&input),
        };
        let Some(pid) = pid else {
            SfuMetrics::inc(&self.out.metrics.datagrams_unrouted, 1);
            debug!(%source, "datagram for no participant");
            return false;
        };
        self.routes.insert((proto, source), pid);
        let Some(name) = self.located.get(&pid) else {
            return false;
        };
        let Some(room) = self.rooms.get_mut(&**name) else {
            return false;
        };
        if !room.receive(now, pid, input) {
            // Malformed or undecryptable input: str0m refuses it; the peer stays.
            SfuMetrics::inc(&self.out.metrics.datagrams_bad, 1);
        }
        self.drain_room_of(now, pid);
        true
    }

    fn find_acceptor(&self, input: &Input) -> Option<ParticipantId> {
        self.rooms.values().find_map(|r| r.acceptor(input))
    }

    fn drain_room_of(&mut self, now: Instant, pid: ParticipantId) {
        let Some(name) = self.located.get(&pid).cloned() else {
            return;
        };
        self.drain_room(now, &name, Some(pid));
    }

    fn drain_room(&mut self, now: Instant, name: &str, also: Option<ParticipantId>) {
        let Some(room) = self.rooms.get_mut(name) else {
            return;
        };
        if let Some(pid) = also {
            room.touch(pid);
        }
        let dead = room.drain(now, &mut self.out);
        for pid in dead {
            warn!(participant = %pid, "transport closed");
            let _ = self.remove(now, pid, Leave::Ended("transport closed"));
        }
    }

    /// Runs due timers and periodic work.
    pub fn handle_timeout(&mut self, now: Instant) {
        // Take the due timers first: a participant whose transport asks for another timeout
        // at `now` is served on the next call, so one call always finishes.
        // The batch buffer is kept between calls: no allocation per timeout.
        let mut due = std::mem::take(&mut self.due);
        self.out.pop_due(now, &mut due);
        due.sort_unstable_by_key(|(at, pid)| (*pid, *at));
        due.dedup_by_key(|(_, pid)| *pid);
        for &(at, pid) in &due {
            let Some(name) = self.located.get(&pid).cloned() else {
                continue;
            };
            if let Some(room) = self.rooms.get_mut(&*name) {
                // Keep one timer queued for this participant's next deadline.
                if let Some(next) = room.timer_fired(now, pid, at) {
                    self.out.schedule(next, pid);
                }
            }
            self.drain_room(now, &name, None);
        }
        due.clear();
        self.due = due;
        if self.next_housekeeping.is_none_or(|t| t <= now) {
            self.next_housekeeping = Some(now + HOUSEKEEPING);
            let names: Vec<String> = self.rooms.keys().cloned().collect();
            for n in names {
                let Some(room) = self.rooms.get_mut(&n) else {
                    continue;
                };
                let silent = room.housekeeping(now, self.config.silence_timeout, &mut self.out);
                for pid in silent {
                    SfuMetrics::inc(&self.out.metrics.participants_timed_out, 1);
                    info!(participant = %pid, "no traffic: participant timed out");
                    let _ = self.remove(now, pid, Leave::Ended("no media traffic (timed out)"));
                }
                self.drain_room(now, &n, None);
            }
        }
    }

    /// When [`Sfu::handle_timeout`] wants to run next.
    pub fn next_timeout(&self) -> Option<Instant> {
        let timer = self.out.next_timer();
        match (timer, self.next_housekeeping) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Room lifecycle events since the last call (with `SfuConfig::room_events`).
    pub fn drain_events(&mut self) -> Vec<RoomEvent> {
        self.out.take_events()
    }

    pub fn poll_signal(&mut self) -> Option<(ParticipantId, Signal)> {
        self.out.signals.pop_front()
    }

    /// Datagrams to send, in order. The vector keeps its capacity between drains.
    pub fn transmits(&mut self) -> std::vec::Drain<'_, Datagram> {
        SfuMetrics::inc(
            &self.out.metrics.datagrams_out,
            self.out.transmits.len() as u64,
        );
        self.out.transmits.drain(..)
    }

    /// The room a participant is in.
    pub fn room_of_participant(&self, pid: ParticipantId) -> Result<String, SfuError> {
        self.located
            .get(&pid)
            .map(|n| n.to_string())
            .ok_or(SfuError::UnknownParticipant)
    }

    pub fn participant_count(&self) -> usize {
        self.located.len()
    }

    /// Participants of a room (for the HTTP API).
    pub fn room_participants(&self, room: &str) -> Vec<ParticipantInfo> {
        self.rooms.get(room).map(|r| r.infos()).unwrap_or_default()
    }

    pub fn room_tracks(&self, room: &str) -> Vec<TrackInfo> {
        self.rooms
            .get(room)
            .map(|r| r.tracks.values().map(|t| t.info()).collect())
            .unwrap_or_default()
    }
}
