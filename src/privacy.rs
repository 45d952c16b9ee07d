//! Pseudonymised ids: with `[privacy] pseudonymize`, a user (item) id is
//! replaced by a keyed hash of it where records are read — in events,
//! dimension tables and the ids of API requests — so nothing downstream
//! (outputs, dead letters, checkpoints, topics, logs) ever holds the raw id.
//!
//! The pseudonym is HMAC-SHA-256 under a secret key of the kind and the
//! normalised id, cut to 128 bits and written in hex: the same key gives
//! the same pseudonym in every run and process, and without the key a
//! pseudonym cannot be computed from a guessed id (a plain hash could, for
//! ids as guessable as customer numbers). docs/privacy.md has the threat
//! model.

pub mod stats;

use std::borrow::Cow;
use std::collections::HashSet;
use std::io::Write;
use std::path::Path;

use anyhow::Context;
use persona_dataflows::Id;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::{ConfigError, IdKind, PrivacyConfig};
use crate::ids::{id_of, normalise_id};

/// Where the key is looked for when `[privacy]` names no `key_file`.
pub const DEFAULT_KEY_ENV: &str = "PERSONA_PSEUDONYM_KEY";

/// The shortest key accepted, in bytes: HMAC-SHA-256's own output size.
pub const MIN_KEY_BYTES: usize = 32;

/// Bytes of the HMAC a pseudonym keeps (128 bits: collisions among even a
/// billion ids have odds below 10^-20).
const PSEUDONYM_BYTES: usize = 16;

/// The pseudonymisation of a config: none, or a key and the kinds of id it
/// applies to.
#[derive(Clone, Default)]
pub struct Pseudonyms {
    key: Option<Hmac<Sha256>>,
    users: bool,
    items: bool,
}

impl std::fmt::Debug for Pseudonyms {
    // Never prints the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pseudonyms")
            .field("users", &self.users)
            .field("items", &self.items)
            .finish_non_exhaustive()
    }
}

impl Pseudonyms {
    /// The pseudonyms `[privacy]` asks for, reading the key from its file or
    /// environment variable; a missing or short key is an error naming where
    /// it was looked for.
    pub fn from_config(config: &PrivacyConfig) -> Result<Pseudonyms, ConfigError> {
        if config.pseudonymize.is_empty() {
            return Ok(Pseudonyms::default());
        }
        let (key, place) = match (&config.key_file, &config.key_env) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::Invalid(
                    "[privacy] names both key_file and key_env: name one".into(),
                ))
            }
            (Some(path), None) => (read_key_file(path)?, format!("key file {}", path.display())),
            (None, env) => {
                let name = env.as_deref().unwrap_or(DEFAULT_KEY_ENV);
                let key = std::env::var_os(name).ok_or_else(|| {
                    ConfigError::Invalid(format!(
                        "[privacy] pseudonymize needs a key: set the environment variable \
                         {name} or name a key_file"
                    ))
                })?;
                (
                    key.into_encoded_bytes(),
                    format!("environment variable {name}"),
                )
            }
        };
        Pseudonyms::with_key(&key, &config.pseudonymize)
            .map_err(|error| ConfigError::Invalid(format!("[privacy] the {place}: {error}")))
    }

    /// Pseudonyms of `kinds` under `key`.
    pub fn with_key(key: &[u8], kinds: &[IdKind]) -> Result<Pseudonyms, String> {
        let key = strip_line_break(key);
        if key.len() < MIN_KEY_BYTES {
            return Err(format!(
                "the key is {} bytes; at least {MIN_KEY_BYTES} are needed \
                 (e.g. `openssl rand -hex 32`)",
                key.len()
            ));
        }
        let mac = Hmac::<Sha256>::new_from_slice(key).map_err(|e| e.to_string())?;
        Ok(Pseudonyms {
            key: Some(mac),
            users: kinds.contains(&IdKind::User),
            items: kinds.contains(&IdKind::Item),
        })
    }

    /// Whether any id is pseudonymised.
    pub fn enabled(&self) -> bool {
        self.users || self.items
    }

    /// Whether ids of `kind` are pseudonymised.
    pub fn applies_to(&self, kind: IdKind) -> bool {
        match kind {
            IdKind::User => self.users,
            IdKind::Item => self.items,
        }
    }

    /// The id the rest of persona sees for the normalised id `id` of `kind`.
    pub fn of<'a>(&self, kind: IdKind, id: &'a str) -> Cow<'a, str> {
        match &self.key {
            Some(key) if self.applies_to(kind) => Cow::Owned(pseudonym(key, kind, id)),
            _ => Cow::Borrowed(id),
        }
    }

    pub fn user<'a>(&self, id: &'a str) -> Cow<'a, str> {
        self.of(IdKind::User, id)
    }

    /// The integer id of an id of `kind` as a source or a client writes it
    /// (normalised as `[cleaning] numeric_ids` says), and the id outputs
    /// show for it (its pseudonym, when pseudonymised).
    pub fn id(&self, kind: IdKind, text: &str, numeric_ids: bool) -> (Id, String) {
        let shown = self.of(kind, normalise_id(text, numeric_ids)).into_owned();
        (id_of(&shown), shown)
    }

    pub fn item<'a>(&self, id: &'a str) -> Cow<'a, str> {
        self.of(IdKind::Item, id)
    }
}

