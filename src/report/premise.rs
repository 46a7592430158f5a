//! Premise checks: before a report says anything about MPO, does the run
//! have what the method needs? (Issue #25; the paper's largest gains are for
//! agents that *use* plans.)
//!
//! 1. **Plan sensitivity** — the agent's success with the built-in world's
//!    good rule plans, its misleading ones and none (eval planners `good`,
//!    `misleading`, `none`, plans in the instruction). MPO can only help an
//!    agent whose success depends on the plan.
//! 2. **Monte Carlo signal** — whether Q(p), the mean reward of N explorer
//!    episodes, orders the sampled plans as their true quality does. True
//!    quality is the scripted plan follower's outcome with the plan
//!    (`follower[sampled/…]`: success, then fewer steps), a deterministic
//!    function of the plan. Reported: the share of within-task pairs of
//!    differing true quality that Q orders the same way (ties in Q count
//!    half; chance is 0.5), the DPO pairs as `pairs` picks them (highest vs
//!    lowest Q, the first sample winning ties) whose chosen plan is truly
//!    better, and Spearman's rank correlation of Q and true quality.
//! 3. **Planner drift under DPO** — how often the test plans of the SFT
//!    and the MPO planner name the task's object, and the follower's success
//!    with them.
//!
//! The computations ([`Rate`], [`mc_signal`], [`spearman`],
//! [`names_object`]) are pure functions of plain data, tested on
//! constructed data; [`section`] reads the collated Parquet files and
//! writes the report's section. Nothing here fails a report: a check that
//! lacks its data says so.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::fs::File;
use std::path::Path;

use anyhow::{anyhow, Result};
use polars::prelude::*;

/// A success count out of `n` episodes.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Rate {
    pub successes: usize,
    pub n: usize,
}

impl Rate {
    pub fn p(&self) -> f64 {
        if self.n == 0 {
            f64::NAN
        } else {
            self.successes as f64 / self.n as f64
        }
    }

    /// Half-width of the 95% normal-approximation interval of the rate.
    pub fn half(&self) -> f64 {
        let p = self.p();
        1.96 * (p * (1.0 - p) / self.n.max(1) as f64).sqrt()
    }

    /// `self − other` and the half-width of its 95% interval (normal
    /// approximation, unpaired), as the report's findings compute it.
    pub fn minus(&self, other: &Rate) -> (f64, f64) {
        let (a, b) = (self.p(), other.p());
        let var = |p: f64, n: usize| p * (1.0 - p) / n.max(1) as f64;
        (a - b, 1.96 * (var(a, self.n) + var(b, other.n)).sqrt())
    }

    fn cell(&self) -> String {
        if self.n == 0 {
            "–".into()
        } else {
            format!("{:.2} ± {:.2} ({})", self.p(), self.half(), self.n)
        }
    }
}

/// How a difference `d` with a 95% half-width `h` reads: its interval
/// above 0, below 0, or containing it.
pub fn direction(d: f64, h: f64) -> &'static str {
    if d - h > 0.0 {
        "higher"
    } else if d + h < 0.0 {
        "lower"
    } else {
        "not distinguishable"
    }
}

fn diff_cell((d, h): (f64, f64)) -> String {
    format!("{d:+.2} ± {h:.2} ({})", direction(d, h))
}

/// A sampled plan with its Monte Carlo score and its true quality.
#[derive(Clone, Debug, PartialEq)]
pub struct ScoredPlan {
    pub task_id: String,
    pub sample: u64,
    /// Q(p): the mean reward of the explorer's episodes with the plan.
    pub q: f64,
    /// The follower's outcome with the plan.
    pub success: bool,
    pub steps: u64,
}

impl ScoredPlan {
    /// True quality as one number: success first, then fewer steps.
    pub fn truth(&self) -> f64 {
        if self.success {
            1.0 + 1.0 / (1.0 + self.steps as f64)
        } else {
            0.0
        }
    }
}

