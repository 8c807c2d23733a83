//! Tests against the real Redis at 127.0.0.1:6379 (`REDIS_HOST` overrides); they fail when
//! it is missing. Every key is a fresh uuid and deleted afterwards.

use ::redis::AsyncCommands;

use super::*;

fn redis_host() -> String {
    std::env::var("REDIS_HOST").unwrap_or_else(|_| "127.0.0.1:6379".into())
}

async fn sequencer() -> RedisSequencer {
    let spec = ComponentSpec::new("q", TYPE_NAME).with_metadata("redisHost", redis_host());
    let sequencer = RedisSequencer::new(Config::from_spec(&spec).expect("config"));
    sequencer.init().await.expect("redis must be reachable");
    sequencer
}

fn key() -> String {
    format!("plinth-test-{}", uuid::Uuid::new_v4())
}

async fn cleanup(key: &str) {
    let mut raw = ::redis::Client::open(format!("redis://{}/", redis_host()))
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("redis must be reachable");
    let _: () = raw.del(format!("sequencer|||{key}")).await.expect("del");
}

#[tokio::test]
async fn ids_increase() {
    let sequencer = sequencer().await;
    let key = key();
    let mut last = 0;
    for _ in 0..20 {
        let id = sequencer.next_id(&key).await.expect("next id");
        assert!(id > last, "{id} after {last}");
        last = id;
    }
    let (from, _) = sequencer
        .reserve(&key, 10)
        .await
        .expect("reserve")
        .expect("range");
    assert!(from > last);
    cleanup(&key).await;
}

#[tokio::test]
async fn bigger_than_raises_the_counter_only() {
    let sequencer = sequencer().await;
    let key = key();
    sequencer.ensure_floor(&key, 1000).await.expect("floor");
    assert_eq!(sequencer.next_id(&key).await.expect("next id"), 1001);
    // A lower floor never moves the counter back.
    sequencer.ensure_floor(&key, 10).await.expect("floor");
    assert_eq!(sequencer.next_id(&key).await.expect("next id"), 1002);
    cleanup(&key).await;
}

#[tokio::test]
async fn keys_use_layottos_layout() {
    let sequencer = sequencer().await;
    let key = format!("app||{}", key());
    assert_eq!(sequencer.next_id(&key).await.expect("next id"), 1);
    let mut raw = ::redis::Client::open(format!("redis://{}/", redis_host()))
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("redis must be reachable");
    let stored: Option<String> = raw.get(format!("sequencer|||{key}")).await.expect("get");
    assert_eq!(stored.as_deref(), Some("1"));
    cleanup(&key).await;
}

#[test]
fn bad_metadata_is_rejected() {
    let spec = ComponentSpec::new("q", TYPE_NAME)
        .with_metadata("redisHost", "127.0.0.1:6379")
        .with_metadata("keyLayout", "dapr");
    assert!(factory(&spec).is_err());
}
