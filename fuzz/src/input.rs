//! A cursor over fuzzer bytes that never fails: past the end it yields zeros, so
//! every input, however short, is a complete scenario.

/// Reads little-endian values off the front of the fuzzer's input.
#[derive(Debug)]
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    /// A cursor at the start of `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    /// Whether every byte was consumed.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Fill `buf` from the input, zero-padding past its end.
    pub fn fill(&mut self, buf: &mut [u8]) {
        let n = buf.len().min(self.data.len());
        let (head, rest) = self.data.split_at(n);
        buf[..n].copy_from_slice(head);
        buf[n..].fill(0);
        self.data = rest;
    }

    /// The next byte.
    pub fn u8(&mut self) -> u8 {
        let mut b = [0u8; 1];
        self.fill(&mut b);
        b[0]
    }

    /// The next little-endian `u32`.
    pub fn u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.fill(&mut b);
        u32::from_le_bytes(b)
    }
}
