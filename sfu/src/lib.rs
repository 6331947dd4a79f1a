//! aula's selective forwarding unit.
//!
//! The core ([`Sfu`]) is sans-IO: it is fed datagrams and time and drained of datagrams and
//! [`Signal`]s, so tests drive rooms in virtual time without sockets. [`server`] puts it on one
//! UDP port and one thread, and hands the async world a [`server::SfuHandle`].
//!
//! Nouns used everywhere: Room, Participant, Track, Subscription, Layer.
#![deny(unsafe_code)]

mod core;
mod error;
pub mod hot_path;
mod ids;
mod keyframe;
pub mod layer;
mod metrics;
mod outbox;
mod participant;
mod room;
pub mod sdp_inspect;
pub mod server;
mod signal;
pub mod speaker;
mod subscription;
pub mod tap;
mod time_rewrite;
mod track;
mod transport;

pub use crate::core::{JoinRequest, Joined, Sfu, SfuConfig, TapWho};
pub use crate::outbox::Datagram;
pub use crate::room::PRESENCE_INTERVAL;
pub use error::SfuError;
pub use ids::{ParticipantId, TrackId};
pub use layer::Quality;
pub use metrics::SfuMetrics;
pub use signal::{
    DataMessage, Departure, MediaKindName, MuteTarget, ParticipantInfo, PeerKind, Permissions,
    RoomEvent, Signal, TrackInfo, TrackSource,
};
