//! Property tests of every format: arbitrary bytes and mutated valid records
//! never panic a decoder, and every record is either accepted or rejected
//! with a reason.

use persona::config::PipelineConfig;
use persona::format::{preset, Decoder, Outcome};
use persona::rejected::Position;
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
        if let Err((_, rejection)) = outcome {
            let code = rejection.reason.code();
            assert!(
                !code.is_empty()
                    && code
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            );
            assert!(!rejection.detail.is_empty());
        }
    }
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
