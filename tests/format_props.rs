//! Property tests of every format: arbitrary bytes and mutated valid records
//! never panic a decoder, and every record is either accepted or rejected
//! with a reason.

use persona::config::PipelineConfig;
use persona::format::mapping::{MAX_AMOUNT, MAX_PRICE, MAX_QUANTITY, MAX_RATING};
use persona::format::{preset, Decoder, Outcome};
use persona::rejected::{Position, Reason};
use proptest::prelude::*;

/// A decoder for a preset, with its header read, and a valid record.
fn decoder(name: &str) -> (Decoder, &'static str) {
    let (path, header, valid) = match name {
        "online-retail" => (
            "retail.csv",
            Some(
                "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country",
            ),
            "536365,85123A,WHITE HANGING HEART,6,2010-12-01 08:26:00,2.55,17850.0,United Kingdom",
        ),
        "movielens" => ("u.data", None, "196\t242\t3\t881250949"),
        "taobao" => ("UserBehavior.csv", None, "1,2268318,2520377,pv,1511544070"),
        "otto" => (
            "otto.jsonl",
            None,
            r#"{"session":0,"events":[{"aid":1517085,"ts":1659304800025,"type":"clicks"}]}"#,
        ),
        _ => unreachable!(),
    };
    let config: PipelineConfig = preset::preset(name, Some(std::path::Path::new(path))).unwrap();
    let mut decoder = Decoder::new(&config).unwrap();
    if let Some(header) = header {
        decoder.read_header(header.as_bytes(), &position()).unwrap();
    }
    (decoder, valid)
}

fn position() -> Position {
    Position::File {
        file: "prop".into(),
        line: 1,
        index: None,
    }
}

fn check_outcomes(outcomes: &[Outcome]) {
    assert!(!outcomes.is_empty(), "a line produced no outcome at all");
    for outcome in outcomes {
        match outcome {
            Err((_, rejection)) => {
                let code = rejection.reason.code();
                assert!(
                    !code.is_empty()
                        && code
                            .chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                );
                assert!(!rejection.detail.is_empty());
            }
            // What is accepted stays inside the bounds that keep every sum
            // of the profiles exact.
            Ok(decoded) => {
                let event = &decoded.event;
                assert!((1..=MAX_QUANTITY).contains(&event.quantity), "{event:?}");
                if let Some(price) = event.price {
                    assert!((0..=MAX_PRICE).contains(&price), "{event:?}");
                    assert!(event.quantity * price <= MAX_AMOUNT, "{event:?}");
                }
                if let Some(rating) = event.rating {
                    assert!((-MAX_RATING..=MAX_RATING).contains(&rating), "{event:?}");
                }
                assert!(
                    (0..=253_402_300_799_999).contains(&event.time_ms),
                    "{event:?}"
                );
                for id in [&decoded.user_name, &decoded.item_name] {
                    assert!(!id.chars().any(char::is_control), "{id:?}");
                }
            }
        }
    }
}

/// Numbers that overflow i64, rust_decimal (about 7.9e28) or f64, and
/// random ones with signs, points and exponents.
fn nasty_number() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "9223372036854775807",
            "9223372036854775808",
            "-9223372036854775808",
            "5000000000000000000",
            "79228162514264337593543950335",
            "79228162514264337593543950336",
            "-79228162514264337593543950335",
            "7.9e28",
            "1e28",
            "1e29",
            "1e400",
            "1e-400",
            "0.0000000000000000000000000001",
            "18446744073709551616",
            "1E+308",
            "-0",
            "NaN",
            "inf",
        ])
        .prop_map(str::to_owned),
        "[-+]?[0-9]{1,40}(\\.[0-9]{0,30})?([eE][-+]?[0-9]{1,4})?",
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|n| n.to_string()),
    ]
}

/// A control character other than the line and field ends of CSV.
fn control_character() -> impl Strategy<Value = char> {
    prop_oneof![
        (0u32..0x20).prop_filter_map("not a line end or tab", |c| {
            (![0x09, 0x0a, 0x0d].contains(&c)).then(|| char::from_u32(c).unwrap())
        }),
        Just('\u{7f}'),
        (0x80u32..0xa0).prop_map(|c| char::from_u32(c).unwrap()),
    ]
}

/// A valid record with some bytes replaced, inserted or removed.
fn mutated(valid: &'static str) -> impl Strategy<Value = Vec<u8>> {
    let len = valid.len();
    prop::collection::vec((0..len, any::<u8>(), 0..3u8), 1..6).prop_map(move |edits| {
        let mut bytes = valid.as_bytes().to_vec();
        for (at, byte, kind) in edits {
            let at = at.min(bytes.len().saturating_sub(1));
            match kind {
                0 if !bytes.is_empty() => bytes[at] = byte,
                1 => bytes.insert(at, byte),
                _ if !bytes.is_empty() => {
                    bytes.remove(at);
                }
                _ => {}
            }
        }
        bytes.retain(|b| *b != b'\n');
        bytes
    })
}

const PRESETS: [&str; 4] = ["online-retail", "movielens", "taobao", "otto"];

