//! Active health checks: each instance of a target is asked, every interval, whether it is
//! healthy. A Plinth peer answers for its app (`GET /.plinth/health` on the mesh listener),
//! so an instance whose app is down stops getting calls even though its sidecar is up.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use http::{Method, Request};
use tokio::time::Instant;

use crate::client::{Transport, full};
use crate::config::HealthCheckSpec;
use crate::mesh::Cluster;
use crate::wire;

/// Probe `cluster`'s instances while it is in use.
pub(crate) fn spawn(
    cluster: Weak<Cluster>,
    spec: HealthCheckSpec,
    transport: Arc<Transport>,
    caller: String,
) {
    let path = spec
        .path
        .clone()
        .unwrap_or_else(|| wire::HEALTH_PATH.to_string());
    tokio::spawn(async move {
        let mut tick =
            tokio::time::interval(spec.interval.max(std::time::Duration::from_millis(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(c) = cluster.upgrade() else {
                return;
            };
            let endpoints = c.set.snapshot();
            drop(c);
            let probes = endpoints.iter().map(|e| {
                let (transport, path, caller) = (transport.clone(), path.clone(), caller.clone());
                let e = e.clone();
                async move {
                    let request = Request::builder()
                        .method(Method::GET)
                        .uri(format!("http://{}{path}", e.addr))
                        .header(wire::CALLER, caller)
                        .body(full(bytes::Bytes::new()));
                    let ok = match request {
                        Ok(r) => matches!(
                            tokio::time::timeout_at(
                                Instant::now() + spec.timeout,
                                e.conn.send(&transport, r)
                            )
                            .await,
                            Ok(Ok(resp)) if resp.status().is_success()
                        ),
                        Err(_) => false,
                    };
                    let mut streak = e.probe_streak.lock().unwrap_or_else(|p| p.into_inner());
                    let (passed, failed) = &mut *streak;
                    if ok {
                        *passed += 1;
                        *failed = 0;
                        if *passed >= spec.healthy_threshold
                            && !e.healthy.swap(true, Ordering::Relaxed)
                        {
                            tracing::info!(peer = %e.addr, "instance healthy again");
                        }
                    } else {
                        *failed += 1;
                        *passed = 0;
                        if *failed >= spec.unhealthy_threshold
                            && e.healthy.swap(false, Ordering::Relaxed)
                        {
                            tracing::warn!(peer = %e.addr, "instance failed its health checks");
                        }
                    }
                }
            });
            futures::future::join_all(probes).await;
        }
    });
}
