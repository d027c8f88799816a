//! A sparse memory image: what a hex file *means*, independent of how its records were laid out.

use std::collections::BTreeMap;
use std::ops::Range;

/// The start address a hex file may carry (record type 03 or 05).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum StartAddress {
    /// Record type 03: CS:IP.
    Segment { cs: u16, ip: u16 },
    /// Record type 05: EIP.
    Linear(u32),
}

/// Two different values written to one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conflict {
    pub addr: u32,
    pub old: u8,
    pub new: u8,
}

/// A sparse byte image: sorted, non-overlapping, non-adjacent segments.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Image {
    /// start address -> bytes. Invariant: segments neither overlap nor touch.
    segs: BTreeMap<u32, Vec<u8>>,
    pub start: Option<StartAddress>,
}

impl Image {
    pub fn new() -> Self {
        Self::default()
    }

    /// Write `data` at `addr`. Writing the same value twice is fine; a different value is a
    /// [`Conflict`] (reported at the first differing address) and the image is left unchanged.
    pub fn insert(&mut self, addr: u32, data: &[u8]) -> Result<(), Conflict> {
        if data.is_empty() {
            return Ok(());
        }
        let end = addr as u64 + data.len() as u64;
        // Check conflicts first so a failed insert leaves the image untouched.
        for (a, b) in self.overlapping(addr as u64, end) {
            let lo = a.max(addr as u64);
            let hi = (a + b.len() as u64).min(end);
            for x in lo..hi {
                let old = b[(x - a) as usize];
                let new = data[(x - addr as u64) as usize];
                if old != new {
                    return Err(Conflict { addr: x as u32, old, new });
                }
            }
        }
        // Merge: collect every segment that overlaps or touches [addr, end).
        let touching: Vec<u32> = self
            .segs
            .range(..=end.min(u32::MAX as u64) as u32)
            .rev()
            .take_while(|(a, b)| **a as u64 + b.len() as u64 >= addr as u64)
            .map(|(a, _)| *a)
            .collect();
        // Fast path (records appended in address order, as hex files are): grow the one
        // segment in place, amortised O(record), instead of rebuilding it.
        if let [a] = touching[..] {
            if a <= addr {
                if let Some(b) = self.segs.get_mut(&a) {
                    let off = (addr - a) as usize;
                    if b.len() < off + data.len() {
                        b.resize(off + data.len(), 0);
                    }
                    b[off..off + data.len()].copy_from_slice(data);
                    return Ok(());
                }
            }
        }
        let mut new_start = addr as u64;
        let mut new_end = end;
        for a in &touching {
            let b = &self.segs[a];
            new_start = new_start.min(*a as u64);
            new_end = new_end.max(*a as u64 + b.len() as u64);
        }
        let mut buf = vec![0u8; (new_end - new_start) as usize];
        for a in touching {
            let b = self.segs.remove(&a).unwrap();
            let off = (a as u64 - new_start) as usize;
            buf[off..off + b.len()].copy_from_slice(&b);
        }
        let off = (addr as u64 - new_start) as usize;
        buf[off..off + data.len()].copy_from_slice(data);
        self.segs.insert(new_start as u32, buf);
        Ok(())
    }

    fn overlapping(&self, start: u64, end: u64) -> impl Iterator<Item = (u64, &Vec<u8>)> {
        // Segments starting below `end` (clamped to the 32-bit address space; an empty
        // range when `end` is 0).
        let last = end.saturating_sub(1).min(u32::MAX as u64) as u32;
        self.segs
            .range(..=last)
            .filter(move |_| end > 0)
            .rev()
            .take_while(move |(a, b)| **a as u64 + b.len() as u64 > start)
            .map(|(a, b)| (*a as u64, b))
            .filter(move |(a, _)| *a < end)
    }

    /// Segments in address order: `(start address, bytes)`.
    pub fn segments(&self) -> impl Iterator<Item = (u32, &[u8])> {
        self.segs.iter().map(|(a, b)| (*a, b.as_slice()))
    }

    /// Address ranges covered, in order.
    pub fn ranges(&self) -> Vec<Range<u64>> {
        self.segs.iter().map(|(a, b)| *a as u64..*a as u64 + b.len() as u64).collect()
    }

    /// Number of data bytes.
    pub fn len(&self) -> usize {
        self.segs.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.segs.is_empty()
    }

    /// Lowest address holding data.
    pub fn min_addr(&self) -> Option<u32> {
        self.segs.keys().next().copied()
    }

