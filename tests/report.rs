//! Reports from a small synthetic results set (`mpo_run::report::synth`,
//! also committed as `tests/fixtures/results/fixture/*.parquet`): every
//! paper table snapshotted in Markdown and LaTeX, every figure drawn as SVG
//! and PNG and parsed back, missing data turned into notes.

mod common;

use std::path::{Path, PathBuf};

use mpo_run::report::config::{FigureFormat, ReportSpec};
use mpo_run::report::data::Records;
use mpo_run::report::{figures, plot, synth, tables, write_dir};
use mpo_run::store::table::read_parquet;

/// The `[report]` of the paper's tables and figures, written against the
/// fixture's names.
const SPEC: &str = r#"
base_values = { "mpo.m" = 5, "mpo.n" = 5 }

[params_b]
"tiny-3b" = 3
"small-8b" = 8
"big-70b" = 70

[labels]
household = "ALFWorld"
sciworld = "SciWorld"
seen = "Seen"
unseen = "Unseen"
none = "No plan"
sft = "SFT"
prompted = "GPT"
rft = "RFT"
mpo = "MPO"
instruction = "Inst."
thought = "Thou."
observation = "Obs."
"mpo.m" = "M"
"mpo.n" = "N"

[[table]]
name = "table2"
title = "Table 2: average reward of agents with and without MPO"
metric = "avg_reward"
rows = ["agent", "planner"]
columns = ["sciworld/seen", "sciworld/unseen", "household/seen", "household/unseen"]
filter = { planner = ["none", "mpo"], insertion = ["none", "instruction"] }
average = true

[[table]]
name = "table3"
title = "Table 3: meta planner ablation (unseen)"
metric = "avg_reward"
rows = ["agent", "planner"]
columns = ["sciworld/unseen", "household/unseen"]
filter = { insertion = ["none", "instruction"] }

[[table]]
name = "table4"
title = "Table 4: meta plan insertion positions (unseen)"
metric = "avg_reward"
rows = ["agent", "insertion"]
columns = ["sciworld/unseen", "household/unseen"]
filter = { planner = ["mpo"] }

[[table]]
name = "table5"
title = "Table 5: average reward with and without meta plans"
metric = "avg_reward"
rows = ["agent", "planner"]
columns = ["sciworld/seen", "sciworld/unseen", "household/seen", "household/unseen"]
filter = { planner = ["none", "mpo"], insertion = ["none", "instruction"] }
average = true
delta_over = "none"
ci = true

[[table]]
name = "table6"
title = "Table 6: success rate with and without meta plans"
metric = "success_rate"
rows = ["agent", "planner"]
columns = ["sciworld/seen", "sciworld/unseen", "household/seen", "household/unseen"]
filter = { planner = ["none", "mpo"], insertion = ["none", "instruction"] }
average = true

[[table]]
name = "judge_table"
title = "Judge win rate of MPO over SFT meta plans"
metric = "judge_win_rate"
rows = ["judge"]
columns_by = "dimension"

[[figure]]
name = "figure3"
kind = "bars"
title = "Figure 3: average reward per step"
metric = "reward_per_step"
groups = ["sciworld/seen", "sciworld/unseen", "household/seen", "household/unseen"]
series = "planner"
series_values = ["none", "sft", "mpo"]
filter = { agent = ["small-8b"], insertion = ["none", "instruction"] }

[[figure]]
name = "figure4"
kind = "scaling"
title = "Figure 4: MPO across agent sizes"
groups = ["sciworld/seen", "sciworld/unseen", "household/seen", "household/unseen"]
series_values = ["none", "mpo"]
filter = { insertion = ["none", "instruction"] }

[[figure]]
name = "figure5"
kind = "sweep"
title = "Figure 5: agent score vs M and N"
keys = ["mpo.m", "mpo.n"]
groups = ["sciworld", "household"]
filter = { planner = ["mpo"], insertion = ["instruction"], agent = ["small-8b"] }

[[figure]]
name = "figure6"
kind = "judge"
title = "Figure 6: MPO vs SFT meta plans (judge)"
"#;

fn spec() -> ReportSpec {
    toml::from_str(SPEC).expect("the test's [report] parses")
}

