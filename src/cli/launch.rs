//! `mpo-run launch slurm|k8s SPEC --shards N` (#24): writes the cluster jobs
//! of a `--shard i/N` job array over a shared results dir, and, for Slurm
//! with `--submit`, submits them. Nothing here polls a scheduler.
//!
//! Two jobs per launch, both plain text the user can read and edit:
//! - the **array**: element `i` runs `mpo-run SPEC --shard i/N`, computing
//!   shard `i` of every stage whose inputs are assembled (docs/clusters.md);
//! - the **assemble** job, started once every element succeeded (Slurm:
//!   `--dependency=afterok:<array id>`; Kubernetes: applied after
//!   `kubectl wait --for=condition=complete`), runs `mpo-run SPEC` without
//!   `--shard`: it builds the artifacts from the shards' journals, computes
//!   what is left, collates the results and writes the reports.
//!
//! Invariants: the spec is loaded and validated before anything is written
//! (a bad spec is a user error); every path in a job is absolute, resolved
//! at generation time (the spec, the results dir, the working dir, which
//! relative `reports_dir`s resolve against), and every word a shell reads is
//! quoted by [`shell_quote`]. The `--set` flags the user gave are passed to
//! every element and to the assembly, so all of them plan the same keys.
//! The results dir is the only coordination between elements
//! (docs/ARCHITECTURE.md, "Many processes, one results dir").

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use super::{plan_for, Common, UserError};

/// Which scheduler to write jobs for.
#[derive(Debug, Subcommand)]
pub enum Target {
    /// An sbatch job-array script (element `i` runs `mpo-run SPEC --shard
    /// i/N`) and a dependent assemble job; `--submit` submits both.
    Slurm(SlurmArgs),
    /// A Kubernetes Indexed Job (pod `i` runs `mpo-run SPEC --shard i/N`)
    /// and an assemble Job, both mounting the results dir's volume claim.
    K8s(K8sArgs),
}

/// Flags of both targets.
#[derive(Debug, Args)]
pub struct LaunchArgs {
    /// The experiment spec every element runs.
    #[arg(value_name = "SPEC")]
    pub spec: PathBuf,
    /// Elements of the array (each computes 1/N of every stage's items).
    #[arg(long, value_name = "N")]
    pub shards: u32,
    /// Where to write the jobs (default `launch/<experiment>`).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Passed to every element and to the assembly as `--only STAGE`: one
    /// launch per wave of stages shards each wave (docs/clusters.md);
    /// repeatable.
    #[arg(long, value_name = "STAGE")]
    pub only: Vec<String>,
}

#[derive(Debug, Args)]
pub struct SlurmArgs {
    #[command(flatten)]
    pub launch: LaunchArgs,
    /// `#SBATCH --partition`.
    #[arg(long, value_name = "P")]
    pub partition: Option<String>,
    /// `#SBATCH --gpus-per-task` (each element is one task).
    #[arg(long, value_name = "G")]
    pub gpus_per_task: Option<u32>,
    /// `#SBATCH --cpus-per-task`.
    #[arg(long, value_name = "C")]
    pub cpus_per_task: Option<u32>,
    /// `#SBATCH --time` (Slurm's format, e.g. `04:00:00` or `2-00:00:00`).
    #[arg(long, value_name = "T")]
    pub time: Option<String>,
    /// `#SBATCH --account`.
    #[arg(long, value_name = "A")]
    pub account: Option<String>,
    /// Another `#SBATCH` line for both jobs, e.g. `--extra '--qos=high'`;
    /// repeatable.
    #[arg(long, value_name = "SBATCH LINE", allow_hyphen_values = true)]
    pub extra: Vec<String>,
    /// Start the array only after job `JOBID` succeeded (`#SBATCH
    /// --dependency=afterok:JOBID`), e.g. the assemble job of the previous
    /// wave.
    #[arg(long, value_name = "JOBID")]
    pub after: Option<String>,
    /// Submit both jobs with `sbatch --parsable` (the assemble job depends
    /// on the array) and print their job ids on stdout: the array's, then
    /// the assemble job's.
    #[arg(long)]
    pub submit: bool,
}

#[derive(Debug, Args)]
pub struct K8sArgs {
    #[command(flatten)]
    pub launch: LaunchArgs,
    /// Container image with `sh` and `mpo-run` on its `PATH`.
    #[arg(long, value_name = "I", default_value = "mpo-run:latest")]
    pub image: String,
    /// `nvidia.com/gpu` limit of each pod.
    #[arg(long, value_name = "G")]
    pub gpus: Option<u32>,
    /// The PersistentVolumeClaim holding the spec and the results dir
    /// (ReadWriteMany, with `flock`).
    #[arg(long, value_name = "NAME", default_value = "mpo-run-results")]
    pub pvc: String,
    /// Where the claim is mounted in every pod (default: the current dir):
    /// the spec and the results dir must lie under it, at the same
    /// absolute paths as here.
    #[arg(long, value_name = "DIR")]
    pub mount: Option<PathBuf>,
}

