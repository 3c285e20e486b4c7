//! Topics and sources made from templates, and the escaping that keeps every
//! event's topic a valid MQTT topic name of the levels the template shows.
//!
//! A [`TopicTemplate`] is parsed once when the publisher is built and rendered
//! for every event; the values put into it are escaped by [`escape_level`], so
//! a key can neither add topic levels nor carry a wildcard.

use std::borrow::Cow;
use std::fmt;

use outbox_core::{Error, ErrorKind, Event, Result};

/// The longest topic MQTT can carry, in bytes of UTF-8.
const MAX_TOPIC_BYTES: usize = u16::MAX as usize;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Text(usize, usize),
    Stream,
    Type,
    Key,
}

impl Part {
    fn placeholder(self) -> &'static str {
        match self {
            Part::Stream => "{stream}",
            Part::Type => "{type}",
            Part::Key => "{key}",
            Part::Text(..) => "text",
        }
    }
}

/// Text with `{stream}`, `{type}` and `{key}` placeholders, such as
/// `outbox/{stream}`, that names the topic of each event.
///
/// Each placeholder is replaced by the event's value passed through
/// [`escape_level`], so that `/` inside a key stays within its level and `+`,
/// `#` or a leading `$` cannot appear. The text around the placeholders is
/// copied as it is; it may hold `/` to make levels, but no wildcard (`+`, `#`)
/// nor NUL, and it may not start with `$` (topics reserved for the broker).
/// Braces are reserved for placeholders.
///
/// ```
/// use outbox_mqtt::TopicTemplate;
///
/// let topic = TopicTemplate::parse("shop/{stream}/{key}")?;
/// # let mut event = outbox_core::Event {
/// #     id: 1, event_id: outbox_core::EventId::new(), stream: "orders".into(),
/// #     key: "".into(), seq: 1, partition: 0, event_type: "order.placed".into(),
/// #     payload: outbox_core::Payload::bytes("text/plain", "x"),
/// #     headers: Default::default(), created_at: chrono::Utc::now(), attempts: 0,
/// # };
/// event.key = "eu/order+7".into();
/// assert_eq!(topic.render(&event)?, "shop/orders/eu%2Forder%2B7");
/// # Ok::<(), outbox_core::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct TopicTemplate {
    text: String,
    parts: Vec<Part>,
}

impl TopicTemplate {
    /// Parses `text`, failing with [`ErrorKind::Config`] on an unknown
    /// placeholder, an unmatched brace, an empty template, or text that no
    /// topic name may hold.
    pub fn parse(text: &str) -> Result<TopicTemplate> {
        let parts = parse_parts(text, &[Part::Stream, Part::Type, Part::Key])?;
        let problem = if text.is_empty() {
            Some("it is empty")
        } else if text.contains(['+', '#']) {
            Some("it contains a wildcard")
        } else if text.contains('\0') {
            Some("it contains NUL")
        } else if text.starts_with('$') {
            Some("topics starting with `$` belong to the broker")
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(Error::config(format!(
                "topic template {text:?} cannot make a valid topic: {problem}"
            )));
        }
        Ok(TopicTemplate {
            text: text.to_owned(),
            parts,
        })
    }

    /// The text the template was parsed from.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The topic of `event`, or an [`ErrorKind::Permanent`] error when it is
    /// longer than MQTT's 65,535 bytes.
    pub fn render(&self, event: &Event) -> Result<String> {
        let mut topic = String::with_capacity(self.text.len() + event.key.len() + 16);
        for part in &self.parts {
            match *part {
                Part::Text(start, end) => topic.push_str(&self.text[start..end]),
                Part::Stream => topic.push_str(&escape_level(&event.stream)),
                Part::Type => topic.push_str(&escape_level(&event.event_type)),
                Part::Key => topic.push_str(&escape_level(&event.key)),
            }
        }
        if topic.len() > MAX_TOPIC_BYTES {
            return Err(Error::new(
                ErrorKind::Permanent,
                format!(
                    "topic of {} bytes exceeds mqtt's {MAX_TOPIC_BYTES} bytes",
                    topic.len()
                ),
            ));
        }
        Ok(topic)
    }
}

impl fmt::Debug for TopicTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.text, f)
    }
}

/// Escapes `value` for use within one topic level: `%` becomes `%25`, `/`
/// `%2F`, `+` `%2B`, `#` `%23`, `$` `%24` and NUL `%00`; everything else is
/// kept. The result is the percent-encoding of those characters only, so it
/// decodes back to `value`.
///
/// ```
/// use outbox_mqtt::escape_level;
///
/// assert_eq!(escape_level("order-7"), "order-7");
/// assert_eq!(escape_level("a/b#c"), "a%2Fb%23c");
/// ```
pub fn escape_level(value: &str) -> Cow<'_, str> {
    const SPECIAL: [char; 6] = ['%', '/', '+', '#', '$', '\0'];
    if !value.contains(SPECIAL) {
        return Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        if SPECIAL.contains(&c) {
            out.push_str(&format!("%{:02X}", c as u32));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// The CloudEvents `source` rule: text with `{stream}` and `{type}`, rendered
/// without escaping.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct SourceTemplate {
    text: String,
    parts: Vec<Part>,
}

impl SourceTemplate {
    /// Parses `text`, which must be a URI reference without whitespace.
    pub(crate) fn parse(text: &str) -> Result<SourceTemplate> {
        let parts = parse_parts(text, &[Part::Stream, Part::Type])?;
        if text.is_empty() || text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(Error::config(format!(
                "source template {text:?} is empty or has whitespace"
            )));
        }
        Ok(SourceTemplate {
            text: text.to_owned(),
            parts,
        })
    }

    /// The source of `event`.
    pub(crate) fn render(&self, event: &Event) -> String {
        let mut out = String::with_capacity(self.text.len() + 32);
        for part in &self.parts {
            match *part {
                Part::Text(start, end) => out.push_str(&self.text[start..end]),
                Part::Stream => out.push_str(&event.stream),
                Part::Type => out.push_str(&event.event_type),
                Part::Key => unreachable!("source templates have no {{key}}"),
            }
        }
        out
    }
}

