//! From the text to the raw tables, finding every problem of shape on the way:
//! TOML syntax (which stops there: the rest cannot be read reliably), every
//! unknown key, and every value of the wrong type. The file is parsed once,
//! into a spanned document; the unknown keys come from a walk of that document
//! against the raw structs' fields, and the raw tables are deserialized from
//! it, each wrong-typed value taken out and the rest deserialized again, so
//! that validation still sees everything else.

use serde::de::value::{self, StrDeserializer};
use serde::de::{Deserialize, IntoDeserializer};
use toml::de::{DeTable, DeValue};

use super::ctx::{line_of, show_key};
use super::raw::{
    fields, RawAdmin, RawConfig, RawDestination, RawNats, RawReply, RawRetry, RawServer,
    RawSigning, RawSource, RawStorage, RawVerify,
};
use super::{scheme, Problem, Scheme};

/// More values of the wrong type than this and parsing gives up (each one
/// costs another pass over the document).
const MAX_WRONG_TYPES: usize = 100;

/// The raw tables, and the problems found while reading them.
pub(super) struct Parsed {
    pub raw: RawConfig,
    /// Unknown keys and values of the wrong type, in no particular order.
    pub problems: Vec<Problem>,
    pub dropped: Dropped,
}

/// Key paths of the values taken out for having the wrong type.
#[derive(Default)]
pub(super) struct Dropped(Vec<String>);

impl Dropped {
    /// Whether a validation problem on `key` only follows from a value that
    /// was taken out: one on that key or under it (`required key is missing`),
    /// or on a table that lost a key (`needs a secret`).
    pub fn explains(&self, key: &str) -> bool {
        self.0
            .iter()
            .any(|d| within(key, d) || (within(d, key) && d != key))
    }
}

/// Whether `key` is `outer` or a key inside it.
fn within(key: &str, outer: &str) -> bool {
    key.strip_prefix(outer)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
}

/// Syntax, unknown keys and types. `Err` holds every problem found when the
/// raw tables could not be had at all (a syntax error, or a type error that
/// could not be taken out).
pub(super) fn parse(text: &str) -> Result<Parsed, Vec<Problem>> {
    let mut doc = DeTable::parse(text).map_err(|e| vec![syntax_problem(text, &e)])?;
    let mut problems = Vec::new();
    unknown_keys(text, doc.get_ref(), Shape::Config, "", &mut problems);
    let mut dropped = Dropped::default();
    loop {
        let de = toml::de::Deserializer::from(doc.clone());
        let err = match serde_path_to_error::deserialize::<_, RawConfig>(de) {
            Ok(raw) => {
                return Ok(Parsed {
                    raw,
                    problems,
                    dropped,
                })
            }
            Err(e) => e,
        };
        let path = segments(err.path());
        let key = key_path(&path);
        problems.push(type_problem(text, key, &err.into_inner()));
        if dropped.0.len() + 1 == MAX_WRONG_TYPES {
            problems.push(Problem {
                line: None,
                key: String::new(),
                message: format!(
                    "stopped after {MAX_WRONG_TYPES} values of the wrong type; fix these first"
                ),
            });
            return Err(problems);
        }
        match remove(doc.get_mut(), &path) {
            Some(depth) => dropped.0.push(key_path(&path[..depth])),
            None => return Err(problems),
        }
    }
}

fn syntax_problem(text: &str, e: &toml::de::Error) -> Problem {
    let mut message = e.message().to_string();
    // The span of a duplicate key is the key itself (never a value).
    if let Some(key) = e.span().and_then(|s| text.get(s)) {
        if message == "duplicate key" && !key.contains('\n') {
            message = format!("duplicate key `{key}`");
        }
    }
    Problem {
        line: e.span().map(|s| line_of(text, s.start)),
        key: String::new(),
        message,
    }
}

/// A value serde could not take, at `key`.
fn type_problem(text: &str, key: String, e: &toml::de::Error) -> Problem {
    // serde's messages quote the offending value; never show a secret.
    let message = match secret_key(&key) {
        Some("signing") => {
            "must be a table such as `{ secret_env = \"NAME\" }` (value not shown)".to_string()
        }
        Some(_) => {
            "must be a string, or for `secrets` a list of strings (value not shown)".to_string()
        }
        None => e.message().to_string(),
    };
    Problem {
        line: e.span().map(|s| line_of(text, s.start)),
        key,
        message,
    }
}

/// The last key of a key path when it holds a literal secret (or, for
/// `signing`, a table of them that may have been written as the secret).
fn secret_key(key: &str) -> Option<&str> {
    let last = key.rsplit('.').next().unwrap_or(key);
    let last = last.split('[').next().unwrap_or(last);
    matches!(
        last,
        "secret" | "secrets" | "token" | "verify_token" | "signing"
    )
    .then_some(last)
}

/// One step of a key path.
#[derive(Debug)]
enum Seg {
    Key(String),
    Index(usize),
}

/// serde's path without the segments `toml::Spanned` adds.
fn segments(path: &serde_path_to_error::Path) -> Vec<Seg> {
    use serde_path_to_error::Segment;
    path.iter()
        .filter_map(|seg| match seg {
            Segment::Map { key } if key.starts_with("$__serde_spanned") => None,
            Segment::Map { key } => Some(Seg::Key(key.clone())),
            Segment::Seq { index } => Some(Seg::Index(*index)),
            _ => None,
        })
        .collect()
}