/// The users of a forgotten-users file (`[privacy] forgotten`): one
/// integer user id per line, the hash outputs key users by, so that the
/// file holds no id as the source wrote it. A missing file forgets nobody.
pub fn read_forgotten(path: &Path) -> anyhow::Result<HashSet<Id>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(HashSet::new()),
        Err(error) => {
            return Err(error)
                .with_context(|| format!("cannot read forgotten users {}", path.display()))
        }
    };
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(index, line)| {
            line.trim().parse::<Id>().with_context(|| {
                format!(
                    "{} line {}: expected a user id written by persona forget",
                    path.display(),
                    index + 1
                )
            })
        })
        .collect()
}

/// Adds users to a forgotten-users file, durably (synced before this
/// returns); returns how many were not in it yet.
pub fn add_forgotten(path: &Path, users: &[Id]) -> anyhow::Result<usize> {
    let known = read_forgotten(path)?;
    let new: Vec<Id> = users
        .iter()
        .copied()
        .filter(|user| !known.contains(user))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open forgotten users {}", path.display()))?;
    for user in &new {
        writeln!(file, "{user}")?;
    }
    file.sync_all()
        .with_context(|| format!("cannot sync {}", path.display()))?;
    Ok(new.len())
}

/// The kind is hashed in, so that a user and an item with the same id get
/// unrelated pseudonyms.
fn pseudonym(key: &Hmac<Sha256>, kind: IdKind, id: &str) -> String {
    let mut mac = key.clone();
    mac.update(match kind {
        IdKind::User => b"user\0",
        IdKind::Item => b"item\0",
    });
    mac.update(id.as_bytes());
    let digest = mac.finalize().into_bytes();
    digest[..PSEUDONYM_BYTES]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

fn read_key_file(path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|error| {
        ConfigError::Invalid(format!(
            "[privacy] cannot read key_file {}: {error}",
            path.display()
        ))
    })
}

/// A key written with `echo` or an editor ends in a line break that is
/// not part of it.
fn strip_line_break(key: &[u8]) -> &[u8] {
    let key = key.strip_suffix(b"\n").unwrap_or(key);
    key.strip_suffix(b"\r").unwrap_or(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn pseudonyms_are_keyed_stable_and_per_kind() {
        let both = Pseudonyms::with_key(KEY, &[IdKind::User, IdKind::Item]).unwrap();
        let user = both.user("17850");
        assert_eq!(user.len(), 2 * PSEUDONYM_BYTES);
        assert!(user.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(user, both.user("17850"), "stable");
        assert_ne!(user, both.user("17851"));
        assert_ne!(user, both.item("17850"), "kinds are separated");
        let other = Pseudonyms::with_key(b"another key of thirty-two bytes!", &[IdKind::User]);
        assert_ne!(user, other.unwrap().user("17850"), "keyed");
        // A key file's final line break is not part of the key.
        let with_newline = [KEY, b"\n"].concat();
        let same = Pseudonyms::with_key(&with_newline, &[IdKind::User]).unwrap();
        assert_eq!(user, same.user("17850"));
        // Pinned against HMAC-SHA-256 computed independently
        // (`printf 'user\00017850' | openssl dgst -sha256 -hmac KEY`).
        assert_eq!(user, "2b9c315d96eddf0b8c9213accd06aff2");
    }

    #[test]
    fn only_the_named_kinds_change_and_short_keys_are_refused() {
        let users = Pseudonyms::with_key(KEY, &[IdKind::User]).unwrap();
        assert_eq!(users.item("85123A"), "85123A");
        assert!(matches!(users.user("17850"), Cow::Owned(_)));
        assert!(!Pseudonyms::default().enabled());
        let error = Pseudonyms::with_key(b"short\n", &[IdKind::User]).unwrap_err();
        assert!(error.contains("5 bytes"), "{error}");
    }
}