/// The fixture: written by the generator into a temp dir (and checked
/// against the committed copy, so the two never drift).
fn fixture() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    synth::write(&results, 8, 10).unwrap();
    (dir, results)
}

fn records(results: &Path) -> (Records, Records) {
    (Records::episodes(&results.join("episodes.parquet")).unwrap(), Records::judge(&results.join("judge.parquet")).unwrap())
}

#[test]
fn the_committed_fixture_matches_the_generator() {
    let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/results/fixture");
    let (_d, results) = fixture();
    for t in ["episodes", "judge"] {
        let a = read_parquet(&committed.join(format!("{t}.parquet"))).unwrap();
        let b = read_parquet(&results.join(format!("{t}.parquet"))).unwrap();
        assert!(a.equals_missing(&b), "tests/fixtures/results/fixture/{t}.parquet is stale: regenerate it with `MPO_WRITE_FIXTURE=1 cargo test --release --test report`");
    }
}

/// `MPO_WRITE_FIXTURE=1` rewrites the committed fixture.
#[test]
fn write_fixture_on_request() {
    if std::env::var_os("MPO_WRITE_FIXTURE").is_some() {
        let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/results/fixture");
        synth::write(&committed, 8, 10).unwrap();
    }
}

#[test]
fn every_table_in_markdown_and_latex() {
    let (_d, results) = fixture();
    let (eps, judge) = records(&results);
    let spec = spec();
    for (name, table) in tables::build_all(&spec, Some(&eps), Some(&judge)) {
        let table = table.unwrap_or_else(|e| panic!("table {name}: {e:#}"));
        insta::assert_snapshot!(format!("{name}_md"), table.markdown());
        insta::assert_snapshot!(format!("{name}_tex"), table.latex());
        if name == "table5" {
            insta::assert_snapshot!(format!("{name}_csv"), table.csv());
        }
    }
}

#[test]
fn a_missing_cell_is_a_dash_and_a_note_never_zero() {
    let (_d, results) = fixture();
    let (eps, judge) = records(&results);
    let spec = spec();
    let t3 = tables::build_all(&spec, Some(&eps), Some(&judge)).into_iter().find(|t| t.0 == "table3").unwrap().1.unwrap();
    let cells = tables::cell_map(&t3);
    let key = (vec!["big-70b".to_string(), "rft".to_string()], "sciworld/unseen".to_string());
    assert_eq!(cells[&key], None);
    assert!(t3.notes.iter().any(|n| n.contains("agent=big-70b, planner=rft") && n.contains("sciworld/unseen")), "{:?}", t3.notes);
    let md = t3.markdown();
    let row = md.lines().find(|l| l.contains("RFT") && l.contains('–') && !l.contains("0.0 |")).unwrap();
    assert!(row.contains("| – |"), "{row}");
    // Expert episodes (stage `expert`) never reach a table.
    assert!(!md.contains("expert"));
}

