//! Golden profiles of the real Online Retail log, checked against values
//! computed here independently: the CSV read with the `csv` crate, cents by
//! string arithmetic, and duplicates, cancellations and non-products handled
//! by the rules of the preset, written out plainly: a purchase row and a
//! cancellation row are each a record, and a cancellation takes back units.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::Read;

use common::*;

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

#[derive(Default, Debug)]
struct Expected {
    purchases: i64,
    cancellations: i64,
    quantity: i64,
    spend: i64,
    /// Per item with a purchase row: units bought less units cancelled.
    units: BTreeMap<String, i64>,
    /// Latest purchase row time (as written in the CSV) per item.
    last_purchase: BTreeMap<String, String>,
}

impl Expected {
    /// Items the customer still owns: more units bought than cancelled.
    fn owned(&self) -> BTreeSet<&str> {
        let owned = self.units.iter().filter(|(_, units)| **units > 0);
        owned.map(|(item, _)| item.as_str()).collect()
    }
}

/// The expected profile features of `customers`, computed from the raw CSV.
fn expected(customers: &[&str]) -> BTreeMap<String, Expected> {
    let mut text = String::new();
    liblzma::read::XzDecoder::new(
        std::fs::File::open(shared_data("online_retail_all.csv.xz")).unwrap(),
    )
    .read_to_string(&mut text)
    .unwrap();
    let wanted: BTreeSet<&str> = customers.iter().copied().collect();
    let mut seen = HashSet::new();
    let mut profiles: BTreeMap<String, Expected> = BTreeMap::new();
    for row in csv::Reader::from_reader(text.as_bytes()).records() {
        let row = row.unwrap();
        let (invoice, stock, quantity, date, price, customer) =
            (&row[0], row[1].trim(), &row[3], &row[4], &row[5], &row[6]);
        let customer = customer.trim_end_matches(".0");
        if !wanted.contains(customer) || NON_PRODUCTS.contains(&stock) {
            continue;
        }
        // A second identical invoice line is a duplicate.
        if !seen.insert((
            invoice.to_owned(),
            stock.to_owned(),
            quantity.to_owned(),
            date.to_owned(),
            price.to_owned(),
        )) {
            continue;
        }
        let quantity: i64 = quantity.parse().unwrap();
        let profile = profiles.entry(customer.to_owned()).or_default();
        let sign = if invoice.starts_with('C') { -1 } else { 1 };
        if sign < 0 {
            profile.cancellations += 1;
        } else {
            profile.purchases += 1;
            let latest = profile.last_purchase.entry(stock.to_owned()).or_default();
            // "2010-12-07 14:57:00" sorts as it reads.
            if date > latest.as_str() {
                *latest = date.to_owned();
            }
        }
        profile.quantity += sign * quantity.abs();
        profile.spend += sign * quantity.abs() * cents(price);
        *profile.units.entry(stock.to_owned()).or_default() += sign * quantity.abs();
    }
    profiles
}

#[test]
fn online_retail_profiles_match_an_independent_computation() {
    let customers = [
        "12346", "12347", "12583", "13047", "17850", "14911", "15311", "17912",
    ];
    let expected = expected(&customers);
    let (out, _) = replay(
        &shared_data("online_retail_all.csv.xz"),
        "online-retail",
        &[],
    );
    let profiles = records_by(out.path(), "profiles", "user");

    // The two figures of the issue, as stated there.
    assert_eq!(profiles["12347"]["spend"], 431_000);
    assert_eq!(profiles["12346"]["spend"], 0, "{}", profiles["12346"]);

    for customer in customers {
        let want = &expected[customer];
        let got = &profiles[customer];
        assert_eq!(got["spend"], want.spend, "spend of {customer}: {got}");
        assert_eq!(
            got["quantity"], want.quantity,
            "quantity of {customer}: {got}"
        );
        assert_eq!(
            got["counts"]["purchase"].as_i64().unwrap_or(0),
            want.purchases,
            "purchases of {customer}: {got}"
        );
        assert_eq!(
            got["counts"]["cancellation"].as_i64().unwrap_or(0),
            want.cancellations,
            "cancellations of {customer}: {got}"
        );
        assert_eq!(
            got["distinct_items"],
            want.owned().len(),
            "distinct items of {customer}: {got}"
        );
        // The latest purchase of an item still owned, if any.
        let last_purchase = want
            .owned()
            .iter()
            .filter_map(|item| want.last_purchase.get(*item))
            .max()
            .map(|date| london_ms(date));
        assert_eq!(
            got["last_purchase"].as_i64(),
            last_purchase,
            "last purchase of {customer}: {got}"
        );
    }
    // 12346 bought 74,215 of one item and cancelled them all.
    assert_eq!(profiles["12346"]["distinct_items"], 0);
    assert_eq!(profiles["12346"]["last_purchase"], serde_json::Value::Null);
    assert_eq!(profiles["12346"]["segment"], "prospect");
    // 12347's first purchase: 2010-12-07 14:57 in London, which is GMT in December.
    let first = jiff::Timestamp::from_second(1_291_733_820)
        .unwrap()
        .as_millisecond();
    assert_eq!(profiles["12347"]["first_seen"], first);
}
