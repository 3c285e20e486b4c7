//! Exchange names, routing keys and sources made from templates, and the rules
//! for names RabbitMQ accepts.
//!
//! A [`Template`] is text with `{stream}` and `{type}` placeholders, parsed once
//! when the publisher is built and rendered for every event. [`check_exchange`]
//! and [`check_routing_key`] decide whether the rendered text can be sent.

use std::fmt;

use outbox_core::{Error, ErrorKind, Result};

/// The longest exchange name or routing key AMQP 0-9-1 can carry, in bytes.
pub(crate) const MAX_NAME_BYTES: usize = 255;

/// Text with `{stream}` and `{type}` placeholders, such as `{stream}.{type}`.
///
/// `{stream}` is replaced by the event's outbox stream and `{type}` by its event
/// type; all other text is kept. Any other `{name}`, and a brace without its
/// partner, is refused when the template is parsed.
///
/// ```
/// use outbox_rabbitmq::Template;
///
/// let key = Template::parse("shop.{stream}.{type}")?;
/// assert_eq!(key.render("orders", "order.placed"), "shop.orders.order.placed");
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

        while let Some(at) = rest.find(['{', '}']) {
            if rest[at..].starts_with('}') {
                return Err(Error::config(format!(
                    "template {text:?} has a `}}` without a matching `{{`"
                )));
            }
            if at > 0 {
                parts.push(Part::Text(rest[..at].to_owned()));
            }

            let after = &rest[at + 1..];
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

/// Checks that `exchange` is a name RabbitMQ accepts for an exchange.
///
/// A name has at most 255 bytes of ASCII letters, digits, `-`, `_`, `.` and `:`,
/// the characters RabbitMQ allows when it declares one. The empty name is the
/// default exchange, which routes by queue name. Anything else fails with
/// [`ErrorKind::Permanent`].
///
/// ```
/// use outbox_core::ErrorKind;
/// use outbox_rabbitmq::check_exchange;
///
/// check_exchange("outbox")?;
/// assert_eq!(check_exchange("out box").unwrap_err().kind(), ErrorKind::Permanent);
/// # Ok::<(), outbox_core::Error>(())
/// ```
pub fn check_exchange(exchange: &str) -> Result<()> {
    match exchange_problem(exchange) {
        None => Ok(()),
        Some(problem) => Err(Error::new(
            ErrorKind::Permanent,
            format!("invalid exchange name {exchange:?}: {problem}"),
        )),
    }
}

/// Checks that `routing_key` fits in AMQP: at most 255 bytes. A longer one fails
/// with [`ErrorKind::Permanent`].
pub fn check_routing_key(routing_key: &str) -> Result<()> {
    if routing_key.len() > MAX_NAME_BYTES {
        return Err(Error::new(
            ErrorKind::Permanent,
            format!(
                "routing key of {} bytes exceeds the limit of {MAX_NAME_BYTES} bytes",
                routing_key.len()
            ),
        ));
    }
    Ok(())
}

/// Why `exchange` cannot be an exchange name, or `None` when it can.
pub(crate) fn exchange_problem(exchange: &str) -> Option<&'static str> {
    if exchange.len() > MAX_NAME_BYTES {
        return Some("it is longer than 255 bytes");
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':');
    if !exchange.chars().all(allowed) {
        return Some("expected ASCII letters, digits, `-`, `_`, `.` or `:`");
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
    fn placeholders_are_replaced_and_text_is_kept() {
        let template = Template::parse("{stream}.{type}").unwrap();
        assert_eq!(
            template.render("orders", "order.placed"),
            "orders.order.placed"
        );

        let template = Template::parse("/outbox/{stream}").unwrap();
        assert_eq!(template.render("orders", "ignored"), "/outbox/orders");

        let template = Template::parse("outbox").unwrap();
        assert_eq!(template.render("s", "t"), "outbox");
        assert_eq!(template.as_str(), "outbox");

        assert_eq!(Template::parse("").unwrap().render("s", "t"), "");
    }

    #[test]
    fn unknown_placeholders_and_stray_braces_are_refused() {
        assert!(config_message("{stream}.{key}").contains("unknown placeholder {key}"));
        assert!(config_message("{stream").contains("without a matching `}`"));
        assert!(config_message("stream}.x").contains("without a matching `{`"));
        assert!(config_message("{}").contains("unknown placeholder {}"));
    }

    #[test]
    fn exchange_names_follow_rabbitmq_rules() {
        for name in ["", "outbox", "shop.orders", "a-b_c:d", "amq.topic"] {
            check_exchange(name).unwrap();
        }
        for name in ["out box", "orders/placed", "é", &"x".repeat(256)] {
            let err = check_exchange(name).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Permanent, "{name:?}");
        }
    }

    #[test]
    fn routing_keys_are_bounded_by_length_only() {
        check_routing_key("orders.order placed/é").unwrap();
        check_routing_key(&"k".repeat(255)).unwrap();
        let err = check_routing_key(&"k".repeat(256)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Permanent);
    }
}
