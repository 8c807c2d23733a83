use std::collections::HashSet;

use plinth_core::ErrorKind;

use super::*;

#[tokio::test]
async fn ids_start_at_one_and_increase_per_key() {
    let seq = InMemorySequencer::new();
    assert_eq!(seq.next_id("a").await.ok(), Some(1));
    assert_eq!(seq.next_id("a").await.ok(), Some(2));
    assert_eq!(seq.next_id("b").await.ok(), Some(1));
}

#[tokio::test]
async fn reserve_returns_an_inclusive_range_and_advances() {
    let seq = InMemorySequencer::new();
    assert_eq!(seq.next_id("k").await.ok(), Some(1));
    assert_eq!(seq.reserve("k", 10).await.ok(), Some(Some((2, 11))));
    assert_eq!(seq.next_id("k").await.ok(), Some(12));
    assert_eq!(
        seq.reserve("k", 0).await.err().map(|e| e.kind()),
        Some(ErrorKind::InvalidArgument)
    );
}

#[tokio::test]
async fn ensure_floor_only_raises() {
    let seq = InMemorySequencer::new();
    assert!(seq.ensure_floor("k", 100).await.is_ok());
    assert_eq!(seq.next_id("k").await.ok(), Some(101));
    assert!(seq.ensure_floor("k", 50).await.is_ok());
    assert_eq!(seq.next_id("k").await.ok(), Some(102));
}

#[tokio::test]
async fn overflow_is_resource_exhausted() {
    let seq = InMemorySequencer::new();
    assert!(seq.ensure_floor("k", i64::MAX - 2).await.is_ok());
    assert_eq!(
        seq.reserve("k", 2).await.ok(),
        Some(Some((i64::MAX - 1, i64::MAX)))
    );
    let exhausted = Some(ErrorKind::ResourceExhausted);
    assert_eq!(seq.next_id("k").await.err().map(|e| e.kind()), exhausted);
    assert_eq!(seq.reserve("k", 1).await.err().map(|e| e.kind()), exhausted);
    assert!(seq.ensure_floor("k", i64::MAX).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_never_share_an_id() {
    let seq = Arc::new(InMemorySequencer::new());
    let tasks: Vec<_> = (0..1000)
        .map(|i| {
            let seq = Arc::clone(&seq);
            tokio::spawn(async move {
                if i % 10 == 0 {
                    seq.reserve("k", 5)
                        .await
                        .map(|r| r.map(|(lo, hi)| (lo..=hi).collect()))
                } else {
                    seq.next_id("k").await.map(|id| Some(vec![id]))
                }
            })
        })
        .collect();
    let mut seen = HashSet::new();
    for task in tasks {
        let ids = task
            .await
            .ok()
            .and_then(|r| r.ok())
            .flatten()
            .unwrap_or_default();
        assert!(!ids.is_empty());
        for id in ids {
            assert!(seen.insert(id), "id {id} issued twice");
        }
    }
    // 900 single ids and 100 ranges of 5, with no gaps.
    assert_eq!(seen.len(), 1400);
    assert_eq!(seen.iter().max().copied(), Some(1400));
}
