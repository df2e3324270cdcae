//! `cairn-wal`: PostgreSQL WAL archiving with Cairn, as `archive_command` and `restore_command`.
//!
//! A thin command line over `cairn::pg::wal`: it parses arguments, calls the library, prints,
//! and maps outcomes to the exit codes PostgreSQL acts on (see [`EXIT_CODES`]).

use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use cairn::format::{SegmentHeader, SegmentName, WalFileName};
use cairn::pg::wal::{self, FetchOptions, FetchOutcome, PushOptions, PushOutcome, WalRepo};
use cairn::{Error, PasswordSource, Repository, open_existing_storage};
use clap::{Args, Parser, Subcommand};
use serde_json::json;

mod verify;

const EXIT_CODES: &str = "\
PostgreSQL setup (postgresql.conf; the commands run in the data directory):
  archive_command = 'cairn-wal --key-file /etc/cairn/key push %p'
  restore_command = 'cairn-wal --key-file /etc/cairn/key fetch %f %p --prefetch 8'
with CAIRN_REPOSITORY set for the server, or --repo in both commands.

Exit codes:
  push    0  stored, or already stored with identical content
          1  refused: the name is stored with different content, another cluster's
             segment, not a WAL file, a header that does not match the name, bad key
          6  storage failure (after retrying for CAIRN_WAL_RETRY_SECS, default 30);
             PostgreSQL keeps the file and retries the push later
  fetch   0  found and written to DEST
          1  not found: the store answered that the file does not exist
        126  anything else (store unreachable, corrupt object, bad key, bad arguments).
             PostgreSQL ends recovery at the first restore_command failure with an exit
             status up to 125, taking it as the end of the archived WAL, and would then
             promote with WAL missing; an exit status above 125 makes it abort recovery
             instead, so that it can be retried once the store is back.
  verify  0  continuous; 5 gaps or other problems found
  other   0 success, 1 failure, 2 usage error, 3 not found / not a repository,
          4 wrong password, 5 corruption found, 6 storage failure, 7 already exists";

/// fetch: the store answered "not found".
const EXIT_NOT_FOUND: u8 = 1;
/// fetch: any failure other than "not found"; above 125 so that PostgreSQL aborts recovery.
const EXIT_FETCH_FAILED: u8 = 126;
/// push: refused.
const EXIT_REFUSED: u8 = 1;
/// push: storage failure.
const EXIT_STORAGE: u8 = 6;
/// verify: gaps or problems found.
const EXIT_GAPS: u8 = 5;

