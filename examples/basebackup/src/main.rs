//! `cairn-basebackup`: PostgreSQL base backups into a Cairn repository.
//!
//! A thin command line over `cairn::pg`. Exit codes: 0 success, 1 failure, 2 usage, 3 not
//! found / not a repository, 4 wrong password, 5 corruption found, 6 storage failure, 7 already
//! exists.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use cairn::ops::ping::{PingOptions, PingReport, Pinger};
use cairn::pg::basebackup::{BaseBackupInfo, BaseBackupOptions, base_backup};
use cairn::pg::restore::{
    BackupSelector, PgRestoreOptions, RecoveryTarget, list_base_backups_checked, parse_time,
    restore_base_backup, select_base_backup,
};
use cairn::{Error, NoProgress, PasswordSource, Repository, open_existing_storage};
use clap::{Args, Parser, Subcommand};
use serde_json::json;

const EXIT_CODES: &str = "Exit codes: 0 ok, 1 failure, 2 usage, 3 not found / not a repository, \
4 wrong password, 5 corruption, 6 storage failure, 7 already exists.";

#[derive(Parser, Debug)]
#[command(name = "cairn-basebackup", version, about = "PostgreSQL base backups into a Cairn repository", after_help = EXIT_CODES)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Debug)]
struct Global {
    /// Repository location (path, s3://, gs://, az://, memory://).
    #[arg(short = 'r', long = "repo", env = "CAIRN_REPOSITORY", global = true)]
    repo: Option<String>,
    /// Read the password from this file.
    #[arg(long, env = "CAIRN_PASSWORD_FILE", global = true)]
    password_file: Option<String>,
    /// Run this command for the password.
    #[arg(long, env = "CAIRN_PASSWORD_COMMAND", global = true)]
    password_command: Option<String>,
    /// Key file with the unwrapped repository key (see `cairn-wal key-export`); no password then.
    #[arg(long, env = "CAIRN_KEY_FILE", global = true)]
    key_file: Option<PathBuf>,
    /// Machine-readable JSON output.
    #[arg(long, global = true)]
    json: bool,
    /// Health pings for push and expire (healthchecks.io convention): URL/start, then URL on
    /// success or URL/fail with the error; a ping that fails is only a warning.
    #[arg(long, env = "CAIRN_PING_URL", global = true, value_name = "URL")]
    ping_url: Option<String>,
    /// Time budget of each ping in seconds, up to 3 attempts included.
    #[arg(
        long,
        env = "CAIRN_PING_TIMEOUT",
        global = true,
        value_name = "SECONDS",
        default_value_t = 10.0
    )]
    ping_timeout: f64,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Take a base backup of a running cluster.
    Push {
        /// libpq-style connection string.
        #[arg(
            long,
            env = "CAIRN_PG_CONNINFO",
            default_value = "host=/var/run/postgresql user=postgres dbname=postgres"
        )]
        conninfo: String,
        /// The data directory (default: asked from the server).
        #[arg(long)]
        pgdata: Option<PathBuf>,
        /// Backup label.
        #[arg(long, default_value = "cairn base backup")]
        label: String,
        /// Block size for relation files in bytes (a multiple of 8192).
        #[arg(long, default_value_t = 65536)]
        block_size: usize,
        /// Spread the start checkpoint instead of forcing it.
        #[arg(long)]
        spread_checkpoint: bool,
        /// Store changed blocks whole, not as patches against the previous base backup of the
        /// cluster (every backup is still a full snapshot either way).
        #[arg(long)]
        no_delta: bool,
        /// Tags.
        #[arg(long = "tag")]
        tags: Vec<String>,
    },
    /// Forget base backups outside the retention policy, then delete the WAL no remaining base
    /// backup needs. (Run `cairn-files prune` afterwards to free the forgotten backups' data.)
    Expire {
        /// Keep point-in-time recovery for this long (e.g. 30d): every base backup inside the
        /// window plus the newest one before it.
        #[arg(long)]
        recovery_window: Option<String>,
        /// Also keep the N newest base backups.
        #[arg(long, default_value_t = 0)]
        keep_last: u32,
        /// Only print what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
    /// List base backups.
    List,
    /// Show one base backup.
    Show {
        /// Snapshot id, prefix, or `latest`.
        id: String,
    },
    /// Restore a base backup into an empty directory and set up recovery.
    Restore {
        /// Snapshot id, prefix, or `latest` (default).
        #[arg(default_value = "latest")]
        id: String,
        /// Target data directory (empty or missing).
        #[arg(long)]
        target: PathBuf,
        /// Pick the newest backup that ended at or before this time instead of `id`.
        #[arg(long)]
        before: Option<String>,
        /// recovery_target_time.
        #[arg(long, conflicts_with_all = ["target_lsn", "target_xid", "target_name", "target_immediate"])]
        target_time: Option<String>,
        /// recovery_target_lsn.
        #[arg(long)]
        target_lsn: Option<String>,
        /// recovery_target_xid.
        #[arg(long)]
        target_xid: Option<String>,
        /// recovery_target_name.
        #[arg(long)]
        target_name: Option<String>,
        /// recovery_target = 'immediate'.
        #[arg(long)]
        target_immediate: bool,
        /// recovery_target_action: pause, promote or shutdown.
        #[arg(long)]
        target_action: Option<String>,
        /// recovery_target_timeline (latest, current, or a number).
        #[arg(long)]
        target_timeline: Option<String>,
        /// The restore_command to write; default: cairn-wal next to this binary, with this
        /// repository and key file.
        #[arg(long)]
        restore_command: Option<String>,
        /// Write no recovery settings at all.
        #[arg(long)]
        no_recovery: bool,
        /// Move a tablespace: OID=DIR.
        #[arg(long = "tablespace")]
        tablespaces: Vec<String>,
    },
}

