//! `[[report.table]]`: the paper's tables (2–6) from the results, rendered
//! as Markdown, LaTeX (booktabs) and CSV.
//!
//! A table is first built as a [`Table`] (labels and scaled numbers), then
//! rendered; the renderers never touch the data. Rows are every combination
//! of the row dimensions' values (the filter's values where the spec lists
//! them, else those in the data), so a missing agent × planner pair is a row
//! of `–` with a note, never a silently absent row. A cell without episodes
//! prints `–` (LaTeX `--`; CSV leaves it empty) and adds a note; nothing is
//! ever printed as 0 for lack of data.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use anyhow::{bail, Result};

use super::config::{ReportSpec, TableSpec};
use super::data::{sort_values, Acc, Records};

/// A column of a table.
#[derive(Clone, Debug, PartialEq)]
pub struct Column {
    /// The value it selects (`household/seen`), or `average`.
    pub key: String,
    /// Column group label (`household`), if grouped.
    pub group: Option<String>,
    pub label: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowKind {
    Value,
    /// Difference to the row with the baseline value (Table 5).
    Delta,
}

/// A cell: scaled value and interval half-width.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Cell {
    pub value: Option<f64>,
    pub ci: Option<f64>,
    pub best: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// Raw values of the row dimensions.
    pub keys: Vec<String>,
    /// Display labels of the row dimensions.
    pub labels: Vec<String>,
    pub kind: RowKind,
    pub cells: Vec<Cell>,
}

/// A table ready to render.
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    pub name: String,
    pub title: String,
    pub row_headers: Vec<String>,
    /// Raw names of the row dimensions (CSV headers).
    pub row_dims: Vec<String>,
    pub columns: Vec<Column>,
    pub rows: Vec<Row>,
    pub decimals: usize,
    pub notes: Vec<String>,
}

