//! `[privacy]` through the real binary: pseudonymised ids everywhere a
//! replay writes, the same outputs as without them, and keys refused when
//! missing, short or written into the config.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use common::*;
use persona::config::IdKind;
use persona::privacy::Pseudonyms;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde_json::Value;

const KEY: &str = "a test key that is long enough for HMAC-SHA-256";

/// Replaces every `user` (`item`) string field of `value`, at any depth, by
/// its pseudonym: what the plain outputs become under pseudonymisation.
fn pseudonymised(value: &Value, pseudonyms: &Pseudonyms) -> Value {
    match value {
        Value::Object(object) => Value::Object(
            object
                .iter()
                .map(|(key, field)| {
                    let field = match (key.as_str(), field) {
                        ("user", Value::String(id)) => Value::from(pseudonyms.user(id)),
                        ("item", Value::String(id)) => Value::from(pseudonyms.item(id)),
                        _ => pseudonymised(field, pseudonyms),
                    };
                    (key.clone(), field)
                })
                .collect(),
        ),
        Value::Array(values) => Value::Array(
            values
                .iter()
                .map(|v| pseudonymised(v, pseudonyms))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Every file under `dir`, as text.
fn texts_under(dir: &Path, texts: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            texts_under(&path, texts);
        } else {
            let bytes = std::fs::read(&path).unwrap();
            texts.push((
                path.display().to_string(),
                String::from_utf8_lossy(&bytes).into_owned(),
            ));
        }
    }
}

#[test]
fn pseudonymised_outputs_hold_no_raw_id_and_equal_the_plain_outputs() {
    let log = shared_data("online_retail_all.csv.xz");
    let dir = tempfile::tempdir().unwrap();
    let (plain, plain_summary) = replay(&log, "online-retail", &[]);
    let profiles = records_by(plain.path(), "profiles", "user");

    // Dimension tables keyed by raw ids, pseudonymised as they are read.
    let users: Vec<&String> = profiles.keys().step_by(97).collect();
    let mut attributes = String::from("CustomerID,tier\n");
    for user in &users {
        attributes.push_str(&format!("{user},gold\n"));
    }
    let attributes_path = dir.path().join("tiers.csv");
    std::fs::write(&attributes_path, attributes).unwrap();
    let items: BTreeSet<String> = read_lines(plain.path(), "similar_items")
        .iter()
        .map(|line| {
            let record: Value = serde_json::from_str(line).unwrap();
            record["item"].as_str().unwrap().to_owned()
        })
        .collect();
    let catalog_items: Vec<&String> = items.iter().step_by(53).collect();
    let mut catalog = String::from("StockCode,category\n");
    for item in &catalog_items {
        catalog.push_str(&format!("{item},shelf-{}\n", item.len()));
    }
    let catalog_path = dir.path().join("catalog.csv");
    std::fs::write(&catalog_path, catalog).unwrap();
    // Co-occurrence alone: the factorisation's initial weights are seeded
    // by the ids, so renamed ids train another model (docs/privacy.md).
    let tables = format!(
        "[catalog]\npath = {catalog_path:?}\nitem = \"StockCode\"\ncategory = \"category\"\n\n\
         [user_attributes]\npath = {attributes_path:?}\nuser = \"CustomerID\"\n\n\
         [recommend]\nmf_weight = 0.0\n"
    );
    let plain_config = dir.path().join("plain.toml");
    std::fs::write(&plain_config, &tables).unwrap();
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
    let private_config = dir.path().join("private.toml");
    std::fs::write(
        &private_config,
        format!(
            "{tables}\n[privacy]\npseudonymize = [\"user\", \"item\"]\nkey_file = {key_file:?}\n"
        ),
    )
    .unwrap();

    let (plain, plain_summary_with_tables) = replay(
        &log,
        "online-retail",
        &["--config", plain_config.to_str().unwrap()],
    );
    let out = dir.path().join("out");
    let output = Command::new(env!("CARGO_BIN_EXE_persona"))
        .args(["replay", "--format", "online-retail", "-w", "2", "--input"])
        .arg(&log)
        .arg("--config")
        .arg(&private_config)
        .arg("--out")
        .arg(&out)
        .env("PERSONA_LOG", "info")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let pseudonyms = Pseudonyms::with_key(KEY.as_bytes(), &[IdKind::User, IdKind::Item]).unwrap();

    // Every raw user and item id (with a digit and at least 3 characters, so
    // that words of messages are not taken for ids) is absent from every file
    // written and from what the process printed.
    let mut raw_ids: BTreeSet<String> = profiles.keys().cloned().collect();
    raw_ids.extend(items.iter().cloned());
    raw_ids.retain(|id| id.len() >= 3 && id.bytes().any(|b| b.is_ascii_digit()));
    assert!(raw_ids.len() > 5_000, "{} ids", raw_ids.len());
    let mut texts = Vec::new();
    texts_under(&out, &mut texts);
    texts.push((
        "stdout".into(),
        String::from_utf8_lossy(&output.stdout).into(),
    ));
    texts.push((
        "stderr".into(),
        String::from_utf8_lossy(&output.stderr).into(),
    ));
    assert!(texts.len() >= 7, "{texts:?}");
    for (name, text) in &texts {
        let found = raw_ids_in(text, &raw_ids);
        assert!(found.is_empty(), "{name} holds raw ids: {found:?}");
    }
    let rejected = read_lines(&out, "rejected");
    assert!(!rejected.is_empty());

    // The same outputs as without pseudonyms, ids replaced.
    let summary = read_json(&out.join("summary.json"));
    assert_eq!(
        deterministic_part(&summary),
        deterministic_part(&plain_summary_with_tables)
    );
    assert_eq!(summary["accepted"], plain_summary["accepted"]);
    let private_profiles = records_by(&out, "profiles", "user");
    let expected: BTreeMap<String, Value> = records_by(plain.path(), "profiles", "user")
        .values()
        .map(|profile| {
            let profile = pseudonymised(profile, &pseudonyms);
            (profile["user"].as_str().unwrap().to_owned(), profile)
        })
        .collect();
    assert_eq!(private_profiles.len(), expected.len());
    assert!(private_profiles == expected, "profiles differ");
    let tiered = &private_profiles[pseudonyms.user(users[1]).as_ref()];
    assert_eq!(tiered["attributes"]["tier"], "gold", "{tiered}");
    // Rankings cut ties among equally recent items by item id, so with items
    // pseudonymised they may keep other items: the rankings are compared
    // under user pseudonyms only, where they must be the same.
    let users_config = dir.path().join("users.toml");
    std::fs::write(
        &users_config,
        format!("{tables}\n[privacy]\npseudonymize = [\"user\"]\nkey_file = {key_file:?}\n"),
    )
    .unwrap();
    let (users_only, _) = replay(
        &log,
        "online-retail",
        &["--config", users_config.to_str().unwrap()],
    );
    let user_pseudonyms = Pseudonyms::with_key(KEY.as_bytes(), &[IdKind::User]).unwrap();
    for (name, key) in [("similar_items", "item"), ("recommendations", "user")] {
        let expected: Vec<Value> = read_lines(plain.path(), name)
            .iter()
            .map(|line| pseudonymised(&serde_json::from_str(line).unwrap(), &user_pseudonyms))
            .collect();
        let expected: BTreeMap<&str, &Value> = expected
            .iter()
            .map(|record| (record[key].as_str().unwrap(), record))
            .collect();
        let found = records_by(users_only.path(), name, key);
        assert_eq!(found.len(), expected.len(), "{name}");
        assert!(
            found
                .iter()
                .all(|(id, record)| expected.get(id.as_str()) == Some(&record)),
            "{name} differ"
        );
    }
    let reasons = |lines: &[String]| -> Vec<(String, Value)> {
        let mut reasons: Vec<_> = lines
            .iter()
            .map(|line| {
                let letter: Value = serde_json::from_str(line).unwrap();
                (
                    letter["reason"].to_string(),
                    letter["source"]["line"].clone(),
                )
            })
            .collect();
        reasons.sort_by_key(|(reason, line)| (reason.clone(), line.to_string()));
        reasons
    };
    assert_eq!(
        reasons(&rejected),
        reasons(&read_lines(plain.path(), "rejected"))
    );

    // The command an operator finds a user of the outputs with.
    let found = persona(&[
        "pseudonym",
        "--format",
        "online-retail",
        "--config",
        private_config.to_str().unwrap(),
        "--user",
        &format!("{}.0", users[1]),
    ]);
    let found: Value = serde_json::from_str(found.trim()).unwrap();
    assert_eq!(found["pseudonym"], pseudonyms.user(users[1]).as_ref());
}

#[test]
fn a_missing_short_or_written_in_key_is_refused_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let log = fixture("retail_dirty.csv");
    let out = dir.path().join("out");
    let run = |config: &str, env: &[(&str, &str)]| {
        let path = dir.path().join("privacy.toml");
        std::fs::write(&path, config).unwrap();
        let output = Command::new(env!("CARGO_BIN_EXE_persona"))
            .args(["replay", "--format", "online-retail", "--input"])
            .arg(&log)
            .arg("--config")
            .arg(&path)
            .arg("--out")
            .arg(&out)
            .env_remove("PERSONA_PSEUDONYM_KEY")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let users = "[privacy]\npseudonymize = [\"user\"]\n";
    let (ok, error) = run(users, &[]);
    assert!(!ok && error.contains("PERSONA_PSEUDONYM_KEY"), "{error}");
    let (ok, error) = run(users, &[("PERSONA_PSEUDONYM_KEY", "short")]);
    assert!(
        !ok && error.contains("5 bytes") && error.contains("at least 32"),
        "{error}"
    );
    let (ok, error) = run(&format!("{users}key = \"{KEY}\"\n"), &[]);
    assert!(!ok && error.contains("unknown setting `key`"), "{error}");
    assert!(!error.contains(KEY), "the key is echoed: {error}");
    let (ok, error) = run(
        &format!("{users}key_file = \"/nonexistent/key\"\n"),
        &[("PERSONA_PSEUDONYM_KEY", KEY)],
    );
    assert!(!ok && error.contains("/nonexistent/key"), "{error}");
    let (ok, error) = run("[privacy]\npseudonymize = [\"email\"]\n", &[]);
    assert!(!ok && error.contains("email"), "{error}");
    assert!(
        !out.join("profiles.jsonl").exists(),
        "a refused run wrote outputs"
    );
    let (ok, error) = run(
        &format!("{users}key_env = \"MY_KEY\"\n"),
        &[("MY_KEY", KEY)],
    );
    assert!(ok && out.join("profiles.jsonl").exists(), "{error}");
}

#[test]
fn forgotten_users_leave_the_outputs_of_a_log_without_them_on_one_and_four_workers() {
    let dir = tempfile::tempdir().unwrap();
    let (slice, _) = online_retail_slice(dir.path(), 60_000, &BTreeSet::new());
    let (_, summary) = replay(&slice, "online-retail", &[]);
    let (full, _) = replay(&slice, "online-retail", &[]);
    // Five users drawn with a fixed seed, heavy and light ones alike.
    let mut users: Vec<String> = records_by(full.path(), "profiles", "user")
        .into_keys()
        .collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(15);
    users.shuffle(&mut rng);
    let forgotten: BTreeSet<String> = users.into_iter().take(5).collect();
    let (slice, without) = online_retail_slice(dir.path(), 60_000, &forgotten);
    let (reference, reference_summary) = replay(&without, "online-retail", &[]);
    assert!(reference_summary["accepted"].as_u64() < summary["accepted"].as_u64());

    for workers in ["1", "4"] {
        let config = dir.path().join(format!("forget-{workers}.toml"));
        let file = dir.path().join(format!("forgotten-{workers}.txt"));
        std::fs::write(&config, format!("[privacy]\nforgotten = {file:?}\n")).unwrap();
        let out = dir.path().join(format!("out-{workers}"));
        let mut args = vec![
            "forget",
            "--input",
            slice.to_str().unwrap(),
            "--format",
            "online-retail",
            "--config",
            config.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "-w",
            workers,
        ];
        // As the source writes them (`17850.0`), two at a time.
        let written: Vec<String> = forgotten.iter().map(|u| format!("{u}.0")).collect();
        for (round, users) in written.chunks(2).enumerate() {
            let mut round_args = args.clone();
            for user in users {
                round_args.extend(["--user", user.as_str()]);
            }
            persona(&round_args);
            assert_eq!(
                std::fs::read_to_string(&file).unwrap().lines().count(),
                (2 * (round + 1)).min(5)
            );
        }
        // Forgetting a user again changes nothing.
        args.extend(["--user", written[0].as_str()]);
        let summary: Value = serde_json::from_str(&persona(&args)).unwrap();
        assert_balances(&summary);
        assert!(summary["forgotten"].as_u64().unwrap() > 0, "{summary}");
        assert_eq!(
            summary["accepted"], reference_summary["accepted"],
            "{summary}"
        );
        assert_eq!(summary["users"], reference_summary["users"]);
        for name in ["profiles", "similar_items", "recommendations"] {
            assert!(
                read_lines(&out, name) == read_lines(reference.path(), name),
                "{name} on {workers} workers differ from the log without the users"
            );
        }
        let profiles = records_by(&out, "profiles", "user");
        assert!(forgotten.iter().all(|user| !profiles.contains_key(user)));
    }
}

/// `persona export-stats` on Online Retail with a country per customer and
/// a category per item: with a large ε the noise is small, so every count
/// released is close to the exact one the profiles give; releases add up
/// in the ledger, and one past the budget is refused without being charged.
#[test]
fn export_stats_releases_noisy_counts_of_the_profiles_within_the_budget() {
    let log = shared_data("online_retail_all.csv.xz");
    let dir = tempfile::tempdir().unwrap();
    let (plain, _) = replay(&log, "online-retail", &[]);
    let users: Vec<String> = records_by(plain.path(), "profiles", "user")
        .into_keys()
        .collect();
    let mut attributes = String::from("CustomerID,country\n");
    for (n, user) in users.iter().enumerate() {
        let country = if n % 5 == 0 {
            "France"
        } else {
            "United Kingdom"
        };
        attributes.push_str(&format!("{user},{country}\n"));
    }
    let attributes_path = dir.path().join("countries.csv");
    std::fs::write(&attributes_path, attributes).unwrap();
    let items: BTreeSet<String> = read_lines(plain.path(), "similar_items")
        .iter()
        .map(|line| {
            serde_json::from_str::<Value>(line).unwrap()["item"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let mut catalog = String::from("StockCode,category\n");
    for item in &items {
        catalog.push_str(&format!("{item},shelf-{}\n", item.len() % 3));
    }
    let catalog_path = dir.path().join("catalog.csv");
    std::fs::write(&catalog_path, catalog).unwrap();
    let ledger = dir.path().join("ledger.jsonl");
    let config = dir.path().join("stats.toml");
    std::fs::write(
        &config,
        format!(
            "[catalog]\npath = {catalog_path:?}\nitem = \"StockCode\"\ncategory = \"category\"\n\n\
             [user_attributes]\npath = {attributes_path:?}\nuser = \"CustomerID\"\n\n\
             [privacy.stats]\nledger = {ledger:?}\nepsilon_budget = 100.0\ndelta_budget = 1e-5\n"
        ),
    )
    .unwrap();
    let (exact, _) = replay(
        &log,
        "online-retail",
        &["--config", config.to_str().unwrap()],
    );
    let mut segments: BTreeMap<String, i64> = BTreeMap::new();
    let mut categories: BTreeMap<String, i64> = BTreeMap::new();
    let mut countries: BTreeMap<String, i64> = BTreeMap::new();
    for profile in records_by(exact.path(), "profiles", "user").values() {
        *segments
            .entry(profile["segment"].as_str().unwrap().into())
            .or_default() += 1;
        if let Some(top) = profile["top_categories"].get(0) {
            *categories
                .entry(top["category"].as_str().unwrap().into())
                .or_default() += 1;
        }
        *countries
            .entry(profile["attributes"]["country"].as_str().unwrap().into())
            .or_default() += 1;
    }

    let stats = |workers: &str, epsilon: &str| {
        vec![
            "export-stats".to_string(),
            "--input".into(),
            log.to_str().unwrap().into(),
            "--format".into(),
            "online-retail".into(),
            "--config".into(),
            config.to_str().unwrap().into(),
            "--epsilon".into(),
            epsilon.into(),
            "--delta".into(),
            "1e-6".into(),
            "-w".into(),
            workers.into(),
        ]
    };
    for workers in ["1", "2"] {
        let args = stats(workers, "40");
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let release: Value = serde_json::from_str(&persona(&args)).unwrap();
        let statistics = &release["statistics"];
        // ε 40 over 4 statistics: Laplace scale 0.1 (1 for items, 10 per user).
        let close = |name: &str, exact: &BTreeMap<String, i64>, slack: i64| {
            let released = statistics[name]["counts"].as_object().unwrap();
            for (key, count) in exact {
                let noisy = released.get(key).and_then(Value::as_i64);
                assert!(
                    noisy.is_some_and(|n| (n - count).abs() <= slack),
                    "{name} {key}: exact {count}, released {noisy:?} (-w {workers})"
                );
            }
            assert!(
                released.keys().all(|key| exact.contains_key(key)),
                "{released:?}"
            );
        };
        close("users_per_segment", &segments, 2);
        close("users_per_top_category", &categories, 2);
        close("users_per_attribute", &countries, 2);
        let per_item = statistics["users_per_item"]["counts"].as_object().unwrap();
        assert!(per_item.len() > 10, "{per_item:?}");
        assert!(per_item.keys().all(|item| items.contains(item)));
        let released: i64 = per_item.values().map(|v| v.as_i64().unwrap()).sum();
        assert!(released <= 10 * users.len() as i64 + 1_000, "{released}");
        assert_eq!(release["epsilon"], 40.0, "{release}");
        assert!(release["delta"].as_f64().unwrap() <= 1e-6);
    }
    assert_eq!(std::fs::read_to_string(&ledger).unwrap().lines().count(), 2);
    let args = stats("1", "20.5");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let refused = persona_fails(&args);
    assert!(refused.contains("budget of ε 100"), "{refused}");
    assert_eq!(std::fs::read_to_string(&ledger).unwrap().lines().count(), 2);
}
