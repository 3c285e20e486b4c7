//! The consumer adapter: records of a consumer group handed over as
//! [`Delivery`]s, with each partition's offset committed only as far as every
//! delivery below it was settled.
//!
//! [`KafkaConsumer`] reads with an rdkafka `StreamConsumer`. Settling a delivery
//! stores the partition's low-water mark (see [`crate::offsets`]) and librdkafka
//! commits stored offsets on its own schedule, on close and before a rebalance.

use std::fmt;
use std::sync::{Arc, Mutex, Weak};

use outbox_core::{Acknowledge, BoxFuture, Consumer, Delivery, Error, Result};
use rdkafka::consumer::{CommitMode, Consumer as _, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{debug, info};

use crate::context::KafkaContext;
use crate::offsets::{OffsetTracker, Ticket};
use crate::publisher::first_answer;
use crate::{KafkaConsumerOptions, binding, failure};

type Client = StreamConsumer<KafkaContext>;

/// Reads outbox events from Kafka topics as a member of a consumer group.
///
/// Each record becomes one [`Delivery`], decoded from the CloudEvents Kafka
/// binding in binary mode (the publisher's mapping); a record that does not
/// decode, such as one without `ce_id`, comes out as [`Delivery::malformed`]
/// with [`ErrorKind::Permanent`](outbox_core::ErrorKind::Permanent). Records of
/// one partition come in offset order, so the events of one key in the order
/// they were published.
///
/// # Settling
///
/// Up to [`KafkaConsumerOptions::max_unsettled`] deliveries may be out at once,
/// and they may be settled in any order. Kafka keeps only one committed offset
/// per partition, so a settlement stores the offset below which every delivery
/// of that partition is settled; librdkafka commits stored offsets every
/// [`KafkaConsumerOptions::commit_interval`], on [`KafkaConsumer::commit`], when
/// the consumer closes, and before a rebalance takes a partition away. An ack
/// therefore reaches the broker within the commit interval, not at once.
///
/// - `ack` marks the delivery done.
/// - `reject` does the same: Kafka has no dead-letter route of its own, so a
///   rejected record is skipped, after the caller has logged or stored it.
/// - A delivery dropped unsettled holds its partition's mark back for as long
///   as this member keeps the partition. Nothing is redelivered meanwhile (Kafka
///   has no per-record redelivery); once the member restarts, or the partition
///   moves to another member, the group reads again from the lowest unsettled
///   offset, so the dropped record comes again, and with it the settled ones
///   after it, which the inbox recognises by their event ids.
///
/// Settling a delivery whose partition was taken away by a rebalance changes
/// nothing: its new owner reads it again from the committed offset.
///
/// # Errors
///
/// [`KafkaConsumer::connect`] fails with
/// [`Config`](outbox_core::ErrorKind::Config) for invalid options and with
/// [`Unavailable`](outbox_core::ErrorKind::Unavailable) when no broker answers
/// within the connect timeout. `next` fails with `Unavailable` when the cluster
/// is lost (librdkafka reconnects by itself; call `next` again after a pause),
/// `Config` when authorization fails, and `Transient` otherwise, such as for a
/// subscribed topic that does not exist yet.
///
/// Dropping the consumer closes it, committing the stored offsets and leaving
/// the group, and blocks the current thread while it does; [`KafkaConsumer::close`]
/// does the same off the async runtime's threads.
pub struct KafkaConsumer {
    consumer: Arc<Client>,
    offsets: Arc<Mutex<OffsetTracker>>,
    slots: Arc<Semaphore>,
    group_id: String,
    topics: Vec<String>,
}

impl KafkaConsumer {
    /// Checks `options`, waits for the cluster's first answer and subscribes to
    /// the topics. Joining the group happens on the first [`Consumer::next`].
    ///
    /// ```no_run
    /// use outbox_core::Consumer;
    /// use outbox_kafka::{KafkaConsumer, KafkaConsumerOptions};
    ///
    /// # async fn run() -> outbox_core::Result<()> {
    /// let mut consumer = KafkaConsumer::connect(KafkaConsumerOptions {
    ///     group_id: "billing".into(),
    ///     topics: vec!["orders".into()],
    ///     ..KafkaConsumerOptions::default()
    /// })
    /// .await?;
    /// while let Some(delivery) = consumer.next().await? {
    ///     match delivery.event() {
    ///         Ok(event) => println!("{} {}", event.event_id, event.event_type),
    ///         Err(err) => eprintln!("malformed: {err}"),
    ///     }
    ///     delivery.ack().await?;
    /// }
    /// consumer.close().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect(options: KafkaConsumerOptions) -> Result<KafkaConsumer> {
        let config = options.client_config()?;
        if options.connect_timeout.is_zero() {
            return Err(Error::config("kafka connect timeout must be above zero"));
        }

        let offsets = Arc::new(Mutex::new(OffsetTracker::default()));
        let context = KafkaContext::consumer(Arc::clone(&offsets));
        let consumer: Client = config
            .create_with_context(context)
            .map_err(|e| failure::client_failure(e, "consumer"))?;
        let consumer = Arc::new(consumer);

        let probe = Arc::clone(&consumer);
        let timeout = options.connect_timeout;
        let fetch = move || {
            probe
                .fetch_metadata(None, timeout)
                .map(|metadata| metadata.brokers().len())
        };
        let broker_count = first_answer(fetch, &options.brokers, timeout).await?;

        let topics: Vec<&str> = options.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics).map_err(|e| {
            Error::config(format!("cannot subscribe to kafka topics {topics:?}")).with_source(e)
        })?;
        info!(
            brokers = %options.brokers,
            broker_count,
            group_id = %options.group_id,
            topics = ?options.topics,
            "kafka consumer subscribed"
        );
        Ok(KafkaConsumer {
            consumer,
            offsets,
            slots: Arc::new(Semaphore::new(options.max_unsettled)),
            group_id: options.group_id,
            topics: options.topics,
        })
    }

    /// Commits the stored offsets now and waits for the coordinator's answer.
    ///
    /// Only what settled deliveries stored is committed, never the position of
    /// records handed out and not yet settled.
    pub async fn commit(&self) -> Result<()> {
        let consumer = Arc::clone(&self.consumer);
        let committed =
            tokio::task::spawn_blocking(move || consumer.commit_consumer_state(CommitMode::Sync))
                .await
                .unwrap_or_else(|join| std::panic::resume_unwind(join.into_panic()));
        match committed {
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => Ok(()),
            Err(err) => Err(failure::offset_failure(err, "cannot commit kafka offsets")),
        }
    }

    /// Commits the stored offsets, leaves the group and closes the consumer.
    ///
    /// Deliveries still out can no longer be settled: settling one fails with
    /// [`ErrorKind::Unavailable`](outbox_core::ErrorKind::Unavailable), and its
    /// record is read again by whoever consumes the partition next.
    pub async fn close(self) -> Result<()> {
        let committed = self.commit().await;
        let consumer = self.consumer;
        tokio::task::spawn_blocking(move || drop(consumer))
            .await
            .unwrap_or_else(|join| std::panic::resume_unwind(join.into_panic()));
        info!(group_id = %self.group_id, "kafka consumer closed");
        committed
    }
}

