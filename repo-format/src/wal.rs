//! PostgreSQL WAL file names, segment headers and timeline history files.
//!
//! Pure parsing, no I/O. Every function takes untrusted input and answers with a
//! [`FormatError`] instead of panicking.
//!
//! # File names
//!
//! PostgreSQL hands `archive_command` and `restore_command` four kinds of file name (upper-case
//! hex only, as PostgreSQL writes them):
//!
//! ```text
//! TTTTTTTTLLLLLLLLSSSSSSSS                 a WAL segment: timeline, log, seg (8 hex digits each)
//! TTTTTTTTLLLLLLLLSSSSSSSS.partial         the last, incomplete segment of a timeline left at promotion
//! TTTTTTTTLLLLLLLLSSSSSSSS.OOOOOOOO.backup a backup history file (OOOOOOOO = start offset in the segment)
//! TTTTTTTT.history                         a timeline history file
//! ```
//!
//! The segment number is `log * (2^32 / segment size) + seg`; `seg` must be below
//! `2^32 / segment size`, which only the segment size tells ([`SegmentName::segno`]).
//!
//! # Segment header
//!
//! The first page of every segment starts with `XLogLongPageHeaderData` (40 bytes, in the
//! server's byte order, little-endian on every platform Cairn supports):
//!
//! ```text
//! xlp_magic[2] || xlp_info[2] || xlp_tli[4] || xlp_pageaddr[8] || xlp_rem_len[4] || pad[4]
//!   || xlp_sysid[8] || xlp_seg_size[4] || xlp_xlog_blcksz[4]
//! ```

use std::fmt;

use crate::error::{FormatError, Result};

/// Bytes of `XLogLongPageHeaderData`.
pub const LONG_PAGE_HEADER_LEN: usize = 40;
/// `xlp_info` flag: this page starts with a long header (first page of a segment).
pub const XLP_LONG_HEADER: u16 = 0x0002;
/// Every `xlp_info` flag bit PostgreSQL 13-17 define (`XLP_ALL_FLAGS`).
pub const XLP_ALL_FLAGS: u16 = 0x000F;
/// PostgreSQL's default WAL segment size (16 MiB).
pub const DEFAULT_SEGMENT_SIZE: u32 = 16 * 1024 * 1024;
/// Smallest valid WAL segment size (1 MiB).
pub const MIN_SEGMENT_SIZE: u32 = 1024 * 1024;
/// Largest valid WAL segment size (1 GiB).
pub const MAX_SEGMENT_SIZE: u32 = 1024 * 1024 * 1024;

/// `XLOG_PAGE_MAGIC` of each PostgreSQL major version this build reads
/// (`src/include/access/xlog_internal.h`).
pub const KNOWN_PAGE_MAGICS: [(u16, u32); 5] = [
    (0xD106, 13),
    (0xD10D, 14),
    (0xD110, 15),
    (0xD113, 16),
    (0xD116, 17),
];

/// The PostgreSQL major version that writes WAL pages with `magic`, if known.
pub fn pg_version_of_magic(magic: u16) -> Option<u32> {
    KNOWN_PAGE_MAGICS
        .iter()
        .find(|(m, _)| *m == magic)
        .map(|(_, v)| *v)
}

/// True for a valid WAL segment size: a power of two from 1 MiB to 1 GiB.
pub fn is_valid_segment_size(seg_size: u32) -> bool {
    seg_size.is_power_of_two() && (MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE).contains(&seg_size)
}

fn check_segment_size(seg_size: u32) -> Result<()> {
    if is_valid_segment_size(seg_size) {
        Ok(())
    } else {
        Err(FormatError::InvalidParameter {
            what: "WAL segment size",
            reason: format!("{seg_size} is not a power of two from 1 MiB to 1 GiB"),
        })
    }
}

/// Segments per 4 GiB "log" (`XLogSegmentsPerXLogId`).
fn segments_per_log(seg_size: u32) -> u64 {
    (1u64 << 32) / u64::from(seg_size)
}

/// The 24 hex digits naming a WAL segment: timeline, log and seg.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SegmentName {
    /// Timeline (never 0).
    pub timeline: u32,
    /// High part of the segment number (the "log").
    pub log: u32,
    /// Low part of the segment number.
    pub seg: u32,
}

