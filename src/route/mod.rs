//! Routing: each message's event type (computed once at ingest) and what a
//! destination's rules (`event_types`, `filter`, `transform`) do with a
//! message when it is delivered, with the config in force then. Pure: no
//! store, no HTTP, no clock.
//!
//! - [`jq`]: compiled jq programs and their work budget;
//! - [`input`]: the JSON object programs see.

pub mod input;
pub mod jq;

use jaq_json::Val;

use crate::config::Scheme;
use crate::model::Seq;
use crate::store::Message;
pub use input::Input;
pub use jq::{CompileError, Program, RunError};

/// Longest event type kept; a longer one is cut (it must fit a message's
/// first stored chunk with the rest of its head).
pub const MAX_EVENT_TYPE: usize = 256;

/// How a source finds a message's event type.
#[derive(Debug, Clone)]
pub enum EventTypeRule {
    /// The scheme's default (see [`default_event_type`]).
    Scheme(Scheme),
    /// The source's `event_type` jq program.
    Jq(Program),
}

impl EventTypeRule {
    /// The event type of a message about to be stored; `None` when there
    /// is none (or the program failed, which is logged by the caller).
    pub fn event_type(&self, input: &Input<'_>) -> Result<Option<String>, RunError> {
        let found = match self {
            EventTypeRule::Scheme(scheme) => default_event_type(*scheme, input),
            EventTypeRule::Jq(p) => p.first(input.to_val())?.and_then(|v| text(&v)),
        };
        Ok(found.map(|mut t| {
            if t.len() > MAX_EVENT_TYPE {
                let mut cut = MAX_EVENT_TYPE;
                while !t.is_char_boundary(cut) {
                    cut -= 1;
                }
                t.truncate(cut);
            }
            t
        }))
    }
}

/// The event type each scheme's providers send, per the spec: a body field
/// or a header; none for generic schemes.
pub fn default_event_type(scheme: Scheme, input: &Input<'_>) -> Option<String> {
    let body_field = |path: &[&str]| input.json_body_field(path);
    match scheme {
        Scheme::Stripe | Scheme::Standard => body_field(&["type"]),
        Scheme::Github => input.header("x-github-event"),
        Scheme::Shopify => input.header("x-shopify-topic"),
        Scheme::Slack => body_field(&["event", "type"]).or_else(|| body_field(&["type"])),
        Scheme::Paypal => body_field(&["event_type"]),
        Scheme::Meta => body_field(&["object"]),
        Scheme::Discord => body_field(&["type"]).map(|t| format!("interaction.{t}")),
        _ => None,
    }
}

/// A jq output as an event type: strings as they are, numbers and booleans
/// as text, `null` and `false` as none, anything else as its JSON.
fn text(v: &Val) -> Option<String> {
    match v {
        Val::Null | Val::Bool(false) => None,
        Val::TStr(b) | Val::BStr(b) => Some(String::from_utf8_lossy(b).into_owned()),
        other => Some(other.to_string()),
    }
}

/// An `event_types` pattern: `*` matches any run of characters (none included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern(String);

impl Pattern {
    pub fn new(p: &str) -> Pattern {
        Pattern(p.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `s` matches: the parts between stars appear in order, the
    /// first at the start and the last at the end.
    pub fn matches(&self, s: &str) -> bool {
        let mut parts = self.0.split('*');
        let first = parts.next().unwrap_or("");
        let Some(mut rest) = s.strip_prefix(first) else {
            return false;
        };
        let parts: Vec<&str> = parts.collect();
        let Some((last, middle)) = parts.split_last() else {
            return rest.is_empty();
        };
        for part in middle {
            match rest.find(part) {
                Some(i) => rest = &rest[i + part.len()..],
                None => return false,
            }
        }
        rest.len() >= last.len() && rest.ends_with(last)
    }
}

/// A destination's routing rules.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    /// Empty: every event type, and messages without one.
    pub event_types: Vec<Pattern>,
    pub filter: Option<Program>,
    pub transform: Option<Program>,
}

/// What the rules do with one message.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Send it: with the transform's output as its JSON body, if any.
    Deliver(Option<Vec<u8>>),
    /// Not for this destination: finished with no attempt.
    Skip,
    /// A filter or transform failed: a failed delivery with this reason.
    Fail(String),
}

impl Rules {
    /// True when the rules let every message through unchanged.
    pub fn is_empty(&self) -> bool {
        self.event_types.is_empty() && self.filter.is_none() && self.transform.is_none()
    }

    /// Whether `event_type` passes `event_types` (no body needed).
    pub fn wants_type(&self, event_type: Option<&str>) -> bool {
        self.event_types.is_empty()
            || event_type.is_some_and(|t| self.event_types.iter().any(|p| p.matches(t)))
    }

