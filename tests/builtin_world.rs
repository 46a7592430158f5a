//! Tests of the built-in household world (`mpo_run::env::builtin`).

use std::collections::{BTreeMap, BTreeSet};

use mpo_run::env::builtin::*;
use proptest::prelude::*;

/// The first seen-split task of each type.
fn first_of_each_type(split: Split) -> Vec<(TaskType, usize)> {
    TaskType::ALL
        .iter()
        .map(|&tt| {
            let i = (0..split.size())
                .find(|&i| Game::new(split, i).task_type() == tt)
                .expect("type present");
            (tt, i)
        })
        .collect()
}

#[test]
fn expert_solves_every_task_within_the_step_limit() {
    let mut n = 0;
    for split in Split::ALL {
        for i in 0..split.size() {
            let t = expert_trajectory(split, i);
            assert_eq!(t.reward, 1.0, "{}: expert failed", t.task_id);
            assert!(
                t.turns.len() <= DEFAULT_MAX_STEPS as usize,
                "{}: {} steps",
                t.task_id,
                t.turns.len()
            );
            assert!(
                t.turns.iter().all(|x| x.observation != NOTHING_HAPPENS),
                "{}",
                t.task_id
            );
            n += 1;
        }
    }
    assert_eq!(n, 3321 + 140 + 134);
}

#[test]
fn expert_trajectory_replays_in_a_fresh_game() {
    for i in 0..40 {
        let t = expert_trajectory(Split::Seen, i);
        let mut g = Game::new(Split::Seen, i);
        assert_eq!(g.initial_observation(), t.initial_observation);
        for turn in &t.turns {
            assert_eq!(g.step(&turn.action).observation, turn.observation);
        }
        assert!(g.won() && g.done());
        assert_eq!(t.turns[0].assistant_text().lines().count(), 2);
        assert!(t.turns[0]
            .assistant_text()
            .starts_with("Thought: To solve the task, I need to find and take"));
    }
}

#[test]
fn snapshots_of_one_task_per_type() {
    for (tt, i) in first_of_each_type(Split::Seen) {
        let g = Game::new(Split::Seen, i);
        insta::assert_snapshot!(format!("initial_{}", tt.name()), g.initial_observation());
        let t = expert_trajectory(Split::Seen, i);
        let plan = teacher_plan(&t, 0.0, 7).text;
        let text = format!(
            "task {} ({})\n{}\n--- teacher plan ---\n{plan}\n",
            t.task_id,
            tt.icl_key(),
            t.render()
        );
        insta::assert_snapshot!(format!("episode_{}", tt.name()), text);
    }
}

#[test]
fn snapshot_of_the_seen_split_index() {
    // Pins the generator: any change here needs a GENERATOR_VERSION bump.
    let lines: Vec<String> = (0..Split::Seen.size())
        .map(|i| {
            let g = Game::new(Split::Seen, i);
            format!(
                "{} {:<21} {:<18} {}",
                g.task_id(),
                g.task_type().name(),
                g.layout(),
                g.goal_text()
            )
        })
        .collect();
    insta::assert_snapshot!("seen_index", lines.join("\n"));
}

#[test]
fn observation_texts_follow_alfworld() {
    let t = expert_trajectory(Split::Seen, 0);
    assert!(t
        .initial_observation
        .starts_with("You are in the middle of a room. Looking quickly around you, you see a "));
    assert!(t.initial_observation.contains(".\nYour task is to: "));
    let mut g = Game::new(Split::Seen, 0);
    assert_eq!(
        g.step("inventory").observation,
        "You are not carrying anything."
    );
    assert_eq!(
        g.step("look").observation,
        t.initial_observation.lines().next().unwrap()
    );
    let first = g.receptacles()[0].clone();
    let obs = g
        .step(&format!("  Go To {}. ", first.to_uppercase()))
        .observation;
    assert!(
        obs.starts_with("On the ") || obs.starts_with("The "),
        "{obs}"
    );
    assert_eq!(
        g.step("look").observation,
        format!("You are facing the {first}. Next to it, you see nothing.")
    );
    assert_eq!(
        g.step(&format!("go to {first}")).observation,
        NOTHING_HAPPENS
    );
    assert_eq!(g.step("jump around").observation, NOTHING_HAPPENS);
    assert_eq!(g.steps_taken(), 6);
}

