//! JSON Lines: one JSON object per line. Fields are top-level keys, or JSON
//! pointers (`/a/b`). With `records`, each element of that array is a
//! record, and fields missing from the element are looked up in the
//! enclosing object.

use std::borrow::Cow;

use serde_json::Value;

use crate::format::mapping::{CompiledMapping, Fields};
use crate::format::Outcome;
use crate::rejected::{Position, Reason, Rejection};

/// Decodes one line into one outcome per record it holds.
pub fn decode(line: &[u8], position: &Position, mapping: &CompiledMapping, out: &mut Vec<Outcome>) {
    let reject = |reason, detail: String| Err((position.clone(), Rejection::new(reason, detail)));
    if let Err(error) = std::str::from_utf8(line) {
        out.push(reject(Reason::InvalidUtf8, error.to_string()));
        return;
    }
    let value: Value = match serde_json::from_slice(line) {
        Ok(value) => value,
        Err(error) => {
            out.push(reject(Reason::InvalidJson, error.to_string()));
            return;
        }
    };
    if !value.is_object() {
        out.push(reject(Reason::InvalidJson, "expected a JSON object".into()));
        return;
    }
    let Some(records) = mapping.records() else {
        let fields = JsonFields {
            record: &value,
            parent: None,
        };
        out.push(mapping.decode(&fields).map_err(|r| (position.clone(), r)));
        return;
    };
    match lookup(&value, records) {
        Some(Value::Array(elements)) => {
            for (index, element) in elements.iter().enumerate() {
                let fields = JsonFields {
                    record: element,
                    parent: Some(&value),
                };
                out.push(
                    mapping
                        .decode(&fields)
                        .map_err(|r| (position.with_index(index), r)),
                );
            }
        }
        _ => out.push(reject(
            Reason::InvalidJson,
            format!("expected an array at {records:?}"),
        )),
    }
}

fn lookup<'v>(value: &'v Value, field: &str) -> Option<&'v Value> {
    if field.starts_with('/') {
        value.pointer(field)
    } else {
        value.get(field)
    }
}

/// The fields of one JSON record, with its enclosing object as fallback.
struct JsonFields<'v> {
    record: &'v Value,
    parent: Option<&'v Value>,
}

impl Fields for JsonFields<'_> {
    fn get(&self, name: &str) -> Result<Option<Cow<'_, str>>, Rejection> {
        let value = lookup(self.record, name).or_else(|| self.parent.and_then(|p| lookup(p, name)));
        match value {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) if text.trim().is_empty() => Ok(None),
            Some(Value::String(text)) => Ok(Some(Cow::Borrowed(text))),
            Some(Value::Number(number)) => Ok(Some(Cow::Owned(number.to_string()))),
            Some(Value::Bool(flag)) => Ok(Some(Cow::Owned(flag.to_string()))),
            Some(_) => Err(Rejection::new(
                Reason::InvalidJson,
                format!("field {name:?} is not a string or number"),
            )),
        }
    }
}
