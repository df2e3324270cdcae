//! Restoring a base backup and preparing point-in-time recovery.
//!
//! Restores the snapshot into an empty directory (modes, owners and times kept), puts tablespaces
//! back where `tablespace_map` says (or where the caller remaps them), then writes the recovery
//! settings PostgreSQL 12+ reads: `restore_command` and the recovery target in
//! `postgresql.auto.conf`, and an empty `recovery.signal`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cairn_format::{Snapshot, SnapshotId, SnapshotKind};

use super::basebackup::{BaseBackupInfo, TABLESPACES_DIR};
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::repo::Repository;
use crate::restore::{RestoreOptions, RestoreOutcome, restore};

/// Where recovery stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryTarget {
    /// Replay all available WAL (no target setting).
    Latest,
    /// Stop as soon as the backup is consistent (`recovery_target = 'immediate'`).
    Immediate,
    /// `recovery_target_time`, passed as given (e.g. `2026-11-21 10:00:00+00`).
    Time(String),
    /// `recovery_target_lsn`.
    Lsn(String),
    /// `recovery_target_xid`.
    Xid(String),
    /// `recovery_target_name` (a restore point).
    Name(String),
}

/// Which base backup to restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupSelector {
    /// The newest.
    Latest,
    /// By snapshot id or unique prefix.
    Id(String),
    /// The newest that ended at or before this time (unix seconds): the right base for a
    /// recovery to that time.
    EndedBefore(i64),
}

/// Options of [`restore_base_backup`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PgRestoreOptions {
    /// Recovery target; `None` writes no recovery settings at all.
    pub recovery: Option<RecoveryTarget>,
    /// `recovery_target_action`: `pause`, `promote` or `shutdown`. Default: none (PostgreSQL's
    /// default, pause).
    pub target_action: Option<String>,
    /// `recovery_target_timeline` (`latest`, `current` or a number). Default: none.
    pub target_timeline: Option<String>,
    /// `recovery_target_inclusive`. Default: none.
    pub target_inclusive: Option<bool>,
    /// The `restore_command` to write (e.g. `cairn-wal --repo ... fetch %f %p`). Required when
    /// `recovery` is set.
    pub restore_command: Option<String>,
    /// Tablespace oid -> new location, overriding `tablespace_map`.
    pub tablespace_map: Vec<(String, PathBuf)>,
    /// Restore worker threads.
    pub threads: Option<usize>,
}

impl Default for PgRestoreOptions {
    fn default() -> Self {
        Self {
            recovery: Some(RecoveryTarget::Latest),
            target_action: None,
            target_timeline: None,
            target_inclusive: None,
            restore_command: None,
            tablespace_map: Vec::new(),
            threads: None,
        }
    }
}

/// Every base backup, oldest first, optionally of one cluster. Fails on a snapshot that cannot
/// be read (it may be a base backup: WAL retention must not go on without it).
pub async fn list_base_backups(
    repo: &Repository,
    system_id: Option<u64>,
) -> Result<Vec<(SnapshotId, Snapshot, BaseBackupInfo)>> {
    let (out, mut damaged) = list_base_backups_checked(repo, system_id).await?;
    match damaged.pop() {
        Some(d) => Err(Error::Damaged(format!(
            "{}: cannot be read ({}); `check` names every damaged object, `forget ID` removes it",
            d.object, d.error
        ))),
        None => Ok(out),
    }
}

/// [`list_base_backups`], with the snapshots that cannot be read apart (any of them may be a
/// base backup).
pub async fn list_base_backups_checked(
    repo: &Repository,
    system_id: Option<u64>,
) -> Result<BaseBackupListing> {
    let (snapshots, damaged) = repo.list_snapshots_checked().await?;
    let mut out = Vec::new();
    for (id, s) in snapshots {
        if s.kind != SnapshotKind::PgBaseBackup {
            continue;
        }
        let info = BaseBackupInfo::from_snapshot(&s)?;
        if system_id.is_none_or(|sys| sys == info.system_identifier) {
            out.push((id, s, info));
        }
    }
    Ok((out, damaged))
}

/// What [`list_base_backups_checked`] returns: the readable base backups, and the damaged
/// snapshots.
pub type BaseBackupListing = (
    Vec<(SnapshotId, Snapshot, BaseBackupInfo)>,
    Vec<crate::repo::Damaged>,
);

