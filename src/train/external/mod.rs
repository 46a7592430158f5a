//! External training engines: TRL ([`trl`]) and LLaMA-Factory
//! ([`llamafactory`]) run as a supervised process group under torchrun or
//! accelerate, with DeepSpeed ZeRO or FSDP where the spec asks for them.
//!
//! What they share lives here: the launch settings (`[train.X.launch]`,
//! [`Launch`]), the split of the effective batch into per-device batch ×
//! gradient accumulation × world size, the launcher's command line (the
//! same one `--dry-run` prints), the probe of the Python side (package
//! versions, or the install command when one is missing), and the
//! supervisor: the engine's lines go to the run log, its per-step metrics
//! become `train_log` rows and move the progress bar, a failure ends the
//! stage with the engine's last lines, and neither Ctrl-C nor a SIGKILL of
//! mpo-run leaves a process behind (the launcher dies with the thread that
//! started it through `PR_SET_PDEATHSIG`; every rank's driver watches
//! mpo-run's pid and kills the whole process group once it is gone).
//!
//! A killed training resumes from the engine's last checkpoint (Hugging
//! Face `checkpoint-N` directories under the job's checkpoint dir, kept
//! only for the job of the same fingerprint).

pub mod llamafactory;
pub mod trl;

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::engine::TrainJob;
use super::{Schedule, TrainConfig, TrainLogRow};

/// How to install `engine`'s pinned Python side: `bash python/setup.sh
/// [llamafactory]` creates the venv and prints its python; `.ci/run`
/// exports them as `MPO_RUN_PYTHON` and `MPO_RUN_LF_PYTHON`.
pub fn install_hint(engine: &str) -> String {
    let (arg, var) = if engine == llamafactory::NAME { (" llamafactory", "MPO_RUN_LF_PYTHON") } else { ("", "MPO_RUN_PYTHON") };
    format!("install the pinned engine with `bash python/setup.sh{arg}` (a venv under ~/.cache/mpo-run; it prints the python to use, which mpo-run takes from `{var}` or `[train.X.launch] python`)")
}

/// What the drivers share (the watchdog, the progress reports), written
/// next to them.
pub const COMMON: &str = include_str!("../../../python/engine_common.py");
pub const COMMON_FILE: &str = "engine_common.py";

/// Lines of an engine's output kept for an error message.
const TAIL: usize = 40;

/// The prefix of the drivers' machine-readable lines.
const EVENT: &str = "@@mpo-run ";

/// The process launcher.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Launcher {
    /// `python -m torch.distributed.run` (torchrun).
    #[default]
    Torchrun,
    /// `python -m accelerate.commands.launch` (accelerate launch).
    Accelerate,
}

/// DeepSpeed's ZeRO stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Zero {
    Zero2,
    Zero3,
}

fn one() -> usize {
    1
}
fn is_one(n: &usize) -> bool {
    *n == 1
}
fn is_false(b: &bool) -> bool {
    !*b
}

/// `[train.X.launch]`: how an external engine is started. Everything but
/// `python` (where the engine is installed, not what it computes) is part
/// of the stage's key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Launch {
    #[serde(default)]
    pub launcher: Launcher,
    /// Processes (GPUs) per node.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub nproc_per_node: usize,
    /// Nodes; with more than one the rendezvous comes from the environment
    /// (`MASTER_ADDR`/`MASTER_PORT`, or the first host of Slurm's
    /// `SLURM_JOB_NODELIST`).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub nnodes: usize,
    /// DeepSpeed ZeRO-2 or ZeRO-3 (a config with `auto` values written
    /// next to the job).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deepspeed: Option<Zero>,
    /// PyTorch FSDP (`full_shard auto_wrap`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub fsdp: bool,
    /// The Python the engine is installed for (default: see
    /// [`Launch::python`]). Not in the key.
    #[serde(default, skip_serializing)]
    pub python: Option<String>,
    /// LLaMA-Factory's prompt template (`llama3`, `qwen`, …); default: from
    /// the base model's `model_type`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// Extra launcher arguments, placed before the script.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_args: Vec<String>,
}

impl Default for Launch {
    fn default() -> Self {
        Launch { launcher: Launcher::Torchrun, nproc_per_node: 1, nnodes: 1, deepspeed: None, fsdp: false, python: None, template: None, extra_args: Vec::new() }
    }
}