/// What every element and the assembly run, resolved at generation time.
#[derive(Debug, Clone)]
pub struct Job {
    pub experiment: String,
    /// Absolute.
    pub spec: PathBuf,
    /// Absolute; passed as `--results`.
    pub results: PathBuf,
    /// Absolute; the jobs `cd` here (relative `reports_dir` resolves here).
    pub workdir: PathBuf,
    /// The user's `--set KEY=VALUE` flags, verbatim.
    pub sets: Vec<String>,
    /// `--only STAGE` flags, verbatim.
    pub only: Vec<String>,
    pub shards: u32,
}

impl Job {
    /// `SPEC --results DIR [--set KEY=VALUE]… [--only STAGE]…`, each word
    /// shell-quoted.
    fn args(&self) -> String {
        let mut words = vec![shell_quote(&self.spec.display().to_string()).into_owned()];
        words.push("--results".into());
        words.push(shell_quote(&self.results.display().to_string()).into_owned());
        for s in &self.sets {
            words.push("--set".into());
            words.push(shell_quote(s).into_owned());
        }
        for s in &self.only {
            words.push("--only".into());
            words.push(shell_quote(s).into_owned());
        }
        words.join(" ")
    }

    /// A scheduler-safe name: `mpo-<experiment>`, lowercase letters,
    /// digits and `-` (Kubernetes' DNS label; fine for Slurm too), short
    /// enough for a `-assemble` suffix within 63 characters.
    pub fn name(&self) -> String {
        let mut name: String = self
            .experiment
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
            .collect();
        name.truncate(40);
        let name = name.trim_matches('-');
        if name.is_empty() {
            "mpo".into()
        } else {
            format!("mpo-{name}")
        }
    }
}

/// The Slurm directives of both jobs.
#[derive(Debug, Clone, Default)]
pub struct Slurm {
    pub partition: Option<String>,
    pub gpus_per_task: Option<u32>,
    pub cpus_per_task: Option<u32>,
    pub time: Option<String>,
    pub account: Option<String>,
    /// Whole `#SBATCH` lines, without the prefix.
    pub extra: Vec<String>,
    /// The array waits for this job (`afterok`).
    pub after: Option<String>,
    /// The `mpo-run` binary the jobs run (absolute; `MPO_RUN_BIN` overrides
    /// it when a job runs).
    pub program: PathBuf,
    /// Where Slurm writes each job's output (absolute; created).
    pub logs: PathBuf,
}

/// `'…'` unless `s` is made only of characters no shell treats specially.
pub fn shell_quote(s: &str) -> Cow<'_, str> {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-./:=@%+,".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(format!("'{}'", s.replace('\'', r"'\''")))
    }
}

/// An `#SBATCH` value: as is, or in double quotes when it holds blanks.
fn sbatch_value(s: &str) -> String {
    if s.chars().any(char::is_whitespace) {
        format!("\"{s}\"")
    } else {
        s.to_string()
    }
}

impl Slurm {
    fn directives(&self, job_name: &str) -> String {
        let mut lines = vec![
            format!("#SBATCH --job-name={job_name}"),
            format!("#SBATCH --output={}", sbatch_value(&format!("{}/%x-%A_%a.out", self.logs.display()))),
            "#SBATCH --ntasks=1".to_string(),
        ];
        let mut push = |flag: &str, value: Option<String>| {
            if let Some(v) = value {
                lines.push(format!("#SBATCH --{flag}={}", sbatch_value(&v)));
            }
        };
        push("partition", self.partition.clone());
        push("account", self.account.clone());
        push("time", self.time.clone());
        push("gpus-per-task", self.gpus_per_task.map(|g| g.to_string()));
        push("cpus-per-task", self.cpus_per_task.map(|c| c.to_string()));
        for e in &self.extra {
            let e = e.trim();
            lines.push(format!("#SBATCH {}", e.strip_prefix("#SBATCH").map(str::trim).unwrap_or(e)));
        }
        lines.join("\n")
    }

    fn preamble(&self, job: &Job) -> String {
        format!(
            "set -euo pipefail\nMPO_RUN_BIN=${{MPO_RUN_BIN:-{}}}\ncd {}",
            shell_quote(&self.program.display().to_string()),
            shell_quote(&job.workdir.display().to_string())
        )
    }
}

