//! Intel HEX in and out, with errors that name the file and the line.
//!
//! Reading accepts record types 00 (data), 01 (end of file), 02 (extended segment address),
//! 03 (start segment address), 04 (extended linear address) and 05 (start linear address), any
//! line ending (`\n`, `\r\n`, lone `\r`), blank lines, unaligned and non-contiguous records. The
//! result is a sparse [`Image`]: what the file *means*, independent of its record layout.
//!
//! Record syntax (checksum, record types, payload sizes) goes through the `ihex` crate; this
//! module adds what a file needs on top: line numbers, column of a bad character, address
//! arithmetic, duplicate-address detection, EOF discipline.
//!
//! Writing produces 16- or 32-byte data records aligned to the record size, an extended linear
//! address record (04) wherever the upper 16 address bits change, the image's start address
//! (03 or 05) when it has one, and the EOF record, one record per line ending in `\n`.

use std::fmt;
use std::io;
use std::path::Path;

use ihex::{ReaderError, Record};

use crate::image::{Image, StartAddress};

/// A hex file could not be read. Display gives `file:line: what is wrong`.
#[derive(Debug)]
pub struct HexError {
    /// File name as given to [`parse`] / [`read_file`].
    pub file: String,
    /// 1-based line number, when the problem sits on one line.
    pub line: Option<usize>,
    pub kind: HexErrorKind,
}

/// What is wrong with a hex file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HexErrorKind {
    #[error("cannot read the file: {0}")]
    Io(#[source] io::Error),
    /// Not a regular file, or larger than [`crate::input::HEX_LIMIT`].
    #[error("{0}")]
    Input(String),
    #[error("line does not start with ':' (found {found:?}); is this an Intel HEX file?")]
    MissingStartCode { found: char },
    #[error("non-hex character {found:?} at column {column}")]
    NonHex { column: usize, found: char },
    #[error("record too short ({chars} hex digits; the smallest record, EOF, has 10)")]
    TooShort { chars: usize },
    #[error("record has an odd number of hex digits ({chars}); the line is cut or has a stray character")]
    OddDigits { chars: usize },
    #[error("bad length: the record declares {declared} data bytes but holds {actual}")]
    BadLength { declared: u8, actual: usize },
    #[error("bad checksum: the record says {found:02X}, its bytes sum to {computed:02X}; the file is corrupt")]
    BadChecksum { found: u8, computed: u8 },
    #[error("bad record type {0:02X} (Intel HEX knows 00..05)")]
    BadRecordType(u8),
    #[error("record type {rtype:02X} cannot carry {len} data bytes")]
    BadLengthForType { rtype: u8, len: usize },
    #[error("data after the end-of-file record on line {eof_line}")]
    DataAfterEof { eof_line: usize },
    #[error("missing end-of-file record (:00000001FF); the file may be truncated")]
    MissingEof,
    #[error(
        "address 0x{addr:05X} written twice with different bytes (0x{old:02X}{}, now 0x{new:02X})",
        match first_line { Some(l) => format!(" on line {l}"), None => String::new() }
    )]
    Conflict { addr: u32, old: u8, new: u8, first_line: Option<usize> },
    #[error("record reaches past the 4 GiB address space")]
    AddressOverflow,
    #[error("a second, different start address ({new}); the first was {old}")]
    StartAddressTwice { old: StartDisplay, new: StartDisplay },
}

/// A start address, printed the way a hex file means it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartDisplay(pub StartAddress);

impl fmt::Display for StartDisplay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            StartAddress::Segment { cs, ip } => write!(f, "{cs:04X}:{ip:04X}"),
            StartAddress::Linear(a) => write!(f, "0x{a:08X}"),
        }
    }
}

impl fmt::Display for HexError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{}: {}", self.file, l, self.kind),
            None => write!(f, "{}: {}", self.file, self.kind),
        }
    }
}

impl HexError {
    /// A file that could not be read (not a regular file, too large, I/O error).
    pub fn input(name: &str, e: crate::input::InputError) -> HexError {
        let kind = match e.kind {
            crate::input::InputErrorKind::Io(io) => HexErrorKind::Io(io),
            other => HexErrorKind::Input(other.to_string()),
        };
        HexError { file: name.to_string(), line: None, kind }
    }
}

impl std::error::Error for HexError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            HexErrorKind::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// Read and parse a hex file. Errors name the path as given.
pub fn read_file(path: &Path) -> Result<Image, HexError> {
    let name = path.display().to_string();
    let bytes = crate::input::read_bytes(path, crate::input::HEX_LIMIT).map_err(|e| HexError::input(&name, e))?;
    // Invalid UTF-8 becomes U+FFFD, which the character check then reports with line and column.
    let text = String::from_utf8_lossy(&bytes);
    parse(&text, &name)
}