impl SegmentName {
    /// The segment `segno` of `timeline` for segments of `seg_size` bytes.
    pub fn from_segno(timeline: u32, segno: u64, seg_size: u32) -> Result<Self> {
        check_segment_size(seg_size)?;
        if timeline == 0 {
            return Err(FormatError::InvalidParameter {
                what: "WAL timeline",
                reason: "timeline 0 does not exist".into(),
            });
        }
        let per = segments_per_log(seg_size);
        let log = u32::try_from(segno / per).map_err(|_| FormatError::InvalidParameter {
            what: "WAL segment number",
            reason: format!("{segno} is beyond the last segment"),
        })?;
        // per >= 4, so segno % per < 2^30.
        let seg = u32::try_from(segno % per).unwrap_or(u32::MAX);
        Ok(Self { timeline, log, seg })
    }

    /// The segment that holds `lsn` on `timeline`.
    pub fn from_lsn(timeline: u32, lsn: u64, seg_size: u32) -> Result<Self> {
        check_segment_size(seg_size)?;
        Self::from_segno(timeline, lsn / u64::from(seg_size), seg_size)
    }

    /// The segment number for segments of `seg_size` bytes; fails when `seg` is out of range for
    /// that size (a name no server with that segment size writes).
    pub fn segno(&self, seg_size: u32) -> Result<u64> {
        check_segment_size(seg_size)?;
        let per = segments_per_log(seg_size);
        if u64::from(self.seg) >= per {
            return Err(FormatError::malformed(
                "WAL file name",
                format!(
                    "segment part {:08X} is out of range for {} MiB segments",
                    self.seg,
                    seg_size / (1024 * 1024)
                ),
            ));
        }
        Ok(u64::from(self.log) * per + u64::from(self.seg))
    }

    /// The LSN of the segment's first byte.
    pub fn start_lsn(&self, seg_size: u32) -> Result<u64> {
        Ok(self.segno(seg_size)? * u64::from(seg_size))
    }

    /// The next segment of the same timeline; `None` after the last one.
    pub fn next(&self, seg_size: u32) -> Result<Option<Self>> {
        let n = self.segno(seg_size)?;
        Ok(n.checked_add(1)
            .and_then(|n| Self::from_segno(self.timeline, n, seg_size).ok()))
    }

    /// The previous segment of the same timeline; `None` before segment 0.
    pub fn prev(&self, seg_size: u32) -> Result<Option<Self>> {
        let n = self.segno(seg_size)?;
        Ok(n.checked_sub(1)
            .and_then(|n| Self::from_segno(self.timeline, n, seg_size).ok()))
    }

    /// Parses exactly 24 upper-case hex digits.
    pub fn parse(s: &str) -> Result<Self> {
        let b = s.as_bytes();
        if b.len() != 24 {
            return Err(FormatError::malformed(
                "WAL file name",
                "a segment name has 24 hex digits",
            ));
        }
        let timeline = hex8(b.get(0..8))?;
        if timeline == 0 {
            return Err(FormatError::malformed("WAL file name", "timeline 0"));
        }
        Ok(Self {
            timeline,
            log: hex8(b.get(8..16))?,
            seg: hex8(b.get(16..24))?,
        })
    }
}

impl fmt::Display for SegmentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08X}{:08X}{:08X}", self.timeline, self.log, self.seg)
    }
}

/// Eight upper-case hex digits as a u32 (PostgreSQL writes `%08X`).
fn hex8(b: Option<&[u8]>) -> Result<u32> {
    let bad = || FormatError::malformed("WAL file name", "expected 8 upper-case hex digits");
    let b = b.filter(|b| b.len() == 8).ok_or_else(bad)?;
    let mut v = 0u32;
    for &c in b {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'A'..=b'F' => c - b'A' + 10,
            _ => return Err(bad()),
        };
        v = (v << 4) | u32::from(d);
    }
    Ok(v)
}

/// A file name PostgreSQL archives or asks to restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WalFileName {
    /// A complete segment.
    Segment(SegmentName),
    /// `<segment>.partial`: the last segment of a timeline, cut at a promotion.
    Partial(SegmentName),
    /// `<segment>.<offset>.backup`: a backup history file.
    Backup {
        /// The segment the backup started in.
        segment: SegmentName,
        /// The start offset inside that segment.
        offset: u32,
    },
    /// `<timeline>.history`: a timeline history file.
    History {
        /// The timeline it describes.
        timeline: u32,
    },
}

