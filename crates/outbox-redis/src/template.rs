//! Stream keys and sources made from templates.
//!
//! A [`Template`] is text with `{stream}` and `{type}` placeholders, parsed once
//! when the publisher is built and rendered for every event.

use outbox_core::{Error, Result};

/// Text with `{stream}` and `{type}` placeholders, such as `outbox:{stream}`.
///
/// `{stream}` is replaced by the event's outbox stream and `{type}` by its event
/// type; everything else is copied as it is. Braces are reserved for placeholders:
/// any other `{name}`, or a brace without its partner, is refused when parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Stream,
    Type,
}

impl Template {
    /// Parses `text`, failing with [`outbox_core::ErrorKind::Config`] when it is
    /// empty, has an unknown placeholder or an unmatched brace.
    pub(crate) fn parse(text: &str) -> Result<Template> {
        if text.is_empty() {
            return Err(Error::config("template is empty"));
        }
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
        Ok(Template { parts })
    }

    /// Replaces the placeholders with `stream` and `event_type`.
    pub(crate) fn render(&self, stream: &str, event_type: &str) -> String {
        let mut out = String::new();
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

#[cfg(test)]
mod tests {
    use super::*;
    use outbox_core::ErrorKind;

    #[test]
    fn placeholders_are_replaced_and_text_kept() {
        let render = |text: &str| {
            Template::parse(text)
                .unwrap()
                .render("orders", "order.paid")
        };
        assert_eq!(render("outbox:{stream}"), "outbox:orders");
        assert_eq!(render("{stream}:{type}"), "orders:order.paid");
        assert_eq!(render("all-events"), "all-events");
        assert_eq!(render("{type}{type}"), "order.paidorder.paid");
    }

    #[test]
    fn bad_templates_are_configuration_errors() {
        for text in ["", "{stream", "stream}", "{key}", "{}", "a{Stream}"] {
            let err = Template::parse(text).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{text:?}");
        }
    }
}
