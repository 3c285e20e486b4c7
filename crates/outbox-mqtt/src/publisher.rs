//! The MQTT publisher: one connection, many QoS 1 publishes in flight, each
//! resolved by the PUBACK of its own packet id.
//!
//! rumqttc hands a publish to its event loop and assigns the packet id only
//! when it writes the packet, so the connection task pairs them up: publishes
//! are queued in the order they are handed over, the n-th packet written is
//! the n-th queued, and its PUBACK resolves it.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use outbox_core::{Error, Event, Publisher, Result};
use rumqttc::{AsyncClient, EventLoop, Outgoing, Packet, QoS};
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::connection::{self, Backoff, Settings};
use crate::options::{self, redact_url};
use crate::topic::{SourceTemplate, TopicTemplate};
use crate::{MqttOptions, failure};

/// How a publish learns its outcome.
type Waiter = oneshot::Sender<Result<()>>;

/// Publishes outbox events to an MQTT broker, one QoS 1 message per event.
///
/// Each event becomes a message in the CloudEvents MQTT binding's structured
/// content mode, since MQTT 3.1.1 has no headers: the body is the event as one
/// CloudEvents JSON object ([`outbox_file::encode_structured`]), the topic
/// comes from [`MqttOptions::topic_template`], the retain flag is off.
///
/// [`Publisher::publish`] resolves on the PUBACK for the message's packet id.
/// Publishes share one connection and take no lock across an await, so the
/// relay can keep up to [`MqttOptions::max_in_flight`] of them in flight
/// through a shared reference. The session is clean: the broker keeps nothing
/// for the publisher between connections.
///
/// # Errors
///
/// - [`Unavailable`](outbox_core::ErrorKind::Unavailable): not connected (the
///   connection task is reconnecting), the connection lost before the PUBACK,
///   or no PUBACK within the ack timeout. The relay pauses and does not count
///   the attempt. A message whose PUBACK was lost may have been stored; the
///   relay's retry then delivers it twice, with the same CloudEvents `id`.
/// - [`Permanent`](outbox_core::ErrorKind::Permanent): a payload declared JSON
///   that is not, a topic over 65,535 bytes, or a message over
///   [`MqttOptions::max_message_bytes`]. Nothing is sent.
///
/// MQTT 3.1.1 has no negative acknowledgement, so no failure is `Transient`.
/// For the same reason a publish the broker does not accept is still
/// acknowledged: Mosquitto acknowledges and drops a publish its ACL denies,
/// and a message on a topic no subscription matches is dropped after its
/// PUBACK (see the crate documentation).
///
/// [`MqttPublisher::connect`] fails with `Unavailable` when the broker cannot
/// be reached within the connect timeout and with
/// [`Config`](outbox_core::ErrorKind::Config) for a malformed URL, refused
/// credentials or client id, TLS trouble or invalid options.
///
/// After a lost connection the task reconnects by itself, forever, pausing 0.1
/// s at first and up to 5 s; publishes made meanwhile fail at once. A
/// connection that hangs without closing is noticed when a keep-alive ping goes
/// unanswered, and by each publish's ack timeout.
pub struct MqttPublisher {
    client: AsyncClient,
    shared: Arc<Shared>,
    slots: Semaphore,
    topic: TopicTemplate,
    source: SourceTemplate,
    ack_timeout: Duration,
    max_message_bytes: usize,
    url: String,
    client_id: String,
    task: Option<JoinHandle<()>>,
}

/// What `publish` and the connection task share.
struct Shared {
    state: Mutex<State>,
}

struct State {
    connected: bool,
    /// Publishes handed to the client and not yet written, oldest first.
    queued: VecDeque<Waiter>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl MqttPublisher {
    /// Checks `options` and connects to the broker.
    ///
    /// ```no_run
    /// use outbox_mqtt::{MqttOptions, MqttPublisher};
    ///
    /// # async fn run() -> outbox_core::Result<()> {
    /// let publisher = MqttPublisher::connect(MqttOptions::default()).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect(options: MqttOptions) -> Result<MqttPublisher> {
        let url = redact_url(&options.url);
        let topic = TopicTemplate::parse(&options.topic_template)?;
        let source = SourceTemplate::parse(&options.source_template)?;
        if options.ack_timeout.is_zero() {
            return Err(Error::config("mqtt ack timeout must be above zero"));
        }
        if options.max_in_flight == 0 {
            return Err(Error::config("mqtt max_in_flight must be above zero"));
        }
        let keep_alive = options::keep_alive(options.keep_alive)?;
        let client_id = options.client_id.clone().unwrap_or_else(|| {
            let id = uuid::Uuid::now_v7().simple().to_string();
            format!("outbox-{}", &id[id.len() - 16..])
        });
        options::client_id(&client_id)?;
        let addr = options::broker_addr(&options.url)?;

        let in_flight = options.max_in_flight;
        let (client, mut eventloop) = connection::client(&Settings {
            addr: &addr,
            client_id: &client_id,
            keep_alive,
            connect_timeout: options.connect_timeout,
            max_message_bytes: options.max_message_bytes,
            clean_session: true,
            manual_acks: false,
            in_flight,
            // A publish that timed out may leave its request behind in the
            // channel, so it holds more than the in-flight window.
            request_capacity: usize::from(in_flight) * 2,
        });
        connection::first_connect(&mut eventloop, options.connect_timeout, &url).await?;
        info!(url = %url, client_id = %client_id, "mqtt publisher ready");

        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                connected: true,
                queued: VecDeque::new(),
            }),
        });
        let task = tokio::spawn(drive(eventloop, Arc::clone(&shared), url.clone()));
        Ok(MqttPublisher {
            client,
            shared,
            slots: Semaphore::new(usize::from(in_flight)),
            topic,
            source,
            ack_timeout: options.ack_timeout,
            max_message_bytes: options.max_message_bytes,
            url,
            client_id,
            task: Some(task),
        })
    }

    /// The topic `event` is published to, or an
    /// [`ErrorKind::Permanent`](outbox_core::ErrorKind::Permanent) error when it
    /// would be longer than MQTT allows.
    pub fn topic_for(&self, event: &Event) -> Result<String> {
        self.topic.render(event)
    }

    /// The client id this publisher connected with.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// Sends DISCONNECT and waits, at most five seconds, for the connection task
    /// to end. Publishes still awaiting their PUBACK fail as `Unavailable`; a
    /// relay drains its publishes before closing.
    pub async fn close(mut self) {
        let _ = self.client.try_disconnect();
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }

    /// Hands the message to the connection task and waits for its PUBACK.
    async fn send(&self, topic: String, body: Vec<u8>) -> Result<()> {
        let _slot = self.slots.acquire().await.map_err(|_| failure::closed())?;

        let (waiter, outcome) = oneshot::channel();
        {
            let mut state = self.shared.lock();
            if !state.connected {
                return Err(failure::not_connected(&self.url));
            }
            // Queued and handed over under one lock, so that the queue keeps
            // the order in which the connection task reads the requests.
            state.queued.push_back(waiter);
            if let Err(err) = self
                .client
                .try_publish(topic, QoS::AtLeastOnce, false, body)
            {
                state.queued.pop_back();
                return Err(match err {
                    rumqttc::ClientError::TryRequest(_) if self.task_running() => {
                        failure::queue_full()
                    }
                    _ => failure::closed(),
                });
            }
        }

        outcome.await.unwrap_or_else(|_| Err(failure::closed()))
    }

    fn task_running(&self) -> bool {
        self.task.as_ref().is_some_and(|task| !task.is_finished())
    }
}