fn main() -> ExitCode {
    // Large freed buffers go back to the system (peak RSS of restores: about a third).
    cairn::memory::return_freed_memory();
    let cli = Cli::parse();
    let json = cli.global.json;
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cairn-basebackup: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let pinger = pinger(&cli);
    let result = rt.block_on(async move {
        let pinged = pinger.map(Pinger::begin);
        let result = run(cli).await;
        if let Some(p) = pinged {
            let log = result
                .as_ref()
                .err()
                .map(|e| format!("cairn-basebackup: {e} (exit code {})", e.exit_code()));
            report_pings(&p.finish(log.as_deref()).await, json);
        }
        result
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if json {
                println!(
                    "{}",
                    json!({"error": e.to_string(), "exit_code": e.exit_code()})
                );
            } else {
                eprintln!("cairn-basebackup: {e}");
            }
            ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(1))
        }
    }
}

/// The pinger for `push` and `expire` with `--ping-url`; an unusable URL is a warning (the
/// command runs unmonitored).
fn pinger(cli: &Cli) -> Option<Pinger> {
    let url = cli
        .global
        .ping_url
        .as_deref()
        .filter(|u| !u.trim().is_empty())?;
    if !matches!(cli.command, Command::Push { .. } | Command::Expire { .. }) {
        return None;
    }
    let timeout = Duration::try_from_secs_f64(cli.global.ping_timeout)
        .unwrap_or(Duration::from_secs(10))
        .max(Duration::from_millis(100));
    Pinger::new(url, PingOptions::with_timeout(timeout))
        .map_err(|e| eprintln!("cairn-basebackup: warning: no health pings: {e}"))
        .ok()
}

/// Pings that failed as warnings; with `--json`, every ping as a JSON line on stderr.
fn report_pings(report: &PingReport, json: bool) {
    if json {
        for o in [&report.start, &report.end] {
            let mut line = serde_json::to_value(o).unwrap_or_default();
            line["event"] = json!("ping");
            eprintln!("{line}");
        }
    } else {
        for o in report.failed() {
            eprintln!("cairn-basebackup: warning: {o} (the run's result is unchanged)");
        }
    }
}

async fn open(g: &Global) -> cairn::Result<Repository> {
    let location = g.repo.clone().ok_or_else(|| {
        Error::Invalid("no repository given: use --repo or set CAIRN_REPOSITORY".into())
    })?;
    let storage = open_existing_storage(&location)?;
    if let Some(k) = &g.key_file {
        let w = cairn::pg::wal::open_with_key_file(storage, k).await?;
        return Ok(Repository::from_key(
            w.storage().clone(),
            w.key().clone(),
            w.config().clone(),
        ));
    }
    let Some(source) =
        PasswordSource::from_options(g.password_file.as_deref(), g.password_command.as_deref())
    else {
        return Err(Error::Invalid(
            "no password given: set CAIRN_KEY_FILE, CAIRN_PASSWORD_FILE, CAIRN_PASSWORD_COMMAND or CAIRN_PASSWORD".into(),
        ));
    };
    Repository::open(storage, &source.read()?).await
}

fn info_json(id: &str, info: &BaseBackupInfo, s: &cairn::format::Snapshot) -> serde_json::Value {
    json!({
        "id": id, "time": s.time.secs, "host": s.hostname, "tags": s.tags,
        "start_lsn": info.start_lsn, "stop_lsn": info.stop_lsn, "timeline": info.timeline,
        "system_identifier": info.system_identifier.to_string(), "pg_version": info.pg_version,
        "start_wal": info.start_wal, "stop_wal": info.stop_wal, "stop_time": info.stop_time,
        "pgdata": info.pgdata, "bytes": s.summary.total_bytes,
        "bytes_added_plain": s.summary.bytes_added_plain, "bytes_added_stored": s.summary.bytes_added_stored,
        "duration_seconds": s.summary.duration_nanos as f64 / 1e9,
        "compared_with": s.parent.map(|p| p.to_hex()),
    })
}

