//! The external training engines (#23), run for real on the CPU: TRL under
//! `torchrun --nproc_per_node 2` (gloo) in a spec's DAG — trained, cached,
//! killed mid-training and resumed from TRL's checkpoint, loaded back by
//! mpo-run's local model and by transformers — the same objective as the
//! burn engine on the same examples, and LLaMA-Factory's job files accepted
//! by LLaMA-Factory's own data loader. DPO through TRL in the DAG too:
//! SFT → M plans → Monte Carlo rollouts (a scripted explorer behind the
//! fake OpenAI server, so that plans get different Q values whatever the
//! tiny fixture writes) → pairs → DPO under torchrun.
//!
//! The Python side is the pinned venvs of `python/setup.sh`, which
//! `.ci/run` creates and names in `MPO_RUN_PYTHON` / `MPO_RUN_LF_PYTHON`.

#[path = "support/fake_openai.rs"]
mod fake_openai;
#[path = "support/scripted.rs"]
mod scripted;
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{engine_python, processes_with, run_bin, wait_empty, TestContext};
use fake_openai::{FakeOptions, FakeServer};
use mpo_run::model::local::{LocalModel, LocalModelConfig};
use mpo_run::model::Message;
use mpo_run::train::dataset::{Completion, Dataset, Preference};
use mpo_run::train::engine::{self, Method, TrainJob, TrainOutcome};
use mpo_run::train::{Schedule, TrainConfig, TrainLogRow};
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-12)
}

/// A spec whose planner is the tiny Qwen2 fixture, trained by TRL on two
/// ranks: 8 seed plans (rule teacher), batch 2 = 1 per device × 2 ranks,
/// 2 epochs = 8 steps, a checkpoint every step.
fn spec(python: &str) -> String {
    format!(
        r#"
[experiment]
name = "engines"
seed = 3
prompts = "compact"

[models.planner]
kind = "local"
path = "{model}"
max_tokens = 16

[envs.household]
kind = "builtin"
max_steps = 30
tasks = {{ train = 8 }}

[planner]
teacher = "rule"
model = "planner"

[mpo]
explorer = "planner"

[train.sft]
engine = "trl"
launch = {{ nproc_per_node = 2, python = "{python}" }}
epochs = 2
batch_size = 2
micro_batch = 1
lr = 1e-3
max_len = 256
save_every = 1
"#,
        model = fixture("tiny-qwen2").display()
    )
}

fn sft_artifact(ctx: &TestContext) -> PathBuf {
    artifact(ctx, "sft")
}

fn artifact(ctx: &TestContext, stage: &str) -> PathBuf {
    let root = ctx.path(&format!("results/artifacts/{stage}"));
    let dirs: Vec<PathBuf> = std::fs::read_dir(&root).unwrap().flatten().map(|e| e.path()).filter(|p| p.join("manifest.json").exists()).collect();
    assert_eq!(dirs.len(), 1, "one {stage} artifact in {}", root.display());
    dirs[0].clone()
}

fn train_log(artifact: &Path) -> Vec<TrainLogRow> {
    mpo_run::store::table::read_rows(&artifact.join("train_log.parquet")).unwrap()
}