/// Finds the base backup to restore among those that can be read (a damaged snapshot does not
/// stop a restore from another one).
pub async fn select_base_backup(
    repo: &Repository,
    which: &BackupSelector,
    system_id: Option<u64>,
) -> Result<(SnapshotId, Snapshot, BaseBackupInfo)> {
    let all = list_base_backups_checked(repo, system_id).await?.0;
    let none = || Error::NotFound {
        object: "base backup (none matches)".into(),
    };
    match which {
        BackupSelector::Latest => all.into_iter().next_back().ok_or_else(none),
        BackupSelector::EndedBefore(t) => all
            .into_iter()
            .rfind(|(_, _, i)| i.stop_time <= *t)
            .ok_or_else(none),
        BackupSelector::Id(prefix) => {
            let want = prefix.to_ascii_lowercase();
            let mut m = all
                .into_iter()
                .filter(|(id, _, _)| id.to_hex().starts_with(&want));
            match (m.next(), m.next()) {
                (Some(one), None) => Ok(one),
                (None, _) => Err(none()),
                _ => Err(Error::Invalid(format!(
                    "base backup prefix {prefix:?} is ambiguous"
                ))),
            }
        }
    }
}

/// Quotes a value for postgresql.conf.
fn quote(v: &str) -> String {
    format!("'{}'", v.replace('\'', "''"))
}

/// Restores a base backup into `target` (empty or missing) and writes recovery settings.
///
/// When some files could not be restored ([`RestoreOutcome::errors`], see
/// [`mod@crate::restore`]), no recovery settings and no `recovery.signal` are written: an
/// incomplete data directory must not look ready to start (PostgreSQL refuses to start on it
/// instead of recovering into a cluster with files missing).
pub async fn restore_base_backup(
    repo: &Repository,
    snapshot: &Snapshot,
    target: &Path,
    options: &PgRestoreOptions,
    progress: Arc<dyn Progress>,
) -> Result<RestoreOutcome> {
    BaseBackupInfo::from_snapshot(snapshot)?;
    if options.recovery.is_some() && options.restore_command.is_none() {
        return Err(Error::Invalid(
            "a restore_command is needed to recover from the archive".into(),
        ));
    }
    let ro = RestoreOptions {
        threads: options.threads,
        ..RestoreOptions::default()
    };
    let outcome = restore(repo, snapshot, target, &ro, progress).await?;
    std::fs::set_permissions(target, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .map_err(|e| Error::io(target, e))?;
    let status = target.join("pg_wal").join("archive_status");
    std::fs::create_dir_all(&status).map_err(|e| Error::io(&status, e))?;
    copy_owner(target, &target.join("pg_wal"))?;
    copy_owner(target, &status)?;
    place_tablespaces(target, &options.tablespace_map)?;
    if let (Some(recovery), true) = (&options.recovery, outcome.errors.is_empty()) {
        write_recovery(target, recovery, options)?;
    }
    Ok(outcome)
}

fn copy_owner(from: &Path, to: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(from).map_err(|e| Error::io(from, e))?;
    // Only root can give files away; otherwise they are ours already.
    if nix::unistd::geteuid().is_root() {
        std::os::unix::fs::chown(to, Some(md.uid()), Some(md.gid()))
            .map_err(|e| Error::io(to, e))?;
    }
    Ok(())
}

fn place_tablespaces(target: &Path, remap: &[(String, PathBuf)]) -> Result<()> {
    let staged = target.join(TABLESPACES_DIR);
    if !staged.exists() {
        return Ok(());
    }
    let map_path = target.join("tablespace_map");
    let map = std::fs::read_to_string(&map_path).unwrap_or_default();
    let mut lines = Vec::new();
    for line in map.lines().filter(|l| !l.is_empty()) {
        let (oid, old) = line
            .split_once(' ')
            .ok_or_else(|| Error::Invalid(format!("tablespace_map line {line:?}")))?;
        let dest = remap
            .iter()
            .find(|(o, _)| o == oid)
            .map(|(_, p)| p.clone())
            .unwrap_or_else(|| PathBuf::from(old));
        if dest.exists()
            && std::fs::read_dir(&dest)
                .map(|mut d| d.next().is_some())
                .unwrap_or(true)
        {
            return Err(Error::AlreadyExists {
                object: dest.display().to_string(),
                hint: format!("; tablespace {oid} must go to an empty directory (remap it)"),
            });
        }
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        let _ = std::fs::remove_dir(&dest);
        let from = staged.join(oid);
        std::fs::rename(&from, &dest).map_err(|e| Error::io(&from, e))?;
        let link = target.join("pg_tblspc").join(oid);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&dest, &link).map_err(|e| Error::io(&link, e))?;
        lines.push(format!("{oid} {}", dest.display()));
    }
    std::fs::remove_dir_all(&staged).map_err(|e| Error::io(&staged, e))?;
    if !lines.is_empty() {
        std::fs::write(&map_path, lines.join("\n") + "\n").map_err(|e| Error::io(&map_path, e))?;
    }
    Ok(())
}

