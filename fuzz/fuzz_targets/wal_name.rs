//! WAL file names and timeline history files on arbitrary input: `WalFileName::parse` never
//! panics; an accepted name prints back exactly; segment arithmetic (segment numbers, next,
//! prev) is consistent for every valid segment size; `parse_history` never panics.
#![no_main]

use cairn_format::wal::{is_valid_segment_size, parse_history};
use cairn_format::{SegmentName, WalFileName};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (u8, &str)| {
    let (size_bits, s) = input;
    let _ = parse_history(s.as_bytes());
    let Ok(name) = WalFileName::parse(s) else {
        return;
    };
    assert_eq!(name.to_string(), s);
    let seg_size = 1u32 << (20 + u32::from(size_bits % 11));
    assert!(is_valid_segment_size(seg_size));
    let Ok(checked) = WalFileName::parse_for(s, seg_size) else {
        return;
    };
    assert_eq!(checked, name);
    if let Some(seg) = name.segment() {
        let n = seg
            .segno(seg_size)
            .expect("checked name has a segment number");
        assert_eq!(
            SegmentName::from_segno(seg.timeline, n, seg_size).ok(),
            Some(seg)
        );
        if let Some(next) = seg.next(seg_size).expect("valid") {
            assert_eq!(next.segno(seg_size).ok(), Some(n + 1));
            assert_eq!(next.prev(seg_size).ok(), Some(Some(seg)));
        }
        if let Some(prev) = seg.prev(seg_size).expect("valid") {
            assert_eq!(prev.next(seg_size).ok(), Some(Some(seg)));
        }
    }
});
