//! Batched forward passes over a [`CausalLm`]: full-sequence logits (for
//! trainers and scoring), log-prob scoring of (prompt, completion) pairs, and
//! one incremental step over many sequences that each carry their own host
//! KV cache (left-padded into one batch, with an explicit attention mask and
//! per-row RoPE positions, so any mix of lengths shares one forward pass).

use burn::prelude::*;
use burn::tensor::activation::log_softmax;

use super::config::ArchConfig;
use rayon::prelude::*;

use super::net::{rope_tables, CausalLm, StepAux};
use super::weights::to_vec_f32;

/// A sequence's KV cache on the host: per layer, keys and values in
/// token-major layout `[len, kv_heads, head_dim]`.
#[derive(Clone, Debug, Default)]
pub struct SeqKv {
    /// Tokens whose keys/values are cached.
    pub tokens: Vec<u32>,
    pub layers: Vec<(Vec<f32>, Vec<f32>)>,
}

impl SeqKv {
    pub fn new(n_layers: usize) -> Self {
        Self { tokens: Vec::new(), layers: vec![(Vec::new(), Vec::new()); n_layers] }
    }
    pub fn len(&self) -> usize {
        self.tokens.len()
    }
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
    /// Keeps the first `len` tokens.
    pub fn truncate(&mut self, len: usize, per_token: usize) {
        self.tokens.truncate(len);
        for (k, v) in &mut self.layers {
            k.truncate(len * per_token);
            v.truncate(len * per_token);
        }
    }
}

/// The network with what a forward pass needs.
#[derive(Clone, Debug)]
pub struct Runner {
    pub lm: CausalLm,
    pub arch: ArchConfig,
    pub inv_freq: Vec<f32>,
    pub device: Device,
    /// Incremental passes (prefill and decode) attend on the host, straight
    /// from each sequence's own cache, instead of padding every row's cache
    /// into one tensor per step; a row's numbers then do not depend on the
    /// other rows of its batch. On by default on the CPU backend, where the
    /// cache already lives in host memory.
    pub host_decode: bool,
}

impl Runner {
    pub fn new(lm: CausalLm, arch: ArchConfig, device: Device) -> Self {
        let inv_freq = arch.rope.inv_freq(arch.head_dim);
        let host_decode = !device.is_autodiff() && device == Device::flex();
        Self { lm, arch, inv_freq, device, host_decode }
    }

    fn kv_per_token(&self) -> usize {
        self.arch.num_key_value_heads * self.arch.head_dim
    }

    /// Logits `[batch, seq, vocab]` of a causal pass over `input_ids`
    /// (positions 0..seq; right padding does not affect earlier positions).
    pub fn forward_logits(&self, input_ids: Tensor<2, Int>) -> Tensor<3> {
        self.lm.forward_logits(&self.arch, &self.inv_freq, input_ids)
    }

    /// Per-token log-probs of `targets` under `logits`: `[batch, seq]`.
    pub fn token_logprobs(logits: Tensor<3>, targets: Tensor<2, Int>) -> Tensor<2> {
        let lp = log_softmax(logits, 2);
        lp.gather(2, targets.unsqueeze_dim::<3>(2)).squeeze_dim::<2>(2)
    }

