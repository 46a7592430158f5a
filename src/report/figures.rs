//! `[[report.figure]]`: the paper's Figures 3–6 as data ([`Figure`]), built
//! from the results; [`super::plot`] draws them.
//!
//! - `bars` (Fig. 3): a metric per `groups` value (`env/split`), one bar per
//!   `series` value (planner none / sft / mpo);
//! - `scaling` (Fig. 4): a metric vs the agent's parameter count
//!   (`[report.params_b]`), one line per `series` value, one panel per
//!   group;
//! - `sweep` (Fig. 5): a metric vs a swept value, one panel per `keys` entry,
//!   one line per group. The points of the panel for key `K` are the
//!   variants whose [variant values](super::data::variant_values) differ
//!   from the base in `K` only, plus `base` itself;
//! - `judge` (Fig. 6): shares of MPO-better / tie / SFT-better verdicts per
//!   judge dimension, stacked.
//!
//! Whatever is missing (a cell without episodes, an agent without a
//! parameter count, a sweep with one point, no base value) becomes a note,
//! shown under the figure in `index.md`; the figure is still drawn.

use std::collections::BTreeMap;

use anyhow::{bail, Result};

use super::config::{FigureKind, FigureSpec, Metric, ReportSpec};
use super::data::{sort_values, variant_values, Records, EPISODE_DEFAULTS, FAILED, JUDGE_DEFAULTS, LOSS, TIE, WIN};
use super::tables::cell_accs;

/// How a panel is drawn.
#[derive(Clone, Debug, PartialEq)]
pub enum PanelKind {
    /// Bars per category; `stacked` bars are horizontal, in percent.
    Bars { categories: Vec<String>, stacked: bool },
    /// Lines over numeric x.
    Lines { log_x: bool },
    /// Dense curves over numeric x (training steps): automatic ticks, no
    /// markers once there are many points.
    Curves,
}

/// One series: `points[i]` is `(x, y)`; for bars x is the category index.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, Option<f64>)>,
    /// Half-widths of the points' 95% intervals, drawn as error bars
    /// (`errors[i]` belongs to `points[i]`); empty when the series has none.
    pub errors: Vec<Option<f64>>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Panel {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub kind: PanelKind,
    pub series: Vec<Series>,
}

/// A figure ready to draw.
#[derive(Clone, Debug, PartialEq)]
pub struct Figure {
    pub name: String,
    pub title: String,
    pub panels: Vec<Panel>,
    /// Series names, in legend order (the same in every panel).
    pub legend: Vec<String>,
    pub notes: Vec<String>,
    pub size: (u32, u32),
}

/// Builds figure `f` from episodes / judge records.
pub fn build(f: &FigureSpec, episodes: Option<&Records>, judge: Option<&Records>, report: &ReportSpec) -> Result<Figure> {
    let metric = f.metric.unwrap_or(if f.kind == FigureKind::Judge { Metric::JudgeWinRate } else { Metric::AvgReward });
    let recs = match (f.kind, episodes, judge) {
        (FigureKind::Judge, _, Some(j)) => j,
        (FigureKind::Judge, _, None) => bail!("no `judge` results yet"),
        (_, Some(e), _) => e,
        (_, None, _) => bail!("no `episodes` results yet"),
    };
    let mut fig = match f.kind {
        FigureKind::Bars => bars(f, recs, report, metric)?,
        FigureKind::Scaling => scaling(f, recs, report, metric)?,
        FigureKind::Sweep => sweep(f, recs, report, metric)?,
        FigureKind::Judge => judge_bars(f, recs, report)?,
    };
    if !f.title.is_empty() {
        fig.title = f.title.clone();
    }
    // Side-by-side panels share the y quantity: name it once, on the left.
    for p in fig.panels.iter_mut().skip(1) {
        p.y_label.clear();
    }
    let (w, h) = (f.size[0].max(320), f.size[1].max(240));
    // Wide figures for many panels, so tick labels never collide.
    fig.size = (w.max(340 * fig.panels.len() as u32), h);
    fig.notes.dedup();
    Ok(fig)
}

