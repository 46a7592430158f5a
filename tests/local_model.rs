//! Local (burn) models against the tiny Hugging Face fixtures in
//! tests/fixtures (reference values computed by transformers, float32, CPU):
//! tokenizer, chat template, logits, greedy tokens, DPO log-probs; batch
//! invariance of sampling; save → load round trip; concurrent ChatModel use;
//! `init` models; KV reuse across turns.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::prelude::*;
use mpo_run::model::local::{init_model, GenParams, InitConfig, LocalModel, LocalModelConfig};
use mpo_run::model::{ChatModel, ChatRequest, Message, Role};
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn expected(name: &str) -> Value {
    let text = std::fs::read_to_string(fixture(&format!("{name}-expected.json"))).expect("expected json");
    serde_json::from_str(&text).expect("parse expected json")
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().expect("id list").iter().map(|x| x.as_u64().expect("id") as u32).collect()
}

fn load(name: &str) -> LocalModel {
    LocalModel::load(&fixture(name), LocalModelConfig::default()).expect("load model")
}

fn messages(v: &Value) -> Vec<Message> {
    v.as_array()
        .expect("messages")
        .iter()
        .map(|m| {
            let role = match m["role"].as_str().expect("role") {
                "system" => Role::System,
                "user" => Role::User,
                _ => Role::Assistant,
            };
            Message { role, content: m["content"].as_str().expect("content").to_string() }
        })
        .collect()
}

fn logits_of(model: &LocalModel, rows: &[Vec<u32>]) -> Vec<f32> {
    let t = rows[0].len();
    let flat: Vec<i64> = rows.iter().flatten().map(|&x| x as i64).collect();
    let input = Tensor::<2, Int>::from_data(TensorData::new(flat, [rows.len(), t]), model.device());
    model.forward_logits(input).try_into_vec_as::<f32>().expect("logits")
}

/// The fixture's batch of input ids and transformers' logits for it.
fn reference_logits(name: &str) -> (Vec<Vec<u32>>, Vec<f32>) {
    let bytes = std::fs::read(fixture(&format!("{name}-expected.safetensors"))).expect("expected safetensors");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
    let inp = st.tensor("batch_input_ids").expect("batch_input_ids");
    let shape = inp.shape().to_vec();
    let raw: Vec<i64> = inp.data().chunks(8).map(|c| i64::from_le_bytes(c.try_into().expect("i64"))).collect();
    let rows: Vec<Vec<u32>> = raw.chunks(shape[1]).map(|r| r.iter().map(|&x| x as u32).collect()).collect();
    let want: Vec<f32> = st.tensor("logits").expect("logits").data().chunks(4).map(|c| f32::from_le_bytes(c.try_into().expect("f32"))).collect();
    (rows, want)
}