impl WalFileName {
    /// Parses a name's syntax; see [`WalFileName::parse_for`] to also check it against a segment
    /// size.
    pub fn parse(name: &str) -> Result<Self> {
        let bad = || {
            FormatError::malformed(
                "WAL file name",
                "not a WAL segment, .partial, .backup or .history name",
            )
        };
        if let Some(tl) = name.strip_suffix(".history") {
            let timeline = hex8(Some(tl.as_bytes())).map_err(|_| bad())?;
            if timeline == 0 {
                return Err(FormatError::malformed("WAL file name", "timeline 0"));
            }
            return Ok(Self::History { timeline });
        }
        if let Some(seg) = name.strip_suffix(".partial") {
            return Ok(Self::Partial(SegmentName::parse(seg)?));
        }
        if let Some(rest) = name.strip_suffix(".backup") {
            let (seg, off) = rest.split_once('.').ok_or_else(bad)?;
            return Ok(Self::Backup {
                segment: SegmentName::parse(seg)?,
                offset: hex8(Some(off.as_bytes()))?,
            });
        }
        if name.len() == 24 {
            return Ok(Self::Segment(SegmentName::parse(name)?));
        }
        Err(bad())
    }

    /// Parses a name and checks it against `seg_size`: the segment part must be in range and a
    /// backup offset inside the segment.
    pub fn parse_for(name: &str, seg_size: u32) -> Result<Self> {
        let parsed = Self::parse(name)?;
        if let Some(s) = parsed.segment() {
            s.segno(seg_size)?;
        }
        if let Self::Backup { offset, .. } = parsed {
            if offset >= seg_size {
                return Err(FormatError::malformed(
                    "WAL file name",
                    "backup offset beyond the segment",
                ));
            }
        }
        Ok(parsed)
    }

    /// The segment a segment, `.partial` or `.backup` name refers to.
    pub fn segment(&self) -> Option<SegmentName> {
        match *self {
            Self::Segment(s) | Self::Partial(s) | Self::Backup { segment: s, .. } => Some(s),
            Self::History { .. } => None,
        }
    }

    /// The timeline the file belongs to.
    pub fn timeline(&self) -> u32 {
        match *self {
            Self::Segment(s) | Self::Partial(s) | Self::Backup { segment: s, .. } => s.timeline,
            Self::History { timeline } => timeline,
        }
    }

    /// True for complete segments and `.partial` files: files that start with a segment header.
    pub fn has_segment_header(&self) -> bool {
        matches!(self, Self::Segment(_) | Self::Partial(_))
    }
}

impl fmt::Display for WalFileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Segment(s) => write!(f, "{s}"),
            Self::Partial(s) => write!(f, "{s}.partial"),
            Self::Backup { segment, offset } => write!(f, "{segment}.{offset:08X}.backup"),
            Self::History { timeline } => write!(f, "{timeline:08X}.history"),
        }
    }
}

/// The fields of `XLogLongPageHeaderData` Cairn checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// `xlp_magic`: the WAL format version.
    pub magic: u16,
    /// `xlp_info` flag bits.
    pub info: u16,
    /// `xlp_tli`: timeline of the first record on the page.
    pub timeline: u32,
    /// `xlp_pageaddr`: the LSN of the page (the segment start).
    pub pageaddr: u64,
    /// `xlp_rem_len`: bytes of a record continued from the previous segment.
    pub rem_len: u32,
    /// `xlp_sysid`: the cluster's system identifier (as in `pg_control`).
    pub sysid: u64,
    /// `xlp_seg_size`: the segment size.
    pub seg_size: u32,
    /// `xlp_xlog_blcksz`: the WAL page size.
    pub xlog_blcksz: u32,
}

fn le_u16(b: &[u8], at: usize) -> u16 {
    let mut a = [0u8; 2];
    if let Some(s) = b.get(at..at + 2) {
        a.copy_from_slice(s);
    }
    u16::from_le_bytes(a)
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        a.copy_from_slice(s);
    }
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        a.copy_from_slice(s);
    }
    u64::from_le_bytes(a)
}

