//! The column mapping: which field is the user, the item, the action, the
//! time, ... and the cleaning of each value on the way to an [`Event`].
//!
//! Values are normalised here (times to epoch milliseconds, prices to
//! integer minor units without going through a float, action synonyms to
//! canonical actions, ids trimmed and `17850.0` written `17850`), and every
//! value that cannot be read becomes a [`Rejection`] with a stable reason.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::str::FromStr;

use jiff::tz::TimeZone;
use persona_dataflows::{Action, Event};
use rust_decimal::Decimal;

use crate::config::{Cancellation, CleaningConfig, ConfigError, Mapping};
use crate::format::Decoded;
use crate::ids::{content_hash, id_of, normalise_id};
use crate::rejected::{Reason, Rejection};

/// Access to the named fields of one record, whatever its format. An empty
/// or null field is `None`.
pub trait Fields {
    fn get(&self, name: &str) -> Result<Option<Cow<'_, str>>, Rejection>;
}

/// Latest event time accepted: the end of year 9999.
const MAX_TIME_MS: i64 = 253_402_300_799_999;

/// How times are written in the source.
#[derive(Clone, Debug)]
enum TimeFormat {
    EpochSeconds,
    EpochMillis,
    Rfc3339,
    Pattern(String),
}

/// Reads times in one configured format and zone as epoch milliseconds.
#[derive(Clone, Debug)]
pub struct TimeParser {
    format: TimeFormat,
    zone: TimeZone,
}

impl TimeParser {
    /// `format`: `epoch_s`, `epoch_ms` (the default), `rfc3339` or a strftime
    /// pattern; `zone`: an IANA zone for times without an offset (default UTC).
    pub fn new(format: Option<&str>, zone: Option<&str>) -> Result<TimeParser, ConfigError> {
        let format = match format.unwrap_or("epoch_ms") {
            "epoch_s" => TimeFormat::EpochSeconds,
            "epoch_ms" => TimeFormat::EpochMillis,
            "rfc3339" => TimeFormat::Rfc3339,
            pattern if pattern.contains('%') => TimeFormat::Pattern(pattern.to_owned()),
            other => {
                return Err(ConfigError::Invalid(format!(
                "time_format {other:?}: expected epoch_s, epoch_ms, rfc3339 or a strftime pattern"
            )))
            }
        };
        let zone_name = zone.unwrap_or("UTC");
        let zone = TimeZone::get(zone_name)
            .map_err(|error| ConfigError::Invalid(format!("time_zone {zone_name:?}: {error}")))?;
        Ok(TimeParser { format, zone })
    }

    /// Parses the time in `text`, read from `field`, as epoch milliseconds.
    pub fn parse(&self, text: &str, field: &str) -> Result<i64, Rejection> {
        let text = text.trim();
        let invalid = |expected: &str| {
            Rejection::new(
                Reason::InvalidTime,
                format!("field {field:?}: {text:?} is not {expected}"),
            )
        };
        let out_of_range =
            || Rejection::new(Reason::TimeOutOfRange, format!("field {field:?}: {text:?}"));
        let time_ms = match &self.format {
            TimeFormat::EpochMillis => text
                .parse::<i64>()
                .map_err(|_| invalid("epoch milliseconds"))?,
            TimeFormat::EpochSeconds => {
                let seconds = Decimal::from_str(text).map_err(|_| invalid("epoch seconds"))?;
                (seconds * Decimal::from(1000))
                    .trunc()
                    .try_into()
                    .map_err(|_| out_of_range())?
            }
            TimeFormat::Rfc3339 => text
                .parse::<jiff::Timestamp>()
                .map_err(|_| invalid("an RFC 3339 time"))?
                .as_millisecond(),
            TimeFormat::Pattern(pattern) => jiff::civil::DateTime::strptime(pattern, text)
                .map_err(|_| invalid(&format!("a time like {pattern:?}")))?
                .to_zoned(self.zone.clone())
                .map_err(|_| out_of_range())?
                .timestamp()
                .as_millisecond(),
        };
        if !(0..=MAX_TIME_MS).contains(&time_ms) {
            return Err(Rejection::new(
                Reason::TimeOutOfRange,
                format!("field {field:?}: {text:?} is before 1970 or after 9999"),
            ));
        }
        Ok(time_ms)
    }
}

/// A [`Mapping`] checked and ready to decode records.
pub struct CompiledMapping {
    mapping: Mapping,
    actions: BTreeMap<String, Action>,
    time: TimeParser,
    price_decimals: u32,
    non_products: HashSet<String>,
    numeric_ids: bool,
}

