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
            // Tasks: (row, kv group, a block of the row's new queries), so a
            // long prefill spreads over the cores as well as a wide decode.
            let mut tasks = Vec::new();
            for i in 0..b {
                for g in 0..kvh {
                    for j0 in (0..counts[i]).step_by(QUERY_BLOCK) {
                        tasks.push((i, g, j0, (j0 + QUERY_BLOCK).min(counts[i])));
                    }
                }
            }
            let rep = h / kvh;
            let blocks: Vec<Vec<f32>> = tasks
                .par_iter()
                .map_init(Vec::new, |scratch, &(i, g, j0, j1)| {
                    let (k, v) = &view[i].layers[li];
                    // The row's cache now ends with its new tokens; its new
                    // query j sees the past and the new tokens up to itself.
                    let past = k.len() / per_tok - counts[i];
                    // Head r's new queries start at qh[q.at + r·q.stride].
                    let q = Strided { at: (g * rep * total + offsets[i] + j0) * hd, stride: total * hd };
                    let keys = Keys { k, v, len: past + j1, per_tok, at: g * hd };
                    let mut o = vec![0f32; rep * (j1 - j0) * hd];
                    attend_task(&qh, q, &keys, rep, j1 - j0, hd, scratch, &mut o);
                    o
                })
                .collect();
            let mut out = vec![0f32; h * total * hd];
            for (&(i, g, j0, j1), o) in tasks.iter().zip(&blocks) {
                let n = j1 - j0;
                for r in 0..rep {
                    let at = ((g * rep + r) * total + offsets[i] + j0) * hd;
                    out[at..at + n * hd].copy_from_slice(&o[r * n * hd..(r + 1) * n * hd]);
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

/// New queries of one row per attention task.
const QUERY_BLOCK: usize = 32;

/// Blocks of at least this many queries (prefill) go through matrix
/// kernels ([`attend_block`]); fewer (decode) query by query
/// ([`attend_one`]).
const GEMM_QUERIES: usize = 4;

/// Causal attention of one task: `nq` consecutive new queries of one row
/// (the last of them sees `keys.len` tokens, query `j` the first
/// `len − nq + j + 1`) for the `heads` query heads sharing one kv head. Head
/// `r`'s queries are rows of `hd` from `q.at + r·q.stride` in `qs`; its
/// outputs go to `os[r·nq·hd..]`. Blocks of [`GEMM_QUERIES`] or more
/// (prefill) run as matrix products ([`attend_block`]), fewer (decode) query
/// by query ([`attend_one`]). Dispatched once per task to an AVX2 + FMA
/// build where the CPU has them. `scratch` holds scores across calls.
#[allow(clippy::too_many_arguments)]
fn attend_task(qs: &[f32], q: Strided, keys: &Keys, heads: usize, nq: usize, hd: usize, scratch: &mut Vec<f32>, os: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has AVX2 and FMA (checked just above).
            unsafe { attend_task_avx2(qs, q, keys, heads, nq, hd, scratch, os) };
            return;
        }
    }
    attend_task_generic(qs, q, keys, heads, nq, hd, scratch, os);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn attend_task_avx2(qs: &[f32], q: Strided, keys: &Keys, heads: usize, nq: usize, hd: usize, scratch: &mut Vec<f32>, os: &mut [f32]) {
    attend_task_generic(qs, q, keys, heads, nq, hd, scratch, os)
}

/// [`attend_task`]'s body, compiled for the base target and (inlined into
/// [`attend_task_avx2`]) for AVX2 + FMA.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn attend_task_generic(qs: &[f32], q: Strided, keys: &Keys, heads: usize, nq: usize, hd: usize, scratch: &mut Vec<f32>, os: &mut [f32]) {
    if nq >= GEMM_QUERIES {
        return attend_block(qs, q, keys, heads, nq, hd, scratch, os);
    }
    let past = keys.len - nq;
    for j in 0..nq {
        let qj = Strided { at: q.at + j * hd, stride: q.stride };
        let out = Strided { at: j * hd, stride: nq * hd };
        let kj = Keys { len: past + j + 1, ..*keys };
        attend_one(qs, qj, &kj, heads, hd, scratch, os, out);
    }
}