impl Launch {
    /// The default launch, `python` aside (it is not in the key).
    pub fn is_default(&self) -> bool {
        &Launch { python: None, ..self.clone() } == &Launch::default()
    }

    pub fn world_size(&self) -> usize {
        self.nproc_per_node * self.nnodes
    }

    /// The Python `engine` runs with: `python`, else the environment's
    /// `MPO_RUN_LF_PYTHON` (LLaMA-Factory, which pins older transformers
    /// and TRL and so has a venv of its own) or `MPO_RUN_PYTHON`, else
    /// `python3`.
    pub fn python(&self, engine: &str) -> String {
        let var = |k: &str| std::env::var(k).ok().filter(|p| !p.is_empty());
        let from_env = if engine == llamafactory::NAME { var("MPO_RUN_LF_PYTHON").or_else(|| var("MPO_RUN_PYTHON")) } else { var("MPO_RUN_PYTHON") };
        self.python.clone().or(from_env).unwrap_or_else(|| "python3".into())
    }
}

/// The effective batch as the engines take it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchSplit {
    pub per_device: usize,
    pub grad_accum: usize,
    pub world: usize,
}

/// `batch_size = micro_batch × gradient accumulation × world size`, or an
/// error that names the keys.
pub fn batch_split(cfg: &TrainConfig) -> Result<BatchSplit, String> {
    let world = cfg.launch.world_size();
    let per_step = cfg.micro_batch * world;
    if cfg.batch_size % per_step != 0 {
        return Err(format!(
            "batch_size = {} is not a multiple of micro_batch × world size = {} × {} (nproc_per_node {} × nnodes {}): the engine takes the effective batch as per-device batch × gradient accumulation × world size; choose batch_size, micro_batch or launch.nproc_per_node so that it divides",
            cfg.batch_size, cfg.micro_batch, world, cfg.launch.nproc_per_node, cfg.launch.nnodes
        ));
    }
    Ok(BatchSplit { per_device: cfg.micro_batch, grad_accum: cfg.batch_size / per_step, world })
}

/// The checks of an external engine's config (plan time).
pub fn validate(cfg: &TrainConfig) -> Result<(), String> {
    let l = &cfg.launch;
    if l.nproc_per_node == 0 || l.nnodes == 0 {
        return Err("launch.nproc_per_node and launch.nnodes must be at least 1".into());
    }
    if l.deepspeed.is_some() && l.fsdp {
        return Err("launch.deepspeed and launch.fsdp exclude each other: choose one".into());
    }
    batch_split(cfg)?;
    if cfg.decay_all {
        return Err(format!("decay_all = true is a burn-engine option; `{}` decays as the Hugging Face Trainer does (no decay on biases and norms)", cfg.engine));
    }
    if cfg.warmup_ratio > 0.0 && cfg.warmup_steps > 0 {
        return Err(format!("`{}` takes warm-up as warmup_ratio or warmup_steps, not both (got {} and {})", cfg.engine, cfg.warmup_ratio, cfg.warmup_steps));
    }
    if cfg.eval_share > 0.0 {
        // Not passed on: the held-out loss is the burn engine's (#26).
        return Err(format!(
            "eval_share = {} (a held-out loss) is computed by the burn engine only; `{}` trains on every example: remove eval_share or use engine = \"burn\"",
            cfg.eval_share, cfg.engine
        ));
    }
    if l.template.is_some() && cfg.engine != llamafactory::NAME {
        return Err("launch.template is LLaMA-Factory's prompt template; it applies only to `engine = \"llamafactory\"`".into());
    }
    Ok(())
}

/// Hugging Face's scheduler name for a schedule (warm-up included).
pub fn hf_scheduler(s: Schedule) -> &'static str {
    match s {
        Schedule::Cosine => "cosine",
        Schedule::Linear => "linear",
        Schedule::Constant => "constant_with_warmup",
    }
}

/// The DeepSpeed config for a ZeRO stage, with `auto` values that the
/// Hugging Face Trainer fills from its own arguments (so the spec's batch,
/// learning rate and precision are the only source).
pub fn deepspeed_config(z: Zero) -> serde_json::Value {
    let mut zero = serde_json::json!({
        "overlap_comm": true,
        "contiguous_gradients": true,
        "reduce_bucket_size": "auto",
    });
    match z {
        Zero::Zero2 => {
            zero["stage"] = 2.into();
            zero["allgather_partitions"] = true.into();
            zero["reduce_scatter"] = true.into();
        }
        Zero::Zero3 => {
            zero["stage"] = 3.into();
            zero["stage3_prefetch_bucket_size"] = "auto".into();
            zero["stage3_param_persistence_threshold"] = "auto".into();
            zero["stage3_gather_16bit_weights_on_model_save"] = true.into();
        }
    }
    serde_json::json!({
        "train_batch_size": "auto",
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "zero_allow_untested_optimizer": true,
        "bf16": { "enabled": "auto" },
        "fp16": { "enabled": "auto" },
        "zero_optimization": zero,
    })
}

