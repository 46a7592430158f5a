//! `[report]` of a spec: which tables and figures to draw, and how.
//!
//! Everything here is declarative and validated by serde
//! (`deny_unknown_fields`); values are checked against the data when the
//! report is drawn (a value the data lacks becomes a `–` cell and a note,
//! never an error). Example (the paper's Table 5 and Figure 3):
//!
//! ```toml
//! [report]
//! base_values = { "mpo.m" = 5, "mpo.n" = 5 }   # optional, see below
//! [report.params_b]                             # Fig. 4's x axis
//! "qwen2.5-7b" = 7.0
//! [report.labels]                               # display names of values
//! "gpt-4o" = "GPT-4o"
//!
//! [[report.table]]
//! name = "table5"
//! title = "Average reward with and without MPO meta plans"
//! metric = "avg_reward"
//! rows = ["agent", "planner"]
//! columns = ["sciworld/seen", "sciworld/unseen", "household/seen", "household/unseen"]
//! filter = { planner = ["none", "mpo"] }
//! average = true
//! delta_over = "none"
//!
//! [[report.figure]]
//! name = "figure3"
//! kind = "bars"
//! metric = "reward_per_step"
//! groups = ["household/seen", "household/unseen"]
//! series = "planner"
//! series_values = ["none", "sft", "mpo"]
//! ```
//!
//! # Dimensions
//! Episodes group by `agent`, `env`, `split`, `planner`, `insertion`,
//! `variant`, `stage`, `task_type` (and `env_split`, `env/split` joined by
//! `/`). Judge rows group by `dimension`, `judge`, `variant`, `mpo_first`.
//! Unless a table or figure names `stage`, `variant` or `insertion` itself
//! (in `rows`, `columns_by`, `series` or `filter`), it reads only
//! `stage = "eval"`, `variant = "base"` and `insertion` in `none` (no plan)
//! or `instruction` (the paper's main setting), so expert episodes, sweep
//! variants and the Table 4 insertion ablation never leak into a table.
//!
//! # Sweep values (Figure 5)
//! A sweep names each variant by its overrides (`mpo.m=3`, grid points
//! `mpo.m=3,mpo.n=2`) and the base spec `base`. The report parses those
//! names into a *variant values* map (variant → key → value); `base` takes
//! `[report] base_values`. [`ReportSpec::of_variants`] fills `base_values` from
//! the spec itself for every swept key the user did not set, so a spec
//! rarely writes it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `[report]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportSpec {
    /// Regenerate reports at the end of a run.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Table formats written: `md`, `tex`, `csv`.
    #[serde(default = "default_table_formats")]
    pub table_formats: Vec<TableFormat>,
    /// Figure formats written: `svg`, `png`.
    #[serde(default = "default_figure_formats")]
    pub figure_formats: Vec<FigureFormat>,
    /// Agent name → parameter count in billions (Figure 4's x axis).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params_b: BTreeMap<String, f64>,
    /// Values of the base variant for swept keys (`"mpo.m" = 5`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub base_values: BTreeMap<String, f64>,
    /// Display names of values and dimensions (`"gpt-4o" = "GPT-4o"`,
    /// `none = "w/o plan"`); a value without one prints as itself.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// `[[report.table]]`.
    #[serde(default, rename = "table", skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<TableSpec>,
    /// `[[report.figure]]`.
    #[serde(default, rename = "figure", skip_serializing_if = "Vec::is_empty")]
    pub figures: Vec<FigureSpec>,
    /// Also write the train log as TensorBoard event files under
    /// `reports/<experiment>/tensorboard/<stage>/` (#26).
    #[serde(default, skip_serializing_if = "is_false")]
    pub tensorboard: bool,
    /// Markdown lines written under the report's title, e.g. a link to a
    /// companion spec's report.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Default for ReportSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            table_formats: default_table_formats(),
            figure_formats: default_figure_formats(),
            params_b: BTreeMap::new(),
            base_values: BTreeMap::new(),
            labels: BTreeMap::new(),
            tables: vec![],
            figures: vec![],
            tensorboard: false,
            notes: Vec::new(),
        }
    }
}

