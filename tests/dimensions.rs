//! An item catalog and a user attribute table, given as CSV files in the
//! config, fused with events through the real binary.

mod common;

use common::*;
use serde_json::json;

#[test]
fn catalog_and_user_attributes_fill_profiles() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("dimensions.toml");
    std::fs::write(
        &config,
        format!(
            "[catalog]\npath = {:?}\nitem = \"item\"\ncategory = \"category\"\nprice = \"price\"\nversion = \"updated_at\"\n\n\
             [user_attributes]\npath = {:?}\n",
            fixture("catalog.csv"),
            fixture("user_attributes.csv")
        ),
    )
    .unwrap();
    // Taobao rows carry their own category; a mapping without it takes the catalog's.
    let log = dir.path().join("events.csv");
    std::fs::write(
        &log,
        "user,item,behavior,ts\n1,100,buy,1511544070\n1,200,pv,1511544080\n2,100,buy,1511544090\n",
    )
    .unwrap();
    let mapped = dir.path().join("mapped.toml");
    std::fs::write(
        &mapped,
        format!(
            "[input.mapping]\nuser = \"user\"\nitem = \"item\"\naction = \"behavior\"\ntime = \"ts\"\ntime_format = \"epoch_s\"\n\
             action_synonyms = {{ pv = \"view\", buy = \"purchase\" }}\n\n{}",
            std::fs::read_to_string(&config).unwrap()
        ),
    )
    .unwrap();
    let out = dir.path().join("out");
    persona(&[
        "replay",
        "--input",
        log.to_str().unwrap(),
        "--config",
        mapped.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--changelog",
    ]);
    let profiles = records_by(&out, "profiles", "user");
    // At the end the catalog says item 100 is games at 5.00: every purchase
    // without its own price or category takes the current entry.
    assert_eq!(profiles["1"]["spend"], 500, "{}", profiles["1"]);
    assert_eq!(profiles["2"]["spend"], 500, "{}", profiles["2"]);
    let categories = |user: &str| -> Vec<String> {
        profiles[user]["top_categories"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["category"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(categories("1"), ["games", "books"]);
    assert_eq!(categories("2"), ["games"]);
    assert_eq!(
        profiles["1"]["attributes"],
        json!({"age_band": "25-34", "region": "north"})
    );
    assert_eq!(profiles["2"]["attributes"]["region"], "south");

    // Before the catalog changed, user 1's purchase was toys at 4.50; the
    // change at 1511544085 s updated the profile without any event of theirs.
    let changes = read_lines(&out, "profiles.changes");
    let spends: Vec<(u64, i64, i64)> = changes
        .iter()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .filter(|change| change["user"] == "1")
        .map(|change| {
            (
                change["time"].as_u64().unwrap(),
                change["diff"].as_i64().unwrap(),
                change["spend"].as_i64().unwrap(),
            )
        })
        .collect();
    assert!(spends.contains(&(1_511_544_070_000, 1, 450)), "{spends:?}");
    assert!(spends.contains(&(1_511_544_085_000, -1, 450)), "{spends:?}");
    assert!(spends.contains(&(1_511_544_085_000, 1, 500)), "{spends:?}");
}

/// A catalog whose header lacks a configured column is a data error naming
/// the file and the columns it has, not an "invalid config".
#[test]
fn a_catalog_lacking_a_column_names_the_file_not_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = dir.path().join("catalog.csv");
    std::fs::write(&catalog, "item,category\n100,toys\n").unwrap();
    let config = dir.path().join("catalog.toml");
    std::fs::write(
        &config,
        format!(
            "[input.mapping]\nuser = \"user\"\nitem = \"item\"\naction_constant = \"view\"\ntime = \"ts\"\n\n\
             [catalog]\npath = {catalog:?}\nprice = \"price\"\n"
        ),
    )
    .unwrap();
    let log = dir.path().join("events.csv");
    std::fs::write(&log, "user,item,ts\n1,100,1511544070000\n").unwrap();
    let out = dir.path().join("out");
    let stderr = persona_fails(&[
        "replay",
        "--input",
        log.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        stderr.contains("catalog.csv: no column \"price\" (columns: item, category)"),
        "{stderr}"
    );
    assert!(!stderr.contains("invalid config"), "{stderr}");
}
