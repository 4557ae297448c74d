//! A sparse file as its data extents: where the file system has data
//! (`lseek(2)` `SEEK_DATA`/`SEEK_HOLE`), each with a CRC-32, in a manifest beside one
//! object holding those bytes back to back. A vmcore of a 64 GiB machine that sent
//! 2 GiB of pages is a 2 GiB object, not 64 GiB; restoring it writes the extents into a
//! file of the original length, which leaves the rest as holes again.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// One run of data in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extent {
    pub offset: u64,
    pub len: u64,
    /// CRC-32 (IEEE) of the extent's bytes.
    pub crc32: u32,
}

/// `<file>.manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// 1.
    pub format: u32,
    /// The file's name in the dump directory.
    pub file: String,
    /// Its length, holes included.
    pub file_len: u64,
    /// The object's name (beside the manifest) holding the extents back to back.
    pub data_object: String,
    /// Bytes in that object: the extents' lengths added.
    pub data_len: u64,
    /// In file order, not overlapping.
    pub extents: Vec<Extent>,
}

/// Where `f` (of length `len`) has data: (offset, length) runs in order. A file system
/// without `SEEK_DATA` gives the whole file as one run.
pub fn data_runs(f: &File, len: u64) -> io::Result<Vec<(u64, u64)>> {
    let fd = f.as_raw_fd();
    let seek = |offset: u64, whence: libc::c_int| -> io::Result<Option<u64>> {
        let off = libc::off_t::try_from(offset).map_err(io::Error::other)?;
        // SAFETY: lseek(2) on a descriptor `f` keeps open for the call; it reads and
        // changes only the file offset, which nothing else here relies on (every read
        // of the file is positioned).
        let r = unsafe { libc::lseek(fd, off, whence) };
        if r < 0 {
            let e = io::Error::last_os_error();
            return if e.raw_os_error() == Some(libc::ENXIO) { Ok(None) } else { Err(e) };
        }
        Ok(Some(r as u64))
    };
    let mut runs = Vec::new();
    let mut pos = 0;
    while pos < len {
        let start = match seek(pos, libc::SEEK_DATA) {
            Ok(Some(s)) => s,
            Ok(None) => break,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && pos == 0 => return Ok(vec![(0, len)]),
            Err(e) => return Err(e),
        };
        if start >= len {
            break;
        }
        let end = seek(start, libc::SEEK_HOLE)?.unwrap_or(len).min(len);
        if end <= start {
            break;
        }
        runs.push((start, end - start));
        pos = end;
    }
    Ok(runs)
}

/// Reads the runs of `f` in pieces of at most `piece` bytes, in order, giving each
/// piece to `sink`; returns the extents with their CRCs.
pub fn read_runs(
    f: &File,
    runs: &[(u64, u64)],
    piece: usize,
    mut sink: impl FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<Vec<Extent>> {
    let mut buf = vec![0u8; piece];
    let mut out = Vec::with_capacity(runs.len());
    for &(offset, len) in runs {
        let mut crc = crc32fast::Hasher::new();
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(piece as u64) as usize;
            f.read_exact_at(&mut buf[..n], offset + done)?;
            crc.update(&buf[..n]);
            sink(&buf[..n])?;
            done += n as u64;
        }
        out.push(Extent { offset, len, crc32: crc.finalize() });
    }
    Ok(out)
}

impl Manifest {
    /// Checks that the extents are in order, inside the file, and add up to `data_len`.
    pub fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.format == 1, "manifest of {}: unknown format {}", self.file, self.format);
        let mut end = 0u64;
        let mut total = 0u64;
        for e in &self.extents {
            anyhow::ensure!(
                e.offset >= end && e.offset.checked_add(e.len).is_some_and(|x| x <= self.file_len),
                "manifest of {}: extent at {} of {} bytes is out of order or past the end",
                self.file,
                e.offset,
                e.len
            );
            end = e.offset + e.len;
            total += e.len;
        }
        anyhow::ensure!(
            total == self.data_len,
            "manifest of {}: extents add up to {total}, not {}",
            self.file,
            self.data_len
        );
        Ok(())
    }
}

