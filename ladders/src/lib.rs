//! Ladder profiles per geography: rungs (resolution, frame rate, bitrate, H.264 profile/level,
//! keyframe interval) plus audio, their validation, the shipped profiles and throughput
//! distributions, and the optimiser that picks rungs from measured rate-quality points.
#![deny(unsafe_code)]

pub mod geo;
mod h264_level;
mod profile;
mod shipped;
mod throughput;
pub mod tune;
mod validate;

pub use h264_level::{H264Level, H264Profile};
pub use profile::{AudioSpec, Ladder, Network, Rung};
pub use shipped::{shipped, shipped_names, shipped_throughput, SHIPPED};
pub use throughput::{Throughput, ThroughputError};
pub use validate::{ParseError, ValidationError, Violation, BPP_RANGE, THREE_G_MAX_LOWEST_KBPS};
