//! The room service API for applications (admin tokens): list rooms, remove a participant,
//! mute a track, post to a room's chat, send data to its clients. What a moderator does from
//! the room page, from a backend.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use crate::error::ApiError;
use crate::state::AppState;

/// `GET /api/rooms` (admin of `*`): every room with its participant and track counts.
pub async fn list(State(s): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    s.admin(&headers, "*")?;
    let rooms: Vec<_> = s
        .sfu
        .rooms()
        .await?
        .into_iter()
        .map(|(room, participants, tracks)| {
            serde_json::json!({"room": room, "participants": participants, "tracks": tracks})
        })
        .collect();
    Ok(Json(serde_json::json!({ "rooms": rooms })).into_response())
}

/// `DELETE /api/rooms/{room}/participants/{id}` (admin): the participant is told "removed by a
/// moderator" and leaves.
pub async fn remove(
    State(s): State<AppState>,
    Path((room, id)): Path<(String, u64)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    s.admin(&headers, &room)?;
    s.sfu.remove_in(&room, sfu::ParticipantId(id)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupPost {
    group: Option<String>,
}

/// `POST /api/rooms/{room}/participants/{id}/group` (admin) `{"group":"b1"|null}`: moves a
/// room client into a breakout or back to the main room (everyone gets `grouped`).
pub async fn group(
    State(s): State<AppState>,
    Path((room, id)): Path<(String, u64)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    s.admin(&headers, &room)?;
    let g: GroupPost = json_body(&body)?;
    s.sfu
        .group_in(&room, sfu::ParticipantId(id), g.group)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /api/rooms/{room}/tracks/{id}/mute` (admin): the track stops being forwarded and
/// everyone is told. Only its owner unmutes it.
pub async fn mute(
    State(s): State<AppState>,
    Path((room, id)): Path<(String, u64)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    s.admin(&headers, &room)?;
    s.sfu.mute_in(&room, sfu::TrackId(id)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A request body as JSON, or `400` with serde's reason.
fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("malformed JSON body: {e}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatPost {
    text: String,
    #[serde(default)]
    id: Option<String>,
}

/// `POST /api/rooms/{room}/chat` (admin) `{"text":..,"id"?:..}`: a chat message from the
/// token's identity, numbered and stored like any other; `201 {"seq":N}` once it is durable.
pub async fn chat(
    State(s): State<AppState>,
    Path(room): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let c = s.admin(&headers, &room)?;
    let chat = s
        .chat
        .clone()
        .ok_or_else(|| ApiError::NotFound("chat is not enabled".into()))?;
    let post: ChatPost = json_body(&body)?;
    let r = chat
        .room(&room)
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    let m = r
        .send(chat.settings(), &c.sub, 0, post.text, post.id)
        .await
        .map_err(|e| match e {
            crate::chat::ChatError::Storage(_) | crate::chat::ChatError::Busy => {
                ApiError::Unavailable(e.to_string())
            }
            _ => ApiError::BadRequest(e.to_string()),
        })?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({"seq": m.msg.seq})),
    )
        .into_response())
}

/// Largest `payload` of `POST /api/rooms/{room}/data` (a signaling message, not a file).
pub const MAX_DATA_BYTES: usize = 16 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataPost {
    payload: String,
    #[serde(default)]
    topic: Option<String>,
    /// Only these identities; every room client when absent.
    #[serde(default)]
    identities: Option<Vec<String>>,
}

/// `POST /api/rooms/{room}/data` (admin) `{"payload":..,"topic"?:..,"identities"?:[..]}`: the
/// room's clients (or those identities) get `{"type":"data","from","topic","payload"}` on their
/// room WebSocket; `200 {"delivered":N}`, `404` when nobody is in the room. Not stored: a client
/// that is not connected now does not get it (chat is the durable channel).
pub async fn data(
    State(s): State<AppState>,
    Path(room): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let c = s.admin(&headers, &room)?;
    let post: DataPost = json_body(&body)?;
    if post.payload.len() > MAX_DATA_BYTES {
        return Err(ApiError::BadRequest(format!(
            "payload is over {MAX_DATA_BYTES} bytes"
        )));
    }
    if post.topic.as_ref().is_some_and(|t| t.len() > 256) {
        return Err(ApiError::BadRequest("topic is over 256 bytes".into()));
    }
    let delivered = s
        .sfu
        .send_data(
            &room,
            post.identities,
            sfu::DataMessage {
                from: c.sub,
                topic: post.topic,
                payload: post.payload,
            },
        )
        .await?;
    Ok(Json(serde_json::json!({ "delivered": delivered })).into_response())
}