/// Every tensor of a safetensors file, as f32s.
fn weights(dir: &Path) -> Vec<(String, Vec<f32>)> {
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut v: Vec<(String, Vec<f32>)> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| (n, t.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn trl_trains_the_planner_under_torchrun_in_the_dag_and_resumes_after_a_kill() {
    let python = engine_python("MPO_RUN_PYTHON");
    // 1. An uninterrupted run.
    let ctx = TestContext::new();
    ctx.write("engines.toml", &spec(&python));
    let dry = ctx.run(&["engines.toml", "--only", "sft", "--dry-run"]);
    let dry_text = String::from_utf8_lossy(&dry.stdout);
    assert!(
        dry_text.contains("runs: ") && dry_text.contains("-m torch.distributed.run --nproc_per_node 2 --standalone") && dry_text.contains("trl_train.py"),
        "--dry-run prints the engine's command line:\n{dry_text}"
    );
    let out = ctx.run(&["engines.toml", "--only", "sft"]);
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let art = sft_artifact(&ctx);
    let log = train_log(&art);
    assert_eq!(log.iter().map(|r| r.step).collect::<Vec<_>>(), (1..=8).collect::<Vec<u64>>(), "8 seed plans, batch 2 (1 × 2 ranks), 2 epochs");
    assert!(log.iter().all(|r| r.loss.is_finite() && r.grad_norm.is_finite() && r.lr > 0.0), "{log:?}");
    assert!(log.iter().all(|r| r.finished_at.is_some()), "every computed step has its time (#26): {log:?}");
    let engine: Value = serde_json::from_slice(&std::fs::read(art.join("engine.json")).unwrap()).unwrap();
    assert_eq!(engine["engine"], "trl");
    assert!(engine["versions"]["trl"].is_string() && engine["versions"]["torch"].is_string(), "{engine}");
    let model = art.join("model");
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        assert!(model.join(f).exists(), "{f} in the trained dir");
    }
    // This test's own dir: the DPO test trains an SFT of its own meanwhile.
    let mine = ctx.path("results/train/sft").display().to_string();
    assert!(processes_with(&mine).is_empty(), "no engine process left: {:?}", processes_with(&mine));

    // 2. Cached: a rerun runs nothing.
    let again = ctx.run(&["engines.toml", "--only", "sft"]);
    assert!(again.status.success());
    let text = String::from_utf8_lossy(&again.stderr).to_string() + &String::from_utf8_lossy(&again.stdout);
    assert!(!text.contains("torch.distributed.run"), "a cached training is not launched again:\n{text}");

    // 3. The trained dir loads in mpo-run's local model and in
    // transformers, which score the same completion alike.
    let lm = LocalModel::load(&model, LocalModelConfig { path: Some(model.clone()), ..LocalModelConfig::default() }).unwrap();
    let prompt = lm.tokenizer.encode("Your task is to: put a mug in the drawer.").unwrap();
    let completion = lm.tokenizer.encode(" Step 1: go to the mug.").unwrap();
    let ours = lm.score(&[(prompt.clone(), completion.clone())])[0];
    let script = format!(
        "import torch, transformers, json\nm = transformers.AutoModelForCausalLM.from_pretrained({dir:?}, dtype=torch.float32)\np, c = {prompt:?}, {completion:?}\nids = torch.tensor([p + c])\nlp = torch.log_softmax(m(ids).logits[0, :-1].double(), -1)\nprint(json.dumps(float(sum(lp[len(p) - 1 + i, t] for i, t in enumerate(c)))))",
        dir = model.display().to_string()
    );
    let py = Command::new(&python).args(["-c", &script]).env("HF_HUB_OFFLINE", "1").output().unwrap();
    assert!(py.status.success(), "{}", String::from_utf8_lossy(&py.stderr));
    let theirs: f64 = String::from_utf8_lossy(&py.stdout).trim().parse().unwrap();
    assert!((ours - theirs).abs() < 1e-3 * theirs.abs().max(1.0), "log-prob of a completion: mpo-run {ours} vs transformers {theirs}");

    // 4. Killed mid-training (SIGKILL, no cleanup), then resumed from TRL's
    // checkpoint: no process is left behind, and the result is the
    // uninterrupted run's.
    let ctx2 = TestContext::new();
    ctx2.write("engines.toml", &spec(&python));
    let mut child = ctx2.command(&["engines.toml", "--only", "sft"]).env("MPO_RUN_TEST_STEP_DELAY", "1.5").spawn().unwrap();
    let train_dir = ctx2.path("results/train/sft");
    let start = Instant::now();
    let reached = loop {
        let ck = std::fs::read_dir(&train_dir).ok().and_then(|mut d| d.next()).and_then(|e| e.ok()).map(|e| e.path().join("checkpoint-3"));
        if ck.as_ref().is_some_and(|c| c.join("trainer_state.json").exists()) {
            break true;
        }
        if start.elapsed() > Duration::from_secs(240) || child.try_wait().unwrap().is_some() {
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(reached, "TRL wrote checkpoint-3 while mpo-run ran");
    child.kill().unwrap();
    child.wait().unwrap();
    let needle = train_dir.display().to_string();
    let left = wait_empty(Duration::from_secs(15), || processes_with(&needle));
    assert!(left.is_empty(), "the engine died with mpo-run: {left:?}");
    let resumed = ctx2.run(&["engines.toml", "--only", "sft", "-v"]);
    let text = String::from_utf8_lossy(&resumed.stderr).to_string() + &String::from_utf8_lossy(&resumed.stdout);
    assert!(resumed.status.success(), "{text}");
    let logfile: String = std::fs::read_dir(ctx2.path("results/runs"))
        .unwrap()
        .flatten()
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect();
    assert!(logfile.contains("resuming TRL from its checkpoint"), "the run log says it resumed:\n{logfile}");
    let art2 = sft_artifact(&ctx2);
    let log2 = train_log(&art2);
    assert_eq!(log2.iter().map(|r| r.step).collect::<Vec<_>>(), (1..=8).collect::<Vec<u64>>());
    // Rows read back from TRL's checkpoint have no time (its
    // trainer_state.json keeps none); the steps computed after the resume
    // have theirs, so the times are a suffix.
    let timed = log2.iter().position(|r| r.finished_at.is_some()).expect("steps computed after the resume have times");
    assert!(log2[timed..].iter().all(|r| r.finished_at.is_some()), "{log2:?}");
    for (a, b) in log.iter().zip(&log2) {
        assert!(rel(a.loss, b.loss) < 1e-4, "step {}: loss {} uninterrupted vs {} resumed", a.step, a.loss, b.loss);
    }
    let (w1, w2) = (weights(&model), weights(&art2.join("model")));
    assert_eq!(w1.len(), w2.len());
    for ((n, a), (_, b)) in w1.iter().zip(&w2) {
        let worst = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        assert!(worst < 1e-4, "`{n}` differs by {worst} between the uninterrupted and the resumed training");
    }
}

/// SFT and then DPO through TRL on two ranks, in the DAG: DPO trains on
/// the pairs that the Monte Carlo rollouts made, with the reference
/// log-probs TRL computed once, and its rows carry DPO's rewards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trl_trains_dpo_on_the_dags_pairs_under_torchrun() {
    let python = engine_python("MPO_RUN_PYTHON");
    // Succeeds exactly when the inserted plan has an even length.
    let explorer = FakeServer::start(FakeOptions::default().responder(|m: &[Message]| match scripted::plan_of(m) {
        Some(p) if p.trim().len() % 2 == 0 => scripted::expert_agent(m),
        _ => scripted::lazy_agent(m),
    }))
    .await;
    let ctx = TestContext::new();
    let spec = spec(&python).replace(
        "[mpo]\nexplorer = \"planner\"",
        &format!(
            "[models.explorer]\nkind = \"openai\"\nbase_url = \"{}\"\nmodel = \"scripted\"\n\n[mpo]\nm = 3\nn = 1\nexplorer = \"explorer\"\n\n[train.dpo]\nengine = \"trl\"\nlaunch = {{ nproc_per_node = 2, python = \"{python}\" }}\nepochs = 1\nbatch_size = 2\nmicro_batch = 1\nlr = 1e-3\nmax_len = 256",
            explorer.base_url()
        ),
    );
    assert!(spec.contains("[train.dpo]"));
    ctx.write("engines.toml", &spec);
    let out = run_bin(&ctx, &["engines.toml", "--only", "dpo"]).await;
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));

    let pairs: Value = serde_json::from_slice(&std::fs::read(artifact(&ctx, "pairs").join("summary.json")).unwrap()).unwrap();
    let n_pairs = pairs["pairs"].as_u64().unwrap();
    assert!(n_pairs > 0, "the scripted explorer separates plans: {pairs}");
    let dpo = artifact(&ctx, "dpo");
    let engine: Value = serde_json::from_slice(&std::fs::read(dpo.join("engine.json")).unwrap()).unwrap();
    assert_eq!(engine["engine"], "trl", "{engine}");
    assert!(engine["command"].as_str().unwrap_or_default().contains("--nproc_per_node 2"), "{engine}");
    let reference = std::fs::read_to_string(dpo.join("reference_logps.jsonl")).unwrap();
    assert_eq!(reference.lines().count() as u64, n_pairs, "one reference pair of log-probs per preference pair");
    let log = train_log(&dpo);
    assert_eq!(log.len() as u64, n_pairs.div_ceil(2), "batch 2 = 1 per rank × 2 ranks, 1 epoch");
    assert!(log.iter().all(|r| r.stage == "dpo" && r.loss.is_finite() && r.margin.is_some() && r.reward_accuracy.is_some()), "{log:?}");
    let lm = LocalModel::load(&dpo.join("model"), LocalModelConfig { path: Some(dpo.join("model")), ..LocalModelConfig::default() }).unwrap();
    assert!(lm.tokenizer.encode("Step one").is_ok());
    let mine = ctx.path("results/train/dpo").display().to_string();
    assert!(processes_with(&mine).is_empty(), "no engine process left: {:?}", processes_with(&mine));
}

