//! Backend faults, through the real binary: a private Redis is stopped and restarted under a
//! running Plinth, or is missing when Plinth starts. Calls must fail fast with UNAVAILABLE,
//! readiness must name the component, the other components must keep serving, and Plinth
//! must recover by itself when the backend returns.

use std::time::{Duration, Instant};

use plinth_proto::runtime::v1 as pb;
use serde_json::Value;
use tonic::Code;
use tonic::transport::Channel;

use crate::backend::{PrivatePostgres, PrivateRedis, free_port};
use crate::common::{Plinth, scratch, unique, write};

type Client = pb::runtime_client::RuntimeClient<Channel>;

/// "Seconds, not minutes": the most a call may take while its backend is down. The Redis
/// client's own timeouts are 5 s to connect and 3 s per call.
const FAIL_FAST: Duration = Duration::from_secs(10);
/// How long readiness may take to notice an outage: one probe interval plus a probe.
const NOTICE: Duration = Duration::from_secs(20);
/// How long recovery may take once the backend is back: the longest init backoff plus a
/// probe.
const RECOVER: Duration = Duration::from_secs(40);

/// A backend a test can stop and start again on the same port.
trait Outage {
    fn stop(&mut self);
    fn restart(&mut self);
}

impl Outage for PrivateRedis {
    fn stop(&mut self) {
        PrivateRedis::stop(self);
    }
    fn restart(&mut self) {
        *self = PrivateRedis::start_on(self.port);
    }
}

impl Outage for PrivatePostgres {
    fn stop(&mut self) {
        PrivatePostgres::stop(self);
    }
    fn restart(&mut self) {
        PrivatePostgres::restart(self);
    }
}

/// `outage`, state.redis on `host`.
fn redis_store(host: &str) -> String {
    format!(
        "  type: state.redis\n  version: v1\n  metadata:\n    - name: redisHost\n      value: {host}\n"
    )
}

/// `outage`, state.postgresql on the private server.
fn postgres_store(pg: &PrivatePostgres) -> String {
    format!(
        "  type: state.postgresql\n  version: v2\n  metadata:\n    - name: connectionString\n      value: {}\n",
        pg.url()
    )
}

/// Resources with `outage` (the `spec` given) and `steady` (state.in-memory).
fn resources(outage_spec: &str) -> std::path::PathBuf {
    let dir = scratch("faults");
    write(
        &dir,
        "resources/components.yaml",
        &format!(
            "apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: outage
spec:
{outage_spec}---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: steady
spec:
  type: state.in-memory
  version: v1
"
        ),
    );
    dir
}

async fn save(c: &mut Client, store: &str, key: &str, value: &[u8]) -> Result<(), tonic::Status> {
    c.save_state(pb::SaveStateRequest {
        store_name: store.into(),
        states: vec![pb::StateItem {
            key: key.into(),
            value: value.to_vec(),
            ..Default::default()
        }],
    })
    .await
    .map(|_| ())
}

async fn get(c: &mut Client, store: &str, key: &str) -> Result<Vec<u8>, tonic::Status> {
    c.get_state(pb::GetStateRequest {
        store_name: store.into(),
        key: key.into(),
        ..Default::default()
    })
    .await
    .map(|r| r.into_inner().data)
}

