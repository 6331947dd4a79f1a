//! WHIP ingest and WHEP playback (RFC 9725 shape): POST an SDP offer with a bearer token,
//! get `201 Created`, the answer and a `Location`; DELETE that location to end the session.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use rand::Rng;
use serde::Deserialize;
use sfu::{JoinRequest, PeerKind, Permissions, Quality};
use tracing::info;

use crate::error::ApiError;
use crate::state::{AppState, Session};
use crate::token::TokenError;

#[derive(Debug, Deserialize, Default)]
pub struct WhipQuery {
    /// Ladder profile of the HLS egress this broadcast starts.
    pub profile: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
pub struct WhepQuery {
    /// `low`, `medium` or `high`: the simulcast layer a WHEP viewer wants.
    pub quality: Option<String>,
}

/// How long a client may take to send its offer once its token was accepted.
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The SDP offer, read only after the token was checked (an unauthenticated client cannot hold
/// a half-sent body open), within `BODY_TIMEOUT` and the router's body limit.
async fn sdp_body(headers: &HeaderMap, body: Body) -> Result<String, ApiError> {
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ctype.starts_with("application/sdp") {
        return Err(ApiError::UnsupportedMedia("application/sdp"));
    }
    let bytes = tokio::time::timeout(
        BODY_TIMEOUT,
        axum::body::to_bytes(body, crate::state::BODY_LIMIT),
    )
    .await
    .map_err(|_| ApiError::BadRequest(format!("offer not received within {BODY_TIMEOUT:?}")))?
    .map_err(|e| ApiError::TooLarge(format!("offer refused: {e}")))?;
    String::from_utf8(bytes.to_vec())
        .map_err(|_| ApiError::BadRequest("malformed SDP: not UTF-8".into()))
}

/// aula is ICE-lite with its one candidate in the answer and answers PATCH with 405, so the
/// answer must not invite trickle (RFC 9725 section 4.3.1).
fn without_trickle(answer: String) -> String {
    answer
        .split_inclusive('\n')
        .filter(|l| !l.trim_end().eq_ignore_ascii_case("a=ice-options:trickle"))
        .collect()
}

fn session_id() -> String {
    let n: u128 = rand::rng().random();
    format!("{n:032x}")
}

pub async fn whip_post(
    State(s): State<AppState>,
    Path(room): Path<String>,
    Query(q): Query<WhipQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let claims = s.bearer(&headers, &room)?;
    if !claims.grants.publish {
        return Err(TokenError::MissingGrant("publish").into());
    }
    if let Some(p) = &q.profile {
        egress::ladder(p).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    }
    let sdp = sdp_body(&headers, body).await?;
    let (r, pid) = start(
        &s,
        "whip",
        room.clone(),
        claims.sub,
        PeerKind::Whip,
        sdp,
        Quality::High,
        claims.grants,
    )
    .await?;
    if let Some(e) = s.egress.clone().filter(|e| e.settings().auto_egress) {
        crate::broadcasts::egress_from_room(
            s.sfu.clone(),
            e,
            room,
            sfu::TapWho::Participant(pid),
            q.profile,
        );
    }
    Ok(r)
}

pub async fn whep_post(
    State(s): State<AppState>,
    Path(room): Path<String>,
    Query(q): Query<WhepQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let claims = s.bearer(&headers, &room)?;
    if !claims.grants.subscribe {
        return Err(TokenError::MissingGrant("subscribe").into());
    }
    let quality = match q.quality.as_deref() {
        None => Quality::High,
        Some(v) => Quality::parse(v).ok_or_else(|| {
            ApiError::BadRequest(format!("unknown quality {v:?} (low, medium, high)"))
        })?,
    };
    let sdp = sdp_body(&headers, body).await?;
    let (r, _) = start(
        &s,
        "whep",
        room,
        claims.sub,
        PeerKind::Whep,
        sdp,
        quality,
        claims.grants,
    )
    .await?;
    Ok(r)
}

#[allow(clippy::too_many_arguments)]
async fn start(
    s: &AppState,
    base: &'static str,
    room: String,
    identity: String,
    kind: PeerKind,
    sdp: String,
    quality: Quality,
    grants: crate::token::Grants,
) -> Result<(Response, sfu::ParticipantId), ApiError> {
    // The SFU drops this sender when the participant ends (DELETE, silence, failed transport),
    // which is when the session resource goes away too.
    let (ended_tx, mut ended_rx) = tokio::sync::mpsc::unbounded_channel::<sfu::Signal>();
    let joined = s
        .sfu
        .join(
            JoinRequest {
                room: room.clone(),
                identity: identity.clone(),
                kind,
                perms: Permissions {
                    publish: grants.publish && kind == PeerKind::Whip,
                    subscribe: grants.subscribe,
                    publish_data: false,
                },
                offer: Some(sdp),
                quality,
            },
            Some(ended_tx),
        )
        .await?;
    let answer = joined
        .answer
        .ok_or_else(|| ApiError::BadRequest("no answer".into()))?;
    let id = session_id();
    if let Ok(mut m) = s.sessions.lock() {
        m.insert(
            id.clone(),
            Session {
                room: room.clone(),
                participant: joined.participant,
                identity: identity.clone(),
                kind: base,
            },
        );
    }
    info!(%room, %identity, participant = %joined.participant, kind = base, "session started");
    let (sessions, sid) = (s.sessions.clone(), id.clone());
    tokio::spawn(async move {
        while let Some(sig) = ended_rx.recv().await {
            if matches!(sig, sfu::Signal::Closed { .. }) {
                break;
            }
        }
        if let Ok(mut m) = sessions.lock() {
            m.remove(&sid);
        }
    });
    let location = format!("/{base}/{room}/{id}");
    let mut r = (StatusCode::CREATED, without_trickle(answer)).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/sdp"),
    );
    if let Ok(v) = HeaderValue::from_str(&location) {
        h.insert(header::LOCATION, v);
    }
    for link in s.turn.link_headers(&identity) {
        if let Ok(v) = HeaderValue::from_str(&link) {
            h.append(header::LINK, v);
        }
    }
    Ok((r, joined.participant))
}

pub async fn whip_delete(
    s: State<AppState>,
    path: Path<(String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    session_delete("whip", s, path, headers).await
}

pub async fn whep_delete(
    s: State<AppState>,
    path: Path<(String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    session_delete("whep", s, path, headers).await
}

/// Ends a session for its own bearer (the identity that started it) or an admin: a viewer
/// that learns a broadcaster's session id cannot end the broadcast.
async fn session_delete(
    base: &'static str,
    State(s): State<AppState>,
    Path((room, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let claims = s.bearer(&headers, &room)?;
    let session = {
        let mut m = s
            .sessions
            .lock()
            .map_err(|_| ApiError::Unavailable("session table unavailable".into()))?;
        let Some(found) = m
            .get(&id)
            .filter(|x| x.room == room && x.kind == base)
            .cloned()
        else {
            return Err(ApiError::NotFound("no such session".into()));
        };
        if found.identity != claims.sub && !claims.grants.admin {
            return Err(ApiError::Forbidden(
                "only the session's own identity (or an admin) may end it".into(),
            ));
        }
        m.remove(&id);
        found
    };
    info!(%room, identity = %session.identity, by = %claims.sub, participant = %session.participant, "session ended by DELETE");
    s.sfu.leave(session.participant);
    Ok(StatusCode::OK)
}

/// Trickle ICE and ICE restarts over PATCH are not offered: aula is ICE-lite with its one
/// candidate in the answer, so clients need not trickle (RFC 9725 allows 405 here).
pub async fn session_patch() -> impl IntoResponse {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [(header::ALLOW, "DELETE")],
        "trickle ICE is not needed: the answer carries the server's only candidate\n",
    )
}