fn job(engine_name: &str, dataset: Dataset, method: Method, dir: &Path, python: &str) -> TrainJob {
    let mut cfg = TrainConfig {
        lr: 1e-3,
        epochs: 3,
        batch_size: 2,
        micro_batch: 2,
        shuffle: false,
        schedule: Schedule::Constant,
        max_grad_norm: None,
        weight_decay: 0.0,
        engine: engine_name.into(),
        ..TrainConfig::default()
    };
    cfg.launch.python = Some(python.into());
    let base = fixture("tiny-qwen2");
    TrainJob {
        stage: engine_name.into(),
        base_dir: base.clone(),
        base_settings: LocalModelConfig { path: Some(base), ..LocalModelConfig::default() },
        dataset,
        method,
        config: cfg,
        out_dir: dir.join("out"),
        checkpoint_dir: dir.join("work"),
        reference_scores: dir.join("reference.jsonl"),
        fingerprint: format!("{engine_name}-parity"),
        progress: None,
    }
}

fn run(engine_name: &str, dataset: Dataset, method: Method, python: &str) -> TrainOutcome {
    let dir = tempfile::tempdir().unwrap();
    let e = engine::engine(engine_name).unwrap();
    e.train(job(engine_name, dataset, method, dir.path(), python)).unwrap()
}

