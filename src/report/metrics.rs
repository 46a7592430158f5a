//! The paper's metrics, computed one way for every report.
//!
//! - average reward: mean final reward (primary metric);
//! - success rate: share of successful episodes (ALFWorld: reward = 1;
//!   ScienceWorld: the goal state was reached — the `success` column);
//! - average reward per step: final reward / steps, averaged (Fig. 3);
//! - a 95% percentile-bootstrap interval of the average reward (1,000
//!   resamples, fixed seed, so a report is reproducible).

/// What the metrics need of one episode.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EpisodeOutcome {
    pub reward: f64,
    pub success: bool,
    pub steps: u64,
}

impl EpisodeOutcome {
    pub fn from_row(r: &serde_json::Value) -> Self {
        Self {
            reward: r.get("reward").and_then(|v| v.as_f64()).unwrap_or(0.0),
            success: r.get("success").and_then(|v| v.as_bool()).unwrap_or(false),
            steps: r.get("steps").and_then(|v| v.as_u64()).unwrap_or(0),
        }
    }
}

/// Metrics of a set of episodes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Metrics {
    pub episodes: usize,
    pub avg_reward: f64,
    /// Half-width of the 95% bootstrap interval of `avg_reward`.
    pub avg_reward_ci95: f64,
    pub success_rate: f64,
    pub reward_per_step: f64,
}

impl Metrics {
    pub fn of(outcomes: &[EpisodeOutcome]) -> Self {
        let n = outcomes.len();
        if n == 0 {
            return Self { episodes: 0, avg_reward: f64::NAN, avg_reward_ci95: f64::NAN, success_rate: f64::NAN, reward_per_step: f64::NAN };
        }
        let rewards: Vec<f64> = outcomes.iter().map(|o| o.reward).collect();
        let avg = rewards.iter().sum::<f64>() / n as f64;
        let success = outcomes.iter().filter(|o| o.success).count() as f64 / n as f64;
        let rps = outcomes
            .iter()
            .map(|o| if o.steps == 0 { 0.0 } else { o.reward / o.steps as f64 })
            .sum::<f64>()
            / n as f64;
        let (lo, hi) = bootstrap_ci(&rewards, 1000, 0x5eed);
        Self { episodes: n, avg_reward: avg, avg_reward_ci95: (hi - lo) / 2.0, success_rate: success, reward_per_step: rps }
    }
}

/// Percentile bootstrap 95% interval of the mean.
pub fn bootstrap_ci(xs: &[f64], resamples: usize, seed: u64) -> (f64, f64) {
    let n = xs.len();
    if n < 2 {
        let m = xs.first().copied().unwrap_or(f64::NAN);
        return (m, m);
    }
    let mut state = seed;
    let mut next = move || {
        // SplitMix64.
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut means: Vec<f64> = (0..resamples)
        .map(|_| (0..n).map(|_| xs[(next() % n as u64) as usize]).sum::<f64>() / n as f64)
        .collect();
    means.sort_by(f64::total_cmp);
    let at = |q: f64| means[((q * (resamples - 1) as f64).round() as usize).min(resamples - 1)];
    (at(0.025), at(0.975))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_of_known_outcomes() {
        let o = |reward, success, steps| EpisodeOutcome { reward, success, steps };
        let m = Metrics::of(&[o(1.0, true, 10), o(0.0, false, 30), o(1.0, true, 5), o(0.5, false, 20)]);
        assert_eq!(m.episodes, 4);
        assert!((m.avg_reward - 0.625).abs() < 1e-12);
        assert!((m.success_rate - 0.5).abs() < 1e-12);
        assert!((m.reward_per_step - (0.1 + 0.0 + 0.2 + 0.025) / 4.0).abs() < 1e-12);
        assert!(m.avg_reward_ci95 > 0.0 && m.avg_reward_ci95 < 0.625);
    }

    #[test]
    fn constant_rewards_have_a_zero_width_interval() {
        let (lo, hi) = bootstrap_ci(&[1.0; 10], 200, 1);
        assert_eq!((lo, hi), (1.0, 1.0));
    }
}
