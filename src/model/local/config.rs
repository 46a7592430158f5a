//! Architecture settings of a Llama/Qwen2-style causal LM, read from (and
//! written back to) a Hugging Face `config.json`, and the rotary-embedding
//! frequencies they imply (default, linear and Llama-3 scaling).

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Rotary position embedding settings, from `rope_theta` + `rope_scaling` or
/// from the newer `rope_parameters` key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RopeSettings {
    pub theta: f64,
    /// `default`, `linear` or `llama3`.
    pub rope_type: String,
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: usize,
}

impl RopeSettings {
    pub fn plain(theta: f64) -> Self {
        Self {
            theta,
            rope_type: "default".into(),
            factor: 1.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192,
        }
    }

    /// Inverse frequencies (length head_dim / 2), computed in f32 like
    /// transformers does.
    pub fn inv_freq(&self, head_dim: usize) -> Vec<f32> {
        let base = self.theta as f32;
        let mut inv: Vec<f32> = (0..head_dim / 2)
            .map(|i| 1.0f32 / base.powf((2 * i) as f32 / head_dim as f32))
            .collect();
        match self.rope_type.as_str() {
            "linear" => inv.iter_mut().for_each(|f| *f /= self.factor as f32),
            "llama3" => {
                let factor = self.factor as f32;
                let low = self.low_freq_factor as f32;
                let high = self.high_freq_factor as f32;
                let old = self.original_max_position_embeddings as f32;
                let low_wavelen = old / low;
                let high_wavelen = old / high;
                for f in inv.iter_mut() {
                    let wavelen = 2.0 * std::f32::consts::PI / *f;
                    let scaled = if wavelen > low_wavelen { *f / factor } else { *f };
                    let medium = !(wavelen < high_wavelen) && !(wavelen > low_wavelen);
                    *f = if medium {
                        let smooth = (old / wavelen - low) / (high - low);
                        (1.0 - smooth) * scaled / factor + smooth * scaled
                    } else {
                        scaled
                    };
                }
            }
            _ => {}
        }
        inv
    }
}

/// The architecture of one model (Llama or Qwen2 family).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArchConfig {
    /// `llama` or `qwen2`.
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope: RopeSettings,
    /// q/k/v projections carry a bias (Qwen2; Llama with `attention_bias`).
    pub attention_bias: bool,
    pub mlp_bias: bool,
    pub tie_word_embeddings: bool,
    pub max_position_embeddings: usize,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    /// Mixed precision at run time: projections, attention and the LM head
    /// compute in this dtype (e.g. bf16) while parameters, norms, RoPE,
    /// softmax over the vocabulary and the loss stay f32 (gradients flow
    /// back through the casts to f32 parameters). `None` = all f32. Not
    /// part of `config.json`.
    #[serde(skip)]
    pub compute_dtype: Option<burn::tensor::FloatDType>,
}

fn get_usize(v: &Value, key: &str) -> Result<usize, String> {
    v.get(key)
        .and_then(Value::as_u64)
        .map(|x| x as usize)
        .ok_or_else(|| format!("config.json: missing or non-integer `{key}`"))
}

fn ids(v: Option<&Value>) -> Vec<u32> {
    match v {
        Some(Value::Number(n)) => n.as_u64().map(|x| vec![x as u32]).unwrap_or_default(),
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_u64).map(|x| x as u32).collect(),
        _ => vec![],
    }
}