/// The array script and the assemble script, in that order. Both run
/// outside Slurm too: `SLURM_ARRAY_TASK_ID=i bash ARRAY` is element `i`,
/// `bash ASSEMBLE` the assembly (what the acceptance test does).
pub fn slurm_scripts(job: &Job, slurm: &Slurm) -> (String, String) {
    let name = job.name();
    let last = job.shards - 1;
    let array = format!(
        "#!/bin/bash\n\
         # Written by `mpo-run launch slurm` for experiment `{exp}`: element I of\n\
         # this array runs `mpo-run SPEC --shard I/{n}` over the shared results dir;\n\
         # the assemble job (`{name}-assemble`) runs once all elements succeeded.\n\
         # Outside Slurm: `SLURM_ARRAY_TASK_ID=I bash THIS_FILE`.\n\
         {directives}\n\
         #SBATCH --array=0-{last}\n\
         {after}\
         {preamble}\n\
         exec \"$MPO_RUN_BIN\" {args} --shard \"${{SLURM_ARRAY_TASK_ID:?not a Slurm array element: set SLURM_ARRAY_TASK_ID to 0..{last}}}/{n}\"\n",
        exp = job.experiment,
        n = job.shards,
        directives = slurm.directives(&format!("{name}-shards")),
        after = slurm.after.as_ref().map(|id| format!("#SBATCH --dependency=afterok:{id}\n")).unwrap_or_default(),
        preamble = slurm.preamble(job),
        args = job.args(),
    );
    let assemble = format!(
        "#!/bin/bash\n\
         # Written by `mpo-run launch slurm` for experiment `{exp}`: assembles the\n\
         # results of the `{name}-shards` array (submit with\n\
         # `--dependency=afterok:<array job id>`), computes the stages left,\n\
         # collates the results and writes the reports.\n\
         {directives}\n\
         {preamble}\n\
         exec \"$MPO_RUN_BIN\" {args}\n",
        exp = job.experiment,
        directives = slurm.directives(&format!("{name}-assemble")).replace("%A_%a", "%j"),
        preamble = slurm.preamble(job),
        args = job.args(),
    );
    (array, assemble)
}

/// The Kubernetes settings of both jobs.
#[derive(Debug, Clone)]
pub struct K8s {
    pub image: String,
    pub gpus: Option<u32>,
    pub pvc: String,
    /// Absolute.
    pub mount: PathBuf,
}

/// A YAML scalar: JSON's double-quoted string is valid YAML.
fn yaml_str(s: &str) -> String {
    serde_json::to_string(s).expect("a string serialises")
}

/// The Indexed Job manifest and the assemble Job manifest, in that order.
pub fn k8s_manifests(job: &Job, k8s: &K8s) -> (String, String) {
    let name = job.name();
    let cd = format!("cd {} && ", shell_quote(&job.workdir.display().to_string()));
    let element = format!("{cd}exec mpo-run {} --shard \"$JOB_COMPLETION_INDEX/{}\"", job.args(), job.shards);
    let assemble = format!("{cd}exec mpo-run {}", job.args());
    let pod = |script: &str| {
        let resources = match k8s.gpus {
            Some(g) => format!("          resources:\n            limits:\n              nvidia.com/gpu: {g}\n"),
            None => String::new(),
        };
        format!(
            "  template:\n\
             \x20   metadata:\n\
             \x20     labels:\n\
             \x20       app.kubernetes.io/name: mpo-run\n\
             \x20   spec:\n\
             \x20     restartPolicy: Never\n\
             \x20     containers:\n\
             \x20       - name: mpo-run\n\
             \x20         image: {image}\n\
             \x20         command: [\"sh\", \"-c\", {script}]\n\
             {resources}\
             \x20         volumeMounts:\n\
             \x20           - name: results\n\
             \x20             mountPath: {mount}\n\
             \x20     volumes:\n\
             \x20       - name: results\n\
             \x20         persistentVolumeClaim:\n\
             \x20           claimName: {pvc}\n",
            image = yaml_str(&k8s.image),
            script = yaml_str(script),
            mount = yaml_str(&k8s.mount.display().to_string()),
            pvc = yaml_str(&k8s.pvc),
        )
    };
    let header = |kind: &str| {
        format!(
            "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: {name}-{kind}\n  labels:\n    app.kubernetes.io/name: mpo-run\n    app.kubernetes.io/instance: {name}\n"
        )
    };
    let shards = format!(
        "# Written by `mpo-run launch k8s` for experiment `{exp}`: pod I of this\n\
         # Indexed Job runs `mpo-run SPEC --shard I/{n}` (I = JOB_COMPLETION_INDEX)\n\
         # over the results dir on claim `{pvc}`. Then:\n\
         #   kubectl wait --for=condition=complete --timeout=-1s job/{name}-shards\n\
         #   kubectl apply -f {name}-assemble.yaml\n\
         {header}\
         spec:\n\
         \x20 completionMode: Indexed\n\
         \x20 completions: {n}\n\
         \x20 parallelism: {n}\n\
         {pod}",
        exp = job.experiment,
        n = job.shards,
        pvc = k8s.pvc,
        header = header("shards"),
        pod = pod(&element),
    );
    let assemble = format!(
        "# Written by `mpo-run launch k8s` for experiment `{exp}`: assembles the\n\
         # results of job `{name}-shards`; apply it after that job completed\n\
         # (`kubectl wait --for=condition=complete --timeout=-1s job/{name}-shards`).\n\
         {header}\
         spec:\n\
         \x20 completions: 1\n\
         \x20 backoffLimit: 0\n\
         {pod}",
        exp = job.experiment,
        header = header("assemble"),
        pod = pod(&assemble),
    );
    (shards, assemble)
}

