//! Rating storage against real Postgres and SQLite: each result goes to exactly k distinct raters
//! under concurrent raters; skips, expiries, revocation and mis-click fixes keep that rule; sampling
//! preferences; and the stored rows round-trip through the CSV and JSONL exports.
mod ratings_support;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use hashtale_store::ratings::{assignment_state, NewAnswer, Sampling, SubmitOutcome};
use hashtale_store::Store;
use ratings_support::{default_output, insert_result, output, Env};

fn sampling(k: i64) -> Sampling {
    Sampling {
        k,
        favour_low_confidence: false,
        prefer_model_version: None,
        ttl_ms: None,
    }
}

fn answers(q1: &[i32], q2: i32, q3: i32) -> Vec<NewAnswer> {
    let mut v: Vec<NewAnswer> = q1
        .iter()
        .enumerate()
        .map(|(i, &value)| NewAnswer {
            question: "q1".into(),
            item: i as i32,
            hashtag: Some(["beach", "sea", "sunset"][i % 3].into()),
            value,
        })
        .collect();
    for (q, value) in [("q2", q2), ("q3", q3)] {
        v.push(NewAnswer {
            question: q.into(),
            item: 0,
            hashtag: None,
            value,
        });
    }
    v
}

async fn add_rater(store: &Store, name: &str) -> i64 {
    hashtale_api::ratings::add_rater(store, name)
        .await
        .unwrap()
        .0
        .id
}

/// 20 results, 6 raters working in parallel, k = 3: every result ends with exactly 3 answers from
/// 3 distinct raters, and nobody is handed the same result twice.
async fn concurrent_assignment(env: Env) {
    let store = env.store.clone();
    let mut results = Vec::new();
    for seed in 0..20 {
        results.push(insert_result(&store, seed, "v1", default_output(seed)).await);
    }
    assert_eq!(store.sync_rating_slots().await.unwrap(), 20);
    assert_eq!(
        store.sync_rating_slots().await.unwrap(),
        0,
        "sync is idempotent"
    );
    let mut raters = Vec::new();
    for i in 0..6 {
        raters.push(add_rater(&store, &format!("rater{i}")).await);
    }
    let seen: Arc<std::sync::Mutex<Vec<(i64, i64)>>> = Arc::default();
    let mut tasks = Vec::new();
    for &rater in &raters {
        let store = store.clone();
        let seen = seen.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            while let Some(a) = store
                .next_rating_assignment(rater, &sampling(3))
                .await
                .unwrap()
            {
                // Asking again before answering gives the same open item.
                let again = store
                    .next_rating_assignment(rater, &sampling(3))
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!(again.id, a.id);
                seen.lock().unwrap().push((rater, a.result_id));
                let out = store
                    .submit_rating(rater, a.id, &answers(&[1, 0, 1], 2, 1), 3)
                    .await
                    .unwrap();
                assert_eq!(out, SubmitOutcome::Saved);
                n += 1;
                tokio::task::yield_now().await;
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    assert_eq!(total, 60, "20 results × k = 3");
    let seen = seen.lock().unwrap().clone();
    let distinct: HashSet<(i64, i64)> = seen.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        seen.len(),
        "a rater was handed a result twice"
    );
    let mut per_result: HashMap<i64, HashSet<i64>> = HashMap::new();
    for (rater, result) in &seen {
        per_result.entry(*result).or_default().insert(*rater);
    }
    for r in &results {
        assert_eq!(
            per_result.get(r).map_or(0, HashSet::len),
            3,
            "result {r}: {per_result:?}"
        );
    }
    // The stored rows agree: 5 answers per (result, rater), 3 raters per result.
    let rows = store.rating_rows(None).await.unwrap();
    assert_eq!(rows.len(), 60 * 5);
    let mut raters_of: HashMap<i64, HashSet<i64>> = HashMap::new();
    for row in &rows {
        raters_of
            .entry(row.result_id)
            .or_default()
            .insert(row.rater_id);
        assert_eq!(row.model_version, "v1");
    }
    assert!(raters_of.values().all(|s| s.len() == 3));
    let progress = store.rating_progress(3).await.unwrap();
    assert_eq!(
        (
            progress.results,
            progress.complete,
            progress.answered,
            progress.open
        ),
        (20, 20, 60, 0)
    );
    // Nothing is left for anyone.
    for &rater in &raters {
        assert!(store
            .next_rating_assignment(rater, &sampling(3))
            .await
            .unwrap()
            .is_none());
    }
    env.cleanup().await;
}

/// Skips and expiries give the slot back; the rater never meets the result again; an expired
/// item can still be answered while a slot is free; revoking frees the open item.
async fn skip_expire_revoke(env: Env) {
    let store = env.store.clone();
    let result = insert_result(&store, 1, "v1", default_output(1)).await;
    store.sync_rating_slots().await.unwrap();
    let (a, b, c) = (
        add_rater(&store, "ann").await,
        add_rater(&store, "bob").await,
        add_rater(&store, "cy").await,
    );
    let k1 = sampling(1);
    // Ann skips: the result goes to Bob, and Ann never sees it again.
    let ann = store.next_rating_assignment(a, &k1).await.unwrap().unwrap();
    assert_eq!(ann.result_id, result);
    assert!(
        store
            .next_rating_assignment(b, &k1)
            .await
            .unwrap()
            .is_none(),
        "k = 1 is taken"
    );
    assert!(store.skip_rating_assignment(a, ann.id).await.unwrap());
    assert!(
        !store.skip_rating_assignment(a, ann.id).await.unwrap(),
        "skip twice"
    );
    assert_eq!(
        store
            .submit_rating(a, ann.id, &answers(&[1, 1, 1], 1, 1), 1)
            .await
            .unwrap(),
        SubmitOutcome::Closed("you skipped this item".into())
    );
    assert!(store
        .next_rating_assignment(a, &k1)
        .await
        .unwrap()
        .is_none());
    let bob = store.next_rating_assignment(b, &k1).await.unwrap().unwrap();
    assert_eq!(bob.result_id, result);
    // Bob cannot skip or answer Ann's item.
    assert!(!store.skip_rating_assignment(b, ann.id).await.unwrap());
    assert_eq!(
        store
            .submit_rating(b, ann.id, &answers(&[1, 1, 1], 1, 1), 1)
            .await
            .unwrap(),
        SubmitOutcome::NotYours
    );

    // Bob's item expires (TTL 0 ms after a short wait): Cy gets it; Bob's late answer is refused
    // while Cy holds the only slot.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let expiring = Sampling {
        ttl_ms: Some(1),
        ..k1.clone()
    };
    let cy = store
        .next_rating_assignment(c, &expiring)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cy.result_id, result);
    assert_eq!(
        store
            .rating_assignment(bob.id)
            .await
            .unwrap()
            .unwrap()
            .state,
        assignment_state::EXPIRED
    );
    assert!(matches!(
        store
            .submit_rating(b, bob.id, &answers(&[1, 1, 1], 1, 1), 1)
            .await
            .unwrap(),
        SubmitOutcome::Closed(_)
    ));
    // Revoking Cy frees the slot; then Bob's expired item can be answered after all.
    let revoked = store.revoke_rater("cy").await.unwrap().unwrap();
    assert_eq!(revoked.id, c);
    assert!(
        store.revoke_rater("cy").await.unwrap().is_none(),
        "already revoked"
    );
    assert_eq!(
        store
            .submit_rating(b, bob.id, &answers(&[1, 0, 0], 0, 2), 1)
            .await
            .unwrap(),
        SubmitOutcome::Saved
    );
    let progress = store.rating_progress(1).await.unwrap();
    assert_eq!(
        (progress.complete, progress.answered, progress.open),
        (1, 1, 0)
    );
    // Two active raters with one name: revoke by name is refused, by id works.
    let d1 = add_rater(&store, "dee").await;
    add_rater(&store, "dee").await;
    assert!(store.revoke_rater("dee").await.is_err());
    assert_eq!(
        store
            .revoke_rater(&d1.to_string())
            .await
            .unwrap()
            .unwrap()
            .id,
        d1
    );
    env.cleanup().await;
}

