//! AdamW with PyTorch's semantics (decoupled weight decay applied before the
//! moment update, bias-corrected step), global gradient-norm clipping as
//! `torch.nn.utils.clip_grad_norm_`, gradient accumulation across
//! micro-batches, the Hugging Face warm-up + cosine/linear schedules, and
//! the optimizer state as a safetensors file (for bit-exact resume).
//!
//! Parameters are addressed by their burn module path
//! (`model.layers.0.self_attn.q_proj.weight`), which is stable across runs,
//! unlike burn's random `ParamId`s.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::prelude::*;
use serde::{Deserialize, Serialize};

/// Hyper-parameters of the optimizer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    pub betas: (f64, f64),
    pub eps: f64,
    pub weight_decay: f64,
    /// Decay norms' weights and biases too (`torch.optim.AdamW(model.parameters())`);
    /// `false` = the Hugging Face Trainer's grouping (no decay on biases and
    /// RMSNorm weights).
    pub decay_all: bool,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self { betas: (0.9, 0.999), eps: 1e-8, weight_decay: 0.0, decay_all: false }
    }
}

/// Module paths of every float parameter, by id.
struct Namer {
    path: Vec<String>,
    names: Vec<(ParamId, String, usize)>,
}

impl ModuleVisitor for Namer {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let n = param.shape().num_elements();
        self.names.push((param.id, self.path.join("."), n));
    }
}

/// `(id, path, element count)` of every float parameter, in module order.
pub fn param_names<M: Module>(module: &M) -> Vec<(ParamId, String, usize)> {
    let mut v = Namer { path: Vec::new(), names: Vec::new() };
    module.visit(&mut v);
    v.names
}

/// Moves a module's parameters onto the autodiff version of their device
/// with gradients required (with burn's balanced gradient checkpointing when
/// `checkpointing`; every tensor of a graph must share the strategy).
pub fn to_trainable<M: Module>(module: M, checkpointing: bool) -> M {
    struct Lift(bool);
    impl ModuleMapper for Lift {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let (id, t, mapper) = param.consume();
            let t = if t.is_autodiff() { t.inner() } else { t };
            let mut t = Tensor::from_inner(t);
            if self.0 {
                t = t.with_gradient_checkpointing_strategy(burn::tensor::GradientCheckpointingStrategy::Balanced);
            }
            Param::from_mapped_value(id, t.require_grad(), mapper)
        }
    }
    module.map(&mut Lift(checkpointing))
}

/// Gradients summed over micro-batches, by parameter id.
#[derive(Default)]
pub struct GradAccumulator {
    grads: Option<GradientsParams>,
}

impl GradAccumulator {
    pub fn add<M: Module>(&mut self, module: &M, grads: burn::tensor::Gradients) {
        let new = GradientsParams::from_grads(grads, module);
        self.merge(module, new);
    }

    /// Adds already extracted gradients.
    pub fn merge<M: Module>(&mut self, module: &M, new: GradientsParams) {
        match self.grads.take() {
            None => self.grads = Some(new),
            Some(acc) => {
                struct Add {
                    acc: GradientsParams,
                    new: GradientsParams,
                }
                impl ModuleVisitor for Add {
                    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                        let sum = match (self.acc.remove::<D>(param.id), self.new.remove::<D>(param.id)) {
                            (Some(a), Some(b)) => a + b,
                            (Some(a), None) => a,
                            (None, Some(b)) => b,
                            (None, None) => return,
                        };
                        self.acc.register(param.id, sum);
                    }
                }
                let mut v = Add { acc, new };
                module.visit(&mut v);
                self.grads = Some(v.acc);
            }
        }
    }

    pub fn take(&mut self) -> Option<GradientsParams> {
        self.grads.take()
    }
}

/// The L2 norm of all gradients together (f64 accumulation).
pub fn global_grad_norm<M: Module>(module: &M, grads: &GradientsParams) -> f64 {
    struct Norm<'a> {
        grads: &'a GradientsParams,
        sq: f64,
    }
    impl ModuleVisitor for Norm<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(g) = self.grads.get::<D>(param.id) {
                let v: Vec<f32> = crate::model::local::weights::to_vec_f32(g);
                self.sq += v.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>();
            }
        }
    }
    let mut v = Norm { grads, sq: 0.0 };
    module.visit(&mut v);
    v.sq.sqrt()
}