/// Where the rendezvous of a multi-node launch comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendezvous {
    pub addr: String,
    pub port: String,
    pub id: String,
}

impl Rendezvous {
    /// The placeholders `--dry-run` prints.
    pub fn placeholders() -> Self {
        Rendezvous { addr: "$MASTER_ADDR".into(), port: "$MASTER_PORT".into(), id: "$SLURM_JOB_ID".into() }
    }

    /// From the environment: `MASTER_ADDR` (else the first host of
    /// `SLURM_JOB_NODELIST`, through `scontrol show hostnames`),
    /// `MASTER_PORT` (else 29500), `SLURM_JOB_ID` (else `fallback_id`).
    pub fn from_env(fallback_id: &str) -> Result<Self> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let addr = match var("MASTER_ADDR") {
            Some(a) => a,
            None => match var("SLURM_JOB_NODELIST") {
                Some(list) => {
                    let out = Command::new("scontrol").args(["show", "hostnames", &list]).output().context("running `scontrol show hostnames` for the rendezvous host")?;
                    String::from_utf8_lossy(&out.stdout).lines().next().map(str::to_string).ok_or_else(|| anyhow!("`scontrol show hostnames {list}` named no host"))?
                }
                None => bail!("launch.nnodes > 1 needs a rendezvous host: set MASTER_ADDR (and MASTER_PORT), or run inside a Slurm allocation (SLURM_JOB_NODELIST), on every node"),
            },
        };
        Ok(Rendezvous { addr, port: var("MASTER_PORT").unwrap_or_else(|| "29500".into()), id: var("SLURM_JOB_ID").unwrap_or_else(|| fallback_id.to_string()) })
    }
}

/// The launcher's argv for `script args…` (argv\[0\] is the Python).
pub fn launch_argv(python: &str, launch: &Launch, rdzv: Option<&Rendezvous>, script: &Path, args: &[String], precision_bf16: bool) -> Vec<String> {
    let mut v = vec![python.to_string()];
    let s = |x: &str| x.to_string();
    match launch.launcher {
        Launcher::Torchrun => {
            v.extend([s("-m"), s("torch.distributed.run"), s("--nproc_per_node"), launch.nproc_per_node.to_string()]);
            match (launch.nnodes, rdzv) {
                (1, _) | (_, None) => v.push(s("--standalone")),
                (n, Some(r)) => v.extend([
                    s("--nnodes"),
                    n.to_string(),
                    s("--rdzv_backend"),
                    s("c10d"),
                    s("--rdzv_endpoint"),
                    format!("{}:{}", r.addr, r.port),
                    s("--rdzv_id"),
                    r.id.clone(),
                ]),
            }
        }
        Launcher::Accelerate => {
            v.extend([
                s("-m"),
                s("accelerate.commands.launch"),
                s("--num_processes"),
                launch.world_size().to_string(),
                s("--num_machines"),
                launch.nnodes.to_string(),
                s("--mixed_precision"),
                s(if precision_bf16 { "bf16" } else { "no" }),
                s("--dynamo_backend"),
                s("no"),
            ]);
            if launch.world_size() > 1 {
                v.push(s("--multi_gpu"));
            }
            if let (n, Some(r)) = (launch.nnodes, rdzv) {
                if n > 1 {
                    v.extend([s("--main_process_ip"), r.addr.clone(), s("--main_process_port"), r.port.clone(), s("--machine_rank"), s("$NODE_RANK")]);
                }
            }
        }
    }
    v.extend(launch.extra_args.iter().cloned());
    v.push(script.display().to_string());
    v.extend(args.iter().cloned());
    v
}

pub use crate::model::serve::shell_line;

