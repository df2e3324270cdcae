//! `cairn-files`: back up and restore file trees with Cairn.
//!
//! A thin command line over the `cairn` crate: it parses arguments, calls the library, prints.
//!
//! Exit codes: 0 success, 1 failure, 2 usage error, 3 not found / not a repository, 4 wrong
//! password, 5 corruption found, 6 storage failure, 7 already exists.

use std::process::ExitCode;

use cairn::format::KdfParams;
use cairn::{Error, InitOptions, PasswordSource, Repository, open_storage};
use clap::{Args, Parser, Subcommand};
use serde_json::json;

#[derive(Parser, Debug)]
#[command(name = "cairn-files", version, about = "Encrypted, deduplicated backups of file trees", after_help = EXIT_CODES)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

const EXIT_CODES: &str = "Exit codes: 0 ok, 1 failure, 2 usage, 3 not found / not a repository, \
4 wrong password, 5 corruption, 6 storage failure, 7 already exists.";

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
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
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
        /// zstd level for new data, 0 to store uncompressed.
        #[arg(long, default_value_t = 3)]
        compression: i32,
    },
    /// Show the repository config.
    Config,
    /// Manage the repository's keys (passwords).
    #[command(subcommand)]
    Key(KeyCommand),
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
    /// Change the password of the key in use.
    Passwd {
        /// Read the new password from this file (otherwise prompt).
        #[arg(long)]
        new_password_file: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.global.json;
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cairn-files: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
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
    let source = if let Some(f) = &g.password_file {
        PasswordSource::File(f.clone())
    } else if let Some(c) = &g.password_command {
        PasswordSource::Command(c.clone())
    } else if let Ok(p) = std::env::var("CAIRN_PASSWORD") {
        PasswordSource::Literal(p)
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
    k
}

fn default_label() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "user".into());
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "host".into());
    format!("{user}@{host}")
}

async fn run(cli: Cli) -> cairn::Result<()> {
    let g = &cli.global;
    let location = g.repo.clone().ok_or_else(|| {
        Error::Invalid("no repository given: use --repo or set CAIRN_REPOSITORY".into())
    })?;
    let storage = open_storage(&location)?;
    match &cli.command {
        Command::Init { label, compression } => {
            let pw = password(g)?;
            let mut opts = InitOptions::default();
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
        }
        Command::Config => {
            let repo = Repository::open(storage, &password(g)?).await?;
            if g.json {
                println!("{}", config_json(&repo));
            } else {
                print_config(&repo);
            }
        }
        Command::Key(cmd) => {
            let mut repo = Repository::open(storage, &password(g)?).await?;
            key_command(&mut repo, cmd, g).await?;
        }
    }
    Ok(())
}

async fn key_command(repo: &mut Repository, cmd: &KeyCommand, g: &Global) -> cairn::Result<()> {
    match cmd {
        KeyCommand::Add {
            new_password_file,
            label,
        } => {
            let id = repo
                .add_key(&new_password(new_password_file)?, label, kdf(g))
                .await?;
            if g.json {
                println!("{}", json!({"added": id.to_hex()}));
            } else {
                println!("added key {}", id.short());
            }
        }
        KeyCommand::List => {
            let keys = repo.list_keys().await?;
            if g.json {
                let v: Vec<_> = keys
                    .iter()
                    .map(|k| {
                        json!({"id": k.id.to_hex(), "label": k.label, "created": k.created, "current": k.current,
                           "argon2id": {"m_cost_kib": k.kdf.m_cost_kib, "t_cost": k.kdf.t_cost, "p_cost": k.kdf.p_cost}})
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(v));
            } else {
                println!("  {:<10} {:<12} label", "id", "created");
                for k in keys {
                    let mark = if k.current { "*" } else { " " };
                    println!("{mark} {:<10} {:<12} {}", k.id.short(), k.created, k.label);
                }
            }
        }
        KeyCommand::Remove { id } => {
            let keys = repo.list_keys().await?;
            let want = id.to_ascii_lowercase();
            let matches: Vec<_> = keys
                .iter()
                .filter(|k| k.id.to_hex().starts_with(&want))
                .collect();
            let key = match matches.as_slice() {
                [one] => one.id,
                [] => {
                    return Err(Error::NotFound {
                        object: format!("keys/{id}"),
                    });
                }
                _ => return Err(Error::Invalid(format!("key id prefix {id:?} is ambiguous"))),
            };
            repo.remove_key(key).await?;
            if g.json {
                println!("{}", json!({"removed": key.to_hex()}));
            } else {
                println!("removed key {}", key.short());
            }
        }
        KeyCommand::Passwd { new_password_file } => {
            let id = repo
                .change_password(&new_password(new_password_file)?, kdf(g))
                .await?;
            if g.json {
                println!("{}", json!({"key": id.to_hex()}));
            } else {
                println!("password changed; the key is now {}", id.short());
            }
        }
    }
    Ok(())
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
