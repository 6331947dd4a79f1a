//! The object store (filesystem or S3/R2, `hls::Store`) as collab's snapshot store.

use std::sync::Arc;

use collab::{BoxFuture, SnapshotStore, SnapshotStoreError};

/// Collab snapshots in the bucket the HLS output goes to (`collab/{doc}/snapshot.bin`).
pub struct Bucket(pub Arc<hls::Store>);

impl SnapshotStore for Bucket {
    fn get<'a>(
        &'a self,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, SnapshotStoreError>> {
        Box::pin(async move { self.0.get(key).await.map_err(SnapshotStoreError::from) })
    }

    fn put<'a>(
        &'a self,
        key: &'a str,
        body: Vec<u8>,
    ) -> BoxFuture<'a, Result<(), SnapshotStoreError>> {
        Box::pin(async move {
            let o = hls::Object {
                key: key.to_string(),
                body,
            };
            self.0.put(&o).await.map_err(SnapshotStoreError::from)
        })
    }
}
