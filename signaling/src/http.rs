//! The router: every route of the HTTP API, pages and WebSockets, and the few handlers small
//! enough to live beside it (metrics, ICE servers, room info).

use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, on, post, MethodFilter};
use axum::Router;
use tower_http::cors::{Any, CorsLayer};

use crate::error::ApiError;
use crate::state::{AppState, BODY_LIMIT};
use crate::{broadcasts, pages, rtc_ws, whip};

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
            on(ws_methods(), crate::collab_ws::upgrade),
        )
        .route("/collab/{room}/teacher", get(crate::teacher_ws::upgrade))
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
            "/api/rooms/{room}/participants/{id}/group",
            post(crate::room_service::group),
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
    metrics_text::Exposition::new(&mut out).gauge("aula_whip_whep_sessions", sessions);
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
