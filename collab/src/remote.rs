//! Where document snapshots are kept besides the local disk (the S3/R2 bucket in production):
//! a small trait, so this crate knows no storage client. `signaling` adapts `hls::Store` to it.

use std::future::Future;
use std::pin::Pin;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A storage failure, as the store describes it.
pub type SnapshotStoreError = Box<dyn std::error::Error + Send + Sync>;

/// Whole objects by key: a document's latest snapshot is written when it unloads and on each
/// local snapshot, and read when a document has no local state (a new machine).
pub trait SnapshotStore: Send + Sync {
    /// The object at `key`, or `None` when there is none.
    fn get<'a>(
        &'a self,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, SnapshotStoreError>>;
    fn put<'a>(
        &'a self,
        key: &'a str,
        body: Vec<u8>,
    ) -> BoxFuture<'a, Result<(), SnapshotStoreError>>;
}
