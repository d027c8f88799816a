//! Intel HEX reader/writer: real fixtures, every malformed-input error, round trips, and
//! property tests (no panics on arbitrary input; write → read is the identity).

use std::path::PathBuf;

use flashline::hex::{self, HexErrorKind};
use flashline::image::{Image, StartAddress};
use proptest::prelude::*;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// Parse and return the error's (line, kind, display).
fn fails(text: &str) -> (Option<usize>, HexErrorKind, String) {
    match hex::parse(text, "bad.hex") {
        Ok(im) => panic!("parsed without error: {:?}", im.ranges()),
        Err(e) => {
            let s = e.to_string();
            (e.line, e.kind, s)
        }
    }
}

const EOF: &str = ":00000001FF\n";

/// One record line with a correct checksum. `declared` overrides the length byte.
fn rec(declared: Option<u8>, addr: u16, rtype: u8, data: &[u8]) -> String {
    let mut bytes = vec![declared.unwrap_or(data.len() as u8), (addr >> 8) as u8, addr as u8, rtype];
    bytes.extend_from_slice(data);
    let sum = bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b));
    bytes.push(sum.wrapping_neg());
    let mut s = String::from(":");
    for b in bytes {
        s += &format!("{b:02X}");
    }
    s + "\n"
}

#[test]
fn qmk_32u4_dfu_bootloader() {
    let im = hex::read_file(&fixture("bootloader_atmega32u4_1_0_0.hex")).unwrap();
    assert_eq!(im.min_addr(), Some(0x7000));
    assert!(im.end_addr().unwrap() <= 0x8000);
    assert_eq!(im.start, Some(StartAddress::Segment { cs: 0, ip: 0x7000 }));
    // First record of the file: :047000000C948D3E21
    assert_eq!((0x7000..0x7004).map(|a| im.get(a).unwrap()).collect::<Vec<_>>(), [0x0C, 0x94, 0x8D, 0x3E]);
    // Non-contiguous records: more than one range.
    assert!(im.ranges().len() > 1);
}

#[test]
fn at90usb128_bootloader_lives_above_64k_and_round_trips() {
    let im = hex::read_file(&fixture("bootloader_at90usb128_1.0.1.hex")).unwrap();
    assert_eq!(im.min_addr(), Some(0x1E000));
    assert!(im.end_addr().unwrap() <= 0x20000);
    assert_eq!(im.start, Some(StartAddress::Segment { cs: 0x1000, ip: 0xE000 }));
    for rl in [16, 32] {
        let text = hex::to_string(&im, rl);
        // Extended linear address 0x0001 must precede the data.
        assert!(text.starts_with(":020000040001F9\n"), "{}", &text[..40]);
        assert!(text.ends_with(":040000031000E00009\n:00000001FF\n"), "start record kept");
        let back = hex::parse(&text, "out.hex").unwrap();
        assert_eq!(back, im, "record length {rl}");
        // Every data line carries at most rl bytes.
        for l in text.lines().filter(|l| &l[7..9] == "00") {
            assert!(usize::from_str_radix(&l[1..3], 16).unwrap() <= rl);
        }
    }
}

#[test]
fn caterina_micro_is_a_32730_byte_image() {
    let im = hex::read_file(&fixture("Caterina-Micro.hex")).unwrap();
    assert_eq!(im.len(), 32730);
    assert_eq!(im.min_addr(), Some(0));
    let back = hex::parse(&hex::to_string(&im, 32), "x").unwrap();
    assert_eq!(back, im);
}

#[test]
fn crlf_and_lone_cr_and_blank_lines_are_accepted() {
    let im = hex::read_file(&fixture("optiboot_atmega328.hex")).unwrap();
    assert_eq!(im.min_addr(), Some(0x7E00));
    assert_eq!(im.start, Some(StartAddress::Segment { cs: 0, ip: 0x7E00 }));
    let text = std::fs::read_to_string(fixture("optiboot_atmega328.hex")).unwrap();
    let cr = text.replace("\r\n", "\r");
    assert_eq!(hex::parse(&cr, "cr.hex").unwrap(), im);
    let lf_blank = text.replace("\r\n", "\n\n");
    assert_eq!(hex::parse(&lf_blank, "lf.hex").unwrap(), im);
}

#[test]
fn extended_linear_and_start_linear_records() {
    let text = rec(None, 0, 4, &[0, 1]) + &rec(None, 0x10, 0, &[1, 2, 3, 4]) + &rec(None, 0, 5, &[0, 1, 0x23, 0x45]) + EOF;
    let text = text.as_str();
    let im = hex::parse(text, "t").unwrap();
    assert_eq!(im.get(0x10010), Some(1));
    assert_eq!(im.get(0x10013), Some(4));
    assert_eq!(im.start, Some(StartAddress::Linear(0x0001_2345)));
    assert_eq!(hex::to_string(&im, 16), text);
}

