//! A pool of transfer buffers.
//!
//! WHY: a busy controller moves thousands of URBs per second; allocating and
//! zeroing a 64 KiB buffer for each would cost more than the copy itself.
//! Buffers keep their length when returned, so a buffer reused for a request
//! of the same size needs no zeroing at all. Stale bytes from an earlier
//! request never reach a guest: OUT buffers are overwritten by the grant copy
//! before use, and only `actual_length` bytes the device wrote are copied back
//! for IN (isochronous IN buffers are zeroed explicitly).

/// Largest transfer a usbif request can describe (16 pages).
pub const MAX_BUFFER: usize = 65536;

/// Free buffers, reused LIFO (the most recently used is the warmest in cache).
#[derive(Debug)]
pub struct BufferPool {
    free: Vec<Vec<u8>>,
    max_free: usize,
    allocated: u64,
}

impl BufferPool {
    /// A pool that keeps at most `max_free` idle buffers.
    pub fn new(max_free: usize) -> Self {
        Self {
            free: Vec::with_capacity(max_free),
            max_free,
            allocated: 0,
        }
    }

    /// A buffer of exactly `len` bytes (contents unspecified).
    pub fn take(&mut self, len: usize) -> Vec<u8> {
        let mut buf = match self.free.pop() {
            Some(b) => b,
            None => {
                self.allocated += 1;
                // Room for a control transfer's setup stage in front of
                // the largest data stage, so no pooled buffer ever grows.
                Vec::with_capacity((MAX_BUFFER + crate::usb::SETUP_STAGE_LEN).max(len))
            }
        };
        if buf.len() >= len {
            buf.truncate(len);
        } else {
            buf.resize(len, 0);
        }
        buf
    }

    /// Gives a buffer back. Buffers with a different capacity (e.g. replaced
    /// by a device) are kept too, as long as they are large enough.
    pub fn put(&mut self, buf: Vec<u8>) {
        if self.free.len() < self.max_free && buf.capacity() >= MAX_BUFFER {
            self.free.push(buf);
        }
    }

    /// Idle buffers.
    pub fn free_count(&self) -> usize {
        self.free.len()
    }

    /// Buffers ever allocated by this pool.
    pub fn allocated(&self) -> u64 {
        self.allocated
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuse_without_growth() {
        let mut p = BufferPool::new(4);
        for _ in 0..100 {
            let a = p.take(512);
            let b = p.take(MAX_BUFFER);
            assert_eq!((a.len(), b.len()), (512, MAX_BUFFER));
            p.put(a);
            p.put(b);
        }
        assert_eq!(p.allocated(), 2);
        assert_eq!(p.free_count(), 2);
    }
}
