//! The event model shared by every dataflow: one behaviour event of a user on
//! an item, with ids already mapped to integers by a stable hash.
//!
//! A cancellation is a record of its own, an [`Action::Cancellation`] event
//! with the cancelled quantity: it takes units back from the user's
//! purchases of the item, which may leave them owning part of it. A
//! retraction (diff −1) withdraws a record itself, so collections net it
//! out naturally.

use serde::{Deserialize, Serialize};

/// An integer id: a stable hash of the id string of the source.
pub type Id = u64;

/// What a user did. The order is the declaration order and is stable: it is
/// used for canonical iteration in reductions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    View,
    Click,
    Cart,
    Uncart,
    Favourite,
    Purchase,
    Rating,
    /// A recommendation was shown to the user.
    Impression,
    /// The user clicked a recommendation.
    RecClick,
    /// The user said a recommendation was not interesting.
    NotInterested,
    /// A cancelled purchase: `quantity` units of the item taken back. The
    /// user owns an item while more units of it were bought than cancelled.
    Cancellation,
}

impl Action {
    /// Every action, in declaration order.
    pub const ALL: [Action; 11] = [
        Action::View,
        Action::Click,
        Action::Cart,
        Action::Uncart,
        Action::Favourite,
        Action::Purchase,
        Action::Rating,
        Action::Impression,
        Action::RecClick,
        Action::NotInterested,
        Action::Cancellation,
    ];

    /// The snake_case name used in configs and outputs.
    pub fn name(self) -> &'static str {
        match self {
            Action::View => "view",
            Action::Click => "click",
            Action::Cart => "cart",
            Action::Uncart => "uncart",
            Action::Favourite => "favourite",
            Action::Purchase => "purchase",
            Action::Rating => "rating",
            Action::Impression => "impression",
            Action::RecClick => "rec_click",
            Action::NotInterested => "not_interested",
            Action::Cancellation => "cancellation",
        }
    }

    /// Parses a canonical action name (see [`Action::name`]).
    pub fn from_name(name: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.name() == name)
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Integer weight of one event of each action, for affinities. A table that
/// names only some actions keeps the defaults of the others. An action of
/// weight 0 adds nothing; a negative weight (say for `not_interested`)
/// pushes an item or category down.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ActionWeights {
    /// Default 1.
    pub view: i64,
    /// Default 1.
    pub click: i64,
    /// Default 3.
    pub cart: i64,
    /// Default 0.
    pub uncart: i64,
    /// Default 2.
    pub favourite: i64,
    /// Default 5.
    pub purchase: i64,
    /// Default 2.
    pub rating: i64,
    /// Default 0.
    pub impression: i64,
    /// Default 0.
    pub rec_click: i64,
    /// Default 0.
    pub not_interested: i64,
    /// Default 0: a cancellation takes the item's purchases out of affinity
    /// only once the user owns none of it.
    pub cancellation: i64,
}

impl Default for ActionWeights {
    fn default() -> Self {
        ActionWeights {
            view: 1,
            click: 1,
            cart: 3,
            uncart: 0,
            favourite: 2,
            purchase: 5,
            rating: 2,
            impression: 0,
            rec_click: 0,
            not_interested: 0,
            cancellation: 0,
        }
    }
}

impl ActionWeights {
    /// The weight of one event of `action`.
    pub fn weight(&self, action: Action) -> i64 {
        match action {
            Action::View => self.view,
            Action::Click => self.click,
            Action::Cart => self.cart,
            Action::Uncart => self.uncart,
            Action::Favourite => self.favourite,
            Action::Purchase => self.purchase,
            Action::Rating => self.rating,
            Action::Impression => self.impression,
            Action::RecClick => self.rec_click,
            Action::NotInterested => self.not_interested,
            Action::Cancellation => self.cancellation,
        }
    }
}

/// One behaviour event.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Event {
    pub user: Id,
    pub item: Id,
    pub action: Action,
    /// Event time in milliseconds since the Unix epoch.
    pub time_ms: i64,
    pub category: Option<Id>,
    /// Unit price in integer minor units (cents): "2.55" is 255.
    pub price: Option<i64>,
    /// Units; 1 where the source has no quantity. Always positive: a
    /// cancellation is a `cancellation` event of the units it takes back.
    pub quantity: i64,
    /// Rating in hundredths (3.5 stars is 350), where the source has one.
    pub rating: Option<i64>,
    pub event_id: Option<Id>,
    pub session: Option<Id>,
}

impl Event {
    /// A bare event with no optional fields and quantity 1.
    pub fn new(user: Id, item: Id, action: Action, time_ms: i64) -> Event {
        Event {
            user,
            item,
            action,
            time_ms,
            category: None,
            price: None,
            quantity: 1,
            rating: None,
            event_id: None,
            session: None,
        }
    }

    /// The UTC day number of the event (days since the Unix epoch).
    pub fn day(&self) -> i64 {
        self.time_ms.div_euclid(crate::time::DAY_MS as i64)
    }
}