/// `source[0].verify.scheme`.
fn key_path(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(&show_key(key));
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// Takes out the deepest table entry on `path` (a list element goes with
/// its whole list); how many segments lead to that entry.
fn remove(table: &mut DeTable<'_>, path: &[Seg]) -> Option<usize> {
    let (Seg::Key(key), rest) = path.split_first()? else {
        return None;
    };
    let deeper = table
        .get_mut(key.as_str())
        .and_then(|v| remove_in(v.get_mut(), rest));
    match deeper {
        Some(n) => Some(n + 1),
        None => table.remove(key.as_str()).map(|_| 1),
    }
}

fn remove_in(value: &mut DeValue<'_>, path: &[Seg]) -> Option<usize> {
    match (value, path.first()?) {
        (DeValue::Table(t), Seg::Key(_)) => remove(t, path),
        (DeValue::Array(a), Seg::Index(i)) => match a.get_mut(*i)?.get_mut() {
            DeValue::Table(t) => remove(t, &path[1..]).map(|n| n + 1),
            _ => None,
        },
        _ => None,
    }
}

/// The tables of relay.toml that take a fixed set of keys.
#[derive(Debug, Clone, Copy)]
enum Shape {
    Config,
    Server,
    Admin,
    Storage,
    Source,
    Verify,
    Destination,
    Signing,
    Retry,
    Reply,
    Nats,
}

impl Shape {
    fn keys(self) -> &'static [&'static str] {
        match self {
            Shape::Config => fields::<RawConfig>(),
            Shape::Server => fields::<RawServer>(),
            Shape::Admin => fields::<RawAdmin>(),
            Shape::Storage => fields::<RawStorage>(),
            Shape::Source => fields::<RawSource>(),
            Shape::Verify => fields::<RawVerify>(),
            Shape::Destination => fields::<RawDestination>(),
            Shape::Signing => fields::<RawSigning>(),
            Shape::Retry => fields::<RawRetry>(),
            Shape::Reply => fields::<RawReply>(),
            Shape::Nats => fields::<RawNats>(),
        }
    }

    /// The table under `key`, and whether it is a list of such tables
    /// (`[[source]]`). `None` for plain values and free-form tables (`headers`).
    fn child(self, key: &str) -> Option<(Shape, bool)> {
        Some(match (self, key) {
            (Shape::Config, "server") => (Shape::Server, false),
            (Shape::Config, "admin") => (Shape::Admin, false),
            (Shape::Config, "storage") => (Shape::Storage, false),
            (Shape::Config, "source") => (Shape::Source, true),
            (Shape::Config, "destination") => (Shape::Destination, true),
            (Shape::Source, "verify") => (Shape::Verify, false),
            (Shape::Source, "reply") => (Shape::Reply, false),
            (Shape::Storage, "nats") => (Shape::Nats, false),
            (Shape::Destination, "signing") => (Shape::Signing, false),
            (Shape::Destination, "retry") => (Shape::Retry, false),
            _ => return None,
        })
    }
}

/// Every key of `table` (a `shape` at `path`) and of the tables in it that
/// its shape does not take, each at the line of the key. A value of the
/// wrong type is left to deserialization.
fn unknown_keys(text: &str, table: &DeTable<'_>, shape: Shape, path: &str, out: &mut Vec<Problem>) {
    let keys = shape.keys();
    for (key, value) in table.iter() {
        let name: &str = key.get_ref();
        let here = if path.is_empty() {
            show_key(name)
        } else {
            format!("{path}.{}", show_key(name))
        };
        if !keys.contains(&name) {
            out.push(Problem {
                line: Some(line_of(text, key.span().start)),
                key: here,
                message: unknown_message(shape, table, keys),
            });
            continue;
        }
        match (shape.child(name), value.get_ref()) {
            (Some((child, false)), DeValue::Table(t)) => unknown_keys(text, t, child, &here, out),
            (Some((child, true)), DeValue::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    if let DeValue::Table(t) = item.get_ref() {
                        unknown_keys(text, t, child, &format!("{here}[{i}]"), out);
                    }
                }
            }
            _ => {}
        }
    }
}

/// "unknown key (expected one of: ...)"; in a verify table with a known
/// scheme, the keys of that scheme only.
fn unknown_message(shape: Shape, table: &DeTable<'_>, keys: &[&str]) -> String {
    if let (Shape::Verify, Some(scheme)) = (shape, scheme_of(table)) {
        return format!(
            "unknown key (scheme \"{}\" takes {})",
            scheme.as_str(),
            scheme::takes(scheme)
        );
    }
    let expected: Vec<String> = keys.iter().map(|k| format!("`{k}`")).collect();
    format!("unknown key (expected one of: {})", expected.join(", "))
}

/// The scheme a verify table names, when it names a known one.
fn scheme_of(verify: &DeTable<'_>) -> Option<Scheme> {
    let name = verify.get("scheme")?.get_ref().as_str()?;
    let de: StrDeserializer<'_, value::Error> = name.into_deserializer();
    Scheme::deserialize(de).ok()
}
