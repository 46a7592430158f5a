//! What every bench target shares: the quick mode and the machine-readable
//! results `bench/benchmarks.py` turns into `BENCHMARKS.md`.
//!
//! Quick mode (tiny sizes, a few seconds each) is on when `MPO_BENCH_QUICK`
//! is set, or when the binary runs without `--bench`, i.e. under `cargo test
//! --release` (the benches have `test = true`), which is how CI checks that
//! every target still runs. `cargo bench` passes `--bench`: full sizes.
//!
//! Every figure a bench prints is also one JSON line in
//! `$MPO_BENCH_RESULTS/<bench>.jsonl` (default `target/bench-results/`,
//! beside the profile folder of the binary), rewritten on each run:
//! `{"bench", "figure", "value", "unit", "detail", "quick"}`; a bench that
//! cannot run here writes one `{"bench", "skipped"}` line instead.

#![allow(dead_code)]

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;

use mpo_run::model::local::{InitConfig, LocalModelConfig};

/// A local model's settings for `init_model`: a Llama-style transformer of
/// this shape with a byte-level BPE tokenizer (the quickstart's kind).
pub fn init_config(layers: usize, hidden: usize, heads: usize, kv_heads: usize, ff: usize, vocab_size: usize) -> LocalModelConfig {
    LocalModelConfig {
        init: Some(InitConfig {
            layers,
            hidden,
            heads,
            kv_heads,
            ff,
            vocab_size,
            head_dim: None,
            rope_theta: 10000.0,
            tie_embeddings: true,
            tokenizer: "bpe".into(),
            max_position_embeddings: 4096,
        }),
        ..Default::default()
    }
}

pub struct Figures {
    bench: &'static str,
    quick: bool,
    out: Option<File>,
}

impl Figures {
    /// `legacy_quick`: the bench's own older quick-mode variable, still honoured.
    pub fn start(bench: &'static str, legacy_quick: Option<&str>) -> Figures {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let set = |k: &str| std::env::var_os(k).is_some_and(|v| !v.is_empty() && v != "0");
        let quick = set("MPO_BENCH_QUICK") || legacy_quick.is_some_and(set) || !args.iter().any(|a| a == "--bench");
        // libtest's listing (`cargo test -- --list`, cargo-nextest): one test
        // per bench, never an ignored one.
        if args.iter().any(|a| a == "--list") {
            if !args.iter().any(|a| a == "--ignored") {
                println!("{bench}: test");
            }
            std::process::exit(0);
        }
        // `cargo test --release NAME` hands NAME to every test binary: run
        // only when it matches this bench, as libtest would (skipping the
        // values of libtest's options).
        let takes_value = ["--skip", "--test-threads", "--color", "--format", "--logfile", "-Z"];
        let filter = args
            .iter()
            .enumerate()
            .find(|(i, a)| !a.starts_with('-') && (*i == 0 || !takes_value.contains(&args[i - 1].as_str())));
        if let Some((_, filter)) = filter {
            if !bench.contains(filter.as_str()) {
                println!("{bench}: skipped (filter `{filter}`)");
                std::process::exit(0);
            }
        }
        let dir = std::env::var_os("MPO_BENCH_RESULTS").map(PathBuf::from).unwrap_or_else(default_dir);
        let path = dir.join(format!("{bench}.jsonl"));
        let out = std::fs::create_dir_all(&dir).and_then(|_| File::create(&path));
        let out = match out {
            Ok(f) => Some(f),
            Err(e) => {
                eprintln!("{bench}: cannot write {}: {e}; figures are printed only", path.display());
                None
            }
        };
        if quick {
            println!("{bench}: quick mode (tiny sizes; `cargo bench` without MPO_BENCH_QUICK for real figures)");
        }
        Figures { bench, quick, out }
    }

    pub fn quick(&self) -> bool {
        self.quick
    }

    /// One figure: `value` in `unit`, `detail` says what was measured (sizes, settings).
    pub fn record(&mut self, figure: &str, value: f64, unit: &str, detail: &str) {
        let line = serde_json::json!({
            "bench": self.bench, "figure": figure, "value": value, "unit": unit,
            "detail": detail, "quick": self.quick,
        });
        self.write(line);
    }

    /// The bench cannot run on this machine (a missing simulator, say).
    pub fn skipped(&mut self, reason: &str) {
        println!("{} bench skipped: {reason}", self.bench);
        let line = serde_json::json!({ "bench": self.bench, "skipped": reason, "quick": self.quick });
        self.write(line);
    }

    fn write(&mut self, line: serde_json::Value) {
        if let Some(f) = &mut self.out {
            let _ = writeln!(f, "{line}");
        }
    }
}

/// `target/bench-results`: the binary is `target/<profile>/deps/<bench>-<hash>`.
fn default_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    match exe.ancestors().nth(3) {
        Some(target) if !target.as_os_str().is_empty() => target.join("bench-results"),
        _ => PathBuf::from("bench-results"),
    }
}
