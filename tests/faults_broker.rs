//! Fault: the broker restarts under a running pipeline (`serve`, `scheduler`, `worker` as
//! processes). The test runs a RabbitMQ of its own and stops it cleanly mid-run while posts
//! keep coming through the API and a watched folder; every process must stay up, `/readyz`
//! must say not-ready meanwhile, no `POST /v1/posts` may answer 500, and once the broker is
//! back every post must end `done` with exactly one result.
mod faults_support;
mod pipeline_support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use faults_support::{OwnRabbit, Stack};
use pipeline_support::{pg_url, Env};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_loses_and_duplicates_nothing() {
    let rabbit = Arc::new(Mutex::new(OwnRabbit::start()));
    let url = rabbit.lock().unwrap().url();
    let env = Env::postgres_rabbit_at("faults_broker", &pg_url(), &url).await;
    let mut stack = Stack::start(&env);
    let (r1, r2) = (rabbit.clone(), rabbit.clone());
    // Long enough for the reconnect backoff to reach its cap (with the broker's own stop and
    // start, about 15 s away).
    let f = faults_support::run(
        &env,
        &mut stack,
        Duration::from_secs(4),
        move || r1.lock().unwrap().down(),
        move || r2.lock().unwrap().up(),
    )
    .await;
    println!("broker restart: {f:#?}");
    assert_eq!((f.lost, f.duplicated, f.failed), (0, 0, 0), "{f:#?}");
    assert!(f.not_ready_seen, "/readyz never said not-ready: {f:#?}");
    // Posts made while the broker was away were accepted, not queued.
    assert!(f.answers.keys().any(|k| k == "202 queued:false"), "{f:#?}");
    // Every process noticed, reconnected and went on (none was restarted).
    for name in ["serve", "scheduler", "worker"] {
        let n = stack.log_lines(name, "broker: reconnected").len();
        println!("hashtale {name}: reconnected {n} time(s)");
        assert!(n >= 1, "hashtale {name} never reconnected");
    }
    assert!(
        !stack.log_lines("worker", "consuming").is_empty(),
        "the worker did not subscribe again"
    );
    stack.assert_alive();
    stack.stop();
    env.cleanup().await;
}
