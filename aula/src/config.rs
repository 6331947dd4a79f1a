//! `aula.toml` + `AULA_*` environment overrides (nested keys with `__`, e.g.
//! `AULA_HTTP__BIND=127.0.0.1:9000`), over embedded defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    pub http: Http,
    pub media: Media,
    pub storage: Storage,
    pub auth: Auth,
    pub rooms: Rooms,
    pub hls: egress::HlsSettings,
    pub signing: Signing,
    /// Out-of-process egress (`aula egress worker`) over Redis Streams.
    pub egress: egress::QueueSettings,
    /// Rooms' shared documents (`/collab/{room}`).
    pub collab: collab::CollabSettings,
    /// Room chat history (`{storage.dir}/chat`).
    pub chat: signaling::chat::ChatSettings,
    /// TURN relays (coturn) for clients behind firewalls.
    pub turn: signaling::turn::TurnSettings,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Http {
    pub bind: SocketAddr,
    /// Seconds a client has to send a request head (and, between requests, the next one).
    pub header_timeout_s: u64,
    /// Open connections at once, WebSockets included.
    pub max_connections: usize,
    /// Connections from one address that have not sent a complete request yet.
    pub max_pending_per_ip: usize,
    /// PEM certificate chain and private key: the listener serves HTTPS/WSS (else plain HTTP).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Media {
    /// The one UDP port every peer's media uses.
    pub bind: SocketAddr,
    /// Address announced in ICE candidates when binding to 0.0.0.0 (e.g. the public IP).
    pub public_ip: Option<std::net::IpAddr>,
    /// ICE over TCP (a passive TCP candidate beside the UDP one) for networks that block UDP.
    pub tcp: bool,
    /// Where ICE-TCP listens; unset: `bind`'s address and port, over TCP.
    pub tcp_bind: Option<SocketAddr>,
    /// Carry ICE-TCP on the HTTP(S) port instead (one open port for everything).
    pub tcp_on_http: bool,
    /// Offer the UDP candidate. Off only to prove ICE-TCP (tests, diagnosing a network).
    pub udp_candidate: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Storage {
    /// Local state (development secrets) and, with `backend = "fs"`, the HLS tree under `hls/`.
    pub dir: PathBuf,
    /// Where HLS objects go: `fs` (default) or `s3` (Cloudflare R2, MinIO, AWS).
    pub backend: Backend,
    pub s3: S3,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    #[default]
    Fs,
    S3,
}

/// `[storage.s3]`; for R2: endpoint `https://<account>.r2.cloudflarestorage.com`, region `auto`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3 {
    pub endpoint: Option<String>,
    pub region: String,
    pub bucket: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub path_style: bool,
    /// Create the bucket at start when it is missing (development servers).
    pub create_bucket: bool,
}

impl Default for S3 {
    fn default() -> Self {
        S3 {
            endpoint: None,
            region: "auto".into(),
            bucket: "aula".into(),
            access_key_id: String::new(),
            secret_access_key: String::new(),
            path_style: true,
            create_bucket: false,
        }
    }
}

/// `[signing]`: HMAC keys for viewer URLs. Rotate by adding a key, making it `active`, and
/// removing the old one once the longest URL lifetime has passed.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Signing {
    /// The key id that signs new URLs; empty with no keys: a development key is generated.
    pub active: String,
    /// Key id -> secret (at least 32 characters).
    pub keys: std::collections::BTreeMap<String, String>,
    /// Anyone may ask `/api/broadcasts/{room}` for signed URLs (no room token needed).
    pub public_broadcasts: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Auth {
    pub api_key: String,
    /// Empty: a development secret is generated once and kept in `{storage.dir}/dev-secret`.
    pub api_secret: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Rooms {
    /// Seconds without any datagram before a participant is removed.
    pub silence_timeout_s: u64,
    pub max_participants: usize,
    /// From this many room clients on, joins and leaves reach clients as `presence` batches
    /// (at most two a second) instead of one message each.
    pub presence_batch_above: usize,
    /// URLs `POST`ed each room lifecycle event (`room_started`, `participant_joined`, ...),
    /// signed with `webhook_secret` like the egress webhooks.
    pub webhooks: Vec<String>,
    pub webhook_secret: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            http: Http::default(),
            media: Media::default(),
            storage: Storage::default(),
            auth: Auth {
                api_key: "devkey".into(),
                api_secret: String::new(),
            },
            rooms: Rooms::default(),
            hls: egress::HlsSettings::default(),
            signing: Signing::default(),
            egress: egress::QueueSettings::default(),
            collab: collab::CollabSettings::default(),
            chat: signaling::chat::ChatSettings::default(),
            turn: signaling::turn::TurnSettings::default(),
        }
    }
}

impl Default for Http {
    fn default() -> Self {
        Http {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            header_timeout_s: 10,
            max_connections: 20_000,
            max_pending_per_ip: 64,
            tls_cert: None,
            tls_key: None,
        }
    }
}

impl Default for Media {
    fn default() -> Self {
        Media {
            bind: SocketAddr::from(([127, 0, 0, 1], 7882)),
            public_ip: None,
            tcp: true,
            tcp_bind: None,
            tcp_on_http: false,
            udp_candidate: true,
        }
    }
}

impl Default for Storage {
    fn default() -> Self {
        Storage {
            dir: PathBuf::from("./aula-data"),
            backend: Backend::Fs,
            s3: S3::default(),
        }
    }
}