impl ReportSpec {
    /// `spec.report` with `base_values` filled from the spec for every key
    /// of its `[sweep] vary` that is a number and that the user did not set.
    pub fn resolved(spec: &crate::spec::Spec) -> ReportSpec {
        let mut report = spec.report.clone();
        if let Some(sweep) = &spec.sweep {
            let json = serde_json::to_value(spec).unwrap_or_default();
            for key in sweep.vary.keys() {
                if report.base_values.contains_key(key) {
                    continue;
                }
                let v = key.split('.').try_fold(&json, |v, k| v.get(k));
                if let Some(x) = v.and_then(|v| v.as_f64()) {
                    report.base_values.insert(key.clone(), x);
                }
            }
        }
        report
    }

    /// The `[report]` of an expanded spec: the base variant's, resolved
    /// (a grid sweep may have no `base` variant: its base values are then
    /// only those the user wrote).
    pub fn of_variants(variants: &[crate::spec::Variant]) -> ReportSpec {
        match variants.iter().find(|v| v.name == "base") {
            Some(v) => Self::resolved(&v.loaded.spec),
            None => variants.first().map(|v| v.loaded.spec.report.clone()).unwrap_or_default(),
        }
    }

    /// The display name of a value or dimension.
    pub fn label<'a>(&'a self, value: &'a str) -> &'a str {
        self.labels.get(value).map(String::as_str).unwrap_or(value)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TableFormat {
    Md,
    Tex,
    Csv,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FigureFormat {
    Svg,
    Png,
}

fn default_table_formats() -> Vec<TableFormat> {
    vec![TableFormat::Md, TableFormat::Tex, TableFormat::Csv]
}
fn default_figure_formats() -> Vec<FigureFormat> {
    vec![FigureFormat::Svg, FigureFormat::Png]
}
fn default_true() -> bool {
    true
}

/// What a cell shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Mean final reward (the paper's primary metric).
    AvgReward,
    /// Share of successful episodes (Table 6).
    SuccessRate,
    /// Final reward / steps, averaged over episodes (Figure 3).
    RewardPerStep,
    /// Share of judge verdicts preferring the MPO plan (Figure 6); reads
    /// `judge.parquet`.
    JudgeWinRate,
    /// Number of episodes (or judge verdicts).
    Count,
}

impl Metric {
    pub fn name(self) -> &'static str {
        match self {
            Metric::AvgReward => "average reward",
            Metric::SuccessRate => "success rate",
            Metric::RewardPerStep => "average reward per step",
            Metric::JudgeWinRate => "judge win rate of MPO",
            Metric::Count => "count",
        }
    }
    /// Whether the metric reads judge rows rather than episodes.
    pub fn is_judge(self) -> bool {
        self == Metric::JudgeWinRate
    }
    /// Whether the report computes a 95% interval for it: the metrics that
    /// are means over episodes (`avg_reward`, `success_rate`,
    /// `reward_per_step`).
    pub fn has_interval(self) -> bool {
        matches!(self, Metric::AvgReward | Metric::SuccessRate | Metric::RewardPerStep)
    }
    /// The default printing scale (the paper prints rewards and rates ×100).
    pub fn default_scale(self) -> f64 {
        match self {
            Metric::AvgReward | Metric::SuccessRate | Metric::JudgeWinRate => 100.0,
            Metric::RewardPerStep | Metric::Count => 1.0,
        }
    }
    pub fn default_decimals(self) -> usize {
        match self {
            Metric::AvgReward | Metric::SuccessRate | Metric::JudgeWinRate => 1,
            Metric::RewardPerStep => 3,
            Metric::Count => 0,
        }
    }
}

/// `[[report.table]]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableSpec {
    /// File stem: `reports/<experiment>/<name>.{md,tex,csv}`.
    pub name: String,
    /// Caption; defaults to the metric's name.
    #[serde(default)]
    pub title: String,
    pub metric: Metric,
    /// Row dimensions, outermost first (`["agent", "planner"]`).
    pub rows: Vec<String>,
    /// The dimension the columns range over; `env_split` (the default)
    /// takes `env/split` values and also accepts a bare `env` (all splits
    /// pooled).
    #[serde(default = "default_columns_by")]
    pub columns_by: String,
    /// Column values, in order; `household/seen` and `household/unseen`
    /// share a column group `household`. Empty: every value in the data.
    #[serde(default)]
    pub columns: Vec<String>,
    /// Keep only these values per dimension (`{ split = ["unseen"] }`).
    #[serde(default)]
    pub filter: BTreeMap<String, Vec<String>>,
    /// Order of values per dimension (others follow, sorted); planners and
    /// insertions have the paper's order by default.
    #[serde(default)]
    pub order: BTreeMap<String, Vec<String>>,
    /// Add an "Average" column (mean of the row's cells, like the paper).
    #[serde(default)]
    pub average: bool,
    /// Add a Δ row below each row whose `delta_dimension` value is not
    /// this baseline (Table 5: `delta_over = "none"`).
    #[serde(default)]
    pub delta_over: Option<String>,
    #[serde(default = "default_delta_dimension")]
    pub delta_dimension: String,
    /// Print the 95% interval's half-width (average reward only).
    #[serde(default)]
    pub ci: bool,
    /// Bold the best value of each column (Markdown and LaTeX).
    #[serde(default = "default_true")]
    pub bold_best: bool,
    /// Multiply values by this (default: 100 for rewards and rates).
    #[serde(default)]
    pub scale: Option<f64>,
    #[serde(default)]
    pub decimals: Option<usize>,
}

