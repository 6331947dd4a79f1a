//! Signed viewer URLs: `/s/{token}/{path}`. A token is HMAC-SHA256 over its key id, expiry and
//! the path prefix it grants, so the built-in origin and a CDN edge worker verify it with the
//! same secret, strip it, and serve (and cache) the bare path. Several keys may verify at once:
//! rotate by adding a new key as the signing key and keeping the old one until its tokens expire.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    #[error("no token in the path (expected /s/{{token}}/...)")]
    Missing,
    #[error("malformed token")]
    Malformed,
    #[error("unknown key id {0:?}")]
    UnknownKey(String),
    #[error("bad signature")]
    BadSignature,
    #[error("token expired")]
    Expired,
    #[error("token is for {scope:?}, not {path:?}")]
    WrongPrefix { scope: String, path: String },
}

#[derive(Clone)]
pub struct SigningKeys {
    keys: BTreeMap<String, Vec<u8>>,
    active: String,
}

impl SigningKeys {
    /// `active` signs; every key in `keys` verifies.
    pub fn new(active: &str, keys: impl IntoIterator<Item = (String, Vec<u8>)>) -> Option<Self> {
        let keys: BTreeMap<String, Vec<u8>> = keys.into_iter().collect();
        if !keys.contains_key(active) || keys.keys().any(|k| k.is_empty() || k.contains('.')) {
            return None;
        }
        Some(SigningKeys {
            keys,
            active: active.to_string(),
        })
    }

    fn mac(secret: &[u8], kid: &str, exp: u64, scope: &str) -> HmacSha256 {
        // new_from_slice accepts any key length for HMAC.
        let mut m = HmacSha256::new_from_slice(secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        m.update(format!("{kid}.{exp}.{scope}").as_bytes());
        m
    }

    /// A token granting paths under `scope` (e.g. `/math/b7f3/`) until now + `ttl`.
    pub fn sign(&self, scope: &str, ttl: Duration) -> String {
        let exp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs()
            + ttl.as_secs();
        self.sign_until(scope, exp)
    }

    pub fn sign_until(&self, scope: &str, exp_unix: u64) -> String {
        let secret = &self.keys[&self.active];
        let tag = Self::mac(secret, &self.active, exp_unix, scope)
            .finalize()
            .into_bytes();
        format!(
            "{}.{}.{}.{}",
            self.active,
            exp_unix,
            URL_SAFE_NO_PAD.encode(scope),
            URL_SAFE_NO_PAD.encode(tag)
        )
    }

    /// Checks `token` for `path` (the bare path, starting with `/`).
    pub fn verify(&self, token: &str, path: &str, now_unix: u64) -> Result<(), SignError> {
        let mut it = token.split('.');
        let (Some(kid), Some(exp), Some(scope), Some(tag), None) =
            (it.next(), it.next(), it.next(), it.next(), it.next())
        else {
            return Err(SignError::Malformed);
        };
        let exp: u64 = exp.parse().map_err(|_| SignError::Malformed)?;
        let scope = URL_SAFE_NO_PAD
            .decode(scope)
            .map_err(|_| SignError::Malformed)?;
        let scope = String::from_utf8(scope).map_err(|_| SignError::Malformed)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| SignError::Malformed)?;
        let secret = self
            .keys
            .get(kid)
            .ok_or_else(|| SignError::UnknownKey(kid.to_string()))?;
        Self::mac(secret, kid, exp, &scope)
            .verify_slice(&tag)
            .map_err(|_| SignError::BadSignature)?;
        if now_unix >= exp {
            return Err(SignError::Expired);
        }
        // ".." could climb out of the granted prefix once a server normalises the path.
        if !in_scope(path, &scope) || path.split('/').any(|s| s == ".." || s == ".") {
            return Err(SignError::WrongPrefix {
                scope,
                path: path.to_string(),
            });
        }
        Ok(())
    }
}

/// Whether `path` lies under `scope` by whole path segments: `/r/b1` covers `/r/b1` and
/// `/r/b1/...`, never `/r/b10/...`.
pub fn in_scope(path: &str, scope: &str) -> bool {
    match path.strip_prefix(scope) {
        Some(rest) => scope.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// Splits `/s/{token}/{rest}` into the token and `/{rest}`.
pub fn split_signed_path(path: &str) -> Result<(&str, &str), SignError> {
    let rest = path.strip_prefix("/s/").ok_or(SignError::Missing)?;
    let slash = rest.find('/').ok_or(SignError::Missing)?;
    let (token, bare) = rest.split_at(slash);
    if token.is_empty() {
        return Err(SignError::Missing);
    }
    Ok((token, bare))
}

pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}
