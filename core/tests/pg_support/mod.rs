//! A throw-away PostgreSQL cluster for integration tests (`mod pg_support;` in a test file).
//!
//! * Binaries come from `pg_config --bindir` (or the newest `/usr/lib/postgresql/*/bin`).
//! * Everything lives in one temporary folder owned by the `postgres` user when the tests run
//!   as root (`initdb` and `postgres` refuse to run as root; they are run through
//!   `runuser -u postgres --`), mode 0755 so that other users can reach what is inside.
//! * The server listens on 127.0.0.1 on a free port and on a Unix socket in that folder.
//! * WAL archiving is on (`wal_level = replica`, `archive_mode = on`) with the
//!   `archive_command` the test gives; `fsync` stays on, `synchronous_commit` is off.
//! * Dropping a cluster stops its server.
//!
//! When PostgreSQL is not installed, [`pg_bindir`] returns `None` and tests skip, unless `CI`
//! is set, where a missing PostgreSQL is a failure.
#![allow(dead_code, unreachable_pub)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The user that owns clusters when the tests run as root.
pub const PG_USER: &str = "postgres";

/// True when this process runs as root (and so must run PostgreSQL as another user).
pub fn running_as_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The folder holding `initdb`, `pg_ctl`, `postgres`, `psql`, `pgbench`, `pg_basebackup`.
pub fn pg_bindir() -> Option<PathBuf> {
    let from_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let candidates = from_config.into_iter().chain({
        let mut v: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.path().join("bin"))
                    .collect()
            })
            .unwrap_or_default();
        v.sort_by_key(|p| {
            p.parent()
                .and_then(|v| v.file_name())
                .and_then(|v| v.to_str())
                .and_then(|v| v.parse::<u32>().ok())
                .unwrap_or(0)
        });
        v.into_iter().rev()
    });
    let found = candidates
        .into_iter()
        .find(|b| b.join("initdb").is_file() && b.join("postgres").is_file());
    if found.is_none() && std::env::var_os("CI").is_some() {
        panic!("PostgreSQL binaries not found (pg_config --bindir); CI must install postgresql-15");
    }
    if found.is_none() {
        eprintln!("PostgreSQL not installed: skipping");
    }
    found
}

/// A free TCP port on 127.0.0.1 (free when asked; a race with other processes is unlikely).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// Changes the owner of `path` (recursively) to the PostgreSQL user, when running as root.
pub fn chown_to_pg(path: &Path) {
    if !running_as_root() {
        return;
    }
    let st = Command::new("chown")
        .arg("-R")
        .arg(format!("{PG_USER}:"))
        .arg(path)
        .status()
        .expect("run chown");
    assert!(st.success(), "chown -R {PG_USER} {}", path.display());
}

/// A command run as the PostgreSQL user (through `runuser` when running as root).
pub fn pg_command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    if running_as_root() {
        let mut c = Command::new("runuser");
        c.arg("-u").arg(PG_USER).arg("--").arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// Runs a command, panicking with its output when it fails.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.stdin(Stdio::null()).output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command and returns its output whatever its status.
pub fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().expect("spawn")
}

/// A temporary folder owned by the PostgreSQL user, mode 0755, removed on drop.
pub struct PgDir {
    dir: tempfile::TempDir,
}

impl PgDir {
    /// Creates one under the system temporary folder.
    pub fn new(prefix: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .expect("temp dir");
        set_mode(dir.path(), 0o755);
        chown_to_pg(dir.path());
        Self { dir }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Makes `src` (e.g. a binary under target/, which the PostgreSQL user may not reach)
    /// available inside this folder with mode 0755; returns the new path.
    pub fn install_binary(&self, src: &Path) -> PathBuf {
        let bin = self.path().join("bin");
        std::fs::create_dir_all(&bin).expect("mkdir bin");
        set_mode(&bin, 0o755);
        let dest = bin.join(src.file_name().expect("binary name"));
        let _ = std::fs::remove_file(&dest);
        if std::fs::hard_link(src, &dest).is_err() {
            std::fs::copy(src, &dest).expect("copy binary");
        }
        set_mode(&dest, 0o755);
        dest
    }
}

/// Sets a path's permission bits.
pub fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Options of a new cluster.
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// `archive_command`; `None` leaves archiving off.
    pub archive_command: Option<String>,
    /// Extra `postgresql.conf` lines.
    pub extra_conf: Vec<String>,
    /// `initdb --wal-segsize` in MiB (default 16).
    pub wal_segsize_mb: Option<u32>,
}

/// One PostgreSQL cluster: data directory, port, socket folder, log.
pub struct PgCluster {
    pub bindir: PathBuf,
    /// Folder for the socket and the log (owned by the PostgreSQL user).
    pub dir: PathBuf,
    pub pgdata: PathBuf,
    pub port: u16,
    pub log: PathBuf,
    running: bool,
}

