use serde::{Deserialize, Serialize};

/// How broadcasts are packaged (`[hls]` in aula.toml).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HlsSettings {
    /// LL-HLS part target, seconds (0.2 ..= 1.0).
    pub part_s: f64,
    /// Complete segments in the live playlist.
    pub window: usize,
    /// Keep the whole recording (event playlist -> VOD). Off: segments that left the live
    /// window are deleted and there is no VOD.
    pub keep_recording: bool,
    /// Objects waiting for storage before a job is held back (backpressure).
    pub upload_queue: usize,
    /// Lifetime of the signed viewer URLs handed out, seconds.
    pub url_ttl_s: u64,
    /// Ladder profile when a request names none.
    pub default_profile: String,
    /// Seconds a job may go without input before it ends itself.
    pub idle_timeout_s: u64,
    /// Start a job for every WHIP broadcast.
    pub auto_egress: bool,
    /// Request header carrying the viewer's country (ISO 3166 alpha-2), set by the CDN.
    pub geo_header: String,
    /// Country -> ladder profile for viewers (overrides the built-in map; unknown: `global`).
    pub geo: std::collections::BTreeMap<String, String>,
    /// URLs that get a JSON `POST` when a job starts, ends or fails.
    pub webhooks: Vec<String>,
    /// HMAC-SHA256 key for the `X-Aula-Signature` header of webhooks (empty: unsigned).
    pub webhook_secret: String,
}

impl Default for HlsSettings {
    fn default() -> Self {
        HlsSettings {
            part_s: 0.5,
            window: 6,
            keep_recording: true,
            upload_queue: 256,
            url_ttl_s: 6 * 3600,
            default_profile: "global".into(),
            idle_timeout_s: 30,
            auto_egress: true,
            geo_header: "cf-ipcountry".into(),
            geo: Default::default(),
            webhooks: Vec::new(),
            webhook_secret: String::new(),
        }
    }
}

impl HlsSettings {
    /// The ladder profile for a viewer: `geo` is a profile name or a country code.
    pub fn viewer_profile(&self, geo: &str) -> Option<String> {
        if ladders::shipped(geo).is_some() {
            return Some(geo.to_string());
        }
        let upper = geo.trim().to_ascii_uppercase();
        if let Some((_, p)) = self
            .geo
            .iter()
            .find(|(c, _)| c.eq_ignore_ascii_case(&upper))
        {
            return Some(p.clone());
        }
        ladders::geo::default_profile_for(&upper).map(str::to_string)
    }

    pub fn check(&self) -> Result<(), String> {
        if !(0.2..=1.0).contains(&self.part_s) {
            return Err(format!("hls.part_s {} is outside 0.2..=1.0", self.part_s));
        }
        if self.window < 3 {
            return Err(format!("hls.window {} is below 3 segments", self.window));
        }
        for (country, profile) in &self.geo {
            if ladders::shipped(profile).is_none() {
                return Err(format!("hls.geo.{country}: unknown profile {profile:?}"));
            }
        }
        for u in &self.webhooks {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                return Err(format!("hls.webhooks: {u:?} is not an http(s) URL"));
            }
        }
        if self.upload_queue == 0 {
            return Err("hls.upload_queue must be at least 1".into());
        }
        Ok(())
    }
}