fn check_fixture(name: &str) {
    let model = load(name);
    let exp = expected(name);
    // Tokenizer.
    let texts = exp["tokenizer"]["texts"].as_array().expect("texts");
    for (text, want) in texts.iter().zip(exp["tokenizer"]["ids"].as_array().expect("ids")) {
        let got = model.tokenizer.encode(text.as_str().expect("text")).expect("encode");
        assert_eq!(got, ids(want), "{name}: tokenizer ids of {text}");
    }
    // Chat template.
    let ct = &exp["chat_template"];
    let msgs = messages(&ct["messages"]);
    let add = ct["add_generation_prompt"].as_bool().unwrap_or(true);
    let rendered = model.tokenizer.render(&msgs, add).expect("render");
    assert_eq!(rendered, ct["rendered"].as_str().expect("rendered"), "{name}: rendered template");
    assert_eq!(model.encode_chat(&msgs, add, None).expect("encode chat"), ids(&ct["ids"]), "{name}: template ids");
    // Logits.
    let (rows, want) = reference_logits(name);
    let got = logits_of(&model, &rows);
    assert_eq!(got.len(), want.len());
    let max_diff = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(max_diff < 1e-4, "{name}: logits differ by {max_diff}");
    // Greedy tokens (no EOS stop).
    let g = &exp["greedy"];
    let params = GenParams {
        max_new_tokens: g["new_tokens"].as_u64().expect("new_tokens") as usize,
        eos_ids: Some(vec![]),
        ..Default::default()
    };
    let out = model.generate(&[(ids(&g["prompt_ids"]), params)]);
    assert_eq!(out[0].tokens, ids(&g["ids"]), "{name}: greedy tokens");
    // DPO log-probs (policy here, reference model below).
    let d = &exp["dpo"];
    let prompt = ids(&d["prompt_ids"]);
    let pairs = vec![(prompt.clone(), ids(&d["chosen_ids"])), (prompt, ids(&d["rejected_ids"]))];
    let scores = model.score(&pairs);
    let rel = |a: f64, b: f64| ((a - b) / b).abs();
    for (got, key) in scores.iter().zip(["policy_chosen_logps", "policy_rejected_logps"]) {
        let want = d[key].as_f64().expect(key);
        assert!(rel(*got, want) < 1e-4, "{name}: {key} {got} vs {want}");
    }
    let reference = load(&format!("{name}-ref"));
    let scores = reference.score(&pairs);
    for (got, key) in scores.iter().zip(["reference_chosen_logps", "reference_rejected_logps"]) {
        let want = d[key].as_f64().expect(key);
        assert!(rel(*got, want) < 1e-4, "{name}: {key} {got} vs {want}");
    }
}

#[test]
fn tiny_llama_matches_transformers() {
    check_fixture("tiny-llama");
}

#[test]
fn tiny_qwen2_matches_transformers() {
    check_fixture("tiny-qwen2");
}

fn sampled(seed: u64) -> GenParams {
    GenParams { max_new_tokens: 12, temperature: 1.0, top_p: 0.95, top_k: 50, seed, eos_ids: Some(vec![]), ..Default::default() }
}

#[test]
fn sampling_is_batch_invariant() {
    let model = load("tiny-llama");
    let exp = expected("tiny-llama");
    let base = ids(&exp["greedy"]["prompt_ids"]);
    let alone = model.generate(&[(base.clone(), sampled(7))]);
    let mut batch = Vec::new();
    for i in 0..8usize {
        // Prompts of different lengths around the one under test (padding).
        let p: Vec<u32> = if i == 3 { base.clone() } else { base[..base.len() - 1 - 3 * i.min(6)].to_vec() };
        batch.push((p, sampled(if i == 3 { 7 } else { 100 + i as u64 })));
    }
    let together = model.generate(&batch);
    assert_eq!(alone[0].tokens, together[3].tokens);
    // Different seeds give different samples (the test has teeth).
    let other = model.generate(&[(base, sampled(8))]);
    assert_ne!(alone[0].tokens, other[0].tokens);
}

#[test]
fn save_load_round_trip_is_exact() {
    let model = load("tiny-qwen2");
    let dir = tempfile::tempdir().expect("tempdir");
    model.save(dir.path()).expect("save");
    let again = LocalModel::load(dir.path(), LocalModelConfig::default()).expect("reload");
    let rows = vec![vec![1u32, 85, 91, 301, 442, 201, 59, 283]];
    assert_eq!(logits_of(&model, &rows), logits_of(&again, &rows));
    // Same tensor names as the input checkpoint.
    let names = |p: &Path| {
        let b = std::fs::read(p.join("model.safetensors")).expect("read");
        let mut n: Vec<String> = safetensors::SafeTensors::deserialize(&b).expect("st").names().into_iter().map(String::from).collect();
        n.sort();
        n
    };
    assert_eq!(names(&fixture("tiny-qwen2")), names(dir.path()));
    assert_eq!(model.identity(), again.identity(), "identity is content-based, not path-based");
}

