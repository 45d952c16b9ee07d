//! `[risk]` through the real binary: the same profiles and alerts on 1 and 2
//! workers, rules checked at start with errors naming the
//! rule, and golden risk features of the real Online Retail log, checked against
//! values computed here independently and plainly: the CSV read with the
//! `csv` crate, cents by string arithmetic, the rows kept by the preset's
//! rules (as in `profiles_golden.rs`), and the features of the `risk`
//! section (docs/risk.md) written out from their definitions with
//! `BTreeMap`s: no persona code is used to compute the expected values.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::time::Instant;

use common::*;
use serde_json::Value;

const NON_PRODUCTS: [&str; 12] = [
    "POST",
    "DOT",
    "M",
    "m",
    "C2",
    "D",
    "S",
    "B",
    "BANK CHARGES",
    "AMAZONFEE",
    "CRUK",
    "PADS",
];

const DAY_MS: i64 = 86_400_000;
/// `[risk] history_days` by default.
const HISTORY_DAYS: i64 = 30;
/// The longest default velocity window, in ms.
const HOUR_MS: i64 = 3_600_000;

/// The records the preset keeps, per customer: `(time_ms, spend)`, spend
/// being +quantity·price for a purchase row and −quantity·price for a
/// cancellation row; and how many rows were dropped as duplicates.
fn records_per_customer() -> (BTreeMap<String, Vec<(i64, i64)>>, u64) {
    let mut text = String::new();
    liblzma::read::XzDecoder::new(
        std::fs::File::open(shared_data("online_retail_all.csv.xz")).unwrap(),
    )
    .read_to_string(&mut text)
    .unwrap();
    let mut seen = HashSet::new();
    let mut duplicates = 0;
    let mut customers: BTreeMap<String, Vec<(i64, i64)>> = BTreeMap::new();
    for row in csv::Reader::from_reader(text.as_bytes()).records() {
        let row = row.unwrap();
        let (invoice, stock, quantity, date, price, customer) = (
            row[0].trim(),
            row[1].trim(),
            row[3].trim(),
            &row[4],
            row[5].trim(),
            row[6].trim(),
        );
        // `17850.0` is customer `17850`; a row without one is rejected.
        let customer = customer.strip_suffix(".0").unwrap_or(customer);
        if customer.is_empty() || stock.is_empty() || NON_PRODUCTS.contains(&stock) {
            continue;
        }
        let cancelled = invoice.starts_with('C');
        let quantity: i64 = quantity.parse().unwrap();
        // A zero quantity, a negative one outside a cancellation, or a
        // negative price is rejected (none of them has a customer here).
        if quantity == 0 || (quantity < 0 && !cancelled) || price.starts_with('-') {
            continue;
        }
        let (quantity, price) = (quantity.abs(), cents(price));
        // A second identical invoice line (same time, so within the
        // dedup horizon) is a duplicate.
        let key = (
            customer.to_owned(),
            invoice.to_owned(),
            stock.to_owned(),
            quantity,
            date.to_owned(),
            price,
            cancelled,
        );
        if !seen.insert(key) {
            duplicates += 1;
            continue;
        }
        let sign = if cancelled { -1 } else { 1 };
        customers
            .entry(customer.to_owned())
            .or_default()
            .push((london_ms(date), sign * quantity * price));
    }
    (customers, duplicates)
}

/// The expected risk features of one customer.
#[derive(Debug)]
struct Expected {
    /// L: the latest record time.
    as_of_ms: i64,
    /// D: the UTC day of L.
    day: i64,
    spend: i64,
    events: i64,
    active_days: i64,
    max_spend_before: i64,
    spend_z: Option<f64>,
    /// `velocity.3600.spend`.
    hour_spend: i64,
}

fn expected(records: &[(i64, i64)]) -> Expected {
    let latest = records.iter().map(|(time, _)| *time).max().unwrap();
    let day = latest.div_euclid(DAY_MS);
    // Per UTC day: (spend, number of records).
    let mut days: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
    for (time, spend) in records {
        let bucket = days.entry(time.div_euclid(DAY_MS)).or_default();
        bucket.0 += spend;
        bucket.1 += 1;
    }
    let (spend, events) = days.get(&day).copied().unwrap_or_default();
    // The 30 days before D, days without records counting as zero.
    let history: Vec<(i64, i64)> = (day - HISTORY_DAYS..day)
        .map(|d| days.get(&d).copied().unwrap_or_default())
        .collect();
    let n = HISTORY_DAYS as i128;
    let s1: i128 = history.iter().map(|(s, _)| *s as i128).sum();
    let s2: i128 = history
        .iter()
        .map(|(s, _)| (*s as i128) * (*s as i128))
        .sum();
    let spread = n * s2 - s1 * s1;
    let spend_z = (spread != 0).then(|| (n * spend as i128 - s1) as f64 / (spread as f64).sqrt());
    let hour_spend = records
        .iter()
        .filter(|(time, _)| latest - HOUR_MS < *time && *time <= latest)
        .map(|(_, spend)| spend)
        .sum();
    Expected {
        as_of_ms: latest,
        day,
        spend,
        events,
        active_days: history.iter().filter(|(_, count)| *count != 0).count() as i64,
        max_spend_before: history.iter().map(|(s, _)| *s).max().unwrap_or(0).max(0),
        spend_z,
        hour_spend,
    }
}

