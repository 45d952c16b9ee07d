//! Exponential time decay kept as exact integer state.
//!
//! A decayed sum Σ w · 2^((day − D)/H) changes every weight when the
//! reference day D moves, so keeping it incrementally seems to need every
//! (day, weight) pair, and state that grows with the days of the log. It does
//! not: days are grouped into eras of `era_days` (16 half-lives), and within
//! an era a day's weight is scaled by the fixed-point factor
//! `round(2^((day − era_start)/H) · 2^32)`, an integer that does not depend
//! on D. The sum per era is then an integer that events add to and take
//! from in any order, one number per era instead of one per day, and the
//! decayed value is computed from those few integers when asked:
//!
//! ```text
//! decayed = Σ_{eras e ascending} S_e · 2^((e · era_days − D)/H) / 2^32
//! ```
//!
//! The dataflows, their references and the hash-map baseline all use this
//! one [`Decay`], so an incremental result and a from-scratch one are the
//! same bits.

/// Fixed-point bits of the per-day factors.
const SCALE_BITS: i32 = 32;

/// Half-lives per era: a day's factor is at most 2^16 · 2^32 = 2^48.
const ERA_HALF_LIVES: f64 = 16.0;

/// The decay of one half-life, in eras of integer weights.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Decay {
    half_life_days: f64,
    era_days: i64,
}

impl Decay {
    /// Decay with a half-life of `half_life_days` (finite and positive).
    pub fn new(half_life_days: f64) -> Decay {
        let era_days = (ERA_HALF_LIVES * half_life_days).floor();
        // At least a day; at most 2^40 days, far past any event time.
        let era_days = era_days.clamp(1.0, (1u64 << 40) as f64) as i64;
        Decay {
            half_life_days,
            era_days,
        }
    }

    /// The era of a day.
    pub fn era(&self, day: i64) -> i64 {
        day.div_euclid(self.era_days)
    }

    /// `weight` of `day` as the integer its era sums:
    /// `weight · round(2^((day − era_start)/H) · 2^32)`.
    pub fn scaled(&self, day: i64, weight: i64) -> i128 {
        let offset = day.rem_euclid(self.era_days) as f64;
        let factor = ((offset / self.half_life_days).exp2() * 2f64.powi(SCALE_BITS)).round();
        weight as i128 * factor as i128
    }

    /// Σ S_e · 2^((e · era_days − latest_day)/H) / 2^32 over `(era, sum)`
    /// pairs in ascending era order: the decayed sum as of `latest_day`.
    pub fn value(&self, eras: impl IntoIterator<Item = (i64, i128)>, latest_day: i64) -> f64 {
        EraFactors::new(self, latest_day).value(eras)
    }

    /// `2^((era · era_days − latest_day)/H) / 2^32`: what an era's sum is
    /// worth on `latest_day`.
    fn factor(&self, era: i64, latest_day: i64) -> f64 {
        let start = era.saturating_mul(self.era_days);
        let exponent = start.saturating_sub(latest_day) as f64 / self.half_life_days;
        (exponent - f64::from(SCALE_BITS)).exp2()
    }
}

/// The factors of the eras as of one day, each computed once: ranking a
/// user's categories values the same few eras many times.
pub struct EraFactors<'a> {
    decay: &'a Decay,
    latest_day: i64,
    /// `(era, factor)`, in the order first asked.
    known: Vec<(i64, f64)>,
}

impl<'a> EraFactors<'a> {
    pub fn new(decay: &'a Decay, latest_day: i64) -> EraFactors<'a> {
        EraFactors {
            decay,
            latest_day,
            known: Vec::new(),
        }
    }

    /// [`Decay::value`] as of this day. Zero sums are skipped (their factor
    /// could overflow where an era holds only weights taken back).
    pub fn value(&mut self, eras: impl IntoIterator<Item = (i64, i128)>) -> f64 {
        let mut value = 0.0;
        for (era, sum) in eras {
            if sum != 0 {
                value += sum as f64 * self.factor(era);
            }
        }
        value
    }

    fn factor(&mut self, era: i64) -> f64 {
        if let Some((_, factor)) = self.known.iter().find(|(known, _)| *known == era) {
            return *factor;
        }
        let factor = self.decay.factor(era, self.latest_day);
        self.known.push((era, factor));
        factor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_closed_form_within_rounding() {
        let decay = Decay::new(30.0);
        let days = [-40, 0, 3, 479, 480, 1_000, 20_000];
        for latest in [1_000, 20_000, 20_100] {
            for &day in &days {
                let era = decay.era(day);
                let value = decay.value([(era, decay.scaled(day, 7))], latest);
                let exact = 7.0 * ((day - latest) as f64 / 30.0).exp2();
                assert!(
                    (value - exact).abs() <= exact * 1e-9,
                    "day {day} latest {latest}: {value} vs {exact}"
                );
            }
        }
    }

    #[test]
    fn integer_sums_are_order_independent() {
        let decay = Decay::new(7.5);
        let updates = [(3, 5), (9, -2), (3, -5), (130, 4), (121, 1)];
        let sum = |order: &[(i64, i64)]| -> Vec<(i64, i128)> {
            let mut eras = std::collections::BTreeMap::new();
            for &(day, weight) in order {
                *eras.entry(decay.era(day)).or_insert(0) += decay.scaled(day, weight);
            }
            eras.into_iter().filter(|(_, s)| *s != 0).collect()
        };
        let mut reversed = updates;
        reversed.reverse();
        assert_eq!(sum(&updates), sum(&reversed));
        let value = decay.value(sum(&updates), 130);
        assert_eq!(value.to_bits(), decay.value(sum(&reversed), 130).to_bits());
    }

    #[test]
    fn tiny_and_huge_half_lives_stay_finite() {
        for half_life in [1e-3, 0.5, 1e6, 1e300] {
            let decay = Decay::new(half_life);
            let scaled = decay.scaled(19_000, i64::from(i32::MAX));
            let value = decay.value([(decay.era(19_000), scaled)], 19_000);
            assert!(value.is_finite() && value > 0.0, "{half_life}: {value}");
        }
    }
}
