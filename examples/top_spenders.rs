//! The ten biggest spenders of the shipped Online Retail log, computed by the
//! from-scratch reference (no dataflow): what a batch job would say, and what
//! `persona replay` must agree with.
//!
//! ```text
//! cargo run --release --example top_spenders [-- PATH]
//! ```

use std::path::PathBuf;

use persona::format::preset::preset;
use persona::names::Names;
use persona_dataflows::profile::ProfileConfig;
use persona_dataflows::reference::profile::profiles;

fn main() -> anyhow::Result<()> {
    let path = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("../shared/data/online_retail_all.csv.xz"));
    let config = preset("online-retail", Some(&path)).expect("a known preset");
    let log = persona::runtime::load::load(&path, &config)?;
    // Every event at its own time, and the profile at the last one.
    let updates: Vec<_> = log
        .updates
        .into_iter()
        .map(|(event, diff)| {
            let time = event.time_ms as u64;
            (event, time, diff)
        })
        .collect();
    let at = updates.iter().map(|(_, time, _)| *time).max().unwrap_or(0);
    let profiles = profiles(&updates, &[], &[], at, &ProfileConfig::default());
    let mut spenders: Vec<_> = profiles
        .iter()
        .map(|(user, profile)| (profile.spend, *user))
        .collect();
    spenders.sort_by(|a, b| b.cmp(a));
    println!("{:>10} {:>14} {:>10}", "customer", "spend", "purchases");
    for (spend, user) in spenders.into_iter().take(10) {
        let purchases = profiles[&user].counts[&persona_dataflows::Action::Purchase];
        println!(
            "{:>10} {:>14.2} {:>10}",
            log.names.user(user),
            spend as f64 / 100.0,
            purchases
        );
    }
    Ok(())
}