impl fmt::Debug for SourceTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.text, f)
    }
}

/// Splits `text` into literal runs and the placeholders in `allowed`.
fn parse_parts(text: &str, allowed: &[Part]) -> Result<Vec<Part>> {
    let mut parts = Vec::new();
    let mut at = 0;

    while let Some(found) = text[at..].find(['{', '}']) {
        let open = at + found;
        if text[open..].starts_with('}') {
            return Err(Error::config(format!(
                "template {text:?} has a `}}` without a matching `{{`"
            )));
        }
        if open > at {
            parts.push(Part::Text(at, open));
        }

        let Some(close) = text[open..].find('}').map(|i| open + i) else {
            return Err(Error::config(format!(
                "template {text:?} has a `{{` without a matching `}}`"
            )));
        };
        let part = match &text[open + 1..close] {
            "stream" => Part::Stream,
            "type" => Part::Type,
            "key" => Part::Key,
            _ => Part::Text(0, 0),
        };
        if !allowed.contains(&part) {
            let names: Vec<&str> = allowed.iter().map(|p| p.placeholder()).collect();
            return Err(Error::config(format!(
                "template {text:?} has an unknown placeholder {}: expected {}",
                &text[open..=close],
                names.join(", ")
            )));
        }
        parts.push(part);
        at = close + 1;
    }
    if at < text.len() {
        parts.push(Part::Text(at, text.len()));
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use outbox_core::{EventId, Payload};

    fn event(stream: &str, event_type: &str, key: &str) -> Event {
        Event {
            id: 1,
            event_id: EventId::new(),
            stream: stream.into(),
            key: key.into(),
            seq: 1,
            partition: 0,
            event_type: event_type.into(),
            payload: Payload::bytes("text/plain", "x"),
            headers: Default::default(),
            created_at: chrono::Utc::now(),
            attempts: 0,
        }
    }

    #[test]
    fn the_default_rule_is_one_topic_per_stream() {
        let template = TopicTemplate::parse("outbox/{stream}").unwrap();
        let topic = template
            .render(&event("orders", "order.placed", "a/b"))
            .unwrap();
        assert_eq!(topic, "outbox/orders");
    }

    #[test]
    fn every_placeholder_is_escaped_into_one_level() {
        let template = TopicTemplate::parse("{stream}/{type}/{key}").unwrap();
        let cases = [
            ("order-7", "orders/order.placed/order-7"),
            ("eu/7", "orders/order.placed/eu%2F7"),
            ("a+b#c", "orders/order.placed/a%2Bb%23c"),
            ("$sys", "orders/order.placed/%24sys"),
            ("100%", "orders/order.placed/100%25"),
            ("é/ü", "orders/order.placed/é%2Fü"),
        ];
        for (key, topic) in cases {
            let rendered = template.render(&event("orders", "order.placed", key));
            assert_eq!(rendered.unwrap(), topic, "{key}");
        }

        let template = TopicTemplate::parse("{type}").unwrap();
        let topic = template.render(&event("s", "$a/b+", "k")).unwrap();
        assert_eq!(topic, "%24a%2Fb%2B");
        assert!(!topic.starts_with('$'));
    }

    #[test]
    fn templates_that_cannot_make_a_topic_are_refused() {
        let cases = [
            ("", "empty"),
            ("outbox/+/{stream}", "wildcard"),
            ("outbox/#", "wildcard"),
            ("$SYS/{stream}", "broker"),
            ("a\0/{stream}", "NUL"),
            ("outbox/{partition}", "unknown placeholder {partition}"),
            ("outbox/{stream", "without a matching `}`"),
            ("outbox/stream}", "without a matching `{`"),
        ];
        for (text, problem) in cases {
            let err = TopicTemplate::parse(text).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{text:?}");
            assert!(err.to_string().contains(problem), "{text:?}: {err}");
        }
    }

    #[test]
    fn an_overlong_topic_is_a_permanent_failure() {
        let template = TopicTemplate::parse("t/{key}").unwrap();
        let err = template
            .render(&event("s", "t", &"/".repeat(30_000)))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Permanent);
    }

    #[test]
    fn sources_take_stream_and_type_unescaped() {
        let source = SourceTemplate::parse("/shop/{stream}/{type}").unwrap();
        let rendered = source.render(&event("orders", "order/placed", "k"));
        assert_eq!(rendered, "/shop/orders/order/placed");

        for bad in ["", "/a b", "/{key}"] {
            let err = SourceTemplate::parse(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{bad:?}");
        }
    }
}