/// Texts without a digit after a space: transformers 5 tokenizes the tiny
/// Qwen2 fixture with Qwen2's own pre-tokenizer (digits split one by one),
/// not its `tokenizer.json`'s plain byte-level one that mpo-run (and the
/// `tokenizers` library) read, so ` 1` is one token here and two there.
/// Real Qwen2 checkpoints carry the split in `tokenizer.json`.
fn completions() -> Vec<Completion> {
    vec![
        Completion { task_id: "a".into(), prompt: "Your task is to: put a clean mug in the coffeemachine.".into(), completion: "Step one: find a mug.\nStep two: clean it with the sinkbasin.".into() },
        Completion { task_id: "b".into(), prompt: "Your task is to: heat an egg and put it in the fridge.".into(), completion: "Step one: take the egg.\nStep two: heat it with the microwave.\nStep three: put it in the fridge.".into() },
    ]
}

/// The same examples, the same hyper-parameters: TRL's per-step loss,
/// gradient norm and (DPO) rewards and reference log-probs are the burn
/// engine's, within the fixtures' tolerances (losses 1e-5 relative,
/// gradient norms 1e-4; steps after the first add AdamW's float noise).
#[test]
fn trl_and_burn_optimise_the_same_objective() {
    let python = engine_python("MPO_RUN_PYTHON");
    let data = Dataset::Completions(completions());
    let burn = run("burn", data.clone(), Method::Sft, &python);
    let trl = run("trl", data, Method::Sft, &python);
    assert_eq!(burn.log.len(), 3);
    assert_eq!(trl.log.len(), 3, "{:?}", trl.log);
    assert!(rel(trl.log[0].loss, burn.log[0].loss) < 1e-5, "SFT first-step loss: trl {} vs burn {}", trl.log[0].loss, burn.log[0].loss);
    assert!(rel(trl.log[0].grad_norm, burn.log[0].grad_norm) < 1e-4, "SFT grad norm: trl {} vs burn {}", trl.log[0].grad_norm, burn.log[0].grad_norm);
    for (t, b) in trl.log.iter().zip(&burn.log).skip(1) {
        assert!(rel(t.loss, b.loss) < 1e-4, "SFT step {}: trl {} vs burn {}", t.step, t.loss, b.loss);
    }

    let c = completions();
    let prefs = vec![
        Preference { task_id: "a".into(), prompt: c[0].prompt.clone(), chosen: c[0].completion.clone(), rejected: "Step one: go to the fridge.".into(), chosen_q: None, rejected_q: None },
        Preference { task_id: "b".into(), prompt: c[1].prompt.clone(), chosen: c[1].completion.clone(), rejected: "Step one: look around.\nStep two: take a mug.".into(), chosen_q: None, rejected_q: None },
    ];
    let data = Dataset::Preferences(prefs);
    let burn = run("burn", data.clone(), Method::Dpo { beta: 0.1 }, &python);
    let trl = run("trl", data, Method::Dpo { beta: 0.1 }, &python);
    assert_eq!(trl.reference.len(), 2);
    for (t, b) in trl.reference.iter().zip(&burn.reference) {
        assert!(rel(t.0, b.0) < 1e-4 && rel(t.1, b.1) < 1e-4, "reference log-probs: trl {t:?} vs burn {b:?}");
    }
    assert_eq!(trl.log.len(), 3);
    assert!(rel(trl.log[0].loss, burn.log[0].loss) < 1e-5, "DPO first-step loss: trl {} vs burn {}", trl.log[0].loss, burn.log[0].loss);
    assert!(rel(trl.log[0].grad_norm, burn.log[0].grad_norm) < 1e-4, "DPO grad norm: trl {} vs burn {}", trl.log[0].grad_norm, burn.log[0].grad_norm);
    for (t, b) in trl.log.iter().zip(&burn.log).skip(1) {
        assert!(rel(t.loss, b.loss) < 1e-4, "DPO step {}: loss trl {} vs burn {}", t.step, t.loss, b.loss);
        let (tc, bc) = (t.chosen_reward.unwrap(), b.chosen_reward.unwrap());
        assert!((tc - bc).abs() < 1e-4 * bc.abs().max(1e-2), "DPO step {}: chosen reward trl {tc} vs burn {bc}", t.step);
        let (tm, bm) = (t.margin.unwrap(), b.margin.unwrap());
        assert!((tm - bm).abs() < 1e-4 * bm.abs().max(1e-2), "DPO step {}: margin trl {tm} vs burn {bm}", t.step);
        assert_eq!(t.reward_accuracy, b.reward_accuracy, "step {}", t.step);
    }
}

