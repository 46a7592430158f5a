//! The command line: parse, load specs, build plans, run, and turn errors
//! into exit codes. `main.rs` only calls [`main`].
//!
//! Exit codes: 0 success; 1 a stage failed (finished work is kept); 2 the
//! user's input is wrong (spec, flags, files).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use clap::{Args, Parser, Subcommand};

use crate::exec::{self, RunOptions};
use crate::plan::{self, Plan};
use crate::spec::{self, LoadOptions, SpecError};
use crate::report::collate;
use crate::store::Store;

pub mod launch;

/// Declarative experiment runner for Meta Plan Optimization (MPO).
///
/// `mpo-run SPEC.toml` turns an experiment spec into a DAG of cached stages
/// (expert trajectories, seed plans, planner training, plan sampling, Monte
/// Carlo rollouts, DPO, evaluation), runs what is not cached yet, writes every
/// result as Parquet under the results dir and regenerates the reports.
#[derive(Debug, Parser)]
#[command(name = "mpo-run", version, args_conflicts_with_subcommands = true, arg_required_else_help = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Experiment specs to run, in order.
    #[arg(value_name = "SPEC")]
    pub specs: Vec<PathBuf>,
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub run: RunArgs,
}

/// Flags of every command that reads a spec.
#[derive(Debug, Args, Clone, Default)]
pub struct Common {
    /// Override a spec value: `--set mpo.m=3` (TOML values; repeatable; wins
    /// over the spec file and `MPO_SECTION__KEY` environment variables).
    #[arg(long = "set", value_name = "KEY=VALUE", global = true)]
    pub sets: Vec<String>,
    /// Results directory (overrides `experiment.results_dir`).
    #[arg(long = "results", value_name = "DIR", global = true)]
    pub results: Option<PathBuf>,
    /// More log output on stderr (-v info, -vv debug).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
}

/// Flags of a run.
#[derive(Debug, Args, Clone, Default)]
pub struct RunArgs {
    /// Print the DAG (stages, variants, cached vs to run, item counts) and exit.
    #[arg(long)]
    pub dry_run: bool,
    /// Run only this stage (and the stages it needs); repeatable.
    #[arg(long, value_name = "STAGE")]
    pub only: Vec<String>,
    /// Rerun this stage even if cached, recomputing its items; repeatable.
    #[arg(long, value_name = "STAGE")]
    pub force: Vec<String>,
    /// Stages running at once.
    #[arg(long, short = 'j', default_value_t = 4)]
    pub jobs: usize,
    /// `I/N`: compute only shard I (0-based) of N of every stage's items,
    /// e.g. one Slurm array task each over a shared results dir; then run
    /// once without `--shard` to assemble the results.
    #[arg(long, value_name = "I/N", value_parser = parse_shard)]
    pub shard: Option<(u32, u32)>,
}

