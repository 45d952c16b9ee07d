//! Helpers shared by the oracle tests.

#![allow(dead_code)]

/// splitmix64: a small seeded generator with no dependency, enough for
/// test data that every run and worker count sees alike.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// True `p` times in a hundred.
    pub fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i as u64 + 1) as usize);
        }
    }
}

/// An update as a captured stream holds it: `(record, time, diff)`.
pub type Update<D> = (D, u64, isize);

/// The updates of a captured stream, whatever message carried them.
pub fn flatten<D>(captured: Vec<(u64, Vec<Update<D>>)>) -> Vec<Update<D>> {
    captured
        .into_iter()
        .flat_map(|(_, updates)| updates)
        .collect()
}

/// The records of `updates` at `at`: each must have a net count of 0 or 1.
pub fn at_time<D: Ord + Clone>(updates: &[Update<D>], at: u64) -> Vec<D> {
    let mut counts: std::collections::BTreeMap<&D, isize> = Default::default();
    for (record, time, diff) in updates {
        if *time <= at {
            *counts.entry(record).or_default() += diff;
        }
    }
    assert!(counts.values().all(|count| *count == 0 || *count == 1));
    counts
        .into_iter()
        .filter(|(_, count)| *count == 1)
        .map(|(record, _)| record.clone())
        .collect()
}

/// Feeds `batches` (each with the time all of it is at or before) and
/// steps until `probe` passes each batch's end. Each worker feeds a share,
/// so exchanges are exercised.
pub fn feed_shares(
    worker: &mut timely::worker::Worker,
    events: &mut differential_dataflow::input::InputSession<u64, persona_dataflows::Event, isize>,
    probe: &timely::dataflow::ProbeHandle<u64>,
    batches: &[(u64, Vec<Update<persona_dataflows::Event>>)],
) {
    let (index, peers) = (worker.index(), worker.peers());
    for (end, updates) in batches {
        for (n, (event, time, diff)) in updates.iter().enumerate() {
            if n % peers == index {
                events.update_at(event.clone(), *time, *diff);
            }
        }
        events.advance_to(end + 1);
        events.flush();
        worker.step_while(|| probe.less_than(&(end + 1)));
    }
}

/// The batches without the events of `users`: the log of a replay in which
/// they never existed.
pub fn without(
    batches: &[(u64, Vec<Update<persona_dataflows::Event>>)],
    users: &[persona_dataflows::Id],
) -> Vec<(u64, Vec<Update<persona_dataflows::Event>>)> {
    batches
        .iter()
        .map(|(end, updates)| {
            let kept = updates
                .iter()
                .filter(|(event, _, _)| !users.contains(&event.user));
            (*end, kept.cloned().collect())
        })
        .collect()
}