/// The installed versions of `modules` for `python`, or an error naming
/// the missing one and the install command.
pub fn probe(python: &str, engine: &str, modules: &[&str]) -> Result<serde_json::Value> {
    let code = format!(
        "import importlib.metadata as m, json, sys\nout = {{'python': sys.version.split()[0]}}\nfor name in {modules:?}:\n    try:\n        out[name] = m.version(name)\n    except m.PackageNotFoundError:\n        out[name] = None\nprint(json.dumps(out))"
    );
    let out = Command::new(python).args(["-c", &code]).output().map_err(|e| anyhow!("`engine = \"{engine}\"`: cannot run `{python}`: {e}; {}", install_hint(engine)))?;
    if !out.status.success() {
        bail!("`engine = \"{engine}\"`: `{python}` failed: {}; {}", String::from_utf8_lossy(&out.stderr).trim(), install_hint(engine));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("reading the engine probe's answer")?;
    let missing: Vec<&str> = modules.iter().copied().filter(|m| v.get(*m).is_none_or(serde_json::Value::is_null)).collect();
    if !missing.is_empty() {
        let deepspeed = if missing.contains(&"deepspeed") {
            " (DeepSpeed is not in the pinned venvs: it builds its ops for the machine's CUDA; on the GPU machine, `pip install deepspeed` into that venv)"
        } else {
            ""
        };
        bail!("`engine = \"{engine}\"` needs the Python packages {}, which `{python}` lacks{deepspeed}; {}", missing.join(", "), install_hint(engine));
    }
    Ok(v)
}

/// The job's working dir (the job's checkpoint dir): emptied when it holds
/// another job's state, then stamped with this job's fingerprint.
pub fn prepare_work_dir(dir: &Path, fingerprint: &str) -> Result<()> {
    let stamp = dir.join("fingerprint");
    if dir.exists() && std::fs::read_to_string(&stamp).ok().as_deref() != Some(fingerprint) {
        std::fs::remove_dir_all(dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(&stamp, fingerprint)?;
    Ok(())
}

/// The newest `checkpoint-N` in `dir`, if any, and N.
pub fn last_checkpoint(dir: &Path) -> Option<(PathBuf, u64)> {
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let n: u64 = name.strip_prefix("checkpoint-")?.parse().ok()?;
            e.path().join("trainer_state.json").is_file().then(|| (e.path(), n))
        })
        .max_by_key(|(_, n)| *n)
}

/// A Hugging Face Trainer's logged metrics as a `train_log` row;
/// `finished_at` is when mpo-run received them (`None` for rows read back
/// from a checkpoint, which keeps no times).
pub fn log_row(
    stage: &str,
    step: u64,
    epoch: f64,
    tokens_per_s: Option<f64>,
    logs: &serde_json::Value,
    finished_at: Option<chrono::DateTime<chrono::Utc>>,
) -> TrainLogRow {
    let f = |k: &str| logs.get(k).and_then(serde_json::Value::as_f64);
    TrainLogRow {
        stage: stage.to_string(),
        step,
        epoch,
        loss: f("loss").unwrap_or(f64::NAN),
        lr: f("learning_rate").or_else(|| f("lr")).unwrap_or(0.0),
        grad_norm: f("grad_norm").unwrap_or(f64::NAN),
        tokens_per_s: tokens_per_s.unwrap_or(0.0),
        reward_accuracy: f("rewards/accuracies"),
        chosen_reward: f("rewards/chosen"),
        rejected_reward: f("rewards/rejected"),
        margin: f("rewards/margins"),
        finished_at,
        eval_loss: None,
    }
}

/// The rows of steps ≤ `upto` that a checkpoint's `trainer_state.json`
/// logged (the steps a resumed training does not compute again).
pub fn resumed_rows(stage: &str, checkpoint: &Path, upto: u64) -> Result<Vec<TrainLogRow>> {
    let path = checkpoint.join("trainer_state.json");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?)?;
    let mut rows = Vec::new();
    for e in v.get("log_history").and_then(serde_json::Value::as_array).into_iter().flatten() {
        let step = e.get("step").and_then(serde_json::Value::as_u64).unwrap_or(0);
        if step == 0 || step > upto || e.get("loss").is_none() {
            continue;
        }
        rows.push(log_row(stage, step, e.get("epoch").and_then(serde_json::Value::as_f64).unwrap_or(0.0), None, e, None));
    }
    Ok(rows)
}

/// A running engine: its process group dies with this value.
struct Group {
    child: std::process::Child,
    pgid: i32,
}

