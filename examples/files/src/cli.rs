//! The command line: options and commands of `cairn-files` (parsed by clap).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::{ping, text};

#[derive(Parser, Debug)]
#[command(name = "cairn-files", version, about = "Encrypted, deduplicated backups of file trees", after_help = EXIT_CODES)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: Global,
    #[command(subcommand)]
    pub(crate) command: Command,
}

const EXIT_CODES: &str = "\
Snapshots (SNAPSHOT) are named by `latest`, a full id, or a unique id prefix.

Exit codes:
  0  success
  1  failure (backup: refused because prune deleted or condemned data it uses, or the
     stream command failed; no snapshot was written)
  2  usage error
  3  not found / not a repository
  4  wrong password
  5  corruption found (restore: some entries could not be restored; snapshots, key list,
     find, stats: something could not be read and is named; check: problems found;
     prune: damage found, nothing deleted; drill: a file did not verify)
  6  storage failure
  7  already exists
  8  backup: snapshot written but some files could not be read or kept changing";

/// Exit code of a backup that wrote its snapshot but could not read some files.
pub(crate) const EXIT_PARTIAL_BACKUP: u8 = 8;
/// Exit code of a restore that could not restore everything (corruption found).
pub(crate) const EXIT_CORRUPTION: u8 = 5;

#[derive(Args, Debug)]
pub(crate) struct Global {
    /// Repository: a path, file://, memory://, s3://bucket/prefix, gs://bucket/prefix, az://container/prefix.
    #[arg(short = 'r', long = "repo", env = "CAIRN_REPOSITORY", global = true)]
    pub(crate) repo: Option<String>,
    /// Read the password from this file.
    #[arg(long, env = "CAIRN_PASSWORD_FILE", global = true)]
    pub(crate) password_file: Option<String>,
    /// Run this shell command and use its output as the password.
    #[arg(long, env = "CAIRN_PASSWORD_COMMAND", global = true)]
    pub(crate) password_command: Option<String>,
    /// Open the repository with this key file (see `key export`) instead of a password: no
    /// password and no key derivation, for scheduled backups.
    #[arg(long, env = "CAIRN_KEY_FILE", global = true)]
    pub(crate) key_file: Option<PathBuf>,
    /// Print machine-readable JSON instead of text (progress as JSON lines on stderr).
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// Do not cache index files locally (default cache: $XDG_CACHE_HOME/cairn or ~/.cache/cairn).
    #[arg(long, global = true)]
    pub(crate) no_cache: bool,
    #[command(flatten)]
    pub(crate) ping: ping::PingArgs,
    /// Argon2id memory cost in KiB for new keys (default 65536 = 64 MiB).
    #[arg(long, global = true, hide = true)]
    pub(crate) kdf_memory_kib: Option<u32>,
    /// Argon2id passes for new keys (default 3).
    #[arg(long, global = true, hide = true)]
    pub(crate) kdf_passes: Option<u32>,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
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
pub(crate) enum RepairCommand {
    /// Rebuild the index from the pack headers (when index files are lost or damaged).
    Index,
}

#[derive(Subcommand, Debug)]
pub(crate) enum KeyCommand {
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
pub(crate) enum StatsModeArg {
    RestoreSize,
    RawData,
}

#[derive(Args, Debug)]
pub(crate) struct BackupArgs {
    /// Files and directories to back up.
    #[arg(value_name = "PATH")]
    pub(crate) paths: Vec<PathBuf>,
    /// Tag the snapshot (repeatable).
    #[arg(long)]
    pub(crate) tag: Vec<String>,
    /// Host name to record (default: this machine's).
    #[arg(long)]
    pub(crate) host: Option<String>,
    /// Compare against this snapshot to skip unchanged files (default: the latest snapshot of
    /// the same host and paths).
    #[arg(long, conflicts_with = "force")]
    pub(crate) parent: Option<String>,
    /// Read every file, comparing against no parent snapshot.
    #[arg(long)]
    pub(crate) force: bool,
    /// Leave out paths matching this glob (repeatable).
    #[arg(long, value_name = "GLOB")]
    pub(crate) exclude: Vec<String>,
    /// Leave out the globs listed in this file, one a line (repeatable).
    #[arg(long, value_name = "FILE")]
    pub(crate) exclude_file: Vec<PathBuf>,
    /// Leave out the contents of directories holding a file of this name (repeatable).
    #[arg(long, value_name = "NAME")]
    pub(crate) exclude_if_present: Vec<String>,
    /// Leave out files larger than this (e.g. 100M, 2G).
    #[arg(long, value_name = "SIZE", value_parser = text::parse_size)]
    pub(crate) exclude_larger_than: Option<u64>,
    /// Do not cross into other file systems.
    #[arg(long, short = 'x')]
    pub(crate) one_file_system: bool,
    /// Back up standard input as one file (named by --stdin-filename).
    #[arg(long, conflicts_with = "stdin_from_command")]
    pub(crate) stdin: bool,
    /// Back up the standard output of the command after `--` as one file; fails, writing no
    /// snapshot, when the command fails.
    #[arg(long)]
    pub(crate) stdin_from_command: bool,
    /// File name of the stream in the snapshot.
    #[arg(long, default_value = "stdin", value_name = "NAME")]
    pub(crate) stdin_filename: String,
    /// Worker threads (default: the number of CPUs).
    #[arg(long)]
    pub(crate) threads: Option<usize>,
    /// The command and its arguments, for --stdin-from-command.
    #[arg(last = true, value_name = "CMD")]
    pub(crate) command: Vec<String>,
}