/// Builds the table `t` from `recs` (episodes or judge rows, per metric).
pub fn build(t: &TableSpec, recs: &Records, report: &ReportSpec) -> Result<Table> {
    let metric = t.metric;
    let scale = t.scale.unwrap_or(metric.default_scale());
    let decimals = t.decimals.unwrap_or(metric.default_decimals());
    let mut notes = Vec::new();
    let by = t.columns_by.as_str();
    let mut used: Vec<&str> = t.rows.iter().map(String::as_str).collect();
    used.push(by);
    if by == "env_split" {
        used.extend(["env", "split"]);
    }
    if let Some(d) = t.delta_over.as_ref().map(|_| t.delta_dimension.as_str()) {
        if !t.rows.iter().any(|r| r == d) {
            bail!("table `{}`: `delta_dimension` `{d}` must be one of its `rows`", t.name);
        }
    }
    let defaults = if metric.is_judge() { super::data::JUDGE_DEFAULTS } else { super::data::EPISODE_DEFAULTS };
    let rows_idx = recs.select(&t.filter, &used, defaults)?;

    // Columns: the listed values (a bare env under `env_split` pools its
    // splits), or every value in the data.
    let col_keys: Vec<String> = if t.columns.is_empty() {
        let mut v = recs.values_in(&rows_idx, by)?;
        sort_values(by, &mut v, t.order.get(by));
        v
    } else {
        t.columns.clone()
    };
    let env_split = by == "env_split";
    let mut columns: Vec<Column> = col_keys
        .iter()
        .map(|k| match k.split_once('/') {
            Some((g, l)) if env_split => {
                Column { key: k.clone(), group: Some(report.label(g).to_string()), label: report.label(l).to_string() }
            }
            _ => Column { key: k.clone(), group: None, label: report.label(k).to_string() },
        })
        .collect();
    let cells = cell_accs(recs, &rows_idx, &t.rows.iter().map(String::as_str).collect::<Vec<_>>(), by, &col_keys, t.ci)?;

    // Row combinations: filter values or data values per dimension.
    let mut axes: Vec<Vec<String>> = Vec::new();
    let agents = super::data::agent_order(&report.params_b);
    for d in &t.rows {
        let mut vals = match t.filter.get(d) {
            Some(v) => v.clone(),
            None => recs.values_in(&rows_idx, d)?,
        };
        let by_size = (d == "agent" && !agents.is_empty()).then_some(&agents);
        sort_values(d, &mut vals, t.order.get(d).or(by_size));
        axes.push(vals);
    }
    let mut combos: Vec<Vec<String>> = vec![vec![]];
    for axis in &axes {
        combos = combos.into_iter().flat_map(|p| axis.iter().map(move |v| [p.clone(), vec![v.clone()]].concat())).collect();
    }
    if t.rows.is_empty() {
        combos = vec![vec![]];
    }
    let describe = |row: &[String]| -> String {
        t.rows.iter().zip(row).map(|(d, v)| format!("{d}={v}")).collect::<Vec<_>>().join(", ")
    };
    let mut rows = Vec::new();
    for combo in &combos {
        let mut rc = Vec::new();
        for (c, col) in col_keys.iter().enumerate() {
            let acc = cells.get(&(combo.clone(), c));
            let value = acc.and_then(|a| a.value(metric)).map(|v| v * scale);
            let ci = if t.ci { acc.and_then(|a| a.ci95_of(metric)).map(|v| v * scale) } else { None };
            if value.is_none() {
                let head = if combo.is_empty() { String::new() } else { format!("{} ", describe(combo)) };
                notes.push(format!("no data for {head}in column `{col}`"));
            }
            rc.push(Cell { value, ci, best: false });
        }
        let labels = combo.iter().map(|v| report.label(v).to_string()).collect();
        rows.push(Row { keys: combo.clone(), labels, kind: RowKind::Value, cells: rc });
    }
    if t.ci {
        // Say what the ± is, so a reader never has to guess (#26).
        if metric.has_interval() {
            let mut what = format!(
                "± is the half-width of a 95% interval of the {} over the cell's episodes ({})",
                metric.name(),
                super::data::INTERVAL_METHOD
            );
            match (t.average, t.delta_over.is_some()) {
                (true, true) => what.push_str("; the Average column and Δ rows have none"),
                (true, false) => what.push_str("; the Average column has none"),
                (false, true) => what.push_str("; Δ rows have none"),
                (false, false) => {}
            }
            notes.push(what);
        } else {
            notes.push(format!(
                "`ci` applies to means over episodes (`avg_reward`, `success_rate`, `reward_per_step`); {} has no interval here",
                metric.name()
            ));
        }
    }

    if t.average {
        columns.push(Column { key: "average".into(), group: None, label: "Average".into() });
        for row in &mut rows {
            let vals: Vec<f64> = row.cells.iter().filter_map(|c| c.value).collect();
            let avg = (vals.len() == row.cells.len() && !vals.is_empty()).then(|| vals.iter().sum::<f64>() / vals.len() as f64);
            if avg.is_none() && !row.cells.is_empty() {
                notes.push(format!("no average for {}: a cell is missing", describe(&row.keys)));
            }
            row.cells.push(Cell { value: avg, ci: None, best: false });
        }
    }

    // Best per column, at printed precision, among value rows.
    if t.bold_best {
        let round = |v: f64| (v * 10f64.powi(decimals as i32)).round();
        for c in 0..columns.len() {
            let best = rows.iter().filter_map(|r| r.cells[c].value).map(round).fold(f64::NEG_INFINITY, f64::max);
            let count = rows.iter().filter(|r| r.cells[c].value.is_some()).count();
            if count > 1 {
                for r in rows.iter_mut() {
                    if r.cells[c].value.map(round) == Some(best) {
                        r.cells[c].best = true;
                    }
                }
            }
        }
    }

    if let Some(baseline) = &t.delta_over {
        let di = t.rows.iter().position(|r| *r == t.delta_dimension).expect("checked above");
        let mut out = Vec::new();
        for row in &rows {
            out.push(row.clone());
            if row.keys[di] == *baseline {
                continue;
            }
            let base = rows.iter().find(|b| {
                b.keys.iter().enumerate().all(|(i, k)| if i == di { k == baseline } else { *k == row.keys[i] })
            });
            let Some(base) = base else {
                notes.push(format!("no Δ for {}: no `{baseline}` row", describe(&row.keys)));
                continue;
            };
            let cells = row
                .cells
                .iter()
                .zip(&base.cells)
                .map(|(a, b)| Cell { value: a.value.zip(b.value).map(|(a, b)| a - b), ci: None, best: false })
                .collect();
            let labels = (0..row.keys.len())
                .map(|i| if i == di { format!("Δ vs {}", report.label(baseline)) } else { row.labels[i].clone() })
                .collect();
            out.push(Row { keys: row.keys.clone(), labels, kind: RowKind::Delta, cells });
        }
        rows = out;
    }

    let title = if t.title.is_empty() { capitalise(metric.name()) } else { t.title.clone() };
    let row_headers = t.rows.iter().map(|d| capitalise(report.label(d))).collect();
    notes.dedup();
    Ok(Table { name: t.name.clone(), title, row_headers, row_dims: t.rows.clone(), columns, rows, decimals, notes })
}

