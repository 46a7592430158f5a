//! Local inference beside PyTorch/transformers on the CPU: the same Hugging
//! Face dir (an `init` model of the quickstart agent's shape: 2 layers, 128
//! wide, 4 heads, 2 kv heads, a byte-level BPE vocabulary), the same token
//! ids, 2 threads each (`RAYON_NUM_THREADS`/`THREADS`). Prefill (one forward
//! pass over fresh caches) and decode (cached single-token steps after a
//! prefill) at the quickstart's batch shapes, measured in interleaved A/B
//! rounds (each a repetition of about half a second); medians and mpo-run ÷ transformers ratios are printed and
//! recorded, with how many rows' greedy next tokens agree.
//!
//! The Python side is `bench/torch_infer.py` in the engines' venv
//! (`MPO_RUN_PYTHON`, `python/setup.sh trl`: torch + transformers); without
//! it the bench is skipped. `cargo bench --bench vs_torch`; quick mode (CI)
//! runs tiny shapes once.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use mpo_run::model::local::{init_model, LocalModel, SeqKv};
use serde_json::{json, Value};

/// Household-like sentences over enough distinct words that the BPE
/// vocabulary reaches the quickstart's 2,000 tokens (the head's size).
fn corpus() -> Vec<String> {
    let objs = ["mug", "apple", "egg", "pillow", "cd", "knife", "plate", "book", "lamp", "towel"];
    let places = ["countertop", "fridge", "shelf", "drawer", "sinkbasin", "microwave", "armchair"];
    // Seeded random words: enough distinct text for ~2,000 BPE merges.
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut word = || -> String {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let n = 3 + (x % 6) as usize;
        (0..n).map(|k| (b'a' + ((x >> (5 * k + 3)) % 26) as u8) as char).collect()
    };
    let mut out = Vec::new();
    for i in 0..6000usize {
        let (o, p) = (objs[i % objs.len()], places[(i / 10) % places.len()]);
        let (w1, w2, w3) = (word(), word(), word());
        out.push(format!(
            "Your task is to: put a clean {o} in {p} {}. Looking for {o}: none here. \
             Action: go to {p} {}\nObservation: On the {p}, you see a {w1} {w2} and a {w3} {o}.",
            i % 9, i % 5
        ));
    }
    out
}

struct Shape {
    batch: usize,
    len: usize,
    /// 0: prefill only.
    steps: usize,
}

/// [`once`] `reps` times over: summed times.
fn ours(m: &LocalModel, s: &Shape, reps: usize) -> (f64, f64, Vec<u32>) {
    let (mut p, mut d, mut greedy) = (0.0, 0.0, Vec::new());
    for _ in 0..reps {
        let (a, b, g) = once(m, s);
        p += 1.0 / a;
        d += 1.0 / b;
        greedy = g;
    }
    (reps as f64 / p, reps as f64 / d, greedy)
}