/// Writes the data object's bytes, as they arrive, into a sparse file per the manifest,
/// checking each extent's CRC-32.
pub struct Restore<'a> {
    file: File,
    manifest: &'a Manifest,
    /// The extent being written and how much of it is written.
    index: usize,
    done: u64,
    crc: crc32fast::Hasher,
    received: u64,
}

impl<'a> Restore<'a> {
    /// Creates `path` (0600, new) at the manifest's length: all holes so far.
    pub fn create(path: &Path, manifest: &'a Manifest) -> anyhow::Result<Restore<'a>> {
        manifest.check()?;
        let file = crate::files::private_file().write(true).create_new(true).open(path)?;
        file.set_len(manifest.file_len)?;
        Ok(Restore { file, manifest, index: 0, done: 0, crc: crc32fast::Hasher::new(), received: 0 })
    }

    /// The next bytes of the data object.
    pub fn write(&mut self, mut bytes: &[u8]) -> anyhow::Result<()> {
        self.received += bytes.len() as u64;
        anyhow::ensure!(
            self.received <= self.manifest.data_len,
            "{}: the data object is longer than its manifest says ({} bytes)",
            self.manifest.file,
            self.manifest.data_len
        );
        while !bytes.is_empty() {
            let e = self.manifest.extents[self.index];
            let n = ((e.len - self.done) as usize).min(bytes.len());
            self.file.write_all_at(&bytes[..n], e.offset + self.done)?;
            self.crc.update(&bytes[..n]);
            self.done += n as u64;
            bytes = &bytes[n..];
            if self.done == e.len {
                let crc = std::mem::take(&mut self.crc).finalize();
                anyhow::ensure!(
                    crc == e.crc32,
                    "{}: extent at {} has CRC-32 {crc:08x}, the manifest says {:08x}",
                    self.manifest.file,
                    e.offset,
                    e.crc32
                );
                self.index += 1;
                self.done = 0;
            }
        }
        Ok(())
    }

    /// Checks that every extent arrived, and flushes the file.
    pub fn finish(self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.received == self.manifest.data_len,
            "{}: the data object has {} bytes, its manifest says {}",
            self.manifest.file,
            self.received,
            self.manifest.data_len
        );
        self.file.sync_all()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_dir::TestDir;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn a_sparse_file_goes_through_its_extents_and_comes_back_sparse_and_equal() {
        let dir = TestDir::new("extents");
        let src = dir.path().join("src");
        let f = crate::files::private_file().read(true).write(true).create_new(true).open(&src).unwrap();
        f.set_len(64 << 20).unwrap();
        f.write_all_at(b"ELF header", 0).unwrap();
        f.write_all_at(&vec![7u8; 3 << 20], 10 << 20).unwrap();
        f.write_all_at(b"tail", (40 << 20) + 5).unwrap();
        let runs = data_runs(&f, 64 << 20).unwrap();
        let stored: u64 = runs.iter().map(|r| r.1).sum();
        assert!(((3 << 20) + 14..8 << 20).contains(&stored), "{runs:?}");
        let mut data = Vec::new();
        let extents = read_runs(&f, &runs, 1 << 20, |b| {
            data.extend_from_slice(b);
            Ok(())
        })
        .unwrap();
        let manifest = Manifest {
            format: 1,
            file: "vmcore".into(),
            file_len: 64 << 20,
            data_object: "vmcore.data".into(),
            data_len: data.len() as u64,
            extents,
        };
        let out = dir.path().join("out");
        let mut r = Restore::create(&out, &manifest).unwrap();
        for piece in data.chunks(100_000) {
            r.write(piece).unwrap();
        }
        r.finish().unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&src).unwrap());
        assert!(std::fs::metadata(&out).unwrap().blocks() * 512 < 16 << 20, "holes stay holes");

        // A flipped byte is caught by its extent's CRC; a short object by the length.
        data[(3 << 20) / 2] ^= 1;
        let mut r = Restore::create(&dir.path().join("bad"), &manifest).unwrap();
        assert!(r.write(&data).unwrap_err().to_string().contains("CRC-32"));
        let r = Restore::create(&dir.path().join("short"), &manifest).unwrap();
        assert!(r.finish().is_err());
    }
}
