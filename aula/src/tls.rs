//! HTTPS/WSS for `aula serve`: `http.tls_cert` / `http.tls_key` (PEM) served with rustls, and
//! read again on SIGHUP or when either file changes, so a renewed certificate needs no restart.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use tracing::{info, warn};

/// The certificate in force; swapped whole on reload.
#[derive(Clone)]
pub struct Tls {
    current: Arc<RwLock<Arc<ServerConfig>>>,
}

fn load(cert: &Path, key: &Path) -> Result<ServerConfig> {
    let certs = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading http.tls_cert {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing http.tls_cert {}", cert.display()))?;
    if certs.is_empty() {
        anyhow::bail!("http.tls_cert {} holds no certificate", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading http.tls_key {} (a PEM private key)", key.display()))?;
    // Both ring and aws-lc-rs are in the dependency tree: name the provider.
    let mut cfg = ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS protocol versions")?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .context("http.tls_cert and http.tls_key do not make a usable pair")?;
    // HTTP/2 where the client offers it (every browser does over TLS), HTTP/1.1 otherwise.
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}

fn mtimes(paths: &[&Path]) -> Vec<Option<SystemTime>> {
    paths
        .iter()
        .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .collect()
}

impl Tls {
    /// Loads the pair (an error names the file and what is wrong) and starts watching it.
    pub fn start(cert: PathBuf, key: PathBuf) -> Result<Tls> {
        let tls = Tls {
            current: Arc::new(RwLock::new(Arc::new(load(&cert, &key)?))),
        };
        let watched = tls.clone();
        tokio::spawn(async move {
            let mut hup =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            let mut seen = mtimes(&[&cert, &key]);
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                let why = tokio::select! {
                    _ = tick.tick() => {
                        let now = mtimes(&[&cert, &key]);
                        if now == seen { continue; }
                        seen = now;
                        "the files changed"
                    }
                    Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => "SIGHUP",
                };
                match load(&cert, &key) {
                    Ok(cfg) => {
                        if let Ok(mut c) = watched.current.write() {
                            *c = Arc::new(cfg);
                        }
                        info!(cert = %cert.display(), why, "TLS certificate reloaded");
                    }
                    // A half-written renewal is retried on the next change; the old pair serves.
                    Err(e) => warn!(
                        error = format!("{e:#}"),
                        why, "TLS certificate not reloaded; the previous one stays"
                    ),
                }
            }
        });
        Ok(tls)
    }

    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let cfg = self
            .current
            .read()
            .map(|c| c.clone())
            .unwrap_or_else(|p| p.into_inner().clone());
        tokio_rustls::TlsAcceptor::from(cfg)
    }
}