/// Lines of `text` with their 1-based numbers; `\n`, `\r\n` and lone `\r` all end a line.
fn lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let mut rest = text;
    let mut n = 0usize;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        n += 1;
        match rest.find(['\n', '\r']) {
            Some(i) => {
                let line = &rest[..i];
                let skip = if rest[i..].starts_with("\r\n") { 2 } else { 1 };
                rest = &rest[i + skip..];
                Some((n, line))
            }
            None => {
                let line = rest;
                rest = "";
                Some((n, line))
            }
        }
    })
}

/// Parse Intel HEX text. `name` is used in error messages (usually the file path).
pub fn parse(text: &str, name: &str) -> Result<Image, HexError> {
    let err = |line: usize, kind| HexError { file: name.to_string(), line: Some(line), kind };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);

    let mut image = Image::new();
    // Data records (address, bytes, line), inserted in address order after the whole file is
    // read: the image then only ever appends, so reading stays linear whatever the record order.
    let mut records: Vec<(u64, Vec<u8>, usize)> = Vec::new();
    let mut base: u64 = 0;
    let mut eof_line: Option<usize> = None;
    let mut start: Option<StartAddress> = None;
    let mut last_line = 0usize;

    for (n, raw) in lines(text) {
        last_line = n;
        let line = raw.trim_matches([' ', '\t']);
        if line.is_empty() {
            continue;
        }
        if let Some(eof) = eof_line {
            return Err(err(n, HexErrorKind::DataAfterEof { eof_line: eof }));
        }
        let record = parse_record(line).map_err(|k| err(n, k))?;
        match record {
            Record::Data { offset, value } => {
                let addr = base + offset as u64;
                let end = addr + value.len() as u64;
                if end > u32::MAX as u64 + 1 {
                    return Err(err(n, HexErrorKind::AddressOverflow));
                }
                records.push((addr, value, n));
            }
            Record::EndOfFile => eof_line = Some(n),
            Record::ExtendedSegmentAddress(seg) => base = (seg as u64) << 4,
            Record::ExtendedLinearAddress(hi) => base = (hi as u64) << 16,
            Record::StartSegmentAddress { cs, ip } => {
                set_start(&mut start, StartAddress::Segment { cs, ip }).map_err(|k| err(n, k))?
            }
            Record::StartLinearAddress(a) => set_start(&mut start, StartAddress::Linear(a)).map_err(|k| err(n, k))?,
        }
    }
    if eof_line.is_none() {
        return Err(HexError {
            file: name.to_string(),
            line: if last_line > 0 { Some(last_line) } else { None },
            kind: HexErrorKind::MissingEof,
        });
    }
    records.sort_by_key(|r| r.0); // stable: file order kept per address
    for (i, (addr, value, n)) in records.iter().enumerate() {
        if let Err(c) = image.insert(*addr as u32, value) {
            // Find the earlier-inserted record holding the old byte, then report in file order.
            let a = c.addr as u64;
            let other = records[..i]
                .iter()
                .rev()
                .find(|(s, v, _)| (*s..*s + v.len() as u64).contains(&a) && v[(a - s) as usize] == c.old)
                .map(|r| r.2);
            let (line, first_line, old, new) = match other {
                Some(o) if o > *n => (o, Some(*n), c.new, c.old),
                o => (*n, o, c.old, c.new),
            };
            return Err(err(line, HexErrorKind::Conflict { addr: c.addr, old, new, first_line }));
        }
    }
    image.start = start;
    Ok(image)
}

fn set_start(slot: &mut Option<StartAddress>, new: StartAddress) -> Result<(), HexErrorKind> {
    match *slot {
        Some(old) if old != new => Err(HexErrorKind::StartAddressTwice { old: StartDisplay(old), new: StartDisplay(new) }),
        _ => {
            *slot = Some(new);
            Ok(())
        }
    }
}

