//! Dumps an earlier netdumpd left in status `receiving` (it was killed, crashed or lost
//! power mid-dump), found at start-up and marked `incomplete` with what arrived, so that
//! nothing on disk looks complete, or still in progress, when it is neither.
//!
//! A restarted server does not resume such a dump. The client keeps no copy of the
//! packets the server acknowledged, and what the server knew of the stream (which `seq`s
//! arrived, the CRC so far) died with it, so it could never verify the whole. The
//! registry remembers that the cookie dumped, so the client's next DATA is answered with
//! an ACK that has STOP: the client ends at once instead of after its silence timeout.
//!
//! `vmcore-incomplete` keeps every page that reached the disk; the counters in
//! `info.json` are those of its last refresh (at most 5 s old). A directory holding a
//! `vmcore` is the exception: the server renames the core only after FINISH verified it,
//! so such a dump is complete and only its `info.json` was not rewritten in time.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::dumpdir::{INFO, VMCORE, VMCORE_INCOMPLETE};
use crate::files::write_atomic;

/// What start-up did to one dump directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    pub dir: PathBuf,
    /// `incomplete`, or `complete` when its vmcore had been verified.
    pub status: &'static str,
    /// The cookie that dumped there (from `info.json`): the registry, which is written
    /// at most once a second, may not have recorded its dump yet.
    pub cookie: Option<u64>,
}

/// Why a dump found receiving is incomplete, in `info.json`.
pub const INTERRUPTED: &str =
    "netdumpd stopped while receiving this dump (found at start-up); the files hold what arrived until then";

/// Marks every dump under `root` whose `info.json` says `receiving`.
pub fn recover_interrupted(root: &Path) -> Vec<Recovered> {
    let Ok(entries) = std::fs::read_dir(root) else { return Vec::new() };
    let mut dirs: Vec<PathBuf> = entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect();
    dirs.sort();
    dirs.into_iter().filter_map(|dir| recover(&dir).map(|(status, cookie)| Recovered { dir, status, cookie })).collect()
}

fn recover(dir: &Path) -> Option<(&'static str, Option<u64>)> {
    let path = dir.join(INFO);
    let mut info: Value = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
    if info.get("status")? != "receiving" {
        return None;
    }
    let verified = dir.join(VMCORE).exists();
    let (status, reason, core) = if verified {
        ("complete", "verified; netdumpd stopped before it rewrote info.json", VMCORE)
    } else {
        ("incomplete", INTERRUPTED, VMCORE_INCOMPLETE)
    };
    let cookie = info
        .pointer("/client/cookie")
        .and_then(Value::as_str)
        .and_then(|c| u64::from_str_radix(c.trim_start_matches("0x"), 16).ok());
    info["status"] = status.into();
    info["status_reason"] = reason.into();
    if verified {
        info["crc"]["verified"] = true.into();
    }
    if dir.join(core).exists() {
        info["vmcore"] = core.into();
    }
    if info.get("end_time").is_none_or(Value::is_null) {
        info["end_time"] = crate::utc::rfc3339(crate::utc::now()).into();
    }
    let mut text = serde_json::to_vec_pretty(&info).ok()?;
    text.push(b'\n');
    match write_atomic(&path, &text) {
        Ok(()) => {
            tracing::warn!(dir = %dir.display(), status, "dump left receiving by an earlier netdumpd: {reason}");
            Some((status, cookie))
        }
        Err(e) => {
            tracing::error!(dir = %dir.display(), "cannot mark an interrupted dump {status}: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_dir::TestDir;

    fn dump(root: &Path, name: &str, status: &str, core: &str) -> PathBuf {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let info = serde_json::json!({
            "status": status, "status_reason": "", "end_time": null,
            "client": { "name": "node", "cookie": "0x00000000feedf00d" },
            "crc": { "expected": null, "computed": "0x0", "verified": false },
            "bytes_received": 4096, "vmcore": core,
        });
        std::fs::write(dir.join(INFO), info.to_string()).unwrap();
        std::fs::write(dir.join(core), b"core").unwrap();
        dir
    }

    fn info(dir: &Path) -> Value {
        serde_json::from_slice(&std::fs::read(dir.join(INFO)).unwrap()).unwrap()
    }

    #[test]
    fn a_dump_left_receiving_is_marked_incomplete_and_keeps_what_arrived() {
        let root = TestDir::new("recover-receiving");
        let dir = dump(root.path(), "node-20260101-000000", "receiving", VMCORE_INCOMPLETE);
        let found = recover_interrupted(root.path());
        assert_eq!(found, vec![Recovered { dir: dir.clone(), status: "incomplete", cookie: Some(0xfeed_f00d) }]);
        let i = info(&dir);
        assert_eq!(i["status"], "incomplete");
        assert_eq!(i["status_reason"], INTERRUPTED);
        assert_eq!(i["crc"]["verified"], false);
        assert_eq!(i["bytes_received"], 4096);
        assert!(i["end_time"].is_string());
        assert_eq!(std::fs::read(dir.join(VMCORE_INCOMPLETE)).unwrap(), b"core");
        assert!(!dir.join(VMCORE).exists());
        // A second start-up finds nothing more to do.
        assert!(recover_interrupted(root.path()).is_empty());
    }

    #[test]
    fn a_dump_renamed_after_verification_is_complete() {
        let root = TestDir::new("recover-verified");
        let dir = dump(root.path(), "node-20260101-000001", "receiving", VMCORE);
        assert_eq!(recover_interrupted(root.path())[0].status, "complete");
        assert_eq!(info(&dir)["crc"]["verified"], true);
        assert_eq!(info(&dir)["vmcore"], VMCORE);
    }

    #[test]
    fn ended_dumps_and_other_directories_are_left_alone() {
        let root = TestDir::new("recover-others");
        let done = dump(root.path(), "a-20260101-000000", "complete", VMCORE);
        let failed = dump(root.path(), "b-20260101-000000", "incomplete", VMCORE_INCOMPLETE);
        std::fs::create_dir_all(root.path().join("not-a-dump")).unwrap();
        let before = (info(&done), info(&failed));
        assert!(recover_interrupted(root.path()).is_empty());
        assert_eq!((info(&done), info(&failed)), before);
    }
}
