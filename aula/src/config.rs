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
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Http {
    pub bind: SocketAddr,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Media {
    /// The one UDP port every peer's media uses.
    pub bind: SocketAddr,
    /// Address announced in ICE candidates when binding to 0.0.0.0 (e.g. the public IP).
    pub public_ip: Option<std::net::IpAddr>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Storage {
    pub dir: PathBuf,
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
        }
    }
}

impl Default for Http {
    fn default() -> Self {
        Http {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
        }
    }
}

impl Default for Media {
    fn default() -> Self {
        Media {
            bind: SocketAddr::from(([127, 0, 0, 1], 7882)),
            public_ip: None,
        }
    }
}

impl Default for Storage {
    fn default() -> Self {
        Storage {
            dir: PathBuf::from("./aula-data"),
        }
    }
}

impl Default for Rooms {
    fn default() -> Self {
        Rooms {
            silence_timeout_s: 15,
            max_participants: 1000,
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
        f.extract()
            .context("invalid configuration (aula.toml / AULA_* variables)")
    }

    /// The API secret: configured, or the development secret (created on first use).
    pub fn api_secret(&self) -> Result<(String, bool)> {
        if !self.auth.api_secret.is_empty() {
            return Ok((self.auth.api_secret.clone(), false));
        }
        let path = self.storage.dir.join("dev-secret");
        if let Ok(s) = std::fs::read_to_string(&path) {
            let s = s.trim().to_string();
            if s.len() >= 32 {
                return Ok((s, true));
            }
        }
        std::fs::create_dir_all(&self.storage.dir)
            .with_context(|| format!("creating {}", self.storage.dir.display()))?;
        use rand::Rng;
        let bytes: [u8; 24] = rand::rng().random();
        let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        std::fs::write(&path, &secret).with_context(|| format!("writing {}", path.display()))?;
        Ok((secret, true))
    }
}
