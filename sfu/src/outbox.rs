//! What the core produces while it runs: datagrams to send, signals for participants, timers
//! and room events. Rooms write into it and the core drains it; its own module so that rooms
//! and the core both depend on it rather than on each other.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::ids::{ParticipantId, TrackId};
use crate::metrics::SfuMetrics;
use crate::signal::{ParticipantInfo, RoomEvent, Signal, TrackInfo};
use crate::transport::Protocol;

/// A datagram to send.
#[derive(Debug)]
pub struct Datagram {
    /// UDP from the media socket, or TCP over the connection from `destination`.
    pub proto: Protocol,
    pub destination: SocketAddr,
    pub contents: Vec<u8>,
}

/// Outputs collected while the core runs; drained by the IO layer or a test.
pub struct Outbox {
    pub(crate) signals: VecDeque<(ParticipantId, Signal)>,
    pub(crate) transmits: Vec<Datagram>,
    timers: BinaryHeap<Reverse<(Instant, ParticipantId)>>,
    pub(crate) metrics: Arc<SfuMetrics>,
    next_track: u64,
    /// `None`: room events are not collected (no webhooks).
    events: Option<Vec<RoomEvent>>,
}

impl Outbox {
    pub(crate) fn new(metrics: Arc<SfuMetrics>, room_events: bool) -> Outbox {
        Outbox {
            signals: VecDeque::new(),
            transmits: Vec::new(),
            timers: BinaryHeap::new(),
            metrics,
            next_track: 0,
            events: room_events.then(Vec::new),
        }
    }

    pub(crate) fn event(
        &mut self,
        event: &'static str,
        room: &str,
        participant: Option<ParticipantInfo>,
        track: Option<TrackInfo>,
    ) {
        if let Some(e) = &mut self.events {
            e.push(RoomEvent {
                event,
                room: room.to_string(),
                participant,
                track,
            });
        }
    }

    pub(crate) fn signal(&mut self, to: ParticipantId, s: Signal) {
        self.signals.push_back((to, s));
    }

    pub(crate) fn transmit(&mut self, proto: Protocol, destination: SocketAddr, contents: Vec<u8>) {
        self.transmits.push(Datagram {
            proto,
            destination,
            contents,
        });
    }

    pub(crate) fn schedule(&mut self, at: Instant, pid: ParticipantId) {
        self.timers.push(Reverse((at, pid)));
    }

    /// Moves the timers due at `now` into `due` (earliest first).
    pub(crate) fn pop_due(&mut self, now: Instant, due: &mut Vec<(Instant, ParticipantId)>) {
        while let Some(Reverse((at, pid))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            due.push((at, pid));
        }
    }

    pub(crate) fn next_timer(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((t, _))| *t)
    }

    pub(crate) fn take_events(&mut self) -> Vec<RoomEvent> {
        self.events.as_mut().map(std::mem::take).unwrap_or_default()
    }

    pub(crate) fn next_track_id(&mut self) -> TrackId {
        self.next_track += 1;
        TrackId(self.next_track)
    }
}
