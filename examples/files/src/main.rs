//! `cairn-files`: back up and restore file trees with Cairn.
//!
//! A thin command line over the `cairn` crate: it parses arguments, calls the library, prints.
//!
//! Exit codes: 0 success, 1 failure, 2 usage error, 3 not found / not a repository, 4 wrong
//! password, 5 corruption found (or a restore that could not restore everything), 6 storage
//! failure, 7 already exists, 8 backup written but some files could not be read.

mod commands;
mod drill;
mod keys;
mod listing;
mod ping;
mod progress;
mod text;

use std::path::PathBuf;
use std::process::ExitCode;

use cairn::format::KdfParams;
use cairn::{Error, PasswordSource, Repository, open_existing_storage, open_storage};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::json;

#[derive(Parser, Debug)]
#[command(name = "cairn-files", version, about = "Encrypted, deduplicated backups of file trees", after_help = EXIT_CODES)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

const EXIT_CODES: &str = "\
Snapshots (SNAPSHOT) are named by `latest`, a full id, or a unique id prefix.

Exit codes:
  0  success
  1  failure
  2  usage error
  3  not found / not a repository
  4  wrong password
  5  corruption found (restore: some entries could not be restored; snapshots, key list,
     find, stats: something could not be read and is named; check: problems found)
  6  storage failure
  7  already exists
  8  backup: snapshot written but some files could not be read";

/// Exit code of a backup that wrote its snapshot but could not read some files.
const EXIT_PARTIAL_BACKUP: u8 = 8;
/// Exit code of a restore that could not restore everything (corruption found).
const EXIT_CORRUPTION: u8 = 5;

