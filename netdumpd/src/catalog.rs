//! The dumps on disk, as retention and the admin commands see them: every directory of
//! the dump directory that holds an `info.json`, with its client, time, status and the
//! bytes it takes on disk (vmcores are sparse: their holes take nothing).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::dumpdir::{INFO, UPLOAD};

/// One dump directory.
#[derive(Debug, Clone)]
pub struct DumpEntry {
    /// The directory's name in the dump directory.
    pub name: String,
    pub path: PathBuf,
    pub client: String,
    /// RFC 3339 UTC, from `info.json` (sorts in time order).
    pub start_time: String,
    pub status: String,
    /// Bytes on disk of every file in it.
    pub disk_bytes: u64,
    pub info: Value,
    /// Its upload's status, `pending` or `done`, when it has an `upload.json`.
    pub upload: Option<String>,
}

impl DumpEntry {
    pub fn str_field(&self, pointer: &str) -> &str {
        self.info.pointer(pointer).and_then(Value::as_str).unwrap_or("")
    }
}

/// Every dump under `root`, oldest first (by start time, then name). Symbolic links
/// (the `last` links) and directories without a readable `info.json` are skipped.
pub fn scan(root: &Path) -> std::io::Result<Vec<DumpEntry>> {
    scan_entries(root, true)
}

/// [`scan`] without each dump's `info` (null): what retention needs, at a few hundred
/// bytes a dump instead of the whole parsed `info.json`, so that scanning a directory of
/// many dumps costs the server little memory.
pub fn scan_summaries(root: &Path) -> std::io::Result<Vec<DumpEntry>> {
    scan_entries(root, false)
}

fn scan_entries(root: &Path, keep_info: bool) -> std::io::Result<Vec<DumpEntry>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root)? {
        let Ok(entry) = entry else { continue };
        let Ok(kind) = entry.file_type() else { continue };
        if !kind.is_dir() {
            continue;
        }
        let path = entry.path();
        let Ok(bytes) = std::fs::read(path.join(INFO)) else { continue };
        let Ok(info) = serde_json::from_slice::<Value>(&bytes) else { continue };
        let get = |p: &str| info.pointer(p).and_then(Value::as_str).unwrap_or("").to_string();
        out.push(DumpEntry {
            name: entry.file_name().to_string_lossy().into_owned(),
            client: get("/client/name"),
            start_time: get("/start_time"),
            status: get("/status"),
            disk_bytes: disk_usage(&path),
            upload: upload_status(&path),
            path,
            info: if keep_info { info } else { Value::Null },
        });
    }
    out.sort_by(|a, b| (&a.start_time, &a.name).cmp(&(&b.start_time, &b.name)));
    Ok(out)
}

/// The `status` of a dump directory's `upload.json`, if it has a readable one.
pub fn upload_status(dir: &Path) -> Option<String> {
    let v: Value = serde_json::from_slice(&std::fs::read(dir.join(UPLOAD)).ok()?).ok()?;
    v.get("status").and_then(Value::as_str).map(String::from)
}

/// Bytes the files of a directory (one level) occupy on disk.
pub fn disk_usage(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.blocks() * 512)
        .sum()
}

/// Name of the link to a client's newest dump: `<client>.last`.
pub fn last_link_name(client: &str) -> String {
    format!("{client}.last")
}