/// Moment estimates of one parameter (flattened).
#[derive(Clone)]
struct Moments {
    m: Tensor<1>,
    v: Tensor<1>,
}

/// AdamW state: the step count and both moments of every parameter.
pub struct AdamW {
    pub config: AdamWConfig,
    /// Optimizer steps taken.
    pub step: u64,
    state: HashMap<String, Moments>,
}

fn no_decay(path: &str) -> bool {
    path.ends_with(".bias") || path.ends_with("layernorm.gamma") || path.ends_with("norm.gamma") || path.ends_with(".gamma")
}

impl AdamW {
    pub fn new(config: AdamWConfig) -> Self {
        Self { config, step: 0, state: HashMap::new() }
    }

    /// One update of every parameter that has a gradient, with the
    /// gradients scaled by `grad_scale` (the clipping coefficient).
    pub fn step<M: Module>(&mut self, module: M, grads: GradientsParams, lr: f64, grad_scale: f64) -> M {
        self.step += 1;
        let names: HashMap<ParamId, String> = param_names(&module).into_iter().map(|(id, p, _)| (id, p)).collect();
        struct Update<'a> {
            opt: &'a mut AdamW,
            grads: GradientsParams,
            names: HashMap<ParamId, String>,
            lr: f64,
            grad_scale: f64,
        }
        impl ModuleMapper for Update<'_> {
            fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
                let (id, tensor, mapper) = param.consume();
                let Some(grad) = self.grads.remove::<D>(id) else {
                    return Param::from_mapped_value(id, tensor, mapper);
                };
                let name = self.names.get(&id).cloned().unwrap_or_default();
                let require_grad = tensor.is_require_grad();
                let p = if tensor.is_autodiff() { tensor.inner() } else { tensor };
                let shape = p.shape();
                let n = shape.num_elements();
                let device = p.device();
                let mut g: Tensor<1> = grad.reshape([n]);
                if self.grad_scale != 1.0 {
                    g = g.mul_scalar(self.grad_scale);
                }
                let c = &self.opt.config;
                let (b1, b2) = c.betas;
                let t = self.opt.step as i32;
                let st = self.opt.state.remove(&name).unwrap_or_else(|| Moments {
                    m: Tensor::zeros([n], &device),
                    v: Tensor::zeros([n], &device),
                });
                let m = st.m.mul_scalar(b1).add(g.clone().mul_scalar(1.0 - b1));
                let v = st.v.mul_scalar(b2).add(g.clone().mul(g).mul_scalar(1.0 - b2));
                let bc1 = 1.0 - b1.powi(t);
                let bc2 = 1.0 - b2.powi(t);
                let step_size = self.lr / bc1;
                let mut flat: Tensor<1> = p.reshape([n]);
                let decay = c.weight_decay != 0.0 && (c.decay_all || !no_decay(&name));
                if decay {
                    flat = flat.mul_scalar(1.0 - self.lr * c.weight_decay);
                }
                let denom = v.clone().sqrt().div_scalar(bc2.sqrt()).add_scalar(c.eps);
                let flat = flat.sub(m.clone().div(denom).mul_scalar(step_size));
                self.opt.state.insert(name, Moments { m, v });
                let mut out: Tensor<D> = flat.reshape(shape);
                out = Tensor::from_inner(out);
                if require_grad {
                    out = out.require_grad();
                }
                Param::from_mapped_value(id, out, mapper)
            }
        }
        let mut u = Update { opt: self, grads, names, lr, grad_scale };
        module.map(&mut u)
    }

    /// Writes the moments and step count to `path` (safetensors, f32).
    pub fn save(&self, path: &Path) -> Result<(), String> {
        let mut tensors: BTreeMap<String, (Vec<u8>, usize)> = BTreeMap::new();
        for (name, st) in &self.state {
            for (suffix, t) in [("exp_avg", &st.m), ("exp_avg_sq", &st.v)] {
                let v: Vec<f32> = crate::model::local::weights::to_vec_f32(t.clone());
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                tensors.insert(format!("{name}.{suffix}"), (bytes, v.len()));
            }
        }
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
            .iter()
            .map(|(k, (b, n))| {
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![*n], b)
                    .map(|v| (k.clone(), v))
                    .map_err(|e| format!("{e}"))
            })
            .collect::<Result<_, _>>()?;
        let mut meta = std::collections::HashMap::new();
        meta.insert("step".to_string(), self.step.to_string());
        meta.insert("config".to_string(), serde_json::to_string(&self.config).unwrap_or_default());
        safetensors::serialize_to_file(views, Some(meta), path).map_err(|e| format!("writing {}: {e}", path.display()))
    }

    /// Reads what [`AdamW::save`] wrote.
    pub fn load(path: &Path, config: AdamWConfig, device: &Device) -> Result<Self, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        let step: u64 = meta
            .metadata()
            .as_ref()
            .and_then(|m| m.get("step"))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("{}: no step count", path.display()))?;
        let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut state: HashMap<String, Moments> = HashMap::new();
        let mut parts: HashMap<String, (Option<Tensor<1>>, Option<Tensor<1>>)> = HashMap::new();
        for (name, view) in st.tensors() {
            let data: Vec<f32> = view.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            let n = data.len();
            let t = Tensor::<1>::from_data(TensorData::new(data, [n]), device);
            if let Some(p) = name.strip_suffix(".exp_avg_sq") {
                parts.entry(p.to_string()).or_default().1 = Some(t);
            } else if let Some(p) = name.strip_suffix(".exp_avg") {
                parts.entry(p.to_string()).or_default().0 = Some(t);
            }
        }
        for (name, (m, v)) in parts {
            match (m, v) {
                (Some(m), Some(v)) => {
                    state.insert(name, Moments { m, v });
                }
                _ => return Err(format!("{}: incomplete moments for `{name}`", path.display())),
            }
        }
        Ok(Self { config, step, state })
    }
}

