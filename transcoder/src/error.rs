use thiserror::Error;

#[derive(Debug, Error)]
pub enum TranscodeError {
    #[error("GStreamer could not start: {0}")]
    Init(String),
    #[error("GStreamer element {element:?} is missing; install {package} (scripts/install-deps.sh does)")]
    MissingElement {
        element: &'static str,
        package: &'static str,
    },
    #[error("invalid transcode spec: {0}")]
    Spec(String),
    #[error("building the pipeline failed: {0}")]
    Pipeline(String),
    #[error("{element}: {message}")]
    Runtime { element: String, message: String },
    #[error("probe encode failed: {0}")]
    Probe(String),
}

impl From<gstreamer::glib::BoolError> for TranscodeError {
    fn from(e: gstreamer::glib::BoolError) -> Self {
        TranscodeError::Pipeline(e.to_string())
    }
}

impl From<gstreamer::glib::Error> for TranscodeError {
    fn from(e: gstreamer::glib::Error) -> Self {
        TranscodeError::Pipeline(e.to_string())
    }
}

impl From<gstreamer::StateChangeError> for TranscodeError {
    fn from(e: gstreamer::StateChangeError) -> Self {
        TranscodeError::Pipeline(format!("state change failed: {e}"))
    }
}