impl Drop for Group {
    fn drop(&mut self) {
        if self.pgid > 0 {
            // SAFETY: plain syscall; a negative pid addresses the group.
            unsafe {
                libc::kill(-self.pgid, libc::SIGKILL);
            }
        }
        let _ = self.child.wait();
    }
}

/// What every engine does before writing its job: the base model dir
/// checked, the Python side probed (`packages`, and `deepspeed` when the
/// launch asks for it), the job's work dir (its checkpoint dir) prepared.
/// Returns the packages' versions and the work dir.
pub fn prepare(job: &TrainJob, engine: &str, packages: &[&str]) -> Result<(serde_json::Value, PathBuf)> {
    let cfg = &job.config;
    let mut modules = packages.to_vec();
    if cfg.launch.deepspeed.is_some() {
        modules.push("deepspeed");
    }
    check_base_dir(&job.stage, &job.base_dir)?;
    let versions = probe(&cfg.launch.python(&cfg.engine), engine, &modules)?;
    let work = job.checkpoint_dir.clone();
    prepare_work_dir(&work, &job.fingerprint)?;
    Ok((versions, work))
}

/// The rendezvous of a multi-node launch (none on one node).
pub fn rendezvous(job: &TrainJob) -> Result<Option<Rendezvous>> {
    if job.config.launch.nnodes > 1 {
        Ok(Some(Rendezvous::from_env(&job.fingerprint[..job.fingerprint.len().min(16)])?))
    } else {
        Ok(None)
    }
}

/// Runs an engine's launcher `argv` under [`supervise`] and follows its
/// events: the rows of the steps its last checkpoint under `checkpoints`
/// holds (a resumed training; `label` names the engine in the log), then
/// one row per logged optimizer step, and the job's progress. `env` adds
/// to the environment (the datasets cache is kept in `work`). Returns the
/// log and how many of its steps this run computed.
pub fn run(job: &TrainJob, label: &str, argv: &[String], env: &[(String, String)], work: &Path, checkpoints: &Path) -> Result<(Vec<TrainLogRow>, u64)> {
    let stage = &job.stage;
    let mut env = env.to_vec();
    env.push(("HF_DATASETS_CACHE".to_string(), work.join("hf-datasets").display().to_string()));
    let mut log = match last_checkpoint(checkpoints) {
        Some((dir, step)) => {
            tracing::info!("{stage}: resuming {label} from its checkpoint {} (step {step})", dir.display());
            resumed_rows(stage, &dir, step)?
        }
        None => Vec::new(),
    };
    let resumed_steps = log.len() as u64;
    let mut total = 0u64;
    supervise(stage, argv, &env, work, "a rerun resumes from the last checkpoint (`save_every` sets how often one is written)", &mut |ev| {
        let step = ev.get("step").and_then(serde_json::Value::as_u64).unwrap_or(0);
        if let Some(t) = ev.get("max_steps").and_then(serde_json::Value::as_u64) {
            total = t;
        }
        match ev.get("event").and_then(serde_json::Value::as_str).unwrap_or("") {
            "log" => {
                let row = log_row(
                    stage,
                    step,
                    ev.get("epoch").and_then(serde_json::Value::as_f64).unwrap_or(0.0),
                    ev.get("tokens_per_s").and_then(serde_json::Value::as_f64),
                    ev.get("logs").unwrap_or(&serde_json::Value::Null),
                    Some(crate::store::table::now()),
                );
                log.retain(|r| r.step < step);
                log.push(row);
            }
            "resume" => tracing::info!("{stage}: {label} resumed from {}", ev.get("checkpoint").and_then(serde_json::Value::as_str).unwrap_or("?")),
            "save" => tracing::debug!("{stage}: checkpoint at step {step}"),
            _ => {}
        }
        if let Some(p) = &job.progress {
            p(super::StepProgress { step, total, loss: log.last().filter(|r| r.step == step).map(|r| r.loss) });
        }
    })?;
    let computed = (log.len() as u64).saturating_sub(resumed_steps);
    Ok((log, computed))
}

