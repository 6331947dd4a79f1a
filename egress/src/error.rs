use thiserror::Error;

#[derive(Debug, Error)]
pub enum EgressError {
    #[error("unknown ladder profile {0:?} (shipped: {1})")]
    UnknownProfile(String, String),
    #[error("bad room or broadcast name {0:?}: use letters, digits, '-', '_' and '.'")]
    BadName(String),
    #[error("room {0} already has a live egress job ({1})")]
    AlreadyLive(String, String),
    #[error("broadcast {0} cannot be continued: {1}")]
    Resume(String, String),
    #[error("storage: {0}")]
    Storage(#[from] hls::StorageError),
    #[error("transcoder: {0}")]
    Transcode(#[from] transcoder::TranscodeError),
    #[error("no such job {0}")]
    NoSuchJob(String),
    #[error("egress queue (redis): {0}")]
    Queue(String),
}
