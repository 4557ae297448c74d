//! Retention: per-client limits on the number of dumps and the bytes they take, and a
//! limit on the bytes of all dumps; the oldest go first. Each client's newest dump and
//! every dump still being received are kept whatever the limits say. After pruning, each
//! client's `<client>.last` link points to its newest dump. With uploads configured, a
//! dump is removed only once its upload is verified (its `upload.json` says `done`).

use std::collections::{BTreeMap, HashSet};
use std::io;
use std::path::Path;

use crate::catalog::{DumpEntry, last_link_name, scan_summaries};

/// Limits; `None` is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionConfig {
    pub max_dumps_per_client: Option<usize>,
    pub max_bytes_per_client: Option<u64>,
    pub max_total_bytes: Option<u64>,
    /// Uploads are configured: a dump goes only once its upload is verified
    /// (`upload.json` says done); until then it is kept, and the log says so.
    pub keep_until_uploaded: bool,
}

/// A dump retention removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removed {
    pub name: String,
    pub client: String,
    pub bytes: u64,
    pub why: &'static str,
}

/// Removes the oldest dumps beyond the limits, then updates the `last` links.
pub fn enforce(root: &Path, limits: &RetentionConfig) -> io::Result<Vec<Removed>> {
    // The job pool and the uploader both run it: one at a time, or both would remove
    // the same dump.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let dumps = scan_summaries(root)?;
    let victims = choose(&dumps, limits);
    let mut removed = Vec::new();
    for (i, why) in victims {
        let d = &dumps[i];
        if limits.keep_until_uploaded && d.upload.as_deref() != Some("done") {
            tracing::info!(
                client = %d.client,
                dump = %d.name,
                bytes = d.disk_bytes,
                "retention keeps dump until its upload is verified: {why}"
            );
            continue;
        }
        match std::fs::remove_dir_all(&d.path) {
            Ok(()) => {
                tracing::info!(client = %d.client, dump = %d.name, bytes = d.disk_bytes, "retention removed dump: {why}");
                removed.push(Removed { name: d.name.clone(), client: d.client.clone(), bytes: d.disk_bytes, why });
            }
            Err(e) => tracing::warn!(dump = %d.name, "retention cannot remove dump: {e}"),
        }
    }
    update_last_links(root)?;
    Ok(removed)
}

/// Which dumps (indices into `dumps`, oldest first) the limits remove, and why.
pub fn choose(dumps: &[DumpEntry], limits: &RetentionConfig) -> Vec<(usize, &'static str)> {
    let mut by_client: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, d) in dumps.iter().enumerate() {
        by_client.entry(&d.client).or_default().push(i);
    }
    // Never removed: each client's newest dump, and dumps still arriving.
    let keep: HashSet<usize> = by_client
        .values()
        .filter_map(|v| v.last().copied())
        .chain(dumps.iter().enumerate().filter(|(_, d)| d.status == "receiving").map(|(i, _)| i))
        .collect();
    let mut gone: Vec<(usize, &'static str)> = Vec::new();
    for indices in by_client.values() {
        let mut count = indices.len();
        let mut bytes: u64 = indices.iter().map(|&i| dumps[i].disk_bytes).sum();
        for &i in indices {
            if keep.contains(&i) {
                continue;
            }
            let why = if limits.max_dumps_per_client.is_some_and(|m| count > m) {
                "more dumps than the per-client limit"
            } else if limits.max_bytes_per_client.is_some_and(|m| bytes > m) {
                "client's dumps exceed its byte limit"
            } else {
                continue;
            };
            count -= 1;
            bytes -= dumps[i].disk_bytes;
            gone.push((i, why));
        }
    }
    if let Some(max) = limits.max_total_bytes {
        let removed: HashSet<usize> = gone.iter().map(|(i, _)| *i).collect();
        let mut total: u64 = (0..dumps.len()).filter(|i| !removed.contains(i)).map(|i| dumps[i].disk_bytes).sum();
        for (i, d) in dumps.iter().enumerate() {
            if total <= max {
                break;
            }
            if keep.contains(&i) || removed.contains(&i) {
                continue;
            }
            total -= d.disk_bytes;
            gone.push((i, "all dumps exceed the global byte limit"));
        }
    }
    gone.sort();
    gone
}

