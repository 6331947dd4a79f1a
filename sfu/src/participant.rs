use std::time::Instant;

use crate::error::SfuError;
use crate::ids::{ParticipantId, TrackId};
use crate::layer::Quality;
use crate::sdp_inspect::inspect_offer;
use crate::signal::{ParticipantInfo, PeerKind, Permissions, TrackSource};
use crate::subscription::Subscription;
use crate::transport::{self, ChannelId, MediaKind, Mid, Rtc, SdpPendingOffer};

/// What an offer must contain to be accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    Publish,
    Subscribe,
    Any,
}

/// One peer connection in a room and what it publishes and receives.
pub struct Participant {
    pub id: ParticipantId,
    pub identity: String,
    pub kind: PeerKind,
    pub perms: Permissions,
    pub rtc: Rtc,
    /// Tracks this participant publishes, by their incoming m-line.
    pub published: Vec<(Mid, TrackId)>,
    /// What the client said its m-lines carry (`sources` in its offers), read when a track
    /// is published; a mid not named here is a camera or a microphone.
    pub sources: Vec<(Mid, TrackSource)>,
    pub subs: Vec<Subscription>,
    /// WHEP m-lines not yet bound to a track (no publisher of that kind yet).
    pub unbound: Vec<(Mid, MediaKind)>,
    /// A server offer awaiting the client's answer.
    pub pending: Option<SdpPendingOffer>,
    /// The client's first offer was accepted (server offers may follow).
    pub negotiated: bool,
    /// The `yjs` data channel: the room's shared document (handled by the signaling layer).
    pub app: Option<ChannelId>,
    pub created: Instant,
    pub last_rx: Option<Instant>,
    pub connected: bool,
    /// Latest send-side bandwidth estimate (TWCC) towards this participant.
    pub bwe_bps: Option<u64>,
    pub default_quality: Quality,
    /// The breakout this room client is in; `None` is the main room. Media flows only between
    /// participants of one group.
    pub group: Option<String>,
    pub next_timeout: Option<Instant>,
    /// Earliest timer already queued for this participant (avoids flooding the timer heap).
    pub scheduled: Option<Instant>,
    pub dirty: bool,
}

impl Participant {
    pub fn new(
        id: ParticipantId,
        identity: String,
        kind: PeerKind,
        perms: Permissions,
        rtc: Rtc,
        now: Instant,
        default_quality: Quality,
    ) -> Participant {
        Participant {
            id,
            identity,
            kind,
            perms,
            rtc,
            published: Vec::new(),
            sources: Vec::new(),
            subs: Vec::new(),
            unbound: Vec::new(),
            pending: None,
            negotiated: false,
            app: None,
            created: now,
            last_rx: None,
            connected: false,
            bwe_bps: None,
            default_quality,
            group: None,
            next_timeout: None,
            scheduled: None,
            dirty: false,
        }
    }

    pub fn info(&self) -> ParticipantInfo {
        ParticipantInfo {
            id: self.id,
            identity: self.identity.clone(),
            kind: self.kind,
            group: self.group.clone(),
        }
    }

    pub fn track_for_mid(&self, mid: Mid) -> Option<TrackId> {
        self.published
            .iter()
            .find(|(m, _)| *m == mid)
            .map(|(_, t)| *t)
    }

    pub fn sub_for_mid(&self, mid: Mid) -> Option<&Subscription> {
        self.subs.iter().find(|s| s.sending_mid() == Some(mid))
    }

    pub fn sub_mut(&mut self, track: TrackId) -> Option<&mut Subscription> {
        self.subs.iter_mut().find(|s| s.track == track)
    }

    /// The source declared for an m-line, if it fits the track's kind.
    pub fn source_of(&self, mid: Mid, kind: MediaKind) -> TrackSource {
        let kind = match kind {
            MediaKind::Audio => crate::signal::MediaKindName::Audio,
            MediaKind::Video => crate::signal::MediaKindName::Video,
        };
        self.sources
            .iter()
            .find(|(m, s)| *m == mid && s.kind() == kind)
            .map_or(TrackSource::default_for(kind), |(_, s)| *s)
    }

    /// Checks an offer against what is expected and the token's grants, then accepts it.
    /// Touches nothing outside this participant, so a refused first offer leaves no trace.
    /// Returns the answer and the mids the offer no longer sends on.
    pub fn accept_offer(
        &mut self,
        sdp: &str,
        expect: Expect,
    ) -> Result<(String, Vec<String>), SfuError> {
        let summary = inspect_offer(sdp)?;
        if summary.media > 0 && summary.usable == 0 {
            return Err(SfuError::NoUsableCodec);
        }
        match expect {
            Expect::Publish if summary.sends == 0 => return Err(SfuError::NoMedia("publish")),
            Expect::Subscribe if summary.receives == 0 => return Err(SfuError::NoMedia("receive")),
            Expect::Any if summary.media == 0 && !summary.data => {
                return Err(SfuError::NoMedia("exchange"))
            }
            _ => {}
        }
        if summary.sends > 0 && !self.perms.publish {
            return Err(SfuError::Forbidden("token has no publish grant"));
        }
        if summary.receives > 0 && summary.sends == 0 && !self.perms.subscribe {
            return Err(SfuError::Forbidden("token has no subscribe grant"));
        }
        let offer = transport::parse_offer(sdp)?;
        let answer = self
            .rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| SfuError::Negotiation(e.to_string()))?;
        self.pending = None;
        for s in &mut self.subs {
            s.rolled_back();
        }
        self.negotiated = true;
        Ok((answer.to_sdp_string(), summary.silent_mids))
    }
}
