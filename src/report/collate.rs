//! Collated results: one Parquet file per table per experiment,
//! `results/<experiment>/<table>.parquet`, with `experiment` and `variant`
//! in front of each stage's own columns. Rebuilt from the artifacts after
//! every run (cheap: artifacts are the source of truth), and written
//! atomically.
//!
//! Each artifact's table is read into its declared columns first
//! ([`table::conform`]): artifacts committed before #26 hold `UInt64`
//! columns and lack `finished_at` (episodes) or `stage` and `split`
//! (plans), and they stay valid under their keys, so the collated file
//! always has today's schema; an old plans row gets the `stage` that made
//! it (from its node) and a null `split`.

use std::collections::BTreeMap;

use anyhow::Result;
use polars::prelude::*;

use crate::store::table::{self, read_parquet, write_parquet, Col};
use crate::store::Store;
use crate::plan::Plan;

/// Table files a stage artifact may hold.
pub const TABLES: &[&str] = &["episodes", "plans", "pairs", "train_log", "judge"];

/// The declared columns of a table of [`TABLES`].
pub fn columns(table: &str) -> Option<&'static [Col]> {
    Some(match table {
        "episodes" => table::EPISODES,
        "plans" => table::PLANS,
        "pairs" => crate::mpo::pairs::PAIRS,
        "train_log" => table::TRAIN_LOG,
        "judge" => table::JUDGE,
        _ => return None,
    })
}

/// The stage that made the plans of a `stage` artifact (for plans rows
/// written before they said so): `mc_rollouts` scores `sample_plans`' plans.
fn plan_maker(stage: &str) -> &str {
    match stage {
        "mc_rollouts" => crate::mpo::sample_plans::NAME,
        other => other,
    }
}

/// Writes the collated tables of `plan`; returns rows per table.
pub fn collate(plan: &Plan, store: &Store) -> Result<BTreeMap<String, usize>> {
    let dir = store.experiment_dir(&plan.experiment);
    std::fs::create_dir_all(&dir)?;
    let mut counts = BTreeMap::new();
    for table in TABLES {
        let mut acc: Option<DataFrame> = None;
        for variant in &plan.variants {
            for &id in &variant.nodes {
                let node = &plan.nodes[id];
                let path = store.artifact_dir(node.stage, &node.key).join(format!("{table}.parquet"));
                if !path.exists() || !store.exists(node.stage, &node.key) {
                    continue;
                }
                let mut df = read_parquet(&path)?;
                let h = df.height();
                if *table == "plans" && df.column("stage").is_err() {
                    df.insert_column(0, Column::new("stage".into(), vec![plan_maker(node.stage); h]))?;
                }
                if let Some(cols) = columns(table) {
                    df = table::conform(&df, cols).map_err(|e| anyhow::anyhow!("`{}`: {e:#}", path.display()))?;
                }
                df.insert_column(0, Column::new("variant".into(), vec![variant.name.as_str(); h]))?;
                df.insert_column(0, Column::new("experiment".into(), vec![plan.experiment.as_str(); h]))?;
                match &mut acc {
                    None => acc = Some(df),
                    Some(a) => {
                        a.vstack_mut_owned(df)?;
                    }
                }
            }
        }
        let target = dir.join(format!("{table}.parquet"));
        match acc {
            Some(mut df) => {
                df.rechunk_mut();
                // A temp file of this process's own (#22: concurrent runs
                // collate side by side).
                store.replace_file(&target, |tmp| write_parquet(tmp, &mut df))?;
                counts.insert(table.to_string(), df.height());
            }
            None => {
                // No rows for this table any more: do not leave a stale file.
                let _ = std::fs::remove_file(&target);
            }
        }
    }
    Ok(counts)
}