impl PgCluster {
    /// Runs `initdb` in `dir/<name>` and writes the configuration; does not start the server.
    pub fn init(bindir: &Path, dir: &Path, name: &str, opts: &ClusterOptions) -> Self {
        let pgdata = dir.join(name);
        let mut initdb = pg_command(bindir.join("initdb"));
        initdb
            .arg("-D")
            .arg(&pgdata)
            .args([
                "--auth=trust",
                "-U",
                PG_USER,
                "-E",
                "UTF8",
                "--no-instructions",
            ])
            .current_dir(dir);
        if let Some(mb) = opts.wal_segsize_mb {
            initdb.arg(format!("--wal-segsize={mb}"));
        }
        run_ok(&mut initdb);
        let c = Self::at(bindir, dir, name);
        c.configure(opts);
        c
    }

    /// A cluster whose data directory `dir/<name>` already exists (a base backup).
    pub fn at(bindir: &Path, dir: &Path, name: &str) -> Self {
        Self {
            bindir: bindir.to_owned(),
            dir: dir.to_owned(),
            pgdata: dir.join(name),
            port: free_port(),
            log: dir.join(format!("{name}.log")),
            running: false,
        }
    }

    /// Appends this cluster's settings to `postgresql.conf` (later lines win).
    pub fn configure(&self, opts: &ClusterOptions) {
        let mut conf = vec![
            "listen_addresses = '127.0.0.1'".to_owned(),
            format!("port = {}", self.port),
            format!("unix_socket_directories = '{}'", self.dir.display()),
            "wal_level = replica".into(),
            "synchronous_commit = off".into(),
            "max_wal_senders = 4".into(),
            "shared_buffers = 32MB".into(),
            "log_min_messages = info".into(),
        ];
        if let Some(cmd) = &opts.archive_command {
            conf.push("archive_mode = on".into());
            conf.push(format!("archive_command = '{}'", cmd.replace('\'', "''")));
        }
        conf.extend(opts.extra_conf.iter().cloned());
        self.append_conf(&conf.join("\n"));
    }

    /// Appends lines to `postgresql.conf`.
    pub fn append_conf(&self, text: &str) {
        use std::io::Write;
        let path = self.pgdata.join("postgresql.conf");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open postgresql.conf");
        writeln!(f, "\n# cairn test harness\n{text}").expect("write postgresql.conf");
    }

    /// Writes a file in the data directory, owned by the PostgreSQL user.
    pub fn write_file(&self, rel: &str, content: &str) {
        let p = self.pgdata.join(rel);
        std::fs::write(&p, content).expect("write file");
        chown_to_pg(&p);
    }

    fn pg_ctl(&self) -> Command {
        let mut c = pg_command(self.bindir.join("pg_ctl"));
        c.arg("-D").arg(&self.pgdata).current_dir(&self.dir);
        c
    }

    /// Starts the server and waits until it accepts connections.
    pub fn start(&mut self) {
        run_ok(
            self.pg_ctl()
                .arg("-l")
                .arg(&self.log)
                .args(["-w", "-t", "120", "start"]),
        );
        self.running = true;
    }

    /// Starts the server and waits; returns false (and leaves it stopped) when it does not
    /// come up, e.g. because recovery failed.
    pub fn try_start(&mut self) -> bool {
        let ok = run(self
            .pg_ctl()
            .arg("-l")
            .arg(&self.log)
            .args(["-w", "-t", "120", "start"]))
        .status
        .success();
        self.running = ok;
        ok
    }

    /// Stops the server (fast shutdown).
    pub fn stop(&mut self) {
        if self.running {
            let _ = run(self.pg_ctl().args(["-w", "-t", "60", "-m", "fast", "stop"]));
            self.running = false;
        }
    }

    /// `pg_ctl promote` and wait.
    pub fn promote(&self) {
        run_ok(self.pg_ctl().args(["-w", "-t", "120", "promote"]));
    }

    fn client(&self, program: &str) -> Command {
        let mut c = Command::new(self.bindir.join(program));
        c.arg("-h")
            .arg(&self.dir)
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-U")
            .arg(PG_USER);
        c
    }

    /// Runs SQL with psql; returns the unaligned, tuples-only output, trimmed.
    pub fn psql(&self, sql: &str) -> String {
        run_ok(
            self.client("psql")
                .args([
                    "-X",
                    "-A",
                    "-t",
                    "-q",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-d",
                    "postgres",
                    "-c",
                ])
                .arg(sql),
        )
        .trim()
        .to_owned()
    }

    /// Runs pgbench with these arguments against database `postgres`.
    pub fn pgbench(&self, args: &[&str]) -> String {
        run_ok(self.client("pgbench").args(args).arg("postgres"))
    }

