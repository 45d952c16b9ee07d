//! The full-recompute baseline: after each batch, every output recomputed
//! from all events so far by [`persona_dataflows::reference`], the way a
//! batch job would, and the factorisation, when the pipeline learns one,
//! trained again from a blank model on every time so far in order (what
//! its exact outputs need). Its cost per batch grows with the log, so it
//! runs on a prefix.

use std::time::{Duration, Instant};

use persona_dataflows::mf::MfModel;
use persona_dataflows::reference;
use persona_dataflows::Event;

use crate::bench::driver::{timestamp, Graph, Workload};
use crate::clean::as_record;
use crate::config::end_of_period;

/// The time of each recompute, one per batch.
pub fn recompute(workload: &Workload, graph: Graph) -> Vec<Duration> {
    let config = &workload.config;
    let tick_ms = config.time.tick_ms;
    let period = config.time.recommend_period();
    let mut updates: Vec<(Event, u64, isize)> = Vec::new();
    let mut cf_updates: Vec<(Event, u64, isize)> = Vec::new();
    let recommend = &config.recommend;
    // As the pipeline's graph learns it: for the profiles' factors, or for
    // the blend of the ranked recommendations.
    let learns_mf = recommend.mf.embeddings || (graph == Graph::Full && recommend.mf_weight > 0.0);
    let mut times = Vec::with_capacity(workload.batches.len());
    for batch in &workload.batches {
        for (event, diff) in &workload.updates[batch.updates.clone()] {
            let time = timestamp(event, &config.time);
            let cf_time = if period > tick_ms {
                end_of_period(time, period)
            } else {
                time
            };
            let (record, diff) = as_record(event.clone(), *diff);
            updates.push((record.clone(), time, diff));
            cf_updates.push((record, cf_time, diff));
        }
        let started = Instant::now();
        let profiles =
            reference::profile::profiles(&updates, &[], &[], batch.last_time, &config.profile);
        std::hint::black_box(profiles);
        if graph == Graph::Full {
            let cf = reference::cf::collaborative_filtering(
                &cf_updates,
                batch.last_time,
                &config.recommend,
            );
            std::hint::black_box(cf);
        }
        if learns_mf {
            let mut model = MfModel::new(&recommend.mf, &recommend.weights);
            // The updates are in time order: a batch's follow the last's.
            debug_assert!(updates.is_sorted_by_key(|(_, time, _)| *time));
            for time in updates.chunk_by(|(_, a, _), (_, b, _)| a == b) {
                let mut time: Vec<(Event, i64)> = time
                    .iter()
                    .map(|(event, _, diff)| (event.clone(), *diff as i64))
                    .collect();
                model.train(&mut time);
            }
            std::hint::black_box(model);
        }
        times.push(started.elapsed());
    }
    times
}
