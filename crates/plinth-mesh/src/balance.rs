//! A target's instances and how a call picks one: round robin, random, least-request, or
//! power of two choices over peak-EWMA latency × load (linkerd2-proxy's default). Each
//! instance carries what the picker and the health of the set need: calls in flight, a
//! latency estimate, passive outlier ejection and the last active health check.
//!
//! tower's `p2c::Balance` balances over a `Discover` stream of services and offers only
//! P2C; the mesh needs four strategies over one shared set whose members are also ejected
//! and health-checked, and a pick that can skip instances a retry already tried, so the set
//! is kept here.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rand::Rng as _;
use tokio::time::Instant;

use crate::client::PeerConn;
use crate::config::{LoadBalancer, OutlierSpec};
use crate::tls::Identity;

/// The latency assumed of an instance before it has answered anything.
const DEFAULT_RTT: Duration = Duration::from_millis(30);
/// How fast the latency estimate forgets: the weight of a sample halves in about 7 s.
const DECAY: Duration = Duration::from_secs(10);

/// One instance of a target.
#[derive(Debug)]
pub(crate) struct Endpoint {
    pub(crate) addr: SocketAddr,
    pub(crate) conn: PeerConn,
    in_flight: AtomicUsize,
    ewma: Mutex<PeakEwma>,
    failures: AtomicU32,
    ejection: Mutex<Ejection>,
    /// The last active health check's verdict (true when checks are off).
    pub(crate) healthy: AtomicBool,
    /// Checks passed / failed in a row.
    pub(crate) probe_streak: Mutex<(u32, u32)>,
}

#[derive(Debug, Default)]
struct Ejection {
    until: Option<Instant>,
    times: u32,
}

#[derive(Debug)]
struct PeakEwma {
    /// Nanoseconds.
    estimate: f64,
    stamp: Instant,
}

impl Endpoint {
    pub(crate) fn new(addr: SocketAddr, expected: Option<Identity>) -> Self {
        Self {
            addr,
            conn: PeerConn::new(addr, expected),
            in_flight: AtomicUsize::new(0),
            ewma: Mutex::new(PeakEwma {
                estimate: DEFAULT_RTT.as_nanos() as f64,
                stamp: Instant::now(),
            }),
            failures: AtomicU32::new(0),
            ejection: Mutex::new(Ejection::default()),
            healthy: AtomicBool::new(true),
            probe_streak: Mutex::new((0, 0)),
        }
    }

    fn ejected(&self, now: Instant) -> bool {
        lock(&self.ejection).until.is_some_and(|u| now < u)
    }

    /// Latency estimate × (calls in flight + 1): the P2C cost.
    fn cost(&self, now: Instant) -> f64 {
        let ewma = lock(&self.ewma);
        let elapsed = now.saturating_duration_since(ewma.stamp).as_secs_f64();
        let decayed = ewma.estimate * (-elapsed / DECAY.as_secs_f64()).exp();
        // Decay toward zero while idle, but never below the default for an instance with
        // nothing in flight: an idle instance is not known to be faster than it was.
        let estimate = decayed.max(DEFAULT_RTT.as_nanos() as f64 * 0.1);
        estimate * (self.in_flight.load(Ordering::Relaxed) + 1) as f64
    }

    fn observe_rtt(&self, rtt: Duration) {
        let mut ewma = lock(&self.ewma);
        let now = Instant::now();
        let sample = rtt.as_nanos() as f64;
        if sample > ewma.estimate {
            // Peak: a slow answer counts at once.
            ewma.estimate = sample;
        } else {
            let elapsed = now.saturating_duration_since(ewma.stamp).as_secs_f64();
            let w = (-elapsed / DECAY.as_secs_f64()).exp();
            ewma.estimate = ewma.estimate * w + sample * (1.0 - w);
        }
        ewma.stamp = now;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Plain values: a poisoned lock still holds a usable one.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Counts a call in flight on an endpoint until dropped.
#[derive(Debug)]
pub(crate) struct InFlight {
    pub(crate) endpoint: Arc<Endpoint>,
    started: Instant,
}

impl InFlight {
    pub(crate) fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.endpoint.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What an attempt on an endpoint came to, for ejection and latency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Answered, not with a server failure.
    Ok,
    /// Failed: no connection, timeout, or a 5xx / UNAVAILABLE.
    Failed,
}

/// The instances of one target and how calls are spread over them.
pub(crate) struct EndpointSet {
    endpoints: RwLock<Arc<Vec<Arc<Endpoint>>>>,
    lb: LoadBalancer,
    next: AtomicUsize,
    outlier: Option<OutlierSpec>,
    /// Ejections so far, for metrics.
    pub(crate) on_eject: Box<dyn Fn() + Send + Sync>,
    expected: Box<dyn Fn() -> Option<Identity> + Send + Sync>,
}

impl std::fmt::Debug for EndpointSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointSet")
            .field("endpoints", &self.snapshot().len())
            .field("lb", &self.lb)
            .finish()
    }
}