    /// Sum of completion-token log-probs for each (prompt, completion) pair.
    pub fn score(&self, pairs: &[(Vec<u32>, Vec<u32>)], max_batch_tokens: usize) -> Vec<f64> {
        let mut out = vec![0.0; pairs.len()];
        let mut order: Vec<usize> = (0..pairs.len()).collect();
        order.sort_by_key(|&i| pairs[i].0.len() + pairs[i].1.len());
        let mut start = 0;
        while start < order.len() {
            let mut end = start + 1;
            while end < order.len() {
                let longest = pairs[order[end]].0.len() + pairs[order[end]].1.len();
                if longest * (end - start + 1) > max_batch_tokens.max(1) {
                    break;
                }
                end += 1;
            }
            let group = &order[start..end];
            let t = group.iter().map(|&i| pairs[i].0.len() + pairs[i].1.len()).max().unwrap_or(1).max(2);
            let b = group.len();
            let mut ids = vec![0i64; b * t];
            let mut tgt = vec![0i64; b * t];
            for (r, &i) in group.iter().enumerate() {
                let full: Vec<u32> = pairs[i].0.iter().chain(pairs[i].1.iter()).copied().collect();
                for (j, &tok) in full.iter().enumerate() {
                    ids[r * t + j] = tok as i64;
                    if j > 0 {
                        tgt[r * t + j - 1] = tok as i64;
                    }
                }
            }
            let ids_t = Tensor::<2, Int>::from_data(TensorData::new(ids, [b, t]), &self.device);
            let tgt_t = Tensor::<2, Int>::from_data(TensorData::new(tgt, [b, t]), &self.device);
            let lp = to_vec_f32(Self::token_logprobs(self.forward_logits(ids_t), tgt_t));
            for (r, &i) in group.iter().enumerate() {
                let (p, c) = (pairs[i].0.len(), pairs[i].1.len());
                // Completion token j (at position p + j) is predicted at p + j - 1.
                let s: f64 = (0..c).filter(|&j| p + j >= 1).map(|j| lp[r * t + p + j - 1] as f64).sum();
                out[i] = s;
            }
            start = end;
        }
        out
    }

    /// One incremental pass: appends `new[i]` to sequence `i` (updating its
    /// cache) and returns each row's next-token logits (after its last new
    /// token). Every `new[i]` must be non-empty.
    pub fn step(&self, seqs: &mut [&mut SeqKv], new: &[&[u32]]) -> Vec<Vec<f32>> {
        let b = seqs.len();
        if b == 0 {
            return Vec::new();
        }
        if self.host_decode {
            return self.step_host(seqs, new);
        }
        let a = &self.arch;
        let (kvh, hd, nl) = (a.num_key_value_heads, a.head_dim, a.num_hidden_layers);
        let per_tok = self.kv_per_token();
        let lmax = seqs.iter().map(|s| s.len()).max().unwrap_or(0);
        let nmax = new.iter().map(|n| n.len()).max().unwrap_or(1).max(1);
        let padded = seqs.iter().any(|s| s.len() != lmax) || new.iter().any(|n| n.len() != nmax) || lmax > 0;
        let mut ids = vec![0i64; b * nmax];
        let mut positions = vec![vec![0usize; nmax]; b];
        for i in 0..b {
            let off = nmax - new[i].len();
            for (j, &tok) in new[i].iter().enumerate() {
                ids[i * nmax + off + j] = tok as i64;
                positions[i][off + j] = seqs[i].len() + j;
            }
        }
        let (cos, sin) = rope_tables(&self.inv_freq, &positions, &self.device);
        let mask = if padded {
            let kl = lmax + nmax;
            let mut m = vec![true; b * nmax * kl];
            for i in 0..b {
                let (li, ni) = (seqs[i].len(), new[i].len());
                for q in 0..nmax {
                    let row = &mut m[(i * nmax + q) * kl..(i * nmax + q + 1) * kl];
                    if q < nmax - ni {
                        row[lmax + q] = false; // padding query: attends to itself only
                        continue;
                    }
                    row[lmax - li..lmax].iter_mut().for_each(|x| *x = false);
                    row[lmax + nmax - ni..=lmax + q].iter_mut().for_each(|x| *x = false);
                }
            }
            Some(Tensor::<4, Bool>::from_data(TensorData::new(m, [b, 1, nmax, kl]), &self.device))
        } else {
            None
        };
        let past = if lmax > 0 {
            (0..nl)
                .map(|l| {
                    let mut kb = vec![0f32; b * lmax * per_tok];
                    let mut vb = vec![0f32; b * lmax * per_tok];
                    for i in 0..b {
                        let li = seqs[i].len();
                        let dst = (i * lmax + lmax - li) * per_tok;
                        kb[dst..dst + li * per_tok].copy_from_slice(&seqs[i].layers[l].0);
                        vb[dst..dst + li * per_tok].copy_from_slice(&seqs[i].layers[l].1);
                    }
                    let k = Tensor::<4>::from_data(TensorData::new(kb, [b, lmax, kvh, hd]), &self.device).swap_dims(1, 2);
                    let v = Tensor::<4>::from_data(TensorData::new(vb, [b, lmax, kvh, hd]), &self.device).swap_dims(1, 2);
                    (k, v)
                })
                .collect()
        } else {
            Vec::new()
        };
        let ids_t = Tensor::<2, Int>::from_data(TensorData::new(ids, [b, nmax]), &self.device);
        let (hidden, new_kv) = self.lm.forward_hidden(a, ids_t, StepAux { cos, sin, mask, past });
        let last = hidden.narrow(1, nmax - 1, 1);
        let logits = to_vec_f32(self.lm.head(last));
        let vocab = a.vocab_size;
        for (l, (k, v)) in new_kv.into_iter().enumerate() {
            let kh = to_vec_f32(k.swap_dims(1, 2));
            let vh = to_vec_f32(v.swap_dims(1, 2));
            for i in 0..b {
                let ni = new[i].len();
                let src = (i * nmax + nmax - ni) * per_tok;
                seqs[i].layers[l].0.extend_from_slice(&kh[src..src + ni * per_tok]);
                seqs[i].layers[l].1.extend_from_slice(&vh[src..src + ni * per_tok]);
            }
        }
        for i in 0..b {
            seqs[i].tokens.extend_from_slice(new[i]);
        }
        logits.chunks(vocab).map(<[f32]>::to_vec).collect()
    }

