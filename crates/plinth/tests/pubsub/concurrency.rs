//! `--app-max-concurrency` bounds the deliveries to the app in progress at once.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::app::{Handler, Reply, TestApp};
use crate::common::unique;
use crate::support::{WAIT, publish, start_for, wait_outcome, wait_subscribed};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_max_concurrency_bounds_calls_in_progress() {
    let topic = unique("slow");
    // Each call waits for one permit of the gate, which the test hands out.
    let gate = Arc::new(Semaphore::new(0));
    let handler: Handler = {
        let gate = gate.clone();
        Arc::new(move |_| {
            let gate = gate.clone();
            Box::pin(async move {
                if let Ok(permit) = gate.acquire().await {
                    permit.forget();
                }
                Reply::Success
            })
        })
    };
    let mut app = TestApp::builder()
        .subscribe(&topic, &[])
        .handler(handler)
        .start()
        .await;
    let plinth = start_for(&app, &["--app-max-concurrency", "2"]);
    wait_subscribed(&plinth, &[&topic]).await;
    let mut c = plinth.client().await;
    for i in 0..10 {
        publish(&mut c, &topic, format!("m{i}").as_bytes(), "text/plain").await;
    }

    let mut got = app.next_n(2, WAIT).await;
    // Both slots are held and the subscription has 8 more events in flight: a third call now
    // would break the bound. There is no signal for "nothing happens", so look for a while.
    let extra = app.next_within(Duration::from_millis(300)).await;
    assert!(extra.is_none(), "a third concurrent call: {extra:?}");
    for _ in 0..8 {
        gate.add_permits(1);
        got.push(app.next(WAIT).await);
        assert!(
            app.max_concurrent() <= 2,
            "{} calls at once",
            app.max_concurrent()
        );
    }
    gate.add_permits(2);
    wait_outcome(&plinth, &topic, "success", 10).await;

    assert_eq!(app.max_concurrent(), 2);
    let data: HashSet<Vec<u8>> = got.iter().map(|d| d.event.data.clone()).collect();
    assert_eq!(data.len(), 10, "all ten delivered once");
    assert!(got.iter().all(|d| d.attempt == 1));
    assert!(app.try_next().is_none());
}
