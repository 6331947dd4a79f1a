//! The built-in origin: verifies the signed prefix, strips it, and serves the bare object from
//! storage with byte ranges, content types and cache policy; holds LL-HLS blocking playlist
//! reloads (`_HLS_msn`, `_HLS_part`) until the playlist has that part, which a static bucket
//! cannot do. HTTP-framework-free: the server maps `Response` onto its own type.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::object::{cache_control, content_type};
use crate::packager::Position;
use crate::sign::{now_unix, split_signed_path, SigningKeys};
use crate::storage::{check_key, Store};

/// A live playlist's position and target duration.
type Entry = (watch::Sender<Position>, Duration);

/// A live-index change: `Some(position)` published, `None` ended.
pub type LiveListener = Arc<dyn Fn(&str, Option<Position>, Duration) + Send + Sync>;

/// Where live playlists stand, published by running jobs after each playlist is stored.
#[derive(Default, Clone)]
pub struct LiveIndex {
    inner: Arc<Mutex<HashMap<String, Entry>>>,
    /// Told of every change (an out-of-process worker forwards them to the node serving viewers).
    listener: Option<LiveListener>,
}

impl LiveIndex {
    /// An index that also tells `listener` of every change.
    pub fn with_listener(listener: LiveListener) -> LiveIndex {
        LiveIndex {
            inner: Arc::default(),
            listener: Some(listener),
        }
    }

    /// `key` (a media playlist's object key) now holds everything before `next`.
    pub fn publish(&self, key: &str, next: Position, target_duration: Duration) {
        if let Ok(mut m) = self.inner.lock() {
            match m.get(key) {
                Some((tx, _)) => {
                    tx.send_replace(next);
                }
                None => {
                    m.insert(key.to_string(), (watch::channel(next).0, target_duration));
                }
            }
        }
        if let Some(l) = &self.listener {
            l(key, Some(next), target_duration);
        }
    }

    /// The playlist will not change any more (broadcast ended).
    pub fn end(&self, key: &str) {
        if let Ok(mut m) = self.inner.lock() {
            m.remove(key);
        }
        if let Some(l) = &self.listener {
            l(key, None, Duration::ZERO);
        }
    }

    fn watch(&self, key: &str) -> Option<(watch::Receiver<Position>, Duration)> {
        let m = self.inner.lock().ok()?;
        m.get(key).map(|(tx, td)| (tx.subscribe(), *td))
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Response {
    fn text(status: u16, msg: impl Into<String>) -> Response {
        Response {
            status,
            headers: vec![
                ("content-type", "text/plain; charset=utf-8".into()),
                ("cache-control", "no-store".into()),
            ],
            body: msg.into().into_bytes(),
        }
    }
}

pub struct Origin {
    store: Arc<Store>,
    keys: SigningKeys,
    live: LiveIndex,
}

/// `_HLS_msn` / `_HLS_part` from a query string.
fn blocking_request(query: Option<&str>) -> Result<Option<Position>, String> {
    let Some(q) = query else { return Ok(None) };
    let (mut msn, mut part) = (None, None);
    for kv in q.split('&') {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        match k {
            "_HLS_msn" => {
                msn = Some(
                    v.parse::<u64>()
                        .map_err(|_| format!("bad _HLS_msn {v:?}"))?,
                )
            }
            "_HLS_part" => {
                part = Some(
                    v.parse::<u64>()
                        .map_err(|_| format!("bad _HLS_part {v:?}"))?,
                )
            }
            _ => {}
        }
    }
    match (msn, part) {
        (None, None) => Ok(None),
        (None, Some(_)) => Err("_HLS_part without _HLS_msn".into()),
        (Some(msn), part) => Ok(Some(Position {
            msn,
            part: part.unwrap_or(0),
        })),
    }
}

/// `bytes=a-b`, `bytes=a-`, `bytes=-n` against a body of `len` bytes.
fn parse_range(h: &str, len: usize) -> Option<(usize, usize)> {
    let spec = h.strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: usize = n.parse().ok()?;
            (len.checked_sub(n.min(len))?, len.checked_sub(1)?)
        }
        (a, "") => (a.parse().ok()?, len.checked_sub(1)?),
        (a, b) => (
            a.parse().ok()?,
            b.parse::<usize>().ok()?.min(len.checked_sub(1)?),
        ),
    };
    (start <= end && end < len).then_some((start, end))
}

impl Origin {
    pub fn new(store: Arc<Store>, keys: SigningKeys, live: LiveIndex) -> Origin {
        Origin { store, keys, live }
    }

    pub fn live(&self) -> &LiveIndex {
        &self.live
    }

    /// Serves `GET {path}?{query}` where path is `/s/{token}/{key}`.
    pub async fn handle(&self, path: &str, query: Option<&str>, range: Option<&str>) -> Response {
        let (token, bare) = match split_signed_path(path) {
            Ok(x) => x,
            Err(e) => return Response::text(403, e.to_string()),
        };
        if let Err(e) = self.keys.verify(token, bare, now_unix()) {
            tracing::info!(path = %bare, reason = %e, "origin: refused token");
            return Response::text(403, e.to_string());
        }
        let key = bare.trim_start_matches('/');
        if key.ends_with('/') {
            // A folder's name: objects never end in '/'.
            return Response::text(404, "no such object");
        }
        if check_key(key).is_err() {
            return Response::text(400, "bad object path");
        }
        if key.ends_with(".m3u8") {
            match blocking_request(query) {
                Err(e) => return Response::text(400, e),
                Ok(Some(want)) => {
                    if let Some(r) = self.hold(key, want).await {
                        return r;
                    }
                }
                Ok(None) => {}
            }
        }
        let body = match self.store.get(key).await {
            Ok(Some(b)) => b,
            Ok(None) => return Response::text(404, "no such object"),
            Err(e) => {
                tracing::warn!(%key, error = %e, "origin: storage read failed");
                return Response::text(502, "storage unavailable");
            }
        };
        let mut headers = vec![
            ("content-type", content_type(key).to_string()),
            ("cache-control", cache_control(key).to_string()),
            ("accept-ranges", "bytes".to_string()),
        ];
        if let Some(r) = range {
            return match parse_range(r, body.len()) {
                Some((s, e)) => {
                    headers.push(("content-range", format!("bytes {s}-{e}/{}", body.len())));
                    Response {
                        status: 206,
                        headers,
                        body: body[s..=e].to_vec(),
                    }
                }
                None => {
                    let mut resp = Response::text(416, "range not satisfiable");
                    resp.headers
                        .push(("content-range", format!("bytes */{}", body.len())));
                    resp
                }
            };
        }
        Response {
            status: 200,
            headers,
            body,
        }
    }

    /// Waits until the playlist holds `want`; an error response when it never will in time.
    async fn hold(&self, key: &str, want: Position) -> Option<Response> {
        let (mut rx, target) = self.live.watch(key)?;
        // A request far ahead of the live edge is a client error (RFC 8216bis 6.2.5.2).
        if want.msn > rx.borrow().msn + 2 {
            return Some(Response::text(
                400,
                "_HLS_msn is more than two segments ahead",
            ));
        }
        let ready = |p: &Position| want < *p;
        let wait = tokio::time::timeout(target * 3, rx.wait_for(ready)).await;
        match wait {
            Ok(Ok(_)) => None,
            // The job ended: serve what is stored.
            Ok(Err(_)) => None,
            Err(_) => Some(Response::text(
                503,
                "the requested part did not appear in time",
            )),
        }
    }
}
