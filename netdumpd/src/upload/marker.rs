//! `upload.json` in a dump directory: whether the dump's upload is pending or done, the
//! bucket keys and sizes of its objects once verified, and the last error. Written
//! atomically; read at start to resume pending uploads, and by retention, which removes
//! a dump only once this says `done`.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// The marker's name in a dump directory.
pub const MARKER: &str = crate::dumpdir::UPLOAD;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UploadStatus {
    /// Queued or being retried.
    Pending,
    /// Every object uploaded and verified.
    Done,
}

/// An object of the dump in the bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRecord {
    pub key: String,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    pub status: UploadStatus,
    pub bucket: String,
    /// `<prefix>/<client>/<dump>@<server>`.
    pub key: String,
    /// Attempts made so far.
    pub attempts: u32,
    /// The last attempt's error, if it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// RFC 3339 UTC of the last change.
    pub updated: String,
    /// The verified objects (when done).
    #[serde(default)]
    pub objects: Vec<ObjectRecord>,
}

impl Marker {
    pub fn pending(bucket: &str, key: &str) -> Marker {
        Marker {
            status: UploadStatus::Pending,
            bucket: bucket.to_string(),
            key: key.to_string(),
            attempts: 0,
            last_error: None,
            updated: crate::utc::rfc3339(crate::utc::now()),
            objects: Vec::new(),
        }
    }

    /// The marker in `dir`, if there is a readable one.
    pub fn read(dir: &Path) -> Option<Marker> {
        serde_json::from_slice(&std::fs::read(dir.join(MARKER)).ok()?).ok()
    }

    pub fn write(&mut self, dir: &Path) -> std::io::Result<()> {
        self.updated = crate::utc::rfc3339(crate::utc::now());
        let mut text = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        text.push(b'\n');
        crate::files::write_atomic(&dir.join(MARKER), &text)
    }
}

/// The upload status of a dump directory: `None` without a marker.
pub fn status(dir: &Path) -> Option<UploadStatus> {
    Marker::read(dir).map(|m| m.status)
}