#[test]
fn every_figure_as_svg_and_png() {
    let (dir, results) = fixture();
    let (eps, judge) = records(&results);
    let spec = spec();
    let out = dir.path().join("figs");
    std::fs::create_dir_all(&out).unwrap();
    let expected_series = [("figure3", 3, 1), ("figure4", 2, 4), ("figure5", 2, 2), ("figure6", 3, 1)];
    for f in &spec.figures {
        let fig = figures::build(f, Some(&eps), Some(&judge), &spec).unwrap();
        let (_, series, panels) = expected_series.iter().find(|e| e.0 == f.name).unwrap();
        assert_eq!(fig.legend.len(), *series, "{}", f.name);
        assert_eq!(fig.panels.len(), *panels, "{}", f.name);
        assert!(fig.panels.iter().all(|p| p.series.len() == *series), "{}", f.name);
        for format in [FigureFormat::Svg, FigureFormat::Png] {
            let ext = if format == FigureFormat::Svg { "svg" } else { "png" };
            let path = out.join(format!("{}.{ext}", f.name));
            plot::render(&fig, &path, format).unwrap();
            if format == FigureFormat::Png {
                let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&path).unwrap()));
                let mut reader = decoder.read_info().unwrap();
                let mut buf = vec![0; reader.output_buffer_size()];
                let info = reader.next_frame(&mut buf).unwrap();
                assert_eq!((info.width, info.height), fig.size);
                // Not blank: some pixels are neither white nor grey.
                assert!(buf.chunks(3).any(|p| p[0] != p[1] || p[1] != p[2]), "{} has no colour", f.name);
            } else {
                let text = std::fs::read_to_string(&path).unwrap();
                let mut reader = quick_xml::Reader::from_str(&text);
                let mut texts = Vec::new();
                loop {
                    match reader.read_event().unwrap_or_else(|e| panic!("{}.svg is not XML: {e}", f.name)) {
                        quick_xml::events::Event::Eof => break,
                        quick_xml::events::Event::Text(t) => texts.push(t.decode().unwrap().into_owned()),
                        _ => {}
                    }
                }
                for name in &fig.legend {
                    let escaped = quick_xml::escape::escape(name.as_str()).into_owned();
                    assert!(texts.iter().any(|t| t.trim() == name || t.trim() == escaped), "{}: legend `{name}` missing in {texts:?}", f.name);
                }
            }
        }
    }
    // Keep the last drawing for a person to look at.
    if let Ok(keep) = std::env::var("MPO_KEEP_FIGURES") {
        for e in std::fs::read_dir(&out).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), Path::new(&keep).join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn figures_note_what_is_missing() {
    let (_d, results) = fixture();
    let (eps, judge) = records(&results);
    let mut spec = spec();
    spec.params_b.remove("big-70b");
    spec.base_values.remove("mpo.n");
    let f4 = spec.figures.iter().find(|f| f.name == "figure4").unwrap();
    let fig = figures::build(f4, Some(&eps), Some(&judge), &spec).unwrap();
    assert!(fig.notes.iter().any(|n| n.contains("`big-70b` has no parameter count")), "{:?}", fig.notes);
    let mut f5 = spec.figures.iter().find(|f| f.name == "figure5").unwrap().clone();
    f5.keys.push("mpo.beta".into());
    let fig = figures::build(&f5, Some(&eps), Some(&judge), &spec).unwrap();
    assert!(fig.notes.iter().any(|n| n.contains("base value of `mpo.n` is unknown")), "{:?}", fig.notes);
    assert!(fig.notes.iter().any(|n| n.contains("sweep over `mpo.beta` is incomplete")), "{:?}", fig.notes);
    let f6 = spec.figures.iter().find(|f| f.name == "figure6").unwrap();
    let fig = figures::build(f6, Some(&eps), Some(&judge), &spec).unwrap();
    assert!(fig.notes.iter().any(|n| n.contains("failed to parse are left out (1 correctness, 1 followability")), "{:?}", fig.notes);
    // The sweep's panels: M has 1, 3 and the base 5.
    let f5 = spec.figures.iter().find(|f| f.name == "figure5").unwrap();
    let fig = figures::build(f5, Some(&eps), Some(&judge), &spec).unwrap();
    let xs: Vec<f64> = fig.panels[0].series[0].points.iter().map(|p| p.0).collect();
    assert_eq!(xs, [1.0, 3.0, 5.0]);
}

#[test]
fn the_index_links_every_table_and_figure() {
    let (dir, results) = fixture();
    let out = dir.path().join("reports");
    let mut spec = spec();
    spec.tables.push(toml::from_str::<ReportSpec>("[[table]]\nname='broken'\nmetric='avg_reward'\nrows=['colour']\n").unwrap().tables.remove(0));
    let md = write_dir("fixture", &spec, &results, &out).unwrap();
    if let Ok(keep) = std::env::var("MPO_KEEP_FIGURES") {
        std::fs::write(Path::new(&keep).join("index.md"), &md).unwrap();
    }
    for t in &spec.tables {
        if t.name == "broken" {
            continue;
        }
        for ext in ["md", "tex", "csv"] {
            assert!(md.contains(&format!("]({}.{ext})", t.name)), "{} {ext}", t.name);
            assert!(out.join(format!("{}.{ext}", t.name)).exists());
        }
    }
    for f in &spec.figures {
        for ext in ["svg", "png"] {
            assert!(md.contains(&format!("]({}.{ext})", f.name)));
            assert!(out.join(format!("{}.{ext}", f.name)).exists());
        }
    }
    assert!(md.contains("unknown dimension `colour`"), "a broken table is a note");
    assert!(md.contains(concat!("mpo-run ", env!("CARGO_PKG_VERSION"))));
    assert!(md.contains("episodes.parquet` | "));
    assert!(md.contains("judge.parquet` | 40 |"));
    // The plain-language findings, as a reader sees them.
    let findings = md.split("## Findings").nth(1).expect("a findings section").split("## Episodes").next().unwrap();
    insta::assert_snapshot!(findings);
}

