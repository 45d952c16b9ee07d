//! Stable integer ids for the string ids of sources.
//!
//! Every process and every run must map an id string to the same integer, so
//! the hash is a fixed, seeded xxh3 rather than std's randomised hasher.
//! User, item and category ids live in separate name books, so the same
//! string as a user and as an item never conflict.

use std::hash::{Hash, Hasher};

use persona_dataflows::Id;

/// Seed of the id hash. Changing it changes every id: never do.
const ID_SEED: u64 = 0x7065_7273_6f6e_6131; // "persona1"

/// The integer id of an id string.
pub fn id_of(text: &str) -> Id {
    xxhash_rust::xxh3::xxh3_64_with_seed(text.as_bytes(), ID_SEED)
}

/// A content hash of a value's fields (its `Hash`), for deduplication keys:
/// the same in every process of a run, without formatting the value.
pub fn value_hash(value: &impl Hash) -> u64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::with_seed(ID_SEED ^ 1);
    value.hash(&mut hasher);
    hasher.finish()
}

/// Normalises an id string: trims it, and writes an integer written as a
/// float (Online Retail's `17850.0`) as the integer (`17850`).
pub fn normalise_id(text: &str, numeric_ids: bool) -> &str {
    let text = text.trim();
    if numeric_ids {
        if let Some(integer) = text.strip_suffix(".0") {
            if !integer.is_empty() && integer.bytes().all(|b| b.is_ascii_digit()) {
                return integer;
            }
        }
    }
    text
}

/// The first control character of an id (NUL, ESC, DEL, C1 codes, a tab
/// or line break inside it), if any. Such ids are rejected rather than
/// kept: `17850\0` would be a second user that prints like `17850`.
pub fn control_character(id: &str) -> Option<char> {
    id.chars().find(|c| c.is_control())
}

/// Why an id holding the control character `c` is refused, at `place`
/// (`field "user"`); the id is not repeated when it is `private` (under
/// pseudonymisation).
pub fn control_character_message(place: &str, id: &str, c: char, private: bool) -> String {
    let shown = if private {
        "the id".to_owned()
    } else {
        format!("{id:?}")
    };
    format!(
        "{place}: {shown} holds the control character U+{:04X}",
        u32::from(c)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_distinct() {
        assert_eq!(id_of("17850"), id_of("17850"));
        assert_ne!(id_of("17850"), id_of("17851"));
        // Pinned: a change of hash would silently change every output key.
        assert_eq!(
            id_of("17850"),
            xxhash_rust::xxh3::xxh3_64_with_seed(b"17850", ID_SEED)
        );
    }

    #[test]
    fn control_characters_are_found() {
        assert_eq!(control_character("17850"), None);
        assert_eq!(control_character("17850\0"), Some('\0'));
        assert_eq!(control_character("a\tb"), Some('\t'));
        assert_eq!(control_character("x\u{1b}[31m"), Some('\u{1b}'));
        assert_eq!(control_character("x\u{85}"), Some('\u{85}'));
        assert_eq!(control_character("Café 東京"), None);
    }

    #[test]
    fn float_written_integers_are_normalised() {
        assert_eq!(normalise_id(" 17850.0 ", true), "17850");
        assert_eq!(normalise_id("17850.0", false), "17850.0");
        assert_eq!(normalise_id("85123A", true), "85123A");
        assert_eq!(normalise_id("1.05", true), "1.05");
        assert_eq!(normalise_id(".0", true), ".0");
    }
}
