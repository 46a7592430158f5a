//! `cargo bench --bench report`: `mpo-run report` on a synthetic results
//! file of about a million episodes (`mpo_run::report::synth`, with a
//! `messages` column the report must not read), and at quickstart size.
//!
//! Prints the wall time of each phase: reading the episodes column-wise,
//! building the paper's tables, and the whole report (tables in three
//! formats, four figures in SVG and PNG, the summary and `index.md`).
//! Quick mode (`MPO_BENCH_QUICK=1`, or `cargo test --release --bench
//! report`): a 3,000-episode file only.

mod common;

use std::time::Instant;

use mpo_run::report::config::ReportSpec;
use mpo_run::report::data::Records;
use mpo_run::report::{synth, tables, write_dir};

const SPEC: &str = r#"
base_values = { "mpo.m" = 5, "mpo.n" = 5 }
[params_b]
"tiny-3b" = 3
"small-8b" = 8
"big-70b" = 70
[[table]]
name = "table2"
metric = "avg_reward"
rows = ["agent", "planner"]
filter = { planner = ["none", "mpo"], insertion = ["none", "instruction"] }
average = true
delta_over = "none"
ci = true
[[table]]
name = "table3"
metric = "avg_reward"
rows = ["agent", "planner"]
columns = ["sciworld/unseen", "household/unseen"]
filter = { insertion = ["none", "instruction"] }
[[table]]
name = "table4"
metric = "avg_reward"
rows = ["agent", "insertion"]
columns = ["sciworld", "household"]
filter = { planner = ["mpo"] }
[[table]]
name = "table6"
metric = "success_rate"
rows = ["agent", "planner"]
filter = { planner = ["none", "mpo"], insertion = ["none", "instruction"] }
[[figure]]
name = "figure3"
kind = "bars"
metric = "reward_per_step"
series_values = ["none", "sft", "mpo"]
filter = { agent = ["small-8b"], insertion = ["none", "instruction"] }
[[figure]]
name = "figure4"
kind = "scaling"
series_values = ["none", "mpo"]
filter = { insertion = ["none", "instruction"] }
[[figure]]
name = "figure5"
kind = "sweep"
keys = ["mpo.m", "mpo.n"]
groups = ["sciworld", "household"]
filter = { planner = ["mpo"], insertion = ["instruction"], agent = ["small-8b"] }
[[figure]]
name = "figure6"
kind = "judge"
"#;

fn time<T>(figures: &mut common::Figures, label: &str, detail: &str, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let out = f();
    let ms = t.elapsed().as_secs_f64() * 1e3;
    println!("{label:<48} {ms:>9.1} ms");
    figures.record(label, ms, "ms", detail);
    out
}

fn main() {
    let mut figures = common::Figures::start("report", None);
    let sizes: &[(&str, usize)] =
        if figures.quick() { &[("quick size", 30)] } else { &[("quickstart size", 300), ("1M episodes", 9_901)] };
    let spec: ReportSpec = toml::from_str(SPEC).expect("bench spec parses");
    let dir = tempfile::tempdir().expect("temp dir");
    // 101 cells of `tasks` episodes each: 9,901 per cell ≈ 1.0M.
    for &(label, tasks) in sizes {
        let results = dir.path().join(label.replace(' ', "_"));
        let t = Instant::now();
        let (rows, _) = synth::write(&results, tasks, 200).expect("fixture");
        let ms = t.elapsed().as_secs_f64() * 1e3;
        let detail = format!("{rows} episodes, 200 judge rows");
        let f = &mut figures;
        println!("{:<48} {ms:>9.1} ms", format!("[{label}] generate + write results"));
        f.record(&format!("[{label}] generate + write results"), ms, "ms", &detail);
        println!("[{label}] {rows} episodes");
        let eps = time(f, &format!("[{label}] read episodes (column-wise)"), &detail, || {
            Records::episodes(&results.join("episodes.parquet")).expect("read")
        });
        let judge = Records::judge(&results.join("judge.parquet")).expect("read");
        time(f, &format!("[{label}] build 4 tables"), &detail, || {
            for (_, t) in tables::build_all(&spec, Some(&eps), Some(&judge)) {
                t.expect("table");
            }
        });
        let out = dir.path().join(format!("{}_reports", label.replace(' ', "_")));
        // Two passes: the first includes font loading and cold caches.
        for pass in 1..=2 {
            time(f, &format!("[{label}] whole report, pass {pass}"), &detail, || {
                write_dir("bench", &spec, &results, &out).expect("report")
            });
        }
    }
}
