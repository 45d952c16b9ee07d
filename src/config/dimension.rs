//! `[catalog]` and `[user_attributes]`: the dimension tables fused with
//! events (read by [`crate::dimension`]).

use std::path::PathBuf;

use serde::Deserialize;

/// `[catalog]`: an item catalog.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogConfig {
    /// The CSV file (with a header line). Required.
    pub path: PathBuf,
    /// Column of the item id. Default: `item`.
    #[serde(default = "default_item")]
    pub item: String,
    /// Column of the category. Default: none.
    pub category: Option<String>,
    /// Column of the unit price, a decimal in major units. Default: none.
    pub price: Option<String>,
    /// Decimal places of the minor unit. Default: 2.
    pub price_decimals: Option<u32>,
    #[serde(flatten)]
    pub version: VersionColumn,
}

/// `[user_attributes]`: a table of user attributes.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserAttributesConfig {
    /// The CSV file (with a header line). Required.
    pub path: PathBuf,
    /// Column of the user id. Default: `user`.
    #[serde(default = "default_user")]
    pub user: String,
    /// Columns to keep as attributes. Default: every column but the user and version.
    #[serde(default)]
    pub attributes: Vec<String>,
    #[serde(flatten)]
    pub version: VersionColumn,
}

/// When a row applies.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct VersionColumn {
    /// Column of the time the row applies from. Default: none (every row
    /// applies from the start, later rows win).
    pub version: Option<String>,
    /// Format of that column, as the mapping's `time_format`. Default: `epoch_ms`.
    pub version_format: Option<String>,
    /// Zone of that column, as the mapping's `time_zone`. Default: `UTC`.
    pub time_zone: Option<String>,
}

fn default_item() -> String {
    "item".into()
}

fn default_user() -> String {
    "user".into()
}
