//! `local` models: a Llama/Qwen2-architecture causal LM in burn, loaded from
//! a Hugging Face directory or initialised from a seed ([`init_model`]),
//! served through [`ChatModel`] by an engine thread that batches the requests
//! of all concurrent callers into shared forward passes and keeps each
//! conversation's KV cache between turns.
//!
//! Owns: the `[models.NAME] kind = "local"` settings ([`LocalModelConfig`]),
//! loading/saving HF directories, generation, scoring, and the engine.
//! CPU (burn's flex backend) by default; `cuda` cargo feature for burn's CUDA
//! backend (`cargo build --release --features cuda`; needs a CUDA runtime
//! where it runs, not where it builds), or `tch` for burn's LibTorch backend
//! (`LIBTORCH=<torch dir> LIBTORCH_BYPASS_VERSION_CHECK=1 cargo build
//! --release --features tch`; the same torch's lib/ on LD_LIBRARY_PATH where
//! it runs), which maps `cuda`/`cuda:N` to LibTorch CUDA devices.

pub mod config;
mod engine;
pub mod generate;
pub mod init;
pub mod net;
pub mod runner;
pub mod tokenizer;
pub mod weights;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use burn::prelude::*;
use serde::{Deserialize, Serialize};

pub use config::ArchConfig;
pub use generate::{Finish, GenOutput, GenParams, Scheduler};
pub use init::InitConfig;
pub use net::CausalLm;
pub use runner::{Runner, SeqKv};
pub use tokenizer::ChatTokenizer;

use super::{ChatModel, ChatRequest, Completion, Message, ModelError};

/// Errors of loading, initialising or saving a local model.
#[derive(Debug, thiserror::Error)]
#[error("local model: {0}")]
pub struct LocalError(pub String);

pub type Result<T> = std::result::Result<T, LocalError>;

fn d_top_p() -> f64 {
    1.0
}
fn d_max_tokens() -> u32 {
    512
}
fn d_max_batch() -> usize {
    64
}
fn d_cache() -> usize {
    1 << 20
}
/// `cpu` unless `MPO_LOCAL_DEVICE` names another (e.g. to run the local-model
/// and trainer tests on `cuda`).
fn d_device() -> String {
    std::env::var("MPO_LOCAL_DEVICE").unwrap_or_else(|_| "cpu".into())
}

/// `[models.NAME] kind = "local"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalModelConfig {
    /// A Hugging Face model directory (for `init` models: where the init
    /// stage saves it).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// A small model initialised from a seed (see [`init_model`]).
    #[serde(default)]
    pub init: Option<InitConfig>,
    /// `cpu`, `cuda` or `cuda:N` (the latter with the `cuda` or `tch` feature).
    #[serde(default = "d_device")]
    pub device: String,
    /// Default sampling temperature (0 = greedy).
    #[serde(default)]
    pub temperature: f64,
    #[serde(default = "d_top_p")]
    pub top_p: f64,
    /// 0 = off.
    #[serde(default)]
    pub top_k: usize,
    #[serde(default = "d_max_tokens")]
    pub max_tokens: u32,
    /// Stop strings always applied.
    #[serde(default)]
    pub stop: Vec<String>,
    /// Seed when a request names none.
    #[serde(default)]
    pub seed: u64,
    /// Most sequences in one forward pass.
    #[serde(default = "d_max_batch")]
    pub max_batch: usize,
    /// Token budget of the prefix (multi-turn) KV cache; 0 turns reuse off.
    #[serde(default = "d_cache")]
    pub kv_cache_tokens: usize,
    /// `f32` (default) or `bf16`: projections, attention and the LM head in
    /// bf16 on f32 weights (for GPUs with bf16 units; on the CPU it is only
    /// slower).
    #[serde(default, skip_serializing_if = "Precision::is_f32")]
    pub precision: Precision,
    /// Served by an inference engine that mpo-run starts (vLLM, …) instead
    /// of generated from in-process; training still reads `path` (see
    /// [`crate::model::serve`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serve: Option<crate::model::serve::ServeConfig>,
}

impl Default for LocalModelConfig {
    fn default() -> Self {
        Self {
            path: None,
            init: None,
            device: d_device(),
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            max_tokens: d_max_tokens(),
            stop: Vec::new(),
            seed: 0,
            max_batch: d_max_batch(),
            kv_cache_tokens: d_cache(),
            precision: Precision::F32,
            serve: None,
        }
    }
}

