//! The simulated grant objects: pages a domain granted, and mappings of a peer's
//! grants.

use std::os::fd::AsFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::peer::MapCount;
use super::table::{page_offset, GrantTable};
use crate::mmap::MmapRegion;
use crate::{GrantError, GrantRef, GrantedPages};

/// Ends the grants on drop (deferred by the table while a peer maps them).
#[derive(Debug)]
struct Release {
    table: Arc<GrantTable>,
    refs: Vec<GrantRef>,
}

impl Drop for Release {
    fn drop(&mut self) {
        self.table.release(&self.refs);
    }
}

/// Pages this domain granted to a peer, mapped contiguously (always writable for
/// us; the writable flag restricts the peer).
#[derive(Debug)]
pub struct SimGrantedPages {
    // Field order: our view is unmapped before the refs go back to the table.
    region: MmapRegion,
    grants: Release,
}

impl SimGrantedPages {
    pub(crate) fn new(table: Arc<GrantTable>, refs: Vec<GrantRef>) -> Result<Self, GrantError> {
        let offsets: Vec<u64> = refs.iter().map(|&r| page_offset(r)).collect();
        let grants = Release { table, refs };
        let region = MmapRegion::map_pages(grants.table.data_file().as_fd(), &offsets, true)
            .map_err(|source| GrantError::Os {
                op: "map granted pages",
                source,
            })?;
        Ok(Self { region, grants })
    }
}

shared_mem_via_region!(SimGrantedPages);

impl GrantedPages for SimGrantedPages {
    fn refs(&self) -> &[GrantRef] {
        &self.grants.refs
    }

    /// Ends the grants (the peer can no longer map or copy them) if no peer maps
    /// any; our own view stays valid until drop, and the pages are reused only then.
    fn try_end_access(&self) -> Result<(), GrantError> {
        self.grants.table.revoke(&self.grants.refs)
    }
}

/// A peer's grants mapped into our address space; unmapped on drop, and the
/// granter's mapped counts are decremented.
#[derive(Debug)]
pub struct SimMapping {
    // Field order: munmap before the granter hears about it.
    region: MmapRegion,
    _count: MapCount,
    _live: LiveMapping,
}

impl SimMapping {
    pub(crate) fn new(region: MmapRegion, count: MapCount, live: Arc<AtomicUsize>) -> Self {
        Self {
            region,
            _count: count,
            _live: LiveMapping::new(live),
        }
    }
}

shared_mem_via_region!(SimMapping);

impl crate::MappedPages for SimMapping {
    fn as_mut_ptr(&self) -> *mut u8 {
        self.region.as_mut_ptr()
    }
}

/// One count in the mapper's live mappings while a [`SimMapping`] exists
/// (`SimXen::live_mappings`): tests see when a mapping is released without
/// asking the granter, whose count is updated asynchronously.
#[derive(Debug)]
struct LiveMapping(Arc<AtomicUsize>);

impl LiveMapping {
    fn new(live: Arc<AtomicUsize>) -> Self {
        live.fetch_add(1, Ordering::Relaxed);
        Self(live)
    }
}

impl Drop for LiveMapping {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
