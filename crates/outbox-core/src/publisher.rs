//! The broker side of the relay: one trait that every destination implements.

use std::future::Future;

use crate::{Event, Result};

/// Sends events to a broker and reports the broker's acknowledgement.
///
/// `publish` resolves only when the broker has confirmed the event durably by its
/// own standard (a JetStream PubAck, a RabbitMQ confirm, a Kafka `acks=all`
/// response). The relay calls it for many events of different keys at once and
/// marks an event done only after its future resolved with `Ok`.
///
/// An error's kind decides what happens to the event: a retryable kind
/// ([`crate::ErrorKind::Unavailable`], [`crate::ErrorKind::Transient`]) is tried
/// again with backoff; [`crate::ErrorKind::Permanent`] sends it to the dead
/// letters at once.
///
/// Writing one for a broker the project does not ship:
///
/// ```
/// use std::sync::Mutex;
/// use outbox_core::{Error, ErrorKind, Event, Publisher, Result};
///
/// /// Keeps published events in memory, refusing payloads over 64 KiB.
/// struct MemoryPublisher {
///     sent: Mutex<Vec<Event>>,
/// }
///
/// impl Publisher for MemoryPublisher {
///     fn name(&self) -> &'static str {
///         "memory"
///     }
///
///     async fn publish(&self, event: &Event) -> Result<()> {
///         if event.payload.as_bytes().len() > 64 * 1024 {
///             return Err(Error::new(ErrorKind::Permanent, "payload too large"));
///         }
///         self.sent.lock().unwrap().push(event.clone());
///         Ok(())
///     }
/// }
/// ```
pub trait Publisher: Send + Sync {
    /// A short name for logs and metrics, such as `nats`.
    fn name(&self) -> &'static str;

    /// Publishes one event and waits for the broker's acknowledgement.
    fn publish(&self, event: &Event) -> impl Future<Output = Result<()>> + Send;
}
