//! The layer order of `src/` (docs/ARCHITECTURE.md): a module may name
//! (`crate::…`) only modules below it. Fails on any edge that runs against
//! the order, naming the file and both modules.

use std::collections::BTreeSet;
use std::path::Path;

/// Top to bottom. `cli` wires everything; `store` knows nothing else.
const LAYERS: &[&str] = &[
    "cli",    // the binary's glue: parses, wires the pipeline into the plan, runs
    "report", // tables, figures and collated results, read from the store
    "exec",   // runs a plan's nodes, knowing them only as `dyn Stage`
    "mpo",    // the stages and their wiring (`drafts`)
    "plan",   // the DAG of keyed nodes
    "stage",  // the `Stage` seam, `NodeCtx`, item journals
    "spec",   // the experiment spec: composes the config types below
    "agent",  // prompts, insertion, the episode loop
    "env",    // environments, their settings and capabilities
    "train",  // training engines, datasets, the burn trainer
    "model",  // chat models: local (burn) and served (OpenAI API)
    "store",  // the results dir: artifacts, journals, tables, index
];

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level modules a file names: `crate::x` and `crate::{x, y::…}`.
fn named_modules(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let ident = |s: &str| s.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect::<String>();
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            // Nested braces are rare; a top-level name starts each item.
            for item in group[..end].split(',') {
                let name = ident(item.trim());
                if !name.is_empty() {
                    out.insert(name);
                }
            }
        } else {
            out.insert(ident(rest));
        }
    }
    out
}

fn module_of(root: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(root).unwrap();
    let first = rel.components().next().unwrap().as_os_str().to_string_lossy().to_string();
    first.trim_end_matches(".rs").to_string()
}

#[test]
fn no_module_names_a_module_above_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    files.sort();
    let rank = |m: &str| LAYERS.iter().position(|l| *l == m);
    let mut back_edges = Vec::new();
    let mut unplaced = BTreeSet::new();
    for file in &files {
        let from = module_of(&root, file);
        if matches!(from.as_str(), "lib" | "main") {
            continue;
        }
        let Some(from_rank) = rank(&from) else {
            unplaced.insert(from);
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for to in named_modules(&text) {
            if to == from {
                continue;
            }
            match rank(&to) {
                Some(to_rank) if to_rank < from_rank => {
                    back_edges.push(format!("{} names `crate::{to}` ({from} is below {to})", file.strip_prefix(&root).unwrap().display()))
                }
                Some(_) => {}
                None => {
                    unplaced.insert(to);
                }
            }
        }
    }
    assert!(unplaced.is_empty(), "modules missing from LAYERS (place them in the order): {unplaced:?}");
    assert!(back_edges.is_empty(), "{} edges against the layer order:\n{}", back_edges.len(), back_edges.join("\n"));
}

#[test]
fn the_scanner_sees_plain_and_grouped_paths() {
    let names = named_modules("use crate::store::Store;\nuse crate::{plan::Plan, spec};\nlet x = crate::env::build(&s);");
    assert_eq!(names, ["env", "plan", "spec", "store"].iter().map(|s| s.to_string()).collect());
}
