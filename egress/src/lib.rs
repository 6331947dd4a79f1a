//! Egress: a broadcast's RTP through the transcoder (the room's ladder) into LL-HLS objects in
//! storage, with status, metrics and signed viewer URLs. A job is one broadcast: a unique key
//! prefix `{room}/{broadcast}`; a restarted job continues that prefix after a discontinuity.
#![deny(unsafe_code)]

mod cpu;
pub mod encode_cost;
mod error;
pub mod frame_size;
mod ids;
mod job;
pub mod job_core;
mod profiles;
mod queue;
mod remote;
mod renditions;
mod service;
mod settings;
mod source;
pub mod speed;
mod status;
mod webhook;
mod worker;

pub use error::EgressError;
pub use ids::{new_broadcast_id, new_epoch, valid_name};
pub use profiles::ladder;
pub use queue::QueueSettings;
pub use renditions::{rendition_infos, rendition_name};
pub use service::{Broadcast, Egress, StartRequest, FINISHED_JOBS_KEPT};
pub use settings::HlsSettings;
pub use source::{RtpPacket, Source};
pub use status::{JobState, JobStatus};
pub use webhook::Webhooks;
pub use worker::Worker;
