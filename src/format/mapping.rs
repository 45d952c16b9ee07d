//! The column mapping: which field is the user, the item, the action, the
//! time, ... and the cleaning of each value on the way to an [`Event`].
//!
//! Values are normalised here (times to epoch milliseconds, prices to
//! integer minor units without going through a float, action synonyms to
//! canonical actions, ids trimmed and `17850.0` written `17850`), and every
//! value that cannot be read becomes a [`Rejection`] with a stable reason.
//!
//! Every number is checked before it is used: decimal arithmetic is
//! `checked_*` (rust_decimal's operators panic on overflow), and quantities,
//! prices and their product are bounded per row ([`MAX_QUANTITY`],
//! [`MAX_PRICE`], [`MAX_AMOUNT`]) so that the sums of the profile dataflow
//! stay exact in 64 bits.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::str::FromStr;

use jiff::tz::TimeZone;
use persona_dataflows::{Action, Event};
use rust_decimal::Decimal;

use crate::config::{Cancellation, CleaningConfig, ConfigError, IdKind, Mapping};
use crate::format::Decoded;
use crate::ids::{control_character, control_character_message, id_of, normalise_id, value_hash};
use crate::privacy::Pseudonyms;
use crate::rejected::{Reason, Rejection};

/// Access to the named fields of one record, whatever its format. An empty
/// or null field is `None`.
pub trait Fields {
    fn get(&self, name: &str) -> Result<Option<Cow<'_, str>>, Rejection>;
}

/// Latest event time accepted: the end of year 9999.
const MAX_TIME_MS: i64 = 253_402_300_799_999;

/// An `epoch_ms` value below this (1973-03-03) is taken for seconds, and an
/// `epoch_s` value at or above it (year 5138) for milliseconds: real logs of
/// behaviour start well after 1973, and no log has times 3000 years ahead.
const EPOCH_UNIT_BOUNDARY: i64 = 100_000_000_000;

/// Most units one row may hold. Online Retail's largest line is 80,995.
pub const MAX_QUANTITY: i64 = 1_000_000;

/// Highest unit price, in minor units (100 million in a currency of two
/// decimals). Applies to catalog prices too: with [`MAX_QUANTITY`] it bounds
/// quantity × price by 10^16 even when the price comes from the catalog, so
/// a user's spend needs over 900 such rows to leave i64.
pub const MAX_PRICE: i64 = 10_000_000_000;

/// Highest quantity × unit price of a row that carries its price, in minor
/// units (10 billion in a currency of two decimals): a user's spend would
/// need over 9 million such rows to leave i64.
pub const MAX_AMOUNT: i64 = 1_000_000_000_000;