/// The CLI's path: a spec with a sweep → plan → `report::write`, with the
/// sweep's base values resolved from the spec (no `base_values` written).
#[test]
fn report_write_resolves_sweep_base_values_from_the_spec() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    synth::write(&results.join("fixture"), 8, 10).unwrap();
    // Self-contained (no `extends`), so edits to `experiments/` never
    // break it; the sweep is Figure 5's, around M = N = 5.
    let spec = format!(
        "[experiment]\nname = \"fixture\"\nresults_dir = {:?}\nreports_dir = {:?}\n{}",
        results.display().to_string(),
        dir.path().join("reports").display().to_string(),
        r#"
[envs.household]
kind = "builtin"
tasks = { train = 10 }

[planner]
teacher = "rule"

[mpo]
m = 5
n = 5

[sweep]
mode = "one-at-a-time"
vary = { "mpo.m" = [1, 3, 5], "mpo.n" = [1, 3, 5] }

[[report.figure]]
name = "figure5"
kind = "sweep"
keys = ["mpo.m", "mpo.n"]
filter = { planner = ["mpo"], insertion = ["instruction"], agent = ["small-8b"] }
"#
    );
    let path = dir.path().join("fixture.toml");
    std::fs::write(&path, spec).unwrap();
    let opts = mpo_run::spec::LoadOptions { sets: vec![], env: Some(vec![]), ..Default::default() };
    let (plan, store) = mpo_run::cli::plan_for(&path, &opts).unwrap();
    assert_eq!(plan.report.base_values.get("mpo.m"), Some(&5.0));
    assert_eq!(plan.report.base_values.get("mpo.n"), Some(&5.0));
    let index = mpo_run::report::write(&plan, &store).unwrap();
    let md = std::fs::read_to_string(&index).unwrap();
    assert!(md.contains("](figure5.png)"), "{md}");
    assert!(!md.contains("unknown"), "{md}");
    assert!(md.contains("| stage | key | variants |"));
    assert!(index.with_file_name("figure5.svg").exists());
}

/// Without an `insertion` filter a table reads the paper's main setting
/// (no plan, or the plan in the instruction): Table 4's thought and
/// observation episodes never pool into the `mpo` rows.
#[test]
fn the_default_insertion_is_the_main_setting() {
    let (_d, results) = fixture();
    let (eps, judge) = records(&results);
    let spec = spec();
    let mut open = spec.clone();
    open.tables.iter_mut().for_each(|t| {
        t.filter.remove("insertion");
    });
    let a = tables::build_all(&spec, Some(&eps), Some(&judge));
    let b = tables::build_all(&open, Some(&eps), Some(&judge));
    for ((name, x), (_, y)) in a.into_iter().zip(b) {
        if name != "table4" {
            assert_eq!(tables::cell_map(&x.unwrap()), tables::cell_map(&y.unwrap()), "{name}");
        }
    }
}

