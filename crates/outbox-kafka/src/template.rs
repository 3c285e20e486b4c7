//! Topics and sources made from templates, and the rule for a valid topic name.
//!
//! A [`Template`] is text with `{stream}` and `{type}` placeholders, parsed once when
//! the publisher is built and rendered for every event. [`check_topic`] decides
//! whether the rendered text is a name Kafka accepts for a topic.

use std::fmt;

use outbox_core::{Error, ErrorKind, Result};

/// The longest topic name Kafka accepts.
pub const MAX_TOPIC_LEN: usize = 249;

/// Text with `{stream}` and `{type}` placeholders, such as `shop.{stream}`.
///
/// `{stream}` is replaced by the event's outbox stream and `{type}` by its event
/// type; the rest is copied as it is. Braces are reserved for placeholders: any
/// other `{name}`, or a brace without its partner, is refused when parsing.
///
/// ```
/// use outbox_kafka::Template;
///
/// let topic = Template::parse("shop.{stream}")?;
/// assert_eq!(topic.render("orders", "order.placed"), "shop.orders");
/// # Ok::<(), outbox_core::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Template {
    text: String,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Stream,
    Type,
}

impl Template {
    /// Parses `text`, failing with [`ErrorKind::Config`] on an unknown placeholder
    /// or an unmatched brace.
    pub fn parse(text: &str) -> Result<Template> {
        let mut parts = Vec::new();
        let mut rest = text;

        while let Some(open) = rest.find(['{', '}']) {
            if rest[open..].starts_with('}') {
                return Err(Error::config(format!(
                    "template {text:?} has a `}}` without a matching `{{`"
                )));
            }
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_owned()));
            }

            let after = &rest[open + 1..];
            let Some(close) = after.find('}') else {
                return Err(Error::config(format!(
                    "template {text:?} has a `{{` without a matching `}}`"
                )));
            };
            parts.push(match &after[..close] {
                "stream" => Part::Stream,
                "type" => Part::Type,
                other => {
                    return Err(Error::config(format!(
                        "template {text:?} has an unknown placeholder {{{other}}}: \
                         expected {{stream}} or {{type}}"
                    )));
                }
            });
            rest = &after[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }

        Ok(Template {
            text: text.to_owned(),
            parts,
        })
    }

    /// The text the template was parsed from.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Replaces the placeholders with `stream` and `event_type`.
    pub fn render(&self, stream: &str, event_type: &str) -> String {
        let mut out = String::with_capacity(self.text.len() + stream.len() + event_type.len());
        for part in &self.parts {
            out.push_str(match part {
                Part::Text(text) => text,
                Part::Stream => stream,
                Part::Type => event_type,
            });
        }
        out
    }
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.text, f)
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Checks that `topic` is a name Kafka accepts for a topic.
///
/// A topic name is 1 to 249 ASCII letters, digits, `.`, `_` or `-`, and neither
/// `.` nor `..`. Anything else is refused with [`ErrorKind::Permanent`].
///
/// ```
/// use outbox_core::ErrorKind;
/// use outbox_kafka::check_topic;
///
/// check_topic("orders.v1")?;
/// let err = check_topic("orders placed").unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::Permanent);
/// # Ok::<(), outbox_core::Error>(())
/// ```
pub fn check_topic(topic: &str) -> Result<()> {
    match topic_problem(topic) {
        None => Ok(()),
        Some(problem) => Err(Error::new(
            ErrorKind::Permanent,
            format!("invalid kafka topic {topic:?}: {problem}"),
        )),
    }
}

/// Why `topic` cannot name a Kafka topic, or `None` when it can.
pub(crate) fn topic_problem(topic: &str) -> Option<&'static str> {
    if topic.is_empty() {
        return Some("it is empty");
    }
    if topic.len() > MAX_TOPIC_LEN {
        return Some("it is longer than 249 bytes");
    }
    if topic == "." || topic == ".." {
        return Some("it is `.` or `..`");
    }
    if !topic
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Some("it has a character other than ASCII letters, digits, `.`, `_`, `-`");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_message(text: &str) -> String {
        let err = Template::parse(text).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{text}");
        err.to_string()
    }

    #[test]
    fn placeholders_are_replaced_and_text_kept() {
        let template = Template::parse("{stream}").unwrap();
        assert_eq!(template.render("orders", "order.placed"), "orders");

        let template = Template::parse("shop.{stream}.{type}").unwrap();
        assert_eq!(template.render("s", "t.u"), "shop.s.t.u");

        let template = Template::parse("fixed").unwrap();
        assert_eq!(template.render("s", "t"), "fixed");
        assert_eq!(template.as_str(), "fixed");
    }

    #[test]
    fn unknown_placeholders_and_stray_braces_are_refused() {
        assert!(config_message("{stream}.{key}").contains("unknown placeholder {key}"));
        assert!(config_message("{Stream}").contains("unknown placeholder {Stream}"));
        assert!(config_message("{stream").contains("without a matching `}`"));
        assert!(config_message("stream}").contains("without a matching `{`"));
        assert!(config_message("{}").contains("unknown placeholder {}"));
    }

    #[test]
    fn valid_topics_pass() {
        let longest = "a".repeat(MAX_TOPIC_LEN);
        for topic in ["orders", "orders.order.placed", "T_1-a.b", "...", &longest] {
            check_topic(topic).unwrap();
        }
    }

    #[test]
    fn invalid_topics_are_permanent_failures() {
        let too_long = "a".repeat(MAX_TOPIC_LEN + 1);
        let cases = [
            ("", "empty"),
            (".", "`.`"),
            ("..", "`..`"),
            ("orders placed", "character"),
            ("orders/placed", "character"),
            ("ordres.é", "character"),
            (too_long.as_str(), "longer"),
        ];
        for (topic, problem) in cases {
            let err = check_topic(topic).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Permanent, "{topic:?}");
            assert!(err.to_string().contains(problem), "{topic:?}: {err}");
        }
    }
}