impl Consumer for KafkaConsumer {
    fn name(&self) -> &'static str {
        "kafka"
    }

    async fn next(&mut self) -> Result<Option<Delivery>> {
        let slot = Arc::clone(&self.slots)
            .acquire_owned()
            .await
            .expect("the slots are never closed");

        let message = self
            .consumer
            .recv()
            .await
            .map_err(failure::consume_failure)?;
        let partition = (message.topic().to_owned(), message.partition());
        let event = binding::decode(message.headers(), message.payload());
        let ticket = self
            .offsets
            .lock()
            .expect("offset tracker lock")
            .delivered(partition, message.offset());
        drop(message);

        if let Err(err) = &event {
            debug!(
                topic = %ticket.partition.0,
                partition = ticket.partition.1,
                offset = ticket.offset,
                error = %err,
                "kafka record is malformed"
            );
        }
        let acker = KafkaAcker {
            consumer: Arc::downgrade(&self.consumer),
            offsets: Arc::clone(&self.offsets),
            ticket,
            _slot: slot,
        };
        Ok(Some(Delivery::decoded(event, acker)))
    }
}

impl fmt::Debug for KafkaConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaConsumer")
            .field("group_id", &self.group_id)
            .field("topics", &self.topics)
            .field("free_slots", &self.slots.available_permits())
            .finish_non_exhaustive()
    }
}

/// Settles one delivery by storing its partition's new low-water mark.
struct KafkaAcker {
    consumer: Weak<Client>,
    offsets: Arc<Mutex<OffsetTracker>>,
    ticket: Ticket,
    /// Frees a place among the unsettled deliveries when settled or dropped.
    _slot: OwnedSemaphorePermit,
}

impl KafkaAcker {
    fn settle(&self) -> Result<()> {
        // The lock is held while storing, so that marks reach librdkafka in the
        // order they were computed and a stored offset never moves back.
        let mut offsets = self.offsets.lock().expect("offset tracker lock");
        let Some(mark) = offsets.settled(&self.ticket) else {
            return Ok(());
        };
        let Some(consumer) = self.consumer.upgrade() else {
            return Err(failure::consumer_closed());
        };

        let (topic, partition) = &self.ticket.partition;
        let mut list = TopicPartitionList::with_capacity(1);
        list.add_partition_offset(topic, *partition, Offset::Offset(mark))
            .map_err(|e| failure::offset_failure(e, "cannot store kafka offset"))?;
        match consumer.store_offsets(&list) {
            Ok(()) => Ok(()),
            Err(KafkaError::StoreOffset(RDKafkaErrorCode::State)) => {
                // Revoked before the rebalance callback ran; its next owner reads
                // the record again.
                debug!(topic = %topic, partition, offset = mark, "kafka partition no longer held");
                Ok(())
            }
            Err(err) => Err(failure::offset_failure(err, "cannot store kafka offset")),
        }
    }
}

impl Acknowledge for KafkaAcker {
    fn ack(self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        let settled = self.settle();
        Box::pin(std::future::ready(settled))
    }

    fn reject(self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        // The caller logs or stores what it rejects; Kafka has nowhere to put it.
        debug!(
            topic = %self.ticket.partition.0,
            partition = self.ticket.partition.1,
            offset = self.ticket.offset,
            "skipped rejected kafka record"
        );
        let settled = self.settle();
        Box::pin(std::future::ready(settled))
    }
}