/// Accumulators per (row values, column index): rows grouped by `row_dims`,
/// columns by the values `col_keys` of `by`. Under `env_split` a bare env
/// key pools all its splits.
pub fn cell_accs(
    recs: &Records,
    rows_idx: &[u32],
    row_dims: &[&str],
    by: &str,
    col_keys: &[String],
    keep_rewards: bool,
) -> Result<HashMap<(Vec<String>, usize), Acc>> {
    let env_split = by == "env_split";
    let pooled = env_split && col_keys.iter().any(|k| !k.contains('/'));
    let mut group_dims: Vec<&str> = row_dims.to_vec();
    if pooled {
        group_dims.extend(["env", "split"]);
    } else {
        group_dims.push(by);
    }
    let groups = recs.group(rows_idx, &group_dims, keep_rewards)?;
    let nr = row_dims.len();
    let mut cells: HashMap<(Vec<String>, usize), Acc> = HashMap::new();
    for (key, acc) in &groups {
        let row = key[..nr].to_vec();
        let full = if pooled { format!("{}/{}", key[nr], key[nr + 1]) } else { key[nr].clone() };
        for (c, k) in col_keys.iter().enumerate() {
            if *k == full || (pooled && *k == key[nr]) {
                cells.entry((row.clone(), c)).or_default().merge(acc);
            }
        }
    }
    Ok(cells)
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
}

impl Table {
    fn number(&self, v: f64, kind: RowKind) -> String {
        let s = format!("{:.*}", self.decimals, v);
        // `-0.0` prints as `0.0`; a delta carries its sign.
        let s = if s.starts_with('-') && s[1..].chars().all(|c| c == '0' || c == '.') { s[1..].to_string() } else { s };
        if kind == RowKind::Delta && !s.starts_with('-') {
            format!("+{s}")
        } else {
            s
        }
    }

    fn text(&self, c: &Cell, kind: RowKind, pm: &str) -> Option<String> {
        let v = c.value?;
        let mut s = self.number(v, kind);
        if let Some(ci) = c.ci {
            let _ = write!(s, "{pm}{:.*}", self.decimals, ci);
        }
        Some(s)
    }

    /// Labels of the row dimensions, blanking an outer label that repeats
    /// the row above (as the paper groups rows by agent).
    fn shown_labels(&self) -> Vec<Vec<String>> {
        let mut prev: Option<&Row> = None;
        let mut out = Vec::new();
        for r in &self.rows {
            let mut labels = r.labels.clone();
            if let Some(p) = prev {
                for i in 0..labels.len().saturating_sub(1) {
                    if p.keys[..=i] == r.keys[..=i] {
                        labels[i].clear();
                    } else {
                        break;
                    }
                }
            }
            prev = Some(r);
            out.push(labels);
        }
        out
    }

    fn column_title(c: &Column) -> String {
        match &c.group {
            Some(g) => format!("{g} / {}", c.label),
            None => c.label.clone(),
        }
    }

    /// The table with its title in bold above it (the `.md` file).
    pub fn markdown(&self) -> String {
        format!("**{}**\n\n{}", self.title, self.markdown_body())
    }

    /// The table and its notes, without the title (for `index.md`, which
    /// has the title as a heading).
    pub fn markdown_body(&self) -> String {
        let mut s = String::new();
        let mut head: Vec<String> = self.row_headers.clone();
        head.extend(self.columns.iter().map(Self::column_title));
        let _ = writeln!(s, "| {} |", head.join(" | "));
        let align: Vec<&str> = self.row_headers.iter().map(|_| ":---").chain(self.columns.iter().map(|_| "---:")).collect();
        let _ = writeln!(s, "|{}|", align.join("|"));
        for (r, labels) in self.rows.iter().zip(self.shown_labels()) {
            let mut line: Vec<String> = labels.iter().map(|l| md_escape(l)).collect();
            for c in &r.cells {
                line.push(match self.text(c, r.kind, " ± ") {
                    None => "–".into(),
                    Some(t) if c.best => format!("**{t}**"),
                    Some(t) if r.kind == RowKind::Delta => format!("*{t}*"),
                    Some(t) => t,
                });
            }
            let _ = writeln!(s, "| {} |", line.join(" | "));
        }
        if !self.notes.is_empty() {
            let _ = writeln!(s);
            for n in &self.notes {
                let _ = writeln!(s, "- Note: {n}.");
            }
        }
        s
    }

