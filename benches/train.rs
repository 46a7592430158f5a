//! Training throughput on the CPU (flex backend): SFT and DPO tokens/s for
//! the tiny fixture, the quickstart's agent shape at several sequence
//! lengths (1 and all worker threads), and a ~25M-parameter `init` model.
//! `cargo bench --bench train` (quick mode: `MPO_BENCH_QUICK=1` or
//! `TRAIN_BENCH_QUICK=1`, or `cargo test --release --bench train`).

mod common;

use std::path::Path;
use std::time::Instant;

use mpo_run::model::local::{init_model, LocalModel, LocalModelConfig};
use mpo_run::train::data::{Example, PairExample};
use mpo_run::train::{train, DpoLoss, Objective, Precision, RunControl, Schedule, TrainConfig};

fn init(layers: usize, hidden: usize, heads: usize, kv: usize, ff: usize, vocab: usize) -> LocalModel {
    let corpus: Vec<String> = (0..400).map(|i| format!("go to cabinet {i} take mug {i} from shelf {} put it in drawer {}", i % 7, i % 5)).collect();
    let cfg = common::init_config(layers, hidden, heads, kv, ff, vocab);
    init_model(&cfg, &corpus, 1).expect("init model")
}

fn examples(vocab: usize, n: usize, len: usize) -> Vec<Example> {
    (0..n)
        .map(|k| {
            let ids: Vec<u32> = (0..len).map(|i| ((i * 31 + k * 17) % (vocab - 3)) as u32 + 3).collect();
            Example::prompt_completion(&ids[..len / 4], &ids[len / 4..])
        })
        .collect()
}

fn cfg(batch: usize, micro: usize, threads: usize) -> TrainConfig {
    TrainConfig {
        lr: 1e-4,
        epochs: 1,
        batch_size: batch,
        micro_batch: micro,
        schedule: Schedule::Constant,
        threads: Some(threads),
        max_grad_norm: Some(1.0),
        ..TrainConfig::default()
    }
}

fn run(f: &mut common::Figures, name: &str, m: &LocalModel, obj: &Objective, cfg: &TrainConfig, tokens_per_step: usize) {
    let t = Instant::now();
    let out = train(m.net().clone(), m.arch(), obj, cfg, name, &RunControl::default()).expect("train");
    let secs = t.elapsed().as_secs_f64();
    let steps = out.log.len();
    println!(
        "{name:<44} {steps:>3} steps  {:>8.2} s/step  {:>9.0} tokens/s",
        secs / steps as f64,
        (steps * tokens_per_step) as f64 / secs
    );
    let detail = format!("{steps} optimizer steps of {tokens_per_step} tokens, threads = {}", cfg.threads.unwrap_or(1));
    f.record(name, (steps * tokens_per_step) as f64 / secs, "tokens/s", &detail);
}

