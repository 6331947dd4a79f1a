//! TURN credentials for clients behind firewalls: time-limited TURN REST credentials that a
//! coturn with `use-auth-secret` checks against the same secret (username `expiry:identity`,
//! password base64(HMAC-SHA1(secret, username))), handed out in the room's `joined`/`resumed`
//! messages and in WHIP/WHEP `Link` headers (RFC 9725 section 4.4).

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};

/// `[turn]` in aula.toml.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TurnSettings {
    /// TURN URLs handed to clients, e.g. `turns:turn.example.org:443?transport=tcp`.
    pub urls: Vec<String>,
    /// The `static-auth-secret` of the coturn(s) behind `urls`.
    pub secret: String,
    /// Lifetime of minted credentials.
    pub ttl_s: u64,
}

impl TurnSettings {
    pub fn enabled(&self) -> bool {
        !self.urls.is_empty()
    }

    pub fn check(&self) -> Result<(), String> {
        if !self.enabled() {
            return Ok(());
        }
        if self.secret.len() < 16 {
            return Err(
                "turn.secret must be at least 16 characters (coturn's static-auth-secret)".into(),
            );
        }
        if let Some(u) = self
            .urls
            .iter()
            .find(|u| !(u.starts_with("turn:") || u.starts_with("turns:")))
        {
            return Err(format!("turn.urls: {u:?} is not a turn: or turns: URL"));
        }
        Ok(())
    }

    /// Credentials for `identity`, valid for `ttl_s` from `now_unix`.
    pub fn credential(&self, identity: &str, now_unix: u64) -> (String, String) {
        let ttl = if self.ttl_s == 0 { 3600 } else { self.ttl_s };
        // coturn splits the username at the first ':' to read the expiry; the identity may
        // hold anything, so keep it to a safe alphabet.
        let who: String = identity
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-_.@".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let username = format!("{}:{who}", now_unix + ttl);
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(self.secret.as_bytes())
            .expect("HMAC takes any key length");
        mac.update(username.as_bytes());
        let password =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        (username, password)
    }

    /// The RTCIceServer list for `identity` (empty without TURN).
    pub fn ice_servers(&self, identity: &str) -> serde_json::Value {
        if !self.enabled() {
            return serde_json::json!([]);
        }
        let (username, credential) = self.credential(identity, now_unix());
        serde_json::json!([{ "urls": self.urls, "username": username, "credential": credential }])
    }

    /// `Link` header values for a WHIP/WHEP answer (RFC 9725 section 4.4).
    pub fn link_headers(&self, identity: &str) -> Vec<String> {
        if !self.enabled() {
            return Vec::new();
        }
        let (username, credential) = self.credential(identity, now_unix());
        self.urls
            .iter()
            .map(|u| {
                format!(
                    "<{u}>; rel=\"ice-server\"; username=\"{username}\"; credential=\"{credential}\"; credential-type=\"password\""
                )
            })
            .collect()
    }
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

#[cfg(test)]
mod tests {
    use super::TurnSettings;

    #[test]
    fn credentials_follow_the_turn_rest_scheme() {
        let t = TurnSettings {
            urls: vec!["turn:127.0.0.1:3478".into()],
            secret: "north-wind-secret-1234".into(),
            ttl_s: 600,
        };
        let (u, p) = t.credential("ana\nx:y", 1_000);
        assert_eq!(u, "1600:ana_x_y");
        // openssl dgst -sha1 -hmac north-wind-secret-1234 -binary <<< -n "1600:ana_x_y" | base64
        assert_eq!(p.len(), 28);
        assert_eq!(t.credential("ana\nx:y", 1_000).1, p, "deterministic");
        assert_ne!(t.credential("ben", 1_000).1, p);
        assert!(t.check().is_ok());
        let bad = TurnSettings {
            urls: vec!["stun:x".into()],
            ..t.clone()
        };
        assert!(bad.check().is_err());
    }
}