async fn run(cli: Cli) -> cairn::Result<()> {
    let g = &cli.global;
    let repo = open(g).await?;
    match cli.command {
        Command::Push {
            conninfo,
            pgdata,
            label,
            block_size,
            spread_checkpoint,
            no_delta,
            tags,
        } => {
            let mut o = BaseBackupOptions::default();
            o.conninfo = conninfo;
            o.pgdata = pgdata;
            o.label = label;
            o.block_size = block_size;
            o.fast_checkpoint = !spread_checkpoint;
            o.delta = !no_delta;
            o.tags = tags;
            let out = base_backup(&repo, &o, Arc::new(NoProgress)).await?;
            if g.json {
                let mut v = info_json(&out.id.to_hex(), &out.info, &out.snapshot);
                v["warnings"] = json!(out.warnings);
                println!("{v}");
            } else {
                let s = &out.snapshot.summary;
                println!(
                    "base backup {} of {} ({} bytes; added {} plain / {} stored) in {:.1}s, WAL {} .. {}",
                    out.id.short(),
                    out.info.pgdata,
                    s.total_bytes,
                    s.bytes_added_plain,
                    s.bytes_added_stored,
                    s.duration_nanos as f64 / 1e9,
                    out.info.start_wal,
                    out.info.stop_wal
                );
                for w in &out.warnings {
                    eprintln!("warning: {w}");
                }
            }
        }
        Command::Expire {
            recovery_window,
            keep_last,
            dry_run,
        } => {
            let mut p = cairn::forget::KeepPolicy::default();
            p.last = keep_last;
            p.now_secs = cairn::repo::now().secs;
            p.recovery_window_secs = match recovery_window {
                Some(w) => Some(parse_window(&w)?),
                None => None,
            };
            let all = repo.list_snapshots().await?;
            let bases: Vec<_> = all
                .into_iter()
                .filter(|(_, s)| s.kind == cairn::format::SnapshotKind::PgBaseBackup)
                .collect();
            if p.is_empty() {
                return Err(Error::Invalid(
                    "give --recovery-window and/or --keep-last".into(),
                ));
            }
            let by = cairn::forget::GroupBy {
                host: false,
                paths: true,
                kind: true,
            };
            let decisions = cairn::forget::apply(&bases, &p, by);
            let removed = if dry_run {
                Vec::new()
            } else {
                cairn::forget::forget(&repo, &decisions).await?
            };
            let wal = cairn::pg::retention::prune_wal(&repo, dry_run).await?;
            if g.json {
                let d: Vec<_> = decisions
                    .iter()
                    .map(|d| json!({"id": d.id.to_hex(), "time": d.time, "keep": d.keep, "reasons": d.reasons}))
                    .collect();
                println!(
                    "{}",
                    json!({"dry_run": dry_run, "base_backups": d, "forgotten": removed.len(),
                           "wal_deleted": wal.deleted, "wal_bytes": wal.bytes})
                );
            } else {
                for d in &decisions {
                    let v = if d.keep {
                        format!("keep ({})", d.reasons.join(", "))
                    } else {
                        "forget".into()
                    };
                    println!("{}  stopped {}  {v}", d.id.short(), d.time);
                }
                let verb = if dry_run { "would delete" } else { "deleted" };
                println!(
                    "{verb} {} WAL files ({} bytes stored)",
                    wal.deleted.len(),
                    wal.bytes
                );
            }
        }
        Command::List => {
            let (all, damaged) = list_base_backups_checked(&repo, None).await?;
            if g.json {
                let v: Vec<_> = all
                    .iter()
                    .map(|(id, s, i)| info_json(&id.to_hex(), i, s))
                    .collect();
                println!("{}", serde_json::Value::Array(v));
            } else {
                println!(
                    "{:<10} {:<12} {:<26} {:<14} {:<14} {:>14}",
                    "id", "stop (unix)", "system id", "start lsn", "stop lsn", "bytes"
                );
                for (id, s, i) in all {
                    println!(
                        "{:<10} {:<12} {:<26} {:<14} {:<14} {:>14}",
                        id.short(),
                        i.stop_time,
                        i.system_identifier,
                        i.start_lsn,
                        i.stop_lsn,
                        s.summary.total_bytes
                    );
                }
            }
            if let Some(first) = damaged.first() {
                for d in &damaged {
                    eprintln!("warning: {}: cannot be read: {}", d.object, d.error);
                }
                return Err(Error::Damaged(format!(
                    "{} snapshot(s) cannot be read and may be base backups (first: {}); run \
                     `cairn-files check`, and `cairn-files forget ID` to remove one",
                    damaged.len(),
                    first.object
                )));
            }
        }
        Command::Show { id } => {
            let sel = if id == "latest" {
                BackupSelector::Latest
            } else {
                BackupSelector::Id(id)
            };
            let (id, s, info) = select_base_backup(&repo, &sel, None).await?;
            let v = info_json(&id.to_hex(), &info, &s);
            if g.json {
                println!("{v}");
            } else {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            }
        }
        Command::Restore {
            id,
            target,
            before,
            target_time,
            target_lsn,
            target_xid,
            target_name,
            target_immediate,
            target_action,
            target_timeline,
            restore_command,
            no_recovery,
            tablespaces,
        } => {
            let selector = match (&before, &target_time) {
                (Some(b), _) => BackupSelector::EndedBefore(parse_time(b)?),
                (None, Some(t)) if id == "latest" => BackupSelector::EndedBefore(parse_time(t)?),
                _ if id == "latest" => BackupSelector::Latest,
                _ => BackupSelector::Id(id.clone()),
            };
            let (sid, snapshot, _) = select_base_backup(&repo, &selector, None).await?;
            let mut o = PgRestoreOptions::default();
            o.recovery = if no_recovery {
                None
            } else if let Some(t) = target_time {
                Some(RecoveryTarget::Time(t))
            } else if let Some(l) = target_lsn {
                Some(RecoveryTarget::Lsn(l))
            } else if let Some(x) = target_xid {
                Some(RecoveryTarget::Xid(x))
            } else if let Some(n) = target_name {
                Some(RecoveryTarget::Name(n))
            } else if target_immediate {
                Some(RecoveryTarget::Immediate)
            } else {
                Some(RecoveryTarget::Latest)
            };
            o.target_action = target_action;
            o.target_timeline = target_timeline;
            o.restore_command = match restore_command {
                Some(c) => Some(c),
                None => Some(default_restore_command(g)?),
            };
            for t in tablespaces {
                let (oid, dir) = t
                    .split_once('=')
                    .ok_or_else(|| Error::Invalid(format!("--tablespace {t:?}: use OID=DIR")))?;
                o.tablespace_map.push((oid.to_owned(), PathBuf::from(dir)));
            }
            let out =
                restore_base_backup(&repo, &snapshot, &target, &o, Arc::new(NoProgress)).await?;
            if g.json {
                println!(
                    "{}",
                    json!({"id": sid.to_hex(), "target": target.display().to_string(), "files": out.files,
                           "bytes": out.bytes, "errors": out.errors})
                );
            } else {
                println!(
                    "restored base backup {} into {} ({} files, {} bytes)",
                    sid.short(),
                    target.display(),
                    out.files,
                    out.bytes
                );
                for e in &out.errors {
                    eprintln!("error: {e}");
                }
            }
            if !out.errors.is_empty() {
                return Err(Error::Corrupt {
                    object: format!("base backup {}", sid.short()),
                    source: cairn::format::FormatError::Malformed {
                        what: "restore",
                        reason: format!("{} file(s) could not be restored", out.failed_files),
                    },
                });
            }
        }
    }
    Ok(())
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// `cairn-wal` next to this binary, with this repository and key file.
fn default_restore_command(g: &Global) -> cairn::Result<String> {
    let exe = std::env::current_exe().map_err(|e| Error::io("current_exe", e))?;
    let wal = exe.with_file_name("cairn-wal");
    let repo = g.repo.clone().unwrap_or_default();
    let Some(key) = &g.key_file else {
        return Err(Error::Invalid(
            "give --key-file (the restore_command runs without a password) or --restore-command"
                .into(),
        ));
    };
    let key = std::path::absolute(key).map_err(|e| Error::io(key, e))?;
    Ok(format!(
        "{} --repo {} --key-file {} fetch %f %p",
        sh_quote(&wal.display().to_string()),
        sh_quote(&repo),
        sh_quote(&key.display().to_string())
    ))
}

/// `30d`, `12h`, `2w` -> seconds.
fn parse_window(s: &str) -> cairn::Result<i64> {
    let bad = || {
        Error::Invalid(format!(
            "duration {s:?}: use a number and one of h, d, w (e.g. 30d)"
        ))
    };
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (n, unit) = s.split_at(split);
    let n: i64 = n.parse().map_err(|_| bad())?;
    let unit = match unit {
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(bad()),
    };
    Ok(n * unit)
}