/// `dir/rel`, or `rel` if it is absolute.
fn absolute(dir: &Path, rel: &Path) -> PathBuf {
    if rel.is_absolute() {
        rel.to_path_buf()
    } else {
        dir.join(rel)
    }
}

/// Validates the spec and resolves what every element runs; writes nothing.
fn resolve(args: &LaunchArgs, common: &Common) -> Result<(Job, PathBuf)> {
    if args.shards == 0 {
        return Err(UserError("`--shards` must be at least 1 (got 0)".into()).into());
    }
    let (plan, _) = plan_for(&args.spec, &super::load_options(common))?;
    for stage in &args.only {
        if !plan.nodes.iter().any(|n| n.stage == stage) {
            let stages: std::collections::BTreeSet<_> = plan.nodes.iter().map(|n| format!("`{}`", n.stage)).collect();
            return Err(UserError(format!(
                "`--only {stage}`: stage `{stage}` is not in the plan of `{}`; its stages are: {}",
                args.spec.display(),
                stages.into_iter().collect::<Vec<_>>().join(", ")
            ))
            .into());
        }
    }
    let workdir = std::env::current_dir().context("the current dir")?;
    let job = Job {
        experiment: plan.experiment.clone(),
        spec: absolute(&workdir, &args.spec),
        results: absolute(&workdir, Path::new(&plan.results_dir)),
        workdir: workdir.clone(),
        sets: common.sets.clone(),
        only: args.only.clone(),
        shards: args.shards,
    };
    let out = absolute(&workdir, args.out.as_deref().unwrap_or(&Path::new("launch").join(&plan.experiment)));
    Ok((job, out))
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing `{}`", path.display()))
}

/// Runs `mpo-run launch TARGET …`; returns the exit code.
pub fn run(target: Target, common: &Common) -> Result<i32> {
    match target {
        Target::Slurm(a) => slurm(a, common),
        Target::K8s(a) => k8s(a, common),
    }
}

fn slurm(a: SlurmArgs, common: &Common) -> Result<i32> {
    for v in a.partition.iter().chain(&a.time).chain(&a.account).chain(&a.extra) {
        if v.contains(['\n', '\r']) {
            return Err(UserError(format!("`{}`: an `#SBATCH` value must be one line", v.escape_debug())).into());
        }
    }
    if let Some(id) = &a.after {
        if id.is_empty() || !id.split(':').all(|part| !part.is_empty() && part.chars().all(|c| c.is_ascii_digit())) {
            return Err(UserError(format!("`--after {id}`: expected a Slurm job id (digits), or ids joined by `:`")).into());
        }
    }
    let (job, out) = resolve(&a.launch, common)?;
    let slurm = Slurm {
        partition: a.partition,
        gpus_per_task: a.gpus_per_task,
        cpus_per_task: a.cpus_per_task,
        time: a.time,
        account: a.account,
        extra: a.extra,
        after: a.after,
        program: std::env::current_exe().context("the path of `mpo-run`")?,
        logs: out.join("logs"),
    };
    // Slurm does not create the output file's dir: a job whose dir is
    // missing fails without a word.
    std::fs::create_dir_all(&slurm.logs).with_context(|| format!("creating `{}`", slurm.logs.display()))?;
    let (array, assemble) = slurm_scripts(&job, &slurm);
    let name = job.name();
    let (array_path, assemble_path) = (out.join(format!("{name}-shards.sbatch")), out.join(format!("{name}-assemble.sbatch")));
    write(&array_path, &array)?;
    write(&assemble_path, &assemble)?;
    let (array_q, assemble_q) = (shell_quote(&array_path.display().to_string()).into_owned(), shell_quote(&assemble_path.display().to_string()).into_owned());
    if !a.submit {
        println!("{}", array_path.display());
        println!("{}", assemble_path.display());
        eprintln!("submit with:");
        eprintln!("  array=$(sbatch --parsable {array_q})");
        eprintln!("  sbatch --dependency=afterok:${{array%%;*}} {assemble_q}");
        return Ok(0);
    }
    eprintln!("wrote {array_q}");
    eprintln!("wrote {assemble_q}");
    let array_id = sbatch(&[], &array_path)?;
    let assemble_id = sbatch(&[format!("--dependency=afterok:{array_id}")], &assemble_path)?;
    // Only the ids on stdout, so that a shell can chain waves:
    // `--after $(mpo-run launch slurm … --submit | tail -n1)`.
    println!("{array_id}");
    println!("{assemble_id}");
    eprintln!("submitted array job {array_id} ({} elements) and assemble job {assemble_id} (after {array_id})", job.shards);
    eprintln!("watch: squeue -j {array_id},{assemble_id}; logs: {}", slurm.logs.display());
    Ok(0)
}

