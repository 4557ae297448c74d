//! One dump directory to the bucket: every file (a vmcore as its data extents and a
//! manifest, [`super::extents`]), then each object checked (HEAD: its size; the
//! manifests read back byte for byte), then `index.json`, written last and read back:
//! a dump whose index is in the bucket is all there.

use std::fs::File;
use std::path::Path as FsPath;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::extents::{Extent, Manifest, data_runs, read_runs};
use super::marker::{MARKER, ObjectRecord};
use super::settings::UploadConfig;
use super::store::explain;
use super::{DATA_SUFFIX, INDEX, MANIFEST_SUFFIX};
use crate::dumpdir::INFO;

/// Bytes read from a file at a time.
const PIECE: usize = 1 << 20;
/// Parts of one object uploaded at once.
const PARTS_IN_FLIGHT: usize = 2;
/// How often the stop flag is looked at during an upload: often, so that a stop catches
/// a multipart upload before it ends on its own and aborts it.
const UPLOAD_STOP_POLL: Duration = Duration::from_millis(10);
/// How long a stopped upload may take to abort its multipart upload (one request; the S3
/// server may be the reason for the stop).
pub const ABORT_BOUND: Duration = Duration::from_secs(5);

/// Returns once `stop` is set (looked at every [`UPLOAD_STOP_POLL`]).
pub async fn stopped(stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        tokio::time::sleep(UPLOAD_STOP_POLL).await;
    }
}

/// A file of the dump as the index names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexFile {
    /// Its name in the dump directory.
    pub name: String,
    /// The object holding its bytes (for a sparse file, its data extents only).
    pub object: String,
    /// For a sparse file: the manifest object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<String>,
    /// The file's length.
    pub size: u64,
    /// Bytes stored in `object`.
    pub stored: u64,
}

/// `index.json`: what a dump in the bucket is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Index {
    pub format: u32,
    pub server: String,
    pub client: String,
    /// The dump's directory name on its server.
    pub dump: String,
    /// `<prefix>/<client>/<dump>@<server>`.
    pub key: String,
    pub status: String,
    pub start_time: String,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub signature: Option<String>,
    pub uploaded_at: String,
    pub files: Vec<IndexFile>,
}

impl Index {
    /// `<dump>@<server>`: the dump's id in the bucket.
    pub fn id(&self) -> String {
        format!("{}@{}", self.dump, self.server)
    }

    pub fn stored_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.stored).sum()
    }
}

/// Whether a file is stored as its data extents (the vmcores: sparse).
pub fn is_sparse(name: &str) -> bool {
    name.starts_with(crate::dumpdir::VMCORE)
}

/// The files of a dump directory that are uploaded: regular files, not the marker,
/// not temporaries, not hidden.
pub fn dump_files(dir: &FsPath) -> std::io::Result<Vec<String>> {
    let mut names = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if !e.file_type()?.is_file() || name == MARKER || name.ends_with(".tmp") || name.starts_with('.') {
            continue;
        }
        names.push(name);
    }
    names.sort();
    Ok(names)
}