/// The `day.spend_z` of a profiles line, read from its own text with
/// `str::parse` (correctly rounded), so that the bits persona wrote are the
/// bits compared, whatever the float parsing of `serde_json`.
fn raw_spend_z(line: &str) -> Option<f64> {
    let key = "\"spend_z\":";
    let start = line.find(key).expect("a spend_z field") + key.len();
    assert!(
        line[start..].find(key).is_none(),
        "one spend_z per line: {line}"
    );
    let token = line[start..].split([',', '}']).next().unwrap().trim();
    match token {
        "null" => None,
        number => Some(number.parse().unwrap()),
    }
}

/// The 10 largest non-null z-scores, ties by customer id.
fn top_ten<'a>(z: impl Iterator<Item = (&'a str, f64)>) -> Vec<(&'a str, f64)> {
    let mut z: Vec<(&str, f64)> = z.collect();
    z.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
    z.truncate(10);
    z
}

#[test]
fn online_retail_risk_features_match_an_independent_computation() {
    let started = Instant::now();
    let (out, summary) = replay_with_config(
        &shared_data("online_retail_all.csv.xz"),
        "[risk]\n",
        &["--format", "online-retail"],
    );
    let replayed = started.elapsed();
    let (records, duplicates) = records_per_customer();
    let want: BTreeMap<&str, Expected> = records
        .iter()
        .map(|(customer, records)| (customer.as_str(), expected(records)))
        .collect();

    // The default rules raise what docs/risk.md says they raise over the year.
    let mut per_rule: BTreeMap<String, usize> = BTreeMap::new();
    for line in read_lines(out.path(), "alerts") {
        let alert: Value = serde_json::from_str(&line).unwrap();
        *per_rule
            .entry(alert["rule"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    let documented = [
        ("hour_spend", 93),
        ("purchase_after_idle", 428),
        ("spend_above_largest", 31),
        ("unusual_day_spend", 135),
    ];
    let documented: BTreeMap<String, usize> = documented
        .iter()
        .map(|(r, n)| (r.to_string(), *n))
        .collect();
    assert_eq!(per_rule, documented, "alerts per default rule");

    // The log is in invoice-date order: nothing is late, so every kept row
    // is applied, and the rows kept here are the rows persona accepted.
    assert_eq!(summary["late"], 0, "{summary}");
    assert_eq!(summary["duplicates"], duplicates, "{summary}");
    let kept: usize = records.values().map(Vec::len).sum();
    assert_eq!(summary["accepted"], kept, "{summary}");

    // Profiles by customer, with the spend_z read from each line's text.
    let mut got: BTreeMap<String, (Value, Option<f64>)> = BTreeMap::new();
    for line in read_lines(out.path(), "profiles") {
        let profile: Value = serde_json::from_str(&line).unwrap();
        let user = profile["user"].as_str().unwrap().to_owned();
        got.insert(user, (profile, raw_spend_z(&line)));
    }
    assert_eq!(
        got.keys().map(String::as_str).collect::<Vec<_>>(),
        want.keys().copied().collect::<Vec<_>>(),
        "the customers with a profile"
    );

    // 1. The ten largest day.spend_z, in order, and their day.
    let got_top = top_ten(
        got.iter()
            .filter_map(|(user, (_, z))| z.map(|z| (user.as_str(), z))),
    );
    let want_top = top_ten(
        want.iter()
            .filter_map(|(user, w)| w.spend_z.map(|z| (*user, z))),
    );
    let ids = |top: &[(&str, f64)]| top.iter().map(|(id, _)| id.to_string()).collect::<Vec<_>>();
    assert_eq!(ids(&got_top), ids(&want_top), "the ten largest day.spend_z");
    eprintln!("the five largest day.spend_z of Online Retail (as of each customer's last record):");
    for (rank, (user, z)) in want_top.iter().enumerate() {
        let w = &want[user];
        let day = &got[*user].0["risk"]["day"];
        if rank < 5 {
            eprintln!(
                "  {user}: spend_z {z:?}, day {} spend {} in {} records, {} active days before, largest day before {}",
                w.day, w.spend, w.events, w.active_days, w.max_spend_before
            );
        }
        assert_eq!(day["day"], w.day, "day of {user}: {day}");
        assert_eq!(day["spend"], w.spend, "day spend of {user}: {day}");
        assert_eq!(day["events"], w.events, "day events of {user}: {day}");
        assert_eq!(
            day["active_days"], w.active_days,
            "active days of {user}: {day}"
        );
        assert_eq!(
            day["max_spend_before"], w.max_spend_before,
            "largest day before of {user}: {day}"
        );
        // The same integer sums and the same two float operations (a
        // division by a square root, both correctly rounded): equal bits.
        let got_z = got[*user].1.unwrap();
        assert_eq!(
            got_z.to_bits(),
            z.to_bits(),
            "spend_z of {user}: persona {got_z:?}, here {z:?}"
        );
    }

    // 2. Every customer: L and the spend of L's UTC day.
    for (user, w) in &want {
        let risk = &got[*user].0["risk"];
        assert_eq!(risk["as_of_ms"], w.as_of_ms, "as_of_ms of {user}: {risk}");
        assert_eq!(risk["day"]["day"], w.day, "day of {user}: {risk}");
        assert_eq!(risk["day"]["spend"], w.spend, "day spend of {user}: {risk}");
    }

    // 3. The last hour's spend of 20 customers spread over the ids.
    let step = want.len() / 20;
    for (user, w) in want.iter().step_by(step).take(20) {
        let velocity = &got[*user].0["risk"]["velocity"]["3600"];
        assert_eq!(
            velocity["spend"], w.hour_spend,
            "velocity.3600.spend of {user}: {velocity}"
        );
    }
    eprintln!(
        "{} customers checked; replay {:.1?}, whole test {:.1?}",
        want.len(),
        replayed,
        started.elapsed()
    );
}

#[test]
fn profiles_and_alerts_are_the_same_on_one_and_two_workers() {
    let dir = tempfile::tempdir().unwrap();
    let slice = common::kafka::online_retail_lines(dir.path(), "slice", 0, 60_000);
    let runs: Vec<(tempfile::TempDir, Value)> = [&["-w", "1"][..], &["-w", "2"]]
        .iter()
        .map(|flags| {
            let extra = [&["--format", "online-retail"][..], flags].concat();
            replay_with_config(&slice, LOW_RISK_RULES, &extra)
        })
        .collect();
    let alerts = read_lines(runs[0].0.path(), "alerts");
    assert!(alerts.len() > 20, "{} alerts", alerts.len());
    let rules: HashSet<String> = alerts
        .iter()
        .map(|line| serde_json::from_str::<Value>(line).unwrap()["rule"].to_string())
        .collect();
    assert_eq!(rules.len(), 3, "every rule fires: {rules:?}");
    for (out, _) in &runs[1..] {
        for output in ["profiles", "alerts"] {
            assert_eq!(
                read_lines(out.path(), output),
                read_lines(runs[0].0.path(), output),
                "{output}"
            );
        }
    }
    assert_eq!(
        deterministic_part(&runs[0].1),
        deterministic_part(&runs[1].1)
    );
}

#[test]
fn bad_rules_stop_the_command_with_the_rule_named() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("risk.toml");
    let input = fixture("retail_dirty.csv");
    for (rule, expected) in [
        (
            r#"name = "burst"
feature = "velocity.90.events"
op = ">"
threshold = 5"#,
            r#"[risk] rules[0] ("burst").feature: expected a window of velocity_secs [60, 600, 3600], not "90""#,
        ),
        (
            r#"name = "z"
feature = "day.spend_z"
op = "=>"
threshold = 5"#,
            r#"[risk] rules[0] ("z").op: expected one of >, >=, <, <="#,
        ),
        (
            r#"name = "z"
feature = "day.spend_z"
op = ">"
threshold = 5
min_history = 3"#,
            "unknown field `min_history`",
        ),
    ] {
        std::fs::write(&config, format!("[risk]\n[[risk.rules]]\n{rule}\n")).unwrap();
        let out = dir.path().join("out");
        let stderr = persona_fails(&[
            "replay",
            "--format",
            "online-retail",
            "--config",
            config.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(stderr.contains(expected), "{stderr}");
        assert!(!out.exists(), "a failed start writes no outputs");
    }
}
