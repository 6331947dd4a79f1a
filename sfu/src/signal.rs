use serde::Serialize;

use crate::ids::{ParticipantId, TrackId};

/// How a participant reached the room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerKind {
    /// A room client on the `/rtc/{room}` WebSocket: publishes, subscribes, renegotiates.
    Room,
    /// A WHIP publisher (one offer, no renegotiation).
    Whip,
    /// A WHEP viewer (one offer, no renegotiation).
    Whep,
}

/// Grants from the access token that the SFU enforces.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Permissions {
    pub publish: bool,
    pub subscribe: bool,
    pub publish_data: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaKindName {
    Audio,
    Video,
}

/// What a track carries, as its publisher declares it (the room page: `sources` in its offer);
/// a track nobody declared is its kind's camera or microphone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrackSource {
    Camera,
    Microphone,
    /// A shared screen or window (`getDisplayMedia`'s video).
    Screen,
    /// The audio a screen share carries (a tab's or the system's, when the browser gives it).
    ScreenAudio,
}

impl TrackSource {
    /// The source of an undeclared track of this kind.
    pub fn default_for(kind: MediaKindName) -> TrackSource {
        match kind {
            MediaKindName::Audio => TrackSource::Microphone,
            MediaKindName::Video => TrackSource::Camera,
        }
    }

    pub fn kind(self) -> MediaKindName {
        match self {
            TrackSource::Camera | TrackSource::Screen => MediaKindName::Video,
            TrackSource::Microphone | TrackSource::ScreenAudio => MediaKindName::Audio,
        }
    }

    pub fn is_screen(self) -> bool {
        matches!(self, TrackSource::Screen | TrackSource::ScreenAudio)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ParticipantInfo {
    pub id: ParticipantId,
    pub identity: String,
    pub kind: PeerKind,
    /// Its breakout; absent in the main room.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TrackInfo {
    pub id: TrackId,
    pub participant: ParticipantId,
    pub identity: String,
    pub kind: MediaKindName,
    pub source: TrackSource,
    /// Simulcast layer rids, lowest quality first; empty when not simulcast.
    pub layers: Vec<String>,
    /// Nothing of it is forwarded (its publisher or a moderator muted it).
    pub muted: bool,
}

/// Who left, in a [`Signal::Presence`] batch.
#[derive(Debug, Clone, Serialize)]
pub struct Departure {
    pub participant: ParticipantId,
    pub identity: String,
}

/// A room's lifecycle, for webhooks: `room_started`, `room_finished`, `participant_joined`,
/// `participant_left`, `track_published`, `track_unpublished`.
#[derive(Debug, Clone, Serialize)]
pub struct RoomEvent {
    #[serde(skip)]
    pub event: &'static str,
    pub room: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub participant: Option<ParticipantInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub track: Option<TrackInfo>,
}

/// What a mute names: one track, or the sender's own tracks of a source (a client need not know
/// its own track ids; "mute mic" is its microphone, not the audio of its screen share).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MuteTarget {
    Track(crate::ids::TrackId),
    Own(TrackSource),
}

/// An application message for a room's clients (the room service API's "send data").
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DataMessage {
    /// The identity of the admin token that sent it.
    pub from: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    pub payload: String,
}

/// Messages from the SFU to one participant's signaling connection.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Signal {
    /// A server-initiated renegotiation (new or removed subscriptions).
    Offer {
        sdp: String,
    },
    ParticipantJoined {
        participant: ParticipantInfo,
    },
    ParticipantLeft {
        participant: ParticipantId,
        identity: String,
    },
    /// Presence in a large room (`presence_batch_above` room clients): who joined and who left
    /// since the last batch, at most one batch per [`crate::PRESENCE_INTERVAL`], in place of
    /// `participant_joined`/`participant_left`. Apply `joined`, then `left`.
    Presence {
        joined: Vec<ParticipantInfo>,
        left: Vec<Departure>,
    },
    TrackPublished {
        track: TrackInfo,
    },
    TrackUnpublished {
        track: TrackId,
        participant: ParticipantId,
    },
    /// A subscription is negotiated: media for `track` arrives on transceiver `mid`.
    Subscribed {
        track: TrackId,
        participant: ParticipantId,
        mid: String,
    },
    /// A participant moved to a breakout (`group`) or back to the main room (`None`): media
    /// now flows only between participants of one group, on the connections they have.
    Grouped {
        participant: ParticipantId,
        group: Option<String>,
        by: String,
    },
    /// Active speakers, loudest first.
    Speakers {
        participants: Vec<ParticipantId>,
    },
    /// Dynacast: the simulcast layers of a published track someone watches; others may pause.
    LayersNeeded {
        track: TrackId,
        mid: String,
        rids: Vec<String>,
    },
    /// A track was muted or unmuted (`by`: the identity that did it).
    TrackMuted {
        track: TrackId,
        participant: ParticipantId,
        kind: MediaKindName,
        source: TrackSource,
        muted: bool,
        by: String,
    },
    /// An application message from the room service API.
    Data(DataMessage),
    /// The SFU ended this participant (vanished peer, failed transport, kicked).
    Closed {
        reason: String,
    },
    /// The participant opened its `yjs` data channel.
    AppOpen,
    /// A message on the participant's `yjs` data channel (for the signaling layer, not the
    /// client's JSON socket).
    #[serde(skip_serializing)]
    AppData {
        data: Vec<u8>,
    },
}
