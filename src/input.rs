//! Reading files that people, printers and other programs hand the station: every read has a
//! type and a bound.
//!
//! - only regular files are read: a FIFO, a device (`/dev/zero`, a tty), a socket or a
//!   directory is refused with its path, without blocking (the file is opened non-blocking and
//!   checked with `fstat` before anything is read);
//! - at most `limit` bytes are read, whatever the file claims or grows to while it is read;
//! - text must be UTF-8, and a leading UTF-8 byte-order mark is dropped;
//! - structured text (YAML) is pre-scanned for nesting depth ([`check_nesting`]) before a
//!   parser sees it, so a file nested 100 000 levels deep is refused at once with its line and
//!   column instead of keeping a parser busy for minutes.

use std::fmt;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Recipe and station files: far more than any real one (a few KiB).
pub const CONFIG_LIMIT: u64 = 1 << 20;
/// Intel HEX inputs: the largest flash in the catalog as 16-byte records is under 3 MiB of text;
/// this leaves room for 32-byte records, comments, CRLF and EEPROM data.
pub const HEX_LIMIT: u64 = 16 << 20;
/// Deepest YAML nesting accepted (recipes use 3 levels, station files 3).
pub const MAX_NESTING: usize = 32;

/// Why a file could not be read.
#[derive(Debug)]
pub struct InputError {
    pub path: PathBuf,
    pub kind: InputErrorKind,
}

#[derive(Debug)]
#[non_exhaustive]
pub enum InputErrorKind {
    Io(std::io::Error),
    /// Not a regular file: what it is instead.
    NotRegular(&'static str),
    TooLarge { limit: u64 },
    NotUtf8 { offset: usize },
}

impl InputErrorKind {
    /// The message, with I/O errors said as "cannot read the WHAT: …".
    pub fn message(&self, what: &str) -> String {
        match self {
            InputErrorKind::Io(e) => format!("cannot read the {what}: {e}"),
            other => other.to_string(),
        }
    }
}

impl fmt::Display for InputErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InputErrorKind::Io(e) => write!(f, "cannot read the file: {e}"),
            InputErrorKind::NotRegular(what) => write!(f, "is {what}, not a regular file; give the path of a file"),
            InputErrorKind::TooLarge { limit } => write!(f, "is larger than {} (the limit for this kind of file); is it the right file?", size(*limit)),
            InputErrorKind::NotUtf8 { offset } => write!(f, "is not UTF-8 text (invalid byte at offset {offset})"),
        }
    }
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", crate::text::shown(&self.path.display().to_string()), self.kind)
    }
}

impl std::error::Error for InputError {}

fn size(n: u64) -> String {
    if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{} MiB", n >> 20)
    } else {
        format!("{n} bytes")
    }
}

fn kind_name(t: std::fs::FileType) -> &'static str {
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

/// The bytes of the regular file at `path`, at most `limit` of them.
pub fn read_bytes(path: &Path, limit: u64) -> Result<Vec<u8>, InputError> {
    let err = |kind| InputError { path: path.to_owned(), kind };
    // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever; on a
    // regular file the flag changes nothing.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(nix::libc::EISDIR) => err(InputErrorKind::NotRegular("a directory")),
            _ => err(InputErrorKind::Io(e)),
        })?;
    let meta = file.metadata().map_err(|e| err(InputErrorKind::Io(e)))?;
    if !meta.file_type().is_file() {
        return Err(err(InputErrorKind::NotRegular(kind_name(meta.file_type()))));
    }
    if meta.len() > limit {
        return Err(err(InputErrorKind::TooLarge { limit }));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // Bounded even if the file grows while it is read.
    file.take(limit + 1).read_to_end(&mut bytes).map_err(|e| err(InputErrorKind::Io(e)))?;
    if bytes.len() as u64 > limit {
        return Err(err(InputErrorKind::TooLarge { limit }));
    }
    Ok(bytes)
}

/// `bytes` as text: UTF-8 required, a leading BOM dropped.
pub fn text_of(path: &Path, bytes: Vec<u8>) -> Result<String, InputError> {
    let mut s = String::from_utf8(bytes)
        .map_err(|e| InputError { path: path.to_owned(), kind: InputErrorKind::NotUtf8 { offset: e.utf8_error().valid_up_to() } })?;
    if s.starts_with('\u{feff}') {
        s.drain(..'\u{feff}'.len_utf8());
    }
    Ok(s)
}

/// The regular file at `path` as UTF-8 text (BOM dropped), at most `limit` bytes.
pub fn read_text(path: &Path, limit: u64) -> Result<String, InputError> {
    text_of(path, read_bytes(path, limit)?)
}

/// An identifier read from a file (SKU, station or slot name): non-empty, at most `max_chars`
/// characters, and nothing a terminal would act on (control characters, bidi overrides,
/// invisible format characters: see [`crate::text::is_unsafe`]).
pub fn check_name(s: &str, max_chars: usize) -> Result<(), String> {
    if s.trim().is_empty() {
        return Err("is empty".into());
    }
    let n = s.chars().count();
    if n > max_chars {
        return Err(format!("is {n} characters long; at most {max_chars}"));
    }
    if let Some(c) = s.chars().find(|c| crate::text::is_unsafe(*c)) {
        return Err(format!(
            "'{}' holds the control or invisible character {}: use printable text",
            crate::text::shown(s),
            crate::text::shown(&c.to_string())
        ));
    }
    Ok(())
}