    /// Applies the rules to message `seq`.
    pub fn decide(&self, seq: Seq, msg: &Message) -> Decision {
        if !self.wants_type(msg.event_type.as_deref()) {
            return Decision::Skip;
        }
        if self.filter.is_none() && self.transform.is_none() {
            return Decision::Deliver(None);
        }
        let input = Input::stored(seq, msg).to_val();
        if let Some(filter) = &self.filter {
            match filter.first(input.clone()) {
                Ok(Some(v)) if truthy(&v) => {}
                Ok(_) => return Decision::Skip,
                Err(e) => return Decision::Fail(format!("filter: {e}")),
            }
        }
        match &self.transform {
            None => Decision::Deliver(None),
            Some(t) => match t.first(input) {
                Ok(Some(v)) => Decision::Deliver(Some(v.to_string().into_bytes())),
                Ok(None) => Decision::Fail("transform: no output".into()),
                Err(e) => Decision::Fail(format!("transform: {e}")),
            },
        }
    }
}

/// A routing decision as the API and `hookrelay route` show it.
pub fn decision_json(
    dest: &crate::model::DestinationName,
    seq: Seq,
    m: &Message,
    decision: Decision,
) -> serde_json::Value {
    use serde_json::json;
    match decision {
        Decision::Deliver(body) => {
            let (body, content_type) = match &body {
                Some(b) => (b.as_slice(), Some("application/json")),
                None => (m.body.as_slice(), m.content_type.as_deref()),
            };
            json!({
                "destination": dest, "seq": seq.0, "decision": "deliver",
                "content_type": content_type,
                "body": String::from_utf8_lossy(body),
                "body_base64": crate::keys::b64_encode(body),
            })
        }
        Decision::Skip => json!({ "destination": dest, "seq": seq.0, "decision": "skip" }),
        Decision::Fail(reason) => {
            json!({ "destination": dest, "seq": seq.0, "decision": "error", "reason": reason })
        }
    }
}

/// jq's truth: everything but `null` and `false`.
fn truthy(v: &Val) -> bool {
    !matches!(v, Val::Null | Val::Bool(false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_runs_of_characters_at_stars() {
        let m = |p: &str, s: &str| Pattern::new(p).matches(s);
        assert!(m("invoice.*", "invoice.paid"));
        assert!(m("invoice.*", "invoice."));
        assert!(!m("invoice.*", "invoices.paid"));
        assert!(m("*", ""));
        assert!(m("push", "push"));
        assert!(!m("push", "push2"));
        assert!(m("*.created", "customer.subscription.created"));
        assert!(m("a*b*c", "aXbYc"));
        assert!(!m("a*b*c", "aXcYb"));
        assert!(m("a*a", "aa"));
        assert!(!m("a*a", "a"));
        assert!(m("**", "anything"));
    }

    fn stripe(event: &str) -> Message {
        let mut m = crate::store::test_support::message("stripe", 1_700_000_000_000, vec![]);
        m.content_type = Some("application/json".into());
        m.event_type = Some(event.into());
        m.body =
            format!(r#"{{"type":"{event}","livemode":true,"data":{{"object":{{"amount":100}}}}}}"#)
                .into_bytes();
        m
    }

    #[test]
    fn rules_skip_filter_and_transform() {
        let rules = Rules {
            event_types: vec![Pattern::new("invoice.*")],
            filter: Some(Program::compile(".body.livemode").unwrap()),
            transform: Some(
                Program::compile(r#"{text: "\(.event_type) \(.body.data.object.amount)"}"#)
                    .unwrap(),
            ),
        };
        assert_eq!(
            rules.decide(Seq(1), &stripe("charge.failed")),
            Decision::Skip
        );
        let sent = rules.decide(Seq(2), &stripe("invoice.paid"));
        assert_eq!(
            sent,
            Decision::Deliver(Some(br#"{"text":"invoice.paid 100"}"#.to_vec()))
        );
        let mut no_type = stripe("invoice.paid");
        no_type.event_type = None;
        assert_eq!(
            rules.decide(Seq(3), &no_type),
            Decision::Skip,
            "no type matches no pattern"
        );

        let failing = Rules {
            transform: Some(Program::compile("empty").unwrap()),
            ..Rules::default()
        };
        assert!(
            matches!(failing.decide(Seq(4), &stripe("x")), Decision::Fail(e) if e.contains("no output"))
        );
        assert_eq!(
            Rules::default().decide(Seq(5), &stripe("x")),
            Decision::Deliver(None)
        );
    }
}