fn default_columns_by() -> String {
    "env_split".into()
}
fn default_delta_dimension() -> String {
    "planner".into()
}

/// What a figure draws.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FigureKind {
    /// Grouped bars: one group per `groups` value, one bar per `series`
    /// value (Figure 3).
    Bars,
    /// Metric vs agent parameter count (`[report.params_b]`), log x, one
    /// line per `series` value, one panel per `groups` value (Figure 4).
    Scaling,
    /// Metric vs swept value, one panel per `keys` entry, one line per
    /// `groups` value (Figure 5).
    Sweep,
    /// Stacked MPO-win / tie / SFT-win bars per judge dimension (Figure 6).
    Judge,
}

/// `[[report.figure]]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FigureSpec {
    /// File stem: `reports/<experiment>/<name>.{svg,png}`.
    pub name: String,
    pub kind: FigureKind,
    #[serde(default)]
    pub title: String,
    /// Default: `avg_reward` (`judge_win_rate` for `judge`).
    #[serde(default)]
    pub metric: Option<Metric>,
    /// `env/split` (or `env`) values: bar groups, panels or lines.
    #[serde(default)]
    pub groups: Vec<String>,
    /// The dimension of the series (bars/lines); default `planner`.
    #[serde(default = "default_series")]
    pub series: String,
    /// Series values, in order; empty: every value in the data.
    #[serde(default)]
    pub series_values: Vec<String>,
    /// Swept keys, one panel each (`["mpo.m", "mpo.n"]`).
    #[serde(default)]
    pub keys: Vec<String>,
    /// Judge dimensions, in order (default: correctness, followability,
    /// standardization, overall).
    #[serde(default)]
    pub dimensions: Vec<String>,
    #[serde(default)]
    pub filter: BTreeMap<String, Vec<String>>,
    /// Pixel size of the PNG (SVG uses the same units).
    #[serde(default = "default_size")]
    pub size: [u32; 2],
}

fn default_series() -> String {
    "planner".into()
}
fn default_size() -> [u32; 2] {
    [960, 540]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_and_figures_parse_with_defaults() {
        let r: ReportSpec = toml::from_str(
            r#"
            [params_b]
            "q-3b" = 3.0
            [[table]]
            name = "t"
            metric = "avg_reward"
            rows = ["agent"]
            [[figure]]
            name = "f"
            kind = "sweep"
            keys = ["mpo.m"]
            "#,
        )
        .unwrap();
        assert!(r.enabled);
        assert_eq!(r.tables[0].columns_by, "env_split");
        assert!(r.tables[0].bold_best);
        assert_eq!(r.figures[0].series, "planner");
        assert_eq!(r.figures[0].size, [960, 540]);
        assert_eq!(r.params_b["q-3b"], 3.0);
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let e = toml::from_str::<ReportSpec>("[[table]]\nname='t'\nmetric='avg_reward'\nrows=[]\ncolums=[]\n")
            .unwrap_err();
        assert!(e.to_string().contains("colums"), "{e}");
        assert!(toml::from_str::<ReportSpec>("[[table]]\nname='t'\nmetric='reward'\nrows=[]\n").is_err());
    }
}
