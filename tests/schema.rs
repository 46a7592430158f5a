//! #26: the result files as the Python stack reads them. A small MPO chain
//! (tiny local models, a scripted explorer behind the fake OpenAI server)
//! writes every table; then:
//!
//! - every Parquet file under the results dir (artifacts and collated) has
//!   signed integer columns only, and the declared columns with their
//!   declared types (`finished_at` a UTC timestamp, plans' `stage` and
//!   `split`);
//! - pandas (defaults), pyarrow and DuckDB read them: integers exact, seeds
//!   equal to the ones Rust reads, arithmetic on counts works
//!   (`tests/python/schema_check.py`, with `MPO_RUN_PYTHON`);
//! - an episode's `finished_at` is journaled: a node rebuilt from its
//!   journal keeps it;
//! - a results dir written before #26 (`UInt64` columns, no new columns)
//!   is still cached under the same keys and collates into today's schema;
//! - saved model dirs name a `pad_token_id`.

#[path = "support/fake_openai.rs"]
mod fake_openai;
#[path = "support/scripted.rs"]
mod scripted;
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{engine_python, run_bin, TestContext};
use fake_openai::{FakeOptions, FakeServer};
use mpo_run::report::collate;
use mpo_run::store::table::{self, read_parquet, read_rows, EpisodeRow, PlanRow, PROVENANCE};
use polars::prelude::*;
use serde_json::Value;

fn spec(explorer_url: &str) -> String {
    format!(
        r#"
[experiment]
name = "schema"
seed = 1
prompts = "compact"

[models.planner]
kind = "local"
init = {{ layers = 1, hidden = 32, heads = 2, kv_heads = 1, ff = 64, vocab_size = 300, tokenizer = "word_level" }}
max_tokens = 24

[models.explorer]
kind = "openai"
base_url = "{explorer_url}"
model = "scripted"

[models.agent]
kind = "local"
init = {{ layers = 1, hidden = 32, heads = 2, kv_heads = 1, ff = 64, vocab_size = 300, tokenizer = "word_level" }}
max_tokens = 16

[envs.household]
kind = "builtin"
max_steps = 30
tasks = {{ train = 6, seen = 2 }}

[planner]
model = "planner"
train_tasks = 4
max_tokens = 24

[mpo]
m = 3
n = 2
explorer = "explorer"

[train.sft]
epochs = 1
batch_size = 4
lr = 1e-3
[train.dpo]
epochs = 1
batch_size = 2
lr = 1e-3

[eval]
agents = ["agent"]
envs = ["household"]
splits = ["seen"]
planners = ["none", "mpo"]
insertion = ["instruction"]
"#
    )
}

/// Every `.parquet` file under `dir`.
fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(parquet_files(&p));
        } else if p.extension().is_some_and(|x| x == "parquet") {
            out.push(p);
        }
    }
    out.sort();
    out
}

fn table_of(path: &Path) -> String {
    path.file_stem().unwrap().to_string_lossy().to_string()
}

/// Asserts that every Parquet file under `results` has no unsigned column
/// and the declared columns of its table, with the declared types;
/// returns the tables seen.
fn assert_schemas(results: &Path) -> Vec<String> {
    let files = parquet_files(results);
    let mut tables: Vec<String> = Vec::new();
    for f in &files {
        let df = read_parquet(f).unwrap();
        for c in df.columns() {
            assert!(!c.dtype().is_unsigned_integer(), "{}: column `{}` is {}", f.display(), c.name(), c.dtype());
            if c.dtype().is_integer() {
                assert_eq!(c.dtype(), &DataType::Int64, "{}: `{}`", f.display(), c.name());
            }
        }
        let table = table_of(f);
        let cols = collate::columns(&table).unwrap_or_else(|| panic!("{}: an undeclared table", f.display()));
        let collated = !f.components().any(|c| c.as_os_str() == "artifacts");
        let expected: Vec<&table::Col> = if collated { PROVENANCE.iter().chain(cols).collect() } else { cols.iter().collect() };
        let names: Vec<&str> = df.columns().iter().map(|c| c.name().as_str()).collect();
        assert_eq!(names, expected.iter().map(|c| c.name).collect::<Vec<_>>(), "{}", f.display());
        for c in expected {
            assert_eq!(df.column(c.name).unwrap().dtype(), &c.ty.dtype(), "{}: `{}`", f.display(), c.name);
        }
        tables.push(table);
    }
    tables.sort();
    tables.dedup();
    tables
}

