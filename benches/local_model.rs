//! Local-model throughput on the CPU (flex backend): prefill and decode
//! tokens/s at batch 1 and 32 for the tiny fixtures and a ~25M-parameter
//! `init` model, and multi-turn episode throughput through `ChatModel` with
//! and without prefix KV reuse. `cargo bench --bench local_model`
//! (quick mode: `MPO_BENCH_QUICK=1` or `LOCAL_BENCH_QUICK=1`, or `cargo test
//! --release --bench local_model`).

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use mpo_run::model::local::{init_model, LocalModel, LocalModelConfig, SeqKv};
use mpo_run::model::{ChatModel, ChatRequest, Message};

fn corpus() -> Vec<String> {
    let objs = ["mug", "apple", "egg", "pillow", "cd", "knife", "plate", "book", "lamp", "towel"];
    let places = ["countertop 1", "fridge 1", "shelf 2", "drawer 3", "sinkbasin 1", "microwave 1", "armchair 1"];
    let mut out = Vec::new();
    for (i, o) in objs.iter().enumerate() {
        for (j, p) in places.iter().enumerate() {
            out.push(format!(
                "Your task is to: put a clean {o} in {p}. Step {i}: go to where the {o} may be placed. \
                 Thought: Now I find the {o} ({j}). Next, I need to take it.\nAction: take {o} {j} from {p}\n\
                 Observation: You pick up the {o} {j} from the {p}."
            ));
        }
    }
    out
}

fn model_25m() -> LocalModel {
    let cfg = common::init_config(8, 512, 8, 4, 1408, 4096);
    init_model(&cfg, &corpus(), 1).expect("init 25M model")
}

fn params(m: &LocalModel) -> usize {
    use burn::module::Module;
    m.net().num_params()
}

fn prefill_decode(f: &mut common::Figures, name: &str, m: &LocalModel, batch: usize, prompt_len: usize, decode_steps: usize) {
    let vocab = m.arch().vocab_size as u32;
    let prompts: Vec<Vec<u32>> =
        (0..batch).map(|b| (0..prompt_len).map(|i| ((i * 7 + b * 13) as u32 + 3) % vocab).collect()).collect();
    let mut kvs: Vec<SeqKv> = (0..batch).map(|_| SeqKv::new(m.arch().num_hidden_layers)).collect();
    let t = Instant::now();
    {
        let mut refs: Vec<&mut SeqKv> = kvs.iter_mut().collect();
        let news: Vec<&[u32]> = prompts.iter().map(Vec::as_slice).collect();
        m.runner.step(&mut refs, &news);
    }
    let prefill = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for s in 0..decode_steps {
        let toks: Vec<Vec<u32>> = (0..batch).map(|b| vec![((s + b) as u32 + 5) % vocab]).collect();
        let mut refs: Vec<&mut SeqKv> = kvs.iter_mut().collect();
        let news: Vec<&[u32]> = toks.iter().map(Vec::as_slice).collect();
        m.runner.step(&mut refs, &news);
    }
    let decode = t.elapsed().as_secs_f64();
    println!(
        "{name:<12} batch {batch:>2}: prefill {:>9.0} tok/s ({prompt_len} tokens/row), decode {:>8.0} tok/s ({decode_steps} steps)",
        (batch * prompt_len) as f64 / prefill,
        (batch * decode_steps) as f64 / decode
    );
    let detail = format!("{prompt_len}-token prompts, {decode_steps} decode steps, flex CPU backend");
    f.record(&format!("{name} prefill, batch {batch}"), (batch * prompt_len) as f64 / prefill, "tokens/s", &detail);
    f.record(&format!("{name} decode, batch {batch}"), (batch * decode_steps) as f64 / decode, "tokens/s", &detail);
}

fn episodes(f: &mut common::Figures, name: &str, m: Arc<LocalModel>, n: usize, turns: usize, max_tokens: u32) -> f64 {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let t = Instant::now();
    rt.block_on(async {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let m = m.clone();
                tokio::spawn(async move {
                    let mut req = ChatRequest::new(vec![
                        Message::system("You are a household agent. Think, then act.".repeat(4)),
                        Message::user(format!("Your task is to: put a clean mug {i} in coffeemachine.")),
                    ]);
                    req.params.temperature = Some(1.0);
                    req.params.max_tokens = Some(max_tokens);
                    req.params.seed = Some(i as u64);
                    for turn in 0..turns {
                        let c = m.chat(&req).await.expect("chat");
                        req.messages.push(Message::assistant(c.texts[0].clone()));
                        req.messages.push(Message::user(format!("Observation {turn}: You see a countertop 1.")));
                    }
                })
            })
            .collect();
        for h in handles {
            h.await.expect("join");
        }
    });
    let secs = t.elapsed().as_secs_f64();
    println!(
        "{name:<28} {n} episodes x {turns} turns: {secs:>6.2} s, {:>6.1} turns/s (prompt tokens reused: {})",
        (n * turns) as f64 / secs,
        m.engine_stats().1
    );
    let detail = format!("{n} concurrent episodes x {turns} turns, up to {max_tokens} tokens per turn");
    f.record(&format!("{name} chat turns"), (n * turns) as f64 / secs, "turns/s", &detail);
    secs
}

fn main() {
    let mut figures = common::Figures::start("local_model", Some("LOCAL_BENCH_QUICK"));
    let quick = figures.quick();
    let f = &mut figures;
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let steps = if quick { 8 } else { 32 };
    for name in ["tiny-llama", "tiny-qwen2"] {
        let m = LocalModel::load(&fixtures.join(name), LocalModelConfig::default()).expect("load fixture");
        for b in [1, 32] {
            prefill_decode(f, name, &m, b, 128, steps);
        }
    }
    let t = Instant::now();
    let big = model_25m();
    println!("init-25m: {} parameters, vocab {}, built in {:.1} s", params(&big), big.arch().vocab_size, t.elapsed().as_secs_f64());
    f.record("init-25m parameters", params(&big) as f64, "parameters", &format!("vocab {}", big.arch().vocab_size));
    for b in [1, 32] {
        prefill_decode(f, "init-25m", &big, b, 128, if quick { 4 } else { 16 });
    }
    let (n, turns, max_tokens) = if quick { (8, 3, 16) } else { (32, 4, 24) };
    for name in ["tiny-llama"] {
        for reuse in [true, false] {
            let cfg = LocalModelConfig { kv_cache_tokens: if reuse { 1 << 20 } else { 0 }, ..Default::default() };
            let m = Arc::new(LocalModel::load(&fixtures.join(name), cfg).expect("load"));
            episodes(f, &format!("{name} kv-reuse={reuse}"), m, n, turns, max_tokens);
        }
    }
    let dir = std::env::temp_dir().join(format!("mpo-bench-25m-{}", std::process::id()));
    big.save(&dir).expect("save 25M model");
    for reuse in [true, false] {
        let cfg = LocalModelConfig { kv_cache_tokens: if reuse { 1 << 20 } else { 0 }, ..Default::default() };
        let m = Arc::new(LocalModel::load(&dir, cfg).expect("load 25M"));
        episodes(f, &format!("init-25m kv-reuse={reuse}"), m, n / 2, turns, max_tokens);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