fn conversation(i: usize) -> ChatRequest {
    let mut r = ChatRequest::new(vec![Message::user(format!("Your task is to: put mug {i} in coffeemachine."))]);
    r.params.temperature = Some(1.0);
    r.params.max_tokens = Some(10);
    r.params.seed = Some(1000 + i as u64);
    r
}

#[test]
fn concurrent_chats_equal_sequential_ones() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let concurrent = Arc::new(load("tiny-qwen2"));
    let sequential = load("tiny-qwen2");
    let n = 64;
    let together: Vec<Vec<String>> = rt.block_on(async {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let m = concurrent.clone();
                tokio::spawn(async move { m.chat(&conversation(i)).await.expect("chat").texts })
            })
            .collect();
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await.expect("join"));
        }
        out
    });
    let one_by_one: Vec<Vec<String>> =
        rt.block_on(async { futures_seq(&sequential, n).await });
    assert_eq!(together, one_by_one);
    let (passes, _) = concurrent.engine_stats();
    assert!(passes < 64 * 11, "requests were batched ({passes} passes)");
}

async fn futures_seq(m: &LocalModel, n: usize) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(m.chat(&conversation(i)).await.expect("chat").texts);
    }
    out
}

/// Three turns of conversation `i` (its own session), the observation after
/// each reply fixed; returns the replies, and calls `served` after the first
/// reply and `finished` after the last.
async fn three_turns(m: &LocalModel, i: usize, served: impl Fn(), finished: impl Fn()) -> Vec<String> {
    let mut req = conversation(i);
    req.session = Some(0xC0FFEE + i as u64);
    let mut texts = Vec::new();
    for turn in 0..3 {
        let c = m.chat(&req).await.expect("chat");
        if turn == 0 {
            served();
        }
        texts.push(c.texts[0].clone());
        req.messages.push(Message::assistant(c.texts[0].clone()));
        req.messages.push(Message::user(format!("Observation {turn}: you see a mug {i}.")));
    }
    finished();
    texts
}

#[test]
fn older_conversations_go_first_and_mixed_passes_change_nothing() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let settings = LocalModelConfig { max_batch: 4, ..Default::default() };
    let shared = Arc::new(LocalModel::load(&fixture("tiny-qwen2"), settings).expect("load"));
    let served = Arc::new(AtomicUsize::new(0));
    let served_at_first_finish = Arc::new(AtomicUsize::new(usize::MAX));
    let n = 12;
    let together: Vec<Vec<String>> = rt.block_on(async {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let (m, s, f) = (shared.clone(), served.clone(), served_at_first_finish.clone());
                tokio::spawn(async move {
                    let s2 = s.clone();
                    three_turns(&m, i, move || { s.fetch_add(1, Ordering::SeqCst); }, move || {
                        let _ = f.compare_exchange(usize::MAX, s2.load(Ordering::SeqCst), Ordering::SeqCst, Ordering::SeqCst);
                    })
                    .await
                })
            })
            .collect();
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await.expect("join"));
        }
        out
    });
    // All 12 conversations are submitted at once, 4 sequences per pass.
    // First come, first served, every later turn would queue behind all
    // first turns: the 12 would advance in lockstep, each served before any
    // finished. Oldest first, the first conversations finish while others
    // still wait for their first reply.
    let first = served_at_first_finish.load(Ordering::SeqCst);
    eprintln!("{first} of {n} conversations had a reply when the first finished");
    assert!(first < n, "{first} of {n} conversations had a reply when the first one finished");
    let alone = LocalModel::load(&fixture("tiny-qwen2"), LocalModelConfig { kv_cache_tokens: 0, max_batch: 1, ..Default::default() })
        .expect("load");
    let one_by_one: Vec<Vec<String>> = rt.block_on(async {
        let mut out = Vec::new();
        for i in 0..n {
            out.push(three_turns(&alone, i, || {}, || {}).await);
        }
        out
    });
    assert_eq!(together, one_by_one, "batching, mixed passes and the prefix cache change no reply");
    assert!(shared.engine_stats().1 > 0, "later turns reused their own cached prompt tokens");
}

