//! Objects the packager writes: keys, content types and cache policy.

/// One object to store. Media is immutable (unique names); playlists change.
#[derive(Clone, Debug, PartialEq)]
pub struct Object {
    pub key: String,
    pub body: Vec<u8>,
}

impl Object {
    pub fn content_type(&self) -> &'static str {
        content_type(&self.key)
    }
    pub fn cache_control(&self) -> &'static str {
        cache_control(&self.key)
    }
}

pub fn content_type(key: &str) -> &'static str {
    match key.rsplit('.').next() {
        Some("m3u8") => "application/vnd.apple.mpegurl",
        Some("m4s") => "video/iso.segment",
        Some("mp4") => "video/mp4",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

/// Playlists: one part's time at most (LL-HLS blocking reloads bypass caches anyway).
/// Media: immutable, since a name is never reused.
pub fn cache_control(key: &str) -> &'static str {
    if key.ends_with(".m3u8") {
        if key.ends_with("vod.m3u8") {
            "public, max-age=2"
        } else {
            "public, max-age=1"
        }
    } else {
        "public, max-age=31536000, immutable"
    }
}
