//! Upper limits of every count and size in a spec, and the rules of names
//! that become file names (#22).
//!
//! A limit is far above what a real experiment uses (the paper: M = N = 5,
//! a few thousand tasks, models of a few billion parameters) but far below
//! what exhausts memory: `mpo.m = 4294967295` once grew a dry run's memory
//! without end, and a huge `init.hidden` aborted a run on allocation. The
//! limits are listed in `docs/spec.md`; a change there changes them here.
//!
//! Names that become path components (the experiment, models, envs, report
//! tables and figures) use `[A-Za-z0-9_.-]`, do not start with `.`, and have
//! at most [`MAX_NAME_CHARS`] characters: a table named `"../x"` once wrote
//! outside `reports/`.

use super::validate::Errors;
use super::{EnvSpec, ModelSpec, Spec};

/// `mpo.m` (plans per task) and `mpo.n` (episodes per plan).
pub const MAX_M_N: u64 = 1_000;
/// Tasks: of a split (`envs.X.tasks`), and every "first K tasks" setting.
pub const MAX_TASKS: u64 = 1_000_000;
/// `max_steps` of an episode.
pub const MAX_STEPS: u64 = 10_000;
/// Requests or episodes in flight (`eval.concurrency`, `concurrency`,
/// `max_concurrency`).
pub const MAX_CONCURRENCY: u64 = 4_096;
/// ScienceWorld bridge workers.
pub const MAX_WORKERS: u64 = 1_024;
/// Replicas of one served model or env server (`base_urls`, `urls`).
pub const MAX_REPLICAS: u64 = 1_024;
/// Attempts and retries (`teacher_attempts`, `judge.attempts`,
/// `env_retries`, `max_retries`, `retries`).
pub const MAX_ATTEMPTS: u64 = 100;
/// `eval.random_baseline` episodes per task.
pub const MAX_RANDOM_BASELINE: u64 = 1_000;
/// Tokens of one generation (`max_tokens`).
pub const MAX_TOKENS: u64 = 1_000_000;
/// Sequences in one forward pass (`max_batch`) and a training's
/// `batch_size`/`micro_batch`.
pub const MAX_BATCH: u64 = 65_536;
/// `train.X.epochs`.
pub const MAX_EPOCHS: u64 = 10_000;
/// Tokens per example (`train.X.max_len`) and `init.max_position_embeddings`.
pub const MAX_LEN: u64 = 1_048_576;
/// `train.X.threads`.
pub const MAX_THREADS: u64 = 1_024;
/// A local model's prefix cache, in tokens.
pub const MAX_KV_CACHE_TOKENS: u64 = 100_000_000;
/// `init` shapes.
pub const MAX_VOCAB: u64 = 1_000_000;
pub const MAX_HIDDEN: u64 = 65_536;
pub const MAX_LAYERS: u64 = 1_024;
pub const MAX_HEADS: u64 = 1_024;
pub const MAX_FF: u64 = 1_048_576;
pub const MAX_HEAD_DIM: u64 = 4_096;
/// A figure's pixel width and height.
pub const MAX_FIGURE_PIXELS: u64 = 16_384;
/// A table's `decimals`.
pub const MAX_DECIMALS: u64 = 12;
/// Variants of one sweep.
pub const MAX_VARIANTS: u64 = 10_000;
/// A name that becomes a file name.
pub const MAX_NAME_CHARS: usize = 128;

/// Why `name` cannot be a file name, if it cannot.
pub fn name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("must not be empty".into());
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Some(format!("may have at most {MAX_NAME_CHARS} characters"));
    }
    if name.starts_with('.') {
        return Some("may not start with `.` (it names a file or folder)".into());
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')) {
        return Some("may use only letters, digits, `_`, `-` and `.` (it names a file or folder)".into());
    }
    None
}

fn name(e: &mut Errors<'_>, key: &str, value: &str) {
    if let Some(why) = name_problem(value) {
        e.bad(key, format!("\"{value}\""), &why);
    }
}

