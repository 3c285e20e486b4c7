//! The consumer side of the NATS binding: a durable JetStream pull consumer.
//!
//! [`NatsConsumer`] creates (or reuses) a durable consumer with explicit acks on
//! a stream and hands each message over as a [`Delivery`]. It reads the
//! CloudEvents binary headers that [`crate::NatsPublisher`] writes; a message
//! without them is delivered as malformed, and rejecting it terminates it.

use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use async_nats::jetstream::{self, AckKind};
use futures_util::StreamExt;
use outbox_core::{
    Acknowledge, BoxFuture, Consumer, Delivery, Error, ErrorKind, Headers, ReceivedEvent, Result,
};

use crate::binding::{CONTENT_TYPE, MSG_ID};
use crate::options::redact_url;
use crate::{DEFAULT_URL, failure};

/// Where a [`NatsConsumer`] reads and how many messages it may hold unacked.
#[derive(Debug, Clone)]
pub struct NatsConsumerOptions {
    /// The server or servers, as for the publisher.
    pub url: String,
    /// The JetStream stream to read.
    pub stream: String,
    /// The durable consumer's name: consumers of one name share the work and the
    /// position, so use one name per consuming service.
    pub durable: String,
    /// Only subjects matching this filter are read; `None` reads the stream.
    pub filter_subject: Option<String>,
    /// How long JetStream waits for an ack before delivering a message again.
    /// It should exceed the time a handler may take, retries included; a message
    /// delivered again meanwhile is recognised by the inbox as a duplicate.
    pub ack_wait: Duration,
    /// How many messages may be delivered and not yet acked; the inbox runner's
    /// `max_unsettled` should not exceed it.
    pub max_ack_pending: i64,
    /// How long connecting may take.
    pub connect_timeout: Duration,
}