    /// One past the highest address holding data.
    pub fn end_addr(&self) -> Option<u64> {
        self.segs.iter().next_back().map(|(a, b)| *a as u64 + b.len() as u64)
    }

    pub fn get(&self, addr: u32) -> Option<u8> {
        let (a, b) = self.segs.range(..=addr).next_back()?;
        b.get((addr - a) as usize).copied()
    }

    /// Address ranges held by both images (empty when they are disjoint).
    pub fn overlaps(&self, other: &Image) -> Vec<Range<u64>> {
        let mut out = Vec::new();
        for r in self.ranges() {
            for (a, b) in other.overlapping(r.start, r.end) {
                let lo = a.max(r.start);
                let hi = (a + b.len() as u64).min(r.end);
                out.push(lo..hi);
            }
        }
        out.sort_by_key(|r| r.start);
        out
    }

    /// A new image holding only the bytes inside `range`.
    pub fn slice(&self, range: Range<u64>) -> Image {
        let mut out = Image::new();
        for (a, b) in self.overlapping(range.start, range.end) {
            let lo = a.max(range.start);
            let hi = (a + b.len() as u64).min(range.end);
            out.insert(lo as u32, &b[(lo - a) as usize..(hi - a) as usize]).unwrap();
        }
        out
    }

    /// Flat copy of `[0, size)`, gaps filled with `fill`. Bytes at or above `size` are ignored.
    pub fn to_flat(&self, size: u32, fill: u8) -> Vec<u8> {
        let mut v = vec![fill; size as usize];
        for (a, b) in self.segments() {
            if a >= size {
                break;
            }
            let n = b.len().min((size - a) as usize);
            v[a as usize..a as usize + n].copy_from_slice(&b[..n]);
        }
        v
    }

    /// Pages of `page_size` bytes that hold any data, in order, each padded with 0xFF
    /// (erased flash). Returns `(page byte address, page bytes)`.
    pub fn pages(&self, page_size: u32) -> Vec<(u32, Vec<u8>)> {
        let mut out: Vec<(u32, Vec<u8>)> = Vec::new();
        for (a, b) in self.segments() {
            let mut addr = a as u64;
            let end = a as u64 + b.len() as u64;
            while addr < end {
                let page = (addr / page_size as u64) * page_size as u64;
                let page_end = (page + page_size as u64).min(end);
                if out.last().map(|p| p.0 as u64) != Some(page) {
                    out.push((page as u32, vec![0xFF; page_size as usize]));
                }
                let buf = &mut out.last_mut().unwrap().1;
                let src = &b[(addr - a as u64) as usize..(page_end - a as u64) as usize];
                let off = (addr - page) as usize;
                buf[off..off + src.len()].copy_from_slice(src);
                addr = page_end;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_adjacent_and_detects_conflicts() {
        let mut im = Image::new();
        im.insert(0x10, &[1, 2, 3]).unwrap();
        im.insert(0x13, &[4]).unwrap();
        im.insert(0x0E, &[9, 9, 1]).unwrap();
        assert_eq!(im.ranges(), vec![0x0E..0x14]);
        assert_eq!(im.get(0x13), Some(4));
        let e = im.insert(0x11, &[2, 7]).unwrap_err();
        assert_eq!(e, Conflict { addr: 0x12, old: 3, new: 7 });
        assert_eq!(im.get(0x12), Some(3));
        im.insert(0x100, &[5]).unwrap();
        assert_eq!(im.len(), 7);
        assert_eq!(im.ranges().len(), 2);
    }

    #[test]
    fn pages_pad_with_ff() {
        let mut im = Image::new();
        im.insert(0x7E, &[1, 2, 3, 4]).unwrap();
        let p = im.pages(128);
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].0, 0);
        assert_eq!(&p[0].1[126..], &[1, 2]);
        assert_eq!(p[1].1[..3], [3, 4, 0xFF]);
    }

    #[test]
    fn overlaps_and_slices() {
        let mut a = Image::new();
        a.insert(0, &[0; 0x20]).unwrap();
        let mut b = Image::new();
        b.insert(0x18, &[1; 0x10]).unwrap();
        assert_eq!(a.overlaps(&b), vec![0x18..0x20]);
        assert_eq!(a.slice(0x10..0x40).ranges(), vec![0x10..0x20]);
        // Open-ended slices reach the top of the address space.
        b.insert(0xFFFF_FFF0, &[2; 0x10]).unwrap();
        assert_eq!(b.slice(0x20..u64::MAX).ranges(), vec![0x20..0x28, 0xFFFF_FFF0..0x1_0000_0000]);
        assert!(b.slice(0..0).is_empty());
    }
}