#[test]
fn kv_reuse_across_turns_changes_nothing() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let with = load("tiny-llama");
    let without = LocalModel::load(&fixture("tiny-llama"), LocalModelConfig { kv_cache_tokens: 0, ..Default::default() })
        .expect("load");
    let run = |m: &LocalModel| {
        rt.block_on(async {
            let mut req = conversation(1);
            let mut texts = Vec::new();
            for turn in 0..3 {
                let c = m.chat(&req).await.expect("chat");
                texts.push(c.texts[0].clone());
                req.messages.push(Message::assistant(c.texts[0].clone()));
                req.messages.push(Message::user(format!("Observation {turn}: nothing happens.")));
            }
            texts
        })
    };
    assert_eq!(run(&with), run(&without));
    assert!(with.engine_stats().1 > 0, "later turns reused cached prompt tokens");
    assert_eq!(without.engine_stats().1, 0);
}

/// An `init` model of this shape with a byte-level BPE tokenizer.
fn bpe_init(layers: usize, hidden: usize, heads: usize, kv_heads: usize, ff: usize, vocab_size: usize) -> LocalModelConfig {
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
            max_position_embeddings: 2048,
        }),
        ..Default::default()
    }
}

#[test]
fn init_model_trains_tokenizer_saves_and_reloads() {
    let corpus: Vec<String> = (0..200)
        .map(|i| format!("Your task is to: put a clean mug {i} in coffeemachine. Thought: I need to find the mug first."))
        .collect();
    let cfg = bpe_init(2, 64, 4, 2, 128, 400);
    cfg.validate().expect("valid");
    let a = init_model(&cfg, &corpus, 3).expect("init");
    let b = init_model(&cfg, &corpus, 3).expect("init again");
    assert_eq!(a.identity(), b.identity(), "same seed, same model");
    let c = init_model(&cfg, &corpus, 4).expect("init other seed");
    assert_ne!(a.identity(), c.identity());
    let ids = a.encode_chat(&[Message::user("put a clean mug in coffeemachine")], true, None).expect("encode");
    assert_eq!(ids[0], 1, "<|im_start|> is token 1");
    let dir = tempfile::tempdir().expect("tempdir");
    a.save(dir.path()).expect("save");
    let loaded = LocalModel::load(dir.path(), LocalModelConfig::default()).expect("load saved init model");
    assert_eq!(logits_of(&a, &[ids.clone()]), logits_of(&loaded, &[ids.clone()]));
    let out = loaded.generate(&[(ids, GenParams { max_new_tokens: 5, ..Default::default() })]);
    assert!(!out[0].tokens.is_empty());
}

#[test]
fn config_rejects_bad_settings() {
    let bad: Result<LocalModelConfig, _> = toml::from_str("path = \"x\"\nkind = \"local\"");
    assert!(bad.is_err(), "unknown keys are rejected");
    let ok: LocalModelConfig = toml::from_str("path = \"x\"\ntemperature = 0.7").expect("parse");
    assert!(ok.validate().is_ok());
    let none = LocalModelConfig::default();
    assert!(none.validate().is_err(), "path or init is required");
    // A spec naming `cuda` is valid on any build (planning, dry runs); only
    // a build with a CUDA backend can make the device.
    let cuda = LocalModelConfig { path: Some("x".into()), device: "cuda:1".into(), ..Default::default() };
    assert!(cuda.validate().is_ok());
    assert_eq!(mpo_run::model::local::parse_device("cuda").is_ok(), cfg!(any(feature = "cuda", feature = "tch")));
    let bad = LocalModelConfig { path: Some("x".into()), device: "gpu".into(), ..Default::default() };
    assert!(bad.validate().unwrap_err().contains("unknown device `gpu`"));
}