/// What [`mc_signal`] measures.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct McSignal {
    pub plans: usize,
    pub tasks: usize,
    /// Within-task pairs whose true quality differs.
    pub pairs: usize,
    /// Of those, ordered the same way by Q (a tie in Q counts half).
    pub concordant: f64,
    /// Of those, the pairs Q orders (no tie in Q), and how many of them
    /// the same way as the truth.
    pub decided: usize,
    pub decided_right: usize,
    /// DPO pairs (highest vs lowest Q, Q differing) whose plans differ in
    /// true quality, and how many of them chose the truly better plan.
    pub dpo_pairs: usize,
    pub dpo_right: usize,
    /// DPO pairs whose plans are equally good (no signal either way).
    pub dpo_ties: usize,
    /// Spearman's rank correlation of Q and true quality over all plans.
    pub spearman: Option<f64>,
}

impl McSignal {
    /// The share of informative pairs Q orders right, with the half-width
    /// of its 95% interval (normal approximation; pairs of one task are
    /// not independent, so this is optimistic).
    pub fn agreement(&self) -> Option<(f64, f64)> {
        (self.pairs > 0).then(|| {
            let p = self.concordant / self.pairs as f64;
            (p, 1.96 * (p * (1.0 - p) / self.pairs as f64).sqrt())
        })
    }

    /// The share of the pairs Q orders that it orders right, with its
    /// half-width (as [`McSignal::agreement`]).
    pub fn decided_agreement(&self) -> Option<(f64, f64)> {
        (self.decided > 0).then(|| {
            let p = self.decided_right as f64 / self.decided as f64;
            (p, 1.96 * (p * (1.0 - p) / self.decided as f64).sqrt())
        })
    }
}

/// Measures how well Q orders `plans` (see the module doc).
pub fn mc_signal(plans: &[ScoredPlan]) -> McSignal {
    let mut by_task: BTreeMap<&str, Vec<&ScoredPlan>> = BTreeMap::new();
    for p in plans {
        by_task.entry(p.task_id.as_str()).or_default().push(p);
    }
    let mut s = McSignal { plans: plans.len(), tasks: by_task.len(), ..Default::default() };
    for v in by_task.values_mut() {
        v.sort_by_key(|p| p.sample);
        for (i, a) in v.iter().enumerate() {
            for b in &v[i + 1..] {
                let (ta, tb) = (a.truth(), b.truth());
                if ta == tb {
                    continue;
                }
                s.pairs += 1;
                if a.q == b.q {
                    s.concordant += 0.5;
                } else {
                    s.decided += 1;
                    if (a.q > b.q) == (ta > tb) {
                        s.concordant += 1.0;
                        s.decided_right += 1;
                    }
                }
            }
        }
        // As `pairs` picks them: the first of the highest and of the lowest.
        let best = v.iter().copied().fold(None::<&ScoredPlan>, |m, p| match m {
            Some(m) if m.q >= p.q => Some(m),
            _ => Some(p),
        });
        let worst = v.iter().copied().fold(None::<&ScoredPlan>, |m, p| match m {
            Some(m) if m.q <= p.q => Some(m),
            _ => Some(p),
        });
        if let (Some(c), Some(r)) = (best, worst) {
            if c.q > r.q {
                match c.truth().partial_cmp(&r.truth()) {
                    Some(std::cmp::Ordering::Greater) => {
                        s.dpo_pairs += 1;
                        s.dpo_right += 1;
                    }
                    Some(std::cmp::Ordering::Less) => s.dpo_pairs += 1,
                    _ => s.dpo_ties += 1,
                }
            }
        }
    }
    let q: Vec<f64> = plans.iter().map(|p| p.q).collect();
    let t: Vec<f64> = plans.iter().map(ScoredPlan::truth).collect();
    s.spearman = spearman(&q, &t);
    s
}

/// Average ranks (1-based; ties share their mean rank).
fn ranks(x: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..x.len()).collect();
    idx.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
    let mut r = vec![0.0; x.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && x[idx[j + 1]] == x[idx[i]] {
            j += 1;
        }
        let mean = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            r[k] = mean;
        }
        i = j + 1;
    }
    r
}

