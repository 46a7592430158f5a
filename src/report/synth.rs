//! Synthetic collated results for the report's tests and benchmark: a
//! deterministic, paper-shaped `episodes.parquet` and `judge.parquet`
//! (the columns of docs/ARCHITECTURE.md "Results", `experiment` and `variant` in front).
//!
//! Shape: envs `household` and `sciworld`, splits `seen`/`unseen`; agents
//! `tiny-3b`, `small-8b`, `big-70b`; planners `none`, `sft`, `prompted`,
//! `rft`, `mpo` at insertion `instruction` (`none` has insertion `none`, as
//! the `eval` stage writes it), and `mpo` at `thought` and `observation`; expert episodes (stage `expert`, split `train`) that a
//! report must ignore; sweep variants `mpo.m=1`, `mpo.m=3`, `mpo.n=1`,
//! `mpo.n=3` around a base of M = N = 5 (agent `small-8b`, planner `mpo`);
//! and one deliberately missing cell: `big-70b` × `rft` × `sciworld/unseen`
//! has no episodes. Rewards follow a simple additive model plus seeded
//! noise, so MPO wins on average but not in every cell.

use std::path::Path;

use anyhow::Result;
use polars::prelude::*;

use crate::store::table::write_parquet;

pub const ENVS: [&str; 2] = ["household", "sciworld"];
pub const SPLITS: [&str; 2] = ["seen", "unseen"];
pub const AGENTS: [(&str, f64); 3] = [("tiny-3b", 3.0), ("small-8b", 8.0), ("big-70b", 70.0)];
pub const PLANNERS: [(&str, f64); 5] = [("none", 0.0), ("sft", 0.04), ("prompted", 0.06), ("rft", 0.08), ("mpo", 0.14)];
/// The cell left without episodes: (agent, planner, env, split).
pub const MISSING: (&str, &str, &str, &str) = ("big-70b", "rft", "sciworld", "unseen");

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[derive(Default)]
struct Cols {
    variant: Vec<String>,
    stage: Vec<&'static str>,
    env: Vec<&'static str>,
    split: Vec<&'static str>,
    task_id: Vec<String>,
    task_type: Vec<&'static str>,
    agent: Vec<&'static str>,
    planner: Vec<&'static str>,
    insertion: Vec<&'static str>,
    reward: Vec<f64>,
    success: Vec<bool>,
    steps: Vec<u64>,
}

