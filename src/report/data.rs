//! Results as column-wise records, grouped and aggregated without ever
//! building a row object.
//!
//! [`Records::episodes`] reads only the columns a report needs from
//! `episodes.parquet` (never `messages` or `plan`, the bulk of the file) and
//! dictionary-encodes each string column: a dimension is a list of distinct
//! values plus one `u32` code per row. Filtering, grouping and the metrics
//! then work on codes and plain `f64`/`bool` vectors, so a million episodes
//! aggregate in tens of milliseconds. [`Records::judge`] does the same for
//! `judge.parquet`.
//!
//! Derived dimension: `env_split` (`env/split`). A string column a file lacks
//! is a constant dimension (`variant` = `base`, others empty), so a stage's
//! own `episodes.parquet` reports like a collated one.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use polars::prelude::*;

use super::config::Metric;
use super::metrics::bootstrap_ci;

/// One dictionary-encoded string column.
#[derive(Clone, Debug, Default)]
pub struct Dim {
    pub values: Vec<String>,
    pub codes: Vec<u32>,
}

impl Dim {
    fn constant(value: &str, n: usize) -> Self {
        Dim { values: vec![value.to_string()], codes: vec![0; n] }
    }
    pub fn code_of(&self, value: &str) -> Option<u32> {
        self.values.iter().position(|v| v == value).map(|i| i as u32)
    }
}

/// What a table or figure reads unless it names the dimension itself (in
/// its rows, columns, series or filter): evaluation episodes of the base
/// variant, with the plan in the instruction (the paper's main setting;
/// `none` is the insertion of episodes without a plan).
pub const EPISODE_DEFAULTS: &[(&str, &[&str])] =
    &[("stage", &["eval"]), ("variant", &["base"]), ("insertion", &["none", "instruction"])];
/// The same for judge rows.
pub const JUDGE_DEFAULTS: &[(&str, &[&str])] = &[("variant", &["base"])];

/// Judge verdict codes in [`Records::verdict`].
pub const WIN: u8 = 0;
pub const TIE: u8 = 1;
pub const LOSS: u8 = 2;
pub const FAILED: u8 = 3;

/// Rows of one results table, column-wise.
#[derive(Clone, Debug, Default)]
pub struct Records {
    pub len: usize,
    pub dims: BTreeMap<String, Dim>,
    /// Episodes: final reward, success, steps (empty for judge rows).
    pub reward: Vec<f64>,
    pub success: Vec<bool>,
    pub steps: Vec<u64>,
    /// Judge rows: [`WIN`] (MPO better), [`TIE`], [`LOSS`], [`FAILED`].
    pub verdict: Vec<u8>,
}

/// Episode string columns a report groups by.
pub const EPISODE_DIMS: &[&str] = &["variant", "stage", "env", "split", "task_type", "agent", "planner", "insertion"];
/// Judge string columns a report groups by.
pub const JUDGE_DIMS: &[&str] = &["variant", "dimension", "judge"];

fn open(path: &Path) -> Result<(ParquetReader<File>, Vec<String>)> {
    let file = File::open(path).with_context(|| format!("cannot open `{}`", path.display()))?;
    let mut reader = ParquetReader::new(file);
    let schema = reader.schema().map_err(|e| anyhow!("cannot read `{}`: {e}", path.display()))?;
    let names = schema.iter_names().map(|n| n.to_string()).collect();
    Ok((reader, names))
}

/// Rows of a Parquet file from its metadata alone.
pub fn row_count(path: &Path) -> Result<usize> {
    let file = File::open(path).with_context(|| format!("cannot open `{}`", path.display()))?;
    ParquetReader::new(file).num_rows().map_err(|e| anyhow!("cannot read `{}`: {e}", path.display()))
}

fn encode(s: &Series) -> Result<Dim> {
    let ca = s.str().map_err(|e| anyhow!("column `{}`: {e}", s.name()))?;
    let mut index: HashMap<&str, u32> = HashMap::new();
    let mut values = Vec::new();
    let mut codes = Vec::with_capacity(ca.len());
    for v in ca.iter() {
        let v = v.unwrap_or("");
        let code = *index.entry(v).or_insert_with(|| {
            values.push(v.to_string());
            (values.len() - 1) as u32
        });
        codes.push(code);
    }
    Ok(Dim { values, codes })
}