/// Only the previous item can be changed; changing it replaces its answers.
async fn fix_previous(env: Env) {
    let store = env.store.clone();
    for seed in 0..3 {
        insert_result(&store, seed, "v1", default_output(seed)).await;
    }
    store.sync_rating_slots().await.unwrap();
    let r = add_rater(&store, "ann").await;
    let s = sampling(3);
    let first = store.next_rating_assignment(r, &s).await.unwrap().unwrap();
    store
        .submit_rating(r, first.id, &answers(&[1, 1, 1], 0, 0), 3)
        .await
        .unwrap();
    let second = store.next_rating_assignment(r, &s).await.unwrap().unwrap();
    assert_ne!(first.result_id, second.result_id);
    store
        .submit_rating(r, second.id, &answers(&[0, 0, 0], 0, 0), 3)
        .await
        .unwrap();
    assert_eq!(
        store
            .previous_rating_assignment(r)
            .await
            .unwrap()
            .unwrap()
            .id,
        second.id
    );
    // The mis-click fix on the previous item replaces its rows.
    assert_eq!(
        store
            .submit_rating(r, second.id, &answers(&[0, 1, 0], 2, 1), 3)
            .await
            .unwrap(),
        SubmitOutcome::Saved
    );
    let stored = store.assignment_answers(second.id).await.unwrap();
    assert_eq!(
        stored,
        vec![
            ("q1".to_string(), 0, 0),
            ("q1".to_string(), 1, 1),
            ("q1".to_string(), 2, 0),
            ("q2".to_string(), 0, 2),
            ("q3".to_string(), 0, 1),
        ]
    );
    // The item before is closed.
    assert!(matches!(
        store
            .submit_rating(r, first.id, &answers(&[0, 0, 0], 1, 1), 3)
            .await
            .unwrap(),
        SubmitOutcome::Closed(_)
    ));
    assert_eq!(store.rating_rows(None).await.unwrap().len(), 10);
    env.cleanup().await;
}

