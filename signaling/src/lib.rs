//! aula's service layer: HTTP + WebSocket API over the SFU (tokens, WHIP/WHEP, room signaling,
//! pages, metrics) and the collaboration service's transports (`collab_ws`, `collab_dc`,
//! `teacher_ws`). Room logic lives in `sfu`, documents in `collab`; this crate only translates.
#![deny(unsafe_code)]

mod broadcasts;
pub mod chat;
pub mod classroom;
pub mod collab_bucket;
mod collab_dc;
mod collab_ws;
mod error;
mod http;
mod pages;
/// The token bucket every client stream is charged through (collab's pacing uses it too).
pub use collab::rate;
mod room_service;
mod rtc_ws;
pub mod server_msg;
mod state;
mod teacher_ws;
pub mod token;
pub mod turn;
mod whip;
mod ws_io;

pub use error::ApiError;
pub use http::router;
pub use state::AppState;
pub use token::{Claims, Grants, TokenError, TokenKeys};