fn config(dir: &Path, file: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join(file)).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_result_file_reads_exactly_in_rust_pandas_pyarrow_and_duckdb() {
    let explorer = FakeServer::start(FakeOptions::default().responder(|m: &[mpo_run::model::Message]| {
        match scripted::plan_of(m) {
            Some(p) if p.trim().len() % 2 == 0 => scripted::expert_agent(m),
            _ => scripted::lazy_agent(m),
        }
    }))
    .await;
    let ctx = TestContext::new();
    ctx.write("schema.toml", &spec(&explorer.base_url()));
    let out = run_bin(&ctx, &["schema.toml"]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let results = ctx.path("results");

    // (a) Arrow schemas, in Rust.
    let tables = assert_schemas(&results);
    assert_eq!(tables, ["episodes", "pairs", "plans", "train_log"]);

    // The new columns hold what they say.
    let episodes: Vec<EpisodeRow> = read_rows(&results.join("schema/episodes.parquet")).unwrap();
    assert!(episodes.iter().all(|e| e.finished_at.is_some()), "every episode has its finish time");
    assert!(episodes.iter().any(|e| e.seed.is_some()) && episodes.iter().any(|e| e.seed.is_none()));
    let plans: Vec<PlanRow> = read_rows(&results.join("schema/plans.parquet")).unwrap();
    let mut made: BTreeMap<(String, Option<String>), usize> = BTreeMap::new();
    for p in &plans {
        *made.entry((p.stage.clone(), p.split.clone())).or_default() += 1;
    }
    let made: Vec<(&str, Option<&str>, usize)> = made.iter().map(|((s, p), n)| (s.as_str(), p.as_deref(), *n)).collect();
    assert_eq!(
        made,
        [("sample_plans", Some("train"), 4 * 3), ("seed_plans", Some("train"), 6), ("test_plans", Some("seen"), 2)],
        "plans say which stage made them, for which split"
    );
    assert!(plans.iter().filter(|p| p.stage == "sample_plans").all(|p| p.q.is_some()));

    // pad_token_id in every saved model dir (transformers' Trainer warns
    // and patches it otherwise).
    let mut model_dirs = 0;
    for stage in ["init_model", "sft", "dpo"] {
        for art in std::fs::read_dir(results.join("artifacts").join(stage)).unwrap().flatten() {
            let dir = art.path().join("model");
            let c = config(&dir, "config.json");
            let g = config(&dir, "generation_config.json");
            let pad = &c["pad_token_id"];
            assert!(pad.is_u64(), "{}: {c}", dir.display());
            assert_eq!(&g["pad_token_id"], pad, "{}", dir.display());
            let tok = config(&dir, "tokenizer_config.json");
            let pad_token = tok["pad_token"].as_str().expect("init models have a pad token");
            let vocab = config(&dir, "tokenizer.json");
            assert_eq!(vocab["model"]["vocab"][pad_token], *pad, "the tokenizer's pad token: {pad_token}");
            model_dirs += 1;
        }
    }
    assert!(model_dirs >= 3, "{model_dirs}");

    // (b) The Python stack, with the values Rust reads to compare.
    let expected = serde_json::json!({
        "collated": "schema",
        "seed": episodes.iter().map(|e| e.seed).collect::<Vec<_>>(),
        "finished_at": episodes.iter().map(|e| e.finished_at.map(|t| t.timestamp_micros())).collect::<Vec<_>>(),
        "steps": episodes.iter().map(|e| e.steps).collect::<Vec<_>>(),
    });
    let expected_path = ctx.path("expected.json");
    std::fs::write(&expected_path, expected.to_string()).unwrap();
    let python = engine_python("MPO_RUN_PYTHON");
    let out = Command::new(&python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/schema_check.py"))
        .arg(&results)
        .arg(&expected_path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["files"].as_u64().unwrap() as usize, parquet_files(&results).len(), "{report}");
    assert_eq!(report["seeds_compared"].as_u64().unwrap() as usize, episodes.iter().filter(|e| e.seed.is_some()).count());
    assert_eq!(report["seed_from_bits"], Value::from(u64::MAX), "the documented DuckDB expression");

    // finished_at is journaled: episodes rebuilt from the journal keep it.
    let mut removed = 0;
    for stage in ["expert", "mc_rollouts", "eval"] {
        let dir = results.join("artifacts").join(stage);
        removed += std::fs::read_dir(&dir).unwrap().count();
        std::fs::remove_dir_all(dir).unwrap();
    }
    let out = run_bin(&ctx, &["schema.toml"]).await;
    let e = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{e}");
    let ran: Vec<&str> = e.lines().filter(|l| l.contains("items computed")).collect();
    assert_eq!(ran.len(), removed, "the removed nodes ran again: {e}");
    assert!(ran.iter().all(|l| l.contains("(0 items computed")), "from their journals: {e}");
    let again: Vec<EpisodeRow> = read_rows(&results.join("schema/episodes.parquet")).unwrap();
    let key = |e: &EpisodeRow| (e.stage.clone(), e.planner.clone(), e.task_id.clone(), e.plan_id.clone(), e.rollout);
    let mut a: Vec<_> = episodes.iter().map(|e| (key(e), e.finished_at)).collect();
    let mut b: Vec<_> = again.iter().map(|e| (key(e), e.finished_at)).collect();
    a.sort();
    b.sort();
    assert_eq!(a, b, "the rebuilt episodes keep their journaled finish times");
}

/// Rewrites `path` as mpo-run wrote it before #26: `UInt64` integer
/// columns, no `finished_at`, no plans `stage`/`split`, no pandas metadata.
fn write_old_format(path: &Path) {
    let df = read_parquet(path).unwrap();
    let added: &[&str] = match table_of(path).as_str() {
        "episodes" => &["finished_at"],
        "plans" => &["stage", "split"],
        _ => &[],
    };
    let mut cols = Vec::new();
    for c in df.columns() {
        if added.contains(&c.name().as_str()) {
            continue;
        }
        cols.push(if c.dtype() == &DataType::Int64 { c.cast(&DataType::UInt64).unwrap() } else { c.clone() });
    }
    let mut old = DataFrame::new(df.height(), cols).unwrap();
    let file = std::fs::File::create(path).unwrap();
    ParquetWriter::new(&file).with_compression(ParquetCompression::Zstd(None)).finish(&mut old).unwrap();
}

/// Points an artifact's manifest at its rewritten files (as if they had
/// been written so), so the rewrite is not taken for corruption.
fn rehash(artifact: &Path) {
    let m = artifact.join("manifest.json");
    let mut manifest: Value = serde_json::from_str(&std::fs::read_to_string(&m).unwrap()).unwrap();
    if let Some(files) = manifest["files"].as_object_mut() {
        for (name, hash) in files.iter_mut() {
            *hash = Value::from(blake3::hash(&std::fs::read(artifact.join(name)).unwrap()).to_hex().to_string());
        }
    }
    std::fs::write(&m, serde_json::to_string_pretty(&manifest).unwrap()).unwrap();
}

/// A results dir from before #26 keeps its keys (every node cached) and
/// collates into today's schema: old rows get a null `finished_at`, old
/// plans the stage that made them and a null `split`.
#[test]
fn a_results_dir_written_before_signed_columns_is_cached_and_collates_to_the_new_schema() {
    let ctx = TestContext::new();
    let out = ctx.run(&["small.toml"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let results = ctx.path("results");
    let collated = results.join("small");
    let before_episodes: Vec<EpisodeRow> = read_rows(&collated.join("episodes.parquet")).unwrap();
    for f in parquet_files(&results.join("artifacts")) {
        write_old_format(&f);
        rehash(f.parent().unwrap());
    }
    for f in parquet_files(&collated) {
        write_old_format(&f);
    }
    let old = read_parquet(&results.join("small/episodes.parquet")).unwrap();
    assert_eq!(old.column("steps").unwrap().dtype(), &DataType::UInt64, "the rewrite is the old format");
    assert!(old.column("finished_at").is_err());

    // The old collated files still read as rows.
    let old_rows: Vec<EpisodeRow> = read_rows(&collated.join("episodes.parquet")).unwrap();
    assert_eq!(old_rows.len(), before_episodes.len());
    assert!(old_rows.iter().all(|r| r.finished_at.is_none()));

    let out = ctx.run(&["small.toml"]);
    let e = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{e}");
    assert!(e.contains("0 stages ran, 2 cached") && !e.contains("corrupt"), "same keys, nothing recomputed: {e}");
    assert_schemas(&collated);
    let rows: Vec<EpisodeRow> = read_rows(&collated.join("episodes.parquet")).unwrap();
    assert!(rows.iter().all(|r| r.finished_at.is_none()), "old episodes have no finish time");
    let strip = |r: &EpisodeRow| EpisodeRow { finished_at: None, ..r.clone() };
    assert_eq!(rows.iter().map(strip).collect::<Vec<_>>(), before_episodes.iter().map(strip).collect::<Vec<_>>());
    let plans: Vec<PlanRow> = read_rows(&collated.join("plans.parquet")).unwrap();
    assert!(!plans.is_empty());
    assert!(plans.iter().all(|p| p.stage == "seed_plans" && p.split.is_none()), "{:?}", plans[0]);
}

/// The report's fixture as the code before #26 wrote it (a copy of
/// `tests/fixtures/results/fixture/episodes.parquet` at that time): its
/// `UInt64` columns read as rows and conform to today's schema.
#[test]
fn an_episodes_file_written_before_signed_columns_conforms() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/old-schema/episodes.parquet");
    let df = read_parquet(&path).unwrap();
    assert_eq!(df.column("seed").unwrap().dtype(), &DataType::UInt64, "the fixture is the old format");
    let rows: Vec<EpisodeRow> = read_rows(&path).unwrap();
    assert!(!rows.is_empty() && rows.iter().all(|r| r.seed == Some(0) && r.finished_at.is_none()));
    let cols: Vec<table::Col> = PROVENANCE.iter().chain(table::EPISODES).copied().collect();
    let new = table::conform(&df, &cols).unwrap();
    for c in &cols {
        assert_eq!(new.column(c.name).unwrap().dtype(), &c.ty.dtype(), "`{}`", c.name);
    }
    let steps_old: Vec<u64> = df.column("steps").unwrap().u64().unwrap().iter().map(Option::unwrap).collect();
    let steps_new: Vec<u64> = new.column("steps").unwrap().i64().unwrap().iter().map(|v| v.unwrap() as u64).collect();
    assert_eq!(steps_old, steps_new);
}