/// Spearman's rank correlation (Pearson's of the average ranks); `None`
/// with fewer than 3 points or a constant side.
pub fn spearman(x: &[f64], y: &[f64]) -> Option<f64> {
    if x.len() != y.len() || x.len() < 3 {
        return None;
    }
    let (rx, ry) = (ranks(x), ranks(y));
    let n = x.len() as f64;
    let (mx, my) = (rx.iter().sum::<f64>() / n, ry.iter().sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in rx.iter().zip(&ry) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    (sxx > 0.0 && syy > 0.0).then(|| sxy / (sxx * syy).sqrt())
}

/// Whether `plan` names `object` (a whole word, any case, or its plural).
pub fn names_object(plan: &str, object: &str) -> bool {
    let object = object.to_ascii_lowercase();
    let plural = format!("{object}s");
    plan.split(|c: char| !c.is_ascii_alphanumeric())
        .map(str::to_ascii_lowercase)
        .any(|w| w == object || w == plural)
}

/// The object of a built-in world task, from its id.
fn task_object(task_id: &str) -> Option<&'static str> {
    crate::env::builtin::Game::from_task_id(task_id).map(|g| g.goal_object())
}

fn read(path: &Path, cols: &[&str]) -> Result<DataFrame> {
    let file = File::open(path).map_err(|e| anyhow!("cannot open `{}`: {e}", path.display()))?;
    let reader = ParquetReader::new(file);
    reader
        .with_columns(Some(cols.iter().map(|c| c.to_string()).collect()))
        .finish()
        .map_err(|e| anyhow!("cannot read `{}`: {e}", path.display()))
}

fn strs(df: &DataFrame, name: &str) -> Result<Vec<String>> {
    let c = df.column(name)?.as_materialized_series().clone();
    Ok(c.str()?.iter().map(|v| v.unwrap_or("").to_string()).collect())
}

fn u64s(df: &DataFrame, name: &str) -> Result<Vec<u64>> {
    let c = df.column(name)?.as_materialized_series().cast(&DataType::UInt64)?;
    Ok(c.u64()?.iter().map(|v| v.unwrap_or(0)).collect())
}

fn f64s(df: &DataFrame, name: &str) -> Result<Vec<Option<f64>>> {
    let c = df.column(name)?.as_materialized_series().cast(&DataType::Float64)?;
    Ok(c.f64()?.iter().collect())
}

/// The episodes the checks read.
struct Episodes {
    stage: Vec<String>,
    split: Vec<String>,
    agent: Vec<String>,
    planner: Vec<String>,
    insertion: Vec<String>,
    plan_id: Vec<String>,
    success: Vec<bool>,
    steps: Vec<u64>,
}

impl Episodes {
    /// Reads the base variant's episodes (a sweep's other variants are
    /// Figure 5's business).
    fn read(path: &Path) -> Result<Episodes> {
        const COLS: [&str; 8] = ["stage", "split", "agent", "planner", "insertion", "plan_id", "success", "steps"];
        let with_variant: Vec<&str> = COLS.iter().copied().chain(["variant"]).collect();
        let mut df = match read(path, &with_variant) {
            Ok(df) => df,
            Err(_) => read(path, &COLS)?,
        };
        if df.column("variant").is_ok() {
            let base = df.column("variant")?.as_materialized_series().str()?.equal("base");
            df = df.filter(&base)?;
        }
        Ok(Episodes {
            stage: strs(&df, "stage")?,
            split: strs(&df, "split")?,
            agent: strs(&df, "agent")?,
            planner: strs(&df, "planner")?,
            insertion: strs(&df, "insertion")?,
            plan_id: strs(&df, "plan_id")?,
            success: df.column("success")?.as_materialized_series().bool()?.iter().map(|v| v.unwrap_or(false)).collect(),
            steps: u64s(&df, "steps")?,
        })
    }

    /// (stage, agent, split, planner) → rate, plans in the instruction or
    /// none.
    fn rates(&self) -> BTreeMap<(String, String, String, String), Rate> {
        let mut m: BTreeMap<(String, String, String, String), Rate> = BTreeMap::new();
        for i in 0..self.stage.len() {
            if !(self.insertion[i] == "instruction" || self.insertion[i] == "none") {
                continue;
            }
            let r = m.entry((self.stage[i].clone(), self.agent[i].clone(), self.split[i].clone(), self.planner[i].clone())).or_default();
            r.n += 1;
            r.successes += self.success[i] as usize;
        }
        m
    }
}

