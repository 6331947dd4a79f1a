use thiserror::Error;

/// Errors the SFU reports to signaling; each maps to a clear client-facing message.
#[derive(Debug, Error)]
pub enum SfuError {
    #[error("malformed SDP: {0}")]
    BadSdp(String),
    #[error("offer has no usable codec (aula takes opus, VP8 and H264)")]
    NoUsableCodec,
    #[error("offer has no media to {0}")]
    NoMedia(&'static str),
    #[error("permission denied: {0}")]
    Forbidden(&'static str),
    #[error("unknown participant")]
    UnknownParticipant,
    #[error("bad breakout name: {0}")]
    BadGroup(&'static str),
    #[error("unknown track")]
    UnknownTrack,
    #[error("no such room (nobody is in it)")]
    UnknownRoom,
    #[error("no offer is pending for this answer")]
    NoPendingOffer,
    #[error("bad ICE candidate: {0}")]
    BadCandidate(String),
    #[error("room is full ({0} participants)")]
    RoomFull(usize),
    #[error("negotiation failed: {0}")]
    Negotiation(String),
    #[error("room {0} has no publisher to take media from")]
    NothingToTap(String),
    #[error("the media engine has stopped")]
    EngineStopped,
}