#[derive(Parser, Debug)]
#[command(name = "cairn-wal", version, about = "PostgreSQL WAL archiving into a Cairn repository", after_help = EXIT_CODES)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Debug, Clone)]
struct Global {
    /// Repository: a path, file://, s3://bucket/prefix, gs://bucket/prefix, az://container/prefix.
    #[arg(short = 'r', long = "repo", env = "CAIRN_REPOSITORY", global = true)]
    repo: Option<String>,
    /// Open the repository with this key file (see key-export): no password, no key derivation.
    #[arg(long, env = "CAIRN_KEY_FILE", global = true)]
    key_file: Option<PathBuf>,
    /// Read the password from this file (when there is no key file).
    #[arg(long, env = "CAIRN_PASSWORD_FILE", global = true)]
    password_file: Option<String>,
    /// Run this shell command and use its output as the password.
    #[arg(long, env = "CAIRN_PASSWORD_COMMAND", global = true)]
    password_command: Option<String>,
    /// The cluster's data directory (pg_control, prefetch spool). Default: the current directory.
    #[arg(long, global = true)]
    pgdata: Option<PathBuf>,
    /// The cluster's system identifier (16 hex digits or decimal), instead of reading pg_control.
    #[arg(long, global = true)]
    system_id: Option<String>,
    /// Print machine-readable JSON.
    #[arg(long, global = true)]
    json: bool,
    /// Say what was done on standard error.
    #[arg(short, long, global = true)]
    verbose: bool,
    /// Health pings for `verify` (healthchecks.io convention: URL/start, then URL, or URL/fail
    /// with the gaps found). Not for push: see the README.
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
    /// Archive one WAL file (archive_command: push %p).
    Push {
        /// The file (%p), named as PostgreSQL names it.
        path: PathBuf,
        /// Also push up to N other files PostgreSQL has marked ready, ahead of its calls.
        #[arg(long, default_value_t = 0, value_name = "N")]
        look_ahead: usize,
    },
    /// Restore one WAL file (restore_command: fetch %f %p).
    Fetch {
        /// The file name (%f).
        name: String,
        /// Where to write it (%p).
        dest: PathBuf,
        /// Download the next N segments in the background into pg_wal/.cairn-prefetch/.
        #[arg(long, default_value_t = 0, value_name = "N")]
        prefetch: usize,
    },
    /// Background download of the segments after NAME (started by fetch --prefetch).
    #[command(hide = true)]
    Prefetch {
        /// The segment after which to download.
        name: String,
        /// How many segments.
        #[arg(long)]
        count: usize,
        /// The segment size.
        #[arg(long)]
        segment_size: u32,
        /// The spool folder.
        #[arg(long)]
        spool: PathBuf,
    },
    /// List the archived WAL files of the cluster.
    List,
    /// Check that the archived WAL is continuous (every timeline, no missing segment).
    Verify {
        /// Start at this segment instead of the oldest.
        #[arg(long, value_name = "SEGMENT")]
        from: Option<String>,
    },
    /// Write a key file (mode 0600, never overwriting) for --key-file; opens the repository
    /// with the password.
    KeyExport {
        /// The key file to create.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    // Large freed buffers go back to the system (peak RSS of restores: about a third).
    cairn::memory::return_freed_memory();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            let informational =
                matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion)
                    || e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand;
            let _ = e.print();
            if informational {
                return ExitCode::SUCCESS;
            }
            // A misconfigured restore_command must not look like "not found" (end of WAL).
            let fetching = std::env::args().skip(1).any(|a| a == "fetch");
            return ExitCode::from(if fetching { EXIT_FETCH_FAILED } else { 2 });
        }
    };
    let json = cli.global.json;
    let is_fetch = matches!(cli.command, Command::Fetch { .. });
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cairn-wal: cannot start the async runtime: {e}");
            return ExitCode::from(if is_fetch { EXIT_FETCH_FAILED } else { 1 });
        }
    };
    let pinger = verify::pinger(&cli);
    let result = rt.block_on(async move {
        let pinged = pinger.map(cairn::ops::ping::Pinger::begin);
        let result = run(cli).await;
        if let Some(p) = pinged {
            let log = match &result {
                Ok(c) => verify::failure_log(*c, None),
                Err((e, c)) => verify::failure_log(*c, Some(&e.to_string())),
            };
            verify::report_pings(&p.finish(log.as_deref()).await, json);
        }
        result
    });
    // Do not wait for stray blocking tasks (e.g. a timed-out storage call).
    rt.shutdown_timeout(Duration::from_millis(100));
    match result {
        Ok(code) => ExitCode::from(code),
        Err((e, code)) => {
            if json {
                println!("{}", json!({"error": e.to_string(), "exit_code": code}));
            } else {
                eprintln!("cairn-wal: {e}");
            }
            ExitCode::from(code)
        }
    }
}

/// How long transient storage errors are retried: `CAIRN_WAL_RETRY_SECS` (default 30).
fn retry_budget() -> Duration {
    std::env::var("CAIRN_WAL_RETRY_SECS")
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
        .unwrap_or(wal::DEFAULT_RETRY_BUDGET)
}

fn pgdata(g: &Global) -> Result<PathBuf, Error> {
    match &g.pgdata {
        Some(p) => Ok(p.clone()),
        None => std::env::current_dir().map_err(|e| Error::io(".", e)),
    }
}