/// Prefill: per head, `S = Q Kᵀ` over the block's keys, a causal softmax,
/// then `O = P V`, with `gemm`'s kernels.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn attend_block(qs: &[f32], q: Strided, keys: &Keys, heads: usize, nq: usize, hd: usize, scratch: &mut Vec<f32>, os: &mut [f32]) {
    let Keys { k, v, len, per_tok, at } = *keys;
    let scale = 1.0 / (hd as f32).sqrt();
    let past = len - nq;
    assert!(k.len() >= len * per_tok && v.len() >= len * per_tok && per_tok >= at + hd);
    assert!(os.len() >= heads * nq * hd);
    scratch.clear();
    scratch.resize(nq * len, 0.0);
    for r in 0..heads {
        let qr = &qs[q.at + r * q.stride..q.at + r * q.stride + nq * hd];
        // SAFETY: dst is `nq × len` (row stride len) in `scratch`; lhs is
        // `nq × hd` (row stride hd) in `qr`; rhs is `hd × len` with element
        // (d, t) at `k[t·per_tok + at + d]`, inside `k` (asserted above).
        unsafe {
            gemm::gemm(
                nq, len, hd,
                scratch.as_mut_ptr(), 1, len as isize, false,
                qr.as_ptr(), 1, hd as isize,
                k.as_ptr().add(at), per_tok as isize, 1,
                0.0, scale, false, false, false, gemm::Parallelism::None,
            );
        }
        for j in 0..nq {
            let row = &mut scratch[j * len..(j + 1) * len];
            let (seen, unseen) = row.split_at_mut(past + j + 1);
            let max = seen.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let inv = 1.0 / exp_shifted(seen, max);
            seen.iter_mut().for_each(|x| *x *= inv);
            unseen.fill(0.0);
        }
        let or = &mut os[r * nq * hd..(r + 1) * nq * hd];
        // SAFETY: dst is `nq × hd` (row stride hd) in `or`; lhs is
        // `nq × len` (row stride len) in `scratch`; rhs is `len × hd` with
        // element (t, d) at `v[t·per_tok + at + d]`, inside `v`.
        unsafe {
            gemm::gemm(
                nq, hd, len,
                or.as_mut_ptr(), 1, hd as isize, false,
                scratch.as_ptr(), 1, len as isize,
                v.as_ptr().add(at), 1, per_tok as isize,
                0.0, 1.0, false, false, false, gemm::Parallelism::None,
            );
        }
    }
}

/// Where `heads` vectors of one slice start: `at`, `at + stride`, ….
#[derive(Clone, Copy)]
struct Strided {
    at: usize,
    stride: usize,
}

/// One row's cache seen from one kv head: the first `len` tokens of `k` and
/// `v` (token-major `[len, kv_heads, head_dim]`), this head's `head_dim`
/// values starting at `at` in each token's `per_tok`.
struct Keys<'a> {
    k: &'a [f32],
    v: &'a [f32],
    len: usize,
    per_tok: usize,
    at: usize,
}

/// Decode: softmax attention of one query of the `heads` query heads that
/// share one kv head (`q` in `qs`) over `keys`, written to `out` in `os`;
/// common head sizes get a version whose query and output stay in
/// registers. No allocation per query.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn attend_one(qs: &[f32], q: Strided, keys: &Keys, heads: usize, hd: usize, scratch: &mut Vec<f32>, os: &mut [f32], out: Strided) {
    match hd {
        16 => attend_fixed::<16>(qs, q, keys, heads, scratch, os, out),
        32 => attend_fixed::<32>(qs, q, keys, heads, scratch, os, out),
        64 => attend_fixed::<64>(qs, q, keys, heads, scratch, os, out),
        128 => attend_fixed::<128>(qs, q, keys, heads, scratch, os, out),
        _ => attend_any(qs, q, keys, heads, hd, scratch, os, out),
    }
}