fn y_label(metric: Metric) -> String {
    let scale = metric.default_scale();
    let name = capitalise(metric.name());
    if scale == 100.0 && metric != Metric::JudgeWinRate {
        format!("{name} (×100)")
    } else {
        name
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
}

/// Groups of a figure: the listed ones, or every `env/split` in the data.
fn groups(f: &FigureSpec, recs: &Records, idx: &[u32]) -> Result<Vec<String>> {
    if !f.groups.is_empty() {
        return Ok(f.groups.clone());
    }
    let mut v = recs.values_in(idx, "env_split")?;
    sort_values("env_split", &mut v, None);
    Ok(v)
}

fn group_label(report: &ReportSpec, g: &str) -> String {
    match g.split_once('/') {
        Some((e, s)) => format!("{} / {}", report.label(e), report.label(s)),
        None => report.label(g).to_string(),
    }
}

fn series_values(f: &FigureSpec, recs: &Records, idx: &[u32]) -> Result<Vec<String>> {
    if !f.series_values.is_empty() {
        return Ok(f.series_values.clone());
    }
    let mut v = recs.values_in(idx, &f.series)?;
    sort_values(&f.series, &mut v, None);
    Ok(v)
}

fn bars(f: &FigureSpec, recs: &Records, report: &ReportSpec, metric: Metric) -> Result<Figure> {
    let idx = recs.select(&f.filter, &[f.series.as_str()], EPISODE_DEFAULTS)?;
    let groups = groups(f, recs, &idx)?;
    let series_vals = series_values(f, recs, &idx)?;
    // Episodes kept per cell: the error bars are the tables' intervals.
    let cells = cell_accs(recs, &idx, &[f.series.as_str()], "env_split", &groups, true)?;
    let scale = metric.default_scale();
    let mut notes = Vec::new();
    let mut legend = Vec::new();
    let series = series_vals
        .iter()
        .map(|s| {
            let mut ns = Vec::new();
            let (points, errors): (Vec<_>, Vec<_>) = (0..groups.len())
                .map(|g| {
                    let acc = cells.get(&(vec![s.clone()], g));
                    let v = acc.and_then(|a| a.value(metric)).map(|v| v * scale);
                    if v.is_none() {
                        notes.push(format!("no data for {}=`{s}` in `{}`", f.series, groups[g]));
                    } else if let Some(a) = acc {
                        ns.push(a.n);
                    }
                    ((g as f64, v), v.and(acc.and_then(|a| a.ci95_of(metric))).map(|e| e * scale))
                })
                .unzip();
            legend.push(format!("{} ({})", report.label(s), n_label(&ns)));
            Series { name: report.label(s).to_string(), points, errors }
        })
        .collect::<Vec<_>>();
    if metric.has_interval() {
        notes.push(format!(
            "error bars: 95% intervals of the {} over each bar's episodes, as in the tables ({}); n: episodes per bar",
            metric.name(),
            super::data::INTERVAL_METHOD
        ));
    }
    let panel = Panel {
        title: String::new(),
        x_label: "Environment / split".into(),
        y_label: y_label(metric),
        kind: PanelKind::Bars { categories: groups.iter().map(|g| group_label(report, g)).collect(), stacked: false },
        series,
    };
    Ok(Figure {
        name: f.name.clone(),
        title: capitalise(metric.name()),
        legend,
        panels: vec![panel],
        notes,
        size: (0, 0),
    })
}

/// `n = 8`, or `n = 6–8` when the bars of a series differ.
fn n_label(ns: &[u64]) -> String {
    match (ns.iter().min(), ns.iter().max()) {
        (Some(lo), Some(hi)) if lo == hi => format!("n = {lo}"),
        (Some(lo), Some(hi)) => format!("n = {lo}–{hi}"),
        _ => "no data".into(),
    }
}

fn scaling(f: &FigureSpec, recs: &Records, report: &ReportSpec, metric: Metric) -> Result<Figure> {
    let idx = recs.select(&f.filter, &[f.series.as_str(), "agent"], EPISODE_DEFAULTS)?;
    let groups = groups(f, recs, &idx)?;
    let series_vals = series_values(f, recs, &idx)?;
    let cells = cell_accs(recs, &idx, &[f.series.as_str(), "agent"], "env_split", &groups, false)?;
    let mut notes = Vec::new();
    let mut agents: Vec<(f64, String)> = Vec::new();
    for a in recs.values_in(&idx, "agent")? {
        match report.params_b.get(&a) {
            Some(&p) if p > 0.0 => agents.push((p, a)),
            _ => notes.push(format!("agent `{a}` has no parameter count in `[report.params_b]`; left out")),
        }
    }
    agents.sort_by(|a, b| a.0.total_cmp(&b.0));
    if agents.len() < 2 {
        notes.push(format!("{} agent(s) with a parameter count: a scaling plot needs at least 2", agents.len()));
    }
    let scale = metric.default_scale();
    let panels = groups
        .iter()
        .enumerate()
        .map(|(g, gname)| {
            let series = series_vals
                .iter()
                .map(|s| {
                    let points = agents
                        .iter()
                        .map(|(p, a)| {
                            let v = cells.get(&(vec![s.clone(), a.clone()], g)).and_then(|x| x.value(metric)).map(|v| v * scale);
                            if v.is_none() {
                                notes.push(format!("no data for agent `{a}`, {}=`{s}` in `{gname}`", f.series));
                            }
                            (*p, v)
                        })
                        .collect();
                    Series { name: report.label(s).to_string(), points, errors: vec![] }
                })
                .collect();
            Panel {
                title: group_label(report, gname),
                x_label: "Parameters (B, log scale)".into(),
                y_label: y_label(metric),
                kind: PanelKind::Lines { log_x: true },
                series,
            }
        })
        .collect();
    Ok(Figure {
        name: f.name.clone(),
        title: format!("{} vs agent size", capitalise(metric.name())),
        legend: series_vals.iter().map(|s| report.label(s).to_string()).collect(),
        panels,
        notes,
        size: (0, 0),
    })
}

fn sweep(f: &FigureSpec, recs: &Records, report: &ReportSpec, metric: Metric) -> Result<Figure> {
    if f.keys.is_empty() {
        bail!("figure `{}`: a `sweep` figure needs `keys` (e.g. `[\"mpo.m\", \"mpo.n\"]`)", f.name);
    }
    let idx = recs.select(&f.filter, &["variant"], EPISODE_DEFAULTS)?;
    let groups = groups(f, recs, &idx)?;
    let variants = recs.values_in(&idx, "variant")?;
    let vv = variant_values(&variants, &report.base_values);
    let cells = cell_accs(recs, &idx, &["variant"], "env_split", &groups, false)?;
    let scale = metric.default_scale();
    let mut notes = Vec::new();
    let mut panels = Vec::new();
    for key in &f.keys {
        if !report.base_values.contains_key(key) {
            notes.push(format!(
                "the base value of `{key}` is unknown (set `[report] base_values`): the `base` variant is left out"
            ));
        }
        // Variants that differ from the base in `key` only (`base` itself
        // has the base value of `key`, when known).
        let mut points: Vec<(f64, &String)> = variants
            .iter()
            .filter_map(|v| {
                let vals = &vv[v];
                let x = *vals.get(key)?;
                vals.iter().all(|(k, y)| k == key || report.base_values.get(k) == Some(y)).then_some((x, v))
            })
            .collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        points.dedup_by(|a, b| a.0 == b.0);
        if points.len() < 2 {
            notes.push(format!(
                "sweep over `{key}` is incomplete: {} value(s) with results ({})",
                points.len(),
                points.iter().map(|p| p.1.as_str()).collect::<Vec<_>>().join(", ")
            ));
        }
        let series = groups
            .iter()
            .enumerate()
            .map(|(g, gname)| {
                let pts = points
                    .iter()
                    .map(|(x, v)| {
                        let y = cells.get(&(vec![(*v).clone()], g)).and_then(|a| a.value(metric)).map(|y| y * scale);
                        if y.is_none() {
                            notes.push(format!("no data for variant `{v}` in `{gname}`"));
                        }
                        (*x, y)
                    })
                    .collect();
                Series { name: group_label(report, gname), points: pts, errors: vec![] }
            })
            .collect();
        panels.push(Panel {
            title: format!("Varying {}", report.label(key)),
            x_label: report.label(key).to_string(),
            y_label: y_label(metric),
            kind: PanelKind::Lines { log_x: false },
            series,
        });
    }
    Ok(Figure {
        name: f.name.clone(),
        title: format!("{} vs sampling counts", capitalise(metric.name())),
        legend: groups.iter().map(|g| group_label(report, g)).collect(),
        panels,
        notes,
        size: (0, 0),
    })
}

/// The judge's stacked-bar series names, in drawing order.
pub const JUDGE_SERIES: [&str; 3] = ["MPO better", "Tie", "SFT better"];

fn judge_bars(f: &FigureSpec, recs: &Records, report: &ReportSpec) -> Result<Figure> {
    let idx = recs.select(&f.filter, &["dimension"], JUDGE_DEFAULTS)?;
    let dims: Vec<String> = if f.dimensions.is_empty() {
        let mut v = recs.values_in(&idx, "dimension")?;
        sort_values("dimension", &mut v, None);
        v
    } else {
        f.dimensions.clone()
    };
    let groups = recs.group(&idx, &["dimension"], false)?;
    let mut notes = Vec::new();
    let mut shares: BTreeMap<usize, [Option<f64>; 3]> = BTreeMap::new();
    let mut failed = Vec::new();
    let mut judged_n = Vec::new();
    for (i, d) in dims.iter().enumerate() {
        let acc = groups.get(&vec![d.clone()]);
        let v = acc.map(|a| a.verdicts).unwrap_or_default();
        let judged = v[WIN as usize] + v[TIE as usize] + v[LOSS as usize];
        judged_n.push(format!("{d} {judged}"));
        if v[FAILED as usize] > 0 {
            failed.push(format!("{} {d}", v[FAILED as usize]));
        }
        if judged == 0 {
            notes.push(format!("no judge verdicts for dimension `{d}`"));
            shares.insert(i, [None; 3]);
            continue;
        }
        let pct = |k: u8| Some(v[k as usize] as f64 * 100.0 / judged as f64);
        shares.insert(i, [pct(WIN), pct(TIE), pct(LOSS)]);
    }
    if !failed.is_empty() {
        notes.insert(0, format!("judge replies that failed to parse are left out ({})", failed.join(", ")));
    }
    notes.push(format!("n, tasks judged per dimension: {}", judged_n.join(", ")));
    for judge in recs.values_in(&idx, "judge")? {
        if judge == crate::mpo::judge::rule::JUDGE_ID {
            notes.push(
                "judge `rule`: a rule judge, not a model — each plan checked against the built-in world's ground truth \
                 (correctness: the task's object, target and appliance, search places where the object can be; \
                 followability: the scripted plan follower's outcome; standardization: numbered abstract steps; \
                 overall: the plan that wins more of the three)"
                    .into(),
            );
        } else if !judge.is_empty() {
            notes.push(format!("judge `{judge}`: a model given the paper's judge prompt (Fig. 13)"));
        }
    }
    let series = JUDGE_SERIES
        .iter()
        .enumerate()
        .map(|(k, name)| Series {
            name: name.to_string(),
            points: (0..dims.len()).map(|i| (i as f64, shares[&i][k])).collect(),
            errors: vec![],
        })
        .collect();
    let panel = Panel {
        title: String::new(),
        x_label: "Share of tasks (%)".into(),
        y_label: String::new(),
        kind: PanelKind::Bars { categories: dims.iter().map(|d| capitalise(report.label(d))).collect(), stacked: true },
        series,
    };
    Ok(Figure {
        name: f.name.clone(),
        title: "Judge verdicts: MPO vs SFT meta plans".into(),
        legend: JUDGE_SERIES.iter().map(|s| s.to_string()).collect(),
        panels: vec![panel],
        notes,
        size: (0, 0),
    })
}
