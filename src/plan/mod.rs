//! The plan: a DAG of stage instances (nodes) with content-addressed keys.
//!
//! # Cache keys
//! A node's key is the BLAKE3 hash of the canonical JSON of
//! `{stage, version, config, inputs}`:
//! - `stage` — the stage name (`expert`, `seed_plans`, …);
//! - `version` — a per-stage constant, bumped when the stage's code changes
//!   what it produces;
//! - `config` — the slice of the spec the stage reads, as typed values
//!   (so `m = 5` and `m = 5.0` cannot differ) serialised with sorted keys;
//! - `inputs` — the keys of the nodes it reads.
//!
//! Deliberately not in a key: absolute paths, times, the variant's name, and
//! spec values the stage does not read (changing `mpo.beta` does not rerun
//! `expert`). Nodes of different variants with the same key are one node: a
//! sweep over M shares the SFT planner.
//!
//! Items inside a node (one episode, one sampled plan) have keys of their own
//! (see `store`), so a node that reruns reuses its finished items.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::fmt::Write as _;

use anyhow::Result;

use crate::spec::{Spec, Variant};
use crate::stage::{Items, Stage};
use crate::store::{Index, IndexEntry, Store};

/// A stage instance in the DAG.
#[derive(Clone, Debug)]
pub struct Node {
    pub id: usize,
    pub stage: &'static str,
    pub version: u32,
    /// Human name, e.g. `expert[household/train]`.
    pub label: String,
    pub config: serde_json::Value,
    pub inputs: Vec<usize>,
    pub key: String,
    /// Variants that use this node.
    pub variants: Vec<String>,
    /// What the node does (its stage, with the node's settings).
    pub work: Arc<dyn Stage>,
}

/// A node before keys are known; `inputs` index the variant's own drafts.
#[derive(Debug)]
pub struct Draft {
    pub label: String,
    pub inputs: Vec<usize>,
    pub work: Box<dyn Stage>,
}

impl Draft {
    pub fn new(label: String, inputs: Vec<usize>, work: impl Stage + 'static) -> Draft {
        Draft { label, inputs, work: Box::new(work) }
    }
}

/// Turns one variant's spec into its stage instances in topological
/// order; `source` says where a spec key's value came from, for errors.
/// The pipeline (`mpo::drafts`) is handed in by the caller, so the plan
/// knows stages only through [`Stage`].
pub type Drafter = dyn Fn(&Spec, &dyn Fn(&str) -> String) -> Result<Vec<Draft>>;

/// One variant's view of the plan.
#[derive(Clone, Debug)]
pub struct VariantPlan {
    pub name: String,
    pub overrides: Vec<(String, toml::Value)>,
    pub nodes: Vec<usize>,
}

/// The whole DAG of an experiment.
#[derive(Clone, Debug)]
pub struct Plan {
    pub experiment: String,
    pub results_dir: String,
    pub reports_dir: String,
    pub nodes: Vec<Node>,
    pub variants: Vec<VariantPlan>,
    /// `[report]` of the base spec, with swept keys' base values resolved.
    pub report: crate::spec::ReportSpec,
}

/// The canonical cache key of a node.
pub fn cache_key(stage: &str, version: u32, config: &serde_json::Value, inputs: &[String]) -> String {
    // serde_json's map is a BTreeMap (no `preserve_order`): keys are sorted,
    // so the serialisation is canonical.
    let canonical = serde_json::json!({
        "stage": stage,
        "version": version,
        "config": config,
        "inputs": inputs,
    });
    short_hash(&canonical.to_string())
}

/// 20 hex digits of BLAKE3.
pub fn short_hash(text: &str) -> String {
    blake3::hash(text.as_bytes()).to_hex()[..20].to_string()
}

