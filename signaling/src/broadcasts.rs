//! HLS delivery and egress over HTTP: the signed origin (`/s/{token}/...`), broadcast status
//! for viewers, and the egress job API for admins.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use egress::{Source, StartRequest};
use serde::Deserialize;

use crate::error::ApiError;
use crate::state::AppState;
use crate::token::TokenError;

fn egress(s: &AppState) -> Result<&egress::Egress, ApiError> {
    s.egress
        .as_ref()
        .ok_or_else(|| ApiError::Unavailable("egress is not configured on this server".into()))
}

/// `GET /s/{token}/{room}/{broadcast}/...`: token checked and stripped, object served.
pub async fn origin(State(s): State<AppState>, uri: Uri, headers: HeaderMap) -> Response {
    let Ok(e) = egress(&s) else {
        return (StatusCode::NOT_FOUND, "no HLS here\n").into_response();
    };
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let r = e.origin().handle(uri.path(), uri.query(), range).await;
    let mut b = Response::builder().status(r.status);
    for (k, v) in r.headers {
        b = b.header(k, v);
    }
    b.body(Body::from(r.body))
        .unwrap_or_else(|_| (StatusCode::INTERNAL_SERVER_ERROR, "bad response\n").into_response())
}

#[derive(Deserialize)]
pub struct BroadcastQuery {
    /// A country code or a ladder profile name; else the CDN's country header.
    geo: Option<String>,
}

/// `GET /api/broadcasts/{room}`: state and signed URLs for a viewer of the room.
pub async fn broadcast(
    State(s): State<AppState>,
    Path(room): Path<String>,
    axum::extract::Query(q): axum::extract::Query<BroadcastQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let e = egress(&s)?;
    if !s.public_broadcasts {
        let c = s.bearer(&headers, &room)?;
        if !c.grants.subscribe && !c.grants.admin {
            return Err(TokenError::MissingGrant("subscribe").into());
        }
    }
    let geo = q.geo.or_else(|| {
        headers
            .get(e.settings().geo_header.as_str())
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    });
    Ok(Json(e.broadcast(&room, geo.as_deref())).into_response())
}

/// Starts an egress job for a room participant's media (a WHIP broadcast, or by API) in the
/// background: tapping waits on the media thread, and the job finds out what is sent.
pub fn egress_from_room(
    sfu: sfu::server::SfuHandle,
    e: egress::Egress,
    room: String,
    who: sfu::TapWho,
    profile: Option<String>,
) {
    tokio::spawn(async move {
        if let Err(err) = start_from_room(&sfu, &e, &room, who, profile).await {
            tracing::warn!(%room, error = %err, "egress did not start");
        }
    });
}

async fn start_from_room(
    sfu: &sfu::server::SfuHandle,
    e: &egress::Egress,
    room: &str,
    who: sfu::TapWho,
    profile: Option<String>,
) -> Result<egress::JobStatus, ApiError> {
    let tap = sfu.tap(room, who).await?;
    e.start(
        StartRequest {
            room: room.to_string(),
            broadcast: None,
            profile,
        },
        Source::Room {
            tap,
            idle: std::time::Duration::from_secs(e.settings().idle_timeout_s),
            early: Vec::new(),
        },
    )
    .map_err(egress_error)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartBody {
    room: String,
    /// `room`: a participant's media (`identity`, else the room's broadcaster); `test`: a test
    /// pattern (no camera).
    source: String,
    identity: Option<String>,
    profile: Option<String>,
    broadcast: Option<String>,
    /// Test pattern only: end after this many seconds.
    seconds: Option<u64>,
}

/// `POST /api/egress` (admin): start a job.
pub async fn start(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let e = egress(&s)?;
    let req: StartBody = serde_json::from_slice(&body)
        .map_err(|err| ApiError::BadRequest(format!("bad egress request: {err}")))?;
    s.admin(&headers, &req.room)?;
    let source = match req.source.as_str() {
        "room" => {
            let who = match req.identity {
                Some(i) => sfu::TapWho::Identity(i),
                None => sfu::TapWho::Broadcaster,
            };
            let status = start_from_room(&s.sfu, e, &req.room, who, req.profile).await?;
            return Ok((StatusCode::CREATED, Json(status)).into_response());
        }
        "test" => Source::TestPattern {
            seconds: req.seconds,
            width: 640,
            height: 360,
        },
        other => {
            return Err(ApiError::BadRequest(format!(
                "unknown source {other:?} (room, test)"
            )))
        }
    };
    let status = e
        .start(
            StartRequest {
                room: req.room,
                broadcast: req.broadcast,
                profile: req.profile,
            },
            source,
        )
        .map_err(egress_error)?;
    Ok((StatusCode::CREATED, Json(status)).into_response())
}

/// `GET /api/egress` (admin of `*`): every job.
pub async fn list(State(s): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let e = egress(&s)?;
    s.admin(&headers, "*")?;
    Ok(Json(e.jobs()).into_response())
}

/// `GET /api/egress/{id}` (admin).
pub async fn get(
    State(s): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (_, j) = admin_job(&s, &id, &headers)?;
    Ok(Json(j).into_response())
}

/// `DELETE /api/egress/{id}` (admin): end the job; the recording is finalised.
pub async fn stop(
    State(s): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (e, _) = admin_job(&s, &id, &headers)?;
    e.stop(&id).map_err(egress_error)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A job, for a caller holding an admin token for its room.
fn admin_job<'a>(
    s: &'a AppState,
    id: &str,
    headers: &HeaderMap,
) -> Result<(&'a egress::Egress, egress::JobStatus), ApiError> {
    let e = egress(s)?;
    let j = e
        .job(id)
        .ok_or_else(|| ApiError::NotFound(format!("no egress job {id}")))?;
    s.admin(headers, &j.room)?;
    Ok((e, j))
}

fn egress_error(e: egress::EgressError) -> ApiError {
    use egress::EgressError as E;
    match e {
        E::AlreadyLive(..) => ApiError::Conflict(e.to_string()),
        E::NoSuchJob(_) => ApiError::NotFound(e.to_string()),
        E::UnknownProfile(..) | E::BadName(_) | E::Resume(..) => {
            ApiError::BadRequest(e.to_string())
        }
        E::Storage(_) | E::Transcode(_) | E::Queue(_) => ApiError::Unavailable(e.to_string()),
    }
}