/// What the checks measured, for the findings' plain summary.
#[derive(Clone, Debug, Default)]
pub struct Checks {
    /// (stage, agent, split, planner) → success, plans in the instruction
    /// or none.
    pub rates: BTreeMap<(String, String, String, String), Rate>,
    /// (agent, split) → good − misleading, when both were evaluated.
    pub sensitivity: BTreeMap<(String, String), (f64, f64)>,
    pub signal: Option<McSignal>,
    /// split → (SFT, MPO) test plans naming the task's object.
    pub drift: BTreeMap<String, (Rate, Rate)>,
}

/// The plans the checks read (`plans.parquet`), read once.
struct Plans {
    stage: Vec<String>,
    planner: Vec<String>,
    split: Vec<String>,
    task: Vec<String>,
    sample: Vec<u64>,
    q: Vec<Option<f64>>,
    text: Vec<String>,
}

impl Plans {
    fn read(path: &Path) -> Result<Plans> {
        let df = read(path, &["stage", "planner", "split", "task_id", "sample", "q", "text"])?;
        Ok(Plans {
            stage: strs(&df, "stage")?,
            planner: strs(&df, "planner")?,
            split: strs(&df, "split")?,
            task: strs(&df, "task_id")?,
            sample: u64s(&df, "sample")?,
            q: f64s(&df, "q")?,
            text: strs(&df, "text")?,
        })
    }
}

/// Writes `## Premise checks` from the collated results in `results`;
/// writes nothing when the run has none of their inputs.
pub fn section(md: &mut String, results: &Path) -> Result<Checks> {
    let ep_path = results.join("episodes.parquet");
    let plans_path = results.join("plans.parquet");
    let episodes = if ep_path.exists() { Some(Episodes::read(&ep_path)?) } else { None };
    let rates = episodes.as_ref().map(Episodes::rates).unwrap_or_default();
    let mut checks = Checks { rates: rates.clone(), ..Default::default() };
    let has_rule = rates.keys().any(|k| k.0 == "eval" && (k.3 == "good" || k.3 == "misleading"));
    let has_sampled = episodes.as_ref().is_some_and(|e| e.planner.iter().any(|p| p == "sampled"));
    if !has_rule && !has_sampled {
        return Ok(checks);
    }
    writeln!(md, "## Premise checks\n")?;
    writeln!(
        md,
        "MPO assumes an agent whose success depends on the plan it is given, and Monte Carlo scores that tell better \
         plans from worse ones. Measured here before any claim about MPO (± : 95% intervals, normal approximation; \
         (n): episodes or pairs behind each number).\n"
    )?;
    checks.sensitivity = sensitivity(md, &rates)?;
    if let (Some(e), true) = (&episodes, plans_path.exists()) {
        let plans = Plans::read(&plans_path)?;
        checks.signal = signal(md, e, &plans)?;
        checks.drift = drift(md, &rates, &plans)?;
    }
    Ok(checks)
}

fn sensitivity(md: &mut String, rates: &BTreeMap<(String, String, String, String), Rate>) -> Result<BTreeMap<(String, String), (f64, f64)>> {
    let mut out = BTreeMap::new();
    writeln!(md, "### 1. Plan sensitivity\n")?;
    let mut rows: BTreeMap<(String, String), [Rate; 3]> = BTreeMap::new();
    for ((stage, agent, split, planner), r) in rates {
        let col = match planner.as_str() {
            "none" => 0,
            "good" => 1,
            "misleading" => 2,
            _ => continue,
        };
        if stage == "eval" {
            rows.entry((agent.clone(), split.clone())).or_default()[col] = *r;
        }
    }
    rows.retain(|_, v| v[1].n > 0 || v[2].n > 0);
    if rows.is_empty() {
        writeln!(md, "Not measured: add `\"good\"` and `\"misleading\"` (the built-in world's rule plans) to `eval.planners`.\n")?;
        return Ok(out);
    }
    writeln!(
        md,
        "Success rate with the built-in world's rule plans in the instruction — *good*: the likeliest places of the \
         task's object and the right appliance; *misleading*: places where it never is and the wrong appliance — and \
         with none.\n"
    )?;
    writeln!(md, "| agent | split | no plan | good plans | misleading plans | good − none | good − misleading |")?;
    writeln!(md, "|---|---|---:|---:|---:|---:|---:|")?;
    let mut verdicts = Vec::new();
    for ((agent, split), [none, good, bad]) in &rows {
        let gn = (good.n > 0 && none.n > 0).then(|| good.minus(none));
        let gb = (good.n > 0 && bad.n > 0).then(|| good.minus(bad));
        writeln!(
            md,
            "| {agent} | {split} | {} | {} | {} | {} | {} |",
            none.cell(),
            good.cell(),
            bad.cell(),
            gn.map_or("–".into(), diff_cell),
            gb.map_or("–".into(), diff_cell)
        )?;
        if let Some((d, h)) = gb {
            verdicts.push((agent.clone(), split.clone(), d - h > 0.0));
            out.insert((agent.clone(), split.clone()), (d, h));
        }
    }
    writeln!(md)?;
    for (agent, split, holds) in verdicts {
        let text = if holds {
            "holds: its success depends on what the plan says (good − misleading excludes 0)"
        } else {
            "does **not** hold: good and misleading plans cannot be told apart by its success"
        };
        writeln!(md, "- {agent} on {split}: the premise {text}.")?;
    }
    writeln!(md)?;
    Ok(out)
}

