//! The directory of one crash, `<dumpdir>/<client>-<UTC YYYYMMDD-HHMMSS>/`, and the files
//! in it:
//!
//! | file | contents |
//! |---|---|
//! | `vmcore-incomplete` | the ELF core while it is received, and after a dump that did not verify |
//! | `vmcore` | the same file, renamed once FINISH verified it |
//! | `log` | the LOG section: the client's console, oldest byte first |
//! | `extra` | the EXTRA section (text the kernel wrote after the image), if any |
//! | `registers` | each CPU's registers as text, written when the dump ends |
//! | `info.json` | what is known about the crash and the transfer ([`crate::info`]) |
//! | `upload.json` | with `[upload]`: the upload's state ([`crate::upload::marker`]) |
//!
//! A dump holds the memory of the machine that crashed: every directory netdumpd
//! creates is 0700 and every file 0600, whatever the umask ([`crate::files::create_private_dir_all`],
//! [`crate::files::PRIVATE_FILE_MODE`]).

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileExt};
use std::path::{Path, PathBuf};

use time::OffsetDateTime;

use crate::files::{PRIVATE_DIR_MODE, private_file, write_atomic};
use crate::info::DumpInfo;
use crate::vmcore::VmcoreLayout;

pub const VMCORE_INCOMPLETE: &str = "vmcore-incomplete";
pub const VMCORE: &str = "vmcore";
pub const LOG: &str = "log";
pub const EXTRA: &str = "extra";
pub const INFO: &str = "info.json";
pub const REGISTERS: &str = "registers";
/// With `[upload]`: the upload's state (`pending` or `done`).
pub const UPLOAD: &str = "upload.json";

/// A crash's directory, created empty and unique.
#[derive(Debug, Clone)]
pub struct DumpDir {
    path: PathBuf,
    name: String,
}

impl DumpDir {
    /// Creates `<root>/<client>-<stamp>/`, or `…-<stamp>.1`, `.2`, … when a directory of
    /// that name exists (two crashes of one client within a second).
    pub fn create(root: &Path, client: &str, at: OffsetDateTime) -> io::Result<DumpDir> {
        let base = format!("{client}-{}", crate::utc::dir_stamp(at));
        for n in 0..1000u32 {
            let name = if n == 0 { base.clone() } else { format!("{base}.{n}") };
            let path = root.join(&name);
            match std::fs::DirBuilder::new().mode(PRIVATE_DIR_MODE).create(&path) {
                Ok(()) => return Ok(DumpDir { path, name }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("too many dumps named {base}")))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory's name inside the dump directory.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn write_info(&self, info: &DumpInfo) -> io::Result<()> {
        let mut text = serde_json::to_vec_pretty(info).map_err(io::Error::other)?;
        text.push(b'\n');
        write_atomic(&self.path.join(INFO), &text)
    }
}

/// Most vmcore bytes gathered before they are written (see [`DumpFiles::write_vmcore`]).
pub const GATHER_LIMIT: usize = 512 << 10;

/// The open files of a dump being received. Every write is positioned, so packets
/// can be written in whatever order they arrive.
#[derive(Debug)]
pub struct DumpFiles {
    dir: DumpDir,
    /// None when the memory image was skipped: the directory then holds no vmcore.
    vmcore: Option<File>,
    log: File,
    extra: Option<File>,
    /// vmcore bytes received in sequence and not yet written: they start at `gathered_at`.
    gathered: Vec<u8>,
    gathered_at: u64,
}

impl DumpFiles {
    /// Creates `vmcore-incomplete` at its full size (sparse) with its headers and notes
    /// written (unless `with_vmcore` is false: the memory image was skipped), and an
    /// empty `log`.
    pub fn create(dir: DumpDir, layout: &VmcoreLayout, with_vmcore: bool) -> io::Result<DumpFiles> {
        let vmcore = if with_vmcore {
            let f = private_file().read(true).write(true).create_new(true).open(dir.path.join(VMCORE_INCOMPLETE))?;
            f.set_len(layout.file_len())?;
            f.write_all_at(&layout.headers(), 0)?;
            Some(f)
        } else {
            None
        };
        let log = private_file().write(true).create_new(true).open(dir.path.join(LOG))?;
        Ok(DumpFiles { dir, vmcore, log, extra: None, gathered: Vec::new(), gathered_at: 0 })
    }

    pub fn dir(&self) -> &DumpDir {
        &self.dir
    }

    /// Writes into the vmcore; nothing when there is none (memory skipped).
    ///
    /// Bytes that continue the ones before them in the file are gathered, up to
    /// [`GATHER_LIMIT`], and written with one `pwrite(2)` by [`flush`](Self::flush) (the
    /// session flushes before every ACK, so an ACK never covers unwritten bytes). A
    /// write elsewhere flushes what was gathered first, so the file sees the writes in
    /// the order they were made. A packet costs a copy instead of a system call, and the
    /// file system no longer zeroes the rest of each new page a packet half fills.
    pub fn write_vmcore(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        if self.vmcore.is_none() {
            return Ok(());
        }
        let continues = offset.checked_sub(self.gathered_at) == Some(self.gathered.len() as u64);
        if !(continues && self.gathered.len() + data.len() <= GATHER_LIMIT) {
            self.flush()?;
            self.gathered_at = offset;
        }
        if data.len() > GATHER_LIMIT {
            return self.vmcore.as_ref().map_or(Ok(()), |f| f.write_all_at(data, offset));
        }
        if self.gathered.capacity() == 0 {
            self.gathered.reserve_exact(GATHER_LIMIT);
        }
        self.gathered.extend_from_slice(data);
        Ok(())
    }