impl LocalModelConfig {
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.path.is_none() && self.init.is_none() {
            return Err("a local model needs `path` (a Hugging Face directory) or `init`".into());
        }
        if let Some(init) = &self.init {
            init.validate()?;
        }
        // Syntax only: a spec naming `cuda` is valid on a CPU-only build
        // (dry runs, planning); loading the model says what is missing.
        match self.device.as_str() {
            "cpu" | "flex" | "cuda" => {}
            n if n.strip_prefix("cuda:").is_some_and(|i| i.parse::<usize>().is_ok()) => {}
            other => return Err(format!("unknown device `{other}` (cpu, cuda, cuda:N)")),
        }
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(format!("temperature must be >= 0, got {}", self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(format!("top_p must be in (0, 1], got {}", self.top_p));
        }
        if self.max_batch == 0 {
            return Err("max_batch must be at least 1".into());
        }
        if self.max_tokens == 0 {
            return Err("max_tokens must be at least 1".into());
        }
        if let Some(serve) = &self.serve {
            serve.validate()?;
        }
        Ok(())
    }
}

/// The burn device named by a `device` setting.
pub fn parse_device(name: &str) -> std::result::Result<Device, String> {
    match name {
        "cpu" | "flex" => Ok(Device::flex()),
        n if n == "cuda" || n.starts_with("cuda:") => {
            let idx: usize = n.strip_prefix("cuda:").map_or(Ok(0), str::parse).map_err(|_| format!("bad device `{n}`"))?;
            cuda_device(idx)
        }
        other => Err(format!("unknown device `{other}` (cpu, cuda, cuda:N)")),
    }
}

#[cfg(feature = "cuda")]
fn cuda_device(idx: usize) -> std::result::Result<Device, String> {
    Ok(Device::cuda(idx))
}
/// With `tch` (and not `cuda`), `cuda:N` is LibTorch's CUDA device N.
#[cfg(all(feature = "tch", not(feature = "cuda")))]
#[allow(deprecated)] // burn-tch is deprecated upstream but is the CUDA backend that builds offline
fn cuda_device(idx: usize) -> std::result::Result<Device, String> {
    Ok(Device::libtorch_cuda(idx))
}
#[cfg(not(any(feature = "cuda", feature = "tch")))]
fn cuda_device(_idx: usize) -> std::result::Result<Device, String> {
    Err("device `cuda` needs a build with `--features cuda` or `--features tch`".into())
}

/// A loaded local model.
pub struct LocalModel {
    pub runner: Runner,
    pub tokenizer: Arc<ChatTokenizer>,
    pub settings: LocalModelConfig,
    /// Hash of config, tokenizer files and weights.
    weights_id: String,
    /// Stop ids: config/generation_config EOS and the tokenizer's EOS.
    pub eos_ids: Vec<u32>,
    engine: OnceLock<engine::Engine>,
    encoder: tokenizer::IncrementalEncoder,
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| LocalError(format!("reading {}: {e}", path.display())))
}

