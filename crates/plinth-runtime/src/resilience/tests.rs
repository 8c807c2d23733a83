use std::sync::atomic::{AtomicU32, Ordering};

use super::*;
use crate::metrics::Metrics;

fn policy(config: PolicyConfig) -> Policy {
    Policy::new("test", &config, Arc::new(Metrics::new()))
}

#[tokio::test(start_paused = true)]
async fn timeout_applies_per_attempt() {
    let p = policy(PolicyConfig {
        timeout: Duration::from_millis(100),
        ..Default::default()
    });
    let result: Result<()> = p
        .call("get", || async {
            tokio::time::sleep(Duration::from_secs(10)).await;
            Ok(())
        })
        .await;
    assert_eq!(
        result.err().map(|e| e.kind()),
        Some(plinth_core::ErrorKind::Timeout)
    );
}

#[tokio::test(start_paused = true)]
async fn retries_backend_failures_but_not_bad_requests() {
    let retry = RetryConfig {
        max_retries: Some(3),
        backoff: Backoff::Constant(Duration::from_millis(10)),
        budget_ratio: 1.0,
    };
    let p = policy(PolicyConfig {
        retry: Some(retry),
        ..Default::default()
    });
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let result: Result<u32> = p
        .call("get", move || {
            let c = c.clone();
            async move {
                let n = c.fetch_add(1, Ordering::SeqCst);
                if n < 2 {
                    Err(Error::unavailable("down"))
                } else {
                    Ok(n)
                }
            }
        })
        .await;
    assert_eq!(result.ok(), Some(2));

    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let result: Result<()> = p
        .call("get", move || {
            let c = c.clone();
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                Err(Error::invalid_argument("bad"))
            }
        })
        .await;
    assert!(result.is_err());
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "a bad request is not retried"
    );
}

#[tokio::test(start_paused = true)]
async fn breaker_opens_then_half_opens_then_closes() {
    let breaker = BreakerConfig {
        consecutive_failures: 2,
        open_for: Duration::from_secs(5),
        half_open_probes: 1,
    };
    let p = policy(PolicyConfig {
        breaker: Some(breaker),
        ..Default::default()
    });
    for _ in 0..2 {
        let _: Result<()> = p
            .call("get", || async { Err(Error::unavailable("down")) })
            .await;
    }
    assert_eq!(p.breaker_state(), Some(BreakerState::Open));
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let fast: Result<()> = p
        .call("get", move || {
            let c = c.clone();
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        })
        .await;
    assert!(fast.is_err(), "open breaker fails fast");
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    tokio::time::advance(Duration::from_secs(6)).await;
    assert_eq!(p.breaker_state(), Some(BreakerState::HalfOpen));
    let probe: Result<()> = p.call("get", || async { Ok(()) }).await;
    assert!(probe.is_ok());
    assert_eq!(p.breaker_state(), Some(BreakerState::Closed));
}