impl Plan {
    /// Builds the DAG of all variants, sharing identical nodes.
    pub fn build(variants: &[Variant], drafts: &Drafter) -> Result<Plan> {
        let Some(first) = variants.first().map(|v| &v.loaded.spec) else {
            anyhow::bail!("the spec has no variants to plan");
        };
        let mut plan = Plan {
            experiment: first.experiment.name.clone(),
            results_dir: first.experiment.results_dir.clone(),
            reports_dir: first.experiment.reports_dir.clone(),
            nodes: vec![],
            variants: vec![],
            report: crate::spec::ReportSpec::of_variants(variants),
        };
        let mut by_key: HashMap<String, usize> = HashMap::new();
        for variant in variants {
            let loaded = &variant.loaded;
            let source = |key: &str| crate::spec::load::source_of(&loaded.figment, &loaded.path, key);
            let drafts = drafts(&loaded.spec, &source)?;
            let mut ids: Vec<usize> = Vec::with_capacity(drafts.len());
            for d in drafts {
                let inputs: Vec<usize> = d.inputs.iter().map(|&i| ids[i]).collect();
                let input_keys: Vec<String> =
                    inputs.iter().map(|&i| plan.nodes[i].key.clone()).collect();
                let (stage, version, config) = (d.work.name(), d.work.version(), d.work.config());
                let key = cache_key(stage, version, &config, &input_keys);
                let mut work = d.work;
                work.bind(&input_keys);
                let id = match by_key.get(&key) {
                    Some(&id) => id,
                    None => {
                        let id = plan.nodes.len();
                        plan.nodes.push(Node {
                            id,
                            stage,
                            version,
                            label: d.label,
                            config,
                            inputs,
                            key: key.clone(),
                            variants: vec![],
                            work: Arc::from(work),
                        });
                        by_key.insert(key, id);
                        id
                    }
                };
                if !plan.nodes[id].variants.contains(&variant.name) {
                    plan.nodes[id].variants.push(variant.name.clone());
                }
                ids.push(id);
            }
            plan.variants.push(VariantPlan {
                name: variant.name.clone(),
                overrides: variant.overrides.clone(),
                nodes: ids,
            });
        }
        // Labels name nodes for people and for the index of `dirty_reason`:
        // make them unique by the first variant that uses each one.
        let mut seen: HashMap<String, usize> = HashMap::new();
        for n in &plan.nodes {
            *seen.entry(n.label.clone()).or_default() += 1;
        }
        for n in &mut plan.nodes {
            if seen[&n.label] > 1 {
                n.label = format!("{}@{}", n.label, n.variants[0]);
            }
        }
        Ok(plan)
    }

    /// Nodes that must run for `only` (if non-empty: those stages and what
    /// they need), in topological order (node ids are topological).
    pub fn selected(&self, only: &[String]) -> Vec<usize> {
        if only.is_empty() {
            return (0..self.nodes.len()).collect();
        }
        let mut want = vec![false; self.nodes.len()];
        for n in self.nodes.iter().rev() {
            if only.iter().any(|s| s == n.stage) {
                want[n.id] = true;
            }
            if want[n.id] {
                for &i in &n.inputs {
                    want[i] = true;
                }
            }
        }
        (0..self.nodes.len()).filter(|&i| want[i]).collect()
    }
}

/// The index of an experiment (see [`crate::store::Index`]).
pub fn load_index(store: &Store, experiment: &str) -> Index {
    store.load_index(experiment)
}

/// Records every node's label, key, config and inputs in the index.
pub fn save_index(store: &Store, plan: &Plan) -> Result<()> {
    let entries = plan.nodes.iter().map(|n| {
        (
            n.label.clone(),
            IndexEntry {
                key: n.key.clone(),
                config: n.config.clone(),
                inputs: n.inputs.iter().map(|&i| plan.nodes[i].label.clone()).collect(),
            },
        )
    });
    store.update_index(&plan.experiment, entries)
}

/// Why a node is not cached: the config keys that changed since the last
/// run of this experiment, or the inputs that changed, or "new".
pub fn dirty_reason(plan: &Plan, node: &Node, index: &Index) -> String {
    let Some(prev) = index.get(&node.label) else {
        return "new".into();
    };
    if prev.key == node.key {
        return "not built yet, or some items failed in the environment last time".into();
    }
    let mut changes = Vec::new();
    let (mut a, mut b) = (BTreeMap::new(), BTreeMap::new());
    flatten("", &prev.config, &mut a);
    flatten("", &node.config, &mut b);
    for (k, v) in &b {
        match a.get(k) {
            Some(old) if old == v => {}
            Some(old) => changes.push(format!("`{k}` changed {old} → {v}")),
            None => changes.push(format!("`{k}` added ({v})")),
        }
    }
    for k in a.keys() {
        if !b.contains_key(k) {
            changes.push(format!("`{k}` removed"));
        }
    }
    for &i in &node.inputs {
        let input = &plan.nodes[i];
        if index.get(&input.label).is_some_and(|e| e.key != input.key) {
            changes.push(format!("input `{}` changed", input.label));
        }
    }
    if changes.is_empty() {
        "stage version changed".into()
    } else {
        changes.join(", ")
    }
}

