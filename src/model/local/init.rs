//! `init` models: a small Llama-architecture model initialised from a seed
//! (normal(0, 0.02) weights drawn on the host, unit norms, zero biases) with a
//! tokenizer trained on a corpus, for the embedded default that cannot
//! download weights.

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::config::{ArchConfig, RopeSettings};
use super::generate::Rng;
use super::net::{set_param, CausalLm};
use super::tokenizer::ChatTokenizer;

/// Shape of an `init` model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitConfig {
    pub layers: usize,
    pub hidden: usize,
    pub heads: usize,
    pub kv_heads: usize,
    /// SwiGLU intermediate size.
    pub ff: usize,
    /// Tokenizer vocabulary to train (the model's vocab is the trained size).
    pub vocab_size: usize,
    #[serde(default)]
    pub head_dim: Option<usize>,
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    #[serde(default = "default_true")]
    pub tie_embeddings: bool,
    /// `bpe` (byte-level) or `word_level`.
    #[serde(default = "default_bpe")]
    pub tokenizer: String,
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
}

fn default_theta() -> f64 {
    10000.0
}
fn default_true() -> bool {
    true
}
fn default_bpe() -> String {
    "bpe".into()
}
fn default_max_pos() -> usize {
    4096
}

impl InitConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.layers == 0 || self.hidden == 0 || self.heads == 0 || self.kv_heads == 0 || self.ff == 0 {
            return Err("init: layers, hidden, heads, kv_heads and ff must be positive".into());
        }
        if self.heads % self.kv_heads != 0 {
            return Err(format!("init: heads ({}) must be a multiple of kv_heads ({})", self.heads, self.kv_heads));
        }
        if self.head_dim.is_none() && self.hidden % self.heads != 0 {
            return Err(format!("init: hidden ({}) must be a multiple of heads ({}) or set head_dim", self.hidden, self.heads));
        }
        if self.head_dim() % 2 != 0 {
            return Err(format!("init: head_dim must be even, got {}", self.head_dim()));
        }
        if !matches!(self.tokenizer.as_str(), "bpe" | "word_level") {
            return Err(format!("init: tokenizer must be `bpe` or `word_level`, got `{}`", self.tokenizer));
        }
        let min_vocab = if self.tokenizer == "bpe" { 260 } else { 8 };
        if self.vocab_size < min_vocab {
            return Err(format!("init: vocab_size must be at least {min_vocab} for `{}`", self.tokenizer));
        }
        Ok(())
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim.unwrap_or(self.hidden / self.heads.max(1))
    }

    /// The architecture for a tokenizer of `vocab` tokens.
    pub fn arch(&self, vocab: usize, eos: Option<u32>) -> ArchConfig {
        ArchConfig {
            model_type: "llama".into(),
            vocab_size: vocab,
            hidden_size: self.hidden,
            intermediate_size: self.ff,
            num_hidden_layers: self.layers,
            num_attention_heads: self.heads,
            num_key_value_heads: self.kv_heads,
            head_dim: self.head_dim(),
            rms_norm_eps: 1e-6,
            rope: RopeSettings::plain(self.rope_theta),
            attention_bias: false,
            mlp_bias: false,
            tie_word_embeddings: self.tie_embeddings,
            max_position_embeddings: self.max_position_embeddings,
            bos_token_id: None,
            eos_token_ids: eos.into_iter().collect(),
            compute_dtype: None,
        }
    }
}

fn normal_tensor(rng: &mut Rng, shape: [usize; 2], std: f64, device: &Device) -> Tensor<2> {
    let n = shape[0] * shape[1];
    let mut v = Vec::with_capacity(n);
    while v.len() < n {
        // Box–Muller.
        let u1 = rng.uniform().max(1e-300);
        let u2 = rng.uniform();
        let r = (-2.0 * u1.ln()).sqrt();
        let t = 2.0 * std::f64::consts::PI * u2;
        v.push((r * t.cos() * std) as f32);
        if v.len() < n {
            v.push((r * t.sin() * std) as f32);
        }
    }
    Tensor::from_data(TensorData::new(v, shape), device)
}

/// Random weights for `arch`, deterministic in `seed`.
pub fn random_weights(arch: &ArchConfig, seed: u64, device: &Device) -> CausalLm {
    let mut lm = CausalLm::new(arch, device);
    let mut rng = Rng::new(seed);
    let std = 0.02;
    let fill = |p: &mut burn::module::Param<Tensor<2>>, rng: &mut Rng| {
        let shape = p.dims();
        set_param(p, normal_tensor(rng, shape, std, device));
    };
    fill(&mut lm.model.embed_tokens.weight, &mut rng);
    for layer in lm.model.layers.iter_mut() {
        let sa = &mut layer.self_attn;
        for l in [&mut sa.q_proj, &mut sa.k_proj, &mut sa.v_proj, &mut sa.o_proj] {
            fill(&mut l.weight, &mut rng);
        }
        let m = &mut layer.mlp;
        for l in [&mut m.gate_proj, &mut m.up_proj, &mut m.down_proj] {
            fill(&mut l.weight, &mut rng);
        }
    }
    if let Some(head) = lm.lm_head.as_mut() {
        fill(&mut head.weight, &mut rng);
    }
    lm
}

/// Trains the tokenizer on `corpus` and draws the weights.
pub fn build(cfg: &InitConfig, corpus: &[String], seed: u64, device: &Device) -> Result<(ArchConfig, CausalLm, ChatTokenizer), String> {
    cfg.validate()?;
    if corpus.is_empty() {
        return Err("init: the tokenizer corpus is empty".into());
    }
    let tok = ChatTokenizer::train(corpus, cfg.vocab_size, &cfg.tokenizer)?;
    let vocab = tok.tokenizer.get_vocab_size(true);
    let eos = tok.eos_token.as_deref().and_then(|t| tok.token_id(t));
    let arch = cfg.arch(vocab, eos);
    arch.check()?;
    let lm = random_weights(&arch, seed, device);
    Ok((arch, lm, tok))
}
