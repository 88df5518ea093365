//! Where documents' bytes are kept: a local directory or any S3-compatible store, through the
//! `object_store` crate.
//!
//! Addresses are `{prefix}/{H(tenant)}/{H(tenant, subject)}/{document id}`, with `H` an HMAC
//! under a key derived from the installation's hash key: a subject's documents share one
//! prefix (erased together, alone), identical images of two subjects are two objects, and an
//! address reveals neither the tenant, the subject nor the content.
//!
//! `object_store`'s local store writes a temporary file and renames it without fsync. Here a
//! local put links the upload's fsync'd spool file into place and fsyncs every directory it
//! touched, so a document acknowledged to its uploader survives a crash; an S3 put is complete
//! when the store answered.

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use futures_util::{StreamExt as _, TryStreamExt as _};
use hmac::{Hmac, Mac};
use object_store::path::Path;
use object_store::{GetOptions, GetRange, GetResult, ObjectStore};
use sha2::Sha256;
use tokio::io::AsyncWriteExt as _;

use crate::config::{DocumentStorageConfig, DocumentStorageKind};
use crate::decide::normalize::HashKey;

pub use object_store::Error as ObjectError;

/// The configured object storage.
pub struct ObjectStorage {
    store: Arc<dyn ObjectStore>,
    /// `Some(root)` for the local store.
    local_root: Option<PathBuf>,
    prefix: Path,
    key: [u8; 32],
    /// Where uploads are spooled while they are checked (local disk, private).
    pub spool: PathBuf,
    /// For messages: `local:/var/lib/idstream/documents`, `s3://bucket/prefix`.
    pub describe: String,
}

impl std::fmt::Debug for ObjectStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe)
    }
}

impl ObjectStorage {
    /// Opens the configured store. `spool` is a local directory for uploads in progress (its
    /// leftovers from a crash are removed here).
    pub fn open(cfg: &DocumentStorageConfig, data_dir: &FsPath, hash_key: &HashKey) -> anyhow::Result<ObjectStorage> {
        use anyhow::Context as _;
        let spool = data_dir.join("documents-spool");
        if spool.exists() {
            std::fs::remove_dir_all(&spool).with_context(|| format!("cannot clear {}", spool.display()))?;
        }
        std::fs::create_dir_all(&spool).with_context(|| format!("cannot create {}", spool.display()))?;
        let prefix = Path::parse(&cfg.prefix).context("documents.storage.prefix")?;
        let key = hash_key.derive("document-addresses");
        match cfg.kind {
            DocumentStorageKind::Local => {
                let root = cfg.path.clone().unwrap_or_else(|| data_dir.join("documents"));
                std::fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
                let root = root.canonicalize().with_context(|| format!("cannot open {}", root.display()))?;
                let store = object_store::local::LocalFileSystem::new_with_prefix(&root)
                    .with_context(|| format!("cannot open {}", root.display()))?;
                Ok(ObjectStorage {
                    store: Arc::new(store),
                    describe: format!("local:{}", root.display()),
                    local_root: Some(root),
                    prefix,
                    key,
                    spool,
                })
            }
            DocumentStorageKind::S3 => {
                let bucket = cfg.bucket.clone().context("documents.storage.bucket is required")?;
                let mut b = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(&bucket);
                if let Some(e) = &cfg.endpoint {
                    b = b.with_endpoint(e).with_allow_http(cfg.allow_http);
                }
                if let Some(r) = &cfg.region {
                    b = b.with_region(r);
                }
                if let (Some(id), Some(secret)) = (&cfg.access_key_id, &cfg.secret_access_key) {
                    b = b.with_access_key_id(id).with_secret_access_key(secret.expose());
                }
                let store = b.build().context("documents.storage (s3)")?;
                Ok(ObjectStorage {
                    store: Arc::new(store),
                    describe: format!("s3://{bucket}/{prefix}"),
                    local_root: None,
                    prefix,
                    key,
                    spool,
                })
            }
        }
    }

    fn mac(&self, parts: &[&str]) -> String {
        let mut m = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        for p in parts {
            m.update(&(p.len() as u64).to_be_bytes());
            m.update(p.as_bytes());
        }
        hex::encode(&m.finalize().into_bytes()[..16])
    }

    /// The prefix of one subject's documents.
    pub fn subject_prefix(&self, tenant: &str, subject: &str) -> Path {
        self.prefix.child(self.mac(&["tenant", tenant])).child(self.mac(&["subject", tenant, subject]))
    }

    /// Where document `id` of `subject` is stored.
    pub fn address(&self, tenant: &str, subject: &str, id: &str) -> Path {
        self.subject_prefix(tenant, subject).child(id)
    }

    /// A keyed digest of a document's content (hex SHA-256 of the bytes, then HMAC within the
    /// tenant): equal for the same image uploaded twice in a tenant, meaningless outside it.
    pub fn content_mac(&self, tenant: &str, sha256_hex: &str) -> String {
        self.mac(&["content", tenant, sha256_hex])
    }