/// The CPU path (attention on the host over each row's own cache) against
/// the padded-batch path, on rows of different lengths and a GQA model: the
/// same next-token logits, prefill, decode steps and a second prefill of
/// different lengths per row; and a row's numbers do not depend on the
/// other rows in its pass.
#[test]
fn host_decode_matches_padded_decode() {
    use mpo_run::model::local::SeqKv;
    for name in ["tiny-llama", "tiny-qwen2"] {
        let model = load(name);
        let exp = expected(name);
        let base = ids(&exp["greedy"]["prompt_ids"]);
        let mut host = model.runner.clone();
        host.host_decode = true;
        let mut padded = model.runner.clone();
        padded.host_decode = false;
        let layers = host.arch.num_hidden_layers;
        let prompts: Vec<Vec<u32>> = (0..4).map(|i| base[..base.len() - 2 * i].to_vec()).collect();
        let mut kv_h: Vec<SeqKv> = prompts.iter().map(|_| SeqKv::new(layers)).collect();
        let mut kv_p = kv_h.clone();
        let news: Vec<&[u32]> = prompts.iter().map(Vec::as_slice).collect();
        let mut lh = host.step(&mut kv_h.iter_mut().collect::<Vec<_>>(), &news);
        let mut lp = padded.step(&mut kv_p.iter_mut().collect::<Vec<_>>(), &news);
        let mut max_diff = 0f32;
        for _ in 0..6 {
            for (a, b) in lh.iter().zip(&lp) {
                max_diff = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(max_diff, f32::max);
            }
            // Feed each row's greedy token from the padded path.
            let next: Vec<[u32; 1]> = lp
                .iter()
                .map(|l| [l.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i as u32).unwrap_or(0)])
                .collect();
            let news: Vec<&[u32]> = next.iter().map(|n| n.as_slice()).collect();
            lh = host.step(&mut kv_h.iter_mut().collect::<Vec<_>>(), &news);
            lp = padded.step(&mut kv_p.iter_mut().collect::<Vec<_>>(), &news);
        }
        // A second prefill of different lengths per row on top of the caches.
        let chunks: Vec<Vec<u32>> = (0..4).map(|i| base[..1 + (3 * i) % 5].to_vec()).collect();
        let news: Vec<&[u32]> = chunks.iter().map(Vec::as_slice).collect();
        let before: Vec<SeqKv> = kv_h.clone();
        lh = host.step(&mut kv_h.iter_mut().collect::<Vec<_>>(), &news);
        lp = padded.step(&mut kv_p.iter_mut().collect::<Vec<_>>(), &news);
        for (a, b) in lh.iter().zip(&lp) {
            max_diff = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(max_diff, f32::max);
        }
        assert!(max_diff < 1e-4, "{name}: host decode logits differ by {max_diff}");
        // Row 2 alone: the same numbers up to the backend's matmul rounding
        // (its kernels may group a product's terms by the number of rows).
        let mut alone = before[2].clone();
        let l2 = host.step(&mut [&mut alone], &[chunks[2].as_slice()]);
        let d = l2[0].iter().zip(&lh[2]).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        assert!(d < 1e-5, "{name}: a row's logits depend on its batch by {d}");
        for (a, b) in kv_h.iter().zip(&kv_p) {
            assert_eq!(a.tokens, b.tokens);
            let d = a.layers[0].0.iter().zip(&b.layers[0].0).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
            assert!(d < 1e-4, "{name}: cached keys differ by {d}");
        }
    }
}