/// Points `<root>/<client>.last` at each client's newest dump; removes links of clients
/// with no dump left.
pub fn update_last_links(root: &Path) -> io::Result<()> {
    let dumps = scan_summaries(root)?;
    let mut newest: BTreeMap<&str, &str> = BTreeMap::new();
    for d in &dumps {
        newest.insert(&d.client, &d.name);
    }
    for (client, dump) in &newest {
        let link = root.join(last_link_name(client));
        if std::fs::read_link(&link).is_ok_and(|t| t == Path::new(dump)) {
            continue;
        }
        // Replace atomically: a new link beside it, renamed over the old one.
        let tmp = root.join(format!(".{}.tmp", last_link_name(client)));
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(dump, &tmp)?;
        std::fs::rename(&tmp, &link)?;
    }
    for entry in std::fs::read_dir(root)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_link = entry.file_type().is_ok_and(|t| t.is_symlink());
        if let Some(client) = name.strip_suffix(".last")
            && is_link
            && !newest.contains_key(client)
        {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_dir::TestDir;

    /// A dump directory with an info.json and a file of `bytes` real bytes.
    fn dump(root: &Path, client: &str, n: u32, bytes: usize, status: &str) -> String {
        let name = format!("{client}-2026010{n}-000000");
        let dir = root.join(&name);
        std::fs::create_dir_all(&dir).unwrap();
        let info = serde_json::json!({
            "status": status, "client": { "name": client },
            "start_time": format!("2026-01-0{n}T00:00:00Z"),
        });
        std::fs::write(dir.join("info.json"), info.to_string()).unwrap();
        std::fs::write(dir.join("vmcore"), vec![1u8; bytes]).unwrap();
        name
    }

    fn names(root: &Path) -> Vec<String> {
        scan_summaries(root).unwrap().into_iter().map(|d| d.name).collect()
    }

    #[test]
    fn the_per_client_count_removes_the_oldest_first() {
        let dir = TestDir::new("retention-count");
        let a: Vec<String> = (1..=4).map(|n| dump(dir.path(), "a", n, 4096, "complete")).collect();
        let b = dump(dir.path(), "b", 1, 4096, "complete");
        let limits = RetentionConfig { max_dumps_per_client: Some(2), ..Default::default() };
        let removed = enforce(dir.path(), &limits).unwrap();
        assert_eq!(removed.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), [&a[0], &a[1]]);
        assert_eq!(names(dir.path()), [b.clone(), a[2].clone(), a[3].clone()]);
        assert_eq!(std::fs::read_link(dir.path().join("a.last")).unwrap(), Path::new(&a[3]));
        assert_eq!(std::fs::read_link(dir.path().join("b.last")).unwrap(), Path::new(&b));
    }

    #[test]
    fn byte_limits_per_client_and_globally_remove_the_oldest_and_keep_the_newest() {
        let dir = TestDir::new("retention-bytes");
        let a: Vec<String> = (1..=3).map(|n| dump(dir.path(), "a", n, 40960, "complete")).collect();
        let b: Vec<String> = (4..=5).map(|n| dump(dir.path(), "b", n, 40960, "complete")).collect();
        let one = scan_summaries(dir.path()).unwrap()[0].disk_bytes;
        // a may keep two dumps' worth; all dumps together three.
        let limits = RetentionConfig {
            max_bytes_per_client: Some(2 * one),
            max_total_bytes: Some(3 * one),
            ..Default::default()
        };
        enforce(dir.path(), &limits).unwrap();
        // a loses its oldest (client limit), then the global limit takes the oldest left:
        // a's second; a's and b's newest stay whatever the limits say.
        assert_eq!(names(dir.path()), [a[2].clone(), b[0].clone(), b[1].clone()]);
        let tiny = RetentionConfig { max_total_bytes: Some(1), ..Default::default() };
        enforce(dir.path(), &tiny).unwrap();
        assert_eq!(names(dir.path()), [a[2].clone(), b[1].clone()], "each client's newest dump is kept");
    }

    #[test]
    fn dumps_being_received_are_never_removed() {
        let dir = TestDir::new("retention-receiving");
        let old = dump(dir.path(), "a", 1, 4096, "receiving");
        dump(dir.path(), "a", 2, 4096, "complete");
        let newest = dump(dir.path(), "a", 3, 4096, "complete");
        let limits = RetentionConfig { max_dumps_per_client: Some(1), ..Default::default() };
        enforce(dir.path(), &limits).unwrap();
        assert_eq!(names(dir.path()), [old, newest]);
    }

    #[test]
    fn with_uploads_configured_only_verified_uploads_are_removed() {
        use crate::upload::marker::Marker;
        let dir = TestDir::new("retention-upload");
        let a: Vec<String> = (1..=4).map(|n| dump(dir.path(), "a", n, 4096, "complete")).collect();
        // a1 uploaded, a2 pending, a3 without a marker; a4 the newest.
        let mut done = Marker::pending("b", "k");
        done.status = crate::upload::marker::UploadStatus::Done;
        done.write(&dir.path().join(&a[0])).unwrap();
        Marker::pending("b", "k").write(&dir.path().join(&a[1])).unwrap();
        let limits = RetentionConfig { max_dumps_per_client: Some(1), keep_until_uploaded: true, ..Default::default() };
        let removed = enforce(dir.path(), &limits).unwrap();
        assert_eq!(removed.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), [&a[0]]);
        assert_eq!(names(dir.path()), [a[1].clone(), a[2].clone(), a[3].clone()]);
        // Without uploads, the same limits remove all but the newest.
        let limits = RetentionConfig { keep_until_uploaded: false, ..limits };
        enforce(dir.path(), &limits).unwrap();
        assert_eq!(names(dir.path()), [a[3].clone()]);
    }

    #[test]
    fn the_last_link_follows_the_newest_dump_and_goes_with_the_client() {
        let dir = TestDir::new("retention-last");
        let first = dump(dir.path(), "a", 1, 10, "complete");
        update_last_links(dir.path()).unwrap();
        assert_eq!(std::fs::read_link(dir.path().join("a.last")).unwrap(), Path::new(&first));
        let second = dump(dir.path(), "a", 2, 10, "incomplete");
        update_last_links(dir.path()).unwrap();
        assert_eq!(std::fs::read_link(dir.path().join("a.last")).unwrap(), Path::new(&second));
        assert!(dir.path().join("a.last").join("info.json").exists());
        std::fs::remove_dir_all(dir.path().join(&first)).unwrap();
        std::fs::remove_dir_all(dir.path().join(&second)).unwrap();
        update_last_links(dir.path()).unwrap();
        assert!(std::fs::symlink_metadata(dir.path().join("a.last")).is_err());
    }
}