fn signal(md: &mut String, e: &Episodes, p: &Plans) -> Result<Option<McSignal>> {
    writeln!(md, "### 2. Monte Carlo signal\n")?;
    // plan_id → the follower's outcome with that sampled plan.
    let mut truth: HashMap<&str, (bool, u64)> = HashMap::new();
    for i in 0..e.stage.len() {
        if e.stage[i] == "follower" && e.planner[i] == "sampled" {
            truth.insert(e.plan_id[i].as_str(), (e.success[i], e.steps[i]));
        }
    }
    let (stage, task, sample, q) = (&p.stage, &p.task, &p.sample, &p.q);
    let mut plans = Vec::new();
    for i in 0..stage.len() {
        let Some(q) = q[i].filter(|_| stage[i] == "sample_plans") else { continue };
        let Some(&(success, steps)) = truth.get(format!("{}#{}", task[i], sample[i]).as_str()) else { continue };
        plans.push(ScoredPlan { task_id: task[i].clone(), sample: sample[i], q, success, steps });
    }
    if plans.is_empty() {
        writeln!(md, "Not measured: no scored sampled plans with the follower's outcome (built-in world, `mc_rollouts` and `follower[sampled/…]`).\n")?;
        return Ok(None);
    }
    let s = mc_signal(&plans);
    writeln!(
        md,
        "Q(p) of the {} sampled plans of {} train tasks against their true quality (the scripted plan follower's \
         outcome with each: success, then fewer steps):\n",
        s.plans, s.tasks
    )?;
    match s.agreement() {
        Some((p, h)) => writeln!(
            md,
            "- pair agreement: of the {} within-task pairs that differ in true quality, Q orders {:.1} the same way \
             (ties in Q count half): **{:.2} ± {:.2}** (chance: 0.50);",
            s.pairs, s.concordant, p, h
        )?,
        None => writeln!(md, "- pair agreement: no within-task pair differs in true quality;")?,
    }
    if let Some((p, h)) = s.decided_agreement() {
        let word = if p - h > 0.5 { "above chance" } else { "not distinguishable from chance" };
        writeln!(
            md,
            "- of those pairs, Q ties on {} and orders {}; of the ordered ones it orders {} the same way as the truth: \
             **{p:.2} ± {h:.2}** ({word});",
            s.pairs - s.decided,
            s.decided,
            s.decided_right
        )?;
    }
    writeln!(
        md,
        "- DPO pairs (highest vs lowest Q, as `pairs` picks them): {} of the {} whose plans differ in true quality \
         chose the better plan; {} more joined equally good plans;",
        s.dpo_right, s.dpo_pairs, s.dpo_ties
    )?;
    match s.spearman {
        Some(r) => writeln!(md, "- Spearman's rank correlation of Q and true quality over all plans: **{r:.2}**.\n")?,
        None => writeln!(md, "- Spearman's rank correlation: undefined (a constant side).\n")?,
    }
    Ok(Some(s))
}

