//! Collated results: one Parquet file per table per experiment,
//! `results/<experiment>/<table>.parquet`, with `experiment` and `variant`
//! in front of each stage's own columns. Rebuilt from the artifacts after
//! every run (cheap: artifacts are the source of truth), and written
//! atomically.

use std::collections::BTreeMap;

use anyhow::Result;
use polars::prelude::*;

use crate::store::table::{read_parquet, write_parquet};
use crate::store::Store;
use crate::plan::Plan;

/// Table files a stage artifact may hold.
pub const TABLES: &[&str] = &["episodes", "plans", "pairs", "train_log", "judge"];

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