/// Largest rating magnitude, in hundredths (±1,000,000): a scale of any
/// real rating system fits, and sums of ratings cannot overflow.
pub const MAX_RATING: i64 = 100_000_000;

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
        let unit_mismatch = |looks_like: &str, expected: &str| {
            Rejection::new(
                Reason::TimeUnitMismatch,
                format!(
                    "field {field:?}: {text:?} looks like {looks_like}, the field holds {expected}"
                ),
            )
        };
        let time_ms = match &self.format {
            TimeFormat::EpochMillis => {
                let ms = text
                    .parse::<i64>()
                    .map_err(|_| invalid("epoch milliseconds"))?;
                if (0..EPOCH_UNIT_BOUNDARY).contains(&ms) {
                    return Err(unit_mismatch(
                        "epoch seconds (before 1973 as milliseconds)",
                        "epoch milliseconds",
                    ));
                }
                ms
            }
            TimeFormat::EpochSeconds => {
                let seconds = Decimal::from_str(text).map_err(|_| invalid("epoch seconds"))?;
                if seconds >= Decimal::from(EPOCH_UNIT_BOUNDARY) {
                    return Err(unit_mismatch(
                        "epoch milliseconds (after year 5138 as seconds)",
                        "epoch seconds",
                    ));
                }
                seconds
                    .checked_mul(Decimal::from(1000))
                    .ok_or_else(out_of_range)?
                    .trunc()
                    .try_into()
                    .map_err(|_| out_of_range())?
            }
            TimeFormat::Rfc3339 => text
                .parse::<jiff::Timestamp>()
                .map_err(|_| invalid("an RFC 3339 time"))?
                .as_millisecond(),
            TimeFormat::Pattern(pattern) => {
                let invalid = || invalid(&format!("a time like {pattern:?}"));
                let parsed = jiff::fmt::strtime::parse(pattern, text).map_err(|_| invalid())?;
                // An offset, zone or epoch time in the text says when it
                // is, as in an RFC 3339 time; the configured zone places a
                // civil time only.
                let zoned = match parsed.offset().is_some()
                    || parsed.iana_time_zone().is_some()
                    || parsed.timestamp().is_some()
                {
                    true => parsed.to_zoned().map_err(|_| invalid())?,
                    false => parsed
                        .to_datetime()
                        .map_err(|_| invalid())?
                        .to_zoned(self.zone.clone())
                        .map_err(|_| out_of_range())?,
                };
                zoned.timestamp().as_millisecond()
            }
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
    /// Accepted ratings, in hundredths, inclusive.
    rating_range: (i64, i64),
    non_products: HashSet<String>,
    numeric_ids: bool,
    /// Rejections show only the mapped fields as their raw record.
    raw_mapped: bool,
    pseudonyms: Pseudonyms,
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
        let rating_range = (
            rating_bound(mapping.rating_min, "rating_min", -MAX_RATING)?,
            rating_bound(mapping.rating_max, "rating_max", MAX_RATING)?,
        );
        if rating_range.0 > rating_range.1 {
            return Err(ConfigError::Invalid(
                "[input.mapping] rating_min must not be above rating_max".into(),
            ));
        }
        Ok(CompiledMapping {
            mapping: mapping.clone(),
            actions,
            time,
            price_decimals,
            rating_range,
            non_products: cleaning
                .non_product_items
                .iter()
                .map(|s| s.trim().to_owned())
                .collect(),
            numeric_ids: cleaning.numeric_ids,
            raw_mapped: false,
            pseudonyms: Pseudonyms::default(),
        })
    }

    /// Rejections carry [`Self::mapped_raw`] as their raw record
    /// (`[output] raw = "mapped"`).
    pub fn with_mapped_raw(mut self, mapped: bool) -> CompiledMapping {
        self.raw_mapped = mapped;
        self
    }

    /// User (item) ids become their pseudonyms as they are read, in events
    /// and in the raw records of rejections alike.
    pub fn with_pseudonyms(mut self, pseudonyms: Pseudonyms) -> CompiledMapping {
        self.pseudonyms = pseudonyms;
        self
    }

    pub fn pseudonyms(&self) -> &Pseudonyms {
        &self.pseudonyms
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

    /// The mapped fields of a record as a JSON object, field name → value
    /// as read (null when empty or unreadable): the `raw` of a rejected
    /// record under `[output] raw = "mapped"`, which leaves out the columns
    /// persona does not use.
    pub fn mapped_raw(&self, fields: &dyn Fields) -> String {
        let mut object = serde_json::Map::new();
        for name in self.field_names() {
            if object.contains_key(name) {
                continue;
            }
            let kind = if *name == self.mapping.user {
                Some(IdKind::User)
            } else if *name == self.mapping.item {
                Some(IdKind::Item)
            } else {
                None
            };
            let value = match (fields.get(name), kind) {
                (Ok(Some(text)), Some(kind)) if self.pseudonyms.applies_to(kind) => {
                    let id = normalise_id(&text, self.numeric_ids);
                    serde_json::Value::String(self.pseudonyms.of(kind, id).into_owned())
                }
                (Ok(Some(text)), _) => serde_json::Value::String(text.into_owned()),
                (Ok(None) | Err(_), _) => serde_json::Value::Null,
            };
            object.insert(name.to_owned(), value);
        }
        serde_json::Value::Object(object).to_string()
    }

    /// Decodes and cleans one record.
    pub fn decode(&self, fields: &dyn Fields) -> Result<Decoded, Rejection> {
        self.decode_fields(fields).map_err(|mut rejection| {
            if self.raw_mapped {
                rejection.raw = Some(self.mapped_raw(fields));
            }
            rejection
        })
    }

    fn decode_fields(&self, fields: &dyn Fields) -> Result<Decoded, Rejection> {
        let m = &self.mapping;
        let user_name = self.id(fields, &m.user)?.ok_or_else(|| {
            Rejection::new(Reason::MissingUser, format!("field {:?} is empty", m.user))
        })?;
        let item_name = self.id(fields, &m.item)?.ok_or_else(|| {
            Rejection::new(Reason::MissingItem, format!("field {:?} is empty", m.item))
        })?;
        if self.non_products.contains(&item_name) {
            return Err(Rejection::new(
                Reason::NonProduct,
                format!(
                    "item {:?} is not a product",
                    self.pseudonyms.item(&item_name)
                ),
            ));
        }
        let user_name = self.pseudonyms.user(&user_name).into_owned();
        let item_name = self.pseudonyms.item(&item_name).into_owned();
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
        if let Some(price) = price {
            check_amount(quantity, price)?;
        }
        let rating = match &m.rating {
            None => None,
            Some(field) => fields
                .get(field)?
                .map(|text| parse_rating(&text, field, self.rating_range))
                .transpose()?,
        };
        let category_name = match &m.category {
            None => None,
            Some(field) => self.id(fields, field)?,
        };
        let event_id = match &m.event_id {
            None => None,
            Some(field) => fields
                .get(field)?
                .map(|e| checked_id(e.trim(), field, self.pseudonyms.enabled()).map(str::to_owned))
                .transpose()?,
        };
        let session = match &m.session {
            None => None,
            Some(field) => self.id(fields, field)?.as_deref().map(id_of),
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
            Some(id) => value_hash(&("id", id, diff)),
            None => value_hash(&("event", &event, diff)),
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

    /// The normalised id in `field`, `None` when empty.
    fn id(&self, fields: &dyn Fields, field: &str) -> Result<Option<String>, Rejection> {
        fields
            .get(field)?
            .map(|text| {
                let id = normalise_id(&text, self.numeric_ids);
                checked_id(id, field, self.pseudonyms.enabled()).map(str::to_owned)
            })
            .transpose()
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

/// An id with a control character is rejected: `17850\0` would otherwise
/// be a second user that prints like the first. Under pseudonymisation the
/// message does not repeat the id.
fn checked_id<'a>(id: &'a str, field: &str, private: bool) -> Result<&'a str, Rejection> {
    match control_character(id) {
        None => Ok(id),
        Some(c) => Err(Rejection::new(
            Reason::InvalidId,
            control_character_message(&format!("field {field:?}"), id, c, private),
        )),
    }
}

/// Reads `text` as a number too large for a decimal: digits with a sign,
/// a point or an exponent that `Decimal` rejects only for their size.
fn is_huge_number(text: &str) -> bool {
    text.bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.' | b'e' | b'E'))
        && text.parse::<f64>().is_ok_and(|value| value.abs() >= 1.0)
}

/// Parses a decimal price into integer minor units, exactly: never through
/// a float, and more decimal places than the minor unit is an error. A
/// price above [`MAX_PRICE`] minor units is `amount_out_of_range`.
pub fn parse_price(text: &str, field: &str, decimals: u32) -> Result<i64, Rejection> {
    let text = text.trim();
    let out_of_range = || {
        Rejection::new(
            Reason::AmountOutOfRange,
            format!("field {field:?}: {text:?} is above the highest unit price, {MAX_PRICE} minor units"),
        )
    };
    let price = match Decimal::from_str(text).or_else(|_| Decimal::from_scientific(text)) {
        Ok(price) => price,
        Err(_) if is_huge_number(text) => return Err(out_of_range()),
        Err(_) => {
            return Err(Rejection::new(
                Reason::InvalidPrice,
                format!("field {field:?}: {text:?} is not a decimal"),
            ))
        }
    };
    if price.is_sign_negative() && !price.is_zero() {
        return Err(Rejection::new(
            Reason::NegativePrice,
            format!("field {field:?}: {text:?} is negative"),
        ));
    }
    let scale = 10_i64
        .checked_pow(decimals)
        .map(Decimal::from)
        .ok_or_else(|| {
            Rejection::new(
                Reason::InvalidPrice,
                format!("field {field:?}: {decimals} decimal places are more than persona keeps"),
            )
        })?;
    let minor = price.checked_mul(scale).ok_or_else(out_of_range)?;
    if minor.fract() != Decimal::ZERO {
        return Err(Rejection::new(
            Reason::InvalidPrice,
            format!("field {field:?}: {text:?} has more than {decimals} decimal places"),
        ));
    }
    match i64::try_from(minor) {
        Ok(minor) if minor <= MAX_PRICE => Ok(minor),
        _ => Err(out_of_range()),
    }
}

/// A quantity is a non-zero integer of at most [`MAX_QUANTITY`] units;
/// negative only on a cancellation, whose quantity is the positive amount
/// it takes back. An empty quantity is one unit, as when the log has no
/// quantity column (views and ratings in a mixed log), except on a
/// cancellation: what it takes back is unknown, so it is rejected.
fn parse_quantity(text: Option<&str>, field: &str, cancelled: bool) -> Result<i64, Rejection> {
    let Some(text) = text.map(str::trim) else {
        if cancelled {
            return Err(Rejection::new(
                Reason::InvalidQuantity,
                format!("field {field:?} is empty on a cancellation: the quantity it takes back is unknown"),
            ));
        }
        return Ok(1);
    };
    let out_of_range = || {
        Rejection::new(
            Reason::AmountOutOfRange,
            format!("field {field:?}: {text:?} is beyond the largest quantity, {MAX_QUANTITY}"),
        )
    };
    let quantity: i64 = match text.parse() {
        Ok(quantity) => quantity,
        Err(_) => {
            let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
            if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(out_of_range());
            }
            return Err(Rejection::new(
                Reason::InvalidQuantity,
                format!("field {field:?}: {text:?} is not an integer"),
            ));
        }
    };
    match (quantity, cancelled) {
        (0, _) => Err(Rejection::new(
            Reason::InvalidQuantity,
            format!("field {field:?} is zero"),
        )),
        (q, false) if q < 0 => Err(Rejection::new(
            Reason::InvalidQuantity,
            format!("field {field:?}: {q} is negative but the record is not a cancellation"),
        )),
        (q, _) if q.unsigned_abs() > MAX_QUANTITY as u64 => Err(out_of_range()),
        (q, _) => Ok(q.abs()),
    }
}

/// Quantity × unit price of a row, which its spend adds, must not pass [`MAX_AMOUNT`].
fn check_amount(quantity: i64, price: i64) -> Result<(), Rejection> {
    match quantity.checked_mul(price) {
        Some(amount) if amount <= MAX_AMOUNT => Ok(()),
        _ => Err(Rejection::new(
            Reason::AmountOutOfRange,
            format!(
                "quantity {quantity} × unit price {price} is above the highest amount of a row, {MAX_AMOUNT} minor units"
            ),
        )),
    }
}

/// A configured rating bound in hundredths, or `default` when unset.
fn rating_bound(bound: Option<f64>, name: &str, default: i64) -> Result<i64, ConfigError> {
    let Some(bound) = bound else {
        return Ok(default);
    };
    let hundredths = bound * 100.0;
    if !(bound.is_finite() && hundredths.abs() <= MAX_RATING as f64) {
        return Err(ConfigError::Invalid(format!(
            "[input.mapping] {name} = {bound}: expected a number between -1000000 and 1000000"
        )));
    }
    if hundredths.fract() != 0.0 {
        return Err(ConfigError::Invalid(format!(
            "[input.mapping] {name} = {bound}: ratings are kept in hundredths, so at most two decimals"
        )));
    }
    Ok(hundredths as i64)
}

/// Ratings are decimals stored in hundredths: "3.5" is 350. A rating outside
/// `range` (hundredths, inclusive) is `rating_out_of_range`.
fn parse_rating(text: &str, field: &str, range: (i64, i64)) -> Result<i64, Rejection> {
    let text = text.trim();
    let invalid = || {
        Rejection::new(
            Reason::InvalidRating,
            format!("field {field:?}: {text:?} is not a rating"),
        )
    };
    let out_of_range = || {
        Rejection::new(
            Reason::RatingOutOfRange,
            format!(
                "field {field:?}: {text:?} is outside the scale {} to {}",
                Decimal::new(range.0, 2).normalize(),
                Decimal::new(range.1, 2).normalize()
            ),
        )
    };
    let rating = match Decimal::from_str(text).or_else(|_| Decimal::from_scientific(text)) {
        Ok(rating) => rating,
        Err(_) if is_huge_number(text) => return Err(out_of_range()),
        Err(_) => return Err(invalid()),
    };
    let hundredths = rating
        .checked_mul(Decimal::from(100))
        .ok_or_else(out_of_range)?;
    if hundredths.fract() != Decimal::ZERO {
        return Err(invalid());
    }
    match i64::try_from(hundredths) {
        Ok(hundredths) if (range.0..=range.1).contains(&hundredths) => Ok(hundredths),
        _ => Err(out_of_range()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANY_RATING: (i64, i64) = (-MAX_RATING, MAX_RATING);

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity(Some("6"), "q", false), Ok(6));
        // Empty is one unit (views in a mixed log), but not on a cancellation.
        assert_eq!(parse_quantity(None, "q", false), Ok(1));
        assert_eq!(
            parse_quantity(None, "q", true).unwrap_err().reason,
            Reason::InvalidQuantity
        );
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
        assert_eq!(parse_rating("3.5", "r", ANY_RATING), Ok(350));
        assert_eq!(parse_rating("4", "r", ANY_RATING), Ok(400));
        assert!(parse_rating("3.333", "r", ANY_RATING).is_err());
    }

    #[test]
    fn ratings_outside_the_scale_are_rejected() {
        let scale = (50, 500);
        assert_eq!(parse_rating("0.5", "r", scale), Ok(50));
        assert_eq!(parse_rating("5", "r", scale), Ok(500));
        for text in ["0", "5.5", "-1", "79228162514264337593543950335", "1e300"] {
            assert_eq!(
                parse_rating(text, "r", scale).unwrap_err().reason,
                Reason::RatingOutOfRange,
                "{text}"
            );
        }
        // Without a scale, only magnitudes no rating system uses.
        assert_eq!(
            parse_rating("7.9e28", "r", ANY_RATING).unwrap_err().reason,
            Reason::RatingOutOfRange
        );
        assert_eq!(
            parse_rating("79228162514264337593543950335", "r", ANY_RATING)
                .unwrap_err()
                .reason,
            Reason::RatingOutOfRange
        );
    }

    #[test]
    fn huge_numbers_are_rejected_not_panics() {
        // rust_decimal's `*` panics on these: every multiplication is checked.
        for text in ["1e28", "79228162514264337593543950335", "7.9e28"] {
            assert_eq!(
                parse_price(text, "p", 2).unwrap_err().reason,
                Reason::AmountOutOfRange,
                "{text}"
            );
        }
        assert_eq!(
            parse_price("1e400", "p", 2).unwrap_err().reason,
            Reason::AmountOutOfRange
        );
        assert_eq!(
            parse_price("abc", "p", 2).unwrap_err().reason,
            Reason::InvalidPrice
        );
        assert_eq!(
            parse_price("2.55", "p", 64).unwrap_err().reason,
            Reason::InvalidPrice
        );
        let seconds = TimeParser::new(Some("epoch_s"), None).unwrap();
        for text in ["79228162514264337593543950335", "1e28"] {
            assert!(seconds.parse(text, "t").is_err(), "{text}");
        }
    }

    #[test]
    fn a_pattern_reads_the_offset_or_zone_in_the_text_before_the_configured_zone() {
        let offset = TimeParser::new(Some("%Y-%m-%dT%H:%M:%S%z"), Some("Europe/Paris")).unwrap();
        let midnight_utc = 1_577_836_800_000;
        let hour = 3_600_000;
        assert_eq!(
            offset.parse("2020-01-01T00:00:00+0000", "t"),
            Ok(midnight_utc)
        );
        assert_eq!(
            offset.parse("2020-01-01T05:00:00+0500", "t"),
            Ok(midnight_utc)
        );
        assert_eq!(
            offset.parse("2020-01-01T00:00:00-0800", "t"),
            Ok(midnight_utc + 8 * hour)
        );
        let zone = TimeParser::new(Some("%Y-%m-%d %H:%M %Q"), None).unwrap();
        assert_eq!(
            zone.parse("2020-01-01 09:00 Asia/Tokyo", "t"),
            Ok(midnight_utc)
        );
        assert_eq!(
            zone.parse("2020-01-01 09:00 Nowhere/Atlantis", "t")
                .unwrap_err()
                .reason,
            Reason::InvalidTime
        );
        // Without an offset in the text, the configured zone places it.
        let civil = TimeParser::new(Some("%Y-%m-%d %H:%M"), Some("Asia/Tokyo")).unwrap();
        assert_eq!(civil.parse("2020-01-01 09:00", "t"), Ok(midnight_utc));
    }

    #[test]
    fn quantities_and_amounts_are_bounded() {
        assert_eq!(parse_quantity(Some("1000000"), "q", false), Ok(1_000_000));
        for text in [
            "1000001",
            "9223372036854775807",
            "5000000000000000000",
            "99999999999999999999",
        ] {
            assert_eq!(
                parse_quantity(Some(text), "q", false).unwrap_err().reason,
                Reason::AmountOutOfRange,
                "{text}"
            );
        }
        assert_eq!(
            parse_quantity(Some("-9223372036854775808"), "q", true)
                .unwrap_err()
                .reason,
            Reason::AmountOutOfRange
        );
        assert_eq!(check_amount(80_995, 208), Ok(()));
        assert_eq!(
            check_amount(1_000_000, MAX_PRICE).unwrap_err().reason,
            Reason::AmountOutOfRange
        );
        assert_eq!(
            check_amount(MAX_QUANTITY, MAX_AMOUNT / MAX_QUANTITY),
            Ok(())
        );
    }

    #[test]
    fn time_units_must_be_plausible() {
        let millis = TimeParser::new(Some("epoch_ms"), None).unwrap();
        let seconds = TimeParser::new(Some("epoch_s"), None).unwrap();
        assert_eq!(millis.parse("1659304800025", "t"), Ok(1_659_304_800_025));
        assert_eq!(seconds.parse("1511544070", "t"), Ok(1_511_544_070_000));
        assert_eq!(
            millis.parse("1511544070", "t").unwrap_err().reason,
            Reason::TimeUnitMismatch
        );
        assert_eq!(
            seconds.parse("1659304800025", "t").unwrap_err().reason,
            Reason::TimeUnitMismatch
        );
        assert_eq!(
            millis.parse("-5", "t").unwrap_err().reason,
            Reason::TimeOutOfRange
        );
    }
}