/// The TRL export (conversational) goes through `datasets` and TRL's own
/// chat-template step, and the text TRL would train on is the text mpo-run
/// trains on for the same example.
#[test]
fn trl_exports_render_to_mpo_runs_training_text() {
    let python = engine_python("MPO_RUN_PYTHON");
    let dir = tempfile::tempdir().unwrap();
    let c = completions();
    let sft = mpo_run::train::dataset::trl_sft(&c);
    let prefs = vec![Preference {
        task_id: "a".into(),
        prompt: c[0].prompt.clone(),
        chosen: c[0].completion.clone(),
        rejected: "Step one: go.".into(),
        chosen_q: Some(0.8),
        rejected_q: Some(0.1),
    }];
    let dpo = mpo_run::train::dataset::trl_dpo(&prefs);
    mpo_run::train::dataset::write_json_lines(&dir.path().join("trl_seed_sft.jsonl"), &sft).unwrap();
    mpo_run::train::dataset::write_json_lines(&dir.path().join("trl_dpo.jsonl"), &dpo).unwrap();
    assert_eq!(dpo[0]["task_id"], "a");
    assert_eq!(dpo[0]["chosen_q"], 0.8);

    let model = fixture("tiny-qwen2");
    let lm = LocalModel::load(&model, LocalModelConfig { path: Some(model.clone()), ..LocalModelConfig::default() }).unwrap();
    // mpo-run's own training text: the rendered conversation.
    let ours_sft = lm.tokenizer.render(&[Message::user(c[0].prompt.clone()), Message::assistant(c[0].completion.clone())], false).unwrap();
    let ours_prompt = lm.tokenizer.render(&[Message::user(c[0].prompt.clone())], true).unwrap();
    let out = Command::new(&python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/trl_dataset_check.py"))
        .arg(&model)
        .arg(dir.path())
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_DATASETS_CACHE", dir.path().join("hf"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["sft_text"].as_str().unwrap(), ours_sft, "TRL's rendered SFT text");
    assert_eq!(v["dpo_prompt"].as_str().unwrap(), ours_prompt, "TRL's rendered DPO prompt");
    let chosen_full = format!("{}{}", v["dpo_prompt"].as_str().unwrap(), v["dpo_chosen"].as_str().unwrap());
    assert_eq!(chosen_full, ours_sft, "TRL's prompt + chosen is mpo-run's conversation");
    assert_eq!(v["sft_columns"], serde_json::json!(["messages", "task_id"]));
}

/// LLaMA-Factory: the job's files (snapshot) and LLaMA-Factory's own data
/// loader reading them with the model's tokenizer: every example loads,
/// with its prompt masked.
#[test]
fn llamafactory_job_files_are_read_by_its_own_loader() {
    use mpo_run::train::external::llamafactory;
    let python = engine_python("MPO_RUN_LF_PYTHON");
    for (name, dataset, method) in [
        ("sft", Dataset::Completions(completions()), Method::Sft),
        (
            "dpo",
            Dataset::Preferences(vec![Preference {
                task_id: "a".into(),
                prompt: completions()[0].prompt.clone(),
                chosen: completions()[0].completion.clone(),
                rejected: "Step one: go.".into(),
                chosen_q: Some(1.0),
                rejected_q: Some(0.0),
            }]),
            Method::Dpo { beta: 0.1 },
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut j = job("llamafactory", dataset.clone(), method, dir.path(), &python);
        j.config.shuffle = true;
        j.config.warmup_ratio = 0.03;
        j.config.schedule = Schedule::Cosine;
        let work = dir.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        llamafactory::write_job(&j, &work).unwrap();
        let filtered = |f: &str| {
            std::fs::read_to_string(work.join(f)).unwrap().replace(&dir.path().display().to_string(), "[TEMP]").replace(&fixture("").display().to_string(), "[FIXTURES]/")
        };
        insta::assert_snapshot!(format!("llamafactory_{name}_yaml"), filtered("train.yaml"));
        insta::assert_snapshot!(format!("llamafactory_{name}_dataset"), format!("{}\n--- dataset_info.json ---\n{}", filtered("mpo_train.json"), filtered("dataset_info.json")));
        let out = Command::new(&python)
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/lf_dataset_check.py"))
            .arg(work.join("train.yaml"))
            .env("HF_HUB_OFFLINE", "1")
            .env("DISABLE_VERSION_CHECK", "1")
            .env("HF_DATASETS_CACHE", dir.path().join("hf"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{name}: LLaMA-Factory's loader: {}", String::from_utf8_lossy(&out.stderr));
        let v: Value = serde_json::from_slice(out.stdout.split(|&b| b == b'\n').rfind(|l| l.starts_with(b"{")).unwrap()).unwrap();
        assert_eq!(v["rows"].as_u64().unwrap() as usize, dataset.len(), "{name}: {v}");
        assert!(v["masked_prompt_tokens"].as_u64().unwrap() > 0 && v["trained_tokens"].as_u64().unwrap() > 0, "{name}: {v}");
    }
}

/// A researcher's bad input: a GPU count that does not divide the batch
/// (a plan-time error naming the file and key), a missing base model dir.
#[test]
fn bad_engine_settings_are_clear_errors() {
    let ctx = TestContext::new();
    let bad = spec("python3").replace("launch = { nproc_per_node = 2", "launch = { nproc_per_node = 3");
    ctx.write("bad.toml", &bad);
    let out = ctx.run(&["bad.toml", "--dry-run"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("bad.toml") && err.contains("train.sft") && err.contains("batch_size = 2") && err.contains("nproc_per_node 3"), "{err}");

    let burn_launch = spec("python3").replace("engine = \"trl\"\n", "");
    ctx.write("burn.toml", &burn_launch);
    let out = ctx.run(&["burn.toml", "--dry-run"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("launch") && err.contains("in-process"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let mut j = job("trl", Dataset::Completions(completions()), Method::Sft, dir.path(), &engine_python("MPO_RUN_PYTHON"));
    j.base_dir = dir.path().join("no-such-model");
    let e = engine::engine("trl").unwrap().train(j).unwrap_err().to_string();
    assert!(e.contains("no-such-model"), "{e}");
}