#[derive(Args, Debug)]
struct Global {
    /// Repository: a path, file://, memory://, s3://bucket/prefix, gs://bucket/prefix, az://container/prefix.
    #[arg(short = 'r', long = "repo", env = "CAIRN_REPOSITORY", global = true)]
    repo: Option<String>,
    /// Read the password from this file.
    #[arg(long, env = "CAIRN_PASSWORD_FILE", global = true)]
    password_file: Option<String>,
    /// Run this shell command and use its output as the password.
    #[arg(long, env = "CAIRN_PASSWORD_COMMAND", global = true)]
    password_command: Option<String>,
    /// Open the repository with this key file (see `key export`) instead of a password: no
    /// password and no key derivation, for scheduled backups.
    #[arg(long, env = "CAIRN_KEY_FILE", global = true)]
    key_file: Option<PathBuf>,
    /// Print machine-readable JSON instead of text (progress as JSON lines on stderr).
    #[arg(long, global = true)]
    json: bool,
    /// Do not cache index files locally (default cache: $XDG_CACHE_HOME/cairn or ~/.cache/cairn).
    #[arg(long, global = true)]
    no_cache: bool,
    #[command(flatten)]
    ping: ping::PingArgs,
    /// Argon2id memory cost in KiB for new keys (default 65536 = 64 MiB).
    #[arg(long, global = true, hide = true)]
    kdf_memory_kib: Option<u32>,
    /// Argon2id passes for new keys (default 3).
    #[arg(long, global = true, hide = true)]
    kdf_passes: Option<u32>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a repository.
    Init {
        /// Label of the first key (default: user@host).
        #[arg(long)]
        label: Option<String>,
        /// zstd level for new data, 0 to store uncompressed (default 2: about as small as 3 on
        /// 1 MiB chunks, and 1.3-1.5x faster).
        #[arg(long, default_value_t = 2)]
        compression: i32,
    },
    /// Show the repository config.
    Config,
    /// Manage the repository's keys (passwords).
    #[command(subcommand)]
    Key(KeyCommand),
    /// Back up files and directories (or a stream) into a new snapshot.
    #[command(
        after_help = "Exit code 8: the snapshot was written but some files could not be read \
(they are listed as warnings and left out of the snapshot)."
    )]
    Backup(BackupArgs),
    /// Restore a snapshot into a directory.
    #[command(
        after_help = "Exit code 5: some entries could not be restored (damaged or missing \
data, or files that could not be created or written, e.g. on a full disk); they are listed and \
left out (a file is written under a temporary name and renamed only when complete), the rest \
is restored."
    )]
    Restore {
        /// The snapshot.
        snapshot: String,
        /// Directory to restore into (created if missing; must be empty unless --overwrite).
        #[arg(long, short = 't')]
        target: PathBuf,
        /// Restore only this absolute path of the snapshot, with everything below it (repeatable).
        #[arg(long, value_name = "PATH")]
        include: Vec<String>,
        /// Do not restore modes, owners, times and extended attributes.
        #[arg(long)]
        no_metadata: bool,
        /// Write zero-filled chunks instead of leaving holes.
        #[arg(long)]
        no_sparse: bool,
        /// Write every file through the page cache (default: files of 8 MiB and more are
        /// written with O_DIRECT where the file system allows it, leaving the cache alone).
        #[arg(long)]
        no_direct_io: bool,
        /// Restore into a non-empty target, replacing entries of the same name.
        #[arg(long)]
        overwrite: bool,
        /// Worker threads (default: the number of CPUs plus 2).
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Restore drill: restore a snapshot into a scratch directory, verify every entry against
    /// the snapshot (content re-hashed, metadata), report RTO and RPO, remove the scratch.
    #[command(
        after_help = "Exit code 5: the drill failed: something could not be restored or \
differs from the snapshot (each path is listed). The scratch directory is $TMPDIR (else /tmp) \
/cairn-drill-XXXXXXXXXXXXXXXX unless --target is given. RTO = restore + verify wall time; \
RPO = drill start minus the snapshot's time. File snapshots only."
    )]
    Drill {
        /// The snapshot (default: latest).
        #[arg(conflicts_with = "random")]
        snapshot: Option<String>,
        /// Drill a file snapshot chosen at random (seeded from the OS).
        #[arg(long)]
        random: bool,
        /// Restore into this directory (must be empty or absent) instead of a fresh one in
        /// the temporary directory.
        #[arg(long, short = 't')]
        target: Option<PathBuf>,
        /// Keep the restored scratch directory (default: removed, on failure too).
        #[arg(long)]
        keep: bool,
        /// Worker threads of the restore and the verification (default: the number of CPUs
        /// plus 2 for the restore, the number of CPUs for the verification).
        #[arg(long)]
        threads: Option<usize>,
    },
    /// List snapshots, oldest first.
    Snapshots {
        /// Only snapshots of this host.
        #[arg(long)]
        host: Option<String>,
        /// Only snapshots with this tag (repeat: with every tag given).
        #[arg(long)]
        tag: Vec<String>,
        /// Only snapshots of this backed-up path (repeat: with every path given).
        #[arg(long)]
        path: Vec<String>,
    },
    /// List a directory of a snapshot.
    Ls {
        /// The snapshot.
        snapshot: String,
        /// Absolute path inside the snapshot.
        #[arg(default_value = "/")]
        path: String,
        /// List everything below the directory.
        #[arg(short = 'R', long)]
        recursive: bool,
    },
    /// Find files by name (`*.pdf`) or by path (`/home/*/notes.txt`, `doc/**/*.md`) in snapshots.
    Find {
        /// Glob: without `/` it matches file names; with `/`, paths (`*` within a component,
        /// `**` across).
        pattern: String,
        /// Search only this snapshot (repeatable; default: all).
        #[arg(long, short = 's')]
        snapshot: Vec<String>,
        /// Match regardless of case.
        #[arg(long, short = 'i')]
        ignore_case: bool,
    },
    /// Show what changed between two snapshots (+ added, - removed, M content modified,
    /// U metadata only, T type changed).
    Diff {
        /// The older snapshot.
        a: String,
        /// The newer snapshot.
        b: String,
    },
    /// Write the content of a file of a snapshot to standard output.
    Dump {
        /// The snapshot.
        snapshot: String,
        /// Absolute path of the file inside the snapshot.
        path: String,
    },
    /// Count files, sizes, distinct blobs and ratios of snapshots.
    Stats {
        /// The snapshots (default: all).
        snapshots: Vec<String>,
        /// restore-size: files and logical size only; raw-data: also distinct blobs and
        /// stored bytes.
        #[arg(long, value_enum, default_value_t = StatsModeArg::RawData)]
        mode: StatsModeArg,
    },
    /// Check the repository: structure always; with --read-data, pack contents too.
    Check {
        /// Read and verify every pack.
        #[arg(long)]
        read_data: bool,
        /// Read subset N/M of the packs (e.g. 1/7 on Mondays, 2/7 on Tuesdays, ...), or a
        /// percentage (`10%`) or an amount (`2G`) of packs chosen at random.
        #[arg(long, value_name = "N/M|P%|SIZE", conflicts_with = "read_data")]
        read_data_subset: Option<String>,
    },
    /// Free the space of data no snapshot references (safe while backups run: packs are
    /// condemned first and deleted by a later run after the grace period).
    Prune {
        /// Time between condemning and deleting; must exceed the longest backup (e.g. 24h).
        /// Backups that outlast it are refused (no snapshot). At least 5m unless
        /// --allow-short-grace.
        #[arg(long, default_value = "24h")]
        grace: String,
        /// Accept a grace period under 5 minutes (tests, throw-away repositories): even short
        /// backups may then be refused.
        #[arg(long)]
        allow_short_grace: bool,
        /// Go ahead although snapshots need data that is missing or damaged (by default prune
        /// then deletes nothing and exits 5).
        #[arg(long)]
        ignore_damage: bool,
        /// Repack packs whose used share is below this fraction.
        #[arg(long, default_value_t = 0.5)]
        repack_below: f64,
        /// Only print the plan and the bytes it frees.
        #[arg(long)]
        dry_run: bool,
    },
    /// Repair the repository.
    #[command(subcommand)]
    Repair(RepairCommand),
    /// Add or remove tags of a snapshot (`--add permanent` protects it from forget).
    Tag {
        /// The snapshot.
        snapshot: String,
        /// Tags to add.
        #[arg(long = "add")]
        add: Vec<String>,
        /// Tags to remove.
        #[arg(long = "remove")]
        remove: Vec<String>,
    },
    /// Forget snapshots by retention policy, or the snapshots named by id, readable or not
    /// (data is freed later by prune).
    Forget {
        /// Snapshots to forget (full id or unique prefix), instead of keep rules. Removes
        /// snapshots that cannot be read too.
        #[arg(value_name = "ID")]
        snapshots: Vec<String>,
        /// Keep the N newest.
        #[arg(long, default_value_t = 0)]
        keep_last: u32,
        /// Keep one per hour for the N newest hours.
        #[arg(long, default_value_t = 0)]
        keep_hourly: u32,
        /// Keep one per day for the N newest days.
        #[arg(long, default_value_t = 0)]
        keep_daily: u32,
        /// Keep one per ISO week for the N newest weeks.
        #[arg(long, default_value_t = 0)]
        keep_weekly: u32,
        /// Keep one per month for the N newest months.
        #[arg(long, default_value_t = 0)]
        keep_monthly: u32,
        /// Keep one per year for the N newest years.
        #[arg(long, default_value_t = 0)]
        keep_yearly: u32,
        /// Keep everything within this duration of the newest (e.g. 30d, 12h, 2w).
        #[arg(long)]
        keep_within: Option<String>,
        /// Keep snapshots with this tag.
        #[arg(long = "keep-tag")]
        keep_tags: Vec<String>,
        /// UTC offset for calendar rules, e.g. +01:00 (default: UTC).
        #[arg(long, default_value = "+00:00")]
        tz: String,
        /// Group by: any of host,paths,kind (default all three).
        #[arg(long, default_value = "host,paths,kind")]
        group_by: String,
        /// Only print what would be forgotten.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Subcommand, Debug)]
enum RepairCommand {
    /// Rebuild the index from the pack headers (when index files are lost or damaged).
    Index,
}

#[derive(Subcommand, Debug)]
enum KeyCommand {
    /// Add a key for another password.
    Add {
        /// Read the new password from this file (otherwise prompt).
        #[arg(long)]
        new_password_file: Option<String>,
        /// Label of the new key.
        #[arg(long, default_value = "")]
        label: String,
    },
    /// List keys.
    List,
    /// Remove a key by id (hex, or a unique prefix).
    Remove {
        /// The key id.
        id: String,
    },
    /// Write a key file (mode 0600, never overwritten) holding the unwrapped master key, for
    /// `--key-file` / `CAIRN_KEY_FILE`. Anyone who can read it can read and write the
    /// repository; removing key slots does not revoke it.
    Export {
        /// Where to write the key file.
        path: PathBuf,
    },
    /// Change the password of the key in use.
    Passwd {
        /// Read the new password from this file (otherwise prompt).
        #[arg(long)]
        new_password_file: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum StatsModeArg {
    RestoreSize,
    RawData,
}

#[derive(Args, Debug)]
struct BackupArgs {
    /// Files and directories to back up.
    #[arg(value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// Tag the snapshot (repeatable).
    #[arg(long)]
    tag: Vec<String>,
    /// Host name to record (default: this machine's).
    #[arg(long)]
    host: Option<String>,
    /// Compare against this snapshot to skip unchanged files (default: the latest snapshot of
    /// the same host and paths).
    #[arg(long, conflicts_with = "force")]
    parent: Option<String>,
    /// Read every file, comparing against no parent snapshot.
    #[arg(long)]
    force: bool,
    /// Leave out paths matching this glob (repeatable).
    #[arg(long, value_name = "GLOB")]
    exclude: Vec<String>,
    /// Leave out the globs listed in this file, one a line (repeatable).
    #[arg(long, value_name = "FILE")]
    exclude_file: Vec<PathBuf>,
    /// Leave out the contents of directories holding a file of this name (repeatable).
    #[arg(long, value_name = "NAME")]
    exclude_if_present: Vec<String>,
    /// Leave out files larger than this (e.g. 100M, 2G).
    #[arg(long, value_name = "SIZE", value_parser = text::parse_size)]
    exclude_larger_than: Option<u64>,
    /// Do not cross into other file systems.
    #[arg(long, short = 'x')]
    one_file_system: bool,
    /// Back up standard input as one file (named by --stdin-filename).
    #[arg(long, conflicts_with = "stdin_from_command")]
    stdin: bool,
    /// Back up the standard output of the command after `--` as one file; fails, writing no
    /// snapshot, when the command fails.
    #[arg(long)]
    stdin_from_command: bool,
    /// File name of the stream in the snapshot.
    #[arg(long, default_value = "stdin", value_name = "NAME")]
    stdin_filename: String,
    /// Worker threads (default: the number of CPUs).
    #[arg(long)]
    threads: Option<usize>,
    /// The command and its arguments, for --stdin-from-command.
    #[arg(last = true, value_name = "CMD")]
    command: Vec<String>,
}

fn main() -> ExitCode {
    // Large freed buffers go back to the system (peak RSS of restores: about a third).
    cairn::memory::return_freed_memory();
    let cli = Cli::parse();
    let json = cli.global.json;
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cairn-files: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let pinger = ping::pinger(&cli);
    match rt.block_on(ping::around(pinger, json, run(cli))) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            if json {
                println!(
                    "{}",
                    json!({"error": e.to_string(), "exit_code": e.exit_code()})
                );
            } else {
                eprintln!("cairn-files: {e}");
            }
            ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(1))
        }
    }
}

