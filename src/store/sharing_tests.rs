//! Unit tests of the sharing protocol (#22): node locks, temp dirs, and
//! replacing commits.

use super::sharing::PROCESS_LOCK;
use super::*;

fn manifest(key: &str, rows: usize) -> Manifest {
    // From JSON, so fields added later with defaults need no edit here.
    serde_json::from_value(serde_json::json!({
        "stage": "s", "key": key, "label": "s", "inputs": [], "config": null,
        "tool_version": "0", "created": "now", "rows": { "x": rows },
        "items_reused": 0, "items_computed": rows,
    }))
    .unwrap()
}

fn commit(store: &Store, replace: bool, rows: usize) {
    let w = if replace { store.begin_replacing("s", "k") } else { store.begin("s", "k") }.unwrap();
    w.write_json("x.json", &rows).unwrap();
    w.commit(&manifest("k", rows)).unwrap();
}

fn committed_rows(store: &Store) -> usize {
    store.manifest("s", "k").unwrap().rows["x"]
}

#[test]
fn a_plain_commit_keeps_the_first_and_a_replacing_one_swaps() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    commit(&store, false, 1);
    commit(&store, false, 2);
    assert_eq!(committed_rows(&store), 1, "same key, committed first: kept");
    commit(&store, true, 3);
    assert_eq!(committed_rows(&store), 3, "--force: replaced");
    assert!(!replaced_backup(&store.artifact_dir("s", "k")).exists());
    assert_eq!(store.artifacts().unwrap(), vec![("s".to_string(), "k".to_string())]);
}

#[test]
fn an_interrupted_swap_is_finished_on_the_next_lock() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    commit(&store, false, 1);
    let final_dir = store.artifact_dir("s", "k");
    let backup = replaced_backup(&final_dir);
    // Killed after the old one moved aside, before the new one moved in.
    fs::rename(&final_dir, &backup).unwrap();
    assert!(!store.is_done("s", "k") && store.artifacts().unwrap().is_empty());
    store.recover_replaced("s", "k").unwrap();
    assert_eq!(committed_rows(&store), 1, "the old artifact is back");
    // Killed after the new one moved in, before the backup was removed.
    copy_tree(&final_dir, &backup);
    store.recover_replaced("s", "k").unwrap();
    assert!(!backup.exists() && store.is_done("s", "k"));
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap().flatten() {
        fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn node_locks_exclude_plain_runs_and_let_distinct_shards_share() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let held = |a: LockAttempt| match a {
        LockAttempt::Held(who) => who,
        LockAttempt::Acquired(_) => panic!("expected the lock to be held"),
    };
    let LockAttempt::Acquired(plain) = store.try_lock_node("s", "k", None).unwrap() else { panic!() };
    let who = held(store.try_lock_node("s", "k", None).unwrap());
    assert!(who.starts_with(&format!("process {} on ", std::process::id())), "{who}");
    held(store.try_lock_node("s", "k", Some((0, 2))).unwrap());
    assert!(store.node_is_locked("s", "k"));
    drop(plain);
    assert!(!store.node_is_locked("s", "k"));

    let LockAttempt::Acquired(s0) = store.try_lock_node("s", "k", Some((0, 2))).unwrap() else { panic!() };
    let LockAttempt::Acquired(s1) = store.try_lock_node("s", "k", Some((1, 2))).unwrap() else { panic!() };
    held(store.try_lock_node("s", "k", Some((0, 2))).unwrap());
    assert_eq!(held(store.try_lock_node("s", "k", None).unwrap()), "a sharded run (`--shard`)");
    drop((s0, s1));
    assert!(matches!(store.try_lock_node("s", "k", None).unwrap(), LockAttempt::Acquired(_)));
}

#[test]
fn clean_tmp_spares_live_processes_and_the_dir_goes_with_its_owner() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let writer = store.begin("s", "k").unwrap();
    let ours = writer.dir.parent().unwrap().to_path_buf();
    let dead = dir.path().join("tmp/proc-1-0-0");
    fs::create_dir_all(&dead).unwrap();
    fs::write(dead.join(PROCESS_LOCK), "").unwrap();
    let young_stray = dir.path().join("tmp/.new-1-0-0");
    fs::create_dir_all(&young_stray).unwrap();
    assert_eq!(store.clean_tmp().unwrap(), 1);
    assert!(ours.exists() && writer.dir.exists() && young_stray.exists() && !dead.exists());
    drop(writer);
    drop(store);
    assert!(!ours.exists(), "a process's temp dir goes when it is done");
}