/// Runs `argv` as its own process group, with `env`, in `cwd`; every line
/// of its stdout and stderr goes to the run log, each `@@mpo-run` event to
/// `on_event`. An exit other than 0 is an error with the last lines and
/// `hint`.
pub fn supervise(
    stage: &str,
    argv: &[String],
    env: &[(String, String)],
    cwd: &Path,
    hint: &str,
    on_event: &mut dyn FnMut(&serde_json::Value),
) -> Result<()> {
    // The launcher dies with this thread, which waits for it.
    let mut cmd = crate::model::serve::group_command(argv);
    cmd.current_dir(cwd)
        .env("MPO_RUN_PID", std::process::id().to_string())
        .env("PYTHONUNBUFFERED", "1")
        .env("HF_HUB_OFFLINE", "1")
        .env("TOKENIZERS_PARALLELISM", "false")
        .envs(env.iter().map(|(k, v)| (k, v)));
    tracing::info!(target: "engine", "{stage}: {}", shell_line(argv));
    let mut child = cmd.spawn().map_err(|e| anyhow!("{stage}: cannot start `{}`: {e}", argv[0]))?;
    let pgid = child.id() as i32;
    let (tx, rx) = mpsc::channel::<String>();
    let mut readers = Vec::new();
    for pipe in [child.stdout.take().map(|p| Box::new(p) as Box<dyn std::io::Read + Send>), child.stderr.take().map(|p| Box::new(p) as _)]
        .into_iter()
        .flatten()
    {
        let tx = tx.clone();
        readers.push(std::thread::spawn(move || {
            for line in BufReader::new(pipe).split(b'\n').map_while(Result::ok) {
                let line = String::from_utf8_lossy(&line).into_owned();
                // Progress bars redraw with \r: keep the last state.
                let line = line.rsplit('\r').next().unwrap_or("").to_string();
                if tx.send(line).is_err() {
                    break;
                }
            }
        }));
    }
    drop(tx);
    let mut group = Group { child, pgid };
    let mut tail: VecDeque<String> = VecDeque::new();
    for line in rx {
        if let Some(json) = line.strip_prefix(EVENT) {
            match serde_json::from_str::<serde_json::Value>(json) {
                Ok(v) => on_event(&v),
                Err(e) => tracing::warn!(target: "engine", "{stage}: an unreadable event ({e}): {json}"),
            }
            continue;
        }
        if line.trim().is_empty() {
            continue;
        }
        tracing::info!(target: "engine", "{stage}: {line}");
        if tail.len() == TAIL {
            tail.pop_front();
        }
        tail.push_back(line);
    }
    for r in readers {
        let _ = r.join();
    }
    let status = group.child.wait()?;
    group.pgid = 0;
    if !status.success() {
        let last: Vec<&str> = tail.iter().map(String::as_str).collect();
        bail!(
            "{stage}: the training engine failed ({status}); nothing was committed, and its checkpoints are kept for a rerun to resume from. Its last lines:\n  {}\n{hint}",
            last.join("\n  ")
        );
    }
    Ok(())
}

/// The job with its base, output and work dirs made absolute.
pub fn absolute_paths(mut job: TrainJob) -> Result<TrainJob> {
    for p in [&mut job.base_dir, &mut job.out_dir, &mut job.checkpoint_dir, &mut job.reference_scores] {
        *p = std::path::absolute(&*p).with_context(|| format!("resolving {}", p.display()))?;
    }
    Ok(job)
}

/// Checks that the base model is a Hugging Face directory before anything
/// is launched.
pub fn check_base_dir(stage: &str, dir: &Path) -> Result<()> {
    if !dir.join("config.json").is_file() {
        bail!(
            "{stage}: the base model {} is not a Hugging Face model directory (no config.json){}",
            dir.display(),
            if dir.exists() { "" } else { ": it does not exist" }
        );
    }
    Ok(())
}

