//! The receiving side: an HTTP server whose verified requests become
//! deliveries, each answered only when it is settled.
//!
//! [`WebhookReceiver`] implements [`Consumer`]. Its server verifies the
//! signature of every POST, decodes the event and hands a [`Delivery`] over;
//! the request waits until the delivery is acknowledged, rejected or dropped,
//! and the answer tells the sender what to do.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::routing::post;
use http::{HeaderMap, StatusCode};
use outbox_core::{Acknowledge, BoxFuture, Consumer, Delivery, Error, ErrorKind, Result};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::signature::{WebhookSecret, verify};
use crate::{ReceiverOptions, binding};

/// Takes in webhook requests and hands them over as deliveries, in the order
/// they arrive.
///
/// Every POST, on any path, is checked against the shared secret and
/// [`ReceiverOptions::tolerance`], then decoded from the CloudEvents HTTP
/// binding. The request stays open until its delivery is settled, and the
/// answer follows from how:
///
/// | delivery | answer | the outbox publisher |
/// | --- | --- | --- |
/// | acknowledged | 204 No Content | marks the event done |
/// | rejected | 422 Unprocessable Content | dead-letters the event |
/// | malformed, rejected | 400 Bad Request | dead-letters the event |
/// | dropped unsettled, or the receiver dropped | 503 Service Unavailable | retries it |
/// | none: signature missing, wrong or stale | 401 Unauthorized | dead-letters the event |
/// | none: body over the limit | 413 Content Too Large | dead-letters the event |
///
/// A stale signature is one outside [`ReceiverOptions::tolerance`]; the limit is
/// [`ReceiverOptions::max_body_bytes`].
///
/// A request whose `ce-` attributes cannot be decoded, or whose `ce-id` differs
/// from the signed `webhook-id`, becomes a [`Delivery::malformed`] of kind
/// [`ErrorKind::Permanent`]; acknowledging one answers 204 like any other.
///
/// The event's headers are the request's headers less the CloudEvents ones and
/// [`crate::RESERVED_HEADERS`], names in lower case; headers that a proxy on the
/// way adds (`via`, `x-forwarded-for`) appear among them.
///
/// Up to [`ReceiverOptions::max_in_flight`] deliveries may be unsettled at
/// once; further requests wait for a slot. Events of one key arrive one at a
/// time, since the outbox publisher sends a key's next event only after the
/// answer to the previous one, so handing deliveries over in arrival order keeps
/// each key in order.
///
/// Settling reaches the sender only while it still waits: a sender that gave up
/// (its timeout) sends the event again, so a handler must be idempotent by
/// event id, as the inbox is. `ack` and `reject` fail with
/// [`ErrorKind::Transient`] when the request is already gone; their `Ok` means
/// the answer was handed to the server, not that the sender read it.
///
/// Dropping the receiver stops it taking connections; requests still waiting,
/// and requests arriving on connections already open, are answered 503, so their
/// senders retry. There is no graceful drain.
pub struct WebhookReceiver {
    deliveries: mpsc::Receiver<Delivery>,
    local_addr: SocketAddr,
    server: JoinHandle<()>,
}

/// What the request handlers share.
struct Shared {
    secret: WebhookSecret,
    tolerance: Duration,
    slots: Arc<Semaphore>,
    deliveries: mpsc::Sender<Delivery>,
}

