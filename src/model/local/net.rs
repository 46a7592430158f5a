//! The burn module of a Llama/Qwen2 causal LM, with Hugging Face field names
//! (`model.layers.N.self_attn.q_proj`, `mlp.gate_proj`, `model.norm`,
//! `lm_head`, …) so `burn::store` safetensors load/save needs no remapping.
//! Owns the forward pass: rotate-half RoPE with per-row positions, GQA
//! attention, SwiGLU MLP, tied or untied LM head, and an optional batched KV
//! cache input/output for incremental decoding.

use burn::module::Param;
use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig, RmsNorm, RmsNormConfig};
use burn::prelude::*;
use burn::tensor::activation::silu;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::FloatDType;

use super::config::ArchConfig;

#[derive(Module, Debug)]
pub struct SelfAttention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub o_proj: Linear,
}

#[derive(Module, Debug)]
pub struct Mlp {
    pub gate_proj: Linear,
    pub up_proj: Linear,
    pub down_proj: Linear,
}

#[derive(Module, Debug)]
pub struct DecoderLayer {
    pub self_attn: SelfAttention,
    pub mlp: Mlp,
    pub input_layernorm: RmsNorm,
    pub post_attention_layernorm: RmsNorm,
}

#[derive(Module, Debug)]
pub struct Backbone {
    pub embed_tokens: Embedding,
    pub layers: Vec<DecoderLayer>,
    pub norm: RmsNorm,
}

/// `LlamaForCausalLM` / `Qwen2ForCausalLM`. `lm_head` is `None` when the
/// embeddings are tied.
#[derive(Module, Debug)]
pub struct CausalLm {
    pub model: Backbone,
    pub lm_head: Option<Linear>,
}

/// Whether `attention` on `device` reads a bool mask the PyTorch way
/// (`true` = attend) instead of burn's (`true` = masked out): burn-tch
/// 0.22.1 hands burn's mask to `scaled_dot_product_attention` unchanged.
/// Probed once per device (two keys, the second masked out) and cached, so
/// a fixed backend needs no change here.
fn mask_means_keep(device: &Device) -> bool {
    static SEEN: std::sync::Mutex<Vec<(Device, bool)>> = std::sync::Mutex::new(Vec::new());
    if let Some(&(_, keep)) = SEEN.lock().expect("mask probe lock").iter().find(|(d, _)| d == device) {
        return keep;
    }
    let q = Tensor::<4>::ones([1, 1, 1, 1], device);
    let k = Tensor::<4>::ones([1, 1, 2, 1], device);
    let v = Tensor::<4>::from_data(TensorData::new(vec![0f32, 1.0], [1, 1, 2, 1]), device);
    let m = Tensor::<4, Bool>::from_data(TensorData::new(vec![false, true], [1, 1, 1, 2]), device);
    let opts = AttentionModuleOptions { scale: None, softcap: None, is_causal: false };
    let out = attention(q, k, v, Some(m), None, opts).try_into_vec_as::<f32>().unwrap_or_default();
    let keep = out.first().is_some_and(|&x| x > 0.5);
    SEEN.lock().expect("mask probe lock").push((device.clone(), keep));
    keep
}

/// Per-layer key/value tensors `[batch, kv_heads, len, head_dim]`.
pub type LayerKv = (Tensor<4>, Tensor<4>);

/// One forward step's inputs besides the tokens.
pub struct StepAux {
    /// RoPE cos/sin per row and position, `[batch, 1, new_len, head_dim]`.
    pub cos: Tensor<4>,
    pub sin: Tensor<4>,
    /// `true` = masked out, `[batch, 1, new_len, past_len + new_len]`; `None`
    /// means plain causal attention.
    pub mask: Option<Tensor<4, Bool>>,
    /// Past keys/values per layer (same batch order), or empty.
    pub past: Vec<LayerKv>,
}

fn linear(d_in: usize, d_out: usize, bias: bool, device: &Device) -> Linear {
    LinearConfig::new(d_in, d_out)
        .with_bias(bias)
        .with_initializer(burn::nn::Initializer::Zeros)
        .init(device)
}

/// `l.forward(x)`, or under mixed precision the same product computed in
/// `dt` (input, weight and bias cast; the result cast back to f32).
fn lin(l: &Linear, x: Tensor<3>, dt: Option<FloatDType>) -> Tensor<3> {
    match dt {
        None => l.forward(x),
        Some(dt) => {
            let bias = l.bias.as_ref().map(|b| b.val().cast(dt));
            burn::tensor::module::linear(x.cast(dt), l.weight.val().cast(dt), bias).cast(FloatDType::F32)
        }
    }
}