/// One trimmed, non-empty line → record, with messages more precise than the crate's.
fn parse_record(line: &str) -> Result<Record, HexErrorKind> {
    let mut chars = line.chars();
    let first = chars.next().unwrap_or(' ');
    if first != ':' {
        return Err(HexErrorKind::MissingStartCode { found: first });
    }
    // Column of the first non-hex character (1-based, counting the ':').
    if let Some((i, c)) = line.chars().enumerate().skip(1).find(|(_, c)| !c.is_ascii_hexdigit()) {
        return Err(HexErrorKind::NonHex { column: i + 1, found: c });
    }
    let digits = line.len() - 1; // all ASCII from here on
    if digits < 10 {
        return Err(HexErrorKind::TooShort { chars: digits });
    }
    if !digits.is_multiple_of(2) {
        return Err(HexErrorKind::OddDigits { chars: digits });
    }
    // Length before checksum: a cut or padded line is better described by its length.
    let declared = u8::from_str_radix(&line[1..3], 16).unwrap_or(0);
    let actual = digits / 2 - 5;
    if declared as usize != actual {
        return Err(HexErrorKind::BadLength { declared, actual });
    }
    Record::from_record_string(line).map_err(|e| match e {
        ReaderError::ChecksumMismatch(computed, found) => HexErrorKind::BadChecksum { found, computed },
        ReaderError::UnsupportedRecordType(t) => HexErrorKind::BadRecordType(t),
        ReaderError::InvalidLengthForType => HexErrorKind::BadLengthForType {
            rtype: u8::from_str_radix(&line[7..9], 16).unwrap_or(0),
            len: actual,
        },
        ReaderError::PayloadLengthMismatch => HexErrorKind::BadLength { declared, actual },
        ReaderError::RecordTooLong | ReaderError::RecordTooShort => HexErrorKind::BadLength { declared, actual },
        ReaderError::RecordNotEvenLength => HexErrorKind::OddDigits { chars: digits },
        ReaderError::MissingStartCode => HexErrorKind::MissingStartCode { found: first },
        ReaderError::ContainsInvalidCharacters => HexErrorKind::NonHex { column: 1, found: first },
    })
}

/// Serialise `image` as Intel HEX with `record_len`-byte data records (16 or 32 in production;
/// values outside 1..=255 are clamped). Records are aligned to `record_len` and never cross a
/// 64 KiB boundary; an extended linear address record (04) precedes data whenever the upper
/// address bits change (none is written for images wholly below 64 KiB). The start address,
/// when present, is written as its original record type (03 or 05) just before EOF.
pub fn to_string(image: &Image, record_len: usize) -> String {
    let rl = record_len.clamp(1, 255) as u64;
    // ~ (11 + 2*rl + 1) chars per record.
    let mut out = String::with_capacity(image.len() / rl as usize * (2 * rl as usize + 12) + 64);
    let mut upper: u64 = 0;
    let push = |out: &mut String, r: Record| {
        // Records built here are always valid (payload <= 255 bytes).
        if let Ok(s) = r.to_record_string() {
            out.push_str(&s);
            out.push('\n');
        }
    };
    for (seg_start, bytes) in image.segments() {
        let mut addr = seg_start as u64;
        let end = addr + bytes.len() as u64;
        while addr < end {
            let hi = addr >> 16;
            if hi != upper {
                push(&mut out, Record::ExtendedLinearAddress(hi as u16));
                upper = hi;
            }
            let next_aligned = (addr / rl + 1) * rl;
            let next_64k = (hi + 1) << 16;
            let stop = end.min(next_aligned).min(next_64k);
            let off = (addr - seg_start as u64) as usize;
            let len = (stop - addr) as usize;
            push(&mut out, Record::Data { offset: (addr & 0xFFFF) as u16, value: bytes[off..off + len].to_vec() });
            addr = stop;
        }
    }
    match image.start {
        Some(StartAddress::Segment { cs, ip }) => push(&mut out, Record::StartSegmentAddress { cs, ip }),
        Some(StartAddress::Linear(a)) => push(&mut out, Record::StartLinearAddress(a)),
        None => {}
    }
    push(&mut out, Record::EndOfFile);
    out
}

/// Write `image` to `path` as [`to_string`] renders it.
pub fn write_file(path: &Path, image: &Image, record_len: usize) -> io::Result<()> {
    std::fs::write(path, to_string(image, record_len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_endings_all_count_once() {
        let v: Vec<_> = lines("a\r\nb\rc\nd").collect();
        assert_eq!(v, vec![(1, "a"), (2, "b"), (3, "c"), (4, "d")]);
        let v: Vec<_> = lines("a\n\nb\n").collect();
        assert_eq!(v, vec![(1, "a"), (2, ""), (3, "b")]);
    }

    #[test]
    fn round_trip_above_64k() {
        let mut im = Image::new();
        im.insert(0xFFF8, &[1u8; 0x20]).unwrap();
        im.insert(0x1E000, &[2u8; 5]).unwrap();
        im.start = Some(StartAddress::Segment { cs: 0x1000, ip: 0xE000 });
        let s = to_string(&im, 16);
        assert!(s.contains(":020000040001F9\n"), "{s}");
        let back = parse(&s, "t").unwrap();
        assert_eq!(back, im);
    }
}