/// `sbatch --parsable FLAGS SCRIPT`; returns the job id (`id[;cluster]`).
fn sbatch(flags: &[String], script: &Path) -> Result<String> {
    let out = Command::new("sbatch").arg("--parsable").args(flags).arg(script).output().map_err(|e| {
        UserError(format!(
            "cannot run `sbatch`: {e}\nhint: submit from a Slurm login node, or run without `--submit` and submit the scripts by hand"
        ))
    })?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let id = stdout.trim().split(';').next().unwrap_or_default().to_string();
    if !out.status.success() || id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
        anyhow::bail!(
            "`sbatch --parsable {} {}` failed ({}): {}{}",
            flags.join(" "),
            script.display(),
            out.status,
            stdout.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(id)
}

fn k8s(a: K8sArgs, common: &Common) -> Result<i32> {
    let (job, out) = resolve(&a.launch, common)?;
    let mount = absolute(&job.workdir, a.mount.as_deref().unwrap_or(&job.workdir));
    for (what, path) in [("the spec", &job.spec), ("the results dir", &job.results)] {
        if !path.starts_with(&mount) {
            return Err(UserError(format!(
                "{what} `{}` is not under the claim's mount `{}`: the pods would not see it\nhint: pass `--mount DIR` with a dir that holds both, or `--results DIR` under it",
                path.display(),
                mount.display()
            ))
            .into());
        }
    }
    let k8s = K8s { image: a.image, gpus: a.gpus, pvc: a.pvc, mount };
    // The pods `cd` to the current dir when the claim holds it.
    let job = if job.workdir.starts_with(&k8s.mount) { job } else { Job { workdir: k8s.mount.clone(), ..job } };
    let (shards, assemble) = k8s_manifests(&job, &k8s);
    std::fs::create_dir_all(&out).with_context(|| format!("creating `{}`", out.display()))?;
    let name = job.name();
    let (shards_path, assemble_path) = (out.join(format!("{name}-shards.yaml")), out.join(format!("{name}-assemble.yaml")));
    write(&shards_path, &shards)?;
    write(&assemble_path, &assemble)?;
    println!("{}", shards_path.display());
    println!("{}", assemble_path.display());
    eprintln!("apply with:");
    eprintln!("  kubectl apply -f {}", shell_quote(&shards_path.display().to_string()));
    eprintln!("  kubectl wait --for=condition=complete --timeout=-1s job/{name}-shards");
    eprintln!("  kubectl apply -f {}", shell_quote(&assemble_path.display().to_string()));
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_leaves_plain_words_and_quotes_the_rest() {
        assert_eq!(shell_quote("/a/b-c_d.toml"), "/a/b-c_d.toml");
        assert_eq!(shell_quote("mpo.m=3"), "mpo.m=3");
        assert_eq!(shell_quote("/a b/c.toml"), "'/a b/c.toml'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote("$HOME"), "'$HOME'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn names_are_dns_labels() {
        let job = Job {
            experiment: "Table 2_paper".into(),
            spec: "/s".into(),
            results: "/r".into(),
            workdir: "/".into(),
            sets: vec![],
            only: vec![],
            shards: 1,
        };
        assert_eq!(job.name(), "mpo-table-2-paper");
    }
}