/// The SVG's text nodes and the stroke colours of its polylines.
fn svg_parts(path: &Path) -> (Vec<String>, Vec<String>) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut reader = quick_xml::Reader::from_str(&text);
    let (mut texts, mut strokes) = (Vec::new(), Vec::new());
    loop {
        match reader.read_event().unwrap_or_else(|e| panic!("{} is not XML: {e}", path.display())) {
            quick_xml::events::Event::Eof => break,
            quick_xml::events::Event::Text(t) => texts.push(t.decode().unwrap().trim().to_string()),
            quick_xml::events::Event::Empty(e) | quick_xml::events::Event::Start(e) if e.name().as_ref() == b"polyline" => {
                let stroke = e.attributes().flatten().find(|a| a.key.as_ref() == b"stroke");
                strokes.push(stroke.map(|a| String::from_utf8_lossy(&a.value).into_owned()).unwrap_or_default());
            }
            _ => {}
        }
    }
    (texts, strokes)
}

/// A report of results with a train log: the fixture's episodes and
/// `synth::train_log`'s four training stages.
fn report_with_training(spec: &ReportSpec) -> (tempfile::TempDir, PathBuf, String) {
    let (dir, results) = fixture();
    let mut log = synth::train_log(7).unwrap();
    mpo_run::store::table::write_parquet(&results.join("train_log.parquet"), &mut log).unwrap();
    let out = dir.path().join("reports");
    let md = write_dir("fixture", spec, &results, &out).unwrap();
    // `MPO_KEEP_FIGURES=DIR` keeps the drawings for a person to look at.
    if let Ok(keep) = std::env::var("MPO_KEEP_FIGURES") {
        for e in std::fs::read_dir(&out).unwrap().flatten().filter(|e| e.path().is_file()) {
            std::fs::copy(e.path(), Path::new(&keep).join(e.file_name())).unwrap();
        }
    }
    (dir, out, md)
}

/// #26: one loss-curve figure per training stage (DPO with reward accuracy
/// and margin, SFT with its held-out loss), in every figure format, shown
/// in `index.md`'s Training section.
#[test]
fn the_report_draws_a_loss_curve_per_training_stage() {
    let (_d, out, md) = report_with_training(&spec());
    let section = md.split("## Training\n").nth(1).expect("a training section").split("\n## ").next().unwrap();
    insta::assert_snapshot!("training_section", section);
    let blue = "#0072B2";
    let orange = "#E69F00";
    for (stage, panels, series) in [
        ("agent_sft", vec!["Loss"], vec![blue]),
        ("sft", vec!["Loss"], vec![blue, orange]),
        ("rft", vec!["Loss"], vec![blue]),
        ("dpo", vec!["Loss", "Reward accuracy", "Reward margin"], vec![blue]),
    ] {
        let name = format!("training_{stage}");
        assert!(md.contains(&format!("![Training curves: {stage}]({name}.svg)")), "{stage} is embedded:\n{md}");
        assert!(out.join(format!("{name}.png")).exists());
        let (texts, strokes) = svg_parts(&out.join(format!("{name}.svg")));
        assert!(texts.iter().any(|t| t == &format!("Training curves: {stage}")), "{stage}: title in {texts:?}");
        assert_eq!(texts.iter().filter(|t| *t == "Optimizer step").count(), panels.len(), "{stage}: an x label per panel");
        for p in &panels {
            assert!(texts.iter().any(|t| t == p), "{stage}: panel `{p}` missing in {texts:?}");
        }
        // A curve per series and panel, plus its legend swatch: polylines
        // in the series' colour.
        for (k, colour) in series.iter().enumerate() {
            let n = strokes.iter().filter(|s| s.eq_ignore_ascii_case(colour)).count();
            let want = if k == 0 { panels.len() + 1 } else { 2 };
            assert_eq!(n, want, "{stage}: polylines in {colour} ({strokes:?})");
        }
    }
    // The held-out loss is its own series.
    let (texts, _) = svg_parts(&out.join("training_sft.svg"));
    assert!(texts.iter().any(|t| t == "Held-out"), "{texts:?}");
}

