//! Scan intake: barcode lines from a scanner (which types a line + Enter), a file, or stdin.

/// One scanned line, interpreted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scan {
    /// `SERIAL`: the next free slot takes it.
    Any { serial: String },
    /// `SLOT:SERIAL`: a specific fixture.
    Slot { slot: String, serial: String },
    /// The operator asked to stop (`quit`, `exit`, `q`).
    Quit,
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
    if ["quit", "exit", "q"].iter().any(|q| t.eq_ignore_ascii_case(q)) {
        return Some(Scan::Quit);
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
        assert_eq!(parse_line("QUIT", &slots), Some(Scan::Quit));
    }
}