impl Publisher for MqttPublisher {
    fn name(&self) -> &'static str {
        "mqtt"
    }

    async fn publish(&self, event: &Event) -> Result<()> {
        let topic = self.topic.render(event)?;
        let source = self.source.render(event);
        let body = outbox_file::encode_structured(event, &source)?;

        // The PUBLISH packet: fixed header (at most 5 bytes), topic with its
        // length, packet id, body.
        let size = 5 + 2 + topic.len() + 2 + body.len();
        if size > self.max_message_bytes {
            return Err(failure::too_large(size, self.max_message_bytes));
        }

        match tokio::time::timeout(self.ack_timeout, self.send(topic, body)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(failure::ack_timeout(self.ack_timeout)),
        }
    }
}

impl Drop for MqttPublisher {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl fmt::Debug for MqttPublisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MqttPublisher")
            .field("url", &self.url)
            .field("client_id", &self.client_id)
            .field("topic", &self.topic)
            .field("source", &self.source)
            .field("ack_timeout", &self.ack_timeout)
            .finish_non_exhaustive()
    }
}

/// The connection task: polls the event loop, pairs written publishes with
/// their waiters and resolves them on PUBACK, and reconnects after a loss.
async fn drive(mut eventloop: EventLoop, shared: Arc<Shared>, url: String) {
    let mut written: HashMap<u16, Waiter> = HashMap::new();
    let mut backoff = Backoff::new();

    loop {
        match eventloop.poll().await {
            Ok(rumqttc::Event::Outgoing(Outgoing::Publish(pkid))) => {
                if let Some(waiter) = shared.lock().queued.pop_front() {
                    written.insert(pkid, waiter);
                }
            }
            Ok(rumqttc::Event::Incoming(Packet::PubAck(ack))) => match written.remove(&ack.pkid) {
                Some(waiter) => {
                    let _ = waiter.send(Ok(()));
                }
                None => debug!(pkid = ack.pkid, "ignored puback of no waiting publish"),
            },
            Ok(rumqttc::Event::Incoming(Packet::ConnAck(_))) => {
                shared.lock().connected = true;
                backoff.reset();
                info!(url = %url, "reconnected to mqtt");
            }
            Ok(rumqttc::Event::Outgoing(Outgoing::Disconnect)) => {
                fail_all(&shared, &mut written, &mut eventloop, failure::closed);
                connection::await_close(&mut eventloop).await;
                info!(url = %url, "closed mqtt publisher connection");
                return;
            }
            Ok(_) => {}
            Err(err) => {
                let was_connected = shared.lock().connected;
                fail_all(&shared, &mut written, &mut eventloop, || {
                    failure::connection_lost(&url)
                });
                let pause = backoff.next();
                if was_connected {
                    warn!(url = %url, error = %err, "lost connection to mqtt");
                } else {
                    debug!(
                        url = %url,
                        error = %err,
                        pause_ms = pause.as_millis(),
                        "mqtt reconnect failed"
                    );
                }
                tokio::time::sleep(pause).await;
            }
        }
    }
}

/// Marks the connection down and fails every publish not yet acknowledged,
/// leaving nothing for rumqttc to send again.
fn fail_all(
    shared: &Shared,
    written: &mut HashMap<u16, Waiter>,
    eventloop: &mut EventLoop,
    error: impl Fn() -> Error,
) {
    // Under the lock no publish can be handed over, so the queue and the
    // request channel are emptied together.
    let queued = {
        let mut state = shared.lock();
        state.connected = false;
        connection::forget_lost_connection(eventloop);
        std::mem::take(&mut state.queued)
    };
    for waiter in queued.into_iter().chain(written.drain().map(|(_, w)| w)) {
        let _ = waiter.send(Err(error()));
    }
}
