//! The settings of the MQTT publisher and consumer: where the broker is, how
//! topics and sources are named, and how long to wait for the broker.
//!
//! Every field has a default that works against a local Mosquitto, so callers
//! set only what differs. URLs are shown with their password masked wherever
//! this crate prints them.

use std::fmt;
use std::time::Duration;

use outbox_core::{Error, Result};

/// The broker the publisher and the consumer connect to unless told otherwise.
pub const DEFAULT_URL: &str = "mqtt://127.0.0.1:1883";

/// The default topic rule: `outbox/` followed by the outbox stream, one topic
/// per stream (see the crate documentation on ordering).
pub const DEFAULT_TOPIC_TEMPLATE: &str = "outbox/{stream}";

pub use outbox_core::DEFAULT_SOURCE_TEMPLATE;

/// The default subscription of the consumer: every topic under `outbox/`.
pub const DEFAULT_TOPIC_FILTER: &str = "outbox/#";

/// How the publisher reaches the broker and names what it publishes.
///
/// ```
/// use std::time::Duration;
/// use outbox_mqtt::MqttOptions;
///
/// let options = MqttOptions {
///     url: "mqtt://relay:secret@mqtt.internal:1883".into(),
///     topic_template: "shop/{stream}/{type}".into(),
///     ack_timeout: Duration::from_secs(2),
///     ..MqttOptions::default()
/// };
/// assert!(!format!("{options:?}").contains("secret"));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct MqttOptions {
    /// The broker, as `mqtt://[user[:password]@]host[:port]` (also `tcp://`;
    /// a bare `host:port` means `mqtt://`), port 1883 by default. `mqtts://`
    /// (or `ssl://`, port 8883 by default) needs this crate's `tls` feature.
    /// Default: [`DEFAULT_URL`].
    pub url: String,
    /// The topic of each event, a [`crate::TopicTemplate`] over `{stream}`,
    /// `{type}` and `{key}`. Default: [`DEFAULT_TOPIC_TEMPLATE`].
    pub topic_template: String,
    /// The CloudEvents `source` of each event, a template over `{stream}` and
    /// `{type}` (not escaped). Default: [`DEFAULT_SOURCE_TEMPLATE`].
    pub source_template: String,
    /// The MQTT client id. `None` picks `outbox-` and 16 random hex digits in
    /// [`crate::MqttPublisher::connect`], kept across reconnects, so that two
    /// relays never share an id: the broker closes the older of two
    /// connections with the same id. Default: `None`.
    pub client_id: Option<String>,
    /// How long one publish waits for its PUBACK, counted from the call, so
    /// the wait for a free in-flight slot is included. Default: 5 seconds.
    pub ack_timeout: Duration,
    /// How long connecting may take. Default: 5 seconds.
    pub connect_timeout: Duration,
    /// The MQTT keep-alive: a ping goes out this often, and a connection whose
    /// ping is unanswered by the next one is dropped and reopened. Whole
    /// seconds, at least 5. Default: 15 seconds.
    pub keep_alive: Duration,
    /// How many publishes may await their PUBACK at once (the client's
    /// in-flight window, at most 65,535). More wait for a slot. Default: 256.
    pub max_in_flight: u16,
    /// The largest message, topic and body included, sent to the broker; a
    /// larger one fails as permanent without being sent. It must not exceed
    /// the broker's own limit (Mosquitto's `max_packet_size`, unlimited by
    /// default), which closes the connection on a larger packet. Default: 2 MiB,
    /// room for a 1 MiB binary payload in base64.
    pub max_message_bytes: usize,
}

impl Default for MqttOptions {
    fn default() -> Self {
        MqttOptions {
            url: DEFAULT_URL.to_owned(),
            topic_template: DEFAULT_TOPIC_TEMPLATE.to_owned(),
            source_template: DEFAULT_SOURCE_TEMPLATE.to_owned(),
            client_id: None,
            ack_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            keep_alive: Duration::from_secs(15),
            max_in_flight: 256,
            max_message_bytes: 2 * 1024 * 1024,
        }
    }
}

impl fmt::Debug for MqttOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MqttOptions")
            .field("url", &redact_url(&self.url))
            .field("topic_template", &self.topic_template)
            .field("source_template", &self.source_template)
            .field("client_id", &self.client_id)
            .field("ack_timeout", &self.ack_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("keep_alive", &self.keep_alive)
            .field("max_in_flight", &self.max_in_flight)
            .field("max_message_bytes", &self.max_message_bytes)
            .finish()
    }
}