fn password(g: &Global) -> cairn::Result<Vec<u8>> {
    let given =
        PasswordSource::from_options(g.password_file.as_deref(), g.password_command.as_deref());
    let source = if let Some(s) = given {
        s
    } else {
        let p = rpassword::prompt_password("repository password: ").map_err(|e| {
            Error::Invalid(format!(
                "no password given ({e}): set CAIRN_PASSWORD_FILE, CAIRN_PASSWORD_COMMAND or CAIRN_PASSWORD, or run on a terminal"
            ))
        })?;
        PasswordSource::Literal(p)
    };
    Ok(source.read()?.to_vec())
}

fn new_password(file: &Option<String>) -> cairn::Result<Vec<u8>> {
    if let Some(f) = file {
        return Ok(PasswordSource::File(f.clone()).read()?.to_vec());
    }
    let read = |prompt: &str| {
        rpassword::prompt_password(prompt).map_err(|e| {
            Error::Invalid(format!(
                "cannot read the new password ({e}); use --new-password-file"
            ))
        })
    };
    let a = read("new password: ")?;
    if a != read("repeat new password: ")? {
        return Err(Error::Invalid("the passwords do not match".into()));
    }
    Ok(PasswordSource::Literal(a).read()?.to_vec())
}

fn kdf(g: &Global) -> KdfParams {
    let mut k = KdfParams::default();
    if let Some(m) = g.kdf_memory_kib {
        k.m_cost_kib = m;
    }
    if let Some(t) = g.kdf_passes {
        k.t_cost = t;
    }
    // Argon2 needs 8 KiB per lane: tiny test memory costs get fewer lanes.
    k.p_cost = k.p_cost.min(k.m_cost_kib / 8).max(1);
    k
}