    pub fn latex(&self) -> String {
        let mut s = String::new();
        let nr = self.row_headers.len();
        let _ = writeln!(s, "% Generated by mpo-run {}; needs \\usepackage{{booktabs}}.", env!("CARGO_PKG_VERSION"));
        let _ = writeln!(s, "\\begin{{table}}[t]\n\\centering");
        let label: String = self.name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
        let _ = writeln!(s, "\\caption{{{}}}\n\\label{{tab:{label}}}", tex_escape(&self.title));
        let spec: String = "l".repeat(nr) + &"r".repeat(self.columns.len());
        let _ = writeln!(s, "\\begin{{tabular}}{{{spec}}}\n\\toprule");
        if self.columns.iter().any(|c| c.group.is_some()) {
            let mut parts: Vec<String> = vec![String::new(); nr];
            let mut rules = Vec::new();
            let mut i = 0;
            while i < self.columns.len() {
                let g = &self.columns[i].group;
                let mut j = i + 1;
                while j < self.columns.len() && g.is_some() && self.columns[j].group == *g {
                    j += 1;
                }
                match g {
                    Some(g) => {
                        parts.push(format!("\\multicolumn{{{}}}{{c}}{{{}}}", j - i, tex_escape(g)));
                        rules.push(format!("\\cmidrule(lr){{{}-{}}}", nr + i + 1, nr + j));
                    }
                    None => parts.push(String::new()),
                }
                i = j;
            }
            let _ = writeln!(s, "{} \\\\", parts.join(" & "));
            let _ = writeln!(s, "{}", rules.join(" "));
        }
        let mut head: Vec<String> = self.row_headers.iter().map(|h| tex_escape(h)).collect();
        head.extend(self.columns.iter().map(|c| tex_escape(&c.label)));
        let _ = writeln!(s, "{} \\\\\n\\midrule", head.join(" & "));
        for (r, labels) in self.rows.iter().zip(self.shown_labels()) {
            let mut line: Vec<String> = labels.iter().map(|l| tex_escape(l)).collect();
            for c in &r.cells {
                line.push(match self.text(c, r.kind, " $\\pm$ ") {
                    None => "--".into(),
                    Some(t) if c.best => format!("\\textbf{{{t}}}"),
                    Some(t) if r.kind == RowKind::Delta => format!("\\textit{{{t}}}"),
                    Some(t) => t,
                });
            }
            let _ = writeln!(s, "{} \\\\", line.join(" & "));
        }
        let _ = writeln!(s, "\\bottomrule\n\\end{{tabular}}\n\\end{{table}}");
        for n in &self.notes {
            let _ = writeln!(s, "% Note: {n}.");
        }
        s
    }

    /// CSV: raw row values, one column per table column (scaled, full
    /// precision; empty where there is no data), `row_kind` first.
    pub fn csv(&self) -> String {
        let mut s = String::new();
        let mut head = vec!["row_kind".to_string()];
        head.extend(self.row_dims.iter().cloned());
        for c in &self.columns {
            head.push(c.key.clone());
            if self.rows.iter().any(|r| r.cells.iter().any(|c| c.ci.is_some())) && c.key != "average" {
                head.push(format!("{}_ci95", c.key));
            }
        }
        let _ = writeln!(s, "{}", head.iter().map(|h| csv_field(h)).collect::<Vec<_>>().join(","));
        let with_ci = head.iter().any(|h| h.ends_with("_ci95"));
        for r in &self.rows {
            let mut line = vec![if r.kind == RowKind::Delta { "delta".to_string() } else { "value".to_string() }];
            line.extend(r.keys.iter().map(|k| csv_field(k)));
            for (c, col) in r.cells.iter().zip(&self.columns) {
                line.push(c.value.map(|v| format!("{v:.6}")).unwrap_or_default());
                if with_ci && col.key != "average" {
                    line.push(c.ci.map(|v| format!("{v:.6}")).unwrap_or_default());
                }
            }
            let _ = writeln!(s, "{}", line.join(","));
        }
        s
    }
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|")
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Escapes LaTeX's special characters; `Δ` becomes `$\Delta$`.
pub fn tex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '\\' => out.push_str("\\textbackslash{}"),
            '&' | '%' | '$' | '#' | '_' | '{' | '}' => {
                out.push('\\');
                out.push(ch);
            }
            '~' => out.push_str("\\textasciitilde{}"),
            '^' => out.push_str("\\textasciicircum{}"),
            'Δ' => out.push_str("$\\Delta$"),
            '–' => out.push_str("--"),
            _ => out.push(ch),
        }
    }
    out
}

/// Every table of `report` built from `episodes` / `judge` records.
pub fn build_all(report: &ReportSpec, episodes: Option<&Records>, judge: Option<&Records>) -> Vec<(String, Result<Table>)> {
    report
        .tables
        .iter()
        .map(|t| {
            let recs = if t.metric.is_judge() { judge } else { episodes };
            let res = match recs {
                Some(r) => build(t, r, report),
                None => Err(anyhow::anyhow!(
                    "no `{}` results yet",
                    if t.metric.is_judge() { "judge" } else { "episodes" }
                )),
            };
            (t.name.clone(), res)
        })
        .collect()
}

/// Cells of a table by key, for tests: `(row keys, column key) → value`.
pub fn cell_map(t: &Table) -> BTreeMap<(Vec<String>, String), Option<f64>> {
    let mut m = BTreeMap::new();
    for r in t.rows.iter().filter(|r| r.kind == RowKind::Value) {
        for (c, col) in r.cells.iter().zip(&t.columns) {
            m.insert((r.keys.clone(), col.key.clone()), c.value);
        }
    }
    m
}