fn at_most(e: &mut Errors<'_>, key: &str, value: u64, max: u64) {
    if value > max {
        e.bad(key, value.to_string(), &format!("must be at most {max}"));
    }
}

/// Checks every limit and name of `spec`.
pub(super) fn check(spec: &Spec, e: &mut Errors<'_>) {
    name(e, "experiment.name", &spec.experiment.name);
    at_most(e, "experiment.env_retries", spec.experiment.env_retries.into(), MAX_ATTEMPTS);
    at_most(e, "mpo.m", spec.mpo.m.into(), MAX_M_N);
    at_most(e, "mpo.n", spec.mpo.n.into(), MAX_M_N);

    if let Some(p) = &spec.planner {
        at_most(e, "planner.teacher_attempts", p.teacher_attempts.into(), MAX_ATTEMPTS);
        at_most(e, "planner.max_tokens", p.max_tokens.into(), MAX_TOKENS);
        if let Some(k) = p.seed_tasks {
            at_most(e, "planner.seed_tasks", k as u64, MAX_TASKS);
        }
        if let Some(k) = p.train_tasks {
            at_most(e, "planner.train_tasks", k as u64, MAX_TASKS);
        }
    }
    if let Some(j) = &spec.judge {
        at_most(e, "judge.attempts", j.attempts.into(), MAX_ATTEMPTS);
        if let Some(k) = j.tasks {
            at_most(e, "judge.tasks", k as u64, MAX_TASKS);
        }
    }
    if let Some(a) = &spec.agent_sft {
        if let Some(k) = a.tasks {
            at_most(e, "agent_sft.tasks", k as u64, MAX_TASKS);
        }
    }
    if let Some(ev) = &spec.eval {
        if let Some(k) = ev.tasks {
            at_most(e, "eval.tasks", k as u64, MAX_TASKS);
        }
        if let Some(k) = ev.ablation_tasks {
            at_most(e, "eval.ablation_tasks", k as u64, MAX_TASKS);
        }
        at_most(e, "eval.concurrency", ev.concurrency as u64, MAX_CONCURRENCY);
        at_most(e, "eval.random_baseline", ev.random_baseline.into(), MAX_RANDOM_BASELINE);
    }
    for (stage, t) in [
        ("sft", &spec.train.sft),
        ("dpo", &spec.train.dpo),
        ("rft", &spec.train.rft),
        ("agent_sft", &spec.train.agent_sft),
    ] {
        let k = |field: &str| format!("train.{stage}.{field}");
        at_most(e, &k("epochs"), t.epochs.into(), MAX_EPOCHS);
        at_most(e, &k("batch_size"), t.batch_size as u64, MAX_BATCH);
        at_most(e, &k("micro_batch"), t.micro_batch as u64, MAX_BATCH);
        at_most(e, &k("max_len"), t.max_len as u64, MAX_LEN);
        if let Some(n) = t.threads {
            at_most(e, &k("threads"), n as u64, MAX_THREADS);
        }
    }

    for (ename, env) in &spec.envs {
        name(e, &format!("envs.{ename}"), ename);
        let k = |field: &str| format!("envs.{ename}.{field}");
        let (max_steps, tasks) = match env {
            EnvSpec::Builtin(b) => (Some(b.max_steps), &b.tasks),
            EnvSpec::Agentgym(a) => {
                at_most(e, &k("concurrency"), a.concurrency as u64, MAX_CONCURRENCY);
                at_most(e, &k("retries"), a.retries.into(), MAX_ATTEMPTS);
                at_most(e, &k("urls"), a.urls.len() as u64, MAX_REPLICAS);
                (a.max_steps, &a.tasks)
            }
            EnvSpec::Sciworld(s) => {
                at_most(e, &k("workers"), s.workers as u64, MAX_WORKERS);
                (s.max_steps, &s.tasks)
            }
        };
        if let Some(m) = max_steps {
            at_most(e, &k("max_steps"), m.into(), MAX_STEPS);
        }
        for (split, &n) in tasks {
            at_most(e, &k(&format!("tasks.{split}")), n as u64, MAX_TASKS);
        }
    }

    for (mname, model) in &spec.models {
        name(e, &format!("models.{mname}"), mname);
        let k = |field: &str| format!("models.{mname}.{field}");
        match model {
            ModelSpec::Openai(c) => {
                at_most(e, &k("max_concurrency"), c.max_concurrency.into(), MAX_CONCURRENCY);
                at_most(e, &k("max_retries"), c.max_retries.into(), MAX_ATTEMPTS);
                at_most(e, &k("max_tokens"), c.max_tokens.into(), MAX_TOKENS);
                at_most(e, &k("base_urls"), c.base_urls.len() as u64, MAX_REPLICAS);
            }
            ModelSpec::Local(c) => {
                at_most(e, &k("max_tokens"), c.max_tokens.into(), MAX_TOKENS);
                at_most(e, &k("max_batch"), c.max_batch as u64, MAX_BATCH);
                at_most(e, &k("top_k"), c.top_k as u64, MAX_VOCAB);
                at_most(e, &k("kv_cache_tokens"), c.kv_cache_tokens as u64, MAX_KV_CACHE_TOKENS);
                if let Some(init) = &c.init {
                    let before = e.count();
                    let k = |field: &str| format!("models.{mname}.init.{field}");
                    at_most(e, &k("vocab_size"), init.vocab_size as u64, MAX_VOCAB);
                    at_most(e, &k("hidden"), init.hidden as u64, MAX_HIDDEN);
                    at_most(e, &k("layers"), init.layers as u64, MAX_LAYERS);
                    at_most(e, &k("heads"), init.heads as u64, MAX_HEADS);
                    at_most(e, &k("kv_heads"), init.kv_heads as u64, MAX_HEADS);
                    at_most(e, &k("ff"), init.ff as u64, MAX_FF);
                    at_most(e, &k("head_dim"), init.head_dim() as u64, MAX_HEAD_DIM);
                    at_most(e, &k("max_position_embeddings"), init.max_position_embeddings as u64, MAX_LEN);
                    // Memory only for shapes within the limits (and the
                    // model's own checks, which run before this).
                    if e.count() == before && init.validate().is_ok() {
                        let trained = trained_by(spec, mname);
                        if let Some(msg) = memory_problem(init, trained, mem_total_bytes()) {
                            e.bad(&format!("models.{mname}.init"), shape(init), &msg);
                        }
                    }
                }
            }
        }
    }

    for (i, t) in spec.report.tables.iter().enumerate() {
        name(e, &format!("report.table[{i}].name"), &t.name);
        if let Some(d) = t.decimals {
            at_most(e, &format!("report.table[{i}].decimals"), d as u64, MAX_DECIMALS);
        }
    }
    for (i, f) in spec.report.figures.iter().enumerate() {
        name(e, &format!("report.figure[{i}].name"), &f.name);
        for (axis, px) in ["width", "height"].iter().zip(f.size) {
            if px == 0 || u64::from(px) > MAX_FIGURE_PIXELS {
                e.bad(
                    &format!("report.figure[{i}].size"),
                    format!("{:?}", f.size),
                    &format!("the {axis} must be between 1 and {MAX_FIGURE_PIXELS} pixels"),
                );
                break;
            }
        }
    }
}

