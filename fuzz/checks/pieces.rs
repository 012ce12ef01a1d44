#![allow(dead_code)] // Shared by the fuzz targets and the regression tests; each uses a part.

//! How a fuzz input for a stream target is read: a flags byte, a cut count, the cuts, the body.
//!
//! `[flags, n, cut_1 (u16 LE), ..., cut_n (u16 LE), body...]`: the body is fed whole once and
//! once in pieces cut at the given offsets (each taken modulo `body.len() + 1`, then sorted), so
//! one input checks both a stream and its splitting. A seed made from a recorded stream is
//! `[flags, 0]` followed by the stream.

/// An input's parts.
pub struct Input<'a> {
    /// Target-specific switches (bit 0: the caller asked for the usage chunk).
    pub flags: u8,
    /// The stream bytes.
    pub body: &'a [u8],
    /// Offsets into `body`, ascending, where the pieces end.
    pub cuts: Vec<usize>,
}

impl<'a> Input<'a> {
    /// Reads `data`; short inputs are an empty body (never an error).
    pub fn parse(data: &'a [u8]) -> Input<'a> {
        let flags = data.first().copied().unwrap_or(0);
        let n = usize::from(data.get(1).copied().unwrap_or(0) % 16);
        let rest = data.get(2..).unwrap_or_default();
        let spec_len = (2 * n).min(rest.len());
        let (spec, body) = rest.split_at(spec_len);
        let mut cuts: Vec<usize> = spec
            .chunks_exact(2)
            .map(|c| usize::from(u16::from_le_bytes([c[0], c[1]])) % (body.len() + 1))
            .collect();
        cuts.sort_unstable();
        Input { flags, body, cuts }
    }

    /// The body in the pieces the cuts make (empty pieces included: a read may be empty).
    pub fn pieces(&self) -> Vec<&'a [u8]> {
        let mut out = Vec::with_capacity(self.cuts.len() + 1);
        let mut start = 0;
        for &c in &self.cuts {
            out.push(&self.body[start..c]);
            start = c;
        }
        out.push(&self.body[start..]);
        out
    }

    /// The input for a recorded stream: no cuts.
    pub fn seed(flags: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![flags, 0];
        v.extend_from_slice(body);
        v
    }
}
