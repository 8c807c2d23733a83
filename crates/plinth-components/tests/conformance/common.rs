//! What every suite shares: backend addresses, prefixes and building components.

use plinth_core::ComponentSpec;
use plinth_core::component::Instance;

/// A fresh namespace for one case.
pub(crate) fn prefix() -> String {
    format!("plinth-conformance-{}||", uuid::Uuid::new_v4())
}

/// The Redis every `*.redis` component uses: 127.0.0.1:6379, or `REDIS_HOST`.
pub(crate) fn redis_host() -> String {
    std::env::var("REDIS_HOST").unwrap_or_else(|_| "127.0.0.1:6379".into())
}

/// The PostgreSQL database `test`, or the connection string in `PLINTH_TEST_POSTGRES`.
pub(crate) fn postgres_url() -> String {
    std::env::var("PLINTH_TEST_POSTGRES")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=test".into())
}

/// The etcd every `*.etcd` component uses: 127.0.0.1:2379, or `PLINTH_TEST_ETCD`. Start it
/// with `scripts/services/etcd.sh`.
#[cfg(feature = "etcd")]
pub(crate) fn etcd_endpoint() -> String {
    std::env::var("PLINTH_TEST_ETCD").unwrap_or_else(|_| "127.0.0.1:2379".into())
}

/// The `keyPrefixPath` every `*.etcd` component of the suites works under.
#[cfg(feature = "etcd")]
pub(crate) const ETCD_PREFIX: &str = "/plinth-conformance/";

/// Build `spec` with every factory of the crate and initialise it, panicking with the
/// component's type when its backend is unreachable.
pub(crate) async fn build(spec: ComponentSpec) -> Instance {
    let mut registry = plinth_core::registry::Registry::new();
    plinth_components::register_all(&mut registry);
    let instance = registry
        .build(&spec)
        .unwrap_or_else(|e| panic!("{} does not build: {e}", spec.type_name));
    instance.component().init().await.unwrap_or_else(|e| {
        panic!(
            "{} must be reachable (scripts/services/ starts what the machine lacks): {e}",
            spec.type_name
        )
    });
    instance
}
