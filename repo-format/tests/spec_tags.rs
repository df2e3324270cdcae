//! SPEC.md's table of extension tags (§1) agrees with the code.
//!
//! The table sits between `<!-- extension-tags:begin -->` and `<!-- extension-tags:end -->`.
//! This test fails when:
//!
//! * a reader accepts a critical tag for a structure that the table does not list, or the table
//!   lists a critical tag that the structure's reader refuses as unknown (every critical tag,
//!   `0x8000..=0xFFFF`, is tried on the config, a tree node, a snapshot and a prune plan);
//! * the code defines a `pub const TAG_*: u16` that the table does not list, or the table lists a
//!   tag no such constant defines;
//! * a paragraph of SPEC.md about tags or extensions names a tag with bit 15 set (other than the
//!   bit itself, `0x8000`) that the table does not list;
//! * SPEC.md says version 1 has no critical tag while the table lists one.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::BTreeSet;
use std::path::PathBuf;

use cairn_format::tree::{Extension, TAG_DELTA_BLOCKS};
use cairn_format::{
    BlobId, FormatError, Node, NodeKind, PrunePlan, RepoConfig, Snapshot, SnapshotKind, Timestamp,
    Tree,
};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

const BEGIN: &str = "<!-- extension-tags:begin -->";
const END: &str = "<!-- extension-tags:end -->";
const CRITICAL: u16 = 0x8000;

/// The structures that end with an extension list, as SPEC's table names them.
const STRUCTURES: [&str; 4] = ["config", "tree node", "snapshot", "prune plan"];

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Row {
    structure: String,
    tag: u16,
    critical: bool,
}

fn spec() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../SPEC.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Parses a tag written as `` `0x8001` `` (backticks optional).
fn parse_tag(cell: &str) -> Option<u16> {
    let hex = cell.trim().trim_matches('`').strip_prefix("0x")?;
    (hex.len() == 4).then(|| u16::from_str_radix(hex, 16).ok())?
}

/// The rows of the delimited table. Panics (fails the test) on anything malformed, so that a
/// change of layout is noticed rather than read as "no tags".
fn table(spec: &str) -> Vec<Row> {
    let (_, rest) = spec
        .split_once(BEGIN)
        .unwrap_or_else(|| panic!("SPEC.md has no {BEGIN}"));
    let (body, _) = rest
        .split_once(END)
        .unwrap_or_else(|| panic!("SPEC.md has no {END} after {BEGIN}"));
    assert!(
        !rest.contains(BEGIN),
        "SPEC.md has two extension tag tables"
    );
    let lines: Vec<&str> = body.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 2, "the tag table has no header: {body:?}");
    let header: Vec<String> = cells(lines[0]).map(str::to_lowercase).collect();
    assert_eq!(
        header.get(..3),
        Some(
            &[
                "tag".to_owned(),
                "structure".to_owned(),
                "critical".to_owned()
            ][..]
        ),
        "the tag table's first columns must be Tag, Structure, Critical"
    );
    assert!(
        cells(lines[1]).all(|c| !c.is_empty() && c.chars().all(|ch| ch == '-' || ch == ':')),
        "the tag table's second line must be its separator: {:?}",
        lines[1]
    );
    let mut rows = Vec::new();
    for line in &lines[2..] {
        let c: Vec<&str> = cells(line).collect();
        assert_eq!(c.len(), header.len(), "tag table row {line:?}");
        let tag = parse_tag(c[0]).unwrap_or_else(|| panic!("tag table: bad tag in {line:?}"));
        let structure = c[1].to_owned();
        assert!(
            STRUCTURES.contains(&structure.as_str()),
            "tag table: unknown structure {structure:?} (one of {STRUCTURES:?})"
        );
        let critical = match c[2] {
            "yes" => true,
            "no" => false,
            other => panic!("tag table: Critical must be yes or no, not {other:?}"),
        };
        assert_eq!(
            critical,
            tag & CRITICAL != 0,
            "tag table: {tag:#06x} is critical exactly when bit 15 is set"
        );
        rows.push(Row {
            structure,
            tag,
            critical,
        });
    }
    let unique: BTreeSet<(&str, u16)> = rows.iter().map(|r| (&*r.structure, r.tag)).collect();
    assert_eq!(unique.len(), rows.len(), "tag table: a row is repeated");
    rows
}

fn cells(line: &str) -> impl Iterator<Item = &str> {
    let line = line.trim();
    assert!(
        line.starts_with('|') && line.ends_with('|'),
        "not a table row: {line:?}"
    );
    line[1..line.len() - 1].split('|').map(str::trim)
}

/// `plain` with the tag of its last extension (empty bytes, so the last 6 bytes are
/// `tag[2] || len[4] = 0`) replaced by `tag`.
fn with_tag(plain: &[u8], tag: u16) -> Vec<u8> {
    let mut out = plain.to_vec();
    let at = out.len() - 6;
    assert_eq!(out[at + 2..], [0, 0, 0, 0]);
    out[at..at + 2].copy_from_slice(&tag.to_le_bytes());
    out
}

/// One plaintext per structure whose last bytes are a single empty extension with an
/// optional tag, and the structure's decoder.
type Decode = fn(&[u8]) -> Result<(), FormatError>;