impl LocalModel {
    /// Loads a Hugging Face directory with the settings' device and defaults.
    pub fn load(path: &Path, settings: LocalModelConfig) -> Result<Self> {
        let device = parse_device(&settings.device).map_err(LocalError)?;
        let cfg_bytes = read(&path.join("config.json"))?;
        let text = String::from_utf8_lossy(&cfg_bytes);
        let mut arch = ArchConfig::from_hf_json(&text).map_err(|e| LocalError(format!("{}: {e}", path.display())))?;
        arch.compute_dtype = settings.precision.on(&device).map_err(LocalError)?;
        let tokenizer = ChatTokenizer::load(path).map_err(LocalError)?;
        let files = weights::shard_files(path).map_err(LocalError)?;
        let mut lm = CausalLm::new(&arch, &device);
        weights::load_weights(&mut lm, &files).map_err(LocalError)?;
        let mut extra_eos = Vec::new();
        if let Ok(text) = std::fs::read_to_string(path.join("generation_config.json")) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
                match v.get("eos_token_id") {
                    Some(serde_json::Value::Number(n)) => extra_eos.extend(n.as_u64().map(|x| x as u32)),
                    Some(serde_json::Value::Array(a)) => extra_eos.extend(a.iter().filter_map(|x| x.as_u64()).map(|x| x as u32)),
                    _ => {}
                }
            }
        }
        let id = content_id(&arch, &lm, &tokenizer)?;
        Ok(Self::assemble(arch, lm, tokenizer, settings, device, id, extra_eos))
    }

    /// Loads the model a [`LocalModelConfig`] names by `path`.
    pub fn from_config(settings: &LocalModelConfig) -> Result<Self> {
        settings.validate().map_err(LocalError)?;
        let path = settings.path.clone().ok_or_else(|| {
            LocalError("an `init` model is created by `init_model` (it needs a corpus) and loaded by `path`".into())
        })?;
        Self::load(&path, settings.clone())
    }

    fn assemble(
        arch: ArchConfig,
        lm: CausalLm,
        tokenizer: ChatTokenizer,
        settings: LocalModelConfig,
        device: Device,
        weights_id: String,
        extra_eos: Vec<u32>,
    ) -> Self {
        let mut eos_ids = arch.eos_token_ids.clone();
        eos_ids.extend(extra_eos);
        if let Some(id) = tokenizer.eos_token.as_deref().and_then(|t| tokenizer.token_id(t)) {
            eos_ids.push(id);
        }
        eos_ids.sort_unstable();
        eos_ids.dedup();
        let encoder = tokenizer::IncrementalEncoder::new(&tokenizer);
        Self {
            encoder,
            runner: Runner::new(lm, arch, device),
            tokenizer: Arc::new(tokenizer),
            settings,
            weights_id,
            eos_ids,
            engine: OnceLock::new(),
        }
    }

    /// Wraps an already-built network (e.g. a trainer's result).
    pub fn from_parts(arch: ArchConfig, lm: CausalLm, tokenizer: ChatTokenizer, settings: LocalModelConfig) -> Result<Self> {
        let device = parse_device(&settings.device).map_err(LocalError)?;
        let id = content_id(&arch, &lm, &tokenizer)?;
        Ok(Self::assemble(arch, lm, tokenizer, settings, device, id, Vec::new()))
    }

    pub fn arch(&self) -> &ArchConfig {
        &self.runner.arch
    }
    pub fn net(&self) -> &CausalLm {
        &self.runner.lm
    }
    pub fn device(&self) -> &Device {
        &self.runner.device
    }

    /// Saves as a Hugging Face directory (config.json, model.safetensors,
    /// tokenizer.json, tokenizer_config.json, generation_config.json).
    pub fn save(&self, dir: &Path) -> Result<()> {
        save_dir(dir, self.arch(), self.net(), &self.tokenizer)
    }

    /// Chat-template token ids of `messages` (plus a trailing assistant
    /// prefill, if any).
    pub fn encode_chat(&self, messages: &[Message], add_generation_prompt: bool, prefill: Option<&str>) -> Result<Vec<u32>> {
        let text = self.prompt_text(messages, add_generation_prompt, prefill)?;
        self.tokenizer.encode(&text).map_err(LocalError)
    }

    /// The chat template's text of `messages`, then the prefill.
    fn prompt_text(&self, messages: &[Message], add_generation_prompt: bool, prefill: Option<&str>) -> Result<String> {
        let mut text = self.tokenizer.render(messages, add_generation_prompt).map_err(LocalError)?;
        if let Some(p) = prefill {
            text.push_str(p);
        }
        Ok(text)
    }

    /// [`Self::encode_chat`] for the next prompt of a conversation: only
    /// what follows the part it shares with the session's last prompt is
    /// tokenized, where that gives the same ids (see
    /// [`tokenizer::IncrementalEncoder`]).
    pub fn encode_turn(&self, messages: &[Message], prefill: Option<&str>, session: Option<u64>) -> Result<Vec<u32>> {
        let text = self.prompt_text(messages, true, prefill)?;
        self.encoder.encode(&self.tokenizer, session, text).map_err(LocalError)
    }

    /// Logits `[batch, seq, vocab]` for `input_ids` (causal, positions from 0).
    pub fn forward_logits(&self, input_ids: Tensor<2, Int>) -> Tensor<3> {
        self.runner.forward_logits(input_ids)
    }

    /// Sum of completion-token log-probs per (prompt, completion) pair.
    pub fn score(&self, pairs: &[(Vec<u32>, Vec<u32>)]) -> Vec<f64> {
        self.runner.score(pairs, 8192)
    }

    /// Generates for all prompts together (one batch, no prefix cache), in
    /// this thread.
    pub fn generate(&self, prompts: &[(Vec<u32>, GenParams)]) -> Vec<GenOutput> {
        let mut sched: Scheduler<usize> = Scheduler::new(prompts.len().max(1), 0);
        for (i, (p, params)) in prompts.iter().enumerate() {
            sched.submit(i, p.clone(), params.clone(), i as u64);
        }
        let mut out: Vec<Option<GenOutput>> = vec![None; prompts.len()];
        while !sched.is_idle() {
            for (i, o) in sched.step(&self.runner, &self.tokenizer, &self.eos_ids) {
                out[i] = Some(o);
            }
        }
        out.into_iter().map(|o| o.unwrap_or_else(|| GenOutput { tokens: vec![], text: String::new(), finish: Finish::Length, reused_tokens: 0 })).collect()
    }

    /// Sampling parameters of completion `index` of a request.
    pub fn gen_params(&self, request: &ChatRequest, index: u32) -> GenParams {
        let p = &request.params;
        let s = &self.settings;
        let mut stop = s.stop.clone();
        stop.extend(p.stop.iter().cloned());
        let seed = p.seed.unwrap_or(s.seed);
        GenParams {
            max_new_tokens: p.max_tokens.unwrap_or(s.max_tokens).max(1) as usize,
            temperature: p.temperature.unwrap_or(s.temperature),
            top_p: p.top_p.unwrap_or(s.top_p),
            top_k: s.top_k,
            seed: seed.wrapping_add((index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            stop,
            eos_ids: None,
        }
    }

    fn engine(&self) -> &engine::Engine {
        self.engine.get_or_init(|| {
            engine::Engine::start(
                self.runner.clone(),
                self.tokenizer.clone(),
                self.eos_ids.clone(),
                self.settings.max_batch,
                self.settings.kv_cache_tokens,
            )
        })
    }

    /// Engine counters: (forward passes, prompt tokens reused from the cache).
    pub fn engine_stats(&self) -> (u64, u64) {
        self.engine.get().map(|e| e.stats()).unwrap_or((0, 0))
    }
}

/// A stable id of what a model computes: architecture, tokenizer, chat
/// template and every tensor's name, shape and bytes (not file bytes or
/// paths, so a saved and reloaded model keeps its id).
fn content_id(arch: &ArchConfig, lm: &CausalLm, tok: &ChatTokenizer) -> Result<String> {
    let bytes = weights::weights_bytes(lm).map_err(LocalError)?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| LocalError(format!("hashing weights: {e}")))?;
    let mut h = blake3::Hasher::new();
    h.update(arch.to_hf_json().to_string().as_bytes());
    h.update(tok.tokenizer.to_string(false).unwrap_or_default().as_bytes());
    h.update(tok.chat_template.as_deref().unwrap_or("").as_bytes());
    for t in [&tok.bos_token, &tok.eos_token] {
        h.update(t.as_deref().unwrap_or("").as_bytes());
        h.update(&[0]);
    }
    let mut names = st.names();
    names.sort();
    for name in names {
        let t = st.tensor(name).map_err(|e| LocalError(format!("hashing weights: {e}")))?;
        h.update(name.as_bytes());
        h.update(format!("{:?}{:?}", t.dtype(), t.shape()).as_bytes());
        h.update(t.data());
    }
    Ok(h.finalize().to_hex()[..16].to_string())
}

