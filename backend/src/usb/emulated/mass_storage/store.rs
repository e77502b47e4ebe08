//! Block storage behind the emulated disk: a file (pread/pwrite) or memory.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Mutex;

/// Bytes per logical block.
pub const BLOCK_SIZE: u64 = 512;

/// Random-access storage. Shared (`&self`) so a disk's contents survive the
/// device being closed, reopened or replugged.
pub trait BlockStore: Send + Sync + std::fmt::Debug {
    /// Size in bytes (a multiple of [`BLOCK_SIZE`]).
    fn len(&self) -> u64;
    /// Whether the store holds nothing.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Fills `buf` from `offset` (callers keep inside `len()`).
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Writes `data` at `offset` (callers keep inside `len()`).
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Makes written data durable.
    fn flush(&self) -> io::Result<()>;
}

/// A disk in memory.
#[derive(Debug)]
pub struct MemoryStore {
    bytes: Mutex<Vec<u8>>,
}

impl MemoryStore {
    /// A zero-filled disk of `blocks` blocks.
    pub fn new(blocks: u32) -> Self {
        let len = usize::try_from(u64::from(blocks) * BLOCK_SIZE).unwrap_or(0);
        Self {
            bytes: Mutex::new(vec![0; len]),
        }
    }
}

fn out_of_range() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "access beyond the end of the disk",
    )
}

impl BlockStore for MemoryStore {
    fn len(&self) -> u64 {
        self.bytes.lock().map(|b| b.len() as u64).unwrap_or(0)
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let bytes = self
            .bytes
            .lock()
            .map_err(|_| io::Error::other("disk lock poisoned"))?;
        let start = usize::try_from(offset).map_err(|_| out_of_range())?;
        let end = start.checked_add(buf.len()).ok_or_else(out_of_range)?;
        buf.copy_from_slice(bytes.get(start..end).ok_or_else(out_of_range)?);
        Ok(())
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut bytes = self
            .bytes
            .lock()
            .map_err(|_| io::Error::other("disk lock poisoned"))?;
        let start = usize::try_from(offset).map_err(|_| out_of_range())?;
        let end = start.checked_add(data.len()).ok_or_else(out_of_range)?;
        bytes
            .get_mut(start..end)
            .ok_or_else(out_of_range)?
            .copy_from_slice(data);
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        Ok(())
    }
}

/// A disk backed by a file (or block device) with positioned I/O.
#[derive(Debug)]
pub struct FileStore {
    file: File,
    len: u64,
}

impl FileStore {
    /// Uses `file` as it is; its length is rounded down to whole blocks.
    pub fn new(file: File) -> io::Result<Self> {
        let len = file.metadata()?.len() / BLOCK_SIZE * BLOCK_SIZE;
        Ok(Self { file, len })
    }

    /// Creates (or truncates) a file of `blocks` blocks at `path`.
    pub fn create(path: &std::path::Path, blocks: u32) -> io::Result<Self> {
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        file.set_len(u64::from(blocks) * BLOCK_SIZE)?;
        Self::new(file)
    }
}

impl BlockStore for FileStore {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.file.write_all_at(data, offset)
    }

    fn flush(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}
