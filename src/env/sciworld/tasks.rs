//! ScienceWorld task lists: the released train/dev/test `[task name,
//! variation]` lists, step limits and task-name ids (data/sciworld/, embedded
//! in the binary), split names, and stable task ids.
//!
//! A task id is `{name}/{id}_{variation}` — `name` the simulator's canonical
//! task name (the release name without its `task-N-` prefix and
//! parentheses, also the `task_type` column), `id` the release's
//! `taskname2id` number — e.g. `boil/0_21`. It is parsed as text, never as a
//! number (the release's resume mis-read ids like `0_21`).

use std::collections::BTreeMap;
use std::sync::OnceLock;

const TRAIN: &str = include_str!("../../../data/sciworld/train_indices.json");
const DEV: &str = include_str!("../../../data/sciworld/dev_indices.json");
const TEST: &str = include_str!("../../../data/sciworld/test_indices.json");
const MAX_STEPS: &str = include_str!("../../../data/sciworld/max_steps.json");
const NAME2ID: &str = include_str!("../../../data/sciworld/taskname2id.json");

/// Step limit of a task missing from `max_steps.json` (the generic limit).
pub const DEFAULT_MAX_STEPS: u32 = 30;

/// The splits: `train`, `seen` (the release's dev list), `unseen` (test).
pub const SPLITS: [&str; 3] = ["train", "seen", "unseen"];

/// The canonical split name (`dev` → `seen`, `test` → `unseen`).
pub fn canonical_split(split: &str) -> Option<&'static str> {
    match split {
        "train" => Some("train"),
        "seen" | "dev" => Some("seen"),
        "unseen" | "test" => Some("unseen"),
        _ => None,
    }
}

/// One task of a list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SciTask {
    /// The release's task name (`task-1-boil`), what the simulator loads.
    pub release_name: String,
    /// Canonical simulator name (`boil`), the `task_type`.
    pub name: String,
    /// The release's `taskname2id` number.
    pub num: u32,
    pub variation: u32,
    /// Step limit from `max_steps.json`.
    pub max_steps: u32,
}

impl SciTask {
    pub fn task_id(&self) -> String {
        format!("{}/{}_{}", self.name, self.num, self.variation)
    }
    /// The release's topic prefix (`task-2a`, `task-10`), for grouping.
    pub fn topic(&self) -> String {
        topic_of(&self.release_name)
    }
    /// The simulator's own topic number (1–10; see [`PACKAGE_TASK_IDS`]).
    pub fn package_topic(&self) -> u32 {
        package_topic(&self.name).expect("every listed task is in PACKAGE_TASK_IDS")
    }
}

/// ScienceWorld's own task ids (`topic-task`) by canonical name, from the
/// `scienceworld` 1.2.3 package's `tasks.json` (30 tasks in 10 topics). The
/// release's `task-N-` prefixes number topics differently: its `task-2` and
/// `task-2a` are both topic 3 (Electricity), its `task-10` is topic 2
/// (Measurement), and its `task-3` … `task-9` are topics 4 … 10.
pub const PACKAGE_TASK_IDS: [(&str, &str); 30] = [
    ("boil", "1-1"),
    ("melt", "1-2"),
    ("freeze", "1-3"),
    ("change-the-state-of-matter-of", "1-4"),
    ("use-thermometer", "2-1"),
    ("measure-melting-point-known-substance", "2-2"),
    ("measure-melting-point-unknown-substance", "2-3"),
    ("power-component", "3-1"),
    ("power-component-renewable-vs-nonrenewable-energy", "3-2"),
    ("test-conductivity", "3-3"),
    ("test-conductivity-of-unknown-substances", "3-4"),
    ("find-living-thing", "4-1"),
    ("find-non-living-thing", "4-2"),
    ("find-plant", "4-3"),
    ("find-animal", "4-4"),
    ("grow-plant", "5-1"),
    ("grow-fruit", "5-2"),
    ("chemistry-mix", "6-1"),
    ("chemistry-mix-paint-secondary-color", "6-2"),
    ("chemistry-mix-paint-tertiary-color", "6-3"),
    ("lifespan-longest-lived", "7-1"),
    ("lifespan-shortest-lived", "7-2"),
    ("lifespan-longest-lived-then-shortest-lived", "7-3"),
    ("identify-life-stages-1", "8-1"),
    ("identify-life-stages-2", "8-2"),
    ("inclined-plane-determine-angle", "9-1"),
    ("inclined-plane-friction-named-surfaces", "9-2"),
    ("inclined-plane-friction-unnamed-surfaces", "9-3"),
    ("mendelian-genetics-known-plant", "10-1"),
    ("mendelian-genetics-unknown-plant", "10-2"),
];

