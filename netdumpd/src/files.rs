//! How netdumpd creates files: private (directories 0700, files 0600, whatever the
//! umask: what netdumpd writes is about crashed machines, and may quote their memory),
//! and small files replaced atomically, so that a reader (or a crash of the server) sees
//! either the old or the new contents, never half of one: write a temporary file beside
//! it, flush it to disk, rename it over the old one.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

/// The mode of every directory netdumpd creates.
pub const PRIVATE_DIR_MODE: u32 = 0o700;
/// The mode of every file netdumpd creates.
pub const PRIVATE_FILE_MODE: u32 = 0o600;

/// Creates `path` and its missing parents 0700 (the umask can only take more away).
pub fn create_private_dir_all(path: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new().recursive(true).mode(PRIVATE_DIR_MODE).create(path)
}

/// Options that create a file 0600 (the umask can only take more away).
pub fn private_file() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.mode(PRIVATE_FILE_MODE);
    o
}

pub fn write_atomic(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut tmp_name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let result = (|| {
        // A temporary left by a crash keeps its mode when truncated: start afresh.
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut f = private_file().write(true).create_new(true).open(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        std::fs::remove_file(&tmp).ok();
    }
    result
}

/// `std::fs::write`, but a file it creates is 0600 whatever the umask (an existing
/// file keeps its mode).
pub fn write_private(path: &Path, contents: &[u8]) -> io::Result<()> {
    private_file().write(true).create(true).truncate(true).open(path)?.write_all(contents)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_dir::TestDir;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn files_are_written_private() {
        let dir = TestDir::new("atomic-private");
        let (a, b) = (dir.path().join("a.json"), dir.path().join("b.txt"));
        // A temporary left behind with a wider mode is not reused as it is.
        std::fs::write(dir.path().join("a.json.tmp"), b"left").unwrap();
        std::fs::set_permissions(dir.path().join("a.json.tmp"), std::fs::Permissions::from_mode(0o666)).unwrap();
        write_atomic(&a, b"one").unwrap();
        write_private(&b, b"two").unwrap();
        assert_eq!((mode(&a), mode(&b)), (0o600, 0o600));
        assert_eq!(std::fs::read(&b).unwrap(), b"two");
    }

    #[test]
    fn replaces_contents_and_leaves_no_temporary() {
        let dir = TestDir::new("atomic");
        let path = dir.path().join("a.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["a.json"]);
    }

    #[test]
    fn fails_cleanly_when_the_directory_is_missing() {
        let dir = TestDir::new("atomic-missing");
        let path = dir.path().join("no/such/dir/a.json");
        assert!(write_atomic(&path, b"x").is_err());
    }
}
