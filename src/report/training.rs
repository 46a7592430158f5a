//! Training curves (#26): one figure per training stage found in the
//! collated `train_log.parquet` (`agent_sft`, `sft`, `rft`, `dpo`, in that
//! order; any other stage after them), drawn with [`super::plot`] in the
//! report's figure formats and shown in `index.md`'s "Training" section.
//!
//! - every stage: the loss per optimizer step (panel "Loss"), and the
//!   held-out loss (`eval_loss`, logged on the last step of each epoch when
//!   `[train.X] eval_share` holds examples out) as its own series;
//! - `dpo` also: reward accuracy and reward margin per step (TRL's
//!   `rewards/accuracies` and `rewards/margins`).
//!
//! A training node shared by several variants appears once per variant in
//! the collated log; identical curves are drawn once and named after every
//! variant that shares them. Rows with a non-finite loss (an external
//! engine that logged none) are left out of the curve, with a note.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;

use super::figures::{Figure, Panel, PanelKind, Series};
use crate::store::table::{frame_to_json, read_parquet};

/// The training stages in pipeline order.
pub const STAGES: [&str; 4] = ["agent_sft", "sft", "rft", "dpo"];

/// One row of the train log, as the curves need it.
#[derive(Clone, Debug, PartialEq)]
struct Point {
    step: f64,
    loss: f64,
    reward_accuracy: Option<f64>,
    margin: Option<f64>,
    eval_loss: Option<f64>,
}

/// One stage's curves and what `index.md` says of them.
#[derive(Clone, Debug)]
pub struct StageCurves {
    pub stage: String,
    pub figure: Figure,
    /// One line of text per distinct curve: variants, steps, first and
    /// last loss (and the last held-out loss).
    pub summary: Vec<String>,
}

/// The figure name of a stage's curves (`training_sft`).
pub fn figure_name(stage: &str) -> String {
    let safe: String = stage.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '-' }).collect();
    format!("training_{safe}")
}

/// Reads `train_log.parquet` and builds one [`StageCurves`] per stage with
/// rows, in pipeline order. Stage and variant names are shown as they are
/// (`[report.labels]` names planners, and `sft` the planner is not `sft`
/// the stage).
pub fn curves(path: &Path) -> Result<Vec<StageCurves>> {
    let rows = frame_to_json(&read_parquet(path)?)?;
    // stage → variant → points, in row order.
    let mut by: BTreeMap<String, BTreeMap<String, Vec<Point>>> = BTreeMap::new();
    let mut dropped: BTreeMap<String, usize> = BTreeMap::new();
    for r in &rows {
        let s = |k: &str| r.get(k).and_then(serde_json::Value::as_str).map(str::to_string);
        let f = |k: &str| r.get(k).and_then(serde_json::Value::as_f64);
        let stage = s("stage").unwrap_or_default();
        let variant = s("variant").unwrap_or_else(|| "base".into());
        let (Some(step), Some(loss)) = (f("step"), f("loss")) else { continue };
        if !loss.is_finite() {
            *dropped.entry(stage).or_default() += 1;
            continue;
        }
        let p = Point { step, loss, reward_accuracy: f("reward_accuracy"), margin: f("margin"), eval_loss: f("eval_loss") };
        by.entry(stage).or_default().entry(variant).or_default().push(p);
    }
    let mut stages: Vec<&String> = by.keys().collect();
    stages.sort_by_key(|s| (STAGES.iter().position(|x| x == s).unwrap_or(STAGES.len()), s.to_string()));
    let mut out = Vec::new();
    for stage in stages {
        let mut names: Vec<String> = by[stage].keys().cloned().collect();
        super::data::sort_values("variant", &mut names, None);
        let variants = names.iter().filter_map(|n| by[stage].get_key_value(n));
        // Identical curves (a node shared by variants) once, named after
        // all of them.
        let mut distinct: Vec<(Vec<String>, &Vec<Point>)> = Vec::new();
        for (v, pts) in variants {
            match distinct.iter_mut().find(|d| d.1 == pts) {
                Some(d) => d.0.push(v.clone()),
                None => distinct.push((vec![v.clone()], pts)),
            }
        }
        let mut notes = Vec::new();
        if let Some(n) = dropped.get(stage) {
            notes.push(format!("{n} step(s) logged no loss and are left out"));
        }
        out.push(stage_curves(stage, &distinct, notes));
    }
    Ok(out)
}