fn drift(md: &mut String, rates: &BTreeMap<(String, String, String, String), Rate>, p: &Plans) -> Result<BTreeMap<String, (Rate, Rate)>> {
    let mut out = BTreeMap::new();
    let (stage, planner, split, task, text) = (&p.stage, &p.planner, &p.split, &p.task, &p.text);
    // (split, planner) → plans naming the task's object.
    let mut named: BTreeMap<(String, String), Rate> = BTreeMap::new();
    for i in 0..stage.len() {
        if stage[i] != "test_plans" || !(planner[i] == "sft" || planner[i] == "mpo") {
            continue;
        }
        let Some(obj) = task_object(&task[i]) else { continue };
        let r = named.entry((split[i].clone(), planner[i].clone())).or_default();
        r.n += 1;
        r.successes += names_object(&text[i], obj) as usize;
    }
    if named.is_empty() {
        return Ok(out);
    }
    writeln!(md, "### 3. Planner drift under DPO\n")?;
    writeln!(md, "| split | test plans naming the task's object: SFT | MPO | follower's success: SFT plans | MPO plans |")?;
    writeln!(md, "|---|---:|---:|---:|---:|")?;
    let splits: Vec<String> = {
        let mut v: Vec<String> = named.keys().map(|k| k.0.clone()).collect();
        v.dedup();
        v
    };
    for s in splits {
        let get = |p: &str| named.get(&(s.clone(), p.to_string())).copied().unwrap_or_default();
        let follower = |p: &str| rates.get(&("follower".into(), "follower".into(), s.clone(), p.to_string())).copied().unwrap_or_default();
        let frac = |r: Rate| if r.n == 0 { "–".into() } else { format!("{}/{}", r.successes, r.n) };
        writeln!(md, "| {s} | {} | {} | {} | {} |", frac(get("sft")), frac(get("mpo")), follower("sft").cell(), follower("mpo").cell())?;
        out.insert(s.clone(), (get("sft"), get("mpo")));
    }
    writeln!(md)?;
    Ok(out)
}