    /// An incremental pass with attention on the host (prefill and decode
    /// alike): the rows' new tokens run as one unpadded sequence through the
    /// batched projections, MLP and head, while each new token attends on
    /// the host to its own row's cached keys/values and the row's new tokens
    /// up to itself (GQA-aware, queries in parallel). No padding and no
    /// re-assembly of the batch's caches, and a row's numbers do not depend
    /// on which other rows share the pass (the padded path's sums run over
    /// the batch's longest row).
    fn step_host(&self, seqs: &mut [&mut SeqKv], new: &[&[u32]]) -> Vec<Vec<f32>> {
        let a = &self.arch;
        let b = seqs.len();
        let (h, kvh, hd) = (a.num_attention_heads, a.num_key_value_heads, a.head_dim);
        let per_tok = kvh * hd;
        let counts: Vec<usize> = new.iter().map(|n| n.len()).collect();
        let offsets: Vec<usize> = counts.iter().scan(0, |acc, &c| { let o = *acc; *acc += c; Some(o) }).collect();
        let total: usize = counts.iter().sum();
        let row_of: Vec<usize> = (0..b).flat_map(|i| std::iter::repeat_n(i, counts[i])).collect();
        let ids: Vec<i64> = new.iter().flat_map(|n| n.iter().map(|&t| t as i64)).collect();
        let positions: Vec<Vec<usize>> = vec![seqs.iter().zip(new).flat_map(|(s, n)| (0..n.len()).map(move |j| s.len() + j)).collect()];
        let (cos, sin) = rope_tables(&self.inv_freq, &positions, &self.device);
        let ids_t = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, total]), &self.device);
        let device = self.device.clone();
        let hidden = self.lm.forward_with(a, ids_t, &cos, &sin, |li, q, k, v| {
            // Host layouts: q `[heads, total, hd]`, k/v `[kv_heads, total, hd]`.
            let (qh, kh, vh) = (to_vec_f32(q), to_vec_f32(k), to_vec_f32(v));
            for (i, s) in seqs.iter_mut().enumerate() {
                for t in offsets[i]..offsets[i] + counts[i] {
                    for g in 0..kvh {
                        let at = (g * total + t) * hd;
                        s.layers[li].0.extend_from_slice(&kh[at..at + hd]);
                        s.layers[li].1.extend_from_slice(&vh[at..at + hd]);
                    }
                }
            }
            let view: &[&mut SeqKv] = seqs;
            let per_query: Vec<Vec<f32>> = (0..total)
                .into_par_iter()
                .map(|t| {
                    let i = row_of[t];
                    let (k, v) = &view[i].layers[li];
                    // The row's cache now ends with its new tokens; query t
                    // sees the past and the new tokens up to itself.
                    let upto = (k.len() / per_tok - counts[i] + (t - offsets[i]) + 1) * per_tok;
                    let mut qv = vec![0f32; h * hd];
                    for hq in 0..h {
                        let at = (hq * total + t) * hd;
                        qv[hq * hd..(hq + 1) * hd].copy_from_slice(&qh[at..at + hd]);
                    }
                    let mut o = vec![0f32; h * hd];
                    attend_row(&qv, &k[..upto], &v[..upto], h, kvh, hd, &mut o);
                    o
                })
                .collect();
            let mut out = vec![0f32; h * total * hd];
            for (t, o) in per_query.iter().enumerate() {
                for hq in 0..h {
                    let at = (hq * total + t) * hd;
                    out[at..at + hd].copy_from_slice(&o[hq * hd..(hq + 1) * hd]);
                }
            }
            Tensor::<4>::from_data(TensorData::new(out, [1, h, total, hd]), &device)
        });
        let last_idx: Vec<i64> = (0..b).map(|i| (offsets[i] + counts[i] - 1) as i64).collect();
        let last = hidden.select(1, Tensor::<1, Int>::from_data(TensorData::new(last_idx, [b]), &self.device));
        let logits = to_vec_f32(self.lm.head(last));
        for i in 0..b {
            seqs[i].tokens.extend_from_slice(new[i]);
        }
        logits.chunks(a.vocab_size).map(<[f32]>::to_vec).collect()
    }
}