impl Default for Rooms {
    fn default() -> Self {
        Rooms {
            silence_timeout_s: 15,
            max_participants: 1000,
            presence_batch_above: 50,
            webhooks: Vec::new(),
            webhook_secret: String::new(),
        }
    }
}

impl Config {
    pub fn load(path: Option<&Path>) -> Result<Config> {
        let mut f = Figment::from(Serialized::defaults(Config::default()));
        let file = path
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("aula.toml"));
        if path.is_some() && !file.exists() {
            anyhow::bail!("config file {} does not exist", file.display());
        }
        if file.exists() {
            f = f.merge(Toml::file(&file));
        }
        f = f.merge(Env::prefixed("AULA_").split("__"));
        let c: Config = f
            .extract()
            .context("invalid configuration (aula.toml / AULA_* variables)")?;
        c.hls.check().map_err(anyhow::Error::msg)?;
        c.egress.check().map_err(anyhow::Error::msg)?;
        c.collab.check().map_err(anyhow::Error::msg)?;
        c.chat.check().map_err(anyhow::Error::msg)?;
        c.turn.check().map_err(anyhow::Error::msg)?;
        Ok(c)
    }

    /// The configuration as TOML, with every secret replaced by `"<set>"` (or left empty).
    pub fn shown(&self) -> Result<String> {
        let mut v = toml::Value::try_from(self).context("configuration to TOML")?;
        redact(&mut v, false);
        toml::to_string_pretty(&v).context("configuration to TOML")
    }

    /// The API secret: configured, or the development secret (created on first use).
    pub fn api_secret(&self) -> Result<(String, bool)> {
        if !self.auth.api_secret.is_empty() {
            return Ok((self.auth.api_secret.clone(), false));
        }
        Ok((self.dev_secret("dev-secret")?, true))
    }

    /// The URL signing keys: configured, or a development key kept beside the dev secret.
    pub fn signing_keys(&self) -> Result<hls::SigningKeys> {
        let s = &self.signing;
        if s.keys.is_empty() {
            let secret = self.dev_secret("dev-signing-key")?;
            return hls::SigningKeys::new("dev", [("dev".to_string(), secret.into_bytes())])
                .context("development signing key");
        }
        for (kid, secret) in &s.keys {
            if secret.len() < 32 {
                anyhow::bail!("signing.keys.{kid}: a secret needs at least 32 characters");
            }
        }
        let active = if s.active.is_empty() && s.keys.len() == 1 {
            s.keys.keys().next().cloned().unwrap_or_default()
        } else {
            s.active.clone()
        };
        hls::SigningKeys::new(
            &active,
            s.keys
                .iter()
                .map(|(k, v)| (k.clone(), v.clone().into_bytes())),
        )
        .with_context(|| {
            format!(
                "signing.active {active:?} must name one of signing.keys ({}), and key ids must not contain '.'",
                s.keys.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })
    }

    /// Where HLS objects are stored.
    pub async fn store(&self) -> Result<hls::Store> {
        match self.storage.backend {
            Backend::Fs => Ok(hls::Store::Fs(hls::FsStore::new(
                self.storage.dir.join("hls"),
            ))),
            Backend::S3 => {
                let c = &self.storage.s3;
                if c.access_key_id.is_empty() || c.secret_access_key.is_empty() {
                    anyhow::bail!("storage.s3.access_key_id and secret_access_key are required with backend = \"s3\" (AULA_STORAGE__S3__ACCESS_KEY_ID, AULA_STORAGE__S3__SECRET_ACCESS_KEY)");
                }
                let s = hls::S3Store::new(&hls::S3Config {
                    endpoint: c.endpoint.clone(),
                    region: c.region.clone(),
                    bucket: c.bucket.clone(),
                    access_key_id: c.access_key_id.clone(),
                    secret_access_key: c.secret_access_key.clone(),
                    path_style: c.path_style,
                });
                if c.create_bucket {
                    s.ensure_bucket()
                        .await
                        .with_context(|| format!("creating bucket {}", c.bucket))?;
                }
                Ok(hls::Store::S3(s))
            }
        }
    }

    /// A random secret kept in `{storage.dir}/{name}` (created on first use).
    fn dev_secret(&self, name: &str) -> Result<String> {
        let path = self.storage.dir.join(name);
        if let Ok(s) = std::fs::read_to_string(&path) {
            let s = s.trim().to_string();
            if s.len() >= 32 {
                return Ok(s);
            }
        }
        std::fs::create_dir_all(&self.storage.dir)
            .with_context(|| format!("creating {}", self.storage.dir.display()))?;
        use rand::Rng;
        let bytes: [u8; 24] = rand::rng().random();
        let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        std::fs::write(&path, &secret).with_context(|| format!("writing {}", path.display()))?;
        Ok(secret)
    }
}

/// Hides secret values: keys named like a secret, and every value under `signing.keys`.
fn redact(v: &mut toml::Value, secret: bool) {
    match v {
        toml::Value::Table(t) => {
            for (k, x) in t.iter_mut() {
                let s = secret || k.contains("secret") || k.contains("password") || k == "keys";
                redact(x, s);
            }
        }
        toml::Value::String(s) if secret && !s.is_empty() => *s = "<set>".into(),
        _ => {}
    }
}
