//! Key slot management: unlock, add, list, remove, change password.

use cairn_format::{FormatError, KdfParams, KeyId, KeySlot, MasterKey};
use futures::future::try_join_all;
use rand_core::OsRng;

use super::{KEYS, Repository, now, put_slot};
use crate::error::{Error, Result};
use crate::storage::Storage;

/// One key slot, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// Its id (object name in `keys/`).
    pub id: KeyId,
    /// Its label.
    pub label: String,
    /// Creation time, unix seconds.
    pub created: i64,
    /// Its Argon2id parameters.
    pub kdf: KdfParams,
    /// True for the slot this handle was opened with.
    pub current: bool,
}

async fn read_slots(storage: &dyn Storage) -> Result<Vec<(String, Result<KeySlot, FormatError>)>> {
    let listed = storage.list(KEYS).await?;
    let bodies = try_join_all(listed.iter().map(|o| storage.get(&o.name))).await?;
    Ok(listed
        .into_iter()
        .zip(bodies)
        .map(|(o, b)| {
            let slot = KeySlot::decode(&b);
            (o.name, slot)
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
    /// Lists the key slots.
    pub async fn list_keys(&self) -> Result<Vec<KeyInfo>> {
        let mut out = Vec::new();
        for (name, slot) in read_slots(self.storage.as_ref()).await? {
            let slot = slot.map_err(|e| Error::format(name.clone(), e))?;
            let id = key_id_of(&name).unwrap_or_default();
            out.push(KeyInfo {
                id,
                label: slot.label.clone(),
                created: slot.created,
                kdf: slot.kdf_params(),
                current: id == self.key_id,
            });
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
        if !keys.iter().any(|k| k.id == id) {
            return Err(Error::NotFound {
                object: format!("{KEYS}/{id}"),
            });
        }
        if keys.len() == 1 {
            return Err(Error::Invalid(format!(
                "key {} is the repository's last key: add another before removing it",
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
