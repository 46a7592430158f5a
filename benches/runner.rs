//! Runner overheads: Parquet write/read of the `episodes` table, and the
//! executor's per-item cost (journal append + bookkeeping) on 10,000
//! trivial items, fresh and fully reused.
//!
//! `cargo bench --bench runner` (quick mode: `MPO_BENCH_QUICK=1`, or
//! `cargo test --release --bench runner`).

mod common;

use std::sync::Arc;
use std::time::Instant;

use mpo_run::stage::NodeCtx;
use mpo_run::store::table::{read_rows, write_rows, EpisodeRow, EPISODES};
use mpo_run::store::Store;

fn row(i: usize) -> EpisodeRow {
    EpisodeRow {
        stage: "eval".into(),
        env: "household".into(),
        split: if i % 2 == 0 { "seen".into() } else { "unseen".into() },
        task_id: format!("seen/{:04}", i % 140),
        task_type: "pick_and_place".into(),
        agent: format!("agent{}", i % 5),
        planner: ["none", "sft", "mpo"][i % 3].into(),
        insertion: "instruction".into(),
        plan_id: Some(format!("p{i}")),
        rollout: (i % 5) as u64,
        seed: Some(i as u64),
        temperature: 0.0,
        reward: (i % 2) as f64,
        success: i % 2 == 1,
        steps: (i % 30) as u64,
        finish_reason: "success".into(),
        prompt_tokens: 1000 + i as u64,
        completion_tokens: 100,
        wall_ms: 5,
        finished_at: None,
        plan: Some("Step 1: Go to where the mug may be placed.\nStep 2: Take the mug.".into()),
        messages: "[{\"role\":\"user\",\"content\":\"...\"}]".into(),
    }
}

fn main() {
    let mut figures = common::Figures::start("runner", None);
    let quick = figures.quick();
    let n = if quick { 2_000 } else { 200_000 };
    let dir = tempfile::tempdir().unwrap();
    let rows: Vec<EpisodeRow> = (0..n).map(row).collect();
    let path = dir.path().join("episodes.parquet");
    let t = Instant::now();
    write_rows(&path, EPISODES, &rows).unwrap();
    let w = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let back: Vec<EpisodeRow> = read_rows(&path).unwrap();
    let r = t.elapsed().as_secs_f64();
    assert_eq!(back.len(), n);
    let mb = std::fs::metadata(&path).unwrap().len() as f64 / 1e6;
    println!("parquet episodes: write {:.0} rows/s, read (typed rows) {:.0} rows/s ({n} rows, {mb:.1} MB)", n as f64 / w, n as f64 / r);
    let detail = format!("episodes table, {n} rows, {mb:.1} MB");
    figures.record("parquet write", n as f64 / w, "rows/s", &detail);
    figures.record("parquet read (typed rows)", n as f64 / r, "rows/s", &detail);

    let items = if quick { 1_000 } else { 10_000 };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let store = Store::open(dir.path().join("results")).unwrap();
    let ctx = NodeCtx {
        store: store.clone(),
        stage: "bench",
        key: "bench".into(),
        label: "bench".into(),
        inputs: vec![],
        progress: indicatif::ProgressBar::hidden(),
        force: false,
        models: Arc::new(Default::default()),
        envs: Arc::new(Default::default()),
        shard: None,
        journal: "bench",
        served: Default::default(),
    };
    for pass in ["fresh", "reused"] {
        let list: Vec<(String, usize)> = (0..items).map(|i| (format!("item-{i}"), i)).collect();
        let t = Instant::now();
        let out = rt
            .block_on(ctx.run_items(list, 64, |i| async move { Ok(serde_json::json!({ "i": i })) }))
            .unwrap();
        let s = t.elapsed().as_secs_f64();
        println!(
            "executor, {pass}: {items} trivial items in {:.3}s = {:.1} µs/item ({} computed, {} reused)",
            s,
            s * 1e6 / items as f64,
            out.computed,
            out.reused
        );
        figures.record(&format!("executor per item, {pass}"), s * 1e6 / items as f64, "µs/item", &format!("{items} trivial items, 64 in flight"));
    }
}
