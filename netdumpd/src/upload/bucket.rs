//! The dumps in the bucket, whichever server uploaded them: `netdumpd list --bucket`,
//! `show --bucket`, and `fetch`, which restores a dump's files (a vmcore sparse again,
//! each extent checked against its manifest's CRC-32).

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use futures_util::StreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

use super::INDEX;
use super::extents::{Manifest, Restore};
use super::settings::{Credentials, UploadConfig};
use super::ship::Index;
use super::store::explain;

/// Index objects read at once by [`Bucket::dumps`].
const INDEX_READS: usize = 16;

/// A connection to the configured bucket, for the admin commands.
pub struct Bucket {
    config: UploadConfig,
    store: Arc<dyn ObjectStore>,
    runtime: tokio::runtime::Runtime,
}

impl Bucket {
    pub fn open(config: &UploadConfig) -> anyhow::Result<Bucket> {
        let credentials = Credentials::resolve(config)?;
        let store: Arc<dyn ObjectStore> = super::store::build(config, &credentials)?;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        Ok(Bucket { config: config.clone(), store, runtime })
    }

    /// `s3://<bucket>/<prefix>`, for messages.
    pub fn url(&self) -> String {
        format!("s3://{}/{}", self.config.bucket, self.config.prefix)
    }

    /// Every dump's index under the prefix, oldest first (by start time, then id).
    pub fn dumps(&self) -> anyhow::Result<Vec<Index>> {
        self.runtime.block_on(async {
            let prefix = (!self.config.prefix.is_empty()).then(|| Path::from(self.config.prefix.as_str()));
            let mut listing = self.store.list(prefix.as_ref());
            let mut keys = Vec::new();
            while let Some(meta) = listing.next().await {
                let meta = meta.map_err(|e| anyhow::anyhow!("list {}: {}", self.url(), explain(&e)))?;
                if meta.location.filename() == Some(INDEX) {
                    keys.push(meta.location);
                }
            }
            // One GET per dump: a bucket of thousands is read INDEX_READS at a time.
            let mut reads = futures_util::stream::iter(keys)
                .map(|k| async move { (self.get(&k).await, k) })
                .buffer_unordered(INDEX_READS);
            let mut out = Vec::new();
            while let Some((bytes, k)) = reads.next().await {
                match serde_json::from_slice::<Index>(&bytes?) {
                    Ok(i) => out.push(i),
                    Err(e) => tracing::warn!(key = %k, "not a dump index: {e}"),
                }
            }
            out.sort_by(|a, b| (&a.start_time, a.id()).cmp(&(&b.start_time, b.id())));
            Ok(out)
        })
    }

    async fn get(&self, key: &Path) -> anyhow::Result<bytes::Bytes> {
        let r = self.store.get(key).await.map_err(|e| anyhow::anyhow!("get {key}: {}", explain(&e)))?;
        r.bytes().await.map_err(|e| anyhow::anyhow!("get {key}: {}", explain(&e)))
    }

    /// A small object of a dump (`info.json`, `log`, `analysis.txt`), if it has it.
    pub fn read_file(&self, index: &Index, name: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let Some(f) = index.files.iter().find(|f| f.name == name && f.manifest.is_none()) else { return Ok(None) };
        let key = Path::from(format!("{}/{}", index.key, f.object));
        self.runtime.block_on(async { Ok(Some(self.get(&key).await?.to_vec())) })
    }

    /// The dump `what` names: `<client>/<dump>@<server>`, `<dump>@<server>`, a dump
    /// name uploaded by one server only, or a client name (its newest dump).
    pub fn find(&self, what: &str) -> anyhow::Result<Index> {
        let dumps = self.dumps()?;
        let what = what.trim_end_matches('/');
        let exact: Vec<&Index> =
            dumps.iter().filter(|i| i.id() == what || format!("{}/{}", i.client, i.id()) == what).collect();
        if let Some(i) = exact.first() {
            return Ok((*i).clone());
        }
        let by_name: Vec<&Index> = dumps.iter().filter(|i| i.dump == what).collect();
        match by_name.len() {
            1 => return Ok(by_name[0].clone()),
            n if n > 1 => bail!(
                "{what:?} was uploaded by {n} servers: name one of {}",
                by_name.iter().map(|i| i.id()).collect::<Vec<_>>().join(", ")
            ),
            _ => {}
        }
        if let Some(i) = dumps.iter().rev().find(|i| i.client == what) {
            return Ok(i.clone());
        }
        bail!("no dump {what:?} in {} (<dump>@<server>, a dump name, or a client name)", self.url())
    }

    /// Restores dump `index` into `to` (created; must not exist): every file, the sparse
    /// ones rebuilt from their extents and checked. Returns the files written.
    pub fn fetch(&self, index: &Index, to: &FsPath) -> anyhow::Result<Vec<PathBuf>> {
        crate::files::create_private_dir_all(to.parent().unwrap_or(FsPath::new(".")))?;
        std::fs::DirBuilder::new()
            .mode(crate::files::PRIVATE_DIR_MODE)
            .create(to)
            .with_context(|| format!("create {} (it must not exist)", to.display()))?;
        self.runtime.block_on(async {
            let mut written = Vec::new();
            for f in &index.files {
                anyhow::ensure!(
                    super::settings::valid_part(&f.name),
                    "index of {} names a file {:?}: refused",
                    index.id(),
                    f.name
                );
                let out = to.join(&f.name);
                let data_key = Path::from(format!("{}/{}", index.key, f.object));
                match &f.manifest {
                    Some(m) => {
                        let bytes = self.get(&Path::from(format!("{}/{m}", index.key))).await?;
                        let manifest: Manifest =
                            serde_json::from_slice(&bytes).with_context(|| format!("parse manifest {m}"))?;
                        anyhow::ensure!(
                            manifest.file_len == f.size && manifest.data_len == f.stored,
                            "manifest {m} does not match the index ({} / {} bytes)",
                            manifest.file_len,
                            manifest.data_len
                        );
                        let mut restore = Restore::create(&out, &manifest)?;
                        if manifest.data_len > 0 {
                            let r = self
                                .store
                                .get(&data_key)
                                .await
                                .map_err(|e| anyhow::anyhow!("get {data_key}: {}", explain(&e)))?;
                            let mut stream = r.into_stream();
                            while let Some(chunk) = stream.next().await {
                                let chunk = chunk.map_err(|e| anyhow::anyhow!("get {data_key}: {}", explain(&e)))?;
                                restore.write(&chunk)?;
                            }
                        }
                        restore.finish()?;
                    }
                    None => {
                        let bytes = if f.stored == 0 { bytes::Bytes::new() } else { self.get(&data_key).await? };
                        anyhow::ensure!(
                            bytes.len() as u64 == f.size,
                            "{}: {} bytes in the bucket, the index says {}",
                            f.name,
                            bytes.len(),
                            f.size
                        );
                        crate::files::write_private(&out, &bytes)?;
                    }
                }
                written.push(out);
            }
            Ok(written)
        })
    }
}
