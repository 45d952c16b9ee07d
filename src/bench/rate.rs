//! The search for the sustained throughput: the highest offered rate at
//! which an open-loop run does not fall behind.

use super::report::{OpenLoopRun, Percentiles};

/// Where the search ended.
#[derive(Clone, Copy, Debug)]
pub struct Search {
    /// The highest rate that kept up (0 if none did).
    pub sustained: f64,
    /// The latency of the run at half saturation, the reported one.
    pub latency_ms: Percentiles,
    pub latency_rate: f64,
}

/// Offers half the closed-loop `saturation` first (its latencies are the
/// ones reported), then bisects (geometrically) between the highest rate
/// that kept up and the lowest that fell behind, `steps` runs in all.
pub fn sustained(
    saturation: f64,
    steps: usize,
    offer: &mut dyn FnMut(f64) -> anyhow::Result<OpenLoopRun>,
) -> anyhow::Result<Search> {
    let half = offer(saturation / 2.0)?;
    let (mut low, mut high) = if half.kept_up {
        (saturation / 2.0, saturation * 2.0)
    } else {
        (0.0, saturation / 2.0)
    };
    for _ in 1..steps {
        let rate = if low > 0.0 {
            (low * high).sqrt()
        } else {
            high / 2.0
        };
        if offer(rate)?.kept_up {
            low = rate;
        } else {
            high = rate;
        }
    }
    Ok(Search {
        sustained: low,
        latency_ms: half.latency_ms,
        latency_rate: saturation / 2.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A system that keeps up with any rate up to `capacity`.
    fn search(capacity: f64, saturation: f64, steps: usize) -> (Search, Vec<f64>) {
        let mut offered = Vec::new();
        let latency = Percentiles {
            p50: 1.0,
            p90: 1.0,
            p99: 1.0,
            p999: 1.0,
            max: 1.0,
        };
        let mut offer = |rate: f64| {
            offered.push(rate);
            Ok(OpenLoopRun {
                offered_events_per_s: rate,
                kept_up: rate <= capacity,
                latency_ms: latency,
            })
        };
        let found = sustained(saturation, steps, &mut offer).unwrap();
        (found, offered)
    }

    #[test]
    fn the_search_closes_in_on_the_capacity_from_below() {
        let (found, offered) = search(1_300.0, 1_000.0, 12);
        assert_eq!(offered.len(), 12);
        assert_eq!(offered[0], 500.0, "half saturation first");
        assert!(found.sustained <= 1_300.0);
        assert!(found.sustained > 1_300.0 * 0.99, "{found:?}");
        assert_eq!(found.latency_rate, 500.0);
    }

    #[test]
    fn a_system_slower_than_half_saturation_is_found_too() {
        let (found, _) = search(100.0, 1_000.0, 12);
        assert!(
            found.sustained <= 100.0 && found.sustained > 50.0,
            "{found:?}"
        );
        let (nothing, _) = search(0.0, 1_000.0, 4);
        assert_eq!(nothing.sustained, 0.0);
    }
}
