//! `key ...`: manage the repository's key slots. A slot that cannot be used is listed as damaged
//! (exit code 5) and can be removed.

use cairn::{Error, Repository};
use serde_json::json;

use crate::{Global, KeyCommand, kdf, listing, new_password};

pub(crate) async fn key_command(
    repo: &mut Repository,
    cmd: &KeyCommand,
    g: &Global,
) -> cairn::Result<u8> {
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
                        let mut v = json!({"id": k.id.to_hex(), "label": k.label, "created": k.created, "current": k.current,
                           "damaged": k.damaged.is_some()});
                        if let Some(p) = k.kdf {
                            v["argon2id"] = json!({"m_cost_kib": p.m_cost_kib, "t_cost": p.t_cost, "p_cost": p.p_cost});
                        }
                        if let Some(d) = &k.damaged {
                            v["kind"] = json!(d.kind);
                            v["error"] = json!(d.error);
                        }
                        v
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(v));
            } else {
                println!("  {:<10} {:<12} label", "id", "created");
                for k in &keys {
                    let mark = if k.current { "*" } else { " " };
                    match &k.damaged {
                        None => {
                            println!("{mark} {:<10} {:<12} {}", k.id.short(), k.created, k.label)
                        }
                        Some(d) => println!(
                            "{mark} {:<10} {:<12} {}: {}",
                            k.id.short(),
                            "-",
                            if d.kind == cairn::DamageKind::Corrupt {
                                "DAMAGED"
                            } else {
                                "UNUSABLE (unknown to this build)"
                            },
                            d.error
                        ),
                    }
                }
                for k in keys.iter().filter(|k| k.damaged.is_some()) {
                    eprintln!(
                        "warning: key {} cannot be used; `key remove {}` removes it",
                        k.id.short(),
                        k.id.short()
                    );
                }
            }
            // Damage makes the listing exit 5 (slots of an unknown type are skipped by every
            // reader, as SPEC §3.4 says: not an error).
            let damaged: Vec<_> = keys.iter().filter_map(|k| k.damaged.clone()).collect();
            return Ok(listing::exit_code(&damaged, false));
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
        KeyCommand::Export { path } => {
            repo.export_key_file(path)?;
            if g.json {
                println!("{}", json!({"key_file": path.display().to_string()}));
            } else {
                println!(
                    "wrote key file {} (mode 0600): it opens the repository without a password; keep it as safe as the data",
                    path.display()
                );
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
    Ok(0)
}
