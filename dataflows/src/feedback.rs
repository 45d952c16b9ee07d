//! Per-item feedback: how often each item was shown to users
//! (`impression`), clicked from their recommendations (`rec_click`) and
//! dismissed (`not_interested`), over the lifetime and each sliding window
//! of the profile (`[profile] window_days`). The per-user counts are the
//! profile's own (its `feedback` section); this is the same per item, for
//! judging what the recommendations show.

use differential_dataflow::VecCollection;
use serde::{Deserialize, Serialize};

use crate::profile::{ActionCounts, WindowCounts};
use crate::time::DAY_MS;
use crate::{Action, Event, EventTime, Id};

/// The actions that answer what a user was shown.
pub const FEEDBACK_ACTIONS: [Action; 3] =
    [Action::Impression, Action::RecClick, Action::NotInterested];

/// An item's feedback counts: only [`FEEDBACK_ACTIONS`] are ever nonzero.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ItemFeedback {
    /// Net counts over the lifetime.
    pub counts: ActionCounts,
    /// Net counts of the updates in the last W days, per configured W (every
    /// one present, possibly all zero).
    pub windows: WindowCounts,
}

/// Maintains one [`ItemFeedback`] per item whose lifetime net count of some
/// feedback action is nonzero. With `ev` the net multiset of events and
/// `now` the current timestamp, as the profile's counts and windows:
///
/// ```text
/// counts[a]     = Σ_{e ∈ ev, e.action = a} 1
/// windows[W][a] = Σ_{updates (e, t, d), e.action = a, t <= now < t + W days} d
/// ```
///
/// An update enters the window of W days at its time `t` and leaves it at
/// `t + W` (the same update, negated and delayed). Per item the reduction
/// reads at most `3 · (1 + windows)` distinct values, so its cost does not
/// grow with the log, and events of other actions never enter it.
pub fn item_feedback<'s, T: EventTime>(
    events: VecCollection<'s, T, Event>,
    window_days: &[u64],
) -> VecCollection<'s, T, (Id, ItemFeedback)> {
    let mut window_days = window_days.to_vec();
    window_days.sort_unstable();
    window_days.dedup();
    let answers = events.flat_map(|event| {
        FEEDBACK_ACTIONS
            .contains(&event.action)
            .then_some((event.item, event.action))
    });
    // `(item, (None for the lifetime or Some(window days), action))`.
    let mut counted = answers.clone().map(|(item, action)| (item, (None, action)));
    for &days in &window_days {
        let entered = answers
            .clone()
            .map(move |(item, action)| (item, (Some(days), action)));
        let length = days.saturating_mul(DAY_MS);
        let left = entered
            .clone()
            .delay(move |time| time.plus_ms(length))
            .negate();
        counted = counted.concat(entered).concat(left);
    }
    counted.reduce_named("ItemFeedback", move |_item, input, output| {
        let mut feedback = ItemFeedback {
            counts: ActionCounts::default(),
            windows: window_days
                .iter()
                .map(|days| (*days, ActionCounts::default()))
                .collect(),
        };
        for (value, count) in input {
            let (window, action) = **value;
            let counts = match window {
                None => Some(&mut feedback.counts),
                Some(days) => feedback.windows.get_mut(&days),
            };
            if let Some(counts) = counts {
                counts.insert(action, *count as i64);
            }
        }
        if !feedback.counts.is_empty() {
            output.push((feedback, 1));
        }
    })
}
