//! Access tokens: HS256 JWTs signed with the API secret, carrying identity, room and grants.

use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use thiserror::Error;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grants {
    #[serde(default)]
    pub publish: bool,
    #[serde(default)]
    pub subscribe: bool,
    #[serde(default)]
    pub publish_data: bool,
    #[serde(default)]
    pub admin: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Participant identity.
    pub sub: String,
    /// Room the token is for; `*` with the admin grant means any room.
    pub room: String,
    pub grants: Grants,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    #[serde(default)]
    pub iat: u64,
    /// The API key that signed it.
    #[serde(default)]
    pub iss: String,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("missing access token")]
    Missing,
    #[error("malformed access token")]
    Malformed,
    #[error("access token expired")]
    Expired,
    #[error("access token signature is invalid")]
    BadSignature,
    #[error("access token was issued by an unknown API key")]
    UnknownKey,
    #[error("access token is for another room")]
    WrongRoom,
    #[error("access token lacks the {0} grant")]
    MissingGrant(&'static str),
    #[error("room names are 1-128 characters of A-Z, a-z, 0-9, '-', '_' and '.' (not . or ..)")]
    BadRoom,
}

/// The API key/secret pair tokens are signed with.
#[derive(Clone)]
pub struct TokenKeys {
    api_key: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenKeys({})", self.api_key)
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl TokenKeys {
    pub fn new(api_key: &str, secret: &str) -> TokenKeys {
        TokenKeys {
            api_key: api_key.to_string(),
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
        }
    }

    pub fn api_key(&self) -> &str {
        &self.api_key
    }

    pub fn mint(&self, identity: &str, room: &str, grants: Grants, ttl: Duration) -> String {
        let iat = now_secs();
        let claims = Claims {
            sub: identity.to_string(),
            room: room.to_string(),
            grants,
            exp: iat + ttl.as_secs(),
            iat,
            iss: self.api_key.clone(),
        };
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(self.api_key.clone());
        // Encoding our own claims with an HMAC key cannot fail.
        encode(&header, &claims, &self.encoding).unwrap_or_default()
    }

    /// Checks signature, expiry and issuer.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        let mut v = Validation::new(Algorithm::HS256);
        v.leeway = 5;
        v.set_required_spec_claims(&["exp", "sub"]);
        let data = decode::<Claims>(token, &self.decoding, &v).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            match e.kind() {
                K::ExpiredSignature => TokenError::Expired,
                K::InvalidSignature => TokenError::BadSignature,
                _ => TokenError::Malformed,
            }
        })?;
        if !data.claims.iss.is_empty() && data.claims.iss != self.api_key {
            return Err(TokenError::UnknownKey);
        }
        Ok(data.claims)
    }

    /// Verifies and checks the token is for `room` (admins may hold `*`).
    pub fn verify_for_room(&self, token: &str, room: &str) -> Result<Claims, TokenError> {
        // Room names become directory names (collab, chat) and object keys (egress). `*` is
        // no room: it is asked for by server-wide admin calls (`GET /api/egress`), and only a
        // `*` admin token passes it.
        if room != "*" && !egress::valid_name(room) {
            return Err(TokenError::BadRoom);
        }
        let c = self.verify(token)?;
        if c.room != room && !(c.grants.admin && c.room == "*") {
            return Err(TokenError::WrongRoom);
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> TokenKeys {
        TokenKeys::new("devkey", "0123456789abcdef0123456789abcdef")
    }

    #[test]
    fn minted_token_verifies_with_its_grants() {
        let k = keys();
        let g = Grants {
            publish: true,
            subscribe: true,
            ..Grants::default()
        };
        let t = k.mint("ana", "math", g, Duration::from_secs(60));
        let c = k.verify_for_room(&t, "math").expect("valid");
        assert_eq!(c.sub, "ana");
        assert_eq!(c.grants, g);
        assert_eq!(k.verify_for_room(&t, "art"), Err(TokenError::WrongRoom));
        // Room names become directory names: nothing that could leave the storage directory.
        for bad in ["..", ".", "a/b", "", "a b", &"x".repeat(129)] {
            assert_eq!(
                k.verify_for_room(&t, bad),
                Err(TokenError::BadRoom),
                "{bad}"
            );
        }
    }

    #[test]
    fn tampered_expired_foreign_and_garbage_tokens_fail() {
        let k = keys();
        let t = k.mint("ana", "math", Grants::default(), Duration::from_secs(60));
        let mut parts: Vec<String> = t.split('.').map(String::from).collect();
        parts[1] = parts[1].chars().rev().collect();
        assert!(k.verify(&parts.join(".")).is_err());
        let other = TokenKeys::new("devkey", "another-secret-another-secret-xx");
        assert_eq!(other.verify(&t), Err(TokenError::BadSignature));
        let mut c: Claims = k.verify(&t).expect("valid");
        c.exp = now_secs() - 60;
        let expired = encode(&Header::new(Algorithm::HS256), &c, &k.encoding).expect("enc");
        assert_eq!(k.verify(&expired), Err(TokenError::Expired));
        assert_eq!(k.verify(""), Err(TokenError::Missing));
        assert_eq!(k.verify("a.b.c"), Err(TokenError::Malformed));
        assert_eq!(k.verify("\u{0}\u{1}garbage"), Err(TokenError::Malformed));
    }
}