#[test]
fn unaligned_records_are_realigned_on_output() {
    // 3 bytes at 0x0E, then 20 bytes at 0x11: one contiguous range 0x0E..0x25.
    let text = rec(None, 0x0E, 0, &[0xAA, 0xBB, 0xCC]) + &rec(None, 0x11, 0, &[0x55; 20]) + EOF;
    let parsed = hex::parse(&text, "t").unwrap();
    assert_eq!(parsed.ranges(), vec![0x0E..0x25]);
    let out = hex::to_string(&parsed, 16);
    let lines: Vec<&str> = out.lines().collect();
    // 0x0E..0x10 (2 bytes, to the 16-byte boundary), 0x10..0x20, 0x20..0x25.
    assert!(lines[0].starts_with(":02000E00"), "{out}");
    assert!(lines[1].starts_with(":10001000"), "{out}");
    assert!(lines[2].starts_with(":05002000"), "{out}");
}

// ---- every error, one malformed input each --------------------------------------------------

#[test]
fn bad_checksum_names_line() {
    let (line, kind, msg) = fails(":0400000001020304F0\n:00000001FF\n");
    assert_eq!(line, Some(1));
    assert!(matches!(kind, HexErrorKind::BadChecksum { found: 0xF0, computed: 0xF2 }), "{kind:?}");
    assert!(msg.starts_with("bad.hex:1: bad checksum"), "{msg}");
}

#[test]
fn bad_length_names_line() {
    // Declares 5 bytes, holds 4 (checksum fixed up so only the length is wrong).
    let text = rec(None, 0, 0, &[0xAA; 16]) + &rec(Some(5), 0x10, 0, &[1, 2, 3, 4]) + EOF;
    let (line, kind, msg) = fails(&text);
    assert_eq!(line, Some(2), "{msg}");
    assert!(matches!(kind, HexErrorKind::BadLength { declared: 5, actual: 4 }), "{kind:?}");
    assert!(msg.contains("bad.hex:2: bad length"), "{msg}");
}

#[test]
fn truncated_line_is_a_length_error() {
    let text = rec(None, 0, 0, &[0xAA; 16]) + ":100010000102\n" + EOF;
    let (line, kind, _) = fails(&text);
    assert_eq!(line, Some(2));
    assert!(matches!(kind, HexErrorKind::BadLength { .. } | HexErrorKind::TooShort { .. }), "{kind:?}");
}

#[test]
fn bad_record_type_names_line() {
    let (line, kind, msg) = fails("\n:00000006FA\n:00000001FF\n");
    assert_eq!(line, Some(2));
    assert!(matches!(kind, HexErrorKind::BadRecordType(6)), "{kind:?}");
    assert!(msg.contains("bad.hex:2: bad record type 06"), "{msg}");
}

#[test]
fn non_hex_characters_name_line_and_column() {
    let (line, kind, msg) = fails(":0400000001020G04F2\n:00000001FF\n");
    assert_eq!(line, Some(1));
    assert!(matches!(kind, HexErrorKind::NonHex { column: 15, found: 'G' }), "{kind:?}");
    assert!(msg.contains("column 15"), "{msg}");
    let (_, kind, _) = fails("S00600004844521B\n");
    assert!(matches!(kind, HexErrorKind::MissingStartCode { found: 'S' }), "{kind:?}");
}

#[test]
fn invalid_utf8_is_a_non_hex_character() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("latin1.hex");
    std::fs::write(&p, b":04000000\xE901020304\n:00000001FF\n").unwrap();
    let e = hex::read_file(&p).unwrap_err();
    assert_eq!(e.line, Some(1));
    assert!(matches!(e.kind, HexErrorKind::NonHex { column: 10, .. }), "{:?}", e.kind);
    assert!(e.to_string().starts_with(&p.display().to_string()));
}

#[test]
fn data_after_eof_names_line() {
    let (line, kind, msg) = fails(":00000001FF\n:0400000001020304F2\n");
    assert_eq!(line, Some(2));
    assert!(matches!(kind, HexErrorKind::DataAfterEof { eof_line: 1 }), "{kind:?}");
    assert!(msg.contains("after the end-of-file record on line 1"), "{msg}");
    // A second EOF counts as data after EOF too (it is what the hand-merge leaves behind).
    let (line, _, _) = fails(":00000001FF\n:00000001FF\n");
    assert_eq!(line, Some(2));
}

#[test]
fn missing_eof_names_file() {
    let (line, kind, msg) = fails(":0400000001020304F2\n");
    assert_eq!(line, Some(1));
    assert!(matches!(kind, HexErrorKind::MissingEof), "{kind:?}");
    assert!(msg.contains("missing end-of-file"), "{msg}");
    let (line, kind, _) = fails("");
    assert_eq!(line, None);
    assert!(matches!(kind, HexErrorKind::MissingEof));
}

