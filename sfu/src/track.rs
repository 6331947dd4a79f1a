use std::time::{Duration, Instant};

use crate::ids::{ParticipantId, TrackId};
use crate::keyframe::KeyframeLimiter;
use crate::layer::{BitrateMeter, LayerView};
use crate::signal::{MediaKindName, TrackInfo, TrackSource};
use crate::transport::{MediaKind, Mid, Rid};

/// A layer is active while its packets keep arriving (a publisher pauses layers nobody needs,
/// or its encoder drops them under congestion).
const LAYER_ACTIVE: Duration = Duration::from_millis(1500);

/// At most this many simulcast layers per track (Chromium sends up to three).
pub const MAX_LAYERS: usize = 4;

#[derive(Debug)]
pub struct Layer {
    pub rid: Option<Rid>,
    pub meter: BitrateMeter,
    pub last_packet: Option<Instant>,
    pub keyframes: KeyframeLimiter,
}

impl Layer {
    fn new(rid: Option<Rid>) -> Layer {
        Layer {
            rid,
            meter: BitrateMeter::default(),
            last_packet: None,
            keyframes: KeyframeLimiter::default(),
        }
    }

    pub fn active(&self, now: Instant) -> bool {
        self.last_packet
            .is_some_and(|t| now.saturating_duration_since(t) < LAYER_ACTIVE)
    }
}

/// A published track: one m-line of a publisher with its layers (lowest quality first) and the
/// participants subscribed to it.
#[derive(Debug)]
pub struct Track {
    pub id: TrackId,
    pub publisher: ParticipantId,
    pub publisher_identity: String,
    pub mid: Mid,
    pub kind: MediaKind,
    pub source: TrackSource,
    pub layers: Vec<Layer>,
    pub subscribers: Vec<ParticipantId>,
    /// Dynacast: the layer set last announced to the publisher.
    pub announced: Option<[bool; MAX_LAYERS]>,
    /// Muted by its publisher or a moderator: nothing of it is forwarded (whatever the client
    /// keeps sending), and everyone is told.
    pub muted: bool,
}

impl Track {
    /// `rids` in quality order; empty for a single-layer track.
    pub fn new(
        id: TrackId,
        publisher: ParticipantId,
        publisher_identity: String,
        mid: Mid,
        kind: MediaKind,
        source: TrackSource,
        rids: Vec<Rid>,
    ) -> Track {
        let layers = if rids.is_empty() {
            vec![Layer::new(None)]
        } else {
            rids.into_iter()
                .take(MAX_LAYERS)
                .map(|r| Layer::new(Some(r)))
                .collect()
        };
        Track {
            id,
            publisher,
            publisher_identity,
            mid,
            kind,
            source,
            layers,
            subscribers: Vec::new(),
            announced: None,
            muted: false,
        }
    }

    pub fn is_simulcast(&self) -> bool {
        self.layers.len() > 1 || self.layers.first().is_some_and(|l| l.rid.is_some())
    }

    pub fn layer_index(&self, rid: Option<Rid>) -> Option<usize> {
        self.layers.iter().position(|l| l.rid == rid)
    }

    /// Layer views for the chooser. `assume_active` treats paused layers as available (for the
    /// dynacast decision of which layers to ask the publisher for).
    pub fn views(&self, now: Instant, assume_active: bool) -> ([LayerView; MAX_LAYERS], usize) {
        let mut v = [LayerView {
            active: false,
            bps: 0,
        }; MAX_LAYERS];
        for (i, l) in self.layers.iter().enumerate() {
            v[i] = LayerView {
                active: assume_active || l.active(now),
                bps: l.meter.bps(),
            };
        }
        (v, self.layers.len())
    }

    pub fn kind_name(&self) -> MediaKindName {
        match self.kind {
            MediaKind::Audio => MediaKindName::Audio,
            MediaKind::Video => MediaKindName::Video,
        }
    }

    pub fn info(&self) -> TrackInfo {
        TrackInfo {
            id: self.id,
            participant: self.publisher,
            identity: self.publisher_identity.clone(),
            kind: self.kind_name(),
            source: self.source,
            layers: self
                .layers
                .iter()
                .filter_map(|l| l.rid.map(|r| r.to_string()))
                .collect(),
            muted: self.muted,
        }
    }
}
