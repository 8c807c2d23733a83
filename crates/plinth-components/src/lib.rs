//! Plinth's components: in-memory and local backends, Redis, PostgreSQL, MySQL, S3, NATS
//! JetStream, RabbitMQ and MQTT, and etcd behind the `etcd` feature.
//!
//! One directory per component, with the same files in each: `mod.rs` holds the component
//! and its factory, `config.rs` parses its metadata, `tests.rs` holds its unit tests.
//! [`register_all`] puts every factory of this crate into a registry.

#![forbid(unsafe_code)]

use plinth_core::registry::Registry;

pub mod bindings;
pub mod configuration;
pub mod file;
pub mod lock;
pub mod pubsub;
pub mod secrets;
pub mod sequencer;
pub mod state;

#[cfg(feature = "etcd")]
mod etcd_conn;
mod mysql_client;
mod postgres_client;
mod redis_client;
mod util;

/// Register every component type of this crate under its type name (`state.in-memory`,
/// `state.mysql`, `state.postgresql`, `state.redis`, `lock.in-memory`, `lock.redis`,
/// `lock.postgresql`, `sequencer.in-memory`, `sequencer.mysql`, `sequencer.redis`,
/// `sequencer.postgresql`, `configuration.in-memory`, `configuration.redis`,
/// `configuration.postgresql`, `pubsub.in-memory`, `pubsub.jetstream`, `pubsub.mqtt3`, `pubsub.rabbitmq`,
/// `pubsub.redis`, `file.local`, `file.s3`, `secretstores.local.env`,
/// `secretstores.local.file`, `bindings.http`, `bindings.cron`; and with the `etcd` feature
/// `configuration.etcd`, `lock.etcd`, `sequencer.etcd`).
pub fn register_all(registry: &mut Registry) {
    registry
        .register(state::memory::TYPE_NAME, state::memory::factory)
        .register(state::mysql::TYPE_NAME, state::mysql::factory)
        .register(state::postgres::TYPE_NAME, state::postgres::factory)
        .register(state::redis::TYPE_NAME, state::redis::factory)
        .register(lock::memory::TYPE_NAME, lock::memory::factory)
        .register(lock::redis::TYPE_NAME, lock::redis::factory)
        .register(lock::postgres::TYPE_NAME, lock::postgres::factory)
        .register(sequencer::memory::TYPE_NAME, sequencer::memory::factory)
        .register(sequencer::mysql::TYPE_NAME, sequencer::mysql::factory)
        .register(sequencer::redis::TYPE_NAME, sequencer::redis::factory)
        .register(sequencer::postgres::TYPE_NAME, sequencer::postgres::factory)
        .register(
            configuration::memory::TYPE_NAME,
            configuration::memory::factory,
        )
        .register(
            configuration::redis::TYPE_NAME,
            configuration::redis::factory,
        )
        .register(
            configuration::postgres::TYPE_NAME,
            configuration::postgres::factory,
        )
        .register(pubsub::memory::TYPE_NAME, pubsub::memory::factory)
        .register(pubsub::redis::TYPE_NAME, pubsub::redis::factory)
        .register(pubsub::mqtt3::TYPE_NAME, pubsub::mqtt3::factory)
        .register(pubsub::rabbitmq::TYPE_NAME, pubsub::rabbitmq::factory)
        .register(pubsub::jetstream::TYPE_NAME, pubsub::jetstream::factory)
        .register(file::local::TYPE_NAME, file::local::factory)
        .register(file::s3::TYPE_NAME, file::s3::factory)
        .register(secrets::env::TYPE_NAME, secrets::env::factory)
        .register(secrets::file::TYPE_NAME, secrets::file::factory)
        .register(bindings::http::TYPE_NAME, bindings::http::factory)
        .register(bindings::cron::TYPE_NAME, bindings::cron::factory);
    #[cfg(feature = "etcd")]
    registry
        .register(configuration::etcd::TYPE_NAME, configuration::etcd::factory)
        .register(lock::etcd::TYPE_NAME, lock::etcd::factory)
        .register(sequencer::etcd::TYPE_NAME, sequencer::etcd::factory);
}

#[cfg(test)]
mod tests {
    use plinth_core::ComponentSpec;

    use super::*;

    #[test]
    fn every_type_is_registered_and_builds_with_defaults() {
        let mut registry = Registry::new();
        register_all(&mut registry);
        let types: Vec<_> = registry.types().collect();
        let etcd = if cfg!(feature = "etcd") { 3 } else { 0 };
        assert_eq!(types.len(), 25 + etcd);
        for (type_name, kind) in [
            ("state.in-memory", "state"),
            ("lock.in-memory", "lock"),
            ("sequencer.in-memory", "sequencer"),
            ("configuration.in-memory", "configuration"),
            ("pubsub.in-memory", "pubsub"),
            ("file.local", "file"),
            ("secretstores.local.env", "secretstores"),
        ] {
            let spec = ComponentSpec::new("c", type_name);
            let instance = registry.build(&spec);
            assert_eq!(instance.map(|i| i.kind()).ok(), Some(kind), "{type_name}");
        }
        // These need metadata.
        for type_name in [
            "state.mysql",
            "sequencer.mysql",
            "state.postgresql",
            "state.redis",
            "configuration.redis",
            "pubsub.redis",
            "lock.postgresql",
            "sequencer.postgresql",
            "configuration.postgresql",
            "pubsub.mqtt3",
            "pubsub.jetstream",
            "file.s3",
            "secretstores.local.file",
            "bindings.http",
            "bindings.cron",
            "pubsub.rabbitmq",
            #[cfg(feature = "etcd")]
            "configuration.etcd",
            #[cfg(feature = "etcd")]
            "lock.etcd",
            #[cfg(feature = "etcd")]
            "sequencer.etcd",
        ] {
            let spec = ComponentSpec::new("c", type_name);
            assert!(
                registry.build(&spec).is_err(),
                "{type_name} without metadata"
            );
        }
    }
}