impl CompiledMapping {
    pub fn new(
        mapping: &Mapping,
        cleaning: &CleaningConfig,
    ) -> Result<CompiledMapping, ConfigError> {
        let mut actions: BTreeMap<String, Action> = Action::ALL
            .into_iter()
            .map(|action| (action.name().to_owned(), action))
            .collect();
        for (synonym, canonical) in &mapping.action_synonyms {
            let action = Action::from_name(canonical).ok_or_else(|| {
                ConfigError::Invalid(format!(
                    "[input.mapping.action_synonyms] {synonym:?} = {canonical:?}: not an action"
                ))
            })?;
            actions.insert(synonym.trim().to_lowercase(), action);
        }
        if let Some(constant) = &mapping.action_constant {
            if !actions.contains_key(&constant.trim().to_lowercase()) {
                return Err(ConfigError::Invalid(format!(
                    "[input.mapping] action_constant {constant:?} is not an action"
                )));
            }
        }
        let time = TimeParser::new(mapping.time_format.as_deref(), mapping.time_zone.as_deref())
            .map_err(|error| ConfigError::Invalid(format!("[input.mapping] {error}")))?;
        let price_decimals = mapping.price_decimals.unwrap_or(2);
        if price_decimals > 6 {
            return Err(ConfigError::Invalid(
                "[input.mapping] price_decimals must be at most 6".into(),
            ));
        }
        Ok(CompiledMapping {
            mapping: mapping.clone(),
            actions,
            time,
            price_decimals,
            non_products: cleaning
                .non_product_items
                .iter()
                .map(|s| s.trim().to_owned())
                .collect(),
            numeric_ids: cleaning.numeric_ids,
        })
    }

    /// The JSON key whose array holds the records, if any.
    pub fn records(&self) -> Option<&str> {
        self.mapping.records.as_deref()
    }

    /// Every field name the mapping reads.
    pub fn field_names(&self) -> impl Iterator<Item = &str> {
        let m = &self.mapping;
        [
            Some(&m.user),
            Some(&m.item),
            m.action.as_ref(),
            Some(&m.time),
        ]
        .into_iter()
        .chain(
            [
                &m.category,
                &m.price,
                &m.quantity,
                &m.rating,
                &m.event_id,
                &m.session,
            ]
            .map(Option::as_ref),
        )
        .chain([m.cancellation.as_ref().map(|c| &c.field)])
        .flatten()
        .map(String::as_str)
    }

    /// Decodes and cleans one record.
    pub fn decode(&self, fields: &dyn Fields) -> Result<Decoded, Rejection> {
        let m = &self.mapping;
        let user_name = fields
            .get(&m.user)?
            .map(|u| normalise_id(&u, self.numeric_ids).to_owned())
            .ok_or_else(|| {
                Rejection::new(Reason::MissingUser, format!("field {:?} is empty", m.user))
            })?;
        let item_name = fields
            .get(&m.item)?
            .map(|i| normalise_id(&i, self.numeric_ids).to_owned())
            .ok_or_else(|| {
                Rejection::new(Reason::MissingItem, format!("field {:?} is empty", m.item))
            })?;
        if self.non_products.contains(&item_name) {
            return Err(Rejection::new(
                Reason::NonProduct,
                format!("item {item_name:?} is not a product"),
            ));
        }
        let action = self.action(fields)?;
        let time_ms = self.time(fields)?;
        let cancelled = self.is_cancellation(fields, m.cancellation.as_ref())?;
        let quantity = match &m.quantity {
            None => 1,
            Some(field) => parse_quantity(fields.get(field)?.as_deref(), field, cancelled)?,
        };
        let price = match &m.price {
            None => None,
            Some(field) => fields
                .get(field)?
                .map(|text| self.price(&text, field))
                .transpose()?,
        };
        let rating = match &m.rating {
            None => None,
            Some(field) => fields
                .get(field)?
                .map(|text| parse_rating(&text, field))
                .transpose()?,
        };
        let category_name = match &m.category {
            None => None,
            Some(field) => fields
                .get(field)?
                .map(|c| normalise_id(&c, self.numeric_ids).to_owned()),
        };
        let event_id = match &m.event_id {
            None => None,
            Some(field) => fields.get(field)?.map(|e| e.trim().to_owned()),
        };
        let session = match &m.session {
            None => None,
            Some(field) => fields
                .get(field)?
                .map(|s| id_of(normalise_id(&s, self.numeric_ids))),
        };
        let event = Event {
            user: id_of(&user_name),
            item: id_of(&item_name),
            action,
            time_ms,
            category: category_name.as_deref().map(id_of),
            price,
            quantity,
            rating,
            event_id: event_id.as_deref().map(id_of),
            session,
        };
        let diff = if cancelled { -1 } else { 1 };
        let dedup_key = match &event_id {
            Some(id) => content_hash(format!("id\u{0}{id}\u{0}{diff}").as_bytes()),
            None => content_hash(format!("{event:?}\u{0}{diff}").as_bytes()),
        };
        Ok(Decoded {
            event,
            diff,
            dedup_key,
            user_name,
            item_name,
            category_name,
        })
    }