/// Low-confidence results first when asked; a preferred model version first when asked.
async fn sampling_preferences(env: Env) {
    let store = env.store.clone();
    let story = Some("A story.");
    let high = insert_result(&store, 1, "v1", output(&[("a", 0.95)], story)).await;
    let low = insert_result(&store, 2, "v1", output(&[("b", 0.10)], story)).await;
    let mid_v2 = insert_result(&store, 3, "v2", output(&[("c", 0.50)], story)).await;
    store.sync_rating_slots().await.unwrap();
    let r1 = add_rater(&store, "r1").await;
    let r2 = add_rater(&store, "r2").await;
    let r3 = add_rater(&store, "r3").await;
    let plain = store
        .next_rating_assignment(r1, &sampling(3))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(plain.result_id, high, "oldest first by default");
    let low_first = Sampling {
        favour_low_confidence: true,
        ..sampling(3)
    };
    let a = store
        .next_rating_assignment(r2, &low_first)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.result_id, low);
    let v2_first = Sampling {
        prefer_model_version: Some("v2".into()),
        ..low_first.clone()
    };
    let a = store
        .next_rating_assignment(r3, &v2_first)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.result_id, mid_v2);
    env.cleanup().await;
}

/// The same rater asking twice at once still holds a single open item.
async fn one_open_item_per_rater(env: Env) {
    let store = env.store.clone();
    for seed in 0..8 {
        insert_result(&store, seed, "v1", default_output(seed)).await;
    }
    store.sync_rating_slots().await.unwrap();
    let r = add_rater(&store, "twotabs").await;
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .next_rating_assignment(r, &sampling(3))
                .await
                .unwrap()
                .unwrap()
                .id
        }));
    }
    let mut ids = HashSet::new();
    for t in tasks {
        ids.insert(t.await.unwrap());
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
    let all = store.rater_assignments(r).await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(store.rating_progress(3).await.unwrap().open, 1);
    env.cleanup().await;
}

/// Stored rows → CSV / JSONL → the readers give the same rows back.
async fn export_round_trip(env: Env) {
    let store = env.store.clone();
    let tricky = output(
        &[("comma,tag", 0.9), ("quote\"tag", 0.4), ("ünïcode 🌊", 0.2)],
        Some("A story, with \"quotes\"\nand a newline."),
    );
    insert_result(&store, 1, "v1", tricky).await;
    insert_result(&store, 2, "v2", default_output(2)).await;
    store.sync_rating_slots().await.unwrap();
    for name in ["ann", "bob, the \"second\""] {
        let r = add_rater(&store, name).await;
        while let Some(a) = store.next_rating_assignment(r, &sampling(2)).await.unwrap() {
            let item = store.rating_item(&a).await.unwrap();
            let tags = item.result.output.hashtags.clone();
            let mut v: Vec<NewAnswer> = tags
                .iter()
                .enumerate()
                .map(|(i, t)| NewAnswer {
                    question: "q1".into(),
                    item: i as i32,
                    hashtag: Some(t.tag.clone()),
                    value: (i % 2) as i32,
                })
                .collect();
            v.push(NewAnswer {
                question: "q2".into(),
                item: 0,
                hashtag: None,
                value: 2,
            });
            v.push(NewAnswer {
                question: "q3".into(),
                item: 0,
                hashtag: None,
                value: 0,
            });
            store.submit_rating(r, a.id, &v, 2).await.unwrap();
        }
    }
    let rows = store.rating_rows(None).await.unwrap();
    assert_eq!(rows.len(), 2 * (5 + 5));
    assert!(rows
        .iter()
        .any(|r| r.hashtag.as_deref() == Some("ünïcode 🌊")));
    let mut csv = Vec::new();
    hashtale_ratings::write_csv(&rows, &mut csv).unwrap();
    assert_eq!(hashtale_ratings::read_csv(csv.as_slice()).unwrap(), rows);
    let mut jsonl = Vec::new();
    hashtale_ratings::write_jsonl(&rows, &mut jsonl).unwrap();
    assert_eq!(
        hashtale_ratings::read_jsonl(jsonl.as_slice()).unwrap(),
        rows
    );
    // Filtering by version.
    let v2 = store.rating_rows(Some("v2")).await.unwrap();
    assert_eq!(v2.len(), 10);
    assert!(v2.iter().all(|r| r.model_version == "v2"));
    env.cleanup().await;
}

macro_rules! both_backends {
    ($($name:ident),*) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(super::Env::sqlite(stringify!($name)).await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(super::Env::postgres(stringify!($name)).await).await;
                }
            )*
        }
    };
}

both_backends!(
    concurrent_assignment,
    skip_expire_revoke,
    fix_previous,
    sampling_preferences,
    one_open_item_per_rater,
    export_round_trip
);
