//! Fault: Postgres restarts under a running pipeline (`serve`, `scheduler`, `worker` as
//! processes). The test runs a Postgres of its own (initdb in a temporary folder) and restarts
//! it mid-run while posts keep coming through the API (a client retrying what is refused, as
//! clients do) and a watched folder; every process must stay up, no `POST /v1/posts` may
//! answer 500, and every post must end `done` with exactly one result.
mod faults_support;
mod pipeline_support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use faults_support::{OwnPostgres, Stack};
use pipeline_support::{amqp_url, Env};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_loses_and_duplicates_nothing() {
    let pg = Arc::new(Mutex::new(OwnPostgres::start()));
    let url = pg.lock().unwrap().url();
    let env = Env::postgres_rabbit_at("faults_pg", &url, &amqp_url()).await;
    let mut stack = Stack::start(&env);
    let (p1, p2) = (pg.clone(), pg.clone());
    // Longer than the pool waits for a connection (30 s): requests and the worker's statements
    // fail meanwhile, rather than only wait.
    let f = faults_support::run(
        &env,
        &mut stack,
        Duration::from_secs(35),
        move || p1.lock().unwrap().down(),
        move || p2.lock().unwrap().up(),
    )
    .await;
    println!("postgres restart: {f:#?}");
    assert_eq!((f.lost, f.duplicated, f.failed), (0, 0, 0), "{f:#?}");
    assert!(f.not_ready_seen, "/readyz never said not-ready: {f:#?}");
    stack.assert_alive();
    stack.stop();
    env.cleanup().await;
}