impl SegmentHeader {
    /// Parses and validates the long page header at the start of `bytes` (a segment or its first
    /// bytes): known magic, the long-header flag set and no unknown flag, a non-zero timeline, a
    /// valid segment size, a power-of-two page size from 1 to 64 KiB, and a page address at a
    /// segment boundary.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        const WHAT: &str = "WAL segment header";
        if bytes.len() < LONG_PAGE_HEADER_LEN {
            return Err(FormatError::Truncated {
                what: WHAT,
                needed: LONG_PAGE_HEADER_LEN,
                available: bytes.len(),
            });
        }
        let h = Self {
            magic: le_u16(bytes, 0),
            info: le_u16(bytes, 2),
            timeline: le_u32(bytes, 4),
            pageaddr: le_u64(bytes, 8),
            rem_len: le_u32(bytes, 16),
            sysid: le_u64(bytes, 24),
            seg_size: le_u32(bytes, 32),
            xlog_blcksz: le_u32(bytes, 36),
        };
        if pg_version_of_magic(h.magic).is_none() {
            return Err(FormatError::malformed(
                WHAT,
                format!(
                    "unknown xlp_magic {:#06X} (this build reads the WAL of PostgreSQL 13 to 17)",
                    h.magic
                ),
            ));
        }
        if h.info & XLP_LONG_HEADER == 0 {
            return Err(FormatError::malformed(
                WHAT,
                "XLP_LONG_HEADER not set: not the first page of a segment",
            ));
        }
        if h.info & !XLP_ALL_FLAGS != 0 {
            return Err(FormatError::malformed(
                WHAT,
                format!("unknown xlp_info bits {:#06X}", h.info),
            ));
        }
        if h.timeline == 0 {
            return Err(FormatError::malformed(WHAT, "timeline 0"));
        }
        if !is_valid_segment_size(h.seg_size) {
            return Err(FormatError::malformed(
                WHAT,
                format!("invalid xlp_seg_size {}", h.seg_size),
            ));
        }
        if !h.xlog_blcksz.is_power_of_two() || !(1024..=65536).contains(&h.xlog_blcksz) {
            return Err(FormatError::malformed(
                WHAT,
                format!("invalid xlp_xlog_blcksz {}", h.xlog_blcksz),
            ));
        }
        if h.pageaddr % u64::from(h.seg_size) != 0 {
            return Err(FormatError::malformed(
                WHAT,
                format!("page address {:#X} is not a segment start", h.pageaddr),
            ));
        }
        Ok(h)
    }

    /// The PostgreSQL major version that wrote this segment.
    pub fn pg_version(&self) -> Option<u32> {
        pg_version_of_magic(self.magic)
    }

    /// Checks that this header belongs to the file `name` (a segment or `.partial` name): its
    /// page address is that segment's start, and its timeline is the name's or, for the first
    /// segment of a new timeline (which the server copies from the parent timeline up to the
    /// switch point), an older one.
    pub fn check_name(&self, name: &SegmentName) -> Result<()> {
        const WHAT: &str = "WAL segment header";
        let start = name.start_lsn(self.seg_size)?;
        if self.pageaddr != start {
            return Err(FormatError::malformed(
                WHAT,
                format!(
                    "page address {} does not match the file name {name} (expected {})",
                    format_lsn(self.pageaddr),
                    format_lsn(start)
                ),
            ));
        }
        if self.timeline > name.timeline {
            return Err(FormatError::malformed(
                WHAT,
                format!(
                    "timeline {} in the header is newer than the file name's {}",
                    self.timeline, name.timeline
                ),
            ));
        }
        Ok(())
    }
}

/// Formats an LSN as PostgreSQL does (`16/B374D848`).
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// Parses an LSN written as PostgreSQL does (`16/B374D848`, either hex case).
pub fn parse_lsn(s: &str) -> Result<u64> {
    let bad = || FormatError::malformed("LSN", format!("{s:?} is not of the form X/Y"));
    let (hi, lo) = s.split_once('/').ok_or_else(bad)?;
    let part = |p: &str| {
        if p.is_empty() || p.len() > 8 || !p.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(bad());
        }
        u32::from_str_radix(p, 16).map_err(|_| bad())
    };
    Ok((u64::from(part(hi)?) << 32) | u64::from(part(lo)?))
}

/// One line of a timeline history file: `parent_tli <TAB> switchpoint <TAB> reason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// An ancestor timeline.
    pub parent: u32,
    /// The LSN where the next timeline branched off `parent`.
    pub switchpoint: u64,
    /// The free-text reason PostgreSQL recorded.
    pub reason: String,
}