fn parse_rope(obj: &Value, theta_default: f64) -> Result<RopeSettings, String> {
    let theta = obj.get("rope_theta").and_then(Value::as_f64).unwrap_or(theta_default);
    let rope_type = obj
        .get("rope_type")
        .or_else(|| obj.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default")
        .to_string();
    if !matches!(rope_type.as_str(), "default" | "linear" | "llama3") {
        return Err(format!("config.json: unsupported rope_type `{rope_type}` (default, linear, llama3)"));
    }
    let f = |k: &str, d: f64| obj.get(k).and_then(Value::as_f64).unwrap_or(d);
    Ok(RopeSettings {
        theta,
        rope_type,
        factor: f("factor", 1.0),
        low_freq_factor: f("low_freq_factor", 1.0),
        high_freq_factor: f("high_freq_factor", 4.0),
        original_max_position_embeddings: obj
            .get("original_max_position_embeddings")
            .and_then(Value::as_u64)
            .unwrap_or(8192) as usize,
    })
}

impl ArchConfig {
    /// Parses a Hugging Face `config.json` (LlamaForCausalLM / Qwen2ForCausalLM).
    pub fn from_hf_json(text: &str) -> Result<Self, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| format!("config.json: {e}"))?;
        let model_type = v.get("model_type").and_then(Value::as_str).unwrap_or("llama").to_string();
        if !matches!(model_type.as_str(), "llama" | "qwen2" | "mistral") {
            return Err(format!("config.json: model_type `{model_type}` is not supported (llama, qwen2)"));
        }
        let hidden_size = get_usize(&v, "hidden_size")?;
        let num_attention_heads = get_usize(&v, "num_attention_heads")?;
        let num_key_value_heads = v
            .get("num_key_value_heads")
            .and_then(Value::as_u64)
            .map(|x| x as usize)
            .unwrap_or(num_attention_heads);
        let head_dim = v
            .get("head_dim")
            .and_then(Value::as_u64)
            .map(|x| x as usize)
            .unwrap_or(hidden_size / num_attention_heads.max(1));
        let theta = v.get("rope_theta").and_then(Value::as_f64).unwrap_or(10000.0);
        let rope = if let Some(p) = v.get("rope_parameters").filter(|p| p.is_object()) {
            parse_rope(p, theta)?
        } else if let Some(s) = v.get("rope_scaling").filter(|s| s.is_object()) {
            parse_rope(s, theta)?
        } else {
            RopeSettings::plain(theta)
        };
        if v.get("use_sliding_window").and_then(Value::as_bool) == Some(true) {
            return Err("config.json: sliding-window attention is not supported".into());
        }
        let attention_bias = match model_type.as_str() {
            "qwen2" => true,
            _ => v.get("attention_bias").and_then(Value::as_bool).unwrap_or(false),
        };
        let cfg = Self {
            vocab_size: get_usize(&v, "vocab_size")?,
            hidden_size,
            intermediate_size: get_usize(&v, "intermediate_size")?,
            num_hidden_layers: get_usize(&v, "num_hidden_layers")?,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rms_norm_eps: v.get("rms_norm_eps").and_then(Value::as_f64).unwrap_or(1e-6),
            rope,
            attention_bias,
            mlp_bias: v.get("mlp_bias").and_then(Value::as_bool).unwrap_or(false),
            tie_word_embeddings: v.get("tie_word_embeddings").and_then(Value::as_bool).unwrap_or(false),
            max_position_embeddings: v
                .get("max_position_embeddings")
                .and_then(Value::as_u64)
                .unwrap_or(4096) as usize,
            bos_token_id: v.get("bos_token_id").and_then(Value::as_u64).map(|x| x as u32),
            eos_token_ids: ids(v.get("eos_token_id")),
            compute_dtype: None,
            model_type,
        };
        cfg.check()?;
        Ok(cfg)
    }

    pub fn check(&self) -> Result<(), String> {
        if self.num_key_value_heads == 0 || self.num_attention_heads % self.num_key_value_heads != 0 {
            return Err(format!(
                "num_attention_heads ({}) must be a multiple of num_key_value_heads ({})",
                self.num_attention_heads, self.num_key_value_heads
            ));
        }
        if self.head_dim % 2 != 0 || self.head_dim == 0 {
            return Err(format!("head_dim must be even and non-zero, got {}", self.head_dim));
        }
        if self.vocab_size == 0 || self.hidden_size == 0 || self.num_hidden_layers == 0 {
            return Err("vocab_size, hidden_size and num_hidden_layers must be non-zero".into());
        }
        Ok(())
    }

    /// A `config.json` that transformers and vLLM load.
    pub fn to_hf_json(&self) -> Value {
        let arch = if self.model_type == "qwen2" { "Qwen2ForCausalLM" } else { "LlamaForCausalLM" };
        let mut rope_scaling = Value::Null;
        if self.rope.rope_type != "default" {
            rope_scaling = json!({
                "rope_type": self.rope.rope_type,
                "factor": self.rope.factor,
                "low_freq_factor": self.rope.low_freq_factor,
                "high_freq_factor": self.rope.high_freq_factor,
                "original_max_position_embeddings": self.rope.original_max_position_embeddings,
            });
        }
        let eos = match self.eos_token_ids.as_slice() {
            [] => Value::Null,
            [one] => json!(one),
            many => json!(many),
        };
        let mut v = json!({
            "architectures": [arch],
            "model_type": self.model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope.theta,
            "rope_scaling": rope_scaling,
            "tie_word_embeddings": self.tie_word_embeddings,
            "max_position_embeddings": self.max_position_embeddings,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": eos,
            "torch_dtype": "float32",
            "use_cache": true,
        });
        if self.model_type == "llama" {
            v["attention_bias"] = json!(self.attention_bias);
            v["mlp_bias"] = json!(self.mlp_bias);
        }
        v
    }
}
