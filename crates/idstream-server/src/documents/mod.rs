//! Documents: uploaded identity-document images, kept in object storage and checked by the
//! provider (`POST /v1/verifications/document`, [`crate::http::documents`]).
//!
//! The flow of one upload: each file is spooled to local disk while its size is counted and
//! its SHA-256 computed, then recognised and checked by its bytes ([`content`]); only a request
//! whose every part is valid goes on. Its files are stored ([`objects`]), sent to the provider,
//! and the provider's answer is appended as a verification event in one store transaction with
//! the documents' records. A provider failure deletes the stored files; a crash between storing
//! and that transaction leaves bytes no record refers to, invisible through the API and deleted
//! by the [`Sweeper`] once `orphan_grace_secs` old.

pub mod content;
pub mod objects;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::store::{Op, Store, Txn};
use objects::ObjectStorage;

/// The sweep's position (Unix seconds: objects modified up to then were looked at).
const SWEEP_CONSUMER: &str = "documents-sweep";

/// Deletes stored bytes no document record refers to.
pub struct Sweeper {
    pub objects: Arc<ObjectStorage>,
    pub store: Arc<dyn Store>,
    pub grace: Duration,
    pub every: Duration,
}

impl Sweeper {
    pub async fn run(self, stop: CancellationToken) {
        loop {
            match self.sweep().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, "orphaned document bytes deleted"),
                Err(e) => tracing::warn!(error = %e, "document sweep failed; retrying"),
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(self.every) => {}
            }
        }
    }

    /// One pass over objects modified since the last pass and at least `grace` ago; returns
    /// how many were deleted.
    pub async fn sweep(&self) -> anyhow::Result<usize> {
        let mark = self.store.checkpoint(SWEEP_CONSUMER).await?.unwrap_or(0) as i64;
        let cutoff = crate::util::unix_now() - self.grace.as_secs() as i64;
        if cutoff <= mark {
            return Ok(0);
        }
        let mut deleted = 0;
        for (path, _, modified) in self.objects.list(None).await? {
            // A second of overlap: modification times are whole seconds on some stores.
            if modified > cutoff || modified < mark - 1 {
                continue;
            }
            let Some(id) = path.filename() else { continue };
            if self.store.document(None, id).await?.is_none() {
                self.objects.delete(&path).await?;
                deleted += 1;
            }
        }
        let op = Op::SetCheckpoint { consumer: SWEEP_CONSUMER.into(), offset: cutoff as u64 };
        self.store.commit(Txn { entries: Vec::new(), ops: vec![op] }).await?;
        metrics::counter!("idstream_documents_orphans_deleted_total").increment(deleted as u64);
        Ok(deleted)
    }
}