fn main() {
    let mut figures = common::Figures::start("train", Some("TRAIN_BENCH_QUICK"));
    let quick = figures.quick();
    let f = &mut figures;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("training throughput, flex CPU backend, {cores} cores (forward + backward + AdamW)");
    let steps = if quick { 2 } else { 4 };

    // The fixture (tiny-llama), SFT and DPO.
    let fixture = LocalModel::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-llama"), LocalModelConfig::default())
        .expect("fixture");
    let v = fixture.arch().vocab_size;
    let ex = examples(v, 8 * steps, 128);
    run(f, "sft tiny-llama b8x128", &fixture, &Objective::Sft(ex.clone()), &cfg(8, 8, cores), 8 * 128);
    let pairs: Vec<PairExample> = ex.chunks(2).map(|c| PairExample { chosen: c[0].clone(), rejected: c[1].clone() }).collect();
    let reference = vec![(-100.0, -100.0); pairs.len()];
    let dpo = Objective::Dpo { pairs, reference, beta: 0.1, label_smoothing: 0.0, loss: DpoLoss::Sigmoid };
    run(f, "dpo tiny-llama b4 pairs x128", &fixture, &dpo, &cfg(4, 4, cores), 8 * 128);

    // The quickstart agent's shape at several lengths.
    let agent = init(2, 128, 4, 2, 512, 1024);
    let v = agent.arch().vocab_size;
    let lens: &[usize] = if quick { &[256] } else { &[256, 512, 1024] };
    for &len in lens {
        for threads in [1, cores] {
            if threads == 1 && cores == 1 {
                continue;
            }
            let ex = examples(v, 8 * steps, len);
            run(f, &format!("sft agent 2x128 b8x{len} threads={threads}"), &agent, &Objective::Sft(ex), &cfg(8, 4, threads), 8 * len);
        }
    }

    // A ~0.4B model on a GPU (`MPO_LOCAL_DEVICE=cuda TRAIN_BENCH_LARGE=1`,
    // a build with `--features tch` or `cuda`): f32 and bf16 mixed
    // precision, one worker thread. `TRAIN_BENCH_PEAK_TFLOPS` (the device's
    // dense peak, e.g. 989 for an H100's bf16) adds model FLOPs utilisation.
    if std::env::var_os("TRAIN_BENCH_LARGE").is_some() {
        let big = init(16, 1536, 12, 4, 4096, 32000);
        let n = {
            use burn::module::Module;
            big.net().num_params()
        };
        let peak: Option<f64> = std::env::var("TRAIN_BENCH_PEAK_TFLOPS").ok().and_then(|v| v.parse().ok());
        let v = big.arch().vocab_size;
        for precision in [Precision::F32, Precision::Bf16] {
            for (b, len) in [(8, 512), (16, 1024)] {
                let ex = examples(v, b * 3, len);
                let t = Instant::now();
                let c = TrainConfig { precision, ..cfg(b, b, 1) };
                let out = train(big.net().clone(), big.arch(), &Objective::Sft(ex), &c, "large", &RunControl::default()).expect("train");
                let secs = t.elapsed().as_secs_f64();
                // Skip the first step (allocator and kernel warm-up).
                let steady: f64 = out.log.iter().skip(1).map(|r| (b * len) as f64 / r.tokens_per_s).sum();
                let tps = (b * len * (out.log.len() - 1)) as f64 / steady;
                let flops = 6.0 * n as f64 * tps;
                let p = precision.name();
                let mfu = peak.map(|pk| format!(", MFU {:.1}%", 100.0 * flops / 1e12 / pk)).unwrap_or_default();
                println!(
                    "sft {:.2}B {p} b{b}x{len}: {:.0} tokens/s steady ({:.1} s total), {:.1} TFLOP/s model FLOPs (6·N·tokens){mfu}",
                    n as f64 / 1e9,
                    tps,
                    secs,
                    flops / 1e12
                );
                let detail = format!("{:.2}B parameters, {p}, `MPO_LOCAL_DEVICE` = {:?}", n as f64 / 1e9, std::env::var("MPO_LOCAL_DEVICE").unwrap_or_default());
                f.record(&format!("sft large {p} b{b}x{len} steady"), tps, "tokens/s", &detail);
                f.record(&format!("sft large {p} b{b}x{len} model FLOPs"), flops / 1e12, "TFLOP/s", &detail);
                if let Some(pk) = peak {
                    f.record(&format!("sft large {p} b{b}x{len} MFU"), 100.0 * flops / 1e12 / pk, "%", &detail);
                }
            }
        }
    }

    // ~25M parameters.
    if !quick {
        let big = init(8, 512, 8, 4, 1408, 4096);
        let v = big.arch().vocab_size;
        let ex = examples(v, 8 * 2, 256);
        run(f, "sft 25M b8x256", &big, &Objective::Sft(ex.clone()), &cfg(8, 4, cores), 8 * 256);
        let pairs: Vec<PairExample> = ex.chunks(2).map(|c| PairExample { chosen: c[0].clone(), rejected: c[1].clone() }).collect();
        let reference = vec![(-100.0, -100.0); pairs.len()];
        let dpo = Objective::Dpo { pairs, reference, beta: 0.1, label_smoothing: 0.0, loss: DpoLoss::Sigmoid };
        run(f, "dpo 25M b4 pairs x256", &big, &dpo, &cfg(4, 2, cores), 8 * 256);
    }
}