#[test]
fn valid_records_are_accepted() {
    for name in PRESETS {
        let (decoder, valid) = decoder(name);
        let mut outcomes = Vec::new();
        decoder.decode(valid.as_bytes(), &position(), &mut outcomes);
        assert!(outcomes.iter().all(Result::is_ok), "{name}: {outcomes:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200), which in 0..4usize) {
        let (decoder, _) = decoder(PRESETS[which]);
        let mut outcomes = Vec::new();
        decoder.decode(&bytes, &position(), &mut outcomes);
        check_outcomes(&outcomes);
    }

    #[test]
    fn mutated_records_are_accepted_or_rejected(
        (which, bytes) in (0..4usize).prop_flat_map(|which| (Just(which), mutated(decoder(PRESETS[which]).1)))
    ) {
        let (decoder, _) = decoder(PRESETS[which]);
        let mut outcomes = Vec::new();
        decoder.decode(&bytes, &position(), &mut outcomes);
        check_outcomes(&outcomes);
    }

    #[test]
    fn prices_are_exact_minor_units(units in 0u64..1_000_000, cents in 0u64..100) {
        let (decoder, _) = decoder("online-retail");
        let line = format!("536365,85123A,X,1,2010-12-01 08:26:00,{units}.{cents:02},17850.0,UK");
        let mut outcomes = Vec::new();
        decoder.decode(line.as_bytes(), &position(), &mut outcomes);
        let decoded = outcomes.pop().unwrap().unwrap();
        prop_assert_eq!(decoded.event.price, Some((units * 100 + cents) as i64));
    }
}

/// Each preset's record with its numeric fields replaced: the quantity and
/// price of Online Retail, the rating and epoch seconds of MovieLens, the
/// epoch seconds of Taobao, the epoch milliseconds of OTTO.
fn with_numbers(which: usize, a: &str, b: &str) -> String {
    match PRESETS[which] {
        "online-retail" => {
            format!("536365,85123A,X,{a},2010-12-01 08:26:00,{b},17850.0,United Kingdom")
        }
        "movielens" => format!("196\t242\t{a}\t{b}"),
        "taobao" => format!("1,2268318,2520377,pv,{a}"),
        "otto" => {
            format!(r#"{{"session":0,"events":[{{"aid":1517085,"ts":{a},"type":"clicks"}}]}}"#)
        }
        _ => unreachable!(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn huge_and_overflowing_numbers_are_rejected_not_panics(
        which in 0..4usize,
        a in nasty_number(),
        b in nasty_number(),
    ) {
        let (decoder, _) = decoder(PRESETS[which]);
        let mut outcomes = Vec::new();
        decoder.decode(with_numbers(which, &a, &b).as_bytes(), &position(), &mut outcomes);
        check_outcomes(&outcomes);
    }

    #[test]
    fn quantities_whose_amount_overflows_are_rejected(
        quantity in 1i64..=i64::MAX,
        cents in 1i64..100_000_000,
    ) {
        let (decoder, _) = decoder("online-retail");
        let price = format!("{}.{:02}", cents / 100, cents % 100);
        let mut outcomes = Vec::new();
        let line = with_numbers(0, &quantity.to_string(), &price);
        decoder.decode(line.as_bytes(), &position(), &mut outcomes);
        check_outcomes(&outcomes);
        let fits = quantity <= MAX_QUANTITY && quantity * cents <= MAX_AMOUNT;
        match outcomes.pop().unwrap() {
            Ok(decoded) => {
                prop_assert!(fits);
                prop_assert_eq!(decoded.event.quantity * decoded.event.price.unwrap(), quantity * cents);
            }
            Err((_, rejection)) => {
                prop_assert!(!fits);
                prop_assert_eq!(rejection.reason, Reason::AmountOutOfRange);
            }
        }
    }

    #[test]
    fn control_characters_in_ids_are_rejected(
        which in 0..4usize,
        at in 1..4usize,
        control in control_character(),
    ) {
        let (decoder, valid) = decoder(PRESETS[which]);
        // The user id of each valid record, with a control character inside.
        let user = match PRESETS[which] {
            "online-retail" => "17850.0",
            "movielens" => "196",
            "taobao" => "1",
            _ => "0",
        };
        // Inside the id: at its ends some control characters are whitespace, trimmed.
        let bad = if user.len() == 1 {
            format!("{user}{control}{user}")
        } else {
            let at = at.min(user.len() - 1);
            format!("{}{control}{}", &user[..at], &user[at..])
        };
        let line = match PRESETS[which] {
            "otto" => valid.replacen(
                r#""session":0"#,
                &format!(r#""session":{}"#, serde_json::Value::String(bad)),
                1,
            ),
            _ => valid.replacen(user, &bad, 1),
        };
        let mut outcomes = Vec::new();
        decoder.decode(line.as_bytes(), &position(), &mut outcomes);
        check_outcomes(&outcomes);
        for outcome in &outcomes {
            let rejection = &outcome.as_ref().unwrap_err().1;
            prop_assert_eq!(rejection.reason, Reason::InvalidId, "{:?}", line);
        }
    }
}