/// Learning-rate schedules (Hugging Face `get_*_schedule_with_warmup`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    #[default]
    Cosine,
    Linear,
    Constant,
}

/// The learning rate of optimizer step `step` (0-based) of `total`, with
/// `warmup` linear warm-up steps (`lr · step / warmup`, so step 0 has lr 0
/// when warming up, as in transformers).
pub fn lr_at(schedule: Schedule, base: f64, step: u64, warmup: u64, total: u64) -> f64 {
    if step < warmup {
        return base * step as f64 / warmup.max(1) as f64;
    }
    let progress = (step - warmup) as f64 / (total.saturating_sub(warmup)).max(1) as f64;
    match schedule {
        Schedule::Cosine => base * (0.5 * (1.0 + (std::f64::consts::PI * progress).cos())).max(0.0),
        Schedule::Linear => base * (1.0 - progress).max(0.0),
        Schedule::Constant => base,
    }
}

/// PyTorch's clipping coefficient: `min(1, max_norm / (norm + 1e-6))`.
pub fn clip_coef(norm: f64, max_norm: Option<f64>) -> f64 {
    match max_norm {
        Some(m) if m > 0.0 && norm.is_finite() => (m / (norm + 1e-6)).min(1.0),
        _ => 1.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_schedule_matches_transformers() {
        // get_cosine_schedule_with_warmup(base 1.0, warmup 3, total 100)
        assert_eq!(lr_at(Schedule::Cosine, 1.0, 0, 3, 100), 0.0);
        assert!((lr_at(Schedule::Cosine, 1.0, 1, 3, 100) - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(lr_at(Schedule::Cosine, 1.0, 3, 3, 100), 1.0);
        let mid = lr_at(Schedule::Cosine, 1.0, 3 + 97 / 2, 3, 100);
        assert!((mid - 0.5 * (1.0 + (std::f64::consts::PI * 48.0 / 97.0).cos())).abs() < 1e-12);
        assert!(lr_at(Schedule::Cosine, 1.0, 99, 3, 100) < 0.001);
        assert_eq!(lr_at(Schedule::Linear, 2.0, 0, 0, 4), 2.0);
        assert_eq!(lr_at(Schedule::Linear, 2.0, 2, 0, 4), 1.0);
    }

    #[test]
    fn clipping_coefficient() {
        assert_eq!(clip_coef(0.5, Some(1.0)), 1.0);
        assert!((clip_coef(4.0, Some(1.0)) - 1.0 / (4.0 + 1e-6)).abs() < 1e-15);
        assert_eq!(clip_coef(4.0, None), 1.0);
    }
}
