//! The name book: id strings of the source, collected while reading so that
//! outputs show `17850` and `85123A` rather than their hashes.
//!
//! Readers send each (kind, id, name) once; the book lives where the sinks
//! are (worker 0), which works across processes.

use std::collections::HashMap;

use persona_dataflows::{Id, Names};
use serde::{Deserialize, Serialize};

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

    fn lookup(&self, kind: NameKind, id: Id) -> String {
        // An id without a name can only come from a dimension table (a
        // catalog row of an item never seen in events); show its hash.
        self.names
            .get(&(kind, id))
            .cloned()
            .unwrap_or_else(|| id.to_string())
    }
}

impl Names for NameBook {
    fn user(&self, id: Id) -> String {
        self.lookup(NameKind::User, id)
    }
    fn item(&self, id: Id) -> String {
        self.lookup(NameKind::Item, id)
    }
    fn category(&self, id: Id) -> String {
        self.lookup(NameKind::Category, id)
    }
}
