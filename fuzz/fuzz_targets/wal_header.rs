//! `SegmentHeader::parse` on arbitrary bytes: never panics; an accepted header has a known
//! magic, the long-header flag, a valid segment size and a page address at a segment start, and
//! checking it against any segment name never panics.
#![no_main]

use cairn_format::wal::{XLP_LONG_HEADER, is_valid_segment_size};
use cairn_format::{SegmentHeader, SegmentName};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (u32, u32, u32, &[u8])| {
    let (timeline, log, seg, bytes) = input;
    let Ok(h) = SegmentHeader::parse(bytes) else {
        return;
    };
    assert!(h.pg_version().is_some());
    assert!(h.info & XLP_LONG_HEADER != 0);
    assert!(is_valid_segment_size(h.seg_size));
    assert_eq!(h.pageaddr % u64::from(h.seg_size), 0);
    let name = SegmentName { timeline, log, seg };
    if h.check_name(&name).is_ok() {
        assert!(h.timeline <= timeline);
        assert_eq!(name.start_lsn(h.seg_size).ok(), Some(h.pageaddr));
    }
});