/// Finds a task whose object sits on a non-openable receptacle, to test
/// take/put/open/close texts end to end.
#[test]
fn take_put_open_close_and_appliance_texts() {
    let i = (0..140)
        .find(|&i| Game::new(Split::Seen, i).task_type() == TaskType::PickHeatThenPlace)
        .unwrap();
    let t = expert_trajectory(Split::Seen, i);
    let mut g = Game::new(Split::Seen, i);
    let take = t
        .turns
        .iter()
        .position(|x| x.action.starts_with("take "))
        .unwrap();
    for turn in &t.turns[..take] {
        g.step(&turn.action);
    }
    let w: Vec<&str> = t.turns[take].action.split(' ').collect();
    let (obj, rec) = (format!("{} {}", w[1], w[2]), format!("{} {}", w[4], w[5]));
    assert_eq!(
        g.step(&t.turns[take].action).observation,
        format!("You pick up the {obj} from the {rec}.")
    );
    assert_eq!(
        g.step("inventory").observation,
        format!("You are carrying: a {obj}.")
    );
    // Carrying one thing at a time: taking anything else fails.
    for a in g.admissible_actions() {
        assert!(!a.starts_with("take "), "{a}");
    }
    // `put O in R` / `put O on R` are accepted as `put O in/on R`.
    assert_eq!(
        g.step(&format!("put {obj} on {rec}")).observation,
        format!("You put the {obj} in/on the {rec}.")
    );
    g.step(&format!("take {obj} from {rec}"));
    assert_eq!(
        g.step(&format!("heat {obj} with microwave 1")).observation,
        NOTHING_HAPPENS
    );
    g.step("go to microwave 1");
    assert_eq!(
        g.step(&format!("heat {obj} with microwave 1")).observation,
        format!("You heat the {obj} using the microwave 1.")
    );
    assert_eq!(
        g.step("open microwave 1")
            .observation
            .split(". ")
            .next()
            .unwrap(),
        "You open the microwave 1"
    );
    assert_eq!(
        g.step("close microwave 1").observation,
        "You close the microwave 1."
    );
    let arrive = g.step("go to fridge 1").observation;
    if arrive == "The fridge 1 is closed." {
        let o = g.step("open fridge 1").observation;
        assert!(
            o.starts_with("You open the fridge 1. The fridge 1 is open. In it, you see "),
            "{o}"
        );
    } else {
        // The expert opened it while searching.
        assert!(
            arrive.starts_with("The fridge 1 is open. In it, you see "),
            "{arrive}"
        );
    }
    assert_eq!(
        g.step(&format!("cool {obj} with fridge 1")).observation,
        format!("You cool the {obj} using the fridge 1.")
    );
}

#[test]
fn step_limit_and_done() {
    let mut g = Game::new(Split::Train, 3).with_max_steps(3);
    for _ in 0..3 {
        assert!(!g.done());
        g.step("look");
    }
    let o = g.step("look");
    assert!(o.done && !o.won && o.reward == 0.0 && o.observation == NOTHING_HAPPENS);
    assert_eq!(g.steps_taken(), 3);
    let t = expert_trajectory(Split::Train, 3);
    let mut g = Game::new(Split::Train, 3);
    let mut last = None;
    for turn in &t.turns {
        last = Some(g.step(&turn.action));
    }
    let last = last.unwrap();
    assert!(last.done && last.won && last.reward == 1.0);
}

#[test]
fn index_errors_and_ids() {
    assert!(Game::try_new(Split::Seen, 140).is_err());
    assert!(Game::try_new(Split::Unseen, 133).is_ok());
    assert_eq!(Game::new(Split::Seen, 7).task_id(), "seen/0007");
    assert_eq!(
        Game::from_task_id("unseen/0012").unwrap(),
        Game::new(Split::Unseen, 12)
    );
    assert_eq!(Split::parse("Seen"), Some(Split::Seen));
    assert_eq!(
        (
            Split::Train.size(),
            Split::Seen.size(),
            Split::Unseen.size()
        ),
        (3321, 140, 134)
    );
    assert_eq!(serde_json::to_string(&Split::Unseen).unwrap(), "\"unseen\"");
    assert_eq!(TaskType::LookAtObjInLight.icl_key(), "look_at_obj");
    let t = expert_trajectory(Split::Seen, 1);
    let back: Trajectory = serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
    assert_eq!(back, t);
}