/// Writes a Hugging Face directory.
pub fn save_dir(dir: &Path, arch: &ArchConfig, lm: &CausalLm, tok: &ChatTokenizer) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| LocalError(format!("creating {}: {e}", dir.display())))?;
    weights::save_weights(lm, dir).map_err(LocalError)?;
    let write = |name: &str, v: &serde_json::Value| {
        let path = dir.join(name);
        let text = serde_json::to_string_pretty(v).map_err(|e| LocalError(e.to_string()))?;
        std::fs::write(&path, text).map_err(|e| LocalError(format!("writing {}: {e}", path.display())))
    };
    // `pad_token_id` (#26): the tokenizer's pad token, else the first EOS —
    // what transformers' Trainer and `generate` fall back to (with a
    // warning) when a config has none. Written here, not by `to_hf_json`,
    // which also feeds the model's content id.
    let pad = tok.pad_token.as_deref().and_then(|t| tok.token_id(t)).or_else(|| arch.eos_token_ids.first().copied());
    let mut config = arch.to_hf_json();
    config["pad_token_id"] = serde_json::json!(pad);
    write("config.json", &config)?;
    let eos = match arch.eos_token_ids.as_slice() {
        [one] => serde_json::json!(one),
        many => serde_json::json!(many),
    };
    write(
        "generation_config.json",
        &serde_json::json!({"bos_token_id": arch.bos_token_id, "eos_token_id": eos, "pad_token_id": pad}),
    )?;
    tok.save(dir).map_err(LocalError)
}

