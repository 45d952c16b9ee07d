//! JSON Lines: one JSON object per line. Fields are top-level keys, or JSON
//! pointers (`/a/b`). With `records`, each element of that array is a
//! record, and fields missing from the element are looked up in the
//! enclosing object.
//!
//! A key written twice in one object is an error (`invalid_json`), at any
//! depth: serde_json would keep the last silently, and which of the two a
//! producer meant is unknowable.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

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
    let value = match parse(line) {
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

/// The mapped fields of the record at `position` of `line`, as
/// [`CompiledMapping::mapped_raw`] shows them; `""` if the line is not JSON.
pub fn mapped_raw(line: &[u8], position: &Position, mapping: &CompiledMapping) -> String {
    let Ok(value) = parse(line) else {
        return String::new();
    };
    let index = match position {
        Position::File { index, .. } => *index,
        Position::Kafka { .. } | Position::Http { .. } => None,
    };
    let element = mapping
        .records()
        .zip(index)
        .and_then(|(records, index)| lookup(&value, records)?.get(index));
    let fields = match element {
        Some(element) => JsonFields {
            record: element,
            parent: Some(&value),
        },
        None => JsonFields {
            record: &value,
            parent: None,
        },
    };
    mapping.mapped_raw(&fields)
}

/// Parses one JSON value, rejecting a key repeated in any object.
pub fn parse(line: &[u8]) -> Result<Value, serde_json::Error> {
    // A byte order mark, as editors on Windows start a file with (CSV
    // headers drop it too).
    let line = line.strip_prefix("\u{feff}".as_bytes()).unwrap_or(line);
    serde_json::from_slice::<Strict>(line).map(|strict| strict.0)
}

/// A JSON value whose objects have no repeated key.
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Strict, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Value, E> {
        Ok(Value::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Value, E> {
        Ok(Value::from(value))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Value, E> {
        Ok(Value::from(value))
    }

    fn visit_f64<E>(self, value: f64) -> Result<Value, E> {
        Ok(Value::from(value))
    }

    fn visit_str<E>(self, value: &str) -> Result<Value, E> {
        Ok(Value::String(value.to_owned()))
    }

    fn visit_string<E>(self, value: String) -> Result<Value, E> {
        Ok(Value::String(value))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut elements = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(Strict(element)) = seq.next_element()? {
            elements.push(element);
        }
        Ok(Value::Array(elements))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(de::Error::custom(format_args!("duplicate key {key:?}")));
            }
            let Strict(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
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
            // Beyond 2^53 a number that is not a 64-bit integer has lost
            // digits to a float: two ids would become one.
            Some(Value::Number(number))
                if number.as_f64().is_some_and(|x| x.abs() >= 2f64.powi(53))
                    && !(number.is_i64() || number.is_u64()) =>
            {
                Err(Rejection::new(
                    Reason::InvalidJson,
                    format!(
                        "field {name:?}: the number {number} is too large to be read exactly; \
                         write it as a string"
                    ),
                ))
            }
            Some(Value::Number(number)) => Ok(Some(Cow::Owned(number.to_string()))),
            Some(Value::Bool(flag)) => Ok(Some(Cow::Owned(flag.to_string()))),
            Some(_) => Err(Rejection::new(
                Reason::InvalidJson,
                format!("field {name:?} is not a string or number"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_keys_are_errors_at_any_depth() {
        assert_eq!(
            parse(br#"{"a":1,"b":[{"c":2}],"d":{"e":null}}"#).unwrap(),
            serde_json::json!({"a": 1, "b": [{"c": 2}], "d": {"e": null}})
        );
        for line in [
            r#"{"user":"1","user":"2"}"#,
            r#"{"events":[{"ts":1,"aid":2,"ts":3}]}"#,
            r#"{"a":{"b":{"c":1,"c":1}}}"#,
        ] {
            let error = parse(line.as_bytes()).unwrap_err().to_string();
            assert!(error.contains("duplicate key"), "{line}: {error}");
        }
        let error = parse(br#"{"ts":1,"ts":2}"#).unwrap_err().to_string();
        assert!(error.contains(r#""ts""#), "{error}");
    }

    #[test]
    fn numbers_keep_their_exact_form() {
        let value =
            parse(br#"{"a":18446744073709551615,"b":-9223372036854775808,"c":1.5}"#).unwrap();
        assert_eq!(value["a"].to_string(), "18446744073709551615");
        assert_eq!(value["b"].to_string(), "-9223372036854775808");
        assert_eq!(value["c"].to_string(), "1.5");
    }

    #[test]
    fn a_byte_order_mark_before_a_record_is_skipped() {
        let value = parse("\u{feff}{\"a\":1}".as_bytes()).unwrap();
        assert_eq!(value["a"], 1);
    }

    #[test]
    fn numbers_beyond_64_bit_integers_are_rejected_not_rounded() {
        let value =
            parse(br#"{"u":18446744073709551616,"v":1e20,"w":18446744073709551615,"x":2.5}"#)
                .unwrap();
        let fields = JsonFields {
            record: &value,
            parent: None,
        };
        for name in ["u", "v"] {
            let error = fields.get(name).unwrap_err();
            assert_eq!(error.reason, Reason::InvalidJson);
            assert!(error.detail.contains("write it as a string"), "{error:?}");
        }
        assert_eq!(fields.get("w").unwrap().unwrap(), "18446744073709551615");
        assert_eq!(fields.get("x").unwrap().unwrap(), "2.5");
    }
}