    /// `pg_switch_wal()`; returns the name of the segment it completed.
    pub fn switch_wal(&self) -> String {
        self.psql("SELECT pg_walfile_name(pg_switch_wal())")
    }

    /// Waits until `pg_stat_archiver` reports `name` (or a later segment) archived.
    pub fn wait_archived(&self, name: &str, timeout: Duration) {
        let start = Instant::now();
        loop {
            let row = self.psql(
                "SELECT coalesce(last_archived_wal, '') || '|' || failed_count || '|' || coalesce(last_failed_wal, '') FROM pg_stat_archiver",
            );
            let last = row.split('|').next().unwrap_or_default();
            if last.len() >= 24 && last[..24] >= *name {
                return;
            }
            assert!(
                start.elapsed() < timeout,
                "{name} not archived after {timeout:?} (pg_stat_archiver: {row}); log:\n{}",
                self.log_tail(60)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the server is out of recovery.
    pub fn wait_promoted(&self, timeout: Duration) {
        let start = Instant::now();
        loop {
            if run(self.client("psql").args([
                "-X",
                "-A",
                "-t",
                "-d",
                "postgres",
                "-c",
                "SELECT pg_is_in_recovery()",
            ]))
            .stdout
            .starts_with(b"f")
            {
                return;
            }
            assert!(
                start.elapsed() < timeout,
                "still in recovery after {timeout:?}; log:\n{}",
                self.log_tail(60)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// A base backup of this cluster into `dir/<name>` (`-X none`: the WAL comes from the
    /// archive), with the files owned by the PostgreSQL user.
    pub fn base_backup(&self, dir: &Path, name: &str) -> PgCluster {
        let target = dir.join(name);
        run_ok(
            pg_command(self.bindir.join("pg_basebackup"))
                .arg("-h")
                .arg(&self.dir)
                .arg("-p")
                .arg(self.port.to_string())
                .args(["-U", PG_USER, "-X", "none", "-c", "fast", "-D"])
                .arg(&target)
                .current_dir(dir),
        );
        PgCluster::at(&self.bindir, dir, name)
    }

    /// The last `n` lines of the server log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// The cluster's system identifier, from `pg_control`.
    pub fn system_id(&self) -> u64 {
        let b = std::fs::read(self.pgdata.join("global/pg_control")).expect("read pg_control");
        u64::from_le_bytes(b[..8].try_into().expect("8 bytes"))
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.running {
            let _ = run(self
                .pg_ctl()
                .args(["-w", "-t", "30", "-m", "immediate", "stop"]));
        }
    }
}

/// Builds `cairn-wal` (same profile and target folder as this test) and returns its path.
pub fn cairn_wal_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("current_exe");
        // <target>/<profile>/deps/pg_wal-<hash>
        let profile_dir = exe.parent().and_then(Path::parent).expect("profile dir");
        let target_dir = profile_dir.parent().expect("target dir");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args([
            "build",
            "-q",
            "-p",
            "cairn-wal",
            "--bin",
            "cairn-wal",
            "--target-dir",
        ])
        .arg(target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        run_ok(&mut cmd);
        profile_dir.join("cairn-wal")
    })
    .clone()
}

/// A Cairn repository for WAL archiving tests: initialised (cheap key derivation) in
/// `dir/repo` with a key file `dir/key` that the PostgreSQL user can use, and the `cairn-wal`
/// binary installed where that user can run it.
pub struct ArchiveRepo {
    pub rt: tokio::runtime::Runtime,
    pub repo: cairn::Repository,
    pub repo_dir: PathBuf,
    pub key: PathBuf,
    pub bin: PathBuf,
}

impl ArchiveRepo {
    pub fn new(root: &PgDir, password: &str) -> Self {
        let dir = root.path();
        let bin = root.install_binary(&cairn_wal_binary());
        let repo_dir = dir.join("repo");
        let key = dir.join("key");
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let repo = rt.block_on(async {
            let mut o = cairn::InitOptions::default();
            o.kdf = cairn::format::KdfParams::INSECURE_FOR_TESTS;
            cairn::Repository::init(
                cairn::open_storage(repo_dir.to_str().expect("path")).expect("storage"),
                password.as_bytes(),
                o,
            )
            .await
            .expect("init")
        });
        repo.export_key_file(&key).expect("key file");
        chown_to_pg(&repo_dir);
        chown_to_pg(&key);
        Self {
            rt,
            repo,
            repo_dir,
            key,
            bin,
        }
    }

    /// `cairn-wal` with this repository and key file, then `verb` (e.g. `push %p`).
    pub fn wal_cmd(&self, verb: &str) -> String {
        format!(
            "{} --repo {} --key-file {} {verb}",
            self.bin.display(),
            self.repo_dir.display(),
            self.key.display()
        )
    }
}