impl EndpointSet {
    /// An empty set; `expected` gives the identity each instance must prove.
    pub(crate) fn new(
        lb: LoadBalancer,
        outlier: Option<OutlierSpec>,
        expected: impl Fn() -> Option<Identity> + Send + Sync + 'static,
        on_eject: impl Fn() + Send + Sync + 'static,
    ) -> Self {
        Self {
            endpoints: RwLock::new(Arc::new(Vec::new())),
            lb,
            next: AtomicUsize::new(0),
            outlier,
            on_eject: Box::new(on_eject),
            expected: Box::new(expected),
        }
    }

    /// The current instances.
    pub(crate) fn snapshot(&self) -> Arc<Vec<Arc<Endpoint>>> {
        self.endpoints
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replace the instances with `addrs`, keeping the state (connection, latency,
    /// ejection) of those still there.
    pub(crate) fn update(&self, mut addrs: Vec<SocketAddr>) {
        addrs.sort();
        addrs.dedup();
        let current = self.snapshot();
        if current.len() == addrs.len() && current.iter().zip(&addrs).all(|(e, a)| e.addr == *a) {
            return;
        }
        let by_addr: HashMap<SocketAddr, Arc<Endpoint>> =
            current.iter().map(|e| (e.addr, e.clone())).collect();
        let next: Vec<Arc<Endpoint>> = addrs
            .into_iter()
            .map(|a| {
                by_addr
                    .get(&a)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(Endpoint::new(a, (self.expected)())))
            })
            .collect();
        *self.endpoints.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
    }

    /// Pick an instance, avoiding those in `tried` while others remain. Ejected and
    /// unhealthy instances are skipped; when every instance is, all are used (a set with
    /// nothing to offer would fail every call, which is worse than trying).
    pub(crate) fn pick(&self, tried: &[SocketAddr]) -> Option<InFlight> {
        let all = self.snapshot();
        if all.is_empty() {
            return None;
        }
        let now = Instant::now();
        let usable = |e: &&Arc<Endpoint>| {
            e.healthy.load(Ordering::Relaxed) && !e.ejected(now) && !tried.contains(&e.addr)
        };
        let mut candidates: Vec<&Arc<Endpoint>> = all.iter().filter(usable).collect();
        if candidates.is_empty() {
            candidates = all
                .iter()
                .filter(|e| e.healthy.load(Ordering::Relaxed) && !e.ejected(now))
                .collect();
        }
        if candidates.is_empty() {
            candidates = all.iter().collect();
        }
        let chosen = match self.lb {
            LoadBalancer::RoundRobin => {
                let i = self.next.fetch_add(1, Ordering::Relaxed);
                candidates[i % candidates.len()]
            }
            LoadBalancer::Random => candidates[rand::rng().random_range(0..candidates.len())],
            LoadBalancer::LeastRequest => {
                let least = candidates
                    .iter()
                    .map(|e| e.in_flight.load(Ordering::Relaxed))
                    .min()
                    .unwrap_or(0);
                let ties: Vec<_> = candidates
                    .iter()
                    .filter(|e| e.in_flight.load(Ordering::Relaxed) == least)
                    .collect();
                ties[rand::rng().random_range(0..ties.len())]
            }
            LoadBalancer::P2cPeakEwma => {
                if candidates.len() == 1 {
                    candidates[0]
                } else {
                    let mut rng = rand::rng();
                    let a = rng.random_range(0..candidates.len());
                    let mut b = rng.random_range(0..candidates.len() - 1);
                    if b >= a {
                        b += 1;
                    }
                    let (ea, eb) = (candidates[a], candidates[b]);
                    if ea.cost(now) <= eb.cost(now) { ea } else { eb }
                }
            }
        };
        chosen.in_flight.fetch_add(1, Ordering::Relaxed);
        Some(InFlight {
            endpoint: chosen.clone(),
            started: Instant::now(),
        })
    }

    /// Record how an attempt ended: latency, and failures toward ejection.
    pub(crate) fn report(&self, call: &InFlight, verdict: Verdict) {
        let endpoint = &call.endpoint;
        endpoint.observe_rtt(call.elapsed());
        if verdict == Verdict::Ok {
            endpoint.failures.store(0, Ordering::Relaxed);
            return;
        }
        let failures = endpoint.failures.fetch_add(1, Ordering::Relaxed) + 1;
        let Some(outlier) = &self.outlier else {
            return;
        };
        if failures < outlier.consecutive_failures {
            return;
        }
        let all = self.snapshot();
        let now = Instant::now();
        let ejected = all.iter().filter(|e| e.ejected(now)).count();
        let cap =
            (all.len() as u64 * u64::from(outlier.max_ejection_percent.min(100)) / 100) as usize;
        if ejected + 1 > cap.max(if all.len() > 1 { 1 } else { 0 }) {
            return;
        }
        let mut ejection = lock(&endpoint.ejection);
        if ejection.until.is_some_and(|u| now < u) {
            return;
        }
        ejection.times = ejection.times.saturating_add(1);
        let time = outlier
            .base_ejection_time
            .saturating_mul(ejection.times.min(10));
        ejection.until = Some(now + time);
        endpoint.failures.store(0, Ordering::Relaxed);
        drop(ejection);
        tracing::warn!(peer = %endpoint.addr, for_ms = time.as_millis() as u64, "instance ejected after {failures} failures in a row");
        (self.on_eject)();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn set(lb: LoadBalancer, outlier: Option<OutlierSpec>) -> EndpointSet {
        let set = EndpointSet::new(lb, outlier, || None, || {});
        set.update(vec![addr(1), addr(2), addr(3)]);
        set
    }

    #[tokio::test]
    async fn round_robin_visits_each_in_turn() {
        let set = set(LoadBalancer::RoundRobin, None);
        let picks: Vec<u16> = (0..6)
            .map(|_| set.pick(&[]).map(|c| c.endpoint.addr.port()).unwrap_or(0))
            .collect();
        assert_eq!(picks, [1, 2, 3, 1, 2, 3]);
    }

    #[tokio::test]
    async fn least_request_avoids_busy_instances() {
        let set = set(LoadBalancer::LeastRequest, None);
        let busy: Vec<_> = (0..2).filter_map(|_| set.pick(&[])).collect();
        let third = set.pick(&[]).map(|c| c.endpoint.addr);
        let busy_addrs: Vec<_> = busy.iter().map(|c| c.endpoint.addr).collect();
        assert!(
            !busy_addrs.contains(&third.unwrap_or(addr(0))),
            "{busy_addrs:?} {third:?}"
        );
    }

    #[tokio::test]
    async fn p2c_prefers_the_faster_instance() {
        let set = EndpointSet::new(LoadBalancer::P2cPeakEwma, None, || None, || {});
        set.update(vec![addr(1), addr(2)]);
        for e in set.snapshot().iter() {
            let rtt = if e.addr.port() == 1 { 200 } else { 1 };
            e.observe_rtt(Duration::from_millis(rtt));
        }
        let fast = (0..100)
            .filter(|_| set.pick(&[]).is_some_and(|c| c.endpoint.addr.port() == 2))
            .count();
        assert_eq!(fast, 100);
    }

    #[tokio::test]
    async fn failing_instances_are_ejected_within_the_cap() {
        let outlier = OutlierSpec {
            consecutive_failures: 2,
            base_ejection_time: Duration::from_secs(60),
            max_ejection_percent: 50,
        };
        let set = set(LoadBalancer::RoundRobin, Some(outlier));
        let target = addr(1);
        for _ in 0..2 {
            let call = set.pick(&[addr(2), addr(3)]).expect("pick");
            assert_eq!(call.endpoint.addr, target);
            set.report(&call, Verdict::Failed);
        }
        for _ in 0..6 {
            assert_ne!(set.pick(&[]).map(|c| c.endpoint.addr), Some(target));
        }
        // A second failing instance would exceed 50% of three: it stays in.
        for _ in 0..2 {
            let call = set.pick(&[addr(3)]).expect("pick");
            assert_eq!(call.endpoint.addr, addr(2));
            set.report(&call, Verdict::Failed);
        }
        assert!((0..6).any(|_| set.pick(&[]).is_some_and(|c| c.endpoint.addr == addr(2))));
    }

    #[tokio::test]
    async fn update_keeps_the_state_of_instances_still_there() {
        let set = set(LoadBalancer::RoundRobin, None);
        let before = set.snapshot()[0].clone();
        set.update(vec![addr(1), addr(4)]);
        let after = set.snapshot();
        assert!(Arc::ptr_eq(&before, &after[0]));
        assert_eq!(after[1].addr, addr(4));
    }
}
