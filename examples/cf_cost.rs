//! What collaborative filtering costs on the shipped Online Retail log: the
//! whole log replayed through the CF dataflow alone (no profiles, no sinks)
//! with the preset's `[recommend]` settings, one timestamp per period, and
//! the co-occurrence work per event.
//!
//! ```text
//! cargo run --release --example cf_cost [-- PATH [PERIOD_DAYS]]
//! ```
//!
//! Prints the wall time, the number of periods, and per input update: the
//! unordered pair changes the histories send (each history change of user
//! u touches |history(u)| pairs) and the updates of the co-occurrence
//! collection `((i, j), c_ij)` after consolidation within a period.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use differential_dataflow::input::InputSession;
use persona::format::preset::preset;
use persona_dataflows::cf::history::histories;
use persona_dataflows::cf::recommend::{dismissed, recommend};
use persona_dataflows::cf::similarity::{cooccurrence, cross_similar_items, similar_items};
use persona_dataflows::time::DAY_MS;
use persona_dataflows::Event;
use timely::dataflow::operators::Inspect;
use timely::dataflow::ProbeHandle;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("../shared/data/online_retail_all.csv.xz"));
    let period_days: u64 = args.next().map_or(Ok(30), |d| d.parse())?;
    let period = period_days * DAY_MS;
    let config = preset("online-retail", Some(&path)).expect("a known preset");
    let log = persona::runtime::load::load(&path, &config)?;
    let mut updates: Vec<(Event, u64, isize)> = log
        .updates
        .into_iter()
        .map(|(event, diff)| {
            let time = event.time_ms as u64;
            (event, time - time % period + period, diff)
        })
        .collect();
    updates.sort_by_key(|(_, time, _)| *time);
    let cf = config.recommend;
    let events = updates.len();

    // The CF dataflow as `recommend::collaborative_filtering` builds it
    // (without an indicator), with counters.
    let pair_updates = Arc::new(AtomicU64::new(0));
    let cooccurrence_updates = Arc::new(AtomicU64::new(0));
    let updates = Arc::new(updates);
    let started = Instant::now();
    let periods = timely::execute_directly({
        let (pair_updates, cooccurrence_updates) =
            (pair_updates.clone(), cooccurrence_updates.clone());
        let updates = updates.clone();
        move |worker| {
            let mut input: InputSession<u64, Event, isize> = InputSession::new();
            let probe = ProbeHandle::new();
            worker.dataflow::<u64, _, _>(|scope| {
                let events = input.to_collection(scope);
                let dismissed = dismissed(events.clone());
                let histories = histories(events, &cf);
                histories.pairs.clone().inner.inspect(move |(_, _, diff)| {
                    pair_updates.fetch_add(diff.unsigned_abs() as u64, Ordering::Relaxed);
                });
                let cooccurrence = cooccurrence(&histories);
                cooccurrence.pairs.clone().inner.inspect(move |_| {
                    cooccurrence_updates.fetch_add(1, Ordering::Relaxed);
                });
                let similar = similar_items(&cooccurrence, &cf);
                assert!(cross_similar_items(&cooccurrence, &cf).is_none());
                let (personal, fallback) = recommend(
                    histories.history,
                    similar,
                    None,
                    None,
                    histories.user_items,
                    histories.users,
                    dismissed,
                    &cooccurrence,
                    &cf,
                );
                personal.probe_with(&probe);
                fallback.users.probe_with(&probe);
                fallback.ranking.probe_with(&probe);
            });
            let mut periods = 0;
            let mut current = None;
            for (event, time, diff) in updates.iter() {
                if current != Some(*time) {
                    input.advance_to(*time);
                    input.flush();
                    worker.step_while(|| probe.less_than(input.time()));
                    current = Some(*time);
                    periods += 1;
                }
                input.update(event.clone(), *diff);
            }
            input.close();
            worker.step_while(|| !probe.done());
            periods
        }
    });
    let elapsed = started.elapsed();
    println!(
        "{events} input updates in {periods} periods of {period_days} days: {:.1} s",
        elapsed.as_secs_f64()
    );
    println!(
        "history pair changes per input update: {:.1}",
        pair_updates.load(Ordering::Relaxed) as f64 / events as f64
    );
    println!(
        "co-occurrence collection updates per input update: {:.1}",
        cooccurrence_updates.load(Ordering::Relaxed) as f64 / events as f64
    );
    Ok(())
}