/// The client and status of a dump directory, from its `info.json`.
pub fn dump_info(dir: &FsPath) -> anyhow::Result<Value> {
    let bytes = std::fs::read(dir.join(INFO)).with_context(|| format!("{}", dir.join(INFO).display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("parse {}", dir.join(INFO).display()))
}

fn s(v: &Value, p: &str) -> String {
    v.pointer(p).and_then(Value::as_str).unwrap_or("").to_string()
}

/// Uploads `dir` under `key` and verifies it; returns the objects written. When `stop`
/// is set during a multipart upload, that upload is aborted (its parts freed in the
/// bucket) and the result is an error.
pub async fn ship(
    store: &Arc<dyn ObjectStore>,
    c: &UploadConfig,
    dir: &FsPath,
    key: &str,
    stop: &AtomicBool,
) -> anyhow::Result<Vec<ObjectRecord>> {
    let info = dump_info(dir)?;
    let status = s(&info, "/status");
    if status == "receiving" {
        bail!("still being received");
    }
    let dump = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut files = Vec::new();
    let mut objects = Vec::new();
    let mut read_back: Vec<(Path, Vec<u8>)> = Vec::new();
    for name in dump_files(dir)? {
        let path = dir.join(&name);
        let f = File::open(&path).with_context(|| format!("open {}", path.display()))?;
        let len = f.metadata()?.len();
        let sparse = is_sparse(&name);
        let runs = if sparse {
            data_runs(&f, len)?
        } else if len > 0 {
            vec![(0, len)]
        } else {
            vec![]
        };
        let stored: u64 = runs.iter().map(|r| r.1).sum();
        let object = if sparse { format!("{name}{DATA_SUFFIX}") } else { name.clone() };
        let object_path = Path::from(format!("{key}/{object}"));
        let extents = upload_runs(store, &object_path, &f, &runs, stored, c.part_size, stop)
            .await
            .with_context(|| format!("upload {name} to {object_path}"))?;
        objects.push(ObjectRecord { key: object_path.to_string(), size: stored });
        let manifest = if sparse {
            let m = Manifest {
                format: 1,
                file: name.clone(),
                file_len: len,
                data_object: object.clone(),
                data_len: stored,
                extents,
            };
            let manifest_name = format!("{name}{MANIFEST_SUFFIX}");
            let bytes = serde_json::to_vec(&m)?;
            let manifest_path = Path::from(format!("{key}/{manifest_name}"));
            put(store, &manifest_path, bytes.clone()).await?;
            objects.push(ObjectRecord { key: manifest_path.to_string(), size: bytes.len() as u64 });
            read_back.push((manifest_path, bytes));
            Some(manifest_name)
        } else {
            None
        };
        files.push(IndexFile { name, object, manifest, size: len, stored });
    }
    verify(store, &objects, &read_back).await?;
    let index = Index {
        format: 1,
        server: c.server_name.clone(),
        client: s(&info, "/client/name"),
        dump,
        key: key.to_string(),
        status,
        start_time: s(&info, "/start_time"),
        message: s(&info, "/message"),
        signature: info.pointer("/dedup/signature").and_then(Value::as_str).map(String::from),
        uploaded_at: crate::utc::rfc3339(crate::utc::now()),
        files,
    };
    let bytes = serde_json::to_vec_pretty(&index)?;
    let index_path = Path::from(format!("{key}/{INDEX}"));
    put(store, &index_path, bytes.clone()).await?;
    let index_record = ObjectRecord { key: index_path.to_string(), size: bytes.len() as u64 };
    verify(store, std::slice::from_ref(&index_record), &[(index_path, bytes)]).await?;
    objects.push(index_record);
    Ok(objects)
}

async fn put(store: &Arc<dyn ObjectStore>, path: &Path, bytes: Vec<u8>) -> anyhow::Result<()> {
    store.put(path, PutPayload::from(bytes)).await.map_err(|e| anyhow::anyhow!("put {path}: {}", explain(&e)))?;
    Ok(())
}

/// HEAD of every object (its size), and the small objects read back whole.
async fn verify(
    store: &Arc<dyn ObjectStore>,
    objects: &[ObjectRecord],
    read_back: &[(Path, Vec<u8>)],
) -> anyhow::Result<()> {
    for o in objects {
        let path = Path::from(o.key.as_str());
        let meta = store.head(&path).await.map_err(|e| anyhow::anyhow!("verify {}: {}", o.key, explain(&e)))?;
        if meta.size != o.size {
            bail!("verify {}: the bucket holds {} bytes, {} were uploaded", o.key, meta.size, o.size);
        }
    }
    for (path, bytes) in read_back {
        let got = store
            .get(path)
            .await
            .map_err(|e| anyhow::anyhow!("read back {path}: {}", explain(&e)))?
            .bytes()
            .await
            .map_err(|e| anyhow::anyhow!("read back {path}: {}", explain(&e)))?;
        if got.as_ref() != &bytes[..] {
            bail!("verify {path}: the bucket's copy differs from what was uploaded");
        }
    }
    Ok(())
}

/// The runs of `f` as one object: one PUT up to `part_size`, a multipart upload beyond
/// (aborted if it fails part-way or `stop` is set: parts left behind would be kept, and
/// billed, until a lifecycle rule removes them). Returns the runs as extents with their
/// CRCs.
async fn upload_runs(
    store: &Arc<dyn ObjectStore>,
    path: &Path,
    f: &File,
    runs: &[(u64, u64)],
    total: u64,
    part_size: usize,
    stop: &AtomicBool,
) -> anyhow::Result<Vec<Extent>> {
    if total <= part_size as u64 {
        let mut buf = Vec::with_capacity(total as usize);
        let extents = read_runs(f, runs, PIECE, |b| {
            buf.extend_from_slice(b);
            Ok(())
        })?;
        put(store, path, buf).await?;
        return Ok(extents);
    }
    let upload = store.put_multipart(path).await.map_err(|e| anyhow::anyhow!("{}", explain(&e)))?;
    let mut w = WriteMultipart::new_with_chunk_size(upload, part_size);
    match write_runs(&mut w, f, runs, stop).await {
        Ok(extents) => {
            w.finish().await.map_err(|e| anyhow::anyhow!("complete multipart upload: {}", explain(&e)))?;
            Ok(extents)
        }
        Err(e) => {
            // Best effort, bounded: the parts uploaded so far are freed; the error is the
            // cause. The parts in flight end first: one the server was still receiving
            // when the abort came could be stored after it, and stay.
            let abort = async {
                let _ = w.wait_for_capacity(0).await;
                w.abort().await
            };
            match tokio::time::timeout(ABORT_BOUND, abort).await {
                Ok(Ok(())) => tracing::debug!(object = %path, "multipart upload aborted"),
                Ok(Err(a)) => tracing::warn!(object = %path, "multipart upload not aborted: {}", explain(&a)),
                Err(_) => tracing::warn!(object = %path, "multipart upload not aborted within {ABORT_BOUND:?}"),
            }
            Err(e)
        }
    }
}

/// Feeds the runs to `w`, at most [`PARTS_IN_FLIGHT`] parts in flight; stops feeding it
/// with an error once `stop` is set.
async fn write_runs(
    w: &mut WriteMultipart,
    f: &File,
    runs: &[(u64, u64)],
    stop: &AtomicBool,
) -> anyhow::Result<Vec<Extent>> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; PIECE];
    let mut out = Vec::with_capacity(runs.len());
    for &(offset, len) in runs {
        let mut crc = crc32fast::Hasher::new();
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(PIECE as u64) as usize;
            f.read_exact_at(&mut buf[..n], offset + done)?;
            crc.update(&buf[..n]);
            tokio::select! {
                r = w.wait_for_capacity(PARTS_IN_FLIGHT) => {
                    r.map_err(|e| anyhow::anyhow!("upload part: {}", explain(&e)))?;
                }
                () = stopped(stop) => bail!("interrupted by netdumpd's stop"),
            }
            w.write(&buf[..n]);
            done += n as u64;
        }
        out.push(Extent { offset, len, crc32: crc.finalize() });
    }
    Ok(out)
}