/// Readiness as (status, body), polled until `done` holds, at most `timeout`.
async fn readiness_until(
    plinth: &Plinth,
    timeout: Duration,
    done: impl Fn(u16, &Value) -> bool,
) -> (u16, Value) {
    let deadline = Instant::now() + timeout;
    loop {
        let (status, body) = plinth.admin_get("/actuator/health/readiness").await;
        let body: Value = serde_json::from_str(&body).expect("readiness is JSON");
        if done(status, &body) {
            return (status, body);
        }
        assert!(
            Instant::now() < deadline,
            "readiness did not get there within {timeout:?}: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn status_of<'a>(readiness: &'a Value, name: &str) -> &'a Value {
    readiness["components"]
        .as_array()
        .and_then(|all| all.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("{name} is not listed: {readiness}"))
}

/// Every call to the `outage` store fails with UNAVAILABLE, each within [`FAIL_FAST`].
async fn assert_failing_fast(c: &mut Client, key: &str) {
    for attempt in 0..3 {
        let started = Instant::now();
        let err = get(c, "outage", key)
            .await
            .expect_err("a get while Redis is down");
        let took = started.elapsed();
        assert_eq!(err.code(), Code::Unavailable, "attempt {attempt}: {err:?}");
        assert!(took < FAIL_FAST, "attempt {attempt} took {took:?}: {err:?}");
        let started = Instant::now();
        let err = save(c, "outage", key, b"lost?")
            .await
            .expect_err("a save while Redis is down");
        assert_eq!(err.code(), Code::Unavailable, "attempt {attempt}: {err:?}");
        assert!(started.elapsed() < FAIL_FAST, "{err:?}");
    }
}

/// Poll until a save and get on `outage` succeed again, at most [`RECOVER`].
async fn wait_serving(c: &mut Client, key: &str) {
    let deadline = Instant::now() + RECOVER;
    loop {
        if save(c, "outage", key, b"back").await.is_ok() {
            assert_eq!(get(c, "outage", key).await.expect("get"), b"back");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "outage did not recover within {RECOVER:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Stop `backend` under a running Plinth whose `outage` store uses it, check how calls fail
/// and what readiness says, then start it again and wait for Plinth to heal.
async fn outage(backend: &mut impl Outage, outage_spec: &str) {
    let dir = resources(outage_spec);
    let plinth = Plinth::start_ready_with(&["--resources-path", "resources"], Some(&dir)).await;
    let mut c = plinth.client().await;
    let key = unique("k");
    save(&mut c, "outage", &key, b"before").await.expect("save");
    assert_eq!(get(&mut c, "outage", &key).await.expect("get"), b"before");

    backend.stop();
    assert_failing_fast(&mut c, &key).await;
    // Readiness names the component, with a reason, and only that one.
    let (status, ready) = readiness_until(&plinth, NOTICE, |_, body| {
        status_of(body, "outage")["status"] == "DOWN"
    })
    .await;
    assert_eq!(status, 503, "{ready}");
    assert!(
        !status_of(&ready, "outage")["reason"]
            .as_str()
            .unwrap_or_default()
            .is_empty(),
        "{ready}"
    );
    assert_eq!(status_of(&ready, "steady")["status"], "UP", "{ready}");
    // The other component keeps serving during the outage.
    save(&mut c, "steady", &key, b"fine")
        .await
        .expect("steady save");
    assert_eq!(
        get(&mut c, "steady", &key).await.expect("steady get"),
        b"fine"
    );
    assert_failing_fast(&mut c, &key).await;

    // Back on the same port, Plinth heals by itself.
    backend.restart();
    readiness_until(&plinth, RECOVER, |status, _| status == 200).await;
    wait_serving(&mut c, &key).await;
}

#[tokio::test]
async fn a_redis_outage_fails_fast_is_reported_and_heals_without_a_restart() {
    let mut redis = PrivateRedis::start();
    let spec = redis_store(&redis.host());
    outage(&mut redis, &spec).await;
}

#[tokio::test]
async fn a_postgresql_outage_fails_fast_is_reported_and_heals_without_a_restart() {
    let mut pg = PrivatePostgres::start();
    let spec = postgres_store(&pg);
    outage(&mut pg, &spec).await;
}

#[tokio::test]
async fn a_backend_missing_at_startup_starts_down_and_comes_up_when_it_appears() {
    let port = free_port();
    let dir = resources(&redis_store(&format!("127.0.0.1:{port}")));
    let plinth = Plinth::start_with(&["--resources-path", "resources"], Some(&dir));
    let (status, ready) = readiness_until(&plinth, NOTICE, |_, body| {
        status_of(body, "outage")["status"] == "DOWN"
    })
    .await;
    assert_eq!(status, 503, "{ready}");
    assert_eq!(status_of(&ready, "steady")["status"], "UP", "{ready}");
    let mut c = plinth.client().await;
    let key = unique("k");
    assert_failing_fast(&mut c, &key).await;
    save(&mut c, "steady", &key, b"fine")
        .await
        .expect("steady save");

    let _redis = PrivateRedis::start_on(port);
    readiness_until(&plinth, RECOVER, |status, _| status == 200).await;
    wait_serving(&mut c, &key).await;
}

/// One bad metadata value per component type: startup fails naming the component and the
/// field.
#[test]
fn invalid_store_metadata_fails_startup_naming_component_and_field() {
    for (type_name, field, value) in [
        ("state.redis", "redisHost", "127.0.0.1:not-a-port"),
        ("state.redis", "redisDB", "-1"),
        ("lock.redis", "keyLayout", "sideways"),
        ("sequencer.redis", "redisDB", "many"),
        ("configuration.redis", "timeout", "soon"),
        ("state.postgresql", "timeout", "soon"),
        ("state.postgresql", "tableName", "no spaces; please"),
    ] {
        let dir = scratch("badmeta");
        let name = unique("broken");
        let required = if type_name.ends_with(".redis") {
            ("redisHost", "127.0.0.1:6379")
        } else {
            (
                "connectionString",
                "host=127.0.0.1 user=postgres dbname=test",
            )
        };
        // state.postgresql's layout version; the others' only version.
        let version = if type_name == "state.postgresql" {
            "v2"
        } else {
            "v1"
        };
        let mut metadata = format!("    - name: {field}\n      value: {value}\n");
        if required.0 != field {
            metadata.push_str(&format!(
                "    - name: {}\n      value: {}\n",
                required.0, required.1
            ));
        }
        write(
            &dir,
            "resources/components.yaml",
            &format!(
                "apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: {name}
spec:
  type: {type_name}
  version: {version}
  metadata:
{metadata}"
            ),
        );
        let output = match Plinth::try_start(&["--resources-path", "resources"], Some(&dir)) {
            Ok(_) => panic!("{type_name} with {field}={value} started"),
            Err(output) => output,
        };
        assert!(
            output.contains(&name) && output.contains(field),
            "{type_name} with {field}={value}: the error names neither the component nor the field:\n{output}"
        );
    }
}
