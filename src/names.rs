//! The name book: id strings of the source, collected while reading so that
//! outputs show `17850` and `85123A` rather than their hashes.
//!
//! Readers send each (kind, id, name) once; the book lives where the sinks
//! are (worker 0), which works across processes. Dataflows work on integer
//! ids only; showing names is the sinks' business ([`Names`]).

use std::collections::HashMap;

use persona_dataflows::Id;
use serde::{Deserialize, Serialize};

/// Resolves integer ids back to the id strings of the source.
pub trait Names {
    fn name(&self, kind: NameKind, id: Id) -> String;

    fn user(&self, id: Id) -> String {
        self.name(NameKind::User, id)
    }
    fn item(&self, id: Id) -> String {
        self.name(NameKind::Item, id)
    }
    fn category(&self, id: Id) -> String {
        self.name(NameKind::Category, id)
    }
}

/// Shows every id as its decimal integer: for tests and for sources whose
/// ids are integers already.
pub struct NumericNames;

impl Names for NumericNames {
    fn name(&self, _kind: NameKind, id: Id) -> String {
        id.to_string()
    }
}

/// What an id names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum NameKind {
    User,
    Item,
    Category,
}

/// Id → original string, per kind.
#[derive(Default)]
pub struct NameBook {
    names: HashMap<(NameKind, Id), String>,
}

impl NameBook {
    pub fn insert(&mut self, kind: NameKind, id: Id, name: String) {
        self.names.entry((kind, id)).or_insert(name);
    }
}

impl Names for NameBook {
    fn name(&self, kind: NameKind, id: Id) -> String {
        // An id without a name can only come from a dimension table (a
        // catalog row of an item never seen in events); show its hash.
        self.names
            .get(&(kind, id))
            .cloned()
            .unwrap_or_else(|| id.to_string())
    }
}