fn rms(d: usize, eps: f64, device: &Device) -> RmsNorm {
    RmsNormConfig::new(d).with_epsilon(eps).init(device)
}

impl CausalLm {
    /// A zero-initialised module of the given architecture (weights are
    /// loaded or filled in afterwards).
    pub fn new(a: &ArchConfig, device: &Device) -> Self {
        let (d, hd) = (a.hidden_size, a.head_dim);
        let layers = (0..a.num_hidden_layers)
            .map(|_| DecoderLayer {
                self_attn: SelfAttention {
                    q_proj: linear(d, a.num_attention_heads * hd, a.attention_bias, device),
                    k_proj: linear(d, a.num_key_value_heads * hd, a.attention_bias, device),
                    v_proj: linear(d, a.num_key_value_heads * hd, a.attention_bias, device),
                    o_proj: linear(a.num_attention_heads * hd, d, false, device),
                },
                mlp: Mlp {
                    gate_proj: linear(d, a.intermediate_size, a.mlp_bias, device),
                    up_proj: linear(d, a.intermediate_size, a.mlp_bias, device),
                    down_proj: linear(a.intermediate_size, d, a.mlp_bias, device),
                },
                input_layernorm: rms(d, a.rms_norm_eps, device),
                post_attention_layernorm: rms(d, a.rms_norm_eps, device),
            })
            .collect();
        let embed_tokens = EmbeddingConfig::new(a.vocab_size, d)
            .with_initializer(burn::nn::Initializer::Zeros)
            .init(device);
        Self {
            model: Backbone { embed_tokens, layers, norm: rms(d, a.rms_norm_eps, device) },
            lm_head: if a.tie_word_embeddings { None } else { Some(linear(d, a.vocab_size, false, device)) },
        }
    }

    /// Runs the decoder over `tokens` `[batch, new_len]`; returns the final
    /// normed hidden states `[batch, new_len, hidden]` and this step's
    /// keys/values per layer (`[batch, kv_heads, new_len, head_dim]`, not
    /// concatenated with the past).
    pub fn forward_hidden(&self, a: &ArchConfig, tokens: Tensor<2, Int>, aux: StepAux) -> (Tensor<3>, Vec<LayerKv>) {
        let (h, kvh) = (a.num_attention_heads, a.num_key_value_heads);
        let device = tokens.device();
        let native_gqa = !device.is_autodiff() && device == Device::flex();
        let mask = aux.mask.map(|m| if mask_means_keep(&device) { m.bool_not() } else { m });
        let mut new_kv = Vec::with_capacity(self.model.layers.len());
        let past = aux.past;
        let hidden = self.forward_with(a, tokens, &aux.cos, &aux.sin, |li, q, k, v| {
            new_kv.push((k.clone(), v.clone()));
            let (k, v) = match past.get(li) {
                Some((pk, pv)) => (Tensor::cat(vec![pk.clone(), k], 2), Tensor::cat(vec![pv.clone(), v], 2)),
                None => (k, v),
            };
            let (k, v) = if native_gqa || h == kvh { (k, v) } else { (repeat_kv(k, h / kvh), repeat_kv(v, h / kvh)) };
            let m = mask.clone().map(|m| if native_gqa { m } else { let [mb, _, mq, mk] = m.dims(); m.expand([mb, h, mq, mk]) });
            let opts = AttentionModuleOptions { scale: None, softcap: None, is_causal: m.is_none() };
            match a.compute_dtype {
                None => attention(q, k, v, m, None, opts),
                Some(dt) => attention(q.cast(dt), k.cast(dt), v.cast(dt), m, None, opts).cast(FloatDType::F32),
            }
        });
        (hidden, new_kv)
    }

    /// The decoder layer loop with the attention itself left to `attend`:
    /// it gets the layer index, this step's queries `[batch, heads, new_len,
    /// head_dim]` and keys/values `[batch, kv_heads, new_len, head_dim]`
    /// (RoPE applied) and returns the attention output `[batch, heads,
    /// new_len, head_dim]`. Returns the final normed hidden states.
    pub fn forward_with<F>(&self, a: &ArchConfig, tokens: Tensor<2, Int>, cos: &Tensor<4>, sin: &Tensor<4>, mut attend: F) -> Tensor<3>
    where
        F: FnMut(usize, Tensor<4>, Tensor<4>, Tensor<4>) -> Tensor<4>,
    {
        let [b, n] = tokens.dims();
        let (h, kvh, hd) = (a.num_attention_heads, a.num_key_value_heads, a.head_dim);
        let dt = a.compute_dtype;
        let mut x = self.model.embed_tokens.forward(tokens);
        for (li, layer) in self.model.layers.iter().enumerate() {
            let resid = x.clone();
            let y = layer.input_layernorm.forward(x);
            let sa = &layer.self_attn;
            let q = lin(&sa.q_proj, y.clone(), dt).reshape([b, n, h, hd]).swap_dims(1, 2);
            let k = lin(&sa.k_proj, y.clone(), dt).reshape([b, n, kvh, hd]).swap_dims(1, 2);
            let v = lin(&sa.v_proj, y, dt).reshape([b, n, kvh, hd]).swap_dims(1, 2);
            let q = rope(q, cos, sin);
            let k = rope(k, cos, sin);
            let o = attend(li, q, k, v);
            let o = o.swap_dims(1, 2).reshape([b, n, h * hd]);
            x = resid + lin(&sa.o_proj, o, dt);
            let resid = x.clone();
            let y = layer.post_attention_layernorm.forward(x);
            let mlp = &layer.mlp;
            let y = lin(&mlp.down_proj, silu(lin(&mlp.gate_proj, y.clone(), dt)) * lin(&mlp.up_proj, y, dt), dt);
            x = resid + y;
        }
        self.model.norm.forward(x)
    }

