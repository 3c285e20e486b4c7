//! Destination names made from templates: `{stream}` and `{type}` filled in per
//! event.
//!
//! Every publisher names its destination (subject, topic, exchange, routing key,
//! stream key, URL) and its CloudEvents `source` with a [`Template`], parsed once
//! when the publisher is built and rendered for every event. Each publisher then
//! checks the rendered text against its broker's own naming rule.

use std::fmt;

use crate::{Error, Result};

/// Text with `{stream}` and `{type}` placeholders, such as `{stream}.{type}`.
///
/// `{stream}` is replaced by the event's outbox stream and `{type}` by its event
/// type; everything else is copied as it is. Braces are reserved for placeholders:
/// any other `{name}`, or a brace without its partner, is refused when the template
/// is parsed.
///
/// ```
/// use outbox_core::Template;
///
/// let subject = Template::parse("shop.{stream}.{type}")?;
/// assert_eq!(subject.render("orders", "order.placed"), "shop.orders.order.placed");
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
    /// Parses `text`, failing with [`crate::ErrorKind::Config`] on an unknown placeholder or
    /// an unmatched brace.
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

    /// Renders the template, letting `substitute` write each placeholder's value,
    /// for destinations that escape or encode what they insert (a URL, a topic
    /// level).
    pub fn render_with(
        &self,
        stream: &str,
        event_type: &str,
        substitute: impl Fn(&str, &mut String),
    ) -> String {
        let mut out = String::with_capacity(self.text.len() + stream.len() + event_type.len());
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Stream => substitute(stream, &mut out),
                Part::Type => substitute(event_type, &mut out),
            }
        }
        out
    }

    /// The text rendered for `stream` up to the first `{type}`, or `None` when the
    /// template has no `{type}`: the part that every event of one stream shares.
    pub fn rendered_before_type(&self, stream: &str) -> Option<String> {
        let first_type = self.parts.iter().position(|p| *p == Part::Type)?;
        let before = Template {
            text: String::new(),
            parts: self.parts[..first_type].to_vec(),
        };
        Some(before.render(stream, ""))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn config_message(text: &str) -> String {
        let err = Template::parse(text).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{text}");
        err.to_string()
    }

    #[test]
    fn the_default_rule_joins_stream_and_type() {
        let template = Template::parse("{stream}.{type}").unwrap();
        assert_eq!(
            template.render("orders", "order.placed"),
            "orders.order.placed"
        );
    }

    #[test]
    fn text_around_placeholders_is_kept() {
        let template = Template::parse("/outbox/{stream}").unwrap();
        assert_eq!(template.render("orders", "ignored"), "/outbox/orders");

        let template = Template::parse("a.{type}.{stream}.{type}").unwrap();
        assert_eq!(template.render("s", "t"), "a.t.s.t");

        let template = Template::parse("fixed.subject").unwrap();
        assert_eq!(template.render("s", "t"), "fixed.subject");
        assert_eq!(template.as_str(), "fixed.subject");
    }

    #[test]
    fn unknown_placeholders_and_stray_braces_are_refused() {
        assert!(config_message("{stream}.{key}").contains("unknown placeholder {key}"));
        assert!(config_message("{stream}.{Type}").contains("unknown placeholder {Type}"));
        assert!(config_message("{stream").contains("without a matching `}`"));
        assert!(config_message("stream}.x").contains("without a matching `{`"));
        assert!(config_message("{}").contains("unknown placeholder {}"));
    }

    #[test]
    fn values_can_be_escaped_and_the_shared_prefix_found() {
        let template = Template::parse("/hooks/{stream}/{type}").unwrap();
        let upper = template.render_with("a b", "c", |value, out| {
            out.push_str(&value.replace(' ', "%20"))
        });
        assert_eq!(upper, "/hooks/a%20b/c");
        assert_eq!(
            template.rendered_before_type("orders").as_deref(),
            Some("/hooks/orders/")
        );
        assert_eq!(
            Template::parse("{stream}")
                .unwrap()
                .rendered_before_type("s"),
            None
        );
    }
}
