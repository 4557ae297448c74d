//! Replacing a small file so that a reader (or a crash of the server) sees either the
//! old or the new contents, never half of one: write a temporary file beside it,
//! flush it to disk, rename it over the old one.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

pub fn write_atomic(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut tmp_name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        std::fs::remove_file(&tmp).ok();
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_dir::TestDir;

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
