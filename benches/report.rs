//! `cargo bench --bench report`: `mpo-run report` on a synthetic results
//! file of about a million episodes (`mpo_run::report::synth`, with a
//! `messages` column the report must not read), and at quickstart size.
//!
//! Prints the wall time of each phase: reading the episodes column-wise,
//! building the paper's tables, and the whole report (tables in three
//! formats, four figures in SVG and PNG, the summary and `index.md`).

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

fn time<T>(label: &str, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let out = f();
    println!("{label:<48} {:>9.1} ms", t.elapsed().as_secs_f64() * 1e3);
    out
}

fn main() {
    let spec: ReportSpec = toml::from_str(SPEC).expect("bench spec parses");
    let dir = tempfile::tempdir().expect("temp dir");
    // 101 cells of `tasks` episodes each: 9,901 per cell ≈ 1.0M.
    for (label, tasks) in [("quickstart size", 300usize), ("1M episodes", 9_901)] {
        let results = dir.path().join(label.replace(' ', "_"));
        let (rows, _) = time(&format!("[{label}] generate + write results"), || synth::write(&results, tasks, 200).expect("fixture"));
        println!("[{label}] {rows} episodes");
        let eps = time(&format!("[{label}] read episodes (column-wise)"), || {
            Records::episodes(&results.join("episodes.parquet")).expect("read")
        });
        let judge = Records::judge(&results.join("judge.parquet")).expect("read");
        time(&format!("[{label}] build 4 tables"), || {
            for (_, t) in tables::build_all(&spec, Some(&eps), Some(&judge)) {
                t.expect("table");
            }
        });
        let out = dir.path().join(format!("{}_reports", label.replace(' ', "_")));
        // Two passes: the first includes font loading and cold caches.
        for pass in 1..=2 {
            time(&format!("[{label}] whole report, pass {pass}"), || {
                write_dir("bench", &spec, &results, &out).expect("report")
            });
        }
    }
}