/// How the consumer reaches the broker and what it subscribes to.
///
/// The session lives in the broker under [`MqttConsumerOptions::client_id`]:
/// every consumer that should pick up where the last one stopped must use the
/// same id, and only one may be connected with it at a time.
#[derive(Clone, PartialEq, Eq)]
pub struct MqttConsumerOptions {
    /// The broker, as for [`MqttOptions::url`]. Default: [`DEFAULT_URL`].
    pub url: String,
    /// The client id that names the broker's session for this consumer.
    /// Default: `outbox-consumer`.
    pub client_id: String,
    /// The topic filter subscribed to with QoS 1; `+` and `#` wildcards are
    /// allowed. Default: [`DEFAULT_TOPIC_FILTER`].
    pub topic_filter: String,
    /// How long connecting and subscribing may take. Default: 5 seconds.
    pub connect_timeout: Duration,
    /// The MQTT keep-alive, as for [`MqttOptions::keep_alive`]. Default: 15
    /// seconds.
    pub keep_alive: Duration,
    /// The largest message accepted from the broker; a larger one closes the
    /// connection, so it must not be below what the publisher sends. Default:
    /// 2 MiB, as [`MqttOptions::max_message_bytes`].
    pub max_message_bytes: usize,
}

impl Default for MqttConsumerOptions {
    fn default() -> Self {
        MqttConsumerOptions {
            url: DEFAULT_URL.to_owned(),
            client_id: "outbox-consumer".to_owned(),
            topic_filter: DEFAULT_TOPIC_FILTER.to_owned(),
            connect_timeout: Duration::from_secs(5),
            keep_alive: Duration::from_secs(15),
            max_message_bytes: 2 * 1024 * 1024,
        }
    }
}

impl fmt::Debug for MqttConsumerOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MqttConsumerOptions")
            .field("url", &redact_url(&self.url))
            .field("client_id", &self.client_id)
            .field("topic_filter", &self.topic_filter)
            .field("connect_timeout", &self.connect_timeout)
            .field("keep_alive", &self.keep_alive)
            .field("max_message_bytes", &self.max_message_bytes)
            .finish()
    }
}

/// A broker address taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BrokerAddr {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) tls: bool,
    pub(crate) credentials: Option<(String, String)>,
}

/// Parses a broker URL; `shown` is its redacted form, for errors.
pub(crate) fn broker_addr(url: &str) -> Result<BrokerAddr> {
    let shown = redact_url(url);
    let invalid = || Error::config(format!("invalid mqtt url {shown}"));
    let text = if url.contains("://") {
        url.to_owned()
    } else {
        format!("mqtt://{url}")
    };
    let parsed = url::Url::parse(&text).map_err(|e| invalid().with_source(e))?;

    let tls = match parsed.scheme() {
        "mqtt" | "tcp" => false,
        "mqtts" | "ssl" => true,
        other => {
            return Err(Error::config(format!(
                "mqtt url {shown} has the scheme {other:?}: expected mqtt, tcp, mqtts or ssl"
            )));
        }
    };
    if tls && !cfg!(feature = "tls") {
        return Err(Error::config(format!(
            "mqtt url {shown} asks for tls, which needs the `tls` feature of outbox-mqtt"
        )));
    }
    if !matches!(parsed.path(), "" | "/") || parsed.query().is_some() {
        return Err(Error::config(format!(
            "mqtt url {shown} has a path or query, which mqtt does not use"
        )));
    }
    let host = match parsed.host_str() {
        // An IPv6 address keeps its brackets: rumqttc appends `:port` to it.
        Some(host) if !host.is_empty() => host.to_owned(),
        _ => return Err(invalid()),
    };
    let port = parsed.port().unwrap_or(if tls { 8883 } else { 1883 });

    let credentials = if parsed.username().is_empty() {
        None
    } else {
        let user = percent_decode(parsed.username()).ok_or_else(invalid)?;
        let password = percent_decode(parsed.password().unwrap_or("")).ok_or_else(invalid)?;
        Some((user, password))
    };
    Ok(BrokerAddr {
        host,
        port,
        tls,
        credentials,
    })
}