/// Parses a timeline history file (`<tli>.history`): one entry per ancestor, oldest first.
/// Blank lines and lines starting with `#` are skipped, as PostgreSQL does. Parent timelines
/// must increase and switch points must not decrease.
pub fn parse_history(text: &[u8]) -> Result<Vec<HistoryEntry>> {
    const WHAT: &str = "timeline history file";
    let text =
        std::str::from_utf8(text).map_err(|_| FormatError::malformed(WHAT, "not UTF-8 text"))?;
    let mut out: Vec<HistoryEntry> = Vec::new();
    for line in text.lines() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.splitn(3, ['\t', ' ']);
        let tli = fields.next().unwrap_or_default();
        let lsn = fields.next().unwrap_or_default().trim();
        let reason = fields.next().unwrap_or_default().trim().to_owned();
        let parent = tli
            .parse::<u32>()
            .ok()
            .filter(|&t| t > 0)
            .ok_or_else(|| FormatError::malformed(WHAT, format!("bad timeline {tli:?}")))?;
        let switchpoint = parse_lsn(lsn)
            .map_err(|_| FormatError::malformed(WHAT, format!("bad switch point {lsn:?}")))?;
        if let Some(prev) = out.last() {
            if parent <= prev.parent || switchpoint < prev.switchpoint {
                return Err(FormatError::malformed(
                    WHAT,
                    "timelines must increase and switch points must not decrease",
                ));
            }
        }
        out.push(HistoryEntry {
            parent,
            switchpoint,
            reason,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MB16: u32 = DEFAULT_SEGMENT_SIZE;

    fn header(magic: u16, tli: u32, pageaddr: u64, sysid: u64, seg_size: u32) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&magic.to_le_bytes());
        b.extend_from_slice(&XLP_LONG_HEADER.to_le_bytes());
        b.extend_from_slice(&tli.to_le_bytes());
        b.extend_from_slice(&pageaddr.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&[0; 4]);
        b.extend_from_slice(&sysid.to_le_bytes());
        b.extend_from_slice(&seg_size.to_le_bytes());
        b.extend_from_slice(&8192u32.to_le_bytes());
        b
    }

    #[test]
    fn names() {
        let s = WalFileName::parse("000000010000000A000000FF").unwrap();
        let WalFileName::Segment(seg) = s else {
            panic!("{s:?}")
        };
        assert_eq!((seg.timeline, seg.log, seg.seg), (1, 10, 255));
        assert_eq!(seg.segno(MB16).unwrap(), 10 * 256 + 255);
        assert_eq!(
            seg.next(MB16).unwrap().unwrap().to_string(),
            "000000010000000B00000000"
        );
        assert_eq!(
            seg.prev(MB16).unwrap().unwrap().to_string(),
            "000000010000000A000000FE"
        );
        // 0x100 is out of range for 16 MiB segments but fine for 1 MiB ones.
        let big = SegmentName::parse("000000010000000000000100").unwrap();
        assert!(big.segno(MB16).is_err());
        assert_eq!(big.segno(1 << 20).unwrap(), 256);
        assert!(WalFileName::parse_for("000000010000000000000100", MB16).is_err());

        for ok in [
            "00000002.history",
            "000000010000000000000003.partial",
            "000000010000000000000002.00000028.backup",
            "0000000100000000000000AB",
        ] {
            assert_eq!(WalFileName::parse_for(ok, MB16).unwrap().to_string(), ok);
        }
        for bad in [
            "",
            "00000000.history",
            "0000000a0000000000000001",
            "000000000000000000000001",
            "00000001000000000000001",
            "0000000100000000000000011",
            "000000010000000000000001.part",
            "000000010000000000000001.0000000G.backup",
            "000000010000000000000001.backup",
            "RECOVERYXLOG",
            "archive_status",
            "+0000001.history",
        ] {
            assert!(WalFileName::parse(bad).is_err(), "{bad}");
        }
        assert!(WalFileName::parse_for("000000010000000000000002.01000000.backup", MB16).is_err());
        let first = SegmentName::parse("000000010000000000000000").unwrap();
        assert_eq!(first.prev(MB16).unwrap(), None);
        let last = SegmentName::parse("00000001FFFFFFFF000000FF").unwrap();
        assert_eq!(last.next(MB16).unwrap(), None);
    }

    #[test]
    fn header_checks() {
        let seg = SegmentName::parse("000000010000000000000003").unwrap();
        let b = header(0xD110, 1, 3 * u64::from(MB16), 42, MB16);
        let h = SegmentHeader::parse(&b).unwrap();
        assert_eq!((h.sysid, h.seg_size, h.timeline), (42, MB16, 1));
        assert_eq!(h.pg_version(), Some(15));
        h.check_name(&seg).unwrap();
        // First segment of timeline 2 keeps timeline 1 in its copied first page.
        h.check_name(&SegmentName { timeline: 2, ..seg }).unwrap();
        assert!(
            SegmentHeader::parse(&header(0xD110, 3, 3 * u64::from(MB16), 42, MB16))
                .unwrap()
                .check_name(&seg)
                .is_err()
        );
        assert!(h.check_name(&seg.next(MB16).unwrap().unwrap()).is_err());
        for bad in [
            header(0xD111, 1, 0, 42, MB16),
            header(0xD110, 0, 0, 42, MB16),
            header(0xD110, 1, 12, 42, MB16),
            header(0xD110, 1, 0, 42, 3 << 20),
        ] {
            assert!(SegmentHeader::parse(&bad).is_err());
        }
        let mut short_flag = b.clone();
        short_flag[2] = 0;
        assert!(SegmentHeader::parse(&short_flag).is_err());
        for n in 0..LONG_PAGE_HEADER_LEN {
            assert!(SegmentHeader::parse(&b[..n]).is_err());
        }
    }

    #[test]
    fn history_and_lsn() {
        let h = parse_history(
            b"1\t0/3000158\tno recovery target specified\n\n# c\n2\t0/5000000\tat restore point \"x\"\n",
        )
        .unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].parent, 1);
        assert_eq!(h[0].switchpoint, 0x300_0158);
        assert_eq!(h[1].reason, "at restore point \"x\"");
        assert!(parse_history(b"2\t0/1\tx\n1\t0/2\ty\n").is_err());
        assert!(parse_history(b"x\t0/1\n").is_err());
        assert!(parse_history(b"1\t01\n").is_err());
        assert_eq!(parse_lsn("16/B374D848").unwrap(), 0x16_B374_D848);
        assert_eq!(format_lsn(0x16_B374_D848), "16/B374D848");
    }

    fn seg_sizes() -> impl Strategy<Value = u32> {
        (20u32..=30).prop_map(|b| 1u32 << b)
    }

    proptest! {
        #[test]
        fn segment_names_round_trip(tli in 1u32.., segno in any::<u64>(), seg_size in seg_sizes()) {
            let max = (u64::from(u32::MAX) + 1) * ((1u64 << 32) / u64::from(seg_size));
            let segno = segno % max;
            let s = SegmentName::from_segno(tli, segno, seg_size).unwrap();
            prop_assert_eq!(s.segno(seg_size).unwrap(), segno);
            let name = s.to_string();
            prop_assert_eq!(WalFileName::parse_for(&name, seg_size).unwrap(), WalFileName::Segment(s));
            if let Some(n) = s.next(seg_size).unwrap() {
                prop_assert_eq!(n.segno(seg_size).unwrap(), segno + 1);
                prop_assert_eq!(n.prev(seg_size).unwrap(), Some(s));
                prop_assert!(n > s);
            }
            let lsn = s.start_lsn(seg_size).unwrap();
            prop_assert_eq!(SegmentName::from_lsn(tli, lsn, seg_size).unwrap(), s);
        }

        #[test]
        fn name_parser_never_panics_and_round_trips(name in "[0-9A-Fa-f.a-z]{0,40}") {
            if let Ok(n) = WalFileName::parse(&name) {
                prop_assert_eq!(n.to_string(), name);
            }
        }

        #[test]
        fn header_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(h) = SegmentHeader::parse(&bytes) {
                prop_assert!(is_valid_segment_size(h.seg_size));
                let _ = h.check_name(&SegmentName { timeline: 1, log: 0, seg: 0 });
            }
        }

        #[test]
        fn valid_headers_parse(tli in 1u32.., segno in 0u64..1_000_000, sysid in any::<u64>(),
                               seg_size in seg_sizes(), m in 0usize..5) {
            let magic = KNOWN_PAGE_MAGICS[m].0;
            let b = header(magic, tli, segno * u64::from(seg_size), sysid, seg_size);
            let h = SegmentHeader::parse(&b).unwrap();
            prop_assert_eq!(h.sysid, sysid);
            let name = SegmentName::from_segno(tli, segno, seg_size).unwrap();
            prop_assert!(h.check_name(&name).is_ok());
        }
    }
}