fn default_label() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "user".into());
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "host".into());
    format!("{user}@{host}")
}

async fn run(cli: Cli) -> cairn::Result<u8> {
    let g = &cli.global;
    let location = g.repo.clone().ok_or_else(|| {
        Error::Invalid("no repository given: use --repo or set CAIRN_REPOSITORY".into())
    })?;
    if let Command::Init { label, compression } = &cli.command {
        let storage = open_storage(&location)?;
        let pw = password(g)?;
        let mut opts = cairn::InitOptions::default();
        opts.kdf = kdf(g);
        opts.label = label.clone().unwrap_or_else(default_label);
        opts.compression = cairn::format::Compression::from_level(*compression);
        let repo = Repository::init(storage, &pw, opts).await?;
        if g.json {
            println!("{}", config_json(&repo));
        } else {
            println!("created Cairn repository at {location}");
            print_config(&repo);
        }
        return Ok(0);
    }
    // Only `init` creates a local directory.
    let storage = open_existing_storage(&location)?;
    let repo = match &g.key_file {
        Some(path) => Repository::open_with_key_file(storage, path).await?,
        None => Repository::open(storage, &password(g)?).await?,
    };
    let mut repo = repo.with_cache(if g.no_cache || is_local(&location) {
        // A local repository is as fast to read as a cache of it.
        None
    } else {
        Repository::default_cache_dir()
    });
    match &cli.command {
        Command::Init { .. } => Ok(0),
        Command::Config => {
            if g.json {
                println!("{}", config_json(&repo));
            } else {
                print_config(&repo);
            }
            Ok(0)
        }
        Command::Key(cmd) => keys::key_command(&mut repo, cmd, g).await,
        Command::Backup(args) => commands::backup(&repo, args, g.json).await,
        Command::Restore {
            snapshot,
            target,
            include,
            no_metadata,
            no_sparse,
            no_direct_io,
            overwrite,
            threads,
        } => {
            let mut o = cairn::RestoreOptions::default();
            o.include = include.clone();
            o.metadata = !no_metadata;
            o.sparse = !no_sparse;
            o.direct_io = !no_direct_io;
            o.overwrite = *overwrite;
            o.threads = *threads;
            commands::restore(&repo, snapshot, target, &o, g.json).await
        }
        Command::Drill {
            snapshot,
            random,
            target,
            keep,
            threads,
        } => {
            let args = drill::DrillArgs {
                snapshot: snapshot.as_deref(),
                random: *random,
                target: target.clone(),
                keep: *keep,
                threads: *threads,
            };
            drill::drill(&repo, args, g.json).await
        }
        Command::Snapshots { host, tag, path } => {
            listing::snapshots(&repo, host.as_deref(), tag, path, g.json).await
        }
        Command::Ls {
            snapshot,
            path,
            recursive,
        } => commands::ls(&repo, snapshot, path, *recursive, g.json).await,
        Command::Find {
            pattern,
            snapshot,
            ignore_case,
        } => commands::find(&repo, pattern, snapshot, *ignore_case, g.json).await,
        Command::Diff { a, b } => commands::diff(&repo, a, b, g.json).await,
        Command::Dump { snapshot, path } => commands::dump(&repo, snapshot, path).await,
        Command::Stats { snapshots, mode } => {
            let mode = match mode {
                StatsModeArg::RestoreSize => cairn::StatsMode::RestoreSize,
                StatsModeArg::RawData => cairn::StatsMode::RawData,
            };
            commands::stats(&repo, snapshots, mode, g.json).await
        }
        Command::Check {
            read_data,
            read_data_subset,
        } => commands::check(&repo, *read_data, read_data_subset.as_deref(), g.json).await,
        Command::Prune {
            grace,
            allow_short_grace,
            ignore_damage,
            repack_below,
            dry_run,
        } => {
            let mut o = cairn::prune::PruneOptions::default();
            o.grace_secs = u64::try_from(commands::parse_duration(grace)?).unwrap_or(0);
            o.repack_below = repack_below.clamp(0.0, 1.0);
            o.dry_run = *dry_run;
            o.allow_short_grace = *allow_short_grace;
            o.ignore_damage = *ignore_damage;
            commands::prune(&repo, &o, g.json).await.map(|()| 0)
        }
        Command::Repair(RepairCommand::Index) => {
            commands::repair_index(&repo, g.json).await.map(|()| 0)
        }
        Command::Tag {
            snapshot,
            add,
            remove,
        } => {
            let (id, _) = repo.find_snapshot(snapshot).await?;
            let new = cairn::forget::retag(&repo, &id, add, remove).await?;
            if g.json {
                println!(
                    "{}",
                    serde_json::json!({"old": id.to_hex(), "new": new.to_hex()})
                );
            } else {
                println!("snapshot {} is now {}", id.short(), new.short());
            }
            Ok(0)
        }
        Command::Forget {
            snapshots,
            keep_last,
            keep_hourly,
            keep_daily,
            keep_weekly,
            keep_monthly,
            keep_yearly,
            keep_within,
            keep_tags,
            tz,
            group_by,
            dry_run,
        } => {
            let mut p = cairn::forget::KeepPolicy::default();
            p.last = *keep_last;
            p.hourly = *keep_hourly;
            p.daily = *keep_daily;
            p.weekly = *keep_weekly;
            p.monthly = *keep_monthly;
            p.yearly = *keep_yearly;
            p.within_secs = keep_within
                .as_deref()
                .map(commands::parse_duration)
                .transpose()?;
            p.tags = keep_tags.clone();
            p.tz_offset_secs = commands::parse_offset(tz)?;
            let by = cairn::forget::GroupBy {
                host: group_by.contains("host"),
                paths: group_by.contains("paths"),
                kind: group_by.contains("kind"),
            };
            listing::ids_or_policy(snapshots, &p)?;
            if !snapshots.is_empty() {
                return listing::forget_ids(&repo, snapshots, *dry_run, g.json)
                    .await
                    .map(|()| 0);
            }
            listing::forget(&repo, &p, by, *dry_run, g.json)
                .await
                .map(|()| 0)
        }
    }
}

