//! Untrusted text made safe to show: serials, SKUs, names, programmer and avrdude output can
//! carry control characters (ESC sequences that clear a terminal or fake a PASS line) or bidi
//! overrides (U+202E) that reorder what the operator reads. Every place that prints such text
//! to a terminal, a log, a report or the dashboard goes through [`shown`].

use std::borrow::Cow;

/// Whether `c` must not reach a display as itself: C0/C1 controls (including TAB, CR, LF and
/// DEL), bidi embeddings, overrides and isolates, zero-width and invisible format characters,
/// the BOM, and line/paragraph separators.
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{061C}' | '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}' | '\u{2060}'..='\u{2069}'
            | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}')
}

/// `s` with every unsafe character written as an escape a person can read: `\e` for ESC,
/// `\0`, `\t`, `\r`, `\n`, and `\u{202E}` for the rest; a backslash stays a backslash.
/// Borrowed (no copy) when nothing needs escaping, which is the common case.
pub fn shown(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_unsafe) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\u{1b}' => out.push_str("\\e"),
            '\0' => out.push_str("\\0"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            c if is_unsafe(c) => out.push_str(&format!("\\u{{{:04X}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_not_copied() {
        assert!(matches!(shown("PL4-000101 ✓ 日本"), Cow::Borrowed(_)));
    }

    #[test]
    fn controls_and_bidi_overrides_are_escaped() {
        assert_eq!(shown("AB\x1b[2J\x1b]0;PWNED\x07CD"), "AB\\e[2J\\e]0;PWNED\\u{0007}CD");
        assert_eq!(shown("a\0b\r\nc\u{202E}d\u{9b}"), "a\\0b\\r\\nc\\u{202E}d\\u{009B}");
        assert!(!shown("x\u{2066}y\u{FEFF}").chars().any(is_unsafe));
    }
}