/// The findings' opening: what MPO did against SFT plans and no plan, in
/// words, and — when it does not beat SFT plans — why, from the checks.
pub fn plainly(md: &mut String, c: &Checks) -> Result<()> {
    let agents: Vec<(String, String)> = {
        let mut v: Vec<(String, String)> =
            c.rates.keys().filter(|k| k.0 == "eval" && k.3 == "mpo").map(|k| (k.1.clone(), k.2.clone())).collect();
        v.dedup();
        v
    };
    if agents.is_empty() {
        return Ok(());
    }
    writeln!(md, "### In short\n")?;
    let get = |a: &str, s: &str, p: &str| c.rates.get(&("eval".into(), a.into(), s.into(), p.into())).copied().filter(|r| r.n > 0);
    let mut beats_sft: Vec<String> = Vec::new();
    for (agent, split) in &agents {
        let mpo = get(agent, split, "mpo").unwrap_or_default();
        let mut parts = Vec::new();
        for (other, name) in [("sft", "SFT plans"), ("none", "no plan")] {
            if let Some(o) = get(agent, split, other) {
                let (d, h) = mpo.minus(&o);
                if other == "sft" && d - h > 0.0 {
                    beats_sft.push(format!("{agent} on {split}"));
                }
                parts.push(format!("vs {name} {:.2} ({} tasks): {}", o.p(), o.n, diff_cell((d, h))));
            }
        }
        writeln!(md, "- {agent} on {split}: success with MPO plans {:.2} ({} tasks); {}.", mpo.p(), mpo.n, parts.join("; "))?;
    }
    writeln!(md)?;
    if !beats_sft.is_empty() {
        writeln!(
            md,
            "MPO's plans beat the SFT planner's for {}; elsewhere the difference is not distinguishable from 0, or lower.\n",
            beats_sft.join(", ")
        )?;
        return Ok(());
    }
    writeln!(md, "MPO's plans do not beat the SFT planner's here. What the premise checks say about why:\n")?;
    for ((agent, split), (d, h)) in &c.sensitivity {
        let word = if d - h > 0.0 { "depends on the plan" } else { "does not measurably depend on the plan" };
        writeln!(md, "- plan sensitivity: {agent}'s success on {split} {word} (good − misleading rule plans {d:+.2} ± {h:.2});")?;
    }
    if let Some(s) = &c.signal {
        let agree = s.agreement().map_or("no informative pair".to_string(), |(p, h)| format!("{p:.2} ± {h:.2} (chance 0.50)"));
        let agree = match s.decided_agreement() {
            Some((p, h)) => format!("{agree}, {p:.2} ± {h:.2} of the {} pairs it does not tie on", s.decided),
            None => agree,
        };
        let rho = s.spearman.map_or("undefined".into(), |r| format!("{r:.2}"));
        writeln!(
            md,
            "- Monte Carlo signal: Q orders plans of differing true quality the right way {agree}; DPO learns from {} pairs \
             of {} train tasks, and {} of the {} between plans of differing quality chose the better one (the other {} \
             joined equally good plans); rank correlation {rho};",
            s.dpo_pairs + s.dpo_ties,
            s.tasks,
            s.dpo_right,
            s.dpo_pairs,
            s.dpo_ties
        )?;
    }
    for (split, (sft, mpo)) in &c.drift {
        writeln!(md, "- planner drift on {split}: test plans naming the task's object, SFT {}/{} → MPO {}/{};", sft.successes, sft.n, mpo.successes, mpo.n)?;
    }
    writeln!(md)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(task: &str, sample: u64, q: f64, success: bool, steps: u64) -> ScoredPlan {
        ScoredPlan { task_id: task.into(), sample, q, success, steps }
    }

    #[test]
    fn rates_and_differences() {
        let a = Rate { successes: 60, n: 100 };
        let b = Rate { successes: 30, n: 100 };
        assert!((a.p() - 0.6).abs() < 1e-12);
        assert!((a.half() - 1.96 * (0.24f64 / 100.0).sqrt()).abs() < 1e-12);
        let (d, h) = a.minus(&b);
        assert!((d - 0.3).abs() < 1e-12);
        assert!((h - 1.96 * (0.0024f64 + 0.0021).sqrt()).abs() < 1e-12);
        assert_eq!(diff_cell((0.3, 0.13)), "+0.30 ± 0.13 (higher)");
        assert_eq!(diff_cell((-0.05, 0.13)), "-0.05 ± 0.13 (not distinguishable)");
        assert_eq!(Rate::default().cell(), "–");
    }

    #[test]
    fn q_that_follows_the_truth_agrees_and_noise_does_not() {
        // Q equal to the truth's order: every informative pair agrees.
        let good = vec![
            plan("a", 0, 1.0, true, 5),
            plan("a", 1, 0.0, false, 30),
            plan("a", 2, 0.5, true, 20),
            plan("b", 0, 0.0, false, 30),
            plan("b", 1, 1.0, true, 8),
        ];
        let s = mc_signal(&good);
        assert_eq!((s.plans, s.tasks, s.pairs), (5, 2, 4));
        assert_eq!(s.concordant, 4.0);
        assert_eq!((s.decided, s.decided_right), (4, 4));
        assert_eq!(s.decided_agreement(), Some((1.0, 0.0)));
        assert_eq!((s.dpo_pairs, s.dpo_right, s.dpo_ties), (2, 2, 0));
        assert!(s.spearman.unwrap() > 0.9);
        // Reversed Q: none agrees, every DPO pair picks the worse plan.
        let bad: Vec<ScoredPlan> = good.iter().map(|p| ScoredPlan { q: 1.0 - p.q, ..p.clone() }).collect();
        let s = mc_signal(&bad);
        assert_eq!(s.concordant, 0.0);
        assert_eq!((s.dpo_pairs, s.dpo_right), (2, 0));
        assert!(s.spearman.unwrap() < -0.9);
        // Q constant within a task: ties count half; no DPO pair.
        let flat = vec![plan("a", 0, 0.5, true, 5), plan("a", 1, 0.5, false, 30)];
        let s = mc_signal(&flat);
        assert_eq!((s.pairs, s.concordant, s.dpo_pairs, s.dpo_ties), (1, 0.5, 0, 0));
        assert_eq!(s.agreement().unwrap().0, 0.5);
        assert_eq!((s.decided, s.decided_agreement()), (0, None));
    }

    #[test]
    fn dpo_pairs_break_ties_by_sample_index_and_equal_plans_are_ties() {
        // Highest Q shared by samples 0 and 2: the first (0, a failure) is
        // chosen, as `pairs` does; the lowest is sample 1 (a success).
        let v = vec![plan("t", 2, 1.0, true, 4), plan("t", 0, 1.0, false, 30), plan("t", 1, 0.0, true, 9)];
        let s = mc_signal(&v);
        assert_eq!((s.dpo_pairs, s.dpo_right), (1, 0));
        // Two successes in the same number of steps: a tie in truth.
        let v = vec![plan("t", 0, 1.0, true, 9), plan("t", 1, 0.0, true, 9)];
        let s = mc_signal(&v);
        assert_eq!((s.pairs, s.dpo_pairs, s.dpo_ties), (0, 0, 1));
        assert!(s.agreement().is_none());
    }

    #[test]
    fn fewer_steps_is_better_and_failure_is_worst() {
        assert!(plan("t", 0, 0.0, true, 5).truth() > plan("t", 0, 0.0, true, 6).truth());
        assert!(plan("t", 0, 0.0, true, 29).truth() > plan("t", 0, 0.0, false, 3).truth());
    }

    #[test]
    fn spearman_uses_average_ranks() {
        assert_eq!(spearman(&[1.0, 2.0, 3.0], &[10.0, 20.0, 30.0]), Some(1.0));
        assert_eq!(spearman(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]), Some(-1.0));
        assert_eq!(spearman(&[1.0, 1.0, 1.0], &[1.0, 2.0, 3.0]), None);
        assert_eq!(spearman(&[1.0, 2.0], &[1.0, 2.0]), None);
        // Ties: ranks [1.5, 1.5, 3] vs [1, 2, 3]; Pearson of those.
        let r = spearman(&[0.0, 0.0, 1.0], &[1.0, 2.0, 3.0]).unwrap();
        assert!((r - 0.866_025_403_784_438_6).abs() < 1e-12, "{r}");
    }

    fn checks(mpo: usize, sft: usize) -> Checks {
        let mut c = Checks::default();
        for (p, k) in [("mpo", mpo), ("sft", sft), ("none", 40)] {
            c.rates.insert(("eval".into(), "agent".into(), "seen".into(), p.into()), Rate { successes: k, n: 100 });
        }
        c.sensitivity.insert(("agent".into(), "seen".into()), Rate { successes: 60, n: 100 }.minus(&Rate { successes: 20, n: 100 }));
        c.signal = Some(mc_signal(&[plan("a", 0, 1.0, true, 5), plan("a", 1, 0.0, false, 30)]));
        c.drift.insert("seen".into(), (Rate { successes: 39, n: 40 }, Rate { successes: 26, n: 40 }));
        c
    }

    #[test]
    fn the_findings_say_plainly_what_mpo_did_and_why() {
        let mut md = String::new();
        plainly(&mut md, &checks(40, 60)).unwrap();
        assert!(md.contains("success with MPO plans 0.40 (100 tasks); vs SFT plans 0.60 (100 tasks): -0.20 ± 0.14 (lower)"), "{md}");
        assert!(md.contains("do not beat the SFT planner's"), "{md}");
        assert!(md.contains("depends on the plan (good − misleading rule plans +0.40 ± 0.12)"), "{md}");
        assert!(md.contains("DPO learns from 1 pairs of 1 train tasks, and 1 of the 1 between plans"), "{md}");
        assert!(md.contains("SFT 39/40 → MPO 26/40"), "{md}");
        let mut md = String::new();
        plainly(&mut md, &checks(75, 50)).unwrap();
        assert!(md.contains("+0.25 ± 0.13 (higher)") && md.contains("beat the SFT planner's for agent on seen;"), "{md}");
        assert!(!md.contains("premise checks say"), "{md}");
        // No MPO cell: nothing to say.
        let mut md = String::new();
        plainly(&mut md, &Checks::default()).unwrap();
        assert!(md.is_empty());
    }

    #[test]
    fn object_naming_is_a_whole_word() {
        assert!(names_object("Step 1: Go to where the mug may be placed.", "mug"));
        assert!(names_object("Step 1: Look at the Mugs on the shelf.", "mug"));
        assert!(!names_object("Step 1: Go to where the smuggler is.", "mug"));
        assert!(!names_object("Step 1: Take the cup.", "mug"));
    }
}