#[test]
#[should_panic]
fn new_panics_past_the_end() {
    let _ = Game::new(Split::Train, 3321);
}

#[test]
fn splits_seen_is_train_distribution_unseen_is_held_out() {
    let train: Vec<Game> = (0..Split::Train.size())
        .map(|i| Game::new(Split::Train, i))
        .collect();
    let layouts: BTreeSet<&str> = train.iter().map(|g| g.layout()).collect();
    let combo = |g: &Game| (g.task_type(), g.goal_object(), g.goal_target());
    let combos: BTreeSet<_> = train.iter().map(combo).collect();
    assert!(train.iter().all(|g| !g.heldout_combo()));
    for i in 0..Split::Seen.size() {
        let g = Game::new(Split::Seen, i);
        assert!(layouts.contains(g.layout()), "{}", g.task_id());
        assert!(!g.heldout_combo());
    }
    let mut held = 0;
    for i in 0..Split::Unseen.size() {
        let g = Game::new(Split::Unseen, i);
        assert!(
            !layouts.contains(g.layout()),
            "{} uses a train layout",
            g.task_id()
        );
        if g.heldout_combo() {
            held += 1;
            assert!(
                !combos.contains(&combo(&g)),
                "{}: held-out combo in train",
                g.task_id()
            );
        }
    }
    assert!(held >= 30, "only {held} unseen tasks with held-out combos");
    // All six types in every split.
    for split in Split::ALL {
        let types: BTreeSet<TaskType> = (0..split.size())
            .map(|i| Game::new(split, i).task_type())
            .collect();
        assert_eq!(types.len(), 6, "{split}");
    }
}

#[test]
fn teacher_plans_and_flaws() {
    let t = expert_trajectory(Split::Train, 0);
    let p = teacher_plan(&t, 0.0, 1);
    assert_eq!(p.flaw, None);
    assert!(p.text.starts_with("Step 1: "), "{}", p.text);
    assert_eq!(teacher_plan(&t, 0.3, 9), teacher_plan(&t, 0.3, 9));
    let mut flaws = BTreeMap::new();
    let mut flawed = 0;
    for i in 0..300 {
        let t = expert_trajectory(Split::Train, i);
        let p = teacher_plan(&t, 1.0, i as u64);
        *flaws.entry(format!("{:?}", p.flaw.unwrap())).or_insert(0) += 1;
        flawed += teacher_plan(&t, 0.25, i as u64).flaw.is_some() as usize;
        let good = teacher_plan(&t, 0.0, i as u64).text;
        for (k, line) in good.lines().enumerate() {
            assert!(line.starts_with(&format!("Step {}: ", k + 1)), "{good}");
        }
    }
    assert_eq!(flaws.len(), 3, "{flaws:?}");
    assert!((40..=110).contains(&flawed), "{flawed}");
}

#[test]
fn teacher_plan_example_format() {
    // The paper's example shape for a heat task.
    let i = (0..3321)
        .find(|&i| {
            Game::new(Split::Train, i).goal_text() == "heat some egg and put it in diningtable."
        })
        .unwrap();
    let t = expert_trajectory(Split::Train, i);
    let p = teacher_plan(&t, 0.0, 0).text;
    let lines: Vec<&str> = p.lines().collect();
    assert!(
        lines[0].starts_with("Step 1: Go to where the egg may be placed, such as the fridge"),
        "{p}"
    );
    assert_eq!(
        &lines[1..],
        [
            "Step 2: Take the egg from where you found it.",
            "Step 3: Go to the microwave.",
            "Step 4: Heat the egg with the microwave.",
            "Step 5: Go to the diningtable.",
            "Step 6: Put the egg in/on the diningtable.",
        ]
    );
}

fn measure(split: Split) -> [(f64, f64); 3] {
    let mut acc = [(0.0, 0.0); 3];
    for i in 0..split.size() {
        let g = Game::new(split, i);
        let good = plan_for(&g, PlanQuality::Good);
        let bad = plan_for(&g, PlanQuality::Misleading);
        let r = [
            follow_plan_on(&g, Some(&good), DEFAULT_MAX_STEPS),
            follow_plan_on(&g, None, DEFAULT_MAX_STEPS),
            follow_plan_on(&g, Some(&bad), DEFAULT_MAX_STEPS),
        ];
        for k in 0..3 {
            acc[k].0 += r[k].steps as f64;
            acc[k].1 += r[k].reward;
        }
    }
    let n = split.size() as f64;
    acc.map(|(s, w)| (s / n, w / n))
}

