//! What the publisher and the consumer share about their connection: the
//! client settings built from the options, the first connect, and the backoff
//! between reconnects.
//!
//! Each side runs one task that polls rumqttc's event loop, which is what
//! sends, receives and reconnects; the first connect happens before that task
//! starts, so that its failure can be reported to the caller.

use std::time::Duration;

use outbox_core::Result;
use rumqttc::{AsyncClient, Event, EventLoop, Packet, Transport};

use crate::failure;
use crate::options::BrokerAddr;

/// The first pause after a lost connection, doubled after every failed attempt.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// The longest pause between two connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The rumqttc settings shared by both sides.
pub(crate) struct Settings<'a> {
    pub(crate) addr: &'a BrokerAddr,
    pub(crate) client_id: &'a str,
    pub(crate) keep_alive: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) max_message_bytes: usize,
    pub(crate) clean_session: bool,
    pub(crate) manual_acks: bool,
    pub(crate) in_flight: u16,
    pub(crate) request_capacity: usize,
}

/// Builds the client and its event loop; nothing is connected yet.
pub(crate) fn client(settings: &Settings<'_>) -> (AsyncClient, EventLoop) {
    let addr = settings.addr;
    let mut options = rumqttc::MqttOptions::new(settings.client_id, &addr.host, addr.port);
    options
        .set_keep_alive(settings.keep_alive)
        .set_clean_session(settings.clean_session)
        .set_manual_acks(settings.manual_acks)
        .set_inflight(settings.in_flight)
        // Room for the fixed header and packet id around the largest message.
        .set_max_packet_size(
            settings.max_message_bytes + 16,
            settings.max_message_bytes + 16,
        );
    if let Some((user, password)) = &addr.credentials {
        options.set_credentials(user, password);
    }
    options.set_transport(transport(addr.tls));

    let (client, mut eventloop) = AsyncClient::new(options, settings.request_capacity);
    let mut network = eventloop.network_options();
    network.set_connection_timeout(settings.connect_timeout.as_secs().max(1));
    // Without it, Nagle's algorithm holds small packets back for the peer's
    // delayed ACK: about 40 ms per PUBACK round trip on Linux.
    network.set_tcp_nodelay(true);
    eventloop.set_network_options(network);
    (client, eventloop)
}

#[cfg(feature = "tls")]
fn transport(tls: bool) -> Transport {
    if tls {
        Transport::tls_with_default_config()
    } else {
        Transport::tcp()
    }
}

#[cfg(not(feature = "tls"))]
fn transport(tls: bool) -> Transport {
    debug_assert!(!tls, "tls urls are refused without the feature");
    Transport::tcp()
}

/// Connects for the first time and returns the CONNACK's `session_present`.
///
/// Fails with `Config` when the broker refuses the client (credentials, client
/// id, protocol) and with `Unavailable` when it cannot be reached in time.
pub(crate) async fn first_connect(
    eventloop: &mut EventLoop,
    timeout: Duration,
    url: &str,
) -> Result<bool> {
    match tokio::time::timeout(timeout, eventloop.poll()).await {
        Err(_) => Err(failure::connect_timeout(url, timeout)),
        Ok(Err(err)) => Err(failure::connect_failure(err, url)),
        Ok(Ok(Event::Incoming(Packet::ConnAck(connack)))) => Ok(connack.session_present),
        Ok(Ok(_)) => unreachable!("an event loop's first event is its connack"),
    }
}

/// After DISCONNECT went out, waits until the broker closes the connection.
///
/// The broker closes it only after reading the DISCONNECT, so everything sent
/// before, PUBACKs included, has been read too. Closing from this side at once
/// would race with the next connection of the same client id: Mosquitto may
/// take the session over before reading what the old connection still held.
pub(crate) async fn await_close(eventloop: &mut EventLoop) {
    while eventloop.poll().await.is_ok() {}
}

/// The pause before the next connection attempt.
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    pub(crate) fn new() -> Self {
        Backoff {
            next: FIRST_BACKOFF,
        }
    }

    /// The pause to take now; the one after it is twice as long, up to the cap.
    pub(crate) fn next(&mut self) -> Duration {
        let pause = self.next;
        self.next = (self.next * 2).min(MAX_BACKOFF);
        pause
    }

    /// Starts over after a successful connection.
    pub(crate) fn reset(&mut self) {
        self.next = FIRST_BACKOFF;
    }
}

/// Forgets everything rumqttc kept from a lost connection: requests not yet
/// sent, publishes it would send again, and events read but not yet yielded.
///
/// Both sides settle these themselves (the publisher fails the waiting
/// publishes, the consumer's broker redelivers), so a leftover would only be
/// sent or reported a second time, out of step with the side's own records.
pub(crate) fn forget_lost_connection(eventloop: &mut EventLoop) {
    eventloop.clean();
    eventloop.pending.clear();
    eventloop.state.events.clear();
    eventloop.state.collision = None;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets() {
        let mut backoff = Backoff::new();
        let pauses: Vec<u128> = (0..8).map(|_| backoff.next().as_millis()).collect();
        assert_eq!(pauses, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);

        backoff.reset();
        assert_eq!(backoff.next(), FIRST_BACKOFF);
    }
}
