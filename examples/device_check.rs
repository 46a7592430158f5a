//! Fixture parity and decode throughput of local models on a chosen device.
//!
//! `device_check DEVICE [FIXTURES_DIR]` (DEVICE: cpu, cuda, cuda:N):
//! loads tests/fixtures/tiny-llama and tiny-qwen2 on DEVICE, compares logits
//! with the transformers reference (max abs diff), greedy tokens and DPO
//! log-probs, then measures prefill/decode tokens/s of a ~25M-parameter
//! random `init` model at batch 1 and 64 (`BENCH_BATCHES=1,64`,
//! `BENCH_PROMPT=128`, `BENCH_STEPS=64`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::prelude::*;
use mpo_run::model::local::{init_model, GenParams, InitConfig, LocalModel, LocalModelConfig, SeqKv};
use serde_json::Value;

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().expect("ids").iter().map(|x| x.as_u64().expect("id") as u32).collect()
}

fn settings(device: &str) -> LocalModelConfig {
    LocalModelConfig { device: device.to_string(), ..Default::default() }
}

fn parity(fixtures: &Path, name: &str, device: &str) -> bool {
    let t = Instant::now();
    let model = LocalModel::load(&fixtures.join(name), settings(device)).expect("load");
    let load_s = t.elapsed().as_secs_f64();
    let exp: Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures.join(format!("{name}-expected.json"))).expect("json")).expect("json");
    let bytes = std::fs::read(fixtures.join(format!("{name}-expected.safetensors"))).expect("st");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("st");
    let inp = st.tensor("batch_input_ids").expect("batch_input_ids");
    let shape = inp.shape().to_vec();
    let raw: Vec<i64> = inp.data().chunks(8).map(|c| i64::from_le_bytes(c.try_into().expect("i64"))).collect();
    let want: Vec<f32> =
        st.tensor("logits").expect("logits").data().chunks(4).map(|c| f32::from_le_bytes(c.try_into().expect("f32"))).collect();
    let input = Tensor::<2, Int>::from_data(TensorData::new(raw, [shape[0], shape[1]]), model.device());
    let t = Instant::now();
    let got = model.forward_logits(input).try_into_vec_as::<f32>().expect("logits");
    let fwd_s = t.elapsed().as_secs_f64();
    let max_diff = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    let g = &exp["greedy"];
    let params = GenParams { max_new_tokens: g["new_tokens"].as_u64().expect("n") as usize, eos_ids: Some(vec![]), ..Default::default() };
    let out = model.generate(&[(ids(&g["prompt_ids"]), params)]);
    let greedy_ok = out[0].tokens == ids(&g["ids"]);
    let d = &exp["dpo"];
    let prompt = ids(&d["prompt_ids"]);
    let pairs = vec![(prompt.clone(), ids(&d["chosen_ids"])), (prompt, ids(&d["rejected_ids"]))];
    let scores = model.score(&pairs);
    let rel = |a: f64, b: f64| ((a - b) / b).abs();
    let max_rel = scores
        .iter()
        .zip(["policy_chosen_logps", "policy_rejected_logps"])
        .map(|(g, k)| rel(*g, d[k].as_f64().expect(k)))
        .fold(0f64, f64::max);
    let ok = got.len() == want.len() && max_diff < 1e-4 && greedy_ok && max_rel < 1e-4;
    println!(
        "PARITY {name} on {device}: logits max|diff| {max_diff:.3e} ({} values), greedy tokens {}, DPO logp max rel err {max_rel:.3e} => {} (load {load_s:.2}s, first forward {fwd_s:.3}s)",
        got.len(),
        if greedy_ok { "equal" } else { "DIFFER" },
        if ok { "OK" } else { "FAIL" }
    );
    ok
}

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

