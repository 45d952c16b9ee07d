//! The state of the dataflows is proportional to distinct keys, not to
//! events: for a fixed set of users, items and days, four times the events
//! must hold about the same number of records in the arrangements. Records
//! are counted from differential's arrangement events, as `persona bench`
//! reports them, so the check is exact and does not depend on the machine. The workers are configured as
//! every persona run configures them (idle arrangements keep merging).

use differential_dataflow::input::InputSession;
use persona::runtime::worker::count_arranged;
use persona_dataflows::cf::{collaborative_filtering, CfConfig};
use persona_dataflows::profile::{profiles, AttributeVersion, ProfileConfig};
use persona_dataflows::time::DAY_MS;
use persona_dataflows::{Action, Event, Id};
use timely::dataflow::ProbeHandle;

const USERS: u64 = 10;
const ITEMS: u64 = 8;
const DAYS: u64 = 3;
const ACTIONS: [Action; 6] = [
    Action::View,
    Action::Click,
    Action::Cart,
    Action::Purchase,
    Action::Rating,
    Action::Cancellation,
];

/// `count` events of the fixed users, items and days, at distinct
/// milliseconds, in time order.
fn events(count: u64) -> Vec<Event> {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move |below: u64| {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) % below
    };
    let mut events: Vec<Event> = (0..count)
        .map(|_| {
            let time_ms = DAY_MS * 100 + next(DAYS * DAY_MS);
            let action = ACTIONS[next(ACTIONS.len() as u64) as usize];
            let mut event = Event::new(next(USERS), next(ITEMS), action, time_ms as i64);
            event.category = Some(event.item % 3);
            event.price = Some(125);
            if action == Action::Rating {
                event.rating = Some(100 * (1 + next(5) as i64));
            }
            event
        })
        .collect();
    events.sort_by_key(|event| event.time_ms);
    events
}

/// The records held in the arrangements of the profile and collaborative
/// filtering dataflows once `events` and every window expiry are processed.
fn records_held(events: Vec<Event>) -> i64 {
    let mut config = timely::Config::thread();
    persona::runtime::configure_arrangements(&mut config);
    let results = timely::execute(config, move |worker| {
        let arranged = count_arranged(worker);
        let probe = ProbeHandle::new();
        let mut input: InputSession<u64, Event, isize> = InputSession::new();
        let mut attributes: InputSession<u64, (Id, AttributeVersion), isize> = InputSession::new();
        worker.dataflow::<u64, _, _>(|scope| {
            let events = input.to_collection(scope);
            let attributes = attributes.to_collection(scope);
            let profiles = profiles(events.clone(), None, attributes, &ProfileConfig::default());
            let cf = collaborative_filtering(events, &CfConfig::default());
            profiles.probe_with(&probe);
            cf.personal.probe_with(&probe);
            cf.similar_items.probe_with(&probe);
            cf.fallback.users.probe_with(&probe);
            cf.fallback.ranking.probe_with(&probe);
        });
        for chunk in events.chunks(250) {
            for event in chunk {
                input.update_at(event.clone(), event.time_ms as u64, 1);
            }
            let next = chunk[chunk.len() - 1].time_ms as u64 + 1;
            input.advance_to(next);
            attributes.advance_to(next);
            input.flush();
            attributes.flush();
            worker.step_while(|| probe.less_than(&next));
        }
        // Past every window, so that only lasting state remains.
        let end = DAY_MS * (100 + DAYS + 100);
        input.advance_to(end);
        attributes.advance_to(end);
        input.flush();
        attributes.flush();
        worker.step_while(|| probe.less_than(&end));
        for _ in 0..100 {
            worker.step();
        }
        let held = *arranged.borrow();
        held
    });
    let mut results = results.expect("timely run").join();
    results.pop().expect("one worker").expect("the worker ran")
}

#[test]
fn state_levels_off_for_a_fixed_set_of_users_items_and_days() {
    let few = records_held(events(3_000));
    let many = records_held(events(12_000));
    eprintln!("records held: {few} after 3,000 events, {many} after 12,000");
    assert!(
        (many as f64) < 1.25 * few as f64,
        "4x the events of the same users, items and days hold {many} records, against {few}"
    );
}