    /// Logits `[batch, len, vocab]` of a plain causal pass over `tokens`
    /// (positions from 0, no cache): scoring and training.
    pub fn forward_logits(&self, a: &ArchConfig, inv_freq: &[f32], tokens: Tensor<2, Int>) -> Tensor<3> {
        let [b, n] = tokens.dims();
        let positions: Vec<Vec<usize>> = vec![(0..n).collect(); b];
        let (cos, sin) = rope_tables(inv_freq, &positions, &tokens.device());
        let (hidden, _) = self.forward_hidden(a, tokens, StepAux { cos, sin, mask: None, past: Vec::new() });
        self.head_in(hidden, a.compute_dtype)
    }

    /// Logits `[batch, len, vocab]` from normed hidden states.
    pub fn head(&self, hidden: Tensor<3>) -> Tensor<3> {
        self.head_in(hidden, None)
    }

    /// [`Self::head`] with the product computed in `dt` (mixed precision;
    /// the logits come back as f32).
    pub fn head_in(&self, hidden: Tensor<3>, dt: Option<FloatDType>) -> Tensor<3> {
        match &self.lm_head {
            Some(l) => lin(l, hidden, dt),
            None => {
                let [b, n, d] = hidden.dims();
                let w = self.model.embed_tokens.weight.val();
                let [vocab, _] = w.dims();
                let x = hidden.reshape([b * n, d]);
                let logits = match dt {
                    None => x.matmul(w.transpose()),
                    Some(dt) => x.cast(dt).matmul(w.cast(dt).transpose()).cast(FloatDType::F32),
                };
                logits.reshape([b, n, vocab])
            }
        }
    }
}

fn repeat_kv(x: Tensor<4>, rep: usize) -> Tensor<4> {
    let [b, kvh, l, hd] = x.dims();
    x.unsqueeze_dim::<5>(2).expand([b, kvh, rep, l, hd]).reshape([b, kvh * rep, l, hd])
}

/// Rotate-half RoPE (Hugging Face convention): `x·cos + rotate_half(x)·sin`.
fn rope(x: Tensor<4>, cos: &Tensor<4>, sin: &Tensor<4>) -> Tensor<4> {
    let [_, _, _, hd] = x.dims();
    let x1 = x.clone().narrow(3, 0, hd / 2);
    let x2 = x.clone().narrow(3, hd / 2, hd / 2);
    let rot = Tensor::cat(vec![x2.neg(), x1], 3);
    x * cos.clone() + rot * sin.clone()
}

/// Host-side cos/sin tables `[rows, 1, len, head_dim]` for per-row positions.
pub fn rope_tables(inv_freq: &[f32], positions: &[Vec<usize>], device: &Device) -> (Tensor<4>, Tensor<4>) {
    let half = inv_freq.len();
    let hd = half * 2;
    let rows = positions.len();
    let len = positions.first().map_or(0, Vec::len);
    let mut cos = Vec::with_capacity(rows * len * hd);
    let mut sin = Vec::with_capacity(rows * len * hd);
    for row in positions {
        for &p in row {
            for _ in 0..2 {
                for &f in inv_freq {
                    let angle = (p as f32) * f;
                    cos.push(angle.cos());
                    sin.push(angle.sin());
                }
            }
        }
    }
    let shape = [rows, 1, len, hd];
    (
        Tensor::from_data(TensorData::new(cos, shape), device),
        Tensor::from_data(TensorData::new(sin, shape), device),
    )
}

/// Replaces a parameter's value, keeping its id.
pub fn set_param<const D: usize>(p: &mut Param<Tensor<D>>, value: Tensor<D>) {
    *p = Param::initialized(p.id, value);
}