/// Softmax attention of one row's queries `q` (`[heads, head_dim]`) over its
/// cache (`k`, `v`: token-major `[len, kv_heads, head_dim]`), grouped-query
/// heads sharing a kv head; writes `[heads, head_dim]` into `out`.
fn attend_row(q: &[f32], k: &[f32], v: &[f32], h: usize, kvh: usize, hd: usize, out: &mut [f32]) {
    let per_tok = kvh * hd;
    let len = k.len() / per_tok;
    let rep = h / kvh;
    let scale = 1.0 / (hd as f32).sqrt();
    let mut scores = vec![0f32; h * len];
    for t in 0..len {
        let krow = &k[t * per_tok..(t + 1) * per_tok];
        for hq in 0..h {
            let g = hq / rep;
            scores[hq * len + t] = dot(&q[hq * hd..(hq + 1) * hd], &krow[g * hd..(g + 1) * hd]) * scale;
        }
    }
    for s in scores.chunks_mut(len.max(1)) {
        let max = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut total = 0.0;
        for x in s.iter_mut() {
            *x = (*x - max).exp();
            total += *x;
        }
        let inv = 1.0 / total;
        s.iter_mut().for_each(|x| *x *= inv);
    }
    out.fill(0.0);
    for t in 0..len {
        let vrow = &v[t * per_tok..(t + 1) * per_tok];
        for hq in 0..h {
            let g = hq / rep;
            let p = scores[hq * len + t];
            for (o, &x) in out[hq * hd..(hq + 1) * hd].iter_mut().zip(&vrow[g * hd..(g + 1) * hd]) {
                *o += p * x;
            }
        }
    }
}

/// Dot product with eight independent accumulators (vectorises).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for j in 0..8 {
            acc[j] += x[j] * y[j];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}
