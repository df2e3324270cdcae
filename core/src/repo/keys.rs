//! Key slot management: unlock, add, list, remove, change password.

use cairn_format::{FormatError, KdfParams, KeyId, KeySlot, MasterKey};
use futures::future::try_join_all;
use rand_core::OsRng;

use super::{KEYS, Repository, now, put_slot};
use crate::error::{Error, Result};
use crate::repo::{DamageKind, Damaged};
use crate::storage::Storage;

/// One key slot, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyInfo {
    /// Its id (object name in `keys/`).
    pub id: KeyId,
    /// Its label (empty for a slot that cannot be read).
    pub label: String,
    /// Creation time, unix seconds (0 for a slot that cannot be read).
    pub created: i64,
    /// Its Argon2id parameters (`None` for a slot that cannot be read).
    pub kdf: Option<KdfParams>,
    /// True for the slot this handle was opened with.
    pub current: bool,
    /// Why the slot cannot be used, when it cannot: damaged (its checksum or its name does not
    /// match its bytes) or of a type this build does not know. Such a slot can be removed.
    pub damaged: Option<Damaged>,
}

async fn read_slot_bytes(storage: &dyn Storage) -> Result<Vec<(String, bytes::Bytes)>> {
    let listed = storage.list(KEYS).await?;
    let bodies = try_join_all(listed.iter().map(|o| storage.get(&o.name))).await?;
    Ok(listed.into_iter().map(|o| o.name).zip(bodies).collect())
}

async fn read_slots(storage: &dyn Storage) -> Result<Vec<(String, Result<KeySlot, FormatError>)>> {
    Ok(read_slot_bytes(storage)
        .await?
        .into_iter()
        .map(|(name, b)| {
            let slot = KeySlot::decode(&b);
            (name, slot)
        })
        .collect())
}

fn key_id_of(name: &str) -> Option<KeyId> {
    name.rsplit('/')
        .next()
        .and_then(|h| KeyId::from_hex(h).ok())
}

/// Tries every slot; returns the key and the id of the slot that opened.
pub(super) async fn unlock(storage: &dyn Storage, password: &[u8]) -> Result<(MasterKey, KeyId)> {
    let slots = read_slots(storage).await?;
    let mut tried = 0;
    let mut corrupt = None;
    // Argon2id's working memory, mapped once and reused by every slot tried.
    let mut memory: Option<crate::memory::KdfMemory> = None;
    for (name, slot) in &slots {
        let slot = match slot {
            Ok(s) => s,
            Err(FormatError::UnsupportedSlotType { .. }) => continue,
            Err(e) => {
                corrupt.get_or_insert_with(|| Error::format(name.clone(), e.clone()));
                continue;
            }
        };
        tried += 1;
        let needed = slot.kdf_params().memory_blocks().unwrap_or(0);
        if needed > 0 && memory.as_ref().is_none_or(|m| m.len() < needed) {
            drop(memory.take()); // unmapped before the larger one is mapped
            memory = crate::memory::KdfMemory::new(needed);
        }
        let opened = match memory.as_mut() {
            Some(m) if needed > 0 && m.len() >= needed => slot.unwrap_in(password, m.blocks()),
            _ => slot.unwrap(password),
        };
        match opened {
            Ok(key) => {
                let id = key_id_of(name).unwrap_or_default();
                return Ok((key, id));
            }
            Err(FormatError::WrongPassphrase) => {}
            Err(e) => return Err(Error::format(name.clone(), e)),
        }
    }
    match (tried, corrupt) {
        // Nothing could be tried and something was damaged: say so rather than "wrong password".
        (0, Some(e)) => Err(e),
        (0, None) => Err(Error::NotFound {
            object: format!("{KEYS}/ (no key slots)"),
        }),
        (slots, _) => Err(Error::WrongPassword { slots }),
    }
}