#[test]
fn plan_quality_matters() {
    for split in [Split::Seen, Split::Unseen] {
        let [good, none, bad] = measure(split);
        println!("{split:>6}: plan       mean steps  success");
        for (name, (s, w)) in [("good", good), ("none", none), ("misleading", bad)] {
            println!("{split:>6}: {name:<10} {s:>10.2}  {w:>7.3}");
        }
        assert!(
            good.0 < none.0 && none.0 < bad.0,
            "{split}: steps {good:?} {none:?} {bad:?}"
        );
        assert!(
            good.1 > none.1 && none.1 > bad.1,
            "{split}: success {good:?} {none:?} {bad:?}"
        );
    }
    // The follower follows a wrong appliance (and pays for it).
    let i = (0..140)
        .find(|&i| Game::new(Split::Seen, i).task_type() == TaskType::PickHeatThenPlace)
        .unwrap();
    let g = Game::new(Split::Seen, i);
    let right = follow_plan_on(&g, Some(&plan_for(&g, PlanQuality::Good)), 100);
    let wrong = plan_for(&g, PlanQuality::Good).replace("microwave", "stoveburner");
    let wrong = follow_plan_on(&g, Some(&wrong), 100);
    assert!(wrong.steps >= right.steps + 2, "{right:?} {wrong:?}");
    let hints = parse_plan("Step 1: Go to where the egg may be placed, such as the fridge or countertops.\nStep 2: Take the egg.\nStep 3: Heat the egg with the microwave 1.");
    assert_eq!(
        hints.search,
        vec![
            Place::Type(RecepType::Fridge),
            Place::Type(RecepType::Countertop)
        ]
    );
    assert_eq!(
        hints.appliance,
        Some(Place::Instance(RecepType::Microwave, 1))
    );
}

/// Words that hit every branch of the parser.
fn action_strategy() -> impl Strategy<Value = String> {
    let verbs = prop::sample::select(vec![
        "go to",
        "open",
        "close",
        "take",
        "put",
        "heat",
        "cool",
        "clean",
        "use",
        "toggle",
        "examine",
        "look",
        "inventory",
        "from",
        "with",
        "in/on",
        "in",
        "on",
        "Go To",
        "PUT",
        "",
    ]);
    let names = prop::sample::select(vec![
        "cabinet",
        "drawer",
        "fridge",
        "microwave",
        "countertop",
        "sinkbasin",
        "desklamp",
        "egg",
        "mug",
        "apple",
        "cellphone",
        "sofa",
        "bed",
        "shelf",
        "sidetable",
        "1",
        "2",
        "3",
        "0",
        "255",
        "256",
        "99999999999",
        "-1",
        ".",
        "é",
        "\u{0}",
        "  ",
    ]);
    let structured = (verbs, prop::collection::vec(names, 0..7))
        .prop_map(|(v, ws)| format!("{v} {}", ws.join(" ")));
    prop_oneof![structured, any::<String>(), "[a-z0-9 /.]{0,40}"]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_action_strings_never_panic(idx in 0usize..3321, acts in prop::collection::vec(action_strategy(), 1..40)) {
        let mut g = Game::new(Split::Train, idx).with_max_steps(1000);
        for a in &acts {
            let o = g.step(a);
            prop_assert!(!o.observation.is_empty());
            let _ = g.admissible_actions();
        }
    }

    #[test]
    fn every_admissible_action_does_something(idx in 0usize..3321, picks in prop::collection::vec(any::<u32>(), 1..40)) {
        let mut g = Game::new(Split::Train, idx).with_max_steps(1000);
        for p in picks {
            // After the goal is reached the episode is over and every
            // action answers "Nothing happens." (as after ALFWorld's end).
            if g.done() { break; }
            let adm = g.admissible_actions();
            prop_assert!(!adm.is_empty());
            for a in &adm {
                let mut c = g.clone();
                let o = c.step(a);
                prop_assert_ne!(o.observation, NOTHING_HAPPENS, "{} in {}", a, g.task_id());
            }
            let a = &adm[p as usize % adm.len()];
            g.step(a);
        }
    }

    #[test]
    fn tasks_are_a_pure_function_of_split_and_index(split in prop::sample::select(Split::ALL.to_vec()), i in 0usize..134) {
        let (a, b) = (Game::new(split, i), Game::new(split, i));
        prop_assert_eq!(&a, &b);
        prop_assert_eq!(a.initial_observation(), b.initial_observation());
        prop_assert_eq!(expert_trajectory(split, i), expert_trajectory(split, i));
    }

    #[test]
    fn case_whitespace_and_period_variants_are_accepted(idx in 0usize..140, pick in any::<u32>()) {
        let g = Game::new(Split::Seen, idx);
        let adm = g.admissible_actions();
        let a = &adm[pick as usize % adm.len()];
        let mut x = g.clone();
        let mut y = g.clone();
        let o1 = x.step(a);
        let o2 = y.step(&format!("  {}. ", a.to_uppercase()));
        prop_assert_eq!(o1, o2);
    }
}