impl Default for NatsConsumerOptions {
    fn default() -> Self {
        NatsConsumerOptions {
            url: DEFAULT_URL.to_owned(),
            stream: String::new(),
            durable: String::new(),
            filter_subject: None,
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 1_000,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// A durable JetStream pull consumer that yields [`Delivery`]s.
///
/// JetStream delivers a stream's messages in order, and the inbox runner holds a
/// key's later messages until its earlier one is settled, so while a consumer
/// runs a key's order is kept.
///
/// When a consumer of the same durable name died with messages unacknowledged,
/// JetStream would deliver those again only once their ack wait has passed,
/// behind the messages it had not delivered yet, and a key's events would be
/// handled out of order. `connect` therefore recreates such a durable consumer at
/// its ack floor: everything after the first unacknowledged message comes again
/// in stream order, and the inbox recognises what was applied already.
///
/// Known limit: that reset assumes one process per durable name, which per-key
/// order needs anyway (two processes pulling from one durable consumer handle a
/// key's events concurrently). A second process connecting while the first still
/// runs resets the first one's consumer too.
///
/// ```no_run
/// use outbox_core::Consumer;
/// use outbox_nats::{NatsConsumer, NatsConsumerOptions};
///
/// # async fn run() -> outbox_core::Result<()> {
/// let mut consumer = NatsConsumer::connect(NatsConsumerOptions {
///     stream: "ORDERS".into(),
///     durable: "shipping".into(),
///     ..NatsConsumerOptions::default()
/// })
/// .await?;
/// while let Some(delivery) = consumer.next().await? {
///     // handle it, then:
///     delivery.ack().await?;
/// }
/// # Ok(())
/// # }
/// ```
pub struct NatsConsumer {
    messages: pull::Stream,
}

impl NatsConsumer {
    /// Connects, creates the durable consumer if it does not exist (or resets it
    /// at its ack floor, see above), and starts pulling.
    ///
    /// An empty stream or durable name is [`ErrorKind::Config`]; a server that
    /// cannot be reached is [`ErrorKind::Unavailable`]; a stream that does not
    /// exist is [`ErrorKind::Config`].
    pub async fn connect(options: NatsConsumerOptions) -> Result<NatsConsumer> {
        if options.stream.is_empty() || options.durable.is_empty() {
            return Err(Error::config(
                "nats consumer needs a stream and a durable name",
            ));
        }
        let url = redact_url(&options.url);
        let servers = crate::publisher::servers(&options.url, &url)?;
        let connect = async_nats::ConnectOptions::new()
            .connection_timeout(options.connect_timeout)
            .connect(servers);
        let client = match tokio::time::timeout(options.connect_timeout, connect).await {
            Err(_) => return Err(failure::connect_timeout(&url, options.connect_timeout)),
            Ok(Err(err)) => return Err(failure::connect_failure(err, &url)),
            Ok(Ok(client)) => client,
        };

        let context = jetstream::new(client);
        let stream = context.get_stream(&options.stream).await.map_err(|e| {
            Error::config(format!("cannot open jetstream stream {:?}", options.stream))
                .with_source(e)
        })?;
        let start = resume_point(&stream, &options.durable).await?;
        let config = pull::Config {
            durable_name: Some(options.durable.clone()),
            deliver_policy: match start {
                Some(start_sequence) => DeliverPolicy::ByStartSequence { start_sequence },
                None => DeliverPolicy::All,
            },
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: options.ack_wait,
            max_ack_pending: options.max_ack_pending,
            filter_subject: options.filter_subject.clone().unwrap_or_default(),
            ..pull::Config::default()
        };
        let consumer: jetstream::consumer::PullConsumer = stream
            .get_or_create_consumer(&options.durable, config)
            .await
            .map_err(|e| {
                Error::new(
                    ErrorKind::Unavailable,
                    format!("cannot create jetstream consumer {:?}", options.durable),
                )
                .with_source(e)
            })?;
        let messages = consumer.messages().await.map_err(|e| {
            Error::new(ErrorKind::Unavailable, "cannot pull from jetstream").with_source(e)
        })?;

        tracing::info!(
            url = %url,
            stream = %options.stream,
            durable = %options.durable,
            "nats consumer ready"
        );
        Ok(NatsConsumer { messages })
    }
}

impl Consumer for NatsConsumer {
    fn name(&self) -> &'static str {
        "nats"
    }

    async fn next(&mut self) -> Result<Option<Delivery>> {
        let Some(message) = self.messages.next().await else {
            return Ok(None);
        };
        let message = message.map_err(|e| {
            Error::new(ErrorKind::Unavailable, "pulling from jetstream failed").with_source(e)
        })?;

        let event = decode(&message);
        Ok(Some(Delivery::decoded(event, NatsAck(message))))
    }
}

/// Where a durable consumer left with unacknowledged messages must start again.
///
/// JetStream would deliver those messages again only after their ack wait, behind
/// the ones not yet delivered, which breaks a key's order. Instead the consumer is
/// recreated at its ack floor, the first message not acknowledged: everything
/// after it comes again in stream order, and the inbox skips what it had applied.
/// Returns `None` when the consumer does not exist or has nothing unacknowledged.
async fn resume_point(stream: &jetstream::stream::Stream, durable: &str) -> Result<Option<u64>> {
    let info = match stream.consumer_info(durable).await {
        Ok(info) => info,
        Err(_) => return Ok(None),
    };
    if info.num_ack_pending == 0 {
        return Ok(None);
    }

    let start = info.ack_floor.stream_sequence + 1;
    stream.delete_consumer(durable).await.map_err(|e| {
        Error::new(
            ErrorKind::Unavailable,
            format!("cannot reset jetstream consumer {durable:?}"),
        )
        .with_source(e)
    })?;
    tracing::info!(
        durable,
        start_sequence = start,
        unacknowledged = info.num_ack_pending,
        "resuming nats consumer at its ack floor"
    );
    Ok(Some(start))
}

/// Reads the CloudEvents binary headers and the body of a JetStream message.
fn decode(message: &jetstream::Message) -> Result<ReceivedEvent> {
    let headers = message.headers.as_ref();
    let header = |name: &str| -> Option<String> {
        headers
            .and_then(|h| h.get(name))
            .map(|v| v.as_str().to_owned())
    };
    let mut own = Headers::new();
    if let Some(map) = headers {
        for (name, values) in map.iter() {
            let name: &str = name.as_ref();
            let binding = name.len() > 3 && name[..3].eq_ignore_ascii_case("ce-");
            if binding
                || name.eq_ignore_ascii_case(CONTENT_TYPE)
                || name.eq_ignore_ascii_case(MSG_ID)
            {
                continue;
            }
            if let Some(value) = values.first() {
                own.insert(name.to_owned(), value.as_str().to_owned());
            }
        }
    }

    ReceivedEvent::from_binary(
        |attribute| {
            if attribute == "datacontenttype" {
                header(CONTENT_TYPE)
            } else {
                header(&format!("ce-{attribute}"))
            }
        },
        message.payload.to_vec(),
        own,
    )
}

/// Settles one JetStream message: an ack, or a termination when rejected.
struct NatsAck(jetstream::Message);

impl Acknowledge for NatsAck {
    fn ack(self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move {
            self.0.ack().await.map_err(|e| {
                Error::new(ErrorKind::Unavailable, "jetstream ack failed").with_source(e)
            })
        })
    }

    fn reject(self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move {
            self.0.ack_with(AckKind::Term).await.map_err(|e| {
                Error::new(ErrorKind::Unavailable, "jetstream termination failed").with_source(e)
            })
        })
    }
}