fn f64s(s: &Series) -> Result<Vec<f64>> {
    let s = s.cast(&DataType::Float64)?;
    Ok(s.f64()?.iter().map(|v| v.unwrap_or(f64::NAN)).collect())
}

impl Records {
    fn read(path: &Path, dims: &[&str], numeric: &[&str]) -> Result<(Records, DataFrame)> {
        let (reader, names) = open(path)?;
        let wanted: Vec<String> =
            dims.iter().chain(numeric).filter(|c| names.iter().any(|n| n == *c)).map(|c| c.to_string()).collect();
        for c in numeric {
            if !names.iter().any(|n| n == c) {
                bail!("`{}` has no column `{c}`", path.display());
            }
        }
        let df = reader
            .with_columns(Some(wanted))
            .finish()
            .map_err(|e| anyhow!("cannot read `{}`: {e}", path.display()))?;
        let len = df.height();
        let mut out = Records { len, ..Default::default() };
        for d in dims {
            let dim = match df.column(d) {
                Ok(c) => encode(c.as_materialized_series())?,
                Err(_) => Dim::constant(if *d == "variant" { "base" } else { "" }, len),
            };
            out.dims.insert(d.to_string(), dim);
        }
        Ok((out, df))
    }

    /// Reads `episodes.parquet` (collated or a stage's own).
    pub fn episodes(path: &Path) -> Result<Records> {
        let (mut r, df) = Self::read(path, EPISODE_DIMS, &["reward", "success", "steps"])?;
        let col = |n: &str| df.column(n).map(|c| c.as_materialized_series().clone());
        r.reward = f64s(&col("reward")?)?;
        r.success = col("success")?.bool()?.iter().map(|v| v.unwrap_or(false)).collect();
        let steps = col("steps")?.cast(&DataType::UInt64)?;
        r.steps = steps.u64()?.iter().map(|v| v.unwrap_or(0)).collect();
        r.derive_env_split();
        Ok(r)
    }

    /// Reads `judge.parquet`.
    pub fn judge(path: &Path) -> Result<Records> {
        let (mut r, df) = Self::read(path, JUDGE_DIMS, &["verdict"])?;
        let v = encode(df.column("verdict")?.as_materialized_series())?;
        let map: Vec<u8> = v
            .values
            .iter()
            .map(|s| match s.as_str() {
                "mpo" => WIN,
                "tie" => TIE,
                "sft" => LOSS,
                _ => FAILED,
            })
            .collect();
        r.verdict = v.codes.iter().map(|&c| map[c as usize]).collect();
        Ok(r)
    }

    /// Builds records from parts (tests, benches).
    pub fn from_columns(dims: BTreeMap<String, Vec<String>>, reward: Vec<f64>, success: Vec<bool>, steps: Vec<u64>) -> Records {
        let len = reward.len();
        let mut r = Records { len, reward, success, steps, ..Default::default() };
        for (name, col) in dims {
            let mut index: HashMap<String, u32> = HashMap::new();
            let mut d = Dim::default();
            for v in col {
                let n = index.len() as u32;
                let code = *index.entry(v.clone()).or_insert_with(|| {
                    d.values.push(v);
                    n
                });
                d.codes.push(code);
            }
            r.dims.insert(name, d);
        }
        r.derive_env_split();
        r
    }

    fn derive_env_split(&mut self) {
        let (Some(env), Some(split)) = (self.dims.get("env"), self.dims.get("split")) else { return };
        let ns = split.values.len().max(1) as u32;
        let mut values = Vec::with_capacity(env.values.len() * ns as usize);
        for e in &env.values {
            for s in &split.values {
                values.push(format!("{e}/{s}"));
            }
        }
        let codes = env.codes.iter().zip(&split.codes).map(|(e, s)| e * ns + s).collect();
        self.dims.insert("env_split".into(), Dim { values, codes });
    }

    pub fn dim(&self, name: &str) -> Result<&Dim> {
        self.dims.get(name).ok_or_else(|| {
            anyhow!(
                "unknown dimension `{name}`; known: {}",
                self.dims.keys().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")
            )
        })
    }