fn parse_shard(s: &str) -> Result<(u32, u32), String> {
    let (i, n) = s.split_once('/').ok_or("expected `I/N`, e.g. `0/4`")?;
    let (i, n): (u32, u32) = (i.trim().parse().map_err(|_| "I must be a number")?, n.trim().parse().map_err(|_| "N must be a number")?);
    if n == 0 || i >= n {
        return Err(format!("shard `{s}`: need 0 <= I < N"));
    }
    Ok((i, n))
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Regenerate reports from existing results; runs nothing.
    Report {
        #[arg(value_name = "SPEC", required = true)]
        specs: Vec<PathBuf>,
    },
    /// Write the training datasets of a spec's finished stages for external
    /// trainers: the seed SFT set, the DPO pairs and the RFT set, in
    /// LLaMA-Factory (sharegpt, `ranking: true`) and TRL formats, with a
    /// `dataset_info.json`, one folder per variant. Runs nothing.
    Export {
        #[arg(value_name = "SPEC", required = true)]
        spec: PathBuf,
        /// Where to write (created).
        #[arg(long = "to", value_name = "DIR", default_value = "datasets")]
        to: PathBuf,
    },
    /// Show which stages of a spec are done and how many items each has.
    Status {
        #[arg(value_name = "SPEC", required = true)]
        specs: Vec<PathBuf>,
    },
    /// Serve an environment over the AgentGym ALFWorld-style HTTP protocol
    /// (`/create`, `/reset`, `/step`, `/close`), for other tools and tests.
    ServeEnv {
        /// Which environment: `builtin` (the built-in household world).
        #[arg(value_parser = ["builtin"])]
        env: String,
        #[arg(long, default_value_t = 36001)]
        port: u16,
        #[arg(long, default_value = "127.0.0.1")]
        host: std::net::IpAddr,
        /// Step limit of an episode.
        #[arg(long, default_value_t = 30)]
        max_steps: u32,
        /// Live sessions at most; `/create` beyond them answers HTTP 429.
        #[arg(long, default_value_t = 4096)]
        max_sessions: usize,
        /// Drop a session that no request has named for this many seconds.
        #[arg(long, default_value_t = 3600)]
        idle_timeout_s: u64,
    },
    /// Write the cluster jobs of a `--shard i/N` job array over a shared
    /// results dir, and a job that assembles them (docs/clusters.md).
    Launch {
        #[command(subcommand)]
        target: launch::Target,
    },
    /// Remove artifacts that no given spec references (and interrupted
    /// writes). Item journals are kept unless `--items`.
    Clean {
        /// Specs whose artifacts to keep.
        #[arg(value_name = "SPEC")]
        specs: Vec<PathBuf>,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
        /// Also remove item journals of stages no kept artifact uses.
        #[arg(long)]
        items: bool,
    },
}

/// A user error: exit status 2.
#[derive(Debug)]
pub struct UserError(pub String);

impl std::fmt::Display for UserError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for UserError {}

impl From<SpecError> for UserError {
    fn from(e: SpecError) -> Self {
        UserError(e.to_string())
    }
}

/// Entry point of the binary; returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    match run_cli(cli) {
        Ok(code) => code,
        Err(e) => {
            let user = e.downcast_ref::<UserError>().is_some() || e.downcast_ref::<SpecError>().is_some();
            let mut chain = e.chain();
            let first = chain.next().map(|c| c.to_string()).unwrap_or_default();
            let (msg, hint) = split_hint(&first);
            eprintln!("error: {msg}");
            for cause in chain {
                eprintln!("  Caused by: {cause}");
            }
            if let Some(h) = hint {
                eprintln!("hint: {h}");
            }
            if user {
                2
            } else {
                1
            }
        }
    }
}

fn split_hint(text: &str) -> (String, Option<String>) {
    match text.split_once("\nhint: ") {
        Some((m, h)) => (m.to_string(), Some(h.to_string())),
        None => (text.to_string(), None),
    }
}

fn load_options(common: &Common) -> LoadOptions {
    LoadOptions {
        sets: common.sets.clone(),
        env: None,
        results_dir: common.results.as_ref().map(|r| r.display().to_string()),
    }
}

/// Loads a spec and builds its plan, with a store to look at.
pub fn plan_for(path: &Path, opts: &LoadOptions) -> Result<(Plan, Store)> {
    if !path.exists() {
        return Err(UserError(format!("spec `{}` does not exist", path.display())).into());
    }
    let variants = spec::expand(path, opts).map_err(UserError::from)?;
    let plan = Plan::build(&variants, &crate::mpo::drafts).map_err(|e| UserError(format!("{e:#}")))?;
    let store = Store::open_read_only(&plan.results_dir);
    Ok((plan, store))
}

