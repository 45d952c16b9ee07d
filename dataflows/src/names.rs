//! How outputs show the original ids again.
//!
//! Dataflows work on integer ids (stable hashes of the source's id strings).
//! A sink that renders records for people asks a [`Names`] for the original
//! strings; the runtime fills one from the names it saw while reading.

use crate::Id;

/// Resolves integer ids back to the id strings of the source.
pub trait Names {
    fn user(&self, id: Id) -> String;
    fn item(&self, id: Id) -> String;
    fn category(&self, id: Id) -> String;
}

/// Shows every id as its decimal integer: for tests and for sources whose ids
/// are integers already.
pub struct NumericNames;

impl Names for NumericNames {
    fn user(&self, id: Id) -> String {
        id.to_string()
    }
    fn item(&self, id: Id) -> String {
        id.to_string()
    }
    fn category(&self, id: Id) -> String {
        id.to_string()
    }
}