fn samples() -> Vec<(&'static str, Vec<u8>, Decode)> {
    let ext = || {
        vec![Extension {
            tag: 0x0001,
            bytes: Vec::new(),
        }]
    };
    let mut config = RepoConfig::new(Timestamp::default(), &mut ChaCha20Rng::seed_from_u64(1));
    config.extensions = ext();
    let mut node = Node::new("f", NodeKind::File);
    node.extensions = ext();
    let tree = Tree { nodes: vec![node] };
    let mut snapshot = Snapshot::new(SnapshotKind::Files, Timestamp::default(), BlobId::default());
    snapshot.extensions = ext();
    let plan = PrunePlan {
        extensions: ext(),
        ..PrunePlan::default()
    };
    vec![
        ("config", config.encode().unwrap(), |b| {
            RepoConfig::decode(b).map(drop)
        }),
        ("tree node", tree.encode().unwrap(), |b| {
            Tree::decode(b).map(drop)
        }),
        ("snapshot", snapshot.encode().unwrap(), |b| {
            Snapshot::decode(b).map(drop)
        }),
        ("prune plan", plan.encode().unwrap(), |b| {
            PrunePlan::decode(b).map(drop)
        }),
    ]
}

/// The critical tags each structure's reader knows: those it does not refuse as an unknown
/// critical extension (a known tag with empty bytes may well be malformed, or even accepted).
fn known_critical() -> BTreeSet<Row> {
    let mut known = BTreeSet::new();
    for (structure, plain, decode) in samples() {
        decode(&plain).unwrap_or_else(|e| panic!("{structure}: the sample does not decode: {e}"));
        for tag in CRITICAL..=u16::MAX {
            match decode(&with_tag(&plain, tag)) {
                Err(FormatError::UnsupportedVersion {
                    what: "critical extension",
                    version,
                    ..
                }) => assert_eq!(version, u32::from(tag)),
                _ => {
                    known.insert(Row {
                        structure: structure.to_owned(),
                        tag,
                        critical: true,
                    });
                }
            }
        }
    }
    known
}

#[test]
fn critical_tags_in_spec_table_are_the_ones_readers_know() {
    let spec = spec();
    let listed: BTreeSet<Row> = table(&spec).into_iter().filter(|r| r.critical).collect();
    let known = known_critical();
    let missing: Vec<_> = known.difference(&listed).collect();
    let extra: Vec<_> = listed.difference(&known).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "SPEC.md §1's tag table and the readers disagree.\n\
         known to the code, not in SPEC: {missing:?}\n\
         in SPEC, refused by the code as unknown: {extra:?}"
    );
}

#[test]
fn tag_constants_in_the_code_are_in_spec_table() {
    let spec = spec();
    let listed: BTreeSet<u16> = table(&spec).iter().map(|r| r.tag).collect();
    // The constant the tree code uses; a rename or new value is caught here at compile time
    // or below.
    assert!(
        listed.contains(&TAG_DELTA_BLOCKS),
        "{TAG_DELTA_BLOCKS:#06x}"
    );
    // Every `pub const TAG_*: u16 = 0x....;` in the crate's source.
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut defined = BTreeSet::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            let Some(rest) = line.trim().strip_prefix("pub const TAG_") else {
                continue;
            };
            let Some((_, value)) = rest.split_once(": u16 = ") else {
                continue;
            };
            let tag = parse_tag(value.trim_end_matches(';'))
                .unwrap_or_else(|| panic!("{}: unparsed tag constant {line:?}", path.display()));
            defined.insert(tag);
        }
    }
    assert!(
        defined.contains(&TAG_DELTA_BLOCKS),
        "the source scan missed TAG_DELTA_BLOCKS"
    );
    assert_eq!(
        defined, listed,
        "tag constants in repo-format/src (left) and SPEC.md §1's tag table (right) differ"
    );
}

#[test]
fn spec_prose_names_only_listed_tags() {
    let spec = spec();
    let rows = table(&spec);
    let listed: BTreeSet<u16> = rows.iter().map(|r| r.tag).collect();
    let any_critical = rows.iter().any(|r| r.critical);
    let mut problems = Vec::new();
    for para in spec.split("\n\n") {
        let lower = para.to_lowercase();
        let flat = lower.split_whitespace().collect::<Vec<_>>().join(" ");
        if !(flat.contains("tag") || flat.contains("extension")) {
            continue;
        }
        for piece in para.split('`').skip(1).step_by(2) {
            if let Some(tag) = parse_tag(piece) {
                if tag & CRITICAL != 0 && tag != CRITICAL && !listed.contains(&tag) {
                    problems.push(format!("{tag:#06x} is not in the tag table: {para:?}"));
                }
            }
        }
        if any_critical {
            for denial in [
                "defines no critical",
                "defines no tag",
                "no critical tag is defined",
                "no critical tags are defined",
                "never write one",
                "never writes one",
                "never write a critical",
                "never writes a critical",
            ] {
                if flat.contains(denial) {
                    problems.push(format!(
                        "says {denial:?} but the tag table lists a critical tag: {para:?}"
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
