//! Subjects and sources made from templates, and the rule for a valid subject.
//!
//! A [`Template`] is text with `{stream}` and `{type}` placeholders, parsed once when
//! the publisher is built and rendered for every event. [`check_subject`] decides
//! whether the rendered text is a subject JetStream can store a message under.

use std::fmt;

use outbox_core::{Error, ErrorKind, Result};

/// Text with `{stream}` and `{type}` placeholders, such as `{stream}.{type}`.
///
/// `{stream}` is replaced by the event's outbox stream and `{type}` by its event
/// type; everything else is copied as it is. Braces are reserved for placeholders:
/// any other `{name}`, or a brace without its partner, is refused when the template
/// is parsed.
///
/// ```
/// use outbox_nats::Template;
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
    /// Parses `text`, failing with [`ErrorKind::Config`] on an unknown placeholder or
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

    /// A subject filter that covers every subject this template yields for `stream`,
    /// or `None` when the subjects of one stream cannot be told apart by a prefix.
    ///
    /// The filter is the rendered text before the first `{type}`, cut back to the
    /// last complete token, followed by `>`. A template without `{type}` yields one
    /// subject per stream, which is its own filter.
    pub(crate) fn subject_filter(&self, stream: &str) -> Option<String> {
        let Some(first_type) = self.parts.iter().position(|p| *p == Part::Type) else {
            return Some(self.render(stream, ""));
        };

        let before = Template {
            text: String::new(),
            parts: self.parts[..first_type].to_vec(),
        }
        .render(stream, "");
        let cut = before.rfind('.')?;
        Some(format!("{}>", &before[..=cut]))
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

/// Checks that `subject` is one JetStream can store a message under.
///
/// A subject is one or more tokens separated by `.`. It is refused, with
/// [`ErrorKind::Permanent`], when a token is empty (`orders..placed`, a leading or
/// trailing `.`), when it contains whitespace or a control character, or when it
/// contains a wildcard (`*` or `>`), which a published subject cannot carry.
///
/// ```
/// use outbox_core::ErrorKind;
/// use outbox_nats::check_subject;
///
/// check_subject("orders.order.placed")?;
/// let err = check_subject("orders.*").unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::Permanent);
/// # Ok::<(), outbox_core::Error>(())
/// ```
pub fn check_subject(subject: &str) -> Result<()> {
    match subject_problem(subject) {
        None => Ok(()),
        Some(problem) => Err(Error::new(
            ErrorKind::Permanent,
            format!("invalid subject {subject:?}: {problem}"),
        )),
    }
}

/// Why `subject` cannot be published to, or `None` when it can.
pub(crate) fn subject_problem(subject: &str) -> Option<&'static str> {
    if subject.is_empty() {
        return Some("it is empty");
    }
    if subject.split('.').any(str::is_empty) {
        return Some("it has an empty token");
    }
    if subject.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some("it contains whitespace or a control character");
    }
    if subject.contains(['*', '>']) {
        return Some("it contains a wildcard");
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
    fn filters_cover_the_subjects_of_one_stream() {
        let filter =
            |text: &str, stream: &str| Template::parse(text).unwrap().subject_filter(stream);

        assert_eq!(
            filter("{stream}.{type}", "orders").as_deref(),
            Some("orders.>")
        );
        assert_eq!(
            filter("shop.{stream}.v1-{type}", "orders").as_deref(),
            Some("shop.orders.>")
        );
        assert_eq!(
            filter("{stream}.all", "orders").as_deref(),
            Some("orders.all")
        );
        assert_eq!(filter("{type}.{stream}", "orders"), None);
        assert_eq!(filter("{stream}{type}", "orders"), None);
    }

    #[test]
    fn valid_subjects_pass() {
        for subject in ["orders", "orders.order.placed", "T_1.a-b.c_d", "ordres.é"] {
            check_subject(subject).unwrap();
        }
    }

    #[test]
    fn invalid_subjects_are_permanent_failures() {
        let cases = [
            ("", "empty"),
            ("orders..placed", "empty token"),
            (".orders", "empty token"),
            ("orders.", "empty token"),
            ("orders.order placed", "whitespace"),
            ("orders.order\tplaced", "whitespace"),
            ("orders.\u{7}", "control character"),
            ("orders.*", "wildcard"),
            ("orders.>", "wildcard"),
            ("orders.a*b", "wildcard"),
        ];
        for (subject, problem) in cases {
            let err = check_subject(subject).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Permanent, "{subject:?}");
            assert!(err.to_string().contains(problem), "{subject:?}: {err}");
        }
    }
}
