use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, on, post, MethodFilter};
use axum::Router;
use sfu::server::SfuHandle;
use sfu::ParticipantId;
use tower_http::cors::{Any, CorsLayer};

use crate::error::ApiError;
use crate::token::{Claims, TokenKeys};
use crate::{broadcasts, pages, rtc_ws, whip};

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
    pub resumable: Arc<Mutex<HashMap<String, crate::rtc_ws::Resumable>>>,
    /// HLS egress and its signed origin, when storage is configured.
    pub egress: Option<egress::Egress>,
    /// Anyone may ask where a room's broadcast is (the segments stay signed).
    pub public_broadcasts: bool,
    /// Rooms' shared documents (`/collab/{room}`).
    pub collab: Option<crate::collab::Collab>,
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
    pub fn collab(&self) -> Result<crate::collab::Collab, ApiError> {
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

    pub fn with_collab(mut self, c: crate::collab::Collab) -> AppState {
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

/// The methods a WebSocket upgrade arrives with: GET (HTTP/1.1), CONNECT (HTTP/2, RFC 8441).
fn ws_methods() -> MethodFilter {
    MethodFilter::GET.or(MethodFilter::CONNECT)
}

pub fn router(state: AppState) -> Router {
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods(Any)
        .allow_headers(Any)
        .expose_headers([
            axum::http::header::LOCATION,
            axum::http::header::CONTENT_RANGE,
            axum::http::header::CONTENT_LENGTH,
        ]);
    Router::new()
        .route("/", get(pages::index))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/room/{room}", get(pages::room))
        .route("/broadcast/{room}", get(pages::broadcast))
        .route("/live/{room}", get(pages::live))
        .route("/assets/{name}", get(pages::asset))
        // GET for WebSockets over HTTP/1.1, CONNECT for RFC 8441's over HTTP/2.
        .route("/rtc/{room}", on(ws_methods(), rtc_ws::upgrade))
        .route(
            "/collab/{room}",
            on(ws_methods(), crate::collab::ws::upgrade),
        )
        .route(
            "/collab/{room}/teacher",
            get(crate::collab::teacher::upgrade),
        )
        .route("/whip/{room}", post(whip::whip_post))
        .route(
            "/whip/{room}/{session}",
            axum::routing::delete(whip::whip_delete).patch(whip::session_patch),
        )
        .route("/whep/{room}", post(whip::whep_post))
        .route(
            "/whep/{room}/{session}",
            axum::routing::delete(whip::whep_delete).patch(whip::session_patch),
        )
        .route("/api/rooms/{room}", get(room_info))
        .route("/api/rooms/{room}/ice-servers", get(ice_servers))
        .route("/api/rooms", get(crate::room_service::list))
        .route(
            "/api/rooms/{room}/participants/{id}",
            axum::routing::delete(crate::room_service::remove),
        )
        .route(
            "/api/rooms/{room}/tracks/{id}/mute",
            post(crate::room_service::mute),
        )
        .route("/api/rooms/{room}/chat", post(crate::room_service::chat))
        .route("/api/rooms/{room}/data", post(crate::room_service::data))
        .route("/api/broadcasts/{room}", get(broadcasts::broadcast))
        .route("/api/egress", get(broadcasts::list).post(broadcasts::start))
        .route(
            "/api/egress/{id}",
            get(broadcasts::get).delete(broadcasts::stop),
        )
        .route("/s/{*path}", get(broadcasts::origin))
        .route("/watch/{room}", get(pages::watch))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(cors)
        .with_state(state)
}

async fn metrics(axum::extract::State(s): axum::extract::State<AppState>) -> impl IntoResponse {
    let mut out = String::new();
    s.sfu.metrics().render(&mut out);
    if let Some(e) = &s.egress {
        e.render_metrics(&mut out);
    }
    if let Some(c) = &s.collab {
        c.render_metrics(&mut out);
    }
    if let Some(c) = &s.chat {
        c.render_metrics(&mut out);
    }
    if let Some(f) = &s.extra_metrics {
        f(&mut out);
    }
    let sessions = s.sessions.lock().map(|m| m.len()).unwrap_or(0);
    out.push_str(&format!(
        "# TYPE aula_whip_whep_sessions gauge\naula_whip_whep_sessions {sessions}\n"
    ));
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        out,
    )
}

/// The TURN relays for this token's identity, with fresh credentials (`[]` without `turn.*`):
/// what `joined` carries, for WHIP/WHEP pages that need them before their offer.
async fn ice_servers(
    axum::extract::State(s): axum::extract::State<AppState>,
    axum::extract::Path(room): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    let claims = s.bearer(&headers, &room)?;
    Ok(axum::Json(serde_json::json!({
        "ice_servers": s.turn.ice_servers(&claims.sub),
    })))
}

/// Who is in a room and what they publish; any valid token for the room may ask.
async fn room_info(
    axum::extract::State(s): axum::extract::State<AppState>,
    axum::extract::Path(room): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    s.bearer(&headers, &room)?;
    let (participants, tracks) = s.sfu.room(room.clone()).await?;
    Ok(axum::Json(serde_json::json!({
        "room": room,
        "participants": participants,
        "tracks": tracks,
    })))
}