/// Where YAML text nests deeper than `max` levels: `(line, column, depth)`, 1-based.
///
/// A cheap, linear pre-scan (no parsing): it counts flow collections (`[`, `{`) outside quoted
/// scalars and comments, block indentation levels, and the `- ` / `? ` indicators that open a
/// nested node on the same line. It may count a little more than a parser would (a `[` inside
/// a plain scalar), never less for the shapes that make parsers slow.
pub fn check_nesting(text: &str, max: usize) -> Result<(), (usize, usize, usize)> {
    let mut flow: usize = 0;
    let mut indents: Vec<usize> = Vec::new();
    let mut quote: Option<char> = None;
    for (ln, line) in text.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let mut chars = line.char_indices().peekable();
        let mut col = 0usize;
        let mut at_start = quote.is_none() && flow == 0;
        let mut inline = 0usize;
        let mut prev: Option<char> = None;
        if at_start {
            let indent = line.len() - line.trim_start_matches(' ').len();
            let rest = line[indent..].trim_start();
            if rest.is_empty() || rest.starts_with('#') {
                continue;
            }
            while indents.last().is_some_and(|&i| i > indent) {
                indents.pop();
            }
            if indents.last() != Some(&indent) {
                indents.push(indent);
            }
        }
        while let Some((_, c)) = chars.next() {
            col += 1;
            match quote {
                Some('\'') => {
                    if c == '\'' {
                        if chars.peek().map(|p| p.1) == Some('\'') {
                            chars.next();
                            col += 1;
                        } else {
                            quote = None;
                        }
                    }
                }
                Some(_) => {
                    if c == '\\' {
                        chars.next();
                        col += 1;
                    } else if c == '"' {
                        quote = None;
                    }
                }
                None => {
                    let opens_node = prev.is_none_or(|p| p.is_whitespace() || matches!(p, '[' | '{' | ',' | ':' | '-' | '?'));
                    match c {
                        '#' if prev.is_none_or(char::is_whitespace) => break,
                        '\'' | '"' if opens_node => quote = Some(c),
                        '[' | '{' if opens_node || flow > 0 => flow += 1,
                        ']' | '}' if flow > 0 => flow -= 1,
                        '-' | '?' if at_start && chars.peek().is_none_or(|p| p.1 == ' ') => inline += 1,
                        ' ' => {}
                        _ => at_start = false,
                    }
                    if !matches!(c, '-' | '?' | ' ') {
                        at_start = false;
                    }
                    let depth = indents.len() + inline + flow;
                    if depth > max {
                        return Err((ln + 1, col, depth));
                    }
                }
            }
            prev = Some(c);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_files_are_refused_without_blocking() {
        let e = read_bytes(Path::new("/dev/zero"), CONFIG_LIMIT).unwrap_err();
        assert!(e.to_string().contains("/dev/zero: is a character device"), "{e}");
        let e = read_bytes(Path::new("/"), CONFIG_LIMIT).unwrap_err();
        assert!(e.to_string().contains("directory"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let e = read_bytes(&fifo, CONFIG_LIMIT).unwrap_err();
        assert!(e.to_string().contains("FIFO"), "{e}");
    }

    #[test]
    fn size_bound_and_bom() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big");
        std::fs::write(&p, vec![b'a'; 2000]).unwrap();
        assert!(matches!(read_bytes(&p, 1999).unwrap_err().kind, InputErrorKind::TooLarge { .. }));
        assert_eq!(read_bytes(&p, 2000).unwrap().len(), 2000);
        std::fs::write(&p, "\u{feff}sku: X\n").unwrap();
        assert_eq!(read_text(&p, 100).unwrap(), "sku: X\n");
        std::fs::write(&p, b"a\xffb").unwrap();
        assert!(read_text(&p, 100).unwrap_err().to_string().contains("offset 1"));
    }

    #[test]
    fn nesting() {
        let ok = "sku: X\nserial:\n  write: { memory: eeprom, address: 0x3F0 }\nslots:\n  - { name: A1, programmer: sim }\n  - name: A2\n    programmer: sim\n";
        assert_eq!(check_nesting(ok, 8), Ok(()));
        let deep = format!("a: {}", "[".repeat(100_000));
        let (l, c, _) = check_nesting(&deep, 32).unwrap_err();
        assert_eq!((l, c), (1, 3 + 32));
        let deep = format!("x: 1\n{}", "{a: ".repeat(50));
        assert_eq!(check_nesting(&deep, 32).unwrap_err().0, 2);
        assert!(check_nesting(&"- ".repeat(100), 32).is_err());
        assert_eq!(check_nesting("a: 'it''s [[[[[[[[[[['\nb: \"[[[[[[[[\\\"[[[[[\"\nc: it's # [[[[[[[[[[[[\n", 4), Ok(()));
    }
}
