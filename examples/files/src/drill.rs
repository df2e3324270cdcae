//! `cairn-files drill`: restore a snapshot into a scratch directory, verify it, and print the
//! library's [`DrillReport`] (RTO, RPO, verdict, what differs).

use std::path::PathBuf;
use std::sync::Arc;

use cairn::drill::{DrillOptions, DrillReport, DrillSnapshot, Verdict};
use cairn::format::Timestamp;
use cairn::{Repository, drill_files};

use crate::EXIT_CORRUPTION;
use crate::progress::Reporter;
use crate::text::{bytes, iso_utc};

/// What `drill` was asked.
pub(crate) struct DrillArgs<'a> {
    pub(crate) snapshot: Option<&'a str>,
    pub(crate) random: bool,
    pub(crate) target: Option<PathBuf>,
    pub(crate) keep: bool,
    pub(crate) threads: Option<usize>,
}

/// `1.23 s`, `4m 05s`, `3h 12m`, `2d 4h`.
fn duration(secs: f64) -> String {
    if secs < 0.0 {
        return format!("-{}", duration(-secs));
    }
    if secs < 60.0 {
        return format!("{secs:.2} s");
    }
    let s = secs as u64;
    match s {
        0..3_600 => format!("{}m {:02}s", s / 60, s % 60),
        3_600..86_400 => format!("{}h {:02}m", s / 3600, s / 60 % 60),
        _ => format!("{}d {}h", s / 86_400, s / 3600 % 24),
    }
}

fn print_human(r: &DrillReport) {
    let when = iso_utc(Timestamp {
        secs: r.snapshot_time.floor() as i64,
        nanos: 0,
    });
    println!(
        "drill of snapshot {} ({when}, {}: {})",
        r.snapshot.get(..8).unwrap_or(&r.snapshot),
        r.hostname,
        r.paths.join(" ")
    );
    println!(
        "verified          {} files, {}, {} dirs, {} symlinks, {} hard links, {} special{}",
        r.files,
        bytes(r.bytes),
        r.dirs,
        r.symlinks,
        r.hardlinks,
        r.special,
        if r.skipped > 0 {
            format!(" ({} sockets/device nodes not checked)", r.skipped)
        } else {
            String::new()
        }
    );
    println!(
        "RTO               {} (restore {}, verify {})",
        duration(r.rto_secs),
        duration(r.restore_secs),
        duration(r.verify_secs)
    );
    println!(
        "RPO               {} (drill start minus snapshot time)",
        duration(r.rpo_secs)
    );
    println!(
        "scratch           {} ({})",
        r.scratch,
        if r.kept { "kept" } else { "removed" }
    );
    match r.verdict {
        Verdict::Ok => println!("verdict           ok"),
        Verdict::Failed => println!(
            "verdict           FAILED: {} differences, {} restore errors (listed on standard \
             error)",
            r.mismatches.len(),
            r.restore_errors.len()
        ),
    }
}

/// Runs a drill; exit code 0 when it passed, 5 when anything could not be restored or differs.
pub(crate) async fn drill(repo: &Repository, args: DrillArgs<'_>, json: bool) -> cairn::Result<u8> {
    let which = if args.random {
        DrillSnapshot::Random
    } else {
        DrillSnapshot::Named(args.snapshot.unwrap_or("latest").to_owned())
    };
    let mut options = DrillOptions::default();
    options.target = args.target;
    options.keep = args.keep;
    options.threads = args.threads;
    let reporter = Arc::new(Reporter::new(json));
    let report = drill_files(repo, &which, &options, reporter.clone()).await?;
    let code = match report.verdict {
        Verdict::Ok => 0,
        Verdict::Failed => EXIT_CORRUPTION,
    };
    if json {
        let mut v = serde_json::to_value(&report)
            .map_err(|e| cairn::Error::Invalid(format!("cannot serialize the report: {e}")))?;
        if let Some(o) = v.as_object_mut() {
            o.insert("exit_code".into(), code.into());
        }
        println!("{v}");
        return Ok(code);
    }
    // Restore errors were warnings while the restore ran: each once, as an error.
    for w in reporter.held_warnings() {
        if !report
            .restore_errors
            .iter()
            .any(|e| w.ends_with(e.as_str()))
        {
            eprintln!("warning: {w}");
        }
    }
    for e in &report.restore_errors {
        eprintln!("error: {e}");
    }
    for m in &report.mismatches {
        eprintln!("mismatch: {}: {}", m.path, m.reason);
    }
    print_human(&report);
    if code != 0 {
        eprintln!(
            "cairn-files: the drill failed: {} entries differ from the snapshot (exit code {code})",
            report.mismatches.len()
        );
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::duration;

    #[test]
    fn durations() {
        assert_eq!(duration(1.234), "1.23 s");
        assert_eq!(duration(245.0), "4m 05s");
        assert_eq!(duration(3.0 * 3600.0 + 12.0 * 60.0), "3h 12m");
        assert_eq!(duration(2.0 * 86_400.0 + 4.0 * 3600.0), "2d 4h");
        assert_eq!(duration(-2.0), "-2.00 s");
    }
}