#[test]
fn same_address_twice_with_different_bytes() {
    // Line 1 writes 01 02 03 04 at 0; line 3 writes 02 02 at 1 (0x01 differs: 0x02 vs 0x02 ok,
    // 0x02 at address 2 differs from 0x03).
    let text = ":0400000001020304F2\n:0400100001020304E2\n:020001000202F9\n:00000001FF\n";
    let (line, kind, msg) = fails(text);
    assert_eq!(line, Some(3));
    assert!(
        matches!(kind, HexErrorKind::Conflict { addr: 2, old: 3, new: 2, first_line: Some(1) }),
        "{kind:?}"
    );
    assert!(msg.contains("0x00002 written twice") && msg.contains("on line 1"), "{msg}");
    // Reported in file order even when the later line has the lower address.
    let text = rec(None, 0x12, 0, &[9, 9]) + &rec(None, 0x10, 0, &[1, 2, 3, 4]) + EOF;
    let (line, kind, _) = fails(&text);
    assert_eq!(line, Some(2));
    assert!(
        matches!(kind, HexErrorKind::Conflict { addr: 0x12, old: 9, new: 3, first_line: Some(1) }),
        "{kind:?}"
    );
    // The same bytes twice are fine.
    let ok = ":0400000001020304F2\n:020001000203F8\n:00000001FF\n";
    assert_eq!(hex::parse(ok, "ok").unwrap().len(), 4);
}

#[test]
fn conflicting_start_addresses() {
    let text = rec(None, 0, 3, &[0, 0, 0x70, 0]) + &rec(None, 0, 3, &[0, 0, 0x70, 0]) + &rec(None, 0, 3, &[0, 0, 0x7E, 0]) + EOF;
    let (line, kind, _) = fails(&text);
    assert_eq!(line, Some(3));
    assert!(matches!(kind, HexErrorKind::StartAddressTwice { .. }), "{kind:?}");
}

#[test]
fn eof_with_payload_is_refused() {
    let (_, kind, _) = fails(":01000001AA54\n");
    assert!(matches!(kind, HexErrorKind::BadLengthForType { rtype: 1, len: 1 }), "{kind:?}");
}

#[test]
fn unreadable_file_names_path() {
    let e = hex::read_file(std::path::Path::new("/nonexistent/fw.hex")).unwrap_err();
    assert!(e.to_string().starts_with("/nonexistent/fw.hex: cannot read"), "{e}");
}

// ---- properties -----------------------------------------------------------------------------

fn arb_image() -> impl Strategy<Value = Image> {
    arb_image_below(0x30000)
}

fn arb_image_below(limit: u32) -> impl Strategy<Value = Image> {
    let seg = (0u32..limit, proptest::collection::vec(any::<u8>(), 1..300));
    (proptest::collection::vec(seg, 0..8), proptest::option::of(any::<u32>()), any::<bool>()).prop_map(
        |(segs, start, seg_start)| {
            let mut im = Image::new();
            for (a, d) in segs {
                // Later segments lose where they conflict; keep the image well defined.
                let _ = im.insert(a, &d);
            }
            im.start = start.map(|s| {
                if seg_start {
                    StartAddress::Segment { cs: (s >> 16) as u16, ip: s as u16 }
                } else {
                    StartAddress::Linear(s)
                }
            });
            im
        },
    )
}

fn arb_line() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ -~]{0,80}",
        ":[0-9A-Fa-f]{0,60}",
        ":0[0-6]0000[0-9A-F]{0,2}0[0-6][0-9A-F]{0,40}",
        Just(":00000001FF".to_string()),
        Just(":020000040001F9".to_string()),
        Just(":02000002F000FC".to_string()),
        Just(":02000004FFFFFC".to_string()),
        Just(":10FFF800000102030405060708090A0B0C0D0E0F82".to_string()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn reader_never_panics_on_arbitrary_text(s in "\\PC{0,400}") {
        let _ = hex::parse(&s, "fuzz");
    }

    #[test]
    fn reader_never_panics_on_record_like_lines(lines in proptest::collection::vec(arb_line(), 0..20),
                                                 sep in prop_oneof![Just("\n"), Just("\r\n"), Just("\r")]) {
        let text = lines.join(sep);
        if let Err(e) = hex::parse(&text, "fuzz") {
            // Every error is printable and names the file.
            prop_assert!(e.to_string().starts_with("fuzz"));
        }
    }

    #[test]
    fn record_order_does_not_matter(im in arb_image_below(0xFE00), seed in any::<u64>()) {
        let text = hex::to_string(&im, 16);
        let mut lines: Vec<&str> = text.lines().filter(|l| &l[7..9] == "00").collect();
        // Below 64 KiB only, so no extended-address record ties lines to their position.
        let mut st = seed | 1;
        for i in (1..lines.len()).rev() {
            st ^= st << 13; st ^= st >> 7; st ^= st << 17;
            lines.swap(i, (st % (i as u64 + 1)) as usize);
        }
        let shuffled = lines.join("\n") + "\n:00000001FF\n";
        let back = hex::parse(&shuffled, "shuffled").unwrap();
        prop_assert_eq!(back.ranges(), im.ranges());
        prop_assert_eq!(back.to_flat(0x10000, 0), im.to_flat(0x10000, 0));
    }

    #[test]
    fn write_then_read_is_identity(im in arb_image(), rl in prop_oneof![Just(16usize), Just(32usize), 1usize..=255]) {
        let text = hex::to_string(&im, rl);
        let back = hex::parse(&text, "rt").unwrap();
        prop_assert_eq!(back, im);
    }
}
