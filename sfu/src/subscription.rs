use crate::ids::{ParticipantId, TrackId};
use crate::layer::Quality;
use crate::time_rewrite::TimeRewriter;
use crate::transport::{MediaKind, Mid};

/// Where a subscription's outgoing m-line is in negotiation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubState {
    /// Needs an m-line in the next server offer.
    ToOpen,
    Negotiating(Mid),
    Open(Mid),
    /// The track went away: the m-line is stopped in the next server offer.
    ToStop(Mid),
    NegotiatingStop(Mid),
}

/// One participant receiving one track.
#[derive(Debug)]
pub struct Subscription {
    pub track: TrackId,
    pub publisher: ParticipantId,
    pub kind: MediaKind,
    pub state: SubState,
    pub pref: Quality,
    /// Layer being forwarded now (index into the track's layers).
    pub current: Option<usize>,
    /// Layer to switch to at its next keyframe.
    pub target: Option<usize>,
    /// Layer the publisher should send for this subscriber (dynacast), paused or not.
    pub desired: Option<usize>,
    pub rewriter: TimeRewriter,
}

impl Subscription {
    pub fn new(
        track: TrackId,
        publisher: ParticipantId,
        kind: MediaKind,
        state: SubState,
        pref: Quality,
    ) -> Subscription {
        Subscription {
            track,
            publisher,
            kind,
            state,
            pref,
            current: None,
            target: None,
            desired: None,
            rewriter: TimeRewriter::default(),
        }
    }

    /// The m-line media is written to, once negotiated.
    pub fn sending_mid(&self) -> Option<Mid> {
        match self.state {
            SubState::Open(m) => Some(m),
            _ => None,
        }
    }
}