/// `precision = "bf16"` (mixed precision inference): logits stay close to
/// the transformers float32 reference but are not the f32 numbers, and
/// generation runs (both decode paths read the f32 KV caches the casts
/// give back).
#[test]
fn bf16_precision_stays_close_to_transformers() {
    for name in ["tiny-llama", "tiny-qwen2"] {
        let settings = LocalModelConfig { precision: mpo_run::train::Precision::Bf16, ..LocalModelConfig::default() };
        let model = LocalModel::load(&fixture(name), settings).expect("load bf16");
        let f32_model = load(name);
        let (rows, want) = reference_logits(name);
        let got = logits_of(&model, &rows);
        let exact = logits_of(&f32_model, &rows);
        let max_diff = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        let scale = want.iter().map(|x| x.abs()).fold(0f32, f32::max);
        eprintln!("{name}: bf16 logits max |diff| {max_diff} (max |logit| {scale})");
        assert!(max_diff < 0.02 * scale.max(1.0), "{name}: bf16 logits differ by {max_diff}");
        assert!(got != exact, "{name}: bf16 gave the f32 logits");
        let out = model.generate(&[(rows[0].clone(), GenParams { max_new_tokens: 8, eos_ids: Some(vec![]), ..Default::default() })]);
        assert_eq!(out[0].tokens.len(), 8, "{name}: bf16 generation");
    }
}

/// Incremental tokenization of a growing conversation gives exactly the
/// ids of tokenizing each prompt whole, for every fixture tokenizer (those
/// that cannot be cut at special tokens always tokenize whole).
#[test]
fn incremental_turn_encoding_equals_whole_encoding() {
    let corpus: Vec<String> = (0..200)
        .map(|i| format!("You are in the middle of a room. Looking for mug {i}: none here. go to cabinet {}", i % 7))
        .collect();
    let init = init_model(&bpe_init(1, 32, 2, 1, 64, 300), &corpus, 1).expect("init");
    let models = [("tiny-qwen2", load("tiny-qwen2")), ("tiny-llama", load("tiny-llama")), ("init bpe", init)];
    let mut incremental = 0;
    for (name, m) in &models {
        let splits = m.tokenizer.splits_at_special_tokens();
        eprintln!("{name}: incremental = {splits}");
        incremental += splits as usize;
        for (session, prefill) in [(1u64, None), (2, Some("Thought: the plan says"))] {
            let mut messages = vec![Message::system("Interact with a household."), Message::user("Your task is to: put a mug in  the cabinet.\n")];
            for turn in 0..6 {
                let whole = m.encode_chat(&messages, true, prefill).expect("whole");
                let turned = m.encode_turn(&messages, prefill, Some(session)).expect("incremental");
                assert_eq!(turned, whole, "{name}, turn {turn}, prefill {prefill:?}");
                // Replies and observations with spaces, newlines, unicode and
                // text that looks like a template's, at the cut.
                messages.push(Message::assistant(format!(" Thought: step {turn} — héllo\n\nAction: go to cabinet {turn}")));
                messages.push(Message::user(format!("<|im_start|> Observation: On the cabinet {turn}, you see nothing.  ")));
            }
        }
    }
    assert!(incremental >= 2, "the byte-level tokenizers (qwen2, init bpe) are cut at special tokens");

    // Pre-tokenizers not known to treat every piece alike (Llama 2's
    // Metaspace can prepend its space to a text's first piece only) are
    // never cut: such a tokenizer always tokenizes whole.
    let (_, m) = &models[2];
    let mut tok = m.tokenizer.tokenizer.clone();
    tok.with_pre_tokenizer(Some(tokenizers::pre_tokenizers::metaspace::Metaspace::new(
        '▁',
        tokenizers::pre_tokenizers::metaspace::PrependScheme::First,
        true,
    )));
    let t = &m.tokenizer;
    let meta = mpo_run::model::local::ChatTokenizer {
        tokenizer: tok,
        chat_template: t.chat_template.clone(),
        bos_token: t.bos_token.clone(),
        eos_token: t.eos_token.clone(),
        pad_token: t.pad_token.clone(),
        unk_token: t.unk_token.clone(),
        config: t.config.clone(),
    };
    assert!(!meta.splits_at_special_tokens());
}