/// #26: Figure 3's bars carry 95% error bars — the very intervals a table
/// of the same metric and cells prints — and state n.
#[test]
fn bar_charts_carry_the_tables_intervals_and_n() {
    let (dir, results) = fixture();
    let (eps, judge) = records(&results);
    let spec = spec();
    let f3 = spec.figures.iter().find(|f| f.name == "figure3").unwrap();
    let fig = figures::build(f3, Some(&eps), Some(&judge), &spec).unwrap();
    // The same cells as a table with intervals.
    let table: ReportSpec = toml::from_str(
        r#"
[[table]]
name = "rps"
metric = "reward_per_step"
rows = ["planner"]
columns = ["sciworld/seen", "sciworld/unseen", "household/seen", "household/unseen"]
filter = { planner = ["none", "sft", "mpo"], agent = ["small-8b"], insertion = ["none", "instruction"] }
ci = true
"#,
    )
    .unwrap();
    let t = tables::build(&table.tables[0], &eps, &spec).unwrap();
    let panel = &fig.panels[0];
    for (series, planner) in panel.series.iter().zip(["none", "sft", "mpo"]) {
        let row = t.rows.iter().find(|r| r.keys == [planner]).unwrap();
        assert_eq!(series.errors.len(), series.points.len());
        for (i, cell) in row.cells.iter().enumerate() {
            assert_eq!(series.points[i].1, cell.value, "{planner} {i}");
            assert_eq!(series.errors[i], cell.ci, "{planner} {i}: the bar's interval is the table's");
            assert!(series.errors[i].is_some());
        }
    }
    assert!(t.notes.iter().any(|n| n.contains("95% interval of the average reward per step")), "{:?}", t.notes);
    assert_eq!(fig.legend, ["No plan (n = 8)", "SFT (n = 8)", "MPO (n = 8)"]);
    assert!(fig.notes.iter().any(|n| n.starts_with("error bars: 95% intervals")), "{:?}", fig.notes);
    // Drawn: one error-bar polyline (`plot::ERROR_BAR`) per bar, n in the legend.
    let path = dir.path().join("figure3.svg");
    plot::render(&fig, &path, FigureFormat::Svg).unwrap();
    let (texts, strokes) = svg_parts(&path);
    let bars = panel.series.iter().flat_map(|s| &s.points).filter(|p| p.1.is_some()).count();
    assert_eq!(strokes.iter().filter(|s| *s == "#333333").count(), bars, "{strokes:?}");
    assert!(texts.iter().any(|t| t == "MPO (n = 8)"), "{texts:?}");
}

/// `[report] tensorboard = true`: the train log as TensorBoard event
/// files, read back by TensorBoard's own EventAccumulator (the pinned
/// venv's, `MPO_RUN_PYTHON`): every scalar equals the log's (as f32).
#[test]
fn tensorboard_event_files_hold_the_train_log() {
    let python = common::engine_python("MPO_RUN_PYTHON");
    let mut spec = spec();
    spec.tensorboard = true;
    let (_d, out, md) = report_with_training(&spec);
    assert!(md.contains("[`tensorboard/`](tensorboard/)"), "{md}");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/tensorboard_check.py");
    let res = std::process::Command::new(&python).arg(&script).arg(out.join("tensorboard")).output().unwrap();
    assert!(res.status.success(), "{}", String::from_utf8_lossy(&res.stderr));
    let got: serde_json::Value = serde_json::from_slice(&res.stdout).unwrap();
    // The shared `sft` node is written once; every stage has a run.
    let runs: Vec<&String> = got.as_object().unwrap().keys().collect();
    assert_eq!(runs, ["agent_sft", "dpo", "rft", "sft"]);
    let log = synth::train_log(7).unwrap();
    let rows = mpo_run::store::table::frame_to_json(&log).unwrap();
    let mut compared = 0;
    for (col, tag) in mpo_run::report::tensorboard::TAGS {
        for run in &runs {
            let want: Vec<(i64, f32)> = rows
                .iter()
                .filter(|r| r["variant"] == "base" && r["stage"] == run.as_str())
                .filter_map(|r| r[col].as_f64().map(|v| (r["step"].as_i64().unwrap(), v as f32)))
                .collect();
            let have: Vec<(i64, f32)> = got[run.as_str()][tag]
                .as_array()
                .map(|a| a.iter().map(|p| (p[0].as_i64().unwrap(), p[1].as_f64().unwrap() as f32)).collect())
                .unwrap_or_default();
            assert_eq!(have, want, "{run} {tag}");
            compared += want.len();
        }
    }
    assert!(compared > 150, "{compared} scalars compared");
}