fn flatten(prefix: &str, v: &serde_json::Value, out: &mut BTreeMap<String, String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                let p = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&p, v, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

/// Renders the DAG for `--dry-run`: each node with its state, item counts
/// and inputs, then the variants.
pub fn render(plan: &Plan, store: &Store, force: &[String]) -> Result<String> {
    let index = load_index(store, &plan.experiment);
    let mut out = String::new();
    let mut cached = 0;
    let mut lines = Vec::new();
    // Item keys of earlier nodes, per journal: a sweep's variants share
    // items (M = 3 reuses the plans of M = 5).
    let mut seen: HashMap<String, std::collections::HashSet<String>> = HashMap::new();
    for n in &plan.nodes {
        let forced = force.iter().any(|s| s == n.stage);
        let done = store.is_done(n.stage, &n.key) && !forced;
        let dirs: Vec<Option<std::path::PathBuf>> = n
            .inputs
            .iter()
            .map(|&i| {
                let input = &plan.nodes[i];
                store.exists(input.stage, &input.key).then(|| store.artifact_dir(input.stage, &input.key))
            })
            .collect();
        let items = n.work.items(&dirs)?;
        let state = if done {
            cached += 1;
            "cached".to_string()
        } else if forced {
            "to run (forced)".to_string()
        } else {
            format!("to run ({})", dirty_reason(plan, n, &index))
        };
        let inputs = if n.inputs.is_empty() {
            String::new()
        } else {
            format!(
                "\n      from {}",
                n.inputs.iter().map(|&i| format!("`{}`", plan.nodes[i].label)).collect::<Vec<_>>().join(", ")
            )
        };
        let namespace = n.work.journal();
        let item_text = match &items {
            Items::Whole(what) => what.to_string(),
            Items::KnownLater => "items known once its inputs exist".to_string(),
            Items::Keys(items) if done => {
                seen.entry(namespace.to_string()).or_default().extend(items.iter().cloned());
                format!("{} items", items.len())
            }
            Items::Keys(items) => {
                let journal = store.journal(namespace)?;
                let earlier = seen.entry(namespace.to_string()).or_default();
                let mut cached = 0;
                let mut shared = 0;
                for k in items {
                    if !forced && journal.get(k).is_some() {
                        cached += 1;
                    } else if earlier.contains(k) {
                        shared += 1;
                    }
                }
                earlier.extend(items.iter().cloned());
                let to_run = items.len() - cached;
                let shared = if shared > 0 { format!(" ({shared} of them also in an earlier stage: computed once)") } else { String::new() };
                format!("{} items: {cached} cached, {to_run} to run{shared}", items.len())
            }
        };
        let runs: String =
            n.work.commands(&store.checkpoint_dir(n.stage, &n.key)).iter().map(|c| format!("\n      runs: {c}")).collect();
        lines.push(format!("  {} `{}` [{}]\n      {}; {}{}{}", n.id + 1, n.label, n.key, state, item_text, inputs, runs));
    }
    writeln!(
        out,
        "experiment `{}`: {} variant{}, {} stage{} ({} cached, {} to run)",
        plan.experiment,
        plan.variants.len(),
        if plan.variants.len() == 1 { "" } else { "s" },
        plan.nodes.len(),
        if plan.nodes.len() == 1 { "" } else { "s" },
        cached,
        plan.nodes.len() - cached
    )?;
    for l in lines {
        writeln!(out, "{l}")?;
    }
    writeln!(out, "variants:")?;
    for v in &plan.variants {
        let shared: Vec<String> = v
            .nodes
            .iter()
            .map(|&i| {
                let n = &plan.nodes[i];
                if n.variants.len() > 1 {
                    format!("{}*", n.id + 1)
                } else {
                    format!("{}", n.id + 1)
                }
            })
            .collect();
        writeln!(out, "  {}: stages {}", v.name, shared.join(" "))?;
    }
    if plan.variants.len() > 1 {
        writeln!(out, "(* = shared with other variants)")?;
    }
    Ok(out)
}
