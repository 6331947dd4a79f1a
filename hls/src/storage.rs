//! Where objects go: the filesystem (embedded default) or any S3 API (Cloudflare R2, MinIO, AWS).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::object::Object;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("invalid object key {0:?}")]
    BadKey(String),
    #[error("filesystem: {0}")]
    Io(#[from] std::io::Error),
    #[error("S3 {op} {key}: {message}")]
    S3 {
        op: &'static str,
        key: String,
        message: String,
    },
}

/// S3 settings; for R2: endpoint `https://<account>.r2.cloudflarestorage.com`, region `auto`.
#[derive(Clone, Debug)]
pub struct S3Config {
    pub endpoint: Option<String>,
    pub region: String,
    pub bucket: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Path-style URLs (`endpoint/bucket/key`), needed by most non-AWS servers.
    pub path_style: bool,
}

pub enum Store {
    Fs(FsStore),
    S3(S3Store),
}

impl Store {
    pub async fn put(&self, o: &Object) -> Result<(), StorageError> {
        check_key(&o.key)?;
        match self {
            Store::Fs(s) => s.put(o).await,
            Store::S3(s) => s.put(o).await,
        }
    }

    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        check_key(key)?;
        match self {
            Store::Fs(s) => s.get(key).await,
            Store::S3(s) => s.get(key).await,
        }
    }

    pub async fn delete(&self, key: &str) -> Result<(), StorageError> {
        check_key(key)?;
        match self {
            Store::Fs(s) => s.delete(key).await,
            Store::S3(s) => s.delete(key).await,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Store::Fs(s) => format!("filesystem {}", s.root.display()),
            Store::S3(s) => format!("s3://{}", s.bucket),
        }
    }
}

/// Keys are relative, `/`-separated, without empty, `.` or `..` segments or control characters.
pub fn check_key(key: &str) -> Result<(), StorageError> {
    let ok = !key.is_empty()
        && key.len() <= 1024
        && key.split('/').all(|s| {
            !s.is_empty()
                && s != "."
                && s != ".."
                && !s.contains('\\')
                && !s.starts_with(".tmp-")
                && !s.chars().any(char::is_control)
        });
    if ok {
        Ok(())
    } else {
        Err(StorageError::BadKey(key.to_string()))
    }
}

pub struct FsStore {
    root: PathBuf,
}

impl FsStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        FsStore { root: root.into() }
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    async fn put(&self, o: &Object) -> Result<(), StorageError> {
        let path = self.path(&o.key);
        let dir = path.parent().unwrap_or(Path::new("."));
        tokio::fs::create_dir_all(dir).await?;
        // Write aside and rename: a reader sees the old or the new object, never half of one.
        let tmp = dir.join(format!(".tmp-{}-{}", std::process::id(), rand_suffix()));
        tokio::fs::write(&tmp, &o.body).await?;
        if let Err(e) = tokio::fs::rename(&tmp, &path).await {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e.into());
        }
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        match tokio::fs::read(self.path(key)).await {
            Ok(b) => Ok(Some(b)),
            // A directory is no object (S3 has none either): not found, not a storage error.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::IsADirectory
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        match tokio::fs::remove_file(self.path(key)).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64);
    (t << 20) ^ N.fetch_add(1, Ordering::Relaxed)
}

pub struct S3Store {
    client: aws_sdk_s3::Client,
    bucket: String,
}

impl S3Store {
    pub fn new(c: &S3Config) -> Self {
        use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
        let mut b = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(c.region.clone()))
            .credentials_provider(Credentials::new(
                c.access_key_id.clone(),
                c.secret_access_key.clone(),
                None,
                None,
                "aula-config",
            ))
            .force_path_style(c.path_style)
            // aula's uploader retries with its own backoff and keeps order; one attempt here.
            .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled())
            .timeout_config(
                aws_sdk_s3::config::timeout::TimeoutConfig::builder()
                    .operation_timeout(Duration::from_secs(5))
                    .connect_timeout(Duration::from_secs(3))
                    .build(),
            );
        if let Some(e) = &c.endpoint {
            b = b.endpoint_url(e);
        }
        S3Store {
            client: aws_sdk_s3::Client::from_conf(b.build()),
            bucket: c.bucket.clone(),
        }
    }

    /// Creates the bucket if it does not exist (development servers start empty).
    pub async fn ensure_bucket(&self) -> Result<(), StorageError> {
        if self
            .client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .is_ok()
        {
            return Ok(());
        }
        self.client
            .create_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| Self::err("create bucket", &self.bucket, e))
    }

    fn err(op: &'static str, key: &str, e: impl std::error::Error) -> StorageError {
        // The SDK's Display is terse; the source chain says what happened.
        let mut message = e.to_string();
        let mut src = e.source();
        while let Some(s) = src {
            message = format!("{message}: {s}");
            src = s.source();
        }
        StorageError::S3 {
            op,
            key: key.to_string(),
            message,
        }
    }

    async fn put(&self, o: &Object) -> Result<(), StorageError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(&o.key)
            .content_type(o.content_type())
            .cache_control(o.cache_control())
            .body(o.body.clone().into())
            .send()
            .await
            .map(|_| ())
            .map_err(|e| Self::err("put", &o.key, e))
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StorageError> {
        match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => {
                let body = out
                    .body
                    .collect()
                    .await
                    .map_err(|e| Self::err("get", key, e))?;
                Ok(Some(body.into_bytes().to_vec()))
            }
            Err(e) => {
                if e.as_service_error().is_some_and(|s| s.is_no_such_key()) {
                    Ok(None)
                } else {
                    Err(Self::err("get", key, e))
                }
            }
        }
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| Self::err("delete", key, e))
    }
}