/// Checks that `dir` holds a Hugging Face model (config and weights).
pub fn check_model_dir(stage: &str, dir: &Path) -> Result<()> {
    let has_weights = std::fs::read_dir(dir)
        .map(|r| r.flatten().any(|e| e.file_name().to_string_lossy().ends_with(".safetensors") || e.file_name() == "model.safetensors.index.json"))
        .unwrap_or(false);
    if !dir.join("config.json").is_file() || !has_weights {
        bail!("{stage}: the engine finished but left no Hugging Face model in {} (config.json and safetensors weights)", dir.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(batch: usize, micro: usize, nproc: usize) -> TrainConfig {
        TrainConfig {
            batch_size: batch,
            micro_batch: micro,
            engine: "trl".into(),
            launch: Launch { nproc_per_node: nproc, nnodes: 1, ..Launch::default() },
            ..TrainConfig::default()
        }
    }

    #[test]
    fn the_effective_batch_splits_into_device_batch_accumulation_and_world() {
        assert_eq!(batch_split(&cfg(32, 2, 4)).unwrap(), BatchSplit { per_device: 2, grad_accum: 4, world: 4 });
        assert_eq!(batch_split(&cfg(8, 8, 1)).unwrap(), BatchSplit { per_device: 8, grad_accum: 1, world: 1 });
        let e = batch_split(&cfg(32, 8, 3)).unwrap_err();
        assert!(e.contains("batch_size = 32") && e.contains("nproc_per_node 3"), "{e}");
    }

    #[test]
    fn a_held_out_share_is_refused_with_its_key() {
        let c = TrainConfig { eval_share: 0.1, ..cfg(8, 8, 1) };
        let e = validate(&c).unwrap_err();
        assert!(e.contains("eval_share = 0.1") && e.contains("burn engine only") && e.contains("`trl`"), "{e}");
    }

    #[test]
    fn resumed_rows_have_no_time_and_live_rows_have_one() {
        let d = tempfile::tempdir().unwrap();
        let state = serde_json::json!({ "log_history": [{ "step": 1, "epoch": 0.5, "loss": 2.0, "learning_rate": 1e-5 }] });
        std::fs::write(d.path().join("trainer_state.json"), state.to_string()).unwrap();
        let rows = resumed_rows("sft", d.path(), 1).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].finished_at, None);
        let now = chrono::Utc::now();
        let live = log_row("sft", 2, 1.0, None, &serde_json::json!({ "loss": 1.5 }), Some(now));
        assert_eq!(live.finished_at, Some(now));
    }

    #[test]
    fn multi_node_launches_take_the_rendezvous_and_single_node_ones_are_standalone() {
        let mut l = Launch { nproc_per_node: 8, nnodes: 1, ..Launch::default() };
        let one = launch_argv("py", &l, None, Path::new("/w/trl_train.py"), &["/w/job.json".into()], false);
        assert_eq!(shell_line(&one), "py -m torch.distributed.run --nproc_per_node 8 --standalone /w/trl_train.py /w/job.json");
        l.nnodes = 2;
        let two = launch_argv("py", &l, Some(&Rendezvous::placeholders()), Path::new("/w/t.py"), &[], false);
        assert_eq!(
            shell_line(&two),
            "py -m torch.distributed.run --nproc_per_node 8 --nnodes 2 --rdzv_backend c10d --rdzv_endpoint $MASTER_ADDR:$MASTER_PORT --rdzv_id $SLURM_JOB_ID /w/t.py"
        );
        l.launcher = Launcher::Accelerate;
        let acc = shell_line(&launch_argv("py", &l, Some(&Rendezvous::placeholders()), Path::new("/w/t.py"), &[], true));
        assert!(acc.contains("--num_processes 16 --num_machines 2 --mixed_precision bf16") && acc.contains("--main_process_ip $MASTER_ADDR"), "{acc}");
    }

    #[test]
    fn checkpoints_of_another_job_are_cleared() {
        let d = tempfile::tempdir().unwrap();
        let w = d.path().join("w");
        prepare_work_dir(&w, "a").unwrap();
        std::fs::create_dir_all(w.join("checkpoint-3")).unwrap();
        std::fs::write(w.join("checkpoint-3/trainer_state.json"), "{}").unwrap();
        prepare_work_dir(&w, "a").unwrap();
        assert_eq!(last_checkpoint(&w).map(|c| c.1), Some(3));
        prepare_work_dir(&w, "b").unwrap();
        assert_eq!(last_checkpoint(&w), None);
    }

    #[test]
    fn a_missing_python_names_the_install_command() {
        let e = probe("/nonexistent/python", "trl", &["trl"]).unwrap_err().to_string();
        assert!(e.contains("python/setup.sh"), "{e}");
        let e = probe("python3", "trl", &["surely-not-installed-mpo-run"]).unwrap_err().to_string();
        assert!(e.contains("surely-not-installed-mpo-run") && e.contains("python/setup.sh"), "{e}");
        let e = probe("/nonexistent/python", "llamafactory", &["llamafactory"]).unwrap_err().to_string();
        assert!(e.contains("python/setup.sh llamafactory") && e.contains("MPO_RUN_LF_PYTHON"), "{e}");
        let e = probe("python3", "trl", &["deepspeed", "surely-not-installed-mpo-run"]).unwrap_err().to_string();
        assert!(e.contains("pip install deepspeed"), "{e}");
    }
}
