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
                        align(a, &mut df)?;
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

/// Gives `a` and `b` the same columns in the same order: a column one of
/// them lacks (an artifact written before the column existed, such as
/// `train_log`'s `finished_at`) is added to it as nulls of the other's type.
fn align(a: &mut DataFrame, b: &mut DataFrame) -> Result<()> {
    fn add_missing(from: &DataFrame, to: &mut DataFrame) -> Result<()> {
        for c in from.columns() {
            if to.column(c.name()).is_err() {
                let nulls = Column::full_null(c.name().clone(), to.height(), c.dtype());
                to.with_column(nulls)?;
            }
        }
        Ok(())
    }
    add_missing(a, b)?;
    add_missing(b, a)?;
    let order: Vec<PlSmallStr> = a.get_column_names().into_iter().cloned().collect();
    *b = b.select(order)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_from_before_a_column_existed_stack_with_nulls() {
        let mut a = df!("step" => [1u64, 2], "finished_at" => [Some(5i64), None]).unwrap();
        let mut b = df!("step" => [3u64]).unwrap();
        align(&mut a, &mut b).unwrap();
        a.vstack_mut_owned(b).unwrap();
        assert_eq!(a.height(), 3);
        assert_eq!(a.column("finished_at").unwrap().null_count(), 2);
    }
}