/// (tokens/s of the prefill, of the decode steps, greedy next tokens).
fn once(m: &LocalModel, s: &Shape) -> (f64, f64, Vec<u32>) {
    let vocab = m.arch().vocab_size as u32;
    let prompts: Vec<Vec<u32>> =
        (0..s.batch).map(|b| (0..s.len).map(|i| ((i * 7 + b * 13) as u32 + 3) % vocab).collect()).collect();
    let mut kvs: Vec<SeqKv> = (0..s.batch).map(|_| SeqKv::new(m.arch().num_hidden_layers)).collect();
    let t = Instant::now();
    let logits = {
        let mut refs: Vec<&mut SeqKv> = kvs.iter_mut().collect();
        let news: Vec<&[u32]> = prompts.iter().map(Vec::as_slice).collect();
        m.runner.step(&mut refs, &news)
    };
    let prefill = (s.batch * s.len) as f64 / t.elapsed().as_secs_f64();
    let greedy = logits
        .iter()
        .map(|l| l.iter().enumerate().fold((0, f32::NEG_INFINITY), |a, (i, &x)| if x > a.1 { (i, x) } else { a }).0 as u32)
        .collect();
    let t = Instant::now();
    for step in 0..s.steps {
        let toks: Vec<Vec<u32>> = (0..s.batch).map(|b| vec![((step + b) as u32 + 5) % vocab]).collect();
        let mut refs: Vec<&mut SeqKv> = kvs.iter_mut().collect();
        let news: Vec<&[u32]> = toks.iter().map(Vec::as_slice).collect();
        m.runner.step(&mut refs, &news);
    }
    let decode = (s.batch * s.steps) as f64 / t.elapsed().as_secs_f64().max(1e-9);
    (prefill, decode, greedy)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let mut figures = common::Figures::start("vs_torch", None);
    let quick = figures.quick();
    let f = &mut figures;
    let Some(python) = std::env::var("MPO_RUN_PYTHON").ok().filter(|p| !p.is_empty()) else {
        f.skipped("MPO_RUN_PYTHON is not set (`export MPO_RUN_PYTHON=$(bash python/setup.sh trl)`)");
        return;
    };
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "2".into());
    let cfg = common::init_config(2, 128, 4, 2, 512, 2000);
    let m = init_model(&cfg, &corpus(), 7).expect("init the agent-shaped model");
    let dir = std::env::temp_dir().join(format!("mpo-vs-torch-{}", std::process::id()));
    m.save(&dir).expect("save the model");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/torch_infer.py");
    let mut child = Command::new(&python)
        .arg(&script)
        .arg(&dir)
        .env("THREADS", &threads)
        .env("OMP_NUM_THREADS", &threads)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the PyTorch side");
    let mut to_py = child.stdin.take().expect("stdin");
    let mut from_py = BufReader::new(child.stdout.take().expect("stdout"));
    let mut read = || -> Value {
        let mut line = String::new();
        from_py.read_line(&mut line).expect("read the PyTorch side");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("PyTorch side answered `{line}`: {e}"))
    };
    let hello = read();
    println!("vs_torch: torch {}, {threads} threads each, vocab {}", hello["torch"], m.arch().vocab_size);

    let shapes: Vec<Shape> = if quick {
        vec![Shape { batch: 2, len: 16, steps: 0 }, Shape { batch: 2, len: 16, steps: 4 }]
    } else {
        vec![
            Shape { batch: 1, len: 128, steps: 0 },
            Shape { batch: 32, len: 128, steps: 0 },
            Shape { batch: 64, len: 1024, steps: 0 },
            Shape { batch: 1, len: 128, steps: 64 },
            Shape { batch: 32, len: 1024, steps: 16 },
        ]
    };
    let rounds = if quick { 1 } else { 5 };
    for s in &shapes {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let mut agree = 0;
        // Warm-up on both sides (which also sizes the repetitions: about
        // half a second per measurement), then interleaved rounds.
        let t = Instant::now();
        let _ = ours(&m, s, 1);
        let reps = if quick { 1 } else { (0.5 / t.elapsed().as_secs_f64()).clamp(1.0, 200.0) as usize };
        let job = json!({"kind": if s.steps > 0 { "decode" } else { "prefill" }, "batch": s.batch, "len": s.len, "steps": s.steps, "reps": reps});
        writeln!(to_py, "{job}").expect("write");
        let _ = read();
        // A pause before each side, so that the other's idle threads
        // (OpenMP's and rayon's spin a while after work) have gone to sleep.
        let pause = || std::thread::sleep(std::time::Duration::from_millis(if quick { 0 } else { 500 }));
        for _ in 0..rounds {
            pause();
            let (p, d, greedy) = ours(&m, s, reps);
            a.push(if s.steps > 0 { d } else { p });
            pause();
            writeln!(to_py, "{job}").expect("write");
            let r = read();
            b.push(r[if s.steps > 0 { "decode_tokens_per_s" } else { "prefill_tokens_per_s" }].as_f64().unwrap_or(f64::NAN));
            let theirs: Vec<u32> = serde_json::from_value(r["greedy"].clone()).unwrap_or_default();
            agree = greedy.iter().zip(&theirs).filter(|(x, y)| x == y).count();
        }
        let what = if s.steps > 0 {
            format!("decode b{}x{} ctx, {} steps", s.batch, s.len, s.steps)
        } else {
            format!("prefill b{}x{}", s.batch, s.len)
        };
        let (ma, mb) = (median(a), median(b));
        println!(
            "{what:<32} mpo-run {ma:>9.0} tok/s  transformers {mb:>9.0} tok/s  ratio {:>5.2}x  (greedy next token equal in {agree}/{} rows)",
            ma / mb,
            s.batch
        );
        let detail = format!("agent shape, {threads} threads, median of {rounds} interleaved rounds of {reps} repetitions; greedy equal {agree}/{}", s.batch);
        f.record(&format!("{what}: mpo-run"), ma, "tokens/s", &detail);
        f.record(&format!("{what}: transformers"), mb, "tokens/s", &detail);
        f.record(&format!("{what}: ratio"), ma / mb, "x", &detail);
    }
    drop(to_py);
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