fn config_json(repo: &Repository) -> serde_json::Value {
    let c = repo.config();
    json!({
        "location": repo.storage().location(),
        "format_version": cairn::format::FORMAT_VERSION,
        "repo_id": cairn::format::id::hex_encode(&c.repo_id),
        "created": c.created.secs,
        "chunker": {"min": c.chunker.min_size, "avg": c.chunker.avg_size, "max": c.chunker.max_size,
                    "normalization": c.chunker.normalization},
        "compression_level": c.compression.level(),
        "data_pack_target": c.data_pack_target,
        "tree_pack_target": c.tree_pack_target,
        "key": repo.key_id().to_hex(),
    })
}

fn print_config(repo: &Repository) {
    let c = repo.config();
    println!("location          {}", repo.storage().location());
    println!("format version    {}", cairn::format::FORMAT_VERSION);
    println!(
        "repository id     {}",
        cairn::format::id::hex_encode(&c.repo_id)
    );
    println!("created           {} (unix seconds)", c.created.secs);
    println!(
        "chunker           min {} / avg {} / max {} bytes, normalization {}",
        c.chunker.min_size, c.chunker.avg_size, c.chunker.max_size, c.chunker.normalization
    );
    println!(
        "compression       zstd level {} (0 = off)",
        c.compression.level()
    );
    println!(
        "pack targets      data {} bytes, tree {} bytes",
        c.data_pack_target, c.tree_pack_target
    );
    println!("opened with key   {}", repo.key_id().short());
}

/// True for repositories on the local file system (a path or `file://`).
fn is_local(location: &str) -> bool {
    match location.split_once("://") {
        None => true,
        Some((scheme, _)) => scheme.eq_ignore_ascii_case("file"),
    }
}
