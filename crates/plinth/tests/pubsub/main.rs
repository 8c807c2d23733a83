//! Pub/sub through the real wire: events published with the Layotto API are delivered to a
//! test app's `AppCallback` server, or to `SubscribeTopicEvents` streams.

#[path = "../common/mod.rs"]
mod common;

mod app;
mod app_channel;
mod brokers;
mod concurrency;
mod conformance;
mod dapr_app;
mod delivery;
mod http_app;
mod ledger;
mod publish;
mod startup;
mod streaming;
mod support;
