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

/// Deterministic pseudo-random inputs (xorshift) for the noise tests of every
/// target: `count` inputs of lengths `0..max_len`.
#[cfg(test)]
pub(crate) fn noise(count: usize, max_len: usize) -> impl Iterator<Item = Vec<u8>> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    (0..count).map(move |i| {
        (0..i % max_len.max(1))
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    })
}