fn run_cli(cli: Cli) -> Result<i32> {
    let opts = load_options(&cli.common);
    match cli.command {
        Some(Command::Report { specs }) => {
            init_logging(cli.common.verbose, None);
            for path in specs {
                let (plan, store) = plan_for(&path, &opts)?;
                let index = crate::report::write(&plan, &store)?;
                println!("{}", index.display());
            }
            Ok(0)
        }
        Some(Command::Export { spec, to }) => {
            init_logging(cli.common.verbose, None);
            let (plan, store) = plan_for(&spec, &opts)?;
            for line in crate::mpo::export::export(&plan, &store, &to)? {
                println!("{line}");
            }
            Ok(0)
        }
        Some(Command::Status { specs }) => {
            init_logging(cli.common.verbose, None);
            for path in specs {
                let (plan, store) = plan_for(&path, &opts)?;
                print!("{}", plan::render(&plan, &store, &[])?);
            }
            Ok(0)
        }
        Some(Command::ServeEnv { env: _, port, host, max_steps, max_sessions, idle_timeout_s }) => {
            init_logging(cli.common.verbose, None);
            if max_sessions == 0 || idle_timeout_s == 0 {
                bail!(UserError("`--max-sessions` and `--idle-timeout-s` must be at least 1".into()));
            }
            let addr = std::net::SocketAddr::new(host, port);
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            eprintln!("serving the built-in world on http://{addr} (Ctrl-C stops)");
            let settings = crate::env::agentgym::ServeSettings {
                max_steps,
                max_sessions,
                idle_timeout: std::time::Duration::from_secs(idle_timeout_s),
            };
            runtime.block_on(crate::env::agentgym::serve_builtin_with(addr, settings, async {
                let _ = tokio::signal::ctrl_c().await;
            }))?;
            Ok(0)
        }
        Some(Command::Launch { target }) => {
            init_logging(cli.common.verbose, None);
            launch::run(target, &cli.common)
        }
        Some(Command::Clean { specs, yes, items }) => {
            init_logging(cli.common.verbose, None);
            clean(&specs, &opts, yes, items)
        }
        None => {
            if cli.specs.is_empty() {
                bail!(UserError("no spec given; try `mpo-run experiments/quickstart.toml`".into()));
            }
            let mut code = 0;
            for path in &cli.specs {
                code = code.max(run_spec(path, &opts, &cli.run, cli.common.verbose)?);
            }
            Ok(code)
        }
    }
}

fn run_spec(path: &Path, opts: &LoadOptions, args: &RunArgs, verbose: u8) -> Result<i32> {
    let (plan, store) = plan_for(path, opts)?;
    for s in args.only.iter().chain(&args.force) {
        if !plan.nodes.iter().any(|n| n.stage == s) {
            let stages: Vec<_> = plan.nodes.iter().map(|n| n.stage).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
            return Err(UserError(format!(
                "stage `{s}` is not in the plan of `{}`; its stages are: {}",
                path.display(),
                stages.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", ")
            ))
            .into());
        }
    }
    if args.dry_run {
        init_logging(verbose, None);
        print!("{}", plan::render(&plan, &store, &args.force)?);
        return Ok(0);
    }
    let store = Store::open(store.root())?;
    let log = store.runs_dir().join(format!(
        "{}-{}.log",
        chrono::Utc::now().format("%Y%m%dT%H%M%S"),
        plan.experiment
    ));
    init_logging(verbose, Some(&log));
    store.clean_tmp()?;
    tracing::info!("running `{}` ({} stages)", path.display(), plan.nodes.len());
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let run_opts = RunOptions {
        jobs: args.jobs,
        only: args.only.clone(),
        force: args.force.clone(),
        progress: std::io::stderr().is_terminal(),
        shard: args.shard,
    };
    let summary = runtime.block_on(exec::execute(&plan, &store, &run_opts))?;
    plan::save_index(&store, &plan)?;
    if args.shard.is_some() {
        eprintln!("shard {:?} of `{}`:", args.shard.unwrap_or_default(), plan.experiment);
        eprint!("{}", summary.render());
        return Ok(if summary.failed() { 1 } else { 0 });
    }
    let counts = collate::collate(&plan, &store)?;
    eprintln!(
        "experiment `{}`: {} stages ran, {} cached",
        plan.experiment,
        summary.ran(),
        summary.cached()
    );
    eprint!("{}", summary.render());
    if summary.ran() == 0 && !summary.failed() {
        eprintln!("nothing to do: every stage is cached");
    }
    for (t, n) in &counts {
        eprintln!("  results: {}/{}/{t}.parquet ({n} rows)", plan.results_dir, plan.experiment);
    }
    if plan.report.enabled {
        let index = crate::report::write(&plan, &store)?;
        eprintln!("  report: {}", index.display());
    }
    eprintln!("  log: {}", log.display());
    Ok(if summary.failed() { 1 } else { 0 })
}

