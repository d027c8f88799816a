//! Scan intake: barcode lines from a scanner (which types a line + Enter), a file, or stdin.

/// One scanned line, interpreted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scan {
    /// `SERIAL`: the next free slot takes it.
    Any { serial: String },
    /// `SLOT:SERIAL`: a specific fixture.
    Slot { slot: String, serial: String },
    /// The operator asked to stop (`quit`, `exit`, `q`): only from [`parse_interactive`], i.e.
    /// typed at a terminal. In a scan file or a pipe these words are data like any other line.
    Quit,
}

/// Longest serial accepted, in characters (not bytes).
pub const MAX_SERIAL_CHARS: usize = 128;

/// Whether a line is the operator's `quit` / `exit` / `q`.
pub fn is_quit(line: &str) -> bool {
    let t = line.trim_matches(|c: char| c.is_whitespace() || c.is_control());
    ["quit", "exit", "q"].iter().any(|q| t.eq_ignore_ascii_case(q))
}

/// A line typed at an interactive terminal: `quit`/`exit`/`q` stop, anything else as [`parse_line`].
pub fn parse_interactive(line: &str, slots: &[String]) -> Option<Scan> {
    if is_quit(line) {
        return Some(Scan::Quit);
    }
    parse_line(line, slots)
}

/// Check a serial before it becomes a unit: non-empty, at most [`MAX_SERIAL_CHARS`]
/// characters, and printable (no control characters, bidi overrides or invisible format
/// characters), whether or not the recipe has a pattern. The reason is safe to show.
pub fn check_serial(serial: &str) -> Result<(), String> {
    if serial.is_empty() {
        return Err("empty serial".into());
    }
    let n = serial.chars().count();
    if n > MAX_SERIAL_CHARS {
        return Err(format!("serial is {n} characters long; at most {MAX_SERIAL_CHARS}: not a board label"));
    }
    if serial.contains('\u{FFFD}') {
        return Err(format!("serial '{}' is not text (bytes that are not UTF-8): not a board label, scan it again", crate::text::shown(serial)));
    }
    if let Some(c) = serial.chars().find(|c| crate::text::is_unsafe(*c)) {
        return Err(format!(
            "serial '{}' holds the control or invisible character {}: not a board label, scan it again",
            crate::text::shown(serial),
            crate::text::shown(&c.to_string())
        ));
    }
    Ok(())
}

/// Interpret a scan line. Blank lines and `#` comments give `None`. `PREFIX:REST` addresses a
/// slot only when `PREFIX` names one of `slots` (case-insensitive); otherwise the whole line is
/// the serial, so serials containing ':' still work.
pub fn parse_line(line: &str, slots: &[String]) -> Option<Scan> {
    // Scanners may send CR, CRLF, or stray control characters (e.g. GS in GS1 codes at the ends).
    let t = line.trim_matches(|c: char| c.is_whitespace() || c.is_control());
    if t.is_empty() || t.starts_with('#') {
        return None;
    }
    if let Some((prefix, rest)) = t.split_once(':') {
        if let Some(slot) = slots.iter().find(|s| s.eq_ignore_ascii_case(prefix.trim())) {
            return Some(Scan::Slot { slot: slot.clone(), serial: rest.trim().to_string() });
        }
    }
    Some(Scan::Any { serial: t.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        let slots = vec!["A1".to_string(), "S2".to_string()];
        assert_eq!(parse_line("  \r\n", &slots), None);
        assert_eq!(parse_line("# batch 7", &slots), None);
        assert_eq!(parse_line("PL-000123\r", &slots), Some(Scan::Any { serial: "PL-000123".into() }));
        assert_eq!(parse_line("a1:PL-1", &slots), Some(Scan::Slot { slot: "A1".into(), serial: "PL-1".into() }));
        assert_eq!(parse_line("urn:x:1", &slots), Some(Scan::Any { serial: "urn:x:1".into() }));
        assert_eq!(parse_line("QUIT", &slots), Some(Scan::Any { serial: "QUIT".into() }));
        assert_eq!(parse_interactive(" quit\r", &slots), Some(Scan::Quit));
        assert_eq!(parse_interactive("A1:PL-1", &slots), Some(Scan::Slot { slot: "A1".into(), serial: "PL-1".into() }));
    }

    #[test]
    fn serials() {
        assert!(check_serial(&"字".repeat(43)).is_ok());
        assert!(check_serial(&"字".repeat(129)).is_err());
        for bad in ["AB\x1b[2JCD", "a\0b", "x\u{202E}y", "a\rb", ""] {
            let e = check_serial(bad).unwrap_err();
            assert!(!e.chars().any(crate::text::is_unsafe), "{e}");
        }
    }
}