fn write_recovery(target: &Path, recovery: &RecoveryTarget, o: &PgRestoreOptions) -> Result<()> {
    let mut settings: Vec<(String, String)> = Vec::new();
    if let Some(cmd) = &o.restore_command {
        settings.push(("restore_command".into(), quote(cmd)));
    }
    match recovery {
        RecoveryTarget::Latest => {}
        RecoveryTarget::Immediate => settings.push(("recovery_target".into(), quote("immediate"))),
        RecoveryTarget::Time(t) => settings.push(("recovery_target_time".into(), quote(t))),
        RecoveryTarget::Lsn(l) => settings.push(("recovery_target_lsn".into(), quote(l))),
        RecoveryTarget::Xid(x) => settings.push(("recovery_target_xid".into(), quote(x))),
        RecoveryTarget::Name(n) => settings.push(("recovery_target_name".into(), quote(n))),
    }
    if let Some(a) = &o.target_action {
        if !matches!(a.as_str(), "pause" | "promote" | "shutdown") {
            return Err(Error::Invalid(format!(
                "recovery target action {a:?}: use pause, promote or shutdown"
            )));
        }
        settings.push(("recovery_target_action".into(), quote(a)));
    }
    if let Some(t) = &o.target_timeline {
        settings.push(("recovery_target_timeline".into(), quote(t)));
    }
    if let Some(i) = o.target_inclusive {
        settings.push((
            "recovery_target_inclusive".into(),
            quote(if i { "on" } else { "off" }),
        ));
    }
    let conf = target.join("postgresql.auto.conf");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&conf)
        .map_err(|e| Error::io(&conf, e))?;
    let mut text = String::from("\n# Recovery settings written by cairn restore\n");
    for (k, v) in settings {
        text.push_str(&format!("{k} = {v}\n"));
    }
    f.write_all(text.as_bytes())
        .map_err(|e| Error::io(&conf, e))?;
    drop(f);
    copy_owner(target, &conf)?;
    let signal = target.join("recovery.signal");
    std::fs::write(&signal, b"").map_err(|e| Error::io(&signal, e))?;
    copy_owner(target, &signal)?;
    Ok(())
}

/// Parses `YYYY-MM-DD[ T]HH:MM:SS[.fraction][Z|±HH[:MM]]` (no zone = UTC) into unix seconds.
pub fn parse_time(s: &str) -> Result<i64> {
    let bad = || Error::Invalid(format!("time {s:?}: use YYYY-MM-DD HH:MM:SS[+HH:MM]"));
    let s = s.trim();
    let (date, rest) = s.split_at_checked(10).ok_or_else(bad)?;
    let mut d = date.split('-');
    let (y, m, day) = (d.next(), d.next(), d.next());
    let y: i64 = y.and_then(|v| v.parse().ok()).ok_or_else(bad)?;
    let m: i64 = m.and_then(|v| v.parse().ok()).ok_or_else(bad)?;
    let day: i64 = day.and_then(|v| v.parse().ok()).ok_or_else(bad)?;
    let rest = rest.strip_prefix([' ', 'T']).ok_or_else(bad)?;
    let (clock, zone) = rest.split_at_checked(8).ok_or_else(bad)?;
    let mut c = clock.split(':').map(|v| v.parse::<i64>().ok());
    let (hh, mm, ss) = (c.next().flatten(), c.next().flatten(), c.next().flatten());
    let (hh, mm, ss) = (
        hh.ok_or_else(bad)?,
        mm.ok_or_else(bad)?,
        ss.ok_or_else(bad)?,
    );
    let zone = zone
        .trim_start_matches(|ch: char| ch == '.' || ch.is_ascii_digit())
        .trim();
    let offset = match zone {
        "" | "Z" | "UTC" | "+00" => 0,
        z => {
            let sign = if z.starts_with('-') { -1 } else { 1 };
            let digits: String = z.chars().filter(char::is_ascii_digit).collect();
            let (h, mi) = match digits.len() {
                2 => (digits.parse::<i64>().map_err(|_| bad())?, 0),
                4 => (
                    digits
                        .get(..2)
                        .and_then(|v| v.parse().ok())
                        .ok_or_else(bad)?,
                    digits
                        .get(2..)
                        .and_then(|v| v.parse().ok())
                        .ok_or_else(bad)?,
                ),
                _ => return Err(bad()),
            };
            sign * (h * 3600 + mi * 60)
        }
    };
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || hh > 23 || mm > 59 || ss > 60 {
        return Err(bad());
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Ok(days * 86_400 + hh * 3600 + mm * 60 + ss - offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(parse_time("1970-01-01 00:00:00").unwrap(), 0);
        assert_eq!(parse_time("2000-03-01T00:00:00Z").unwrap(), 951_868_800);
        assert_eq!(
            parse_time("2026-11-21 22:00:00+01:00").unwrap(),
            parse_time("2026-11-21 21:00:00").unwrap()
        );
        assert_eq!(
            parse_time("2026-11-21 22:00:00.123456+00").unwrap(),
            1_795_298_400
        );
        assert!(parse_time("2026-13-01 00:00:00").is_err());
        assert!(parse_time("yesterday").is_err());
    }

    #[test]
    fn quoting() {
        assert_eq!(
            quote("cairn-wal fetch '%f' %p"),
            "'cairn-wal fetch ''%f'' %p'"
        );
    }
}