    /// Stores the (complete, fsync'd) local file `file` at `path`.
    pub async fn put_file(&self, path: &Path, file: &FsPath) -> Result<(), ObjectError> {
        match &self.local_root {
            Some(root) => {
                let target = root.join(path.as_ref());
                let file = file.to_owned();
                tokio::task::spawn_blocking(move || durable_link(&file, &target))
                    .await
                    .expect("the link task does not panic")
                    .map_err(|e| ObjectError::Generic { store: "local", source: Box::new(e) })
            }
            None => {
                let mut src = tokio::fs::File::open(file)
                    .await
                    .map_err(|e| ObjectError::Generic { store: "spool", source: Box::new(e) })?;
                // One PUT up to 8 MiB, a multipart upload above: memory stays bounded.
                let mut w = object_store::buffered::BufWriter::with_capacity(
                    Arc::clone(&self.store),
                    path.clone(),
                    8 * 1024 * 1024,
                );
                let copied = tokio::io::copy(&mut src, &mut w).await;
                match copied {
                    Ok(_) => w.shutdown().await.map_err(io_err),
                    Err(e) => {
                        let _ = w.abort().await;
                        Err(io_err(e))
                    }
                }
            }
        }
    }

    /// Stores `bytes` at `path` (tests, small objects).
    pub async fn put_bytes(&self, path: &Path, bytes: &[u8]) -> Result<(), ObjectError> {
        let tmp = tempfile_in(&self.spool).map_err(io_err)?;
        std::fs::write(&tmp, bytes).map_err(io_err)?;
        std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(io_err)?;
        let r = self.put_file(path, &tmp).await;
        let _ = std::fs::remove_file(&tmp);
        r
    }

    /// The object (a stream of its bytes in `into_stream()`), or a byte range of it.
    pub async fn get(&self, path: &Path, range: Option<std::ops::Range<u64>>) -> Result<GetResult, ObjectError> {
        let opts = GetOptions { range: range.map(GetRange::Bounded), ..Default::default() };
        self.store.get_opts(path, opts).await
    }

    pub async fn delete(&self, path: &Path) -> Result<(), ObjectError> {
        match self.store.delete(path).await {
            Ok(()) | Err(ObjectError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Every object under `prefix` (default: all documents): path, size, last modified (Unix s).
    pub async fn list(&self, prefix: Option<&Path>) -> Result<Vec<(Path, u64, i64)>, ObjectError> {
        let prefix = prefix.unwrap_or(&self.prefix);
        self.store.list(Some(prefix)).map_ok(|m| (m.location, m.size, m.last_modified.timestamp())).try_collect().await
    }

    /// Deletes every object under `prefix` (a subject's erasure); how many were deleted.
    pub async fn delete_prefix(&self, prefix: &Path) -> Result<usize, ObjectError> {
        let all = self.list(Some(prefix)).await?;
        let n = all.len();
        let mut s = futures_util::stream::iter(all.into_iter().map(|(p, _, _)| async move { self.delete(&p).await }))
            .buffer_unordered(8);
        while let Some(r) = s.next().await {
            r?;
        }
        Ok(n)
    }

    /// A new private spool file for an upload (removed by the caller, or at the next start).
    pub fn spool_file(&self) -> std::io::Result<PathBuf> {
        tempfile_in(&self.spool)
    }
}

fn io_err(e: std::io::Error) -> ObjectError {
    ObjectError::Generic { store: "documents", source: Box::new(e) }
}

fn tempfile_in(dir: &FsPath) -> std::io::Result<PathBuf> {
    let p = dir.join(format!("{}.part", uuid::Uuid::now_v7().simple()));
    std::fs::OpenOptions::new().write(true).create_new(true).open(&p)?;
    Ok(p)
}

/// Links the fsync'd `file` at `target` and makes the link durable: every directory created on
/// the way, and the one holding the link, is fsync'd.
fn durable_link(file: &FsPath, target: &FsPath) -> std::io::Result<()> {
    let dir = target.parent().expect("an object path has a parent");
    // The directories that do not exist yet, outermost first: each is fsync'd in its parent.
    let mut missing = Vec::new();
    let mut d = dir;
    while !d.exists() {
        missing.push(d.to_owned());
        d = d.parent().expect("the root exists");
    }
    std::fs::create_dir_all(dir)?;
    match std::fs::hard_link(file, target) {
        Ok(()) => {}
        // Same id again (a retried put): the object is the same bytes.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    sync_dir(dir)?;
    for m in missing.iter().rev() {
        sync_dir(m.parent().expect("below the root"))?;
    }
    Ok(())
}

fn sync_dir(d: &FsPath) -> std::io::Result<()> {
    std::fs::File::open(d)?.sync_all()
}
