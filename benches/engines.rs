//! The training engines side by side on the CPU: the same planner SFT job
//! (the quickstart planner's shape: 2 layers, 128 wide, a 2,000-token BPE
//! vocabulary; planner-like prompts and plans) through the in-process burn
//! engine and through TRL (one process under torchrun, the pinned venv of
//! `python/setup.sh`, found through `MPO_RUN_PYTHON`), with the same
//! hyper-parameters. Figures per engine: the whole call (TRL's includes
//! starting Python and torch, loading the model and tokenizing), and the
//! steady training rate from the engines' own per-step tokens/s (median
//! over the steps after the first; both count the non-padding tokens of
//! prompt and reply); then burn ÷ TRL for each.
//!
//! `cargo bench --bench engines`; quick mode (CI: `cargo test --release`)
//! trains 2 steps. Without `MPO_RUN_PYTHON` only burn runs.

mod common;

use std::path::Path;
use std::time::Instant;

use mpo_run::model::local::{init_model, LocalModelConfig};
use mpo_run::train::dataset::{Completion, Dataset};
use mpo_run::train::engine::{self, Method, TrainJob, TrainOutcome};
use mpo_run::train::{Schedule, TrainConfig};

const OBJECTS: [&str; 8] = ["mug", "apple", "knife", "egg", "plate", "cloth", "pen", "book"];
const PLACES: [&str; 8] = ["countertop", "drawer", "fridge", "cabinet", "shelf", "desk", "sinkbasin", "microwave"];

/// Planner prompts and plans in the built-in world's words (about 150
/// tokens each after the chat template).
fn completions(n: usize) -> Vec<Completion> {
    (0..n)
        .map(|i| {
            let (o, p, q) = (OBJECTS[i % 8], PLACES[i % 8], PLACES[(i / 8 + 3) % 8]);
            Completion {
                task_id: format!("t{i}"),
                prompt: format!("You are a planner. Write the steps to finish the task in this household. Your task is to: put a clean {o} in the {q}."),
                completion: format!(
                    "Step one: look for the {o}; check the {p} first, then the {q}.\nStep two: take the {o} from where it is.\nStep three: go to the sinkbasin and clean the {o} with it.\nStep four: go to the {q}, open it if it is closed, and put the {o} in it."
                ),
            }
        })
        .collect()
}

fn job(engine_name: &str, base: &Path, data: &Dataset, dir: &Path, python: Option<&str>) -> TrainJob {
    let mut config = TrainConfig {
        lr: 1e-4,
        epochs: 1,
        batch_size: 16,
        micro_batch: 8,
        shuffle: false,
        schedule: Schedule::Constant,
        engine: engine_name.into(),
        ..TrainConfig::default()
    };
    config.launch.python = python.map(str::to_string);
    TrainJob {
        stage: format!("bench-{engine_name}"),
        base_dir: base.to_path_buf(),
        base_settings: LocalModelConfig { path: Some(base.to_path_buf()), ..LocalModelConfig::default() },
        dataset: data.clone(),
        method: Method::Sft,
        config,
        out_dir: dir.join(format!("{engine_name}-out")),
        checkpoint_dir: dir.join(format!("{engine_name}-work")),
        reference_scores: dir.join(format!("{engine_name}-reference.jsonl")),
        fingerprint: format!("bench-{engine_name}"),
        progress: None,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// (whole call in seconds, steady tokens/s).
fn run(f: &mut common::Figures, engine_name: &str, base: &Path, data: &Dataset, dir: &Path, python: Option<&str>) -> (f64, f64) {
    let t = Instant::now();
    let out: TrainOutcome = engine::engine(engine_name).unwrap().train(job(engine_name, base, data, dir, python)).expect("train");
    let secs = t.elapsed().as_secs_f64();
    let rates: Vec<f64> = out.log.iter().skip(1).map(|r| r.tokens_per_s).filter(|r| r.is_finite() && *r > 0.0).collect();
    let steady = if rates.is_empty() { f64::NAN } else { median(rates) };
    println!("{engine_name:<6} {:>3} steps  {secs:>7.2} s whole call  {steady:>9.0} tokens/s steady", out.log.len());
    let detail = format!("planner SFT, {} examples, batch 16 (8 × 2 accumulation), 1 process, quickstart planner shape", data.len());
    f.record(&format!("{engine_name} whole call"), secs, "s", &detail);
    f.record(&format!("{engine_name} steady"), steady, "tokens/s", &detail);
    (secs, steady)
}

fn main() {
    let mut figures = common::Figures::start("engines", None);
    let quick = figures.quick();
    let f = &mut figures;
    let dir = tempfile::tempdir().unwrap();
    let steps = if quick { 2 } else { 24 };
    let data = Dataset::Completions(completions(16 * steps));

    let corpus: Vec<String> = completions(64).into_iter().flat_map(|c| [c.prompt, c.completion]).collect();
    let cfg = common::init_config(2, 128, 4, 2, 512, 2000);
    let base = dir.path().join("base");
    init_model(&cfg, &corpus, 1).expect("init").save(&base).expect("save");

    println!("planner SFT, {} optimizer steps, burn (in-process) vs TRL (torchrun, 1 process)", steps);
    let (burn_secs, burn_rate) = run(f, "burn", &base, &data, dir.path(), None);
    let Some(python) = std::env::var("MPO_RUN_PYTHON").ok().filter(|p| !p.is_empty()) else {
        f.skipped("TRL: MPO_RUN_PYTHON is not set (`export MPO_RUN_PYTHON=$(bash python/setup.sh)`)");
        return;
    };
    let (trl_secs, trl_rate) = run(f, "trl", &base, &data, dir.path(), Some(&python));
    println!("burn ÷ TRL: {:.2}× the whole call's speed, {:.2}× the steady rate", trl_secs / burn_secs, burn_rate / trl_rate);
    let detail = "same job and hyper-parameters, one run; above 1: burn is faster";
    f.record("burn/trl whole-call speed", trl_secs / burn_secs, "ratio", detail);
    f.record("burn/trl steady rate", burn_rate / trl_rate, "ratio", detail);
}
