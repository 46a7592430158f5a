//! Shared harness of the end-to-end tests: a temp working dir with the test
//! specs copied in, and a way to run the real `mpo-run` binary there.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct TestContext {
    pub dir: tempfile::TempDir,
}

impl TestContext {
    /// A fresh dir holding `tests/fixtures/specs/*` (and `bad/`).
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        copy_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/specs"), dir.path());
        Self { dir }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// `mpo-run ARGS` in the test dir, with no `MPO_*` variables leaking in.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mpo-run"));
        cmd.args(args).current_dir(self.dir.path());
        for (k, _) in std::env::vars() {
            if k.starts_with("MPO_") || k.starts_with("MPORUN_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("NO_COLOR", "1");
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run mpo-run")
    }

    /// Exit code, stdout and stderr as one text, with run-dependent parts
    /// (times, log file names) filtered, for snapshots.
    pub fn snapshot_text(&self, out: &Output) -> String {
        let text = format!(
            "exit code: {}\n----- stdout -----\n{}----- stderr -----\n{}",
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        filter(&text, self.dir.path())
    }

    /// Rewrites a spec file in the test dir.
    pub fn write(&self, rel: &str, text: &str) {
        std::fs::write(self.path(rel), text).expect("write spec");
    }
}

pub fn filter(text: &str, dir: &Path) -> String {
    let mut t = text.replace(&dir.display().to_string(), "[TEMP]");
    let re_secs = regex_lite_replace(&t, "ran in ", "s (");
    t = re_secs;
    t.lines()
        .map(|l| {
            if l.trim_start().starts_with("log: ") {
                "  log: [LOG]".to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// Replaces what lies between `start` and `end` on each line with `[T]`.
fn regex_lite_replace(text: &str, start: &str, end: &str) -> String {
    text.lines()
        .map(|l| match l.find(start) {
            Some(i) => match l[i + start.len()..].find(end) {
                Some(j) => format!("{}{}[T]{}", &l[..i], start, &l[i + start.len() + j..]),
                None => l.to_string(),
            },
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

/// Rows of a Parquet file as sorted JSON lines (order-independent compare),
/// without `finished_at`: two runs finish the same episode at different
/// times of day. (A resumed run reuses a journaled episode's time, which
/// `tests/schema.rs` checks.)
pub fn sorted_rows(path: &Path) -> Vec<String> {
    let df = mpo_run::store::table::read_parquet(path).expect("read parquet");
    let mut rows: Vec<String> = mpo_run::store::table::frame_to_json(&df)
        .unwrap()
        .into_iter()
        .map(|mut v| {
            if let Some(o) = v.as_object_mut() {
                o.remove("finished_at");
            }
            v.to_string()
        })
        .collect();
    rows.sort();
    rows
}

/// Lines in the item journals of `namespace` (each a finished item, unless
/// a kill tore the last one).
pub fn journal_lines(ctx: &TestContext, namespace: &str) -> usize {
    let Ok(rd) = std::fs::read_dir(ctx.path(&format!("results/items/{namespace}"))) else { return 0 };
    rd.filter_map(|e| e.ok())
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default().lines().count())
        .sum()
}

/// Runs the binary off the async threads (tests that also serve HTTP).
pub async fn run_bin(ctx: &TestContext, args: &[&str]) -> Output {
    let mut cmd = ctx.command(args);
    tokio::task::spawn_blocking(move || cmd.output().expect("run mpo-run")).await.unwrap()
}

/// The Python of the training engines' pinned venv, from `var`
/// (`MPO_RUN_PYTHON`: TRL, transformers, pyarrow, pandas, DuckDB;
/// `MPO_RUN_LF_PYTHON`: LLaMA-Factory), which `.ci/run` sets through
/// `python/setup.sh`. Without it the test fails and says how to get it:
/// the tests that need a real Python peer never skip silently.
pub fn engine_python(var: &str) -> String {
    match std::env::var(var) {
        Ok(p) if !p.is_empty() => p,
        _ => panic!(
            "{var} is not set: run the tests with `bash .ci/run`, or `export {var}=$(bash python/setup.sh{})` first",
            match var {
                "MPO_RUN_LF_PYTHON" => " llamafactory",
                "MPO_RUN_VLLM_PYTHON" => " vllm",
                _ => "",
            }
        ),
    }
}

/// One live (not zombie) process, from /proc.
#[derive(Clone, Debug)]
pub struct Proc {
    pub pid: i32,
    pub ppid: i32,
    /// Its process group.
    pub pgrp: i32,
}

impl Proc {
    /// Its command line, arguments joined by spaces ("" once it is gone).
    pub fn cmdline(&self) -> String {
        let raw = std::fs::read(format!("/proc/{}/cmdline", self.pid)).unwrap_or_default();
        String::from_utf8_lossy(&raw).replace('\0', " ").trim_end().to_string()
    }
}

/// Every live (not zombie) process.
pub fn live_processes() -> Vec<Proc> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // pid (comm) state ppid pgrp …: comm may hold spaces and parentheses.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else { continue };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.len() < 3 || f[0] == "Z" {
            continue;
        }
        let (Ok(ppid), Ok(pgrp)) = (f[1].parse::<i32>(), f[2].parse::<i32>()) else { continue };
        out.push(Proc { pid, ppid, pgrp });
    }
    out
}

/// Processes in any of the process groups `groups`, as (pid, command line).
pub fn processes_in(groups: &[i32]) -> Vec<(i32, String)> {
    live_processes().into_iter().filter(|p| groups.contains(&p.pgrp)).map(|p| (p.pid, p.cmdline())).collect()
}

/// Processes whose command line mentions `needle` (a test's own dir), as
/// (pid, command line); never cargo's.
pub fn processes_with(needle: &str) -> Vec<(i32, String)> {
    live_processes()
        .into_iter()
        .map(|p| (p.pid, p.cmdline()))
        .filter(|(_, cmd)| cmd.contains(needle) && !cmd.contains("cargo"))
        .collect()
}

/// Polls `left` every 200 ms until it finds nothing or `limit` passes;
/// returns what it found last.
pub fn wait_empty<T>(limit: std::time::Duration, left: impl Fn() -> Vec<T>) -> Vec<T> {
    let start = std::time::Instant::now();
    loop {
        let now = left();
        if now.is_empty() || start.elapsed() > limit {
            return now;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}
