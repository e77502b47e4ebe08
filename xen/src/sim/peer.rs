//! The mapping side's view of one granting domain: its connection, its page memfd
//! and a read-only mapping of its grant metadata.
//!
//! Why copies need no round trip and no syscall: the grant words are in shared
//! memory, so the checks a copy needs are a load each, and the granter's whole
//! page memfd is mapped once per connection (shared, read-write), so the data
//! moves with one bounds-checked memory copy per segment. The mapping cannot
//! fault: the memfd is sealed against shrinking and was checked to be large
//! enough, and it lives as long as it is mapped, even after the granter died.
//! A copy therefore makes no syscall at all and does not check that the
//! granter is alive; [`PeerGrants::alive`] is consulted by maps only (see the
//! module docs of `sim`, "Copies and a granter's death").

use std::fs::File;
use std::ops::Range;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::fcntl::{FcntlArg, SealFlag};
use pvusb_support::lock_unpoisoned;

use super::server::socket_path;
use super::table::{check_grant, page_offset, META_ENTRY, NR_REFS};
use super::wire::{Reply, Request};
use crate::mmap::MmapRegion;
use crate::{check_copy_segments, CopySeg, DomId, GrantError, GrantRef, SharedMem, PAGE_SIZE};

/// A copy segment past the end of the caller's buffer.
const OUTSIDE_BUFFER: GrantError = GrantError::BadSegment("segment outside buffer");
/// A copy segment past the end of the grant table's pages.
const OUTSIDE_TABLE: GrantError = GrantError::BadSegment("segment outside the grant table");

/// How long a request to a granter may take before we call it gone. A live server
/// answers in microseconds; this only bounds a wedged or hostile one.
pub(crate) const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection to the rendezvous socket of `peer` in `dir`.
pub(crate) fn connect(dir: &Path, peer: DomId) -> Result<UnixStream, String> {
    let path = socket_path(dir, peer);
    let sock = UnixStream::connect(&path)
        .map_err(|e| format!("domain {peer} is not reachable at {}: {e}", path.display()))?;
    sock.set_read_timeout(Some(REPLY_TIMEOUT))
        .map_err(|e| e.to_string())?;
    sock.set_write_timeout(Some(REPLY_TIMEOUT))
        .map_err(|e| e.to_string())?;
    Ok(sock)
}

/// One granting domain as seen by a mapping domain.
#[derive(Debug)]
pub(crate) struct PeerGrants {
    peer: DomId,
    my: DomId,
    sock: Mutex<UnixStream>,
    watch: UnixStream,
    data: File,
    /// All of `data`, mapped shared and writable: the source and destination of
    /// grant copies (access is decided per copy by the grant words).
    pages: MmapRegion,
    meta: MmapRegion,
    nrefs: u32,
}

fn gone(peer: DomId, what: impl std::fmt::Display) -> GrantError {
    GrantError::Unavailable(format!("grant table of domain {peer}: {what}"))
}

/// Check that a received memfd is sealed against shrinking and large enough, so
/// mapping it can never fault.
fn check_memfd(f: &File, min_len: u64) -> Result<(), String> {
    let seals = nix::fcntl::fcntl(std::os::fd::AsRawFd::as_raw_fd(f), FcntlArg::F_GET_SEALS)
        .map_err(|e| format!("not a sealed memfd ({e})"))?;
    if !SealFlag::from_bits_truncate(seals).contains(SealFlag::F_SEAL_SHRINK) {
        return Err("memfd can shrink".into());
    }
    let len = f.metadata().map_err(|e| e.to_string())?.len();
    if len < min_len {
        return Err(format!("memfd of {len} bytes is too small"));
    }
    Ok(())
}

