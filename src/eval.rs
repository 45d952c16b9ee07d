//! `persona eval`: how well persona recommends, measured offline the way
//! Microsoft Recommenders does it.
//!
//! The log is split chronologically — at a global cut time, or each user's
//! last fraction of events — the collaborative-filtering dataflow is built
//! on the earlier part, and each test user's top-k list is scored against
//! the items they went on to interact with in the later part. The
//! popularity baseline (the k most popular training items a user has not
//! seen) is scored the same way, side by side.

pub mod metrics;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::rc::Rc;

use anyhow::Context;
use differential_dataflow::input::InputSession;
use persona_dataflows::cf::collaborative_filtering;
use persona_dataflows::cf::recommend::Recommendations;
use persona_dataflows::{Event, Id};
use serde::Serialize;
use timely::dataflow::operators::{Exchange, Inspect, Probe};
use timely::dataflow::ProbeHandle;

use crate::config::PipelineConfig;
use crate::runtime::load::load;
use crate::runtime::TimelyArgs;

/// How the log is split into training and test events.
#[derive(Clone, Copy, Debug)]
pub enum Split {
    /// Events before this time (ms) train, the rest test.
    Time(i64),
    /// Each user's last fraction of events (by time) test, the rest train.
    Fraction(f64),
}

/// The scores of one recommender.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Scores {
    pub precision: f64,
    pub recall: f64,
    pub ndcg: f64,
    pub map: f64,
    pub coverage: f64,
}

/// What `persona eval` prints.
#[derive(Clone, Debug, Serialize)]
pub struct EvalReport {
    pub k: usize,
    pub persona: Scores,
    pub popularity: Scores,
    pub train_events: usize,
    pub test_users: usize,
}

/// Parses `--split-time`: a date (midnight UTC) or an RFC 3339 time.
pub fn parse_split_time(text: &str) -> anyhow::Result<i64> {
    if let Ok(date) = text.parse::<jiff::civil::Date>() {
        return Ok(date
            .to_zoned(jiff::tz::TimeZone::UTC)?
            .timestamp()
            .as_millisecond());
    }
    let time: jiff::Timestamp = text.parse().with_context(|| {
        format!("--split-time {text:?}: expected YYYY-MM-DD or an RFC 3339 time")
    })?;
    Ok(time.as_millisecond())
}

/// Updates of events: +1, or −1 for a cancellation.
type Updates = Vec<(Event, isize)>;

/// Splits updates (in log order) into training and test updates.
fn split(updates: Updates, split: Split) -> (Updates, Updates) {
    match split {
        Split::Time(cut) => updates
            .into_iter()
            .partition(|(event, _)| event.time_ms < cut),
        Split::Fraction(fraction) => {
            let mut by_user: BTreeMap<Id, Vec<(Event, isize)>> = BTreeMap::new();
            for update in updates {
                by_user.entry(update.0.user).or_default().push(update);
            }
            let (mut train, mut test) = (Vec::new(), Vec::new());
            for (_, mut events) in by_user {
                // Stable: events at one time keep their log order.
                events.sort_by_key(|(event, _)| event.time_ms);
                let n = events.len();
                let held_out = if n < 2 {
                    0
                } else {
                    ((n as f64 * fraction).round() as usize).clamp(1, n - 1)
                };
                test.extend(events.split_off(n - held_out));
                train.extend(events);
            }
            (train, test)
        }
    }
}

/// Items with a positive net count of positive-weight events, per user.
fn interacted(updates: &[(Event, isize)], config: &PipelineConfig) -> HashMap<Id, HashSet<Id>> {
    let mut net: HashMap<(Id, Id), isize> = HashMap::new();
    for (event, diff) in updates {
        if config.recommend.weights.weight(event.action) > 0 {
            *net.entry((event.user, event.item)).or_insert(0) += diff;
        }
    }
    let mut items: HashMap<Id, HashSet<Id>> = HashMap::new();
    for ((user, item), count) in net {
        if count > 0 {
            items.entry(user).or_default().insert(item);
        }
    }
    items
}

/// Runs the collaborative-filtering dataflow over the training updates and
/// returns each user's recommended items, best first.
fn train(
    updates: &[(Event, isize)],
    config: &PipelineConfig,
    timely: &TimelyArgs,
) -> anyhow::Result<HashMap<Id, Vec<Id>>> {
    let updates = std::sync::Arc::new(updates.to_vec());
    let cf_config = config.recommend.clone();
    let guards = timely::execute(timely.config()?, move |worker| {
        let index = worker.index();
        let peers = worker.peers();
        let mut input: InputSession<u64, Event, isize> = InputSession::new();
        let probe = ProbeHandle::new();
        let lists: Rc<RefCell<Vec<(Recommendations, isize)>>> = Rc::default();
        let sink = lists.clone();
        worker.dataflow::<u64, _, _>(|scope| {
            let events = input.to_collection(scope);
            collaborative_filtering(events, &cf_config)
                .recommendations()
                .inner
                .exchange(|_| 0)
                .inspect(move |(list, _, diff): &(Recommendations, u64, isize)| {
                    sink.borrow_mut().push((list.clone(), *diff))
                })
                .probe_with(&probe);
        });
        for (event, diff) in updates.iter().skip(index).step_by(peers) {
            input.update(event.clone(), *diff);
        }
        input.close();
        worker.step_while(|| !probe.done());
        let mut net: BTreeMap<Recommendations, isize> = BTreeMap::new();
        for (list, diff) in lists.borrow_mut().drain(..) {
            *net.entry(list).or_insert(0) += diff;
        }
        net.into_iter()
            .filter(|(_, count)| *count > 0)
            .map(|(list, _)| {
                (
                    list.user,
                    list.items
                        .iter()
                        .map(|scored| scored.item)
                        .collect::<Vec<_>>(),
                )
            })
            .collect::<Vec<_>>()
    })
    .map_err(|error| anyhow::anyhow!("cannot start workers: {error}"))?;
    let mut lists = HashMap::new();
    for result in guards.join() {
        let worker_lists = result.map_err(|panic| anyhow::anyhow!("a worker panicked: {panic}"))?;
        lists.extend(worker_lists);
    }
    Ok(lists)
}