fn password(g: &Global) -> cairn::Result<Vec<u8>> {
    let Some(source) =
        PasswordSource::from_options(g.password_file.as_deref(), g.password_command.as_deref())
    else {
        return Err(Error::Invalid(
            "no key given: use --key-file (CAIRN_KEY_FILE), or a password through \
             CAIRN_PASSWORD_FILE, CAIRN_PASSWORD_COMMAND or CAIRN_PASSWORD"
                .into(),
        ));
    };
    Ok(source.read()?.to_vec())
}

/// Opens the repository (key file first, else password), retrying transient storage errors.
async fn open(g: &Global, budget: Duration) -> cairn::Result<WalRepo> {
    let location = g.repo.clone().ok_or_else(|| {
        Error::Invalid("no repository given: use --repo or set CAIRN_REPOSITORY".into())
    })?;
    let storage = open_existing_storage(&location)?;
    if let Some(kf) = &g.key_file {
        return wal::with_retry(budget, "open", || {
            wal::open_with_key_file(storage.clone(), kf)
        })
        .await;
    }
    let pw = password(g)?;
    let repo = wal::with_retry(budget, "open", || Repository::open(storage.clone(), &pw)).await?;
    Ok(WalRepo::from(&repo))
}

fn system_id(g: &Global) -> cairn::Result<u64> {
    match &g.system_id {
        Some(s) => wal::parse_system_id(s),
        None => wal::system_id_from_pgdata(&pgdata(g)?),
    }
}