    fn action(&self, fields: &dyn Fields) -> Result<Action, Rejection> {
        let (text, field) = match (&self.mapping.action_constant, &self.mapping.action) {
            (Some(constant), _) => (Cow::Borrowed(constant.as_str()), "action_constant"),
            (None, Some(field)) => (
                fields.get(field)?.ok_or_else(|| {
                    Rejection::new(Reason::MissingAction, format!("field {field:?} is empty"))
                })?,
                field.as_str(),
            ),
            (None, None) => unreachable!("validated: a mapping has an action field or constant"),
        };
        let key = text.trim().to_lowercase();
        self.actions.get(&key).copied().ok_or_else(|| {
            Rejection::new(
                Reason::UnknownAction,
                format!("field {field:?}: unknown action {key:?}"),
            )
        })
    }

    fn time(&self, fields: &dyn Fields) -> Result<i64, Rejection> {
        let field = &self.mapping.time;
        let text = fields.get(field)?.ok_or_else(|| {
            Rejection::new(Reason::MissingTime, format!("field {field:?} is empty"))
        })?;
        self.time.parse(&text, field)
    }

    fn is_cancellation(
        &self,
        fields: &dyn Fields,
        cancellation: Option<&Cancellation>,
    ) -> Result<bool, Rejection> {
        let Some(cancellation) = cancellation else {
            return Ok(false);
        };
        Ok(fields
            .get(&cancellation.field)?
            .is_some_and(|value| value.trim().starts_with(&cancellation.prefix)))
    }

    fn price(&self, text: &str, field: &str) -> Result<i64, Rejection> {
        parse_price(text, field, self.price_decimals)
    }
}

/// Parses a decimal price into integer minor units, exactly: never through
/// a float, and more decimal places than the minor unit is an error.
pub fn parse_price(text: &str, field: &str, decimals: u32) -> Result<i64, Rejection> {
    let text = text.trim();
    let price = Decimal::from_str(text)
        .or_else(|_| Decimal::from_scientific(text))
        .map_err(|_| {
            Rejection::new(
                Reason::InvalidPrice,
                format!("field {field:?}: {text:?} is not a decimal"),
            )
        })?;
    if price.is_sign_negative() && !price.is_zero() {
        return Err(Rejection::new(
            Reason::NegativePrice,
            format!("field {field:?}: {text:?} is negative"),
        ));
    }
    let minor = price * Decimal::from(10_i64.pow(decimals));
    if minor.fract() != Decimal::ZERO {
        return Err(Rejection::new(
            Reason::InvalidPrice,
            format!("field {field:?}: {text:?} has more than {decimals} decimal places"),
        ));
    }
    minor.try_into().map_err(|_| {
        Rejection::new(
            Reason::InvalidPrice,
            format!("field {field:?}: {text:?} is too large"),
        )
    })
}

/// A quantity is a non-zero integer; negative only on a cancellation, whose
/// quantity is the positive amount it takes back.
fn parse_quantity(text: Option<&str>, field: &str, cancelled: bool) -> Result<i64, Rejection> {
    let Some(text) = text.map(str::trim) else {
        return Err(Rejection::new(
            Reason::InvalidQuantity,
            format!("field {field:?} is empty"),
        ));
    };
    let quantity: i64 = text.parse().map_err(|_| {
        Rejection::new(
            Reason::InvalidQuantity,
            format!("field {field:?}: {text:?} is not an integer"),
        )
    })?;
    match (quantity, cancelled) {
        (0, _) => Err(Rejection::new(
            Reason::InvalidQuantity,
            format!("field {field:?} is zero"),
        )),
        (q, false) if q < 0 => Err(Rejection::new(
            Reason::InvalidQuantity,
            format!("field {field:?}: {q} is negative but the record is not a cancellation"),
        )),
        (q, _) => q.checked_abs().ok_or_else(|| {
            Rejection::new(
                Reason::InvalidQuantity,
                format!("field {field:?}: {q} is too large"),
            )
        }),
    }
}

/// Ratings are decimals stored in hundredths: "3.5" is 350.
fn parse_rating(text: &str, field: &str) -> Result<i64, Rejection> {
    let text = text.trim();
    let invalid = || {
        Rejection::new(
            Reason::InvalidRating,
            format!("field {field:?}: {text:?} is not a rating"),
        )
    };
    let rating = Decimal::from_str(text).map_err(|_| invalid())?;
    let hundredths = rating * Decimal::from(100);
    if hundredths.fract() != Decimal::ZERO {
        return Err(invalid());
    }
    hundredths.try_into().map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity(Some("6"), "q", false), Ok(6));
        assert_eq!(parse_quantity(Some("-6"), "q", true), Ok(6));
        assert_eq!(
            parse_quantity(Some("-6"), "q", false).unwrap_err().reason,
            Reason::InvalidQuantity
        );
        assert_eq!(
            parse_quantity(Some("0"), "q", false).unwrap_err().reason,
            Reason::InvalidQuantity
        );
        assert_eq!(
            parse_quantity(Some("1.5"), "q", false).unwrap_err().reason,
            Reason::InvalidQuantity
        );
    }

    #[test]
    fn ratings_are_hundredths() {
        assert_eq!(parse_rating("3.5", "r"), Ok(350));
        assert_eq!(parse_rating("4", "r"), Ok(400));
        assert!(parse_rating("3.333", "r").is_err());
    }
}
