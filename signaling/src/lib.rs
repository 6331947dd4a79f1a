//! aula's service layer: HTTP + WebSocket API over the SFU (tokens, WHIP/WHEP, room signaling,
//! pages, metrics). Room logic lives in `sfu`; this crate only translates.
#![deny(unsafe_code)]

mod broadcasts;
pub mod chat;
pub mod classroom;
pub mod collab;
mod collab_ws;
mod error;
mod http;
mod pages;
pub mod rate;
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