impl PeerGrants {
    /// Connect to `peer`'s server and receive its grant table.
    pub(crate) fn connect(dir: &Path, my: DomId, peer: DomId) -> Result<Self, GrantError> {
        let mut sock = connect(dir, peer).map_err(GrantError::Unavailable)?;
        Request::Grants { domid: my }
            .send(&mut sock)
            .map_err(|e| gone(peer, e))?;
        let (reply, fds) = Reply::recv(&sock).map_err(|e| gone(peer, e))?;
        let nrefs = match reply {
            Reply::Ok(n) if (1..=NR_REFS).contains(&n) => n,
            other => return Err(gone(peer, format!("unexpected reply {other:?}"))),
        };
        let [data, meta]: [std::os::fd::OwnedFd; 2] = fds
            .try_into()
            .map_err(|_| gone(peer, "wrong number of descriptors"))?;
        let (data, meta) = (File::from(data), File::from(meta));
        let meta_len = nrefs as usize * META_ENTRY;
        check_memfd(&data, u64::from(nrefs) * PAGE_SIZE as u64).map_err(|e| gone(peer, e))?;
        check_memfd(&meta, meta_len as u64).map_err(|e| gone(peer, e))?;
        let meta = MmapRegion::map_shared(meta.as_fd(), meta_len, 0, false)
            .map_err(|e| gone(peer, format!("cannot map metadata: {e}")))?;
        let pages = MmapRegion::map_shared(data.as_fd(), nrefs as usize * PAGE_SIZE, 0, true)
            .map_err(|e| gone(peer, format!("cannot map the grant pages: {e}")))?;
        let watch = sock.try_clone().map_err(|e| gone(peer, e))?;
        Ok(Self {
            peer,
            my,
            sock: Mutex::new(sock),
            watch,
            data,
            pages,
            meta,
            nrefs,
        })
    }

    /// Whether the granter's server still holds our connection.
    pub(crate) fn alive(&self) -> bool {
        !crate::poll::hung_up(self.watch.as_fd()).unwrap_or(true)
    }

    /// Check one access to `gref` against the shared grant word.
    fn check(&self, gref: GrantRef, write: bool) -> Result<(), GrantError> {
        if !(super::table::FIRST_REF..self.nrefs).contains(&gref) {
            return Err(GrantError::BadRef { gref });
        }
        let word = self
            .meta
            .atomic_u32(gref as usize * META_ENTRY)
            .map_err(|_| GrantError::BadRef { gref })?
            .load(Ordering::Acquire);
        check_grant(u32::from_le(word), gref, self.my, write)
    }

    /// Check every segment (bounds against the local buffer, then the grant
    /// words) before any byte moves, so a refused copy changes nothing.
    fn check_copy(
        &self,
        segs: &[CopySeg],
        local_len: usize,
        write: bool,
    ) -> Result<(), GrantError> {
        check_copy_segments(segs, local_len)?;
        for s in segs {
            self.check(s.gref, write)?;
        }
        Ok(())
    }

    /// Checks every segment (`write`: for a copy into the pages), then says
    /// where each lies: its offset in the page mapping (its grant was
    /// checked, so `gref < nrefs`, and `offset + len <= PAGE_SIZE`) and its
    /// byte range in the caller's `local_len`-byte buffer, where the segments
    /// follow each other.
    fn placements(
        &self,
        segs: &[CopySeg],
        local_len: usize,
        write: bool,
    ) -> Result<Vec<(usize, Range<usize>)>, GrantError> {
        self.check_copy(segs, local_len, write)?;
        let mut pos = 0usize;
        segs.iter()
            .map(|s| {
                let at = usize::try_from(page_offset(s.gref) + u64::from(s.offset))
                    .map_err(|_| OUTSIDE_TABLE)?;
                let range = pos..pos + usize::from(s.len);
                pos = range.end;
                Ok((at, range))
            })
            .collect()
    }

    /// Validate every segment, then copy each from the mapped pages.
    pub(crate) fn copy_from(&self, segs: &[CopySeg], dst: &mut [u8]) -> Result<(), GrantError> {
        for (at, range) in self.placements(segs, dst.len(), false)? {
            let buf = dst.get_mut(range).ok_or(OUTSIDE_BUFFER)?;
            self.pages.read(at, buf).map_err(|_| OUTSIDE_TABLE)?;
        }
        Ok(())
    }

    /// Validate every segment (writable grants), then copy each into the
    /// mapped pages.
    pub(crate) fn copy_to(&self, segs: &[CopySeg], src: &[u8]) -> Result<(), GrantError> {
        for (at, range) in self.placements(segs, src.len(), true)? {
            let buf = src.get(range).ok_or(OUTSIDE_BUFFER)?;
            self.pages.write(at, buf).map_err(|_| OUTSIDE_TABLE)?;
        }
        Ok(())
    }