    /// Indices of the rows whose values are in `filter` for every dimension.
    /// `defaults` apply to dimensions that `filter` and `used` do not name.
    pub fn select(&self, filter: &BTreeMap<String, Vec<String>>, used: &[&str], defaults: &[(&str, &[&str])]) -> Result<Vec<u32>> {
        let mut masks: Vec<(&Dim, Vec<bool>)> = Vec::new();
        for (name, allowed) in filter {
            let dim = self.dim(name)?;
            masks.push((dim, dim.values.iter().map(|v| allowed.contains(v)).collect()));
        }
        for (name, allowed) in defaults {
            if filter.contains_key(*name) || used.contains(name) {
                continue;
            }
            if let Some(dim) = self.dims.get(*name) {
                masks.push((dim, dim.values.iter().map(|v| allowed.contains(&v.as_str())).collect()));
            }
        }
        Ok((0..self.len as u32)
            .filter(|&i| masks.iter().all(|(d, m)| m[d.codes[i as usize] as usize]))
            .collect())
    }

    /// Aggregates `rows` by the values of `dims` (keys are value strings).
    pub fn group(&self, rows: &[u32], dims: &[&str], keep_rewards: bool) -> Result<HashMap<Vec<String>, Acc>> {
        let ds: Vec<&Dim> = dims.iter().map(|d| self.dim(d)).collect::<Result<_>>()?;
        let mut by_code: HashMap<Vec<u32>, Acc> = HashMap::new();
        let mut key = Vec::with_capacity(ds.len());
        for &i in rows {
            let i = i as usize;
            key.clear();
            key.extend(ds.iter().map(|d| d.codes[i]));
            if !by_code.contains_key(&key) {
                by_code.insert(key.clone(), Acc::default());
            }
            let acc = by_code.get_mut(&key).expect("inserted above");
            self.add(acc, i, keep_rewards);
        }
        Ok(by_code
            .into_iter()
            .map(|(k, v)| (k.iter().zip(&ds).map(|(c, d)| d.values[*c as usize].clone()).collect(), v))
            .collect())
    }

    fn add(&self, acc: &mut Acc, i: usize, keep: bool) {
        acc.n += 1;
        if !self.verdict.is_empty() {
            acc.verdicts[self.verdict[i] as usize] += 1;
            return;
        }
        let r = self.reward[i];
        acc.reward_sum += r;
        acc.reward_sq += r * r;
        acc.successes += self.success[i] as u64;
        // An episode of 0 steps counts as 0 reward per step.
        let rps = if self.steps[i] > 0 { r / self.steps[i] as f64 } else { 0.0 };
        acc.rps_sum += rps;
        acc.rps_sq += rps * rps;
        if keep {
            acc.rewards.push(r);
            acc.succeeded.push(if self.success[i] { 1.0 } else { 0.0 });
            acc.per_step.push(rps);
        }
    }

    /// Distinct values of `dim` among `rows`, in first-seen order.
    pub fn values_in(&self, rows: &[u32], dim: &str) -> Result<Vec<String>> {
        let d = self.dim(dim)?;
        let mut seen = vec![false; d.values.len()];
        let mut out = Vec::new();
        for &i in rows {
            let c = d.codes[i as usize] as usize;
            if !seen[c] {
                seen[c] = true;
                out.push(d.values[c].clone());
            }
        }
        Ok(out)
    }
}

/// Running sums of one cell.
#[derive(Clone, Debug, Default)]
pub struct Acc {
    pub n: u64,
    pub reward_sum: f64,
    pub reward_sq: f64,
    pub successes: u64,
    pub rps_sum: f64,
    pub rps_sq: f64,
    /// Judge verdicts: win, tie, loss, failed.
    pub verdicts: [u64; 4],
    /// Per-episode rewards, successes (1 or 0) and rewards per step, kept
    /// only when an interval is wanted.
    pub rewards: Vec<f64>,
    pub succeeded: Vec<f64>,
    pub per_step: Vec<f64>,
}

/// How every interval of the report is computed, for notes and captions.
pub const INTERVAL_METHOD: &str =
    "percentile bootstrap of the mean, 1,000 resamples with a fixed seed; the normal approximation above 2,000 episodes";

