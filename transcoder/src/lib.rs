//! Live RTP (VP8 or H.264 video, Opus audio) into an ABR ladder of CMAF fragments, with
//! GStreamer: jitter buffer -> depay -> decode once -> per rendition scale, frame-rate cap and
//! x264 -> `cmafmux` -> appsink; Opus -> AAC-LC in its own CMAF track. Keyframes are forced at the
//! same PTS in every rendition on a shared segment grid, and fragments are split into parts
//! (CMAF chunks) for LL-HLS.
#![deny(unsafe_code)]

pub mod cost;
mod error;
mod init;
mod live;
mod output;
pub mod probe;
mod rtp_input;
pub mod scaling;
mod schedule;
mod spec;
pub mod testsrc;
pub mod x264;

pub use error::TranscodeError;
pub use init::init;
pub use live::{Stats, Transcoder};
pub use output::{Event, InitSegment, Part, RenditionId};
pub use rtp_input::{Reject, RtpInput};
pub use schedule::{FpsCap, Grid, PartSplitter, Split};
pub use spec::{AudioInput, TranscodeSpec, VideoCodec, VideoInput};