fn stage_curves(stage: &str, distinct: &[(Vec<String>, &Vec<Point>)], notes: Vec<String>) -> StageCurves {
    let single = distinct.len() == 1;
    let name = |variants: &[String]| if single { "Training".to_string() } else { variants.join(", ") };
    let has_eval = distinct.iter().any(|d| d.1.iter().any(|p| p.eval_loss.is_some()));
    let is_dpo = distinct.iter().any(|d| d.1.iter().any(|p| p.reward_accuracy.is_some() || p.margin.is_some()));
    let line = |pts: &Vec<Point>, y: fn(&Point) -> Option<f64>| -> Vec<(f64, Option<f64>)> {
        pts.iter().filter_map(|p| y(p).map(|v| (p.step, Some(v)))).collect()
    };
    let mut legend: Vec<String> = distinct.iter().map(|d| name(&d.0)).collect();
    let mut loss_series: Vec<Series> =
        distinct.iter().map(|d| Series { name: name(&d.0), points: line(d.1, |p| Some(p.loss)), errors: vec![] }).collect();
    if has_eval {
        for d in distinct {
            let held = if single { "Held-out".to_string() } else { format!("{} (held-out)", d.0.join(", ")) };
            legend.push(held.clone());
            loss_series.push(Series { name: held, points: line(d.1, |p| p.eval_loss), errors: vec![] });
        }
    }
    let panel = |title: &str, y_label: &str, series: Vec<Series>| Panel {
        title: title.to_string(),
        x_label: "Optimizer step".into(),
        y_label: y_label.to_string(),
        kind: PanelKind::Curves,
        series,
    };
    let mut panels = vec![panel("Loss", "Loss", loss_series)];
    if is_dpo {
        let acc = distinct.iter().map(|d| Series { name: name(&d.0), points: line(d.1, |p| p.reward_accuracy), errors: vec![] }).collect();
        let margin = distinct.iter().map(|d| Series { name: name(&d.0), points: line(d.1, |p| p.margin), errors: vec![] }).collect();
        panels.push(panel("Reward accuracy", "Reward accuracy", acc));
        panels.push(panel("Reward margin", "Reward margin", margin));
    }
    let summary = distinct
        .iter()
        .map(|(variants, pts)| {
            let (first, last) = (pts.first().map_or(f64::NAN, |p| p.loss), pts.last().map_or(f64::NAN, |p| p.loss));
            let mut s = format!(
                "{}: {} optimizer steps, loss {first:.4} → {last:.4}",
                variants.iter().map(|v| format!("`{v}`")).collect::<Vec<_>>().join(", "),
                pts.len()
            );
            if let Some(e) = pts.iter().rev().find_map(|p| p.eval_loss) {
                let _ = write!(s, ", last held-out loss {e:.4}");
            }
            if let Some(p) = pts.last().filter(|p| p.reward_accuracy.is_some() || p.margin.is_some()) {
                let _ = write!(
                    s,
                    ", last reward accuracy {:.3} and margin {:.4}",
                    p.reward_accuracy.unwrap_or(f64::NAN),
                    p.margin.unwrap_or(f64::NAN)
                );
            }
            s
        })
        .collect();
    let n_panels = panels.len() as u32;
    let figure = Figure {
        name: figure_name(stage),
        title: format!("Training curves: {stage}"),
        panels,
        legend,
        notes,
        size: ((420 * n_panels).max(640), 420),
    };
    StageCurves { stage: stage.to_string(), figure, summary }
}

/// What `loss` means per stage, for the section's text.
pub const LOSS_NOTE: &str = "Loss: the optimizer step's mean token cross-entropy of the replies (`agent_sft`, `sft`, `rft`) \
or DPO loss (`dpo`), as logged in `train_log.parquet`; held-out: the same loss on the `[train.X] eval_share` examples \
held out of training, after each epoch. DPO's reward accuracy is the share of the step's pairs whose chosen plan gets \
the higher implicit reward; the margin is the mean chosen − rejected reward (β-scaled log-ratios).";
