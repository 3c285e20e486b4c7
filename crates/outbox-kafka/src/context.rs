//! The callbacks librdkafka makes into this crate: its log lines and errors, and
//! for the consumer the rebalances that take partitions away.
//!
//! [`KafkaContext`] forwards librdkafka's log lines and errors to `tracing`, and
//! tells the consumer's offset tracker about revoked partitions.

use std::sync::{Arc, Mutex};

use rdkafka::TopicPartitionList;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use tracing::{debug, error, info, warn};

use crate::offsets::OffsetTracker;

/// The context of one rdkafka client of this crate.
pub(crate) struct KafkaContext {
    role: &'static str,
    offsets: Option<Arc<Mutex<OffsetTracker>>>,
}

impl KafkaContext {
    /// The context of a producer or admin client.
    pub(crate) fn new(role: &'static str) -> Self {
        KafkaContext {
            role,
            offsets: None,
        }
    }

    /// The context of a consumer whose deliveries `offsets` tracks.
    pub(crate) fn consumer(offsets: Arc<Mutex<OffsetTracker>>) -> Self {
        KafkaContext {
            offsets: Some(offsets),
            ..KafkaContext::new("consumer")
        }
    }
}

impl ClientContext for KafkaContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        let role = self.role;
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => error!(role, facility, message, "librdkafka logged"),
            RDKafkaLogLevel::Warning => warn!(role, facility, message, "librdkafka logged"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                info!(role, facility, message, "librdkafka logged")
            }
            RDKafkaLogLevel::Debug => debug!(role, facility, message, "librdkafka logged"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        warn!(role = self.role, error = %error, reason, "kafka client reported an error");
    }
}

impl ConsumerContext for KafkaContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(partitions) = rebalance else {
            return;
        };
        if let Some(offsets) = &self.offsets {
            let mut offsets = offsets.lock().expect("offset tracker lock");
            for element in partitions.elements() {
                offsets.revoked(&(element.topic().to_owned(), element.partition()));
            }
        }
        info!(
            partition_count = partitions.count(),
            "kafka group revoked partitions"
        );
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(partitions) => {
                info!(
                    partition_count = partitions.count(),
                    "kafka group assigned partitions"
                )
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(err) => warn!(error = %err, "kafka group rebalance failed"),
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            Ok(()) => debug!(partition_count = offsets.count(), "committed kafka offsets"),
            Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(err) => warn!(error = %err, "kafka offset commit failed"),
        }
    }
}
