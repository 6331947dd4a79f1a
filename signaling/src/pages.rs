//! The browser pages and their scripts, embedded so `aula serve` needs no files beside it.

use axum::extract::Path;
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};

use crate::error::ApiError;

const ROOM_HTML: &str = include_str!("../../web/room.html");
const BROADCAST_HTML: &str = include_str!("../../web/broadcast.html");
const LIVE_HTML: &str = include_str!("../../web/live.html");
const INDEX_HTML: &str = include_str!("../../web/index.html");
const WATCH_HTML: &str = include_str!("../../web/watch.html");

const ASSETS: &[(&str, &str, &str)] = &[
    (
        "room.js",
        "text/javascript",
        include_str!("../../web/room.js"),
    ),
    (
        "broadcast.js",
        "text/javascript",
        include_str!("../../web/broadcast.js"),
    ),
    (
        "live.js",
        "text/javascript",
        include_str!("../../web/live.js"),
    ),
    // The room client library (README "Client library"); room.js is built on it.
    (
        "aula.js",
        "text/javascript",
        include_str!("../../web/aula.js"),
    ),
    (
        "common.js",
        "text/javascript",
        include_str!("../../web/common.js"),
    ),
    (
        "watch.js",
        "text/javascript",
        include_str!("../../web/watch.js"),
    ),
    // hls.js from npm (scripts/build-web.sh copies it).
    (
        "hls.min.js",
        "text/javascript",
        include_str!("../../web/vendor/hls.min.js"),
    ),
    // yjs, y-protocols, CodeMirror 6, y-codemirror.next and web/src/collab.js, bundled by
    // scripts/build-web.sh (esbuild).
    (
        "collab.bundle.js",
        "text/javascript",
        include_str!("../../web/vendor/collab.bundle.js"),
    ),
    ("style.css", "text/css", include_str!("../../web/style.css")),
];

pub async fn index() -> Html<&'static str> {
    Html(INDEX_HTML)
}

pub async fn room(Path(_room): Path<String>) -> Html<&'static str> {
    Html(ROOM_HTML)
}

pub async fn broadcast(Path(_room): Path<String>) -> Html<&'static str> {
    Html(BROADCAST_HTML)
}

pub async fn live(Path(_room): Path<String>) -> Html<&'static str> {
    Html(LIVE_HTML)
}

pub async fn watch(Path(_room): Path<String>) -> Html<&'static str> {
    Html(WATCH_HTML)
}

pub async fn asset(Path(name): Path<String>) -> Result<Response, ApiError> {
    let (_, ctype, body) = ASSETS
        .iter()
        .find(|(n, _, _)| *n == name)
        .ok_or_else(|| ApiError::NotFound(format!("no asset {name}")))?;
    Ok(([(header::CONTENT_TYPE, *ctype)], *body).into_response())
}