struct Cell<'a> {
    variant: &'a str,
    stage: &'static str,
    agent: (&'static str, f64),
    planner: (&'static str, f64),
    insertion: &'static str,
    env: &'static str,
    split: &'static str,
    /// Multiplies the planner's bonus (sweeps: fewer samples, less gain).
    bonus_scale: f64,
}

fn push(c: &mut Cols, rng: &mut Rng, cell: &Cell, tasks: usize) {
    let skill = 0.25 + 0.12 * cell.agent.1.ln();
    let env_shift = if cell.env == "household" { 0.05 } else { -0.05 };
    let split_shift = if cell.split == "unseen" { -0.04 } else { 0.0 };
    let insertion = match cell.insertion {
        "thought" => -0.12,
        "observation" => -0.04,
        _ => 0.0,
    };
    let p = (skill + env_shift + split_shift + insertion + cell.planner.1 * cell.bonus_scale).clamp(0.02, 0.98);
    const TYPES: [&str; 3] = ["pick", "clean", "heat"];
    for t in 0..tasks {
        let (reward, success) = if cell.env == "household" {
            let ok = rng.next() < p;
            (if ok { 1.0 } else { 0.0 }, ok)
        } else {
            let r = (p + 0.35 * (rng.next() - 0.5)).clamp(0.0, 1.0);
            let r = (r * 100.0).round() / 100.0;
            (r, r >= 0.9)
        };
        let steps = 6 + (24.0 * (1.0 - p) * rng.next()).round() as u64 + if success { 0 } else { 8 };
        c.variant.push(cell.variant.to_string());
        c.stage.push(cell.stage);
        c.env.push(cell.env);
        c.split.push(cell.split);
        c.task_id.push(format!("{}-{}-{t}", cell.env, cell.split));
        c.task_type.push(TYPES[t % 3]);
        c.agent.push(cell.agent.0);
        c.planner.push(cell.planner.0);
        c.insertion.push(cell.insertion);
        c.reward.push(reward);
        c.success.push(success);
        c.steps.push(steps);
    }
}

/// The episodes frame; `tasks` episodes per cell (8 for the test fixture,
/// about 10,000 for a million episodes).
pub fn episodes(tasks: usize) -> Result<DataFrame> {
    let mut c = Cols::default();
    let mut rng = Rng(42);
    for env in ENVS {
        // Expert episodes: other stage, train split, must not leak.
        let expert = Cell {
            variant: "base",
            stage: "expert",
            agent: ("expert", 1.0),
            planner: ("none", 0.0),
            insertion: "none",
            env,
            split: "train",
            bonus_scale: 1.0,
        };
        push(&mut c, &mut rng, &expert, tasks);
        for split in SPLITS {
            for agent in AGENTS {
                for planner in PLANNERS {
                    if (agent.0, planner.0, env, split) == MISSING {
                        continue;
                    }
                    // As the `eval` stage writes them: no plan, no insertion.
                    let insertions: &[&str] = match planner.0 {
                        "mpo" => &["instruction", "thought", "observation"],
                        "none" => &["none"],
                        _ => &["instruction"],
                    };
                    for &insertion in insertions {
                        let cell = Cell { variant: "base", stage: "eval", agent, planner, insertion, env, split, bonus_scale: 1.0 };
                        push(&mut c, &mut rng, &cell, tasks);
                    }
                }
            }
            for (variant, m, n) in [("mpo.m=1", 1.0, 5.0), ("mpo.m=3", 3.0, 5.0), ("mpo.n=1", 5.0, 1.0), ("mpo.n=3", 5.0, 3.0)] {
                let scale = (1.0 - 0.6 / m) * (1.0 - 0.9 / n) / ((1.0 - 0.6 / 5.0) * (1.0 - 0.9 / 5.0));
                let cell = Cell {
                    variant,
                    stage: "eval",
                    agent: AGENTS[1],
                    planner: PLANNERS[4],
                    insertion: "instruction",
                    env,
                    split,
                    bonus_scale: scale,
                };
                push(&mut c, &mut rng, &cell, tasks);
            }
        }
    }
    let n = c.reward.len();
    let msg = r#"[{"role":"user","content":"You are in the middle of a room."},{"role":"assistant","content":"Thought: look. Action: look"}]"#;
    let df = DataFrame::new(
        n,
        vec![
            Column::new("experiment".into(), vec!["fixture"; n]),
            Column::new("variant".into(), c.variant),
            Column::new("stage".into(), c.stage),
            Column::new("env".into(), c.env),
            Column::new("split".into(), c.split),
            Column::new("task_id".into(), c.task_id),
            Column::new("task_type".into(), c.task_type),
            Column::new("agent".into(), c.agent),
            Column::new("planner".into(), c.planner.clone()),
            Column::new("insertion".into(), c.insertion),
            Column::new("plan_id".into(), vec![None::<&str>; n]),
            Column::new("rollout".into(), vec![0i64; n]),
            Column::new("seed".into(), vec![Some(0i64); n]),
            Column::new("temperature".into(), vec![0.0f64; n]),
            Column::new("reward".into(), c.reward),
            Column::new("success".into(), c.success),
            Column::new("steps".into(), c.steps.iter().map(|&s| s as i64).collect::<Vec<_>>()),
            Column::new("finish_reason".into(), vec!["done"; n]),
            Column::new("prompt_tokens".into(), vec![900i64; n]),
            Column::new("completion_tokens".into(), vec![120i64; n]),
            Column::new("wall_ms".into(), vec![40i64; n]),
            Column::full_null("finished_at".into(), n, &crate::store::table::ColType::Timestamp.dtype()),
            Column::new("plan".into(), c.planner.iter().map(|p| (*p != "none").then_some("Step 1: go to the target.")).collect::<Vec<_>>()),
            Column::new("messages".into(), vec![msg; n]),
        ],
    )?;
    Ok(df)
}

/// The judge frame: `tasks` tasks × 4 dimensions; the last task's judge
/// never answered (`failed` rows).
pub fn judge(tasks: usize) -> Result<DataFrame> {
    let mut rng = Rng(7);
    let dims = ["correctness", "followability", "standardization", "overall"];
    let odds = [(0.62, 0.18), (0.55, 0.25), (0.40, 0.45), (0.60, 0.15)];
    let (mut task, mut dim, mut verdict, mut reason, mut first) = (vec![], vec![], vec![], vec![], vec![]);
    for t in 0..tasks {
        for (d, (win, tie)) in dims.iter().zip(odds) {
            let failed = t + 1 == tasks;
            let x = rng.next();
            let v = if failed { "failed" } else if x < win { "mpo" } else if x < win + tie { "tie" } else { "sft" };
            task.push(format!("household-unseen-{t}"));
            dim.push(*d);
            verdict.push(v);
            reason.push(if failed { "the reply has no JSON object" } else { "reason" });
            first.push(t % 2 == 0);
        }
    }
    let n = task.len();
    Ok(DataFrame::new(
        n,
        vec![
            Column::new("experiment".into(), vec!["fixture"; n]),
            Column::new("variant".into(), vec!["base"; n]),
            Column::new("task_id".into(), task),
            Column::new("dimension".into(), dim),
            Column::new("verdict".into(), verdict),
            Column::new("reason".into(), reason),
            Column::new("mpo_first".into(), first),
            Column::new("judge".into(), vec!["judge-model"; n]),
            Column::new("attempts".into(), vec![1i64; n]),
        ],
    )?)
}

/// Writes `episodes.parquet` and `judge.parquet` into `dir`; returns their
/// row counts.
pub fn write(dir: &Path, tasks: usize, judge_tasks: usize) -> Result<(usize, usize)> {
    std::fs::create_dir_all(dir)?;
    let mut e = episodes(tasks)?;
    write_parquet(&dir.join("episodes.parquet"), &mut e)?;
    let mut j = judge(judge_tasks)?;
    write_parquet(&dir.join("judge.parquet"), &mut j)?;
    Ok((e.height(), j.height()))
}

/// A collated `train_log.parquet` (#26's curves): `agent_sft` (24 steps),
/// `sft` (12 steps, held-out loss after each of 3 epochs), `rft` (6 steps)
/// and `dpo` (10 steps, with reward accuracy and margin), variant `base`,
/// and `sft` again under variant `mpo.m=3` with the same rows (a node
/// shared by variants). Losses decay with seeded noise.
pub fn train_log(seed: u64) -> Result<DataFrame> {
    use crate::store::table::{to_frame_json, PROVENANCE, TRAIN_LOG};
    let mut rng = Rng(seed);
    let mut rows = Vec::new();
    let start = 1_796_000_000_000_000i64; // µs, 2026-11-30
    let stage_rows = |stage: &str, steps: u64, epochs: u64, dpo: bool, rng: &mut Rng| {
        let per_epoch = steps / epochs;
        let mut out = Vec::new();
        for step in 1..=steps {
            let t = step as f64 / steps as f64;
            let loss = if dpo { 0.693 * (-1.5 * t).exp() } else { 2.5 * (-2.0 * t).exp() + 0.3 } + 0.05 * (rng.next() - 0.5);
            let mut r = serde_json::json!({
                "stage": stage, "step": step, "epoch": step as f64 / per_epoch as f64, "loss": loss,
                "lr": 1e-5 * (1.0 - t), "grad_norm": 1.0 + rng.next(), "tokens_per_s": 900.0 + 100.0 * rng.next(),
                "finished_at": chrono::DateTime::from_timestamp_micros(start + step as i64 * 1_000_000).map(|t| t.to_rfc3339()),
            });
            if dpo {
                let margin = 2.0 * t + 0.1 * rng.next();
                r["reward_accuracy"] = (0.5 + 0.45 * t).into();
                r["chosen_reward"] = (margin / 2.0).into();
                r["rejected_reward"] = (-margin / 2.0).into();
                r["margin"] = margin.into();
            }
            if stage == "sft" && step % per_epoch == 0 {
                r["eval_loss"] = (loss + 0.2).into();
            }
            out.push(r);
        }
        out
    };
    let mut add = |variant: &str, rs: &[serde_json::Value]| {
        for r in rs {
            let mut r = r.clone();
            r["experiment"] = "fixture".into();
            r["variant"] = variant.into();
            rows.push(r);
        }
    };
    let agent = stage_rows("agent_sft", 24, 2, false, &mut rng);
    let sft = stage_rows("sft", 12, 3, false, &mut rng);
    let rft = stage_rows("rft", 6, 1, false, &mut rng);
    let dpo = stage_rows("dpo", 10, 1, true, &mut rng);
    add("base", &agent);
    add("base", &sft);
    add("mpo.m=3", &sft);
    add("base", &rft);
    add("base", &dpo);
    let cols: Vec<_> = PROVENANCE.iter().chain(TRAIN_LOG).copied().collect();
    to_frame_json(&cols, &rows)
}