impl Repository {
    /// Lists every key slot, oldest first. A slot that cannot be used is listed too, with
    /// [`KeyInfo::damaged`] saying why: one whose checksum fails or that does not parse, one
    /// whose bytes do not hash (keyed with this repository's key) to its name, one of an unknown
    /// type. A slot that only does not open with this handle's password is not damaged.
    pub async fn list_keys(&self) -> Result<Vec<KeyInfo>> {
        let id_key = self.key.id_key();
        let mut out = Vec::new();
        for (name, bytes) in read_slot_bytes(self.storage.as_ref()).await? {
            let Some(id) = key_id_of(&name) else {
                continue; // not a key slot name: ignored, as every reader does
            };
            let actual = KeyId::from_bytes(id_key.hash(&bytes));
            let decoded = KeySlot::decode(&bytes).and_then(|slot| {
                if actual == id {
                    Ok(slot)
                } else {
                    Err(FormatError::IdMismatch {
                        what: "key slot",
                        expected: id.to_hex(),
                        actual: actual.to_hex(),
                    })
                }
            });
            let info = match decoded {
                Ok(slot) => KeyInfo {
                    id,
                    label: slot.label.clone(),
                    created: slot.created,
                    kdf: Some(slot.kdf_params()),
                    current: id == self.key_id,
                    damaged: None,
                },
                Err(e) => {
                    // A type or version this build does not know is not damage (SPEC §3.4).
                    let kind = match e {
                        FormatError::UnsupportedSlotType { .. }
                        | FormatError::UnsupportedVersion { .. } => DamageKind::Unsupported,
                        _ => DamageKind::Corrupt,
                    };
                    KeyInfo {
                        id,
                        label: String::new(),
                        created: 0,
                        kdf: None,
                        current: id == self.key_id,
                        damaged: Some(Damaged {
                            error: format!("{name}: {e}"),
                            object: name,
                            kind,
                        }),
                    }
                }
            };
            out.push(info);
        }
        out.sort_by_key(|k| (k.created, k.id));
        Ok(out)
    }

    /// Adds a key slot for another password; returns its id.
    pub async fn add_key(&self, password: &[u8], label: &str, kdf: KdfParams) -> Result<KeyId> {
        let slot =
            KeySlot::wrap_passphrase(&self.key, password, kdf, label, now().secs, &mut OsRng)
                .map_err(|e| Error::Invalid(e.to_string()))?;
        put_slot(self.storage.as_ref(), &self.key, &slot).await
    }

    /// Removes a key slot. Refuses to remove the slot this handle was opened with (use
    /// [`Repository::change_password`]) and the last slot.
    pub async fn remove_key(&self, id: KeyId) -> Result<()> {
        let keys = self.list_keys().await?;
        let Some(key) = keys.iter().find(|k| k.id == id) else {
            return Err(Error::NotFound {
                object: format!("{KEYS}/{id}"),
            });
        };
        // A slot that cannot be used can always go; a usable one only if another remains.
        let usable = keys.iter().filter(|k| k.damaged.is_none()).count();
        if key.damaged.is_none() && usable == 1 {
            return Err(Error::Invalid(format!(
                "key {} is the repository's last key that can be used: add another before removing it",
                id.short()
            )));
        }
        if id == self.key_id {
            return Err(Error::Invalid(format!(
                "key {} is the one in use; open the repository with another key to remove it, or change its password",
                id.short()
            )));
        }
        self.storage.delete(&format!("{KEYS}/{id}")).await
    }

    /// Replaces the password of the slot in use: writes a new slot, then deletes the old one.
    /// Data is not touched.
    pub async fn change_password(&mut self, new_password: &[u8], kdf: KdfParams) -> Result<KeyId> {
        if self.key_id == KeyId::default() {
            return Err(Error::Invalid(
                "this handle was opened without a password (key file): open the repository with the password whose key should change".into(),
            ));
        }
        let label = self
            .list_keys()
            .await?
            .into_iter()
            .find(|k| k.current)
            .map(|k| k.label)
            .unwrap_or_default();
        let new_id = self.add_key(new_password, &label, kdf).await?;
        let old = std::mem::replace(&mut self.key_id, new_id);
        self.storage.delete(&format!("{KEYS}/{old}")).await?;
        Ok(new_id)
    }
}