fn model_25m(device: &str) -> LocalModel {
    let cfg = LocalModelConfig {
        init: Some(InitConfig {
            layers: 8,
            hidden: 512,
            heads: 8,
            kv_heads: 4,
            ff: 1408,
            vocab_size: 4096,
            head_dim: None,
            rope_theta: 10000.0,
            tie_embeddings: true,
            tokenizer: "bpe".into(),
            max_position_embeddings: 4096,
        }),
        ..settings(device)
    };
    init_model(&cfg, &corpus(), 1).expect("init 25M model")
}

fn bench(m: &LocalModel, device: &str, batch: usize, prompt_len: usize, steps: usize) {
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
    for s in 0..steps {
        let toks: Vec<Vec<u32>> = (0..batch).map(|b| vec![((s + b) as u32 + 5) % vocab]).collect();
        let mut refs: Vec<&mut SeqKv> = kvs.iter_mut().collect();
        let news: Vec<&[u32]> = toks.iter().map(Vec::as_slice).collect();
        m.runner.step(&mut refs, &news);
    }
    let decode = t.elapsed().as_secs_f64();
    println!(
        "BENCH 25M on {device} batch {batch:>2}: prefill {:>9.0} tok/s ({prompt_len} tokens/row, {prefill:.3}s), decode {:>8.0} tok/s ({steps} steps, {:.2} ms/step)",
        (batch * prompt_len) as f64 / prefill,
        (batch * steps) as f64 / decode,
        decode * 1e3 / steps as f64
    );
}

fn generate_bench(m: &LocalModel, device: &str, batch: usize, new_tokens: usize) {
    let vocab = m.arch().vocab_size;
    let prompts: Vec<(Vec<u32>, GenParams)> = (0..batch)
        .map(|b| {
            let p: Vec<u32> = (0..32).map(|i| ((i * 11 + b * 5 + 3) % vocab) as u32).collect();
            (p, GenParams { max_new_tokens: new_tokens, temperature: 1.0, seed: b as u64, eos_ids: Some(vec![]), ..Default::default() })
        })
        .collect();
    let t = Instant::now();
    let out = m.generate(&prompts);
    let s = t.elapsed().as_secs_f64();
    let n: usize = out.iter().map(|o| o.tokens.len()).sum();
    println!("GENERATE 25M on {device} batch {batch:>2}: {n} tokens in {s:.2}s = {:.0} tok/s (generate(), sampling, 32-token prompts)", n as f64 / s);
}

fn main() {
    let mut args = std::env::args().skip(1);
    let device = args.next().unwrap_or_else(|| "cpu".into());
    let fixtures: PathBuf =
        args.next().map(PathBuf::from).unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"));
    let mut ok = true;
    if std::env::var("SKIP_PARITY").is_err() {
        for name in ["tiny-llama", "tiny-qwen2"] {
            ok &= parity(&fixtures, name, &device);
        }
    }
    if std::env::var("SKIP_BENCH").is_err() {
        let batches: Vec<usize> = std::env::var("BENCH_BATCHES")
            .unwrap_or_else(|_| "1,64".into())
            .split(',')
            .map(|s| s.trim().parse().expect("batch"))
            .collect();
        let prompt: usize = std::env::var("BENCH_PROMPT").ok().and_then(|s| s.parse().ok()).unwrap_or(128);
        let steps: usize = std::env::var("BENCH_STEPS").ok().and_then(|s| s.parse().ok()).unwrap_or(64);
        let t = Instant::now();
        let m = model_25m(&device);
        {
            use burn::module::Module;
            println!("25M model: {} parameters (vocab {}), init {:.2}s", m.net().num_params(), m.arch().vocab_size, t.elapsed().as_secs_f64());
        }
        bench(&m, &device, 1, 16, 4); // warm-up
        for &b in &batches {
            bench(&m, &device, b, prompt, steps);
        }
        for &b in &batches {
            generate_bench(&m, &device, b, steps);
        }
    }
    if !ok {
        std::process::exit(1);
    }
}