/// A small model of the Llama architecture from `seed`, with a tokenizer
/// trained on `corpus`. Save it with [`LocalModel::save`] and load it by path.
pub fn init_model(cfg: &LocalModelConfig, corpus: &[String], seed: u64) -> Result<LocalModel> {
    let init = cfg.init.as_ref().ok_or_else(|| LocalError("init_model needs an `init` table".into()))?;
    let device = parse_device(&cfg.device).map_err(LocalError)?;
    let (arch, lm, tok) = init::build(init, corpus, seed, &device).map_err(LocalError)?;
    LocalModel::from_parts(arch, lm, tok, cfg.clone())
}

#[async_trait::async_trait]
impl ChatModel for LocalModel {
    fn identity(&self) -> String {
        let s = &self.settings;
        format!(
            "local:{}:t={}:p={}:k={}:max={}:seed={}:stop={:?}",
            self.weights_id, s.temperature, s.top_p, s.top_k, s.max_tokens, s.seed, s.stop
        )
    }

    async fn chat(&self, request: &ChatRequest) -> std::result::Result<Completion, ModelError> {
        let start = std::time::Instant::now();
        let prompt = self
            .encode_turn(&request.messages, request.prefill.as_deref(), request.session)
            .map_err(|e| ModelError::Other(e.to_string()))?;
        let n = request.params.n.max(1);
        let mut waits = Vec::with_capacity(n as usize);
        for i in 0..n {
            waits.push(self.engine().submit(prompt.clone(), self.gen_params(request, i), request.session)?);
        }
        let mut texts = Vec::new();
        let mut finish_reasons = Vec::new();
        let mut completion_tokens = 0u64;
        for w in waits {
            let out = w.await.map_err(|_| ModelError::Other("local model engine stopped".into()))?;
            completion_tokens += out.tokens.len() as u64;
            texts.push(out.text);
            finish_reasons.push(out.finish.as_str().to_string());
        }
        Ok(Completion {
            texts,
            finish_reasons,
            prompt_tokens: prompt.len() as u64,
            completion_tokens,
            wall_ms: start.elapsed().as_millis() as u64,
        })
    }
}

/// Compute precision of a local model (inference and training): `f32` everywhere, or `bf16` mixed precision
/// (matmuls and attention in bf16 on f32 master parameters; norms, softmax,
/// loss, gradients' accumulation and AdamW in f32).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    #[default]
    F32,
    Bf16,
}

impl Precision {
    /// The compute dtype of the forward pass (`None` = f32 throughout).
    pub fn compute_dtype(self) -> Option<burn::tensor::FloatDType> {
        match self {
            Precision::F32 => None,
            Precision::Bf16 => Some(burn::tensor::FloatDType::BF16),
        }
    }

    /// The compute dtype, or an error naming the setting when `device`
    /// cannot compute in it.
    pub fn on(self, device: &burn::tensor::Device) -> std::result::Result<Option<burn::tensor::FloatDType>, String> {
        match self.compute_dtype() {
            Some(dt) if !device.supports_dtype(dt) => {
                Err(format!("`precision = \"{}\"` is not supported on this device ({device:?}); use `precision = \"f32\"`", self.name()))
            }
            dt => Ok(dt),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }

    pub fn is_f32(&self) -> bool {
        *self == Precision::F32
    }
}

