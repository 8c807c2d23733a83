//! Tests against the real PostgreSQL, database `test` (`PLINTH_TEST_POSTGRES` overrides);
//! they fail when it is missing. Each test uses a table of its own, dropped at the end.

use plinth_core::ErrorKind;

use super::*;
use crate::postgres_client::test_support::{DropOnExit, connect, unique, url};

async fn sequencer() -> (PostgresSequencer, DropOnExit) {
    let table = unique("plinth_sequencer_test");
    let guard = DropOnExit::tables(&[&table]);
    let spec = ComponentSpec::new("q", TYPE_NAME)
        .with_metadata("connectionString", url())
        .with_metadata("tableName", &table)
        .with_metadata("timeout", "5s");
    let sequencer =
        PostgresSequencer::new(Config::from_spec(&spec).expect("config")).expect("sequencer");
    sequencer
        .init()
        .await
        .expect("PostgreSQL must be reachable");
    (sequencer, guard)
}

#[tokio::test]
async fn the_row_holds_the_last_id_and_floors_only_raise_it() {
    let (sequencer, _guard) = sequencer().await;
    assert_eq!(sequencer.next_id("a").await.expect("id"), 1);
    sequencer.ensure_floor("b", 100).await.expect("floor");
    assert_eq!(sequencer.next_id("b").await.expect("id"), 101);
    sequencer.ensure_floor("b", 50).await.expect("lower floor");
    assert_eq!(sequencer.next_id("b").await.expect("id"), 102);
    let sql = connect().await;
    let last: i64 = sql
        .query_one(
            &format!("SELECT last_id FROM {} WHERE key = 'b'", sequencer.table),
            &[],
        )
        .await
        .expect("row")
        .get(0);
    assert_eq!(last, 102);
    // A counter at the top of bigint cannot advance.
    sequencer.ensure_floor("c", i64::MAX).await.expect("floor");
    let err = sequencer.next_id("c").await.expect_err("overflow");
    assert_eq!(err.kind(), ErrorKind::ResourceExhausted, "{err}");
    let zero = sequencer.reserve("a", 0).await;
    assert_eq!(
        zero.err().map(|e| e.kind()),
        Some(ErrorKind::InvalidArgument)
    );
}
