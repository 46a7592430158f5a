//! `mpo-run launch slurm|k8s` (#24): the jobs it writes (snapshots), its
//! errors, the acceptance test (the array's elements run one after another
//! outside Slurm, then the assembly, equal one plain run) and `--submit`
//! through a stand-in `sbatch`.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{journal_lines, sorted_rows, TestContext};

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// The test dir and the binary's path replaced by placeholders.
fn filtered(ctx: &TestContext, text: &str) -> String {
    let exe = env!("CARGO_BIN_EXE_mpo-run");
    let text = text.replace(exe, "[MPO_RUN]");
    let text = match std::fs::canonicalize(exe) {
        Ok(real) => text.replace(&real.display().to_string(), "[MPO_RUN]"),
        Err(_) => text,
    };
    common::filter(&text, ctx.dir.path())
}

/// A context whose spec's name has a space in it (the scripts must quote it).
fn context() -> TestContext {
    let ctx = TestContext::new();
    std::fs::copy(ctx.path("small.toml"), ctx.path("small spec.toml")).unwrap();
    ctx
}

fn files(ctx: &TestContext, dir: &str) -> String {
    let mut names: Vec<_> = std::fs::read_dir(ctx.path(dir)).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_file()).collect();
    names.sort();
    names
        .iter()
        .map(|p| format!("===== {} =====\n{}", p.file_name().unwrap().to_string_lossy(), std::fs::read_to_string(p).unwrap()))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn slurm_writes_an_array_script_and_an_assemble_script() {
    let ctx = context();
    let out = ctx.run(&[
        "launch", "slurm", "small spec.toml", "--shards", "4", "--partition", "gpu", "--gpus-per-task", "1", "--cpus-per-task", "8",
        "--time", "04:00:00", "--account", "lab 1", "--extra", "--qos=high", "--extra", "#SBATCH --mem=64G", "--set", "mpo.m=2",
        "--set", "planner.flaw_rate=0.25", "--only", "seed_plans", "--after", "4000",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(ctx.path("launch/small/logs").is_dir(), "Slurm's output dir is created");
    insta::assert_snapshot!(filtered(&ctx, &format!("{}\n{}", ctx.snapshot_text(&out), files(&ctx, "launch/small"))));
}

#[test]
fn k8s_writes_an_indexed_job_and_an_assemble_job() {
    let ctx = context();
    let out = ctx.run(&[
        "launch", "k8s", "small spec.toml", "--shards", "3", "--image", "registry.example/mpo-run:0.1", "--gpus", "1", "--pvc", "mpo-shared",
        "--out", "k8s", "--results", "shared/results", "--only", "expert",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    insta::assert_snapshot!(filtered(&ctx, &format!("{}\n{}", ctx.snapshot_text(&out), files(&ctx, "k8s"))));
}

#[test]
fn bad_input_is_a_user_error_and_writes_nothing() {
    let ctx = context();
    let mut text = String::new();
    for args in [
        &["launch", "slurm", "small.toml", "--shards", "0"][..],
        &["launch", "slurm", "bad/unknown_key.toml", "--shards", "2"],
        &["launch", "slurm", "missing.toml", "--shards", "2"],
        &["launch", "slurm", "small.toml", "--shards", "2", "--time", "1:00\n#SBATCH --x"],
        &["launch", "k8s", "small.toml", "--shards", "2", "--mount", "/elsewhere"],
        &["launch", "k8s", "small.toml", "--shards", "2", "--only", "dpo"],
        &["launch", "slurm", "small.toml", "--shards", "2", "--after", "12;x"],
    ] {
        let out = ctx.run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        text += &format!("$ mpo-run {}\n{}\n", args.join(" ").escape_debug(), ctx.snapshot_text(&out));
    }
    assert!(!ctx.path("launch").exists(), "nothing written");
    insta::assert_snapshot!(filtered(&ctx, &text));
}

/// `bash SCRIPT` in the test dir with `SLURM_ARRAY_TASK_ID` (or none), no
/// `MPO_*` variables leaking in.
fn bash(ctx: &TestContext, script: &Path, task: Option<u32>) -> Output {
    let mut cmd = Command::new("bash");
    cmd.arg(script).current_dir(ctx.dir.path()).env("NO_COLOR", "1").env_remove("SLURM_ARRAY_TASK_ID");
    for (k, _) in std::env::vars() {
        if k.starts_with("MPO_") || k.starts_with("MPORUN_") {
            cmd.env_remove(k);
        }
    }
    if let Some(i) = task {
        cmd.env("SLURM_ARRAY_TASK_ID", i.to_string());
    }
    cmd.output().expect("run bash")
}

/// #24's acceptance: the array's elements run one after another (outside
/// Slurm, as `SLURM_ARRAY_TASK_ID=i bash SCRIPT`), then the assemble
/// script, give what one plain run of the spec gives in another dir.
#[test]
fn running_the_array_elements_then_the_assembly_equals_one_plain_run() {
    let reference = TestContext::new();
    let plain = reference.run(&["small.toml"]);
    assert!(plain.status.success(), "{}", stderr(&plain));

    let ctx = context();
    let out = ctx.run(&["launch", "slurm", "small spec.toml", "--shards", "3", "--out", "jobs"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (array, assemble) = (ctx.path("jobs/mpo-small-shards.sbatch"), ctx.path("jobs/mpo-small-assemble.sbatch"));

    let outside = bash(&ctx, &array, None);
    assert!(!outside.status.success() && stderr(&outside).contains("SLURM_ARRAY_TASK_ID"), "{}", stderr(&outside));
    for i in 0..3 {
        let element = bash(&ctx, &array, Some(i));
        assert!(element.status.success(), "element {i}: {}", stderr(&element));
        assert!(stderr(&element).contains(&format!("shard ({i}, 3)")), "element {i}: {}", stderr(&element));
    }
    assert_eq!(journal_lines(&ctx, "expert"), 40, "the elements are disjoint and complete");
    let assembly = bash(&ctx, &assemble, None);
    let e = stderr(&assembly);
    assert!(assembly.status.success(), "{e}");
    assert!(e.contains("0 items computed, 40 reused"), "the assembly reuses the elements' items: {e}");
    for table in ["episodes", "plans"] {
        let path = format!("results/small/{table}.parquet");
        assert_eq!(sorted_rows(&reference.path(&path)), sorted_rows(&ctx.path(&path)), "{table} rows differ");
    }
    assert!(ctx.path("reports/small/index.md").exists() == reference.path("reports/small/index.md").exists());
}

/// `--submit` through a stand-in: Slurm cannot run here, so `sbatch` on
/// `PATH` is a shell script (a test double) that records its arguments
/// and prints a job id the way `sbatch --parsable` does (`id;cluster`).
#[test]
fn submit_makes_the_assemble_job_depend_on_the_array() {
    let ctx = context();
    let bin = ctx.path("fake-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let sbatch = bin.join("sbatch");
    std::fs::write(
        &sbatch,
        "#!/bin/sh\n# Test double of Slurm's sbatch: records its arguments, prints a job id.\necho \"$*\" >> \"$FAKE_SBATCH_LOG\"\nn=$(wc -l < \"$FAKE_SBATCH_LOG\")\necho \"$((4100 + n));cluster-a\"\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&sbatch, std::fs::Permissions::from_mode(0o755)).unwrap();
    let log = ctx.path("sbatch.log");
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let out = ctx
        .command(&["launch", "slurm", "small spec.toml", "--shards", "2", "--submit"])
        .env("PATH", path)
        .env("FAKE_SBATCH_LOG", &log)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let calls = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<_> = calls.lines().collect();
    assert_eq!(lines.len(), 2, "{calls}");
    assert!(lines[0].starts_with("--parsable ") && lines[0].ends_with("mpo-small-shards.sbatch"), "{calls}");
    assert!(lines[1].starts_with("--parsable --dependency=afterok:4101 ") && lines[1].ends_with("mpo-small-assemble.sbatch"), "{calls}");
    insta::assert_snapshot!(filtered(&ctx, &format!("{}\n===== sbatch calls =====\n{calls}", ctx.snapshot_text(&out))));
}
