//! A seeded synthetic behaviour log that scales from 10^5 to 10^7 events,
//! so that cost growth with log size can be measured on one shape of data.
//!
//! Users and items are drawn from Zipf distributions (a few very active
//! users, a few very popular items), as in real logs. Events come in
//! sessions: a user views a handful of items, clicking, carting, favouriting
//! and buying some; a few purchases are cancelled (retracted) later in the
//! session and a few items are rated. Each item has a fixed category and
//! unit price. Sessions are spread evenly over `days` of event time.

use persona_dataflows::time::DAY_MS;
use persona_dataflows::{Action, Event, Id};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The shape of a synthetic log.
#[derive(Clone, Debug)]
pub struct SyntheticSpec {
    pub events: usize,
    pub users: usize,
    pub items: usize,
    pub categories: usize,
    /// Zipf exponent of user activity and item popularity.
    pub zipf_exponent: f64,
    /// Days of event time the log spans.
    pub days: u64,
    pub seed: u64,
}

impl SyntheticSpec {
    /// A log of `events` events with users, items and categories growing with it.
    pub fn with_events(events: usize, seed: u64) -> SyntheticSpec {
        SyntheticSpec {
            events,
            users: (events / 20).max(100),
            items: (events / 100).max(100),
            categories: 200,
            zipf_exponent: 1.0,
            days: 30,
            seed,
        }
    }
}

/// Draws ranks 0..n with probability ∝ 1/(rank+1)^s, by inverse CDF.
struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, exponent: f64) -> Zipf {
        let mut total = 0.0;
        let cumulative = (1..=n.max(1))
            .map(|rank| {
                total += (rank as f64).powf(-exponent);
                total
            })
            .collect();
        Zipf { cumulative }
    }

    fn sample(&self, rng: &mut StdRng) -> usize {
        let total = self.cumulative[self.cumulative.len() - 1];
        let target = rng.random::<f64>() * total;
        self.cumulative
            .partition_point(|c| *c < target)
            .min(self.cumulative.len() - 1)
    }
}

/// The first millisecond of the log: 2024-01-01T00:00:00Z.
const START_MS: i64 = 1_704_067_200_000;

/// Spreads ranks over the id space, so ids do not sort by popularity.
fn scramble(rank: usize, salt: u64) -> Id {
    xxhash_rust::xxh3::xxh3_64_with_seed(&(rank as u64).to_le_bytes(), salt)
}

/// Generates the log: `(event, diff)` updates sorted by event time, with
/// cancellations as −1 updates of the purchases they cancel.
pub fn generate(spec: &SyntheticSpec) -> Vec<(Event, isize)> {
    let mut rng = StdRng::seed_from_u64(spec.seed);
    let users = Zipf::new(spec.users, spec.zipf_exponent);
    let items = Zipf::new(spec.items, spec.zipf_exponent);
    let span_ms = (spec.days.max(1) * DAY_MS) as f64;
    let mut updates: Vec<(Event, isize)> = Vec::with_capacity(spec.events + spec.events / 50);
    let mut session_id: u64 = 0;
    while updates.len() < spec.events {
        session_id += 1;
        let user = scramble(users.sample(&mut rng), 1);
        let progress = updates.len() as f64 / spec.events as f64;
        let mut time_ms = START_MS + (progress * span_ms) as i64 + rng.random_range(0..600_000);
        let length = rng.random_range(1..=16usize);
        for _ in 0..length {
            if updates.len() >= spec.events {
                break;
            }
            time_ms += rng.random_range(5_000..120_000);
            let rank = items.sample(&mut rng);
            let item = scramble(rank, 2);
            let roll = rng.random_range(0..1000u32);
            let action = match roll {
                0..700 => Action::View,
                700..850 => Action::Click,
                850..930 => Action::Cart,
                930..950 => Action::Favourite,
                950..980 => Action::Rating,
                _ => Action::Purchase,
            };
            let mut event = Event::new(user, item, action, time_ms);
            event.session = Some(session_id);
            event.category = Some(scramble(rank % spec.categories.max(1), 3));
            if action == Action::Purchase {
                event.price = Some(100 + (item % 10_000) as i64);
                event.quantity = rng.random_range(1..=3);
            }
            if action == Action::Rating {
                event.rating = Some(100 * rng.random_range(1..=5));
            }
            updates.push((event.clone(), 1));
            if action == Action::Purchase
                && updates.len() < spec.events
                && rng.random_range(0..20) == 0
            {
                // As in Online Retail, the cancellation is recorded later
                // and retracts the purchase at its own time.
                let mut retraction = event;
                retraction.time_ms += rng.random_range(60_000..3_600_000);
                updates.push((retraction, -1));
            }
        }
    }
    updates.sort_by_key(|(event, _)| event.time_ms);
    updates
}