impl WebhookReceiver {
    /// Checks `options`, listens on [`ReceiverOptions::listen`] and starts the
    /// server on the current tokio runtime.
    ///
    /// Fails with [`ErrorKind::Config`] without a secret, with a zero
    /// `max_in_flight`, or when the address cannot be listened on.
    ///
    /// ```no_run
    /// use outbox_core::Consumer;
    /// use outbox_webhook::{ReceiverOptions, WebhookReceiver, WebhookSecret};
    ///
    /// # async fn run() -> outbox_core::Result<()> {
    /// let mut receiver = WebhookReceiver::bind(ReceiverOptions {
    ///     listen: "0.0.0.0:9000".parse().unwrap(),
    ///     secret: Some(WebhookSecret::parse("whsec_c2VjcmV0LWtleS1vZi10aGUtdGVzdA==")?),
    ///     ..ReceiverOptions::default()
    /// })
    /// .await?;
    /// while let Some(delivery) = receiver.next().await? {
    ///     match delivery.event() {
    ///         Ok(event) => println!("{} {}", event.event_type, event.key),
    ///         Err(_) => {
    ///             delivery.reject().await?;
    ///             continue;
    ///         }
    ///     }
    ///     delivery.ack().await?;
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn bind(options: ReceiverOptions) -> Result<WebhookReceiver> {
        let Some(secret) = options.secret else {
            return Err(Error::config("the webhook receiver needs a secret"));
        };
        if options.max_in_flight == 0 {
            return Err(Error::config("webhook max_in_flight must be above zero"));
        }

        let listener = tokio::net::TcpListener::bind(options.listen)
            .await
            .map_err(|e| {
                Error::config(format!("cannot listen on {}", options.listen)).with_source(e)
            })?;
        let local_addr = listener.local_addr().map_err(|e| {
            Error::config(format!("cannot listen on {}", options.listen)).with_source(e)
        })?;

        let (sender, deliveries) = mpsc::channel(options.max_in_flight);
        let shared = Arc::new(Shared {
            secret,
            tolerance: options.tolerance,
            slots: Arc::new(Semaphore::new(options.max_in_flight)),
            deliveries: sender,
        });
        let router = Router::new()
            .route("/", post(receive))
            .route("/{*path}", post(receive))
            .layer(DefaultBodyLimit::max(options.max_body_bytes))
            .with_state(shared);

        let server = tokio::spawn(async move {
            if let Err(err) = axum::serve(listener, router).await {
                warn!(addr = %local_addr, error = %err, "webhook receiver stopped");
            }
        });
        info!(addr = %local_addr, "webhook receiver listening");
        Ok(WebhookReceiver {
            deliveries,
            local_addr,
            server,
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

impl Consumer for WebhookReceiver {
    fn name(&self) -> &'static str {
        "webhook"
    }

    async fn next(&mut self) -> Result<Option<Delivery>> {
        Ok(self.deliveries.recv().await)
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl std::fmt::Debug for WebhookReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookReceiver")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

/// Handles one POST: verify, decode, hand over, wait for the settlement.
async fn receive(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    if let Err(err) = verify(&shared.secret, &headers, &body, shared.tolerance) {
        debug!(error = %err, "refused a webhook request");
        return StatusCode::UNAUTHORIZED;
    }

    let Ok(slot) = Arc::clone(&shared.slots).acquire_owned().await else {
        return StatusCode::SERVICE_UNAVAILABLE;
    };
    let event = binding::received(&headers, body.to_vec());
    let (answer, answered) = oneshot::channel();
    let acker = Answer {
        answer,
        rejected: if event.is_ok() {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::BAD_REQUEST
        },
        _slot: slot,
    };
    if shared
        .deliveries
        .send(Delivery::decoded(event, acker))
        .await
        .is_err()
    {
        return StatusCode::SERVICE_UNAVAILABLE;
    }

    answered.await.unwrap_or(StatusCode::SERVICE_UNAVAILABLE)
}

/// The open request behind a delivery; dropping it answers 503.
struct Answer {
    answer: oneshot::Sender<StatusCode>,
    rejected: StatusCode,
    _slot: OwnedSemaphorePermit,
}

impl Answer {
    fn send(self, status: StatusCode) -> Result<()> {
        self.answer.send(status).map_err(|_| {
            Error::new(
                ErrorKind::Transient,
                "the webhook sender stopped waiting for the answer",
            )
        })
    }
}

impl Acknowledge for Answer {
    fn ack(self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move { self.send(StatusCode::NO_CONTENT) })
    }

    fn reject(self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        let status = self.rejected;
        Box::pin(async move { self.send(status) })
    }
}