/// The informed follower goes where its plan says first and otherwise
/// searches like the expert: a misleading plan costs it steps, a good one
/// costs none against playing without a plan, and without a plan it
/// succeeds as the expert does.
#[test]
fn the_informed_follower_does_what_its_plan_says() {
    use mpo_run::env::builtin::informed_follower_trajectory;
    for split in [Split::Seen, Split::Unseen] {
        let mut acc = [(0.0, 0.0); 3];
        for i in 0..split.size() {
            let g = Game::new(split, i);
            let plans = [Some(plan_for(&g, PlanQuality::Good)), None, Some(plan_for(&g, PlanQuality::Misleading))];
            for (k, p) in plans.iter().enumerate() {
                let t = informed_follower_trajectory(&g, p.as_deref(), DEFAULT_MAX_STEPS);
                acc[k].0 += t.turns.len() as f64;
                acc[k].1 += t.reward;
            }
        }
        let n = split.size() as f64;
        let [good, none, bad] = acc.map(|(s, w)| (s / n, w / n));
        println!("{split:>6}: informed follower, mean steps / success: good {good:?}, none {none:?}, misleading {bad:?}");
        assert!(good.0 <= none.0 + 0.5 && none.0 + 3.0 < bad.0, "{split}: steps {good:?} {none:?} {bad:?}");
        assert!(none.1 > 0.95 && good.1 > 0.95 && bad.1 < none.1, "{split}: success {good:?} {none:?} {bad:?}");
    }
}

/// The rule judge (Figure 6 on the built-in world) prefers the world's good
/// plan to its misleading one on correctness and overall, never prefers the
/// misleading one on followability, and marks a plan that names this room's
/// instances as less standard.
#[test]
fn the_rule_judge_prefers_good_plans_to_misleading_ones() {
    use mpo_run::mpo::judge::{rule::verdicts, Verdict};
    let mut follow_wins = 0;
    for i in 0..40 {
        let g = Game::new(Split::Seen, i);
        let (good, bad) = (plan_for(&g, PlanQuality::Good), plan_for(&g, PlanQuality::Misleading));
        let v = verdicts(&g, &good, &bad, DEFAULT_MAX_STEPS);
        let dims: Vec<&str> = v.iter().map(|x| x.0).collect();
        assert_eq!(dims, ["correctness", "followability", "standardization", "overall"]);
        assert_eq!(v[0].1, Verdict::Mpo, "task {i}: {good}\nvs\n{bad}\n{:?}", v[0]);
        assert_ne!(v[1].1, Verdict::Sft, "task {i}: {:?}", v[1]);
        follow_wins += (v[1].1 == Verdict::Mpo) as usize;
        assert_eq!(v[2].1, Verdict::Tie, "both rendered alike: {:?}", v[2]);
        assert_eq!(v[3].1, Verdict::Mpo, "{:?}", v[3]);
        // The same plan on both sides: ties everywhere.
        assert!(verdicts(&g, &good, &good, DEFAULT_MAX_STEPS).iter().all(|x| x.1 == Verdict::Tie));
    }
    assert!(follow_wins >= 20, "a misleading plan costs the follower steps: {follow_wins}/40");
    let checks = mpo_run::env::builtin::rules::standardization("Step 1: Go to cabinet 4.\nStep 2: Take the mug.");
    assert_eq!(checks, vec![("numbered steps", true), ("abstract", false)]);
    let checks = mpo_run::env::builtin::rules::standardization("Go to the cabinets.\nStep 2: Take the mug.");
    assert_eq!(checks, vec![("numbered steps", false), ("abstract", true)]);
}