    /// Writes what [`write_vmcore`](Self::write_vmcore) gathered. On an error the
    /// gathered bytes are dropped (the dump fails).
    pub fn flush(&mut self) -> io::Result<()> {
        if self.gathered.is_empty() {
            return Ok(());
        }
        let result = match &self.vmcore {
            Some(f) => f.write_all_at(&self.gathered, self.gathered_at),
            None => Ok(()),
        };
        self.gathered.clear();
        result
    }

    pub fn has_vmcore(&self) -> bool {
        self.vmcore.is_some()
    }

    pub fn write_log(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.log.write_all_at(data, offset)
    }

    /// Writes EXTRA bytes, creating `extra` on the first.
    pub fn write_extra(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        if self.extra.is_none() {
            self.extra = Some(private_file().write(true).create_new(true).open(self.dir.path.join(EXTRA))?);
        }
        match &self.extra {
            Some(f) => f.write_all_at(data, offset),
            None => Ok(()),
        }
    }

    pub fn has_extra(&self) -> bool {
        self.extra.is_some()
    }

    /// Renames `vmcore-incomplete` to `vmcore`: the dump verified.
    ///
    /// No fsync first: flushing gigabytes would stall every other session's
    /// acknowledgements (and this one's FINISH_ACK) for as long as the disk takes.
    pub fn publish_vmcore(&mut self) -> io::Result<()> {
        self.flush()?;
        if self.vmcore.is_none() {
            return Ok(());
        }
        std::fs::rename(self.dir.path.join(VMCORE_INCOMPLETE), self.dir.path.join(VMCORE))
    }
}

impl Drop for DumpFiles {
    /// A dump that ends without a FINISH (aborted, silent, the server stopping) keeps
    /// what it received, gathered bytes included.
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            tracing::error!(dir = %self.dir.path.display(), "cannot write the last received bytes: {e}");
        }
    }
}

/// Bytes available to an unprivileged writer on the file system holding `path`.
pub fn available_bytes(path: &Path) -> io::Result<u64> {
    let c_path = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `c_path` is a NUL-terminated string that outlives the call, and `st`
    // points to writable storage of the type statvfs(3) fills.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it initialised the whole struct (and it started
    // zeroed in any case).
    let st = unsafe { st.assume_init() };
    #[allow(clippy::useless_conversion)] // the field types differ between platforms
    Ok(u64::from(st.f_bavail).saturating_mul(u64::from(st.f_frsize)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_dir::TestDir;
    use crate::vmcore::CrashNote;
    use netdump_core::proto::{CrashKind, MemoryRange};
    use std::os::unix::fs::MetadataExt;
    use time::macros::datetime;

    fn layout() -> VmcoreLayout {
        let crash = CrashNote {
            kind: CrashKind::Panic,
            vector: 0,
            crashing_cpu: 0,
            error_code: 0,
            fault_address: 0,
            message: "test".into(),
            machine: netdump_core::proto::Machine::X86_64,
        };
        VmcoreLayout::new(1, crash, &[MemoryRange { phys_start: 0, length: 64 << 20, virt_start: 0 }]).unwrap()
    }

    #[test]
    fn directories_are_named_for_client_and_time_and_never_reused() {
        let root = TestDir::new("dumpdir-names");
        let t = datetime!(2026-03-04 05:06:07 UTC);
        let a = DumpDir::create(root.path(), "node-1", t).unwrap();
        let b = DumpDir::create(root.path(), "node-1", t).unwrap();
        assert_eq!(a.name(), "node-1-20260304-050607");
        assert_eq!(b.name(), "node-1-20260304-050607.1");
        assert!(a.path().is_dir() && b.path().is_dir());
    }

    #[test]
    fn the_vmcore_starts_sparse_at_full_size_and_is_published_by_rename() {
        let root = TestDir::new("dumpdir-files");
        let dir = DumpDir::create(root.path(), "n", crate::utc::now()).unwrap();
        let layout = layout();
        let mut files = DumpFiles::create(dir.clone(), &layout, true).unwrap();
        let incomplete = dir.path().join(VMCORE_INCOMPLETE);
        let meta = std::fs::metadata(&incomplete).unwrap();
        assert_eq!(meta.len(), layout.file_len());
        assert!(meta.blocks() * 512 < 1 << 20, "64 MiB of holes must not take space");
        assert_eq!(std::fs::metadata(dir.path().join(LOG)).unwrap().len(), 0);
        assert!(!files.has_extra());

        files.write_log(5, b"world").unwrap();
        files.write_log(0, b"hello").unwrap();
        files.write_extra(0, b"extra").unwrap();
        files.write_vmcore(layout.segments()[0].file_offset, b"page").unwrap();
        files.publish_vmcore().unwrap();

        assert!(!incomplete.exists());
        let core = std::fs::read(dir.path().join(VMCORE)).unwrap();
        let at = layout.segments()[0].file_offset as usize;
        assert_eq!(&core[at..at + 4], b"page");
        assert_eq!(&core[..4], b"\x7fELF");
        assert_eq!(std::fs::read(dir.path().join(LOG)).unwrap(), b"helloworld");
        assert_eq!(std::fs::read(dir.path().join(EXTRA)).unwrap(), b"extra");
    }

    #[test]
    fn available_space_is_reported_for_an_existing_path_only() {
        let root = TestDir::new("dumpdir-space");
        assert!(available_bytes(root.path()).unwrap() > 0);
        assert!(available_bytes(&root.path().join("missing")).is_err());
    }
}