/// `[A, B]`-style summary of an `init` shape, for the error's value.
fn shape(init: &crate::model::local::InitConfig) -> String {
    format!(
        "{{ layers = {}, hidden = {}, heads = {}, kv_heads = {}, ff = {}, vocab_size = {} }}",
        init.layers, init.hidden, init.heads, init.kv_heads, init.ff, init.vocab_size
    )
}

/// Which key trains model `name` in-process, if any (weights, gradients and
/// AdamW's two moments are then held at once).
fn trained_by(spec: &Spec, name: &str) -> Option<&'static str> {
    if spec.agent_sft.as_ref().is_some_and(|a| a.models.iter().any(|m| m == name)) {
        return Some("agent_sft.models");
    }
    let planner = spec.planner.as_ref();
    if planner.is_some_and(|p| p.model.as_deref() == Some(name) && p.checkpoint.is_none()) {
        return Some("planner.model");
    }
    None
}

/// Parameters of an `init` model: embeddings (and an untied LM head), and per
/// layer the attention projections, the SwiGLU MLP and two norms.
pub fn init_parameters(init: &crate::model::local::InitConfig) -> u128 {
    let (h, hd) = (init.hidden as u128, init.head_dim() as u128);
    let (heads, kv, ff, vocab) = (init.heads as u128, init.kv_heads as u128, init.ff as u128, init.vocab_size as u128);
    let attention = h * heads * hd * 2 + h * kv * hd * 2;
    let mlp = 3 * h * ff;
    let layer = attention + mlp + 2 * h;
    let embeddings = vocab * h * if init.tie_embeddings { 1 } else { 2 };
    embeddings + init.layers as u128 * layer + h
}

