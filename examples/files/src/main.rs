//! `cairn-files`: back up and restore file trees with Cairn.
//!
//! A thin command line over the `cairn` crate: it parses arguments, calls the library, prints.
//!
//! Exit codes: 0 success, 1 failure, 2 usage error, 3 not found / not a repository, 4 wrong
//! password, 5 corruption found (or a restore that could not restore everything), 6 storage
//! failure, 7 already exists, 8 backup written but some files could not be read.

mod cli;
mod commands;
mod drill;
mod keys;
mod listing;
mod ping;
mod progress;
mod text;

use std::process::ExitCode;

use cairn::format::KdfParams;
use cairn::{Error, PasswordSource, Repository, open_existing_storage, open_storage};
use clap::Parser;

pub(crate) use cli::{
    BackupArgs, Cli, Command, EXIT_CORRUPTION, EXIT_PARTIAL_BACKUP, Global, KeyCommand,
    RepairCommand, StatsModeArg,
};
use serde_json::json;

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