fn clean(specs: &[PathBuf], opts: &LoadOptions, yes: bool, items: bool) -> Result<i32> {
    let mut keep = std::collections::HashSet::new();
    let mut stores = Vec::new();
    for path in specs {
        let (plan, store) = plan_for(path, opts)?;
        for n in &plan.nodes {
            keep.insert((n.stage.to_string(), n.key.clone()));
        }
        if !stores.iter().any(|s: &Store| s.root() == store.root()) {
            stores.push(store);
        }
    }
    let stores: Vec<Store> = stores.iter().map(|s| Store::open(s.root())).collect::<Result<_>>()?;
    let mut stores = stores;
    if stores.is_empty() {
        let root = opts
            .sets
            .iter()
            .find_map(|s| s.strip_prefix("experiment.results_dir="))
            .map(|s| s.trim_matches('"').to_string())
            .unwrap_or_else(|| "results".into());
        stores.push(Store::open(root)?);
    }
    let mut doomed = Vec::new();
    for store in &stores {
        for (stage, key) in store.artifacts()? {
            if !keep.contains(&(stage.clone(), key.clone())) {
                doomed.push(store.artifact_dir(&stage, &key));
            }
        }
        // Checkpoints and reference scores of trainings that no spec
        // given still plans (a kept training resumes from its own).
        for (stage, name) in store.training_leftovers()? {
            let key = name.split('.').next().unwrap_or_default();
            // A training another process runs now is not a leftover.
            if !keep.contains(&(stage.clone(), key.to_string())) && !store.node_is_locked(&stage, key) {
                doomed.push(store.checkpoint_dir(&stage, &name));
            }
        }
        if items {
            let kept_stages: std::collections::HashSet<_> = keep.iter().map(|(s, _)| s.clone()).collect();
            for entry in std::fs::read_dir(store.items_dir())? {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if !kept_stages.contains(&name) {
                    doomed.push(entry.path());
                }
            }
        }
    }
    if doomed.is_empty() {
        eprintln!("nothing to clean");
        for s in &stores {
            s.clean_tmp()?;
        }
        return Ok(0);
    }
    eprintln!("{} unreferenced entries:", doomed.len());
    for d in &doomed {
        eprintln!("  {}", d.display());
    }
    if !yes {
        if !std::io::stdin().is_terminal() {
            return Err(UserError("refusing to delete without confirmation; pass `--yes`".into()).into());
        }
        eprint!("delete them? [y/N] ");
        std::io::stderr().flush()?;
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            eprintln!("nothing deleted");
            return Ok(0);
        }
    }
    for d in &doomed {
        if d.is_dir() {
            std::fs::remove_dir_all(d)?;
        } else {
            std::fs::remove_file(d)?;
        }
    }
    for s in &stores {
        s.clean_tmp()?;
    }
    eprintln!("removed {} entries", doomed.len());
    Ok(0)
}

/// Logs: stderr at warn (info with -v, debug with -vv); the run log file
/// always at info. `NO_COLOR` is respected; stdout carries data only.
fn init_logging(verbose: u8, file: Option<&Path>) {
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::{fmt, EnvFilter};
    let level = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let stderr_filter = EnvFilter::try_from_env("MPO_LOG").unwrap_or_else(|_| EnvFilter::new(level));
    let color = std::env::var_os("NO_COLOR").is_none() && std::io::stderr().is_terminal();
    let stderr_layer = fmt::layer().with_writer(std::io::stderr).with_ansi(color).with_target(false).with_filter(stderr_filter);
    let file_layer = file.and_then(|p| {
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).ok()?;
        }
        let f = std::fs::File::create(p).ok()?;
        Some(fmt::layer().with_writer(std::sync::Mutex::new(f)).with_ansi(false).with_target(false).with_filter(EnvFilter::new("info")))
    });
    let _ = tracing_subscriber::registry().with(stderr_layer).with(file_layer).try_init();
}