/// The simulator's topic (1–10) of a canonical task name.
pub fn package_topic(name: &str) -> Option<u32> {
    let (_, id) = PACKAGE_TASK_IDS.iter().find(|(n, _)| *n == name)?;
    id.split('-').next()?.parse().ok()
}

/// `task-2a-test-conductivity` → `task-2a`.
pub fn topic_of(release_name: &str) -> String {
    let mut parts = release_name.splitn(3, '-');
    match (parts.next(), parts.next()) {
        (Some(a), Some(b)) => format!("{a}-{b}"),
        _ => release_name.to_string(),
    }
}

/// The simulator's canonical name of a release task name (what
/// `scienceworld.utils.infer_task` makes of it): drop `task-N-` and
/// parentheses; the release's `mendellian` typo is fixed upstream.
pub fn canonical_name(release_name: &str) -> String {
    let mut s = release_name.replace("mendellian", "mendelian");
    if let Some(rest) = s.strip_prefix("task-") {
        if let Some(i) = rest.find('-') {
            let prefix = &rest[..i];
            if !prefix.is_empty() && prefix.chars().all(|c| c.is_ascii_digit() || c == 'a' || c == 'b') {
                s = rest[i + 1..].to_string();
            }
        }
    }
    s.replace(['(', ')'], "")
}

struct Data {
    splits: BTreeMap<&'static str, Vec<SciTask>>,
    /// canonical name → (release name, num, max_steps)
    by_name: BTreeMap<String, (String, u32, u32)>,
}

fn data() -> &'static Data {
    static DATA: OnceLock<Data> = OnceLock::new();
    DATA.get_or_init(|| {
        let max_steps: BTreeMap<String, u32> = serde_json::from_str(MAX_STEPS).expect("embedded max_steps.json");
        let name2id: BTreeMap<String, u32> = serde_json::from_str(NAME2ID).expect("embedded taskname2id.json");
        let mut by_name = BTreeMap::new();
        for (release, &num) in &name2id {
            let ms = max_steps.get(release).copied().unwrap_or(DEFAULT_MAX_STEPS);
            by_name.insert(canonical_name(release), (release.clone(), num, ms));
        }
        let mut splits = BTreeMap::new();
        for (split, text) in [("train", TRAIN), ("seen", DEV), ("unseen", TEST)] {
            let list: Vec<(String, u32)> = serde_json::from_str(text).expect("embedded task list");
            let tasks = list
                .into_iter()
                .map(|(release, variation)| {
                    let name = canonical_name(&release);
                    let &(_, num, ms) = by_name.get(&name).expect("task list name in taskname2id.json");
                    SciTask { release_name: release, name, num, variation, max_steps: ms }
                })
                .collect();
            splits.insert(split, tasks);
        }
        Data { splits, by_name }
    })
}

/// The tasks of a split (`train`, `seen`/`dev`, `unseen`/`test`), in list order.
pub fn split_tasks(split: &str) -> Option<&'static [SciTask]> {
    let s = canonical_split(split)?;
    data().splits.get(s).map(Vec::as_slice)
}

/// Parses a task id (`boil/0_21`) back into its task.
pub fn parse_task_id(task_id: &str) -> Option<SciTask> {
    let (name, rest) = task_id.split_once('/')?;
    let (num, var) = rest.split_once('_')?;
    let (release, n, ms) = data().by_name.get(name)?;
    let num: u32 = num.parse().ok()?;
    let variation: u32 = var.parse().ok()?;
    if num != *n || var != variation.to_string() || rest != format!("{num}_{variation}") {
        return None;
    }
    Some(SciTask { release_name: release.clone(), name: name.to_string(), num, variation, max_steps: *ms })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_roundtrip() {
        for s in SPLITS {
            for t in split_tasks(s).unwrap() {
                assert_eq!(parse_task_id(&t.task_id()).as_ref(), Some(t));
            }
        }
        assert_eq!(canonical_name("task-10-measure-melting-point-(known-substance)"), "measure-melting-point-known-substance");
    }
}