/// The system id for list/verify: given, from pg_control, or the only cluster in the repository.
async fn system_id_for_listing(g: &Global, repo: &WalRepo) -> cairn::Result<u64> {
    if g.system_id.is_some() || g.pgdata.is_some() {
        return system_id(g);
    }
    if let Ok(id) = system_id(g) {
        return Ok(id);
    }
    match wal::list_systems(repo).await?.as_slice() {
        [one] => Ok(*one),
        [] => Err(Error::NotFound {
            object: "wal/ (no WAL archived in this repository)".into(),
        }),
        many => Err(Error::Invalid(format!(
            "the repository holds WAL of {} clusters ({}); choose one with --system-id",
            many.len(),
            many.iter()
                .map(|i| format!("{i:016x}"))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

type Outcome = Result<u8, (Error, u8)>;

async fn run(cli: Cli) -> Outcome {
    let g = &cli.global;
    let budget = retry_budget();
    match &cli.command {
        Command::Push { path, look_ahead } => {
            let fail = |e: Error| {
                let code = if matches!(e, Error::Storage { .. }) {
                    EXIT_STORAGE
                } else {
                    EXIT_REFUSED
                };
                (e, code)
            };
            let start = Instant::now();
            let repo = open(g, budget).await.map_err(fail)?;
            let mut opts = PushOptions::default();
            opts.pgdata = Some(pgdata(g).map_err(fail)?);
            opts.system_id = g
                .system_id
                .as_deref()
                .map(wal::parse_system_id)
                .transpose()
                .map_err(fail)?;
            opts.retry_budget = budget;
            let name = path.file_name().and_then(|n| n.to_str()).map(str::to_owned);
            let pg_wal = path
                .parent()
                .map(|p| {
                    if p.as_os_str().is_empty() {
                        Path::new(".")
                    } else {
                        p
                    }
                })
                .unwrap_or(Path::new("."));
            let (outcome, ahead) = tokio::join!(wal::push(&repo, path, &opts), async {
                if *look_ahead == 0 {
                    Vec::new()
                } else {
                    wal::push_ready(&repo, pg_wal, *look_ahead, name.as_deref(), &opts).await
                }
            });
            let outcome = outcome.map_err(fail)?;
            let ms = start.elapsed().as_secs_f64() * 1000.0;
            let word = match outcome {
                PushOutcome::Stored => "stored",
                PushOutcome::AlreadyStoredIdentical => "identical",
            };
            if g.json {
                let ahead: Vec<_> = ahead
                    .iter()
                    .map(|(n, r)| match r {
                        Ok(_) => json!({"name": n, "ok": true}),
                        Err(e) => json!({"name": n, "ok": false, "error": e.to_string()}),
                    })
                    .collect();
                println!(
                    "{}",
                    json!({"name": name, "outcome": word, "ms": ms, "look_ahead": ahead})
                );
            } else if g.verbose {
                eprintln!(
                    "cairn-wal: {} {word} in {ms:.0} ms ({} pushed ahead)",
                    path.display(),
                    ahead.iter().filter(|(_, r)| r.is_ok()).count()
                );
            }
            Ok(0)
        }
        Command::Fetch {
            name,
            dest,
            prefetch,
        } => {
            let fail = |e: Error| (e, EXIT_FETCH_FAILED);
            let repo = open(g, budget).await.map_err(fail)?;
            let sysid = system_id(g).map_err(fail)?;
            let pgdata = pgdata(g).map_err(fail)?;
            let mut opts = FetchOptions::default();
            opts.retry_budget = budget;
            // The spool lives in pg_wal/; without one (fetch run by hand elsewhere), none.
            if pgdata.join("pg_wal").is_dir() {
                opts.spool_dir = Some(wal::default_spool_dir(&pgdata));
            }
            let outcome = wal::fetch(&repo, sysid, name, dest, &opts)
                .await
                .map_err(fail)?;
            let found = outcome == FetchOutcome::Found;
            if g.json {
                println!(
                    "{}",
                    json!({"name": name, "outcome": if found { "found" } else { "not_found" }})
                );
            } else if g.verbose {
                eprintln!(
                    "cairn-wal: {name} {}",
                    if found { "restored" } else { "not found" }
                );
            }
            if !found {
                return Ok(EXIT_NOT_FOUND);
            }
            if let (true, Some(spool)) = (*prefetch > 0, &opts.spool_dir) {
                // Best effort, in a detached process so that PostgreSQL gets its answer now.
                if let Err(e) = spawn_prefetch(g, name, dest, *prefetch, spool) {
                    if g.verbose {
                        eprintln!("cairn-wal: prefetch not started: {e}");
                    }
                }
            }
            Ok(0)
        }
        Command::Prefetch {
            name,
            count,
            segment_size,
            spool,
        } => {
            // Detach from PostgreSQL's process group and session.
            let _ = nix::unistd::setsid();
            let fail = |e: Error| (e, 1);
            std::fs::create_dir_all(spool).map_err(|e| fail(Error::io(spool, e)))?;
            let lock_path = spool.join(".lock");
            let lock_file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)
                .map_err(|e| fail(Error::io(&lock_path, e)))?;
            // One prefetcher at a time; later ones have nothing to add.
            let Ok(_lock) =
                nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusiveNonblock)
            else {
                return Ok(0);
            };
            let after =
                SegmentName::parse(name).map_err(|e| fail(Error::Invalid(e.to_string())))?;
            let repo = open(g, budget).await.map_err(fail)?;
            let sysid = system_id(g).map_err(fail)?;
            wal::prefetch(&repo, sysid, after, *segment_size, *count, spool, budget)
                .await
                .map_err(fail)?;
            Ok(0)
        }
        Command::List => {
            let fail = |e: Error| {
                let c = exit_code(&e);
                (e, c)
            };
            let repo = open(g, budget).await.map_err(fail)?;
            let sysid = system_id_for_listing(g, &repo).await.map_err(fail)?;
            let files = wal::list(&repo, sysid).await.map_err(fail)?;
            if g.json {
                let v: Vec<_> = files
                    .iter()
                    .map(|f| {
                        json!({"name": f.name, "kind": kind(&f.file), "timeline": f.file.timeline(),
                               "stored_size": f.stored_size})
                    })
                    .collect();
                println!(
                    "{}",
                    json!({"system_id": format!("{sysid:016x}"), "files": v})
                );
            } else {
                println!("system identifier {sysid:016x} ({sysid})");
                for f in &files {
                    println!("{:<42} {:>8} {:>12}", f.name, kind(&f.file), f.stored_size);
                }
                println!("{} files", files.len());
            }
            Ok(0)
        }
        Command::Verify { from } => {
            let fail = |e: Error| {
                let c = exit_code(&e);
                (e, c)
            };
            let repo = open(g, budget).await.map_err(fail)?;
            let sysid = system_id_for_listing(g, &repo).await.map_err(fail)?;
            let from = from
                .as_deref()
                .map(SegmentName::parse)
                .transpose()
                .map_err(|e| fail(Error::Invalid(format!("--from: {e}"))))?;
            let report = wal::verify(&repo, sysid, from).await.map_err(fail)?;
            verify::print_verify(sysid, &report, g.json);
            Ok(if report.is_ok() { 0 } else { EXIT_GAPS })
        }
        Command::KeyExport { file } => {
            let fail = |e: Error| {
                let c = exit_code(&e);
                (e, c)
            };
            let repo = open(g, budget).await.map_err(fail)?;
            wal::export_key_file(&repo, file).map_err(fail)?;
            if g.json {
                println!("{}", json!({"key_file": file.display().to_string()}));
            } else {
                println!(
                    "wrote {} (mode 0600): it holds the unwrapped master key, keep it as safe as the data",
                    file.display()
                );
            }
            Ok(0)
        }
    }
}

fn exit_code(e: &Error) -> u8 {
    u8::try_from(e.exit_code()).unwrap_or(1)
}

fn kind(f: &WalFileName) -> &'static str {
    match f {
        WalFileName::Segment(_) => "segment",
        WalFileName::Partial(_) => "partial",
        WalFileName::Backup { .. } => "backup",
        WalFileName::History { .. } => "history",
    }
}

/// Starts `cairn-wal prefetch` as a detached process with no standard streams.
fn spawn_prefetch(
    g: &Global,
    name: &str,
    dest: &Path,
    count: usize,
    spool: &Path,
) -> Result<(), Error> {
    if !matches!(WalFileName::parse(name), Ok(WalFileName::Segment(_))) {
        return Ok(());
    }
    let mut head = [0u8; cairn::format::wal::LONG_PAGE_HEADER_LEN];
    {
        use std::io::Read;
        let mut f = std::fs::File::open(dest).map_err(|e| Error::io(dest, e))?;
        f.read_exact(&mut head).map_err(|e| Error::io(dest, e))?;
    }
    let seg_size = SegmentHeader::parse(&head)
        .map_err(|e| Error::Invalid(e.to_string()))?
        .seg_size;
    let exe = std::env::current_exe().map_err(|e| Error::io("current_exe", e))?;
    let mut cmd = std::process::Command::new(exe);
    if let Some(r) = &g.repo {
        cmd.arg("--repo").arg(r);
    }
    if let Some(k) = &g.key_file {
        cmd.arg("--key-file").arg(k);
    }
    if let Some(p) = &g.password_file {
        cmd.arg("--password-file").arg(p);
    }
    if let Some(p) = &g.password_command {
        cmd.arg("--password-command").arg(p);
    }
    cmd.arg("--system-id")
        .arg(format!("{:016x}", system_id(g)?))
        .arg("prefetch")
        .arg(name)
        .arg("--count")
        .arg(count.to_string())
        .arg("--segment-size")
        .arg(seg_size.to_string())
        .arg("--spool")
        .arg(spool)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // Not waited for: once this process exits, init reaps it.
    cmd.spawn()
        .map_err(|e| Error::io("cairn-wal prefetch", e))?;
    Ok(())
}
