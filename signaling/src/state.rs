//! The state every handler shares: the SFU handle, token keys, sessions and the optional
//! services (egress, collaboration, chat, classroom). Handlers depend on it; it depends on
//! none of them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::http::HeaderMap;
use sfu::server::SfuHandle;
use sfu::ParticipantId;

use crate::error::ApiError;
use crate::token::{Claims, TokenKeys};

/// A WHIP or WHEP session resource (`/whip/{room}/{id}`).
#[derive(Debug, Clone)]
pub struct Session {
    pub room: String,
    pub participant: ParticipantId,
    pub identity: String,
    /// `whip` or `whep`: the path it was created under (and may only be ended under).
    pub kind: &'static str,
}

/// Writes a layer's metrics in Prometheus text.
pub type MetricsWriter = Arc<dyn Fn(&mut String) + Send + Sync>;

#[derive(Clone)]
pub struct AppState {
    pub sfu: SfuHandle,
    pub keys: TokenKeys,
    pub sessions: Arc<Mutex<HashMap<String, Session>>>,
    /// Room clients that may resume after their WebSocket dropped, by resume key.
    pub resumable: Arc<Mutex<HashMap<String, Resumable>>>,
    /// HLS egress and its signed origin, when storage is configured.
    pub egress: Option<egress::Egress>,
    /// Anyone may ask where a room's broadcast is (the segments stay signed).
    pub public_broadcasts: bool,
    /// Rooms' shared documents (`/collab/{room}`).
    pub collab: Option<collab::Collab>,
    /// Metrics of the layers around the router (the accept loop's refusals).
    pub extra_metrics: Option<MetricsWriter>,
    /// TURN servers and their shared secret, for clients behind firewalls.
    pub turn: crate::turn::TurnSettings,
    /// Room chat with history, over the room WebSocket.
    pub chat: Option<crate::chat::Chat>,
    /// Raised hands and polls, over the room WebSocket.
    pub classroom: Option<crate::classroom::Classroom>,
}

impl AppState {
    pub fn new(sfu: SfuHandle, keys: TokenKeys) -> AppState {
        AppState {
            sfu,
            keys,
            sessions: Arc::new(Mutex::new(HashMap::new())),
            resumable: Arc::new(Mutex::new(HashMap::new())),
            egress: None,
            public_broadcasts: false,
            collab: None,
            extra_metrics: None,
            turn: crate::turn::TurnSettings::default(),
            chat: None,
            classroom: None,
        }
    }

    /// The collaboration service, or 404 where it is off.
    pub fn collab(&self) -> Result<collab::Collab, ApiError> {
        self.collab
            .clone()
            .ok_or_else(|| ApiError::NotFound("collaboration is not enabled".into()))
    }

    pub fn with_chat(mut self, c: crate::chat::Chat) -> AppState {
        self.chat = Some(c);
        self
    }

    pub fn with_classroom(mut self, c: crate::classroom::Classroom) -> AppState {
        self.classroom = Some(c);
        self
    }

    pub fn with_collab(mut self, c: collab::Collab) -> AppState {
        self.collab = Some(c);
        self
    }

    pub fn with_egress(mut self, e: egress::Egress, public_broadcasts: bool) -> AppState {
        self.egress = Some(e);
        self.public_broadcasts = public_broadcasts;
        self
    }

    /// The bearer token, verified for `room` and holding the admin grant.
    pub fn admin(&self, headers: &HeaderMap, room: &str) -> Result<Claims, ApiError> {
        let c = self.bearer(headers, room)?;
        if !c.grants.admin {
            return Err(crate::token::TokenError::MissingGrant("admin").into());
        }
        Ok(c)
    }

    /// The bearer token from `Authorization`, verified for `room`.
    pub fn bearer(&self, headers: &HeaderMap, room: &str) -> Result<Claims, ApiError> {
        let raw = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let token = raw
            .strip_prefix("Bearer ")
            .or_else(|| raw.strip_prefix("bearer "))
            .unwrap_or("");
        Ok(self.keys.verify_for_room(token, room)?)
    }
}

/// Request bodies above this are refused (SDP offers are a few KiB).
pub(crate) const BODY_LIMIT: usize = 64 * 1024;

/// A room client that may resume on a new WebSocket.
#[derive(Debug, Clone)]
pub struct Resumable {
    pub participant: sfu::ParticipantId,
    pub room: String,
    pub identity: String,
    /// Bumped on each resume, so a stale grace timer does not remove a resumed participant.
    pub generation: u64,
}