/// The k most popular training items (by users) each user has not seen.
fn popularity(
    train_items: &HashMap<Id, HashSet<Id>>,
    users: &[Id],
    k: usize,
    remove_seen: bool,
) -> HashMap<Id, Vec<Id>> {
    let mut counts: HashMap<Id, usize> = HashMap::new();
    for items in train_items.values() {
        for item in items {
            *counts.entry(*item).or_insert(0) += 1;
        }
    }
    let mut ranking: Vec<(Id, usize)> = counts.into_iter().collect();
    ranking.sort_by(|(i1, c1), (i2, c2)| c2.cmp(c1).then(i1.cmp(i2)));
    let empty = HashSet::new();
    users
        .iter()
        .map(|user| {
            let seen = if remove_seen {
                train_items.get(user).unwrap_or(&empty)
            } else {
                &empty
            };
            let list = ranking
                .iter()
                .map(|(item, _)| *item)
                .filter(|item| !seen.contains(item))
                .take(k)
                .collect();
            (*user, list)
        })
        .collect()
}

/// Splits, trains, and scores persona and the popularity baseline.
pub fn evaluate(
    input: &Path,
    config: &PipelineConfig,
    split_by: Split,
    k: usize,
    timely: &TimelyArgs,
) -> anyhow::Result<EvalReport> {
    anyhow::ensure!(k > 0, "--k must be at least 1");
    if let Split::Fraction(fraction) = split_by {
        anyhow::ensure!(
            fraction > 0.0 && fraction < 1.0,
            "--split-fraction must be between 0 and 1"
        );
    }
    let mut config = config.clone();
    config.recommend.top_k = k;
    let log = load(input, &config)?;
    let (train_updates, test_updates) = split(log.updates, split_by);
    let train_items = interacted(&train_updates, &config);
    // Test users: known from training, with something new to find.
    let relevant: HashMap<Id, HashSet<Id>> = interacted(&test_updates, &config)
        .into_iter()
        .filter(|(user, _)| train_items.contains_key(user))
        .collect();
    anyhow::ensure!(
        !relevant.is_empty(),
        "the split leaves no test user with training history"
    );
    let test_users: Vec<Id> = relevant.keys().copied().collect();
    let catalog: HashSet<Id> = train_items.values().flatten().copied().collect();

    let persona_lists = train(&train_updates, &config, timely)?;
    let popular_lists = popularity(&train_items, &test_users, k, config.recommend.remove_seen);
    let score = |lists: &HashMap<Id, Vec<Id>>| {
        let lists: HashMap<Id, Vec<Id>> = test_users
            .iter()
            .filter_map(|u| lists.get(u).map(|l| (*u, l.clone())))
            .collect();
        let ranking = metrics::evaluate(&lists, &relevant, k);
        Scores {
            precision: ranking.precision,
            recall: ranking.recall,
            ndcg: ranking.ndcg,
            map: ranking.map,
            coverage: metrics::catalog_coverage(
                lists.values().map(Vec::as_slice),
                k,
                catalog.len(),
            ),
        }
    };
    Ok(EvalReport {
        k,
        persona: score(&persona_lists),
        popularity: score(&popular_lists),
        train_events: train_updates.len(),
        test_users: test_users.len(),
    })
}

/// The report as a table for people.
pub fn table(report: &EvalReport) -> String {
    let k = report.k;
    let mut table = format!(
        "{:<12} {:>12} {:>10} {:>8} {:>8} {:>10}\n",
        "model",
        format!("precision@{k}"),
        format!("recall@{k}"),
        format!("ndcg@{k}"),
        format!("map@{k}"),
        "coverage"
    );
    for (name, s) in [
        ("persona", report.persona),
        ("popularity", report.popularity),
    ] {
        table.push_str(&format!(
            "{:<12} {:>12.4} {:>10.4} {:>8.4} {:>8.4} {:>10.4}\n",
            name, s.precision, s.recall, s.ndcg, s.map, s.coverage
        ));
    }
    table.push_str(&format!(
        "{} training events, {} test users\n",
        report.train_events, report.test_users
    ));
    table
}