/// The machine's memory (`MemTotal` of `/proc/meminfo`), if known.
fn mem_total_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Why an `init` model does not fit in `mem_total` bytes, with the estimate.
pub fn memory_problem(
    init: &crate::model::local::InitConfig,
    trained: Option<&str>,
    mem_total: Option<u64>,
) -> Option<String> {
    let mem = mem_total? as f64;
    let params = init_parameters(init) as f64;
    let (bytes_per, what) = match trained {
        Some(_) => (16.0, "4 bytes each for f32 weights, gradients and AdamW's two moments"),
        None => (4.0, "4 bytes each for f32 weights"),
    };
    let need = params * bytes_per;
    if need <= mem {
        return None;
    }
    let gib = |b: f64| b / (1u64 << 30) as f64;
    let why = trained.map(|k| format!(", trained since `{k}` names it")).unwrap_or_default();
    Some(format!(
        "needs about {:.1} GiB ({:.2} billion parameters × {what}{why}) but this machine has {:.1} GiB (`MemTotal` in /proc/meminfo)",
        gib(need),
        params / 1e9,
        gib(mem)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn init(layers: usize, hidden: usize, ff: usize, vocab: usize) -> crate::model::local::InitConfig {
        toml::from_str(&format!(
            "layers = {layers}\nhidden = {hidden}\nheads = 4\nkv_heads = 4\nff = {ff}\nvocab_size = {vocab}"
        ))
        .unwrap()
    }

    #[test]
    fn names_that_are_not_paths() {
        assert_eq!(name_problem("table5"), None);
        assert_eq!(name_problem("qwen2.5-7b_x"), None);
        for bad in ["", "../x", "/abs", "a/b", ".hidden", "..", "a b", "a\\b", "é"] {
            assert!(name_problem(bad).is_some(), "{bad:?}");
        }
        assert!(name_problem(&"x".repeat(MAX_NAME_CHARS + 1)).is_some());
    }

    #[test]
    fn parameters_of_a_small_llama() {
        // 2 layers, hidden 64, 4 heads of 16, ff 128, vocab 300, tied.
        let p = init_parameters(&init(2, 64, 128, 300));
        let layer = 64 * 64 * 4 + 3 * 64 * 128 + 2 * 64;
        assert_eq!(p, (300 * 64 + 2 * layer + 64) as u128);
    }

    #[test]
    fn memory_estimate_names_the_sizes() {
        let big = init(64, 16_384, 65_536, 200_000);
        let gib8 = 8u64 << 30;
        let msg = memory_problem(&big, Some("agent_sft.models"), Some(gib8)).unwrap();
        assert!(msg.contains("GiB") && msg.contains("billion parameters") && msg.contains("agent_sft.models"), "{msg}");
        assert!(memory_problem(&init(2, 64, 128, 300), Some("planner.model"), Some(gib8)).is_none());
        assert!(memory_problem(&big, None, None).is_none(), "unknown memory: no check");
    }
}