/// Above this many episodes a cell's interval is the normal approximation
/// (mean ± 1.96·sd/√n), which the bootstrap matches at that size, instead
/// of 1,000 resamples of every episode.
pub const BOOTSTRAP_MAX: usize = 2_000;

impl Acc {
    /// The metric's value; `None` for a cell without data.
    pub fn value(&self, metric: Metric) -> Option<f64> {
        let judged = self.verdicts[0] + self.verdicts[1] + self.verdicts[2];
        let n = self.n as f64;
        match metric {
            Metric::Count => Some(n),
            _ if self.n == 0 => None,
            Metric::AvgReward => Some(self.reward_sum / n),
            Metric::SuccessRate => Some(self.successes as f64 / n),
            Metric::RewardPerStep => Some(self.rps_sum / n),
            Metric::JudgeWinRate if judged == 0 => None,
            Metric::JudgeWinRate => Some(self.verdicts[0] as f64 / judged as f64),
        }
    }

    /// Half-width of the 95% interval of the average reward.
    pub fn ci95(&self) -> Option<f64> {
        self.ci95_of(Metric::AvgReward)
    }

    /// Half-width of the 95% interval of `metric`, a mean over the cell's
    /// episodes ([`INTERVAL_METHOD`]); `None` for a cell without episodes
    /// and for metrics that are not such means (counts, judge shares).
    pub fn ci95_of(&self, metric: Metric) -> Option<f64> {
        let n = self.n as usize;
        let (kept, sum, sq) = match metric {
            Metric::AvgReward => (&self.rewards, self.reward_sum, self.reward_sq),
            // 0/1 values: the sum of squares is the sum.
            Metric::SuccessRate => (&self.succeeded, self.successes as f64, self.successes as f64),
            Metric::RewardPerStep => (&self.per_step, self.rps_sum, self.rps_sq),
            Metric::Count | Metric::JudgeWinRate => return None,
        };
        if n == 0 {
            return None;
        }
        if n <= BOOTSTRAP_MAX && kept.len() == n {
            let (lo, hi) = bootstrap_ci(kept, 1000, 0x5eed);
            return Some((hi - lo) / 2.0);
        }
        let mean = sum / n as f64;
        let var = (sq / n as f64 - mean * mean).max(0.0);
        Some(1.96 * (var / n as f64).sqrt())
    }

    pub fn merge(&mut self, o: &Acc) {
        self.n += o.n;
        self.reward_sum += o.reward_sum;
        self.reward_sq += o.reward_sq;
        self.successes += o.successes;
        self.rps_sum += o.rps_sum;
        self.rps_sq += o.rps_sq;
        for k in 0..4 {
            self.verdicts[k] += o.verdicts[k];
        }
        self.rewards.extend_from_slice(&o.rewards);
        self.succeeded.extend_from_slice(&o.succeeded);
        self.per_step.extend_from_slice(&o.per_step);
    }
}

/// The paper's order of well-known values; others sort after them.
pub fn known_order(dim: &str) -> &'static [&'static str] {
    match dim {
        "planner" => &["none", "sft", "prompted", "rft", "mpo", "good", "misleading"],
        "insertion" => &["none", "instruction", "thought", "observation"],
        "split" => &["seen", "unseen"],
        "dimension" => &["correctness", "followability", "standardization", "overall"],
        "variant" => &["base"],
        _ => &[],
    }
}

/// Agents ordered by `[report.params_b]` (smallest first), as an order for
/// [`sort_values`]; agents without a count follow in natural order.
pub fn agent_order(params_b: &BTreeMap<String, f64>) -> Vec<String> {
    let mut v: Vec<(&String, &f64)> = params_b.iter().collect();
    v.sort_by(|a, b| a.1.total_cmp(b.1).then(natural(a.0, b.0)));
    v.into_iter().map(|(k, _)| k.clone()).collect()
}

