//! The domain of the transactional outbox, free of any database or broker.
//!
//! This crate owns the event envelope ([`NewEvent`] on the way in, [`Event`] once
//! stored), the rules that every store applies before writing ([`Limits`]), the
//! traits that stores and publishers implement ([`OutboxStore`], [`Publisher`]) and
//! the one error type that all of them return ([`Error`], classified by
//! [`ErrorKind`]). On the consumer side it owns [`ReceivedEvent`], the
//! [`Consumer`] trait that broker adapters implement, and the [`inbox`] that
//! applies each event once. Store and broker adapters depend on it, never the
//! other way round.

mod cloudevents;
mod consumer;
mod dead_letter;
mod error;
mod event;
mod identifier;
pub mod inbox;
pub mod migration;
mod publisher;
mod relay;
mod relay_store;
pub mod replay;
mod retry;
mod store;
pub mod telemetry;
mod template;
pub mod trace;

pub use cloudevents::{
    CloudEventAttributes, DEFAULT_SOURCE_TEMPLATE, SPEC_VERSION, format_sequence,
};
pub use consumer::{Acknowledge, BoxFuture, Consumer, Delivery, ReceivedEvent};
pub use dead_letter::{DeadLetter, DeadLetterFilter, DeadLetterStore};
pub use error::{Error, ErrorKind, Result};
pub use event::{Event, EventId, Headers, Limits, NewEvent, Payload};
pub use identifier::Identifier;
pub use publisher::Publisher;
pub use relay::{DeadLetterPolicy, FailSite, Failpoints, Relay, RelayConfig, RelayStats};
pub use relay_store::{Claimed, RelayId, RelayStore};
pub use replay::{PublishedLog, ReplayFilter, ReplayOptions, ReplayReport};
pub use retry::RetryPolicy;
pub use store::{Enqueued, OutboxStore, Status};
pub use template::Template;

/// How many partitions the keys are hashed into.
///
/// Relays own partitions, not single keys, so that the ownership table stays small
/// however many keys there are. The number is part of the schema: every stored
/// event carries its partition, computed once when it is enqueued.
pub const PARTITION_COUNT: u16 = 256;
