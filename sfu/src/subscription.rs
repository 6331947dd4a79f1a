//! One participant receiving one track, and the negotiation of its outgoing m-line: every
//! change of [`SubState`] is a method here, so the order (offered, answered, rolled back,
//! stopped) is checked in one place and tested on its own.

use crate::ids::{ParticipantId, TrackId};
use crate::layer::Quality;
use crate::time_rewrite::TimeRewriter;
use crate::transport::{MediaKind, Mid};

/// Where a subscription's outgoing m-line is in negotiation.
///
/// ```text
/// ToOpen --offered--> Negotiating --answered--> Open
///   ^                     |                       |
///   +---re-offer (rollback)+        track gone: ToStop --offered--> NegotiatingStop --answered--> (gone)
/// ```
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
    state: SubState,
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

    #[cfg(test)]
    fn state(&self) -> SubState {
        self.state
    }

    /// The m-line media is written to, once negotiated.
    pub fn sending_mid(&self) -> Option<Mid> {
        match self.state {
            SubState::Open(m) => Some(m),
            _ => None,
        }
    }

    /// Its m-line is being stopped (the track went, or the subscriber moved away from it).
    pub fn stopping(&self) -> bool {
        matches!(
            self.state,
            SubState::ToStop(_) | SubState::NegotiatingStop(_)
        )
    }

    /// What the next server offer must do for this subscription: add an m-line, stop one, or
    /// nothing.
    pub fn wants(&self) -> Wants {
        match self.state {
            SubState::ToOpen => Wants::Add,
            SubState::ToStop(m) => Wants::Stop(m),
            _ => Wants::Nothing,
        }
    }

    /// The server's offer carries this subscription's change: `mid` is the m-line it added
    /// (for `Wants::Add`), or the one it stops.
    pub fn offered(&mut self, mid: Mid) {
        self.state = match self.state {
            SubState::ToOpen => SubState::Negotiating(mid),
            SubState::ToStop(m) => SubState::NegotiatingStop(m),
            other => other,
        };
    }

    /// The peer answered the server's offer. Returns the m-line now open (a `subscribed`
    /// signal is due), and whether the subscription is finished (its stop was answered).
    pub fn answered(&mut self) -> Answered {
        match self.state {
            SubState::Negotiating(m) => {
                self.state = SubState::Open(m);
                Answered::Opened(m)
            }
            SubState::NegotiatingStop(_) => Answered::Finished,
            _ => Answered::Unchanged,
        }
    }

    /// The peer's own offer replaced the server's pending one (glare): what was being
    /// negotiated goes back to be offered again.
    pub fn rolled_back(&mut self) {
        self.state = match self.state {
            SubState::Negotiating(_) => SubState::ToOpen,
            SubState::NegotiatingStop(m) => SubState::ToStop(m),
            other => other,
        };
    }

    /// The track went away. Returns false when the subscription can simply be dropped (its
    /// m-line was never offered); otherwise its m-line is stopped in the next offer.
    pub fn track_gone(&mut self) -> bool {
        match self.state {
            SubState::Open(m) | SubState::Negotiating(m) => {
                self.state = SubState::ToStop(m);
                true
            }
            SubState::ToOpen => false,
            SubState::ToStop(_) | SubState::NegotiatingStop(_) => true,
        }
    }
}

/// See [`Subscription::wants`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wants {
    Nothing,
    Add,
    Stop(Mid),
}

/// See [`Subscription::answered`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answered {
    Unchanged,
    Opened(Mid),
    Finished,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(state: SubState) -> Subscription {
        Subscription::new(
            TrackId(1),
            ParticipantId(2),
            MediaKind::Video,
            state,
            Quality::High,
        )
    }

    /// The whole life of a room client's subscription: offered, answered, its track gone,
    /// the stop offered and answered; a glare on the way rolls back and is offered again.
    #[test]
    fn a_subscription_moves_through_negotiation_in_order() {
        let (a, b) = (Mid::from("a"), Mid::from("b"));
        let mut s = sub(SubState::ToOpen);
        assert_eq!(s.wants(), Wants::Add);
        assert_eq!(s.sending_mid(), None);
        s.offered(a);
        assert_eq!(s.state(), SubState::Negotiating(a));
        assert_eq!(s.wants(), Wants::Nothing, "offered once");
        // The peer's own offer wins: offered again, under the m-line the new offer adds.
        s.rolled_back();
        assert_eq!(s.state(), SubState::ToOpen);
        s.offered(b);
        assert_eq!(s.answered(), Answered::Opened(b));
        assert_eq!(s.sending_mid(), Some(b));
        assert_eq!(s.answered(), Answered::Unchanged, "an answer opens it once");
        s.rolled_back();
        assert_eq!(
            s.state(),
            SubState::Open(b),
            "nothing to roll back once open"
        );
        // Its track unpublished.
        assert!(s.track_gone());
        assert_eq!(s.wants(), Wants::Stop(b));
        assert_eq!(s.sending_mid(), None, "no media to a stopping m-line");
        s.offered(b);
        assert_eq!(s.state(), SubState::NegotiatingStop(b));
        s.rolled_back();
        assert_eq!(
            s.wants(),
            Wants::Stop(b),
            "a rolled-back stop is offered again"
        );
        s.offered(b);
        assert_eq!(s.answered(), Answered::Finished);
    }

    /// A track gone before its m-line was ever offered needs no stop; one gone mid-offer is
    /// stopped under the m-line that offer added.
    #[test]
    fn a_track_gone_early_needs_no_stop() {
        let a = Mid::from("a");
        assert!(!sub(SubState::ToOpen).track_gone());
        let mut s = sub(SubState::ToOpen);
        s.offered(a);
        assert!(s.track_gone());
        assert_eq!(s.wants(), Wants::Stop(a));
        let mut s = sub(SubState::Open(a));
        assert!(s.track_gone());
        assert!(s.track_gone(), "going twice changes nothing");
        assert_eq!(s.wants(), Wants::Stop(a));
    }
}