/// Decodes `%XX` escapes, or `None` when the result is not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// `url` with the password of its credentials replaced by `***`.
pub(crate) fn redact_url(url: &str) -> String {
    let authority_start = url.find("://").map_or(0, |i| i + 3);
    let authority_end = url[authority_start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| authority_start + i);
    let authority = &url[authority_start..authority_end];

    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let Some((user, _)) = authority[..at].split_once(':') else {
        return url.to_owned();
    };
    format!(
        "{}{user}:***{}",
        &url[..authority_start],
        &url[authority_start + at..]
    )
}

/// Checks a keep-alive setting and returns it in whole seconds.
pub(crate) fn keep_alive(keep_alive: Duration) -> Result<Duration> {
    if keep_alive.as_secs() < 5 || keep_alive.as_secs() > u64::from(u16::MAX) {
        return Err(Error::config(format!(
            "mqtt keep-alive of {keep_alive:?} is outside 5 s to 65,535 s"
        )));
    }
    Ok(Duration::from_secs(keep_alive.as_secs()))
}

/// Checks a client id: MQTT 3.1.1 allows up to 65,535 bytes of UTF-8 without
/// NUL; brokers may refuse long or unusual ids at connect time.
pub(crate) fn client_id(id: &str) -> Result<()> {
    if id.is_empty() || id.len() > usize::from(u16::MAX) || id.contains('\0') {
        return Err(Error::config(format!(
            "mqtt client id {id:?} is empty, too long or contains NUL"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use outbox_core::ErrorKind;

    #[test]
    fn urls_are_taken_apart() {
        let addr = broker_addr("mqtt://127.0.0.1:1883").unwrap();
        assert_eq!(
            (addr.host.as_str(), addr.port, addr.tls),
            ("127.0.0.1", 1883, false)
        );
        assert_eq!(addr.credentials, None);

        let addr = broker_addr("broker.internal").unwrap();
        assert_eq!((addr.host.as_str(), addr.port), ("broker.internal", 1883));

        let addr = broker_addr("tcp://relay:p%40ss@[::1]:2883/").unwrap();
        assert_eq!((addr.host.as_str(), addr.port), ("[::1]", 2883));
        assert_eq!(
            addr.credentials,
            Some(("relay".to_owned(), "p@ss".to_owned()))
        );

        let addr = broker_addr("mqtt://relay@h").unwrap();
        assert_eq!(addr.credentials, Some(("relay".to_owned(), String::new())));
    }

    #[test]
    fn urls_that_cannot_work_are_configuration_errors() {
        let cases = [
            "http://h:1883",
            "mqtt://h:1883/topic",
            "mqtt://h:1883?x=1",
            "mqtt://:1883",
            "mqtt://h:99999",
            "mqtt://relay:s3cret@h:1883/x",
        ];
        for url in cases {
            let err = broker_addr(url).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{url}");
            assert!(!err.chain().contains("s3cret"), "{}", err.chain());
        }
    }

    #[cfg(not(feature = "tls"))]
    #[test]
    fn tls_without_the_feature_is_a_configuration_error() {
        for url in ["mqtts://h", "ssl://h:8883"] {
            let err = broker_addr(url).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config);
            assert!(err.message().contains("`tls` feature"), "{err}");
        }
    }

    #[test]
    fn passwords_are_masked() {
        let cases = [
            ("mqtt://127.0.0.1:1883", "mqtt://127.0.0.1:1883"),
            ("mqtt://relay:s3cret@h:1883", "mqtt://relay:***@h:1883"),
            ("relay:p@ss@h:1883", "relay:***@h:1883"),
            ("mqtt://relay@h", "mqtt://relay@h"),
        ];
        for (url, shown) in cases {
            assert_eq!(redact_url(url), shown, "{url}");
        }
        let options = MqttConsumerOptions {
            url: "mqtt://c:hunter2@h".into(),
            ..MqttConsumerOptions::default()
        };
        assert!(!format!("{options:?}").contains("hunter2"));
    }

    #[test]
    fn keep_alive_and_client_id_are_checked() {
        assert_eq!(
            keep_alive(Duration::from_millis(15_500)).unwrap(),
            Duration::from_secs(15)
        );
        assert_eq!(
            keep_alive(Duration::from_secs(1)).unwrap_err().kind(),
            ErrorKind::Config
        );
        assert_eq!(client_id("").unwrap_err().kind(), ErrorKind::Config);
        assert_eq!(client_id("a\0b").unwrap_err().kind(), ErrorKind::Config);
        client_id("outbox-consumer").unwrap();
    }
}