/// [`attend_any`] for head size `HD` (a multiple of 8).
#[inline(always)]
fn attend_fixed<const HD: usize>(qs: &[f32], q: Strided, keys: &Keys, heads: usize, scratch: &mut Vec<f32>, os: &mut [f32], out: Strided) {
    let Keys { k, v, len, per_tok, at } = *keys;
    let scale = 1.0 / (HD as f32).sqrt();
    scratch.clear();
    scratch.resize(len, 0.0);
    for r in 0..heads {
        let qv: &[f32; HD] = qs[q.at + r * q.stride..][..HD].try_into().expect("head size");
        let s = &mut scratch[..len];
        for (t, x) in s.iter_mut().enumerate() {
            let kr: &[f32; HD] = k[t * per_tok + at..][..HD].try_into().expect("head size");
            let mut acc = [0f32; 8];
            for c in 0..HD / 8 {
                for j in 0..8 {
                    acc[j] += qv[c * 8 + j] * kr[c * 8 + j];
                }
            }
            *x = acc.iter().sum::<f32>() * scale;
        }
        let max = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let inv = 1.0 / exp_shifted(s, max);
        let mut o = [0f32; HD];
        for (t, &p) in s.iter().enumerate() {
            let vr: &[f32; HD] = v[t * per_tok + at..][..HD].try_into().expect("head size");
            for d in 0..HD {
                o[d] += p * vr[d];
            }
        }
        for (dst, x) in os[out.at + r * out.stride..][..HD].iter_mut().zip(o) {
            *dst = x * inv;
        }
    }
}

/// Any head size.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn attend_any(qs: &[f32], q: Strided, keys: &Keys, heads: usize, hd: usize, scratch: &mut Vec<f32>, os: &mut [f32], out: Strided) {
    let Keys { k, v, len, per_tok, at } = *keys;
    let scale = 1.0 / (hd as f32).sqrt();
    scratch.clear();
    scratch.resize(heads * len, 0.0);
    for t in 0..len {
        let krow = &k[t * per_tok + at..t * per_tok + at + hd];
        for r in 0..heads {
            let qv = &qs[q.at + r * q.stride..q.at + r * q.stride + hd];
            scratch[r * len + t] = dot(qv, krow) * scale;
        }
    }
    for r in 0..heads {
        let s = &mut scratch[r * len..(r + 1) * len];
        let max = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let inv = 1.0 / exp_shifted(s, max);
        let o = &mut os[out.at + r * out.stride..out.at + r * out.stride + hd];
        o.fill(0.0);
        for (t, &p) in s.iter().enumerate() {
            let p = p * inv;
            let vrow = &v[t * per_tok + at..t * per_tok + at + hd];
            for (x, &y) in o.iter_mut().zip(vrow) {
                *x += p * y;
            }
        }
    }
}

/// `x ← exp(x − max)` over `xs`, returning the sum: a branch-free
/// polynomial (Cephes' expf: range reduction by ln 2, degree-5 polynomial,
/// relative error ≤ 2 ulp) that vectorises, unlike `f32::exp`.
#[inline(always)]
fn exp_shifted(xs: &mut [f32], max: f32) -> f32 {
    let mut acc = [0f32; 8];
    let mut chunks = xs.chunks_exact_mut(8);
    for c in &mut chunks {
        for j in 0..8 {
            c[j] = fast_exp(c[j] - max);
            acc[j] += c[j];
        }
    }
    let mut total: f32 = acc.iter().sum();
    for x in chunks.into_remainder() {
        *x = fast_exp(*x - max);
        total += *x;
    }
    total
}

#[inline(always)]
fn fast_exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5·2²³: adding it rounds to an integer (no libm call, vectorises).
    const ROUND: f32 = 12_582_912.0;
    // Below -87.3 the result would be subnormal: clamp.
    let x = x.max(-87.3);
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4_f32;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 5.000_000_1e-1;
    let y = p * r * r + r + 1.0;
    // n sits in the low mantissa bits of t.
    let bits = (t.to_bits().wrapping_sub(ROUND.to_bits()) as i32 + 127) << 23;
    y * f32::from_bits(bits as u32)
}

/// Dot product with eight independent accumulators (vectorises).
#[inline(always)]
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

#[cfg(test)]
mod tests {
    use super::fast_exp;

    #[test]
    fn fast_exp_is_within_a_few_ulp_of_exp() {
        let mut worst = 0f32;
        let mut x = -87.0f32;
        while x <= 0.0 {
            let (a, b) = (fast_exp(x), x.exp());
            worst = worst.max(((a - b) / b).abs());
            x += 0.001;
        }
        assert!(worst < 5e-7, "relative error {worst}");
        assert!(fast_exp(-1000.0) < 1e-37, "clamped far below");
        assert_eq!(fast_exp(0.0), 1.0);
    }
}