    /// Ask the granter to count a mapping of `refs` (it checks them), then map.
    pub(crate) fn map(&self, refs: &[GrantRef], writable: bool) -> Result<MmapRegion, GrantError> {
        if refs.is_empty() {
            return Err(GrantError::BadSegment(
                "a mapping needs at least one grant reference",
            ));
        }
        if refs.len() > NR_REFS as usize {
            return Err(GrantError::Exhausted);
        }
        // Check locally first: a refusal then costs no round trip.
        for &r in refs {
            self.check(r, writable)?;
        }
        {
            let mut sock = lock_unpoisoned(&self.sock);
            let request = Request::Map {
                writable,
                refs: refs.to_vec(),
            };
            let reply = round_trip(&mut sock, &request).map_err(|e| gone(self.peer, e))?;
            if let Some(e) = reply.grant_error() {
                return Err(e);
            }
        }
        let offsets: Vec<u64> = refs.iter().map(|&r| page_offset(r)).collect();
        MmapRegion::map_pages(self.data.as_fd(), &offsets, writable).map_err(|source| {
            self.unmap(refs);
            GrantError::Os {
                op: "map grant pages",
                source,
            }
        })
    }

    /// Tell the granter we dropped a mapping of `refs`, and wait for its answer so
    /// that, once a mapping is dropped, the granter's `try_end_access` sees it.
    pub(crate) fn unmap(&self, refs: &[GrantRef]) {
        let mut sock = lock_unpoisoned(&self.sock);
        let request = Request::Unmap {
            refs: refs.to_vec(),
        };
        if let Err(e) = round_trip(&mut sock, &request) {
            // The granter is gone: its table, and so the count, went with it.
            tracing::debug!(error = %e, peer = self.peer, "unmap notice not delivered");
        }
    }
}

/// One request and its reply on the cached connection. Any failure (a timeout,
/// a short or malformed reply) leaves the stream at an unknown position: a late
/// reply would be taken as the answer to the next request. So the connection is
/// shut down, which makes [`PeerGrants::alive`] false (the next map reconnects)
/// and tells the granter to release what this connection mapped.
fn round_trip(sock: &mut UnixStream, request: &Request) -> std::io::Result<Reply> {
    let result = request
        .send(sock)
        .and_then(|()| Reply::recv(sock))
        .map(|(reply, _fds)| reply);
    if result.is_err() {
        let _ = sock.shutdown(std::net::Shutdown::Both);
    }
    result
}

/// Keeps the count of a mapping at the granter; sends the unmap notice on drop.
#[derive(Debug)]
pub(crate) struct MapCount {
    pub(crate) peer: Arc<PeerGrants>,
    pub(crate) refs: Vec<GrantRef>,
}

impl Drop for MapCount {
    fn drop(&mut self) {
        self.peer.unmap(&self.refs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::table::GrantTable;
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixListener;

    /// Regression: after a malformed reply the cached connection stayed in use,
    /// so whatever the granter sent next was read as the answer to the next
    /// request. It is shut down (and so replaced) now.
    #[test]
    fn a_malformed_reply_retires_the_connection() {
        let dir = tempfile::tempdir().unwrap();
        let listener = UnixListener::bind(socket_path(dir.path(), 1)).unwrap();
        let table = GrantTable::new().unwrap();
        let gref = table.alloc(0, 1, true).unwrap()[0];
        let server = std::thread::spawn(move || {
            let (mut sock, _) = listener.accept().unwrap();
            assert!(matches!(
                Request::recv(&mut sock).unwrap(),
                Some(Request::Grants { domid: 0 })
            ));
            let fds = [
                table.data_file().as_raw_fd(),
                table.meta_file_ro().as_raw_fd(),
            ];
            Reply::Ok(NR_REFS).send(&sock, &fds).unwrap();
            assert!(matches!(
                Request::recv(&mut sock).unwrap(),
                Some(Request::Map { .. })
            ));
            sock.write_all(&[99; 16]).unwrap(); // no such reply code
                                                // Keep our end open until the client has looked at its connection.
            let _ = Request::recv(&mut sock);
        });
        let peer = PeerGrants::connect(dir.path(), 0, 1).unwrap();
        assert!(peer.alive());
        assert!(matches!(
            peer.map(&[gref], true),
            Err(GrantError::Unavailable(_))
        ));
        assert!(
            !peer.alive(),
            "a desynchronised connection must not be reused"
        );
        drop(peer);
        server.join().unwrap();
    }
}