/// Sorts `values` of `dim`: a user order first, then the paper's, then
/// natural order (numbers inside names compare as numbers).
pub fn sort_values(dim: &str, values: &mut [String], user: Option<&Vec<String>>) {
    let rank = |v: &str| -> (usize, usize) {
        if let Some(i) = user.and_then(|u| u.iter().position(|x| x == v)) {
            return (0, i);
        }
        let split = |v: &str| v.rsplit_once('/').map(|(_, s)| s.to_string()).unwrap_or_default();
        let known = known_order(dim);
        match known.iter().position(|x| *x == v) {
            Some(i) => (1, i),
            None if dim == "env_split" => (2, known_order("split").iter().position(|x| *x == split(v)).unwrap_or(9)),
            None => (2, 0),
        }
    };
    values.sort_by(|a, b| {
        rank(a).0.cmp(&rank(b).0).then_with(|| {
            if dim == "env_split" && rank(a).0 == 2 {
                let env = |v: &str| v.rsplit_once('/').map(|(e, _)| e.to_string()).unwrap_or(v.to_string());
                return natural(&env(a), &env(b)).then(rank(a).1.cmp(&rank(b).1)).then(natural(a, b));
            }
            rank(a).1.cmp(&rank(b).1).then(natural(a, b))
        })
    });
}

/// Compares strings with digit runs as numbers (`m=10` after `m=9`).
pub fn natural(a: &str, b: &str) -> std::cmp::Ordering {
    fn chunks(s: &str) -> Vec<(bool, String)> {
        let mut out: Vec<(bool, String)> = Vec::new();
        for c in s.chars() {
            let d = c.is_ascii_digit();
            match out.last_mut() {
                Some((kd, t)) if *kd == d => t.push(c),
                _ => out.push((d, c.to_string())),
            }
        }
        out
    }
    let (ca, cb) = (chunks(a), chunks(b));
    for (x, y) in ca.iter().zip(&cb) {
        let o = if x.0 && y.0 {
            x.1.parse::<u128>().unwrap_or(0).cmp(&y.1.parse::<u128>().unwrap_or(0))
        } else {
            x.1.cmp(&y.1)
        };
        if o.is_ne() {
            return o;
        }
    }
    ca.len().cmp(&cb.len())
}

/// Variant name → swept key → value: `mpo.m=3,mpo.n=2` parses to
/// `{mpo.m: 3, mpo.n: 2}`; `base` is `base_values`. Non-numeric overrides
/// are skipped (they cannot be an x axis).
pub fn variant_values(variants: &[String], base_values: &BTreeMap<String, f64>) -> BTreeMap<String, BTreeMap<String, f64>> {
    variants
        .iter()
        .map(|v| {
            let mut vals = base_values.clone();
            if v != "base" {
                for part in v.split(',') {
                    if let Some((k, x)) = part.split_once('=') {
                        if let Ok(x) = x.trim().parse::<f64>() {
                            vals.insert(k.trim().to_string(), x);
                        }
                    }
                }
            }
            (v.clone(), vals)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variant_names_parse_into_values() {
        let base = BTreeMap::from([("mpo.m".to_string(), 5.0), ("mpo.n".to_string(), 5.0)]);
        let vv = variant_values(&["base".into(), "mpo.m=3".into(), "mpo.m=1,mpo.n=2".into()], &base);
        assert_eq!(vv["base"]["mpo.m"], 5.0);
        assert_eq!(vv["mpo.m=3"]["mpo.m"], 3.0);
        assert_eq!(vv["mpo.m=3"]["mpo.n"], 5.0);
        assert_eq!(vv["mpo.m=1,mpo.n=2"]["mpo.n"], 2.0);
    }

    #[test]
    fn values_sort_in_the_papers_order() {
        let mut v: Vec<String> = ["mpo", "none", "rft", "sft", "prompted"].map(String::from).to_vec();
        sort_values("planner", &mut v, None);
        assert_eq!(v, ["none", "sft", "prompted", "rft", "mpo"]);
        let mut v: Vec<String> = ["b/unseen", "a/unseen", "b/seen", "a/seen"].map(String::from).to_vec();
        sort_values("env_split", &mut v, None);
        assert_eq!(v, ["a/seen", "a/unseen", "b/seen", "b/unseen"]);
        let mut v: Vec<String> = ["m10", "m9"].map(String::from).to_vec();
        sort_values("agent", &mut v, None);
        assert_eq!(v, ["m9", "m10"]);
    }
}
