//! A typed builder for relay.toml, so that tests say what they configure
//! rather than format TOML:
//!
//! ```ignore
//! RelayConfig::new()
//!     .source(Source::new("gh", "/gh").verify(Verify::new("github").set("secret", "s3")))
//!     .destination(Dest::new("app", url).sources(["gh"]).retry(Retry::every("10ms", "20ms")))
//! ```
//!
//! Every config listens on ephemeral loopback ports and keeps its data in
//! `data` next to the file.

use std::path::{Path, PathBuf};

/// A TOML value as the builder renders it.
#[derive(Clone, Debug)]
pub enum Toml {
    Str(String),
    Int(i64),
    Bool(bool),
    List(Vec<Toml>),
    Inline(Vec<(String, Toml)>),
}

impl Toml {
    /// An inline table, e.g. `headers = { "X-Env" = "prod" }`.
    pub fn table<K: Into<String>, V: Into<Toml>>(pairs: impl IntoIterator<Item = (K, V)>) -> Toml {
        Toml::Inline(
            pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }

    fn render(&self) -> String {
        match self {
            Toml::Str(s) => serde_json::to_string(s).unwrap(),
            Toml::Int(n) => n.to_string(),
            Toml::Bool(b) => b.to_string(),
            Toml::List(items) => {
                let items: Vec<String> = items.iter().map(Toml::render).collect();
                format!("[{}]", items.join(", "))
            }
            Toml::Inline(pairs) => {
                let pairs: Vec<String> = pairs.iter().map(|(k, v)| line(k, v)).collect();
                format!("{{ {} }}", pairs.join(", "))
            }
        }
    }
}

fn key(k: &str) -> String {
    let bare = !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare {
        k.to_string()
    } else {
        serde_json::to_string(k).unwrap()
    }
}

fn line(k: &str, v: &Toml) -> String {
    format!("{} = {}", key(k), v.render())
}

/// `impl From<$t> for Toml`, as `$make` of the value.
macro_rules! toml_from {
    ($($t:ty => $make:expr),* $(,)?) => {
        $(impl From<$t> for Toml {
            fn from(v: $t) -> Toml {
                $make(v)
            }
        })*
    };
}

toml_from! {
    &str => |s: &str| Toml::Str(s.to_string()),
    String => Toml::Str,
    &String => |s: &String| Toml::Str(s.clone()),
    &Path => |p: &Path| Toml::Str(p.display().to_string()),
    i64 => Toml::Int,
    i32 => |n: i32| Toml::Int(n.into()),
    usize => |n: usize| Toml::Int(n as i64),
    bool => Toml::Bool,
}

impl<T: Into<Toml>, const N: usize> From<[T; N]> for Toml {
    fn from(items: [T; N]) -> Toml {
        Toml::List(items.into_iter().map(Into::into).collect())
    }
}
impl<T: Into<Toml>> From<Vec<T>> for Toml {
    fn from(items: Vec<T>) -> Toml {
        Toml::List(items.into_iter().map(Into::into).collect())
    }
}

/// Keys in the order they were set; setting a key again replaces it.
#[derive(Clone, Debug, Default)]
pub struct Keys(Vec<(String, Toml)>);

impl Keys {
    fn of(pairs: &[(&str, &str)]) -> Keys {
        let mut keys = Keys::default();
        for (k, v) in pairs {
            keys.set(k, *v);
        }
        keys
    }

    /// The string value of `k`, if set to one.
    fn str(&self, k: &str) -> Option<&str> {
        self.0.iter().find_map(|(key, v)| match v {
            Toml::Str(s) if key == k => Some(s.as_str()),
            _ => None,
        })
    }

    fn set(&mut self, k: &str, v: impl Into<Toml>) {
        let v = v.into();
        match self.0.iter_mut().find(|(key, _)| key == k) {
            Some(slot) => slot.1 = v,
            None => self.0.push((k.to_string(), v)),
        }
    }

    fn render(&self, header: &str) -> String {
        let mut out = format!("{header}\n");
        for (k, v) in &self.0 {
            out.push_str(&line(k, v));
            out.push('\n');
        }
        out
    }

    fn inline(self) -> Toml {
        Toml::Inline(self.0)
    }
}

/// A whole relay.toml.
#[derive(Clone, Debug)]
pub struct RelayConfig {
    server: Keys,
    admin: Keys,
    storage: Keys,
    sources: Vec<Source>,
    destinations: Vec<Dest>,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl RelayConfig {
    /// Ephemeral loopback listeners, data in `data`, no routes yet.
    pub fn new() -> RelayConfig {
        let mut c = RelayConfig {
            server: Keys::default(),
            admin: Keys::default(),
            storage: Keys::default(),
            sources: Vec::new(),
            destinations: Vec::new(),
        };
        c.server.set("listen", "127.0.0.1:0");
        c.admin.set("listen", "127.0.0.1:0");
        c.storage.set("data_dir", "data");
        // Tests are about the relay, not about the free space of the
        // machine they run on (the default floor is 1 GiB); the disk tests
        // set their own.
        c.storage.set("min_free_bytes", 0);
        c
    }

    /// One source `s` at `/s`, and destination `d` at `url` fed by it.
    pub fn one_route(url: &str) -> RelayConfig {
        RelayConfig::new()
            .source(Source::new("s", "/s"))
            .destination(Dest::new("d", url).sources(["s"]))
    }

    /// [`RelayConfig::one_route`] with `f` applied to destination `d`.
    pub fn one_route_with(url: &str, f: impl FnOnce(Dest) -> Dest) -> RelayConfig {
        RelayConfig::one_route(url).edit_destination("d", f)
    }

    /// A `[server]` key.
    pub fn server(mut self, k: &str, v: impl Into<Toml>) -> Self {
        self.server.set(k, v);
        self
    }

    /// An `[admin]` key.
    pub fn admin(mut self, k: &str, v: impl Into<Toml>) -> Self {
        self.admin.set(k, v);
        self
    }

    /// The admin API's bearer token.
    pub fn token(self, token: &str) -> Self {
        self.admin("token", token)
    }

    /// A `[storage]` key.
    pub fn storage(mut self, k: &str, v: impl Into<Toml>) -> Self {
        self.storage.set(k, v);
        self
    }

    pub fn source(mut self, s: Source) -> Self {
        self.sources.push(s);
        self
    }

    pub fn destination(mut self, d: Dest) -> Self {
        self.destinations.push(d);
        self
    }

    /// Changes the destination named `name` (added by an earlier call).
    pub fn edit_destination(mut self, name: &str, f: impl FnOnce(Dest) -> Dest) -> Self {
        let at = self
            .destinations
            .iter()
            .position(|d| d.name() == Some(name))
            .unwrap_or_else(|| panic!("no destination {name}"));
        let d = self.destinations.remove(at);
        self.destinations.insert(at, f(d));
        self
    }

    /// The admin token, if the config sets one.
    pub fn admin_token(&self) -> Option<String> {
        self.admin
            .0
            .iter()
            .find_map(|(k, v)| match (k.as_str(), v) {
                ("token", Toml::Str(t)) => Some(t.clone()),
                _ => None,
            })
    }

    /// The TOML text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (header, keys) in [
            ("[server]", &self.server),
            ("[admin]", &self.admin),
            ("[storage]", &self.storage),
        ] {
            out.push_str(&keys.render(header));
            out.push('\n');
        }
        for s in &self.sources {
            out.push_str(&s.0.render("[[source]]"));
            out.push('\n');
        }
        for d in &self.destinations {
            out.push_str(&d.0.render("[[destination]]"));
            out.push('\n');
        }
        out
    }

    /// Writes `dir/relay.toml`; its path.
    pub fn write(&self, dir: &Path) -> PathBuf {
        let path = dir.join("relay.toml");
        std::fs::write(&path, self.render()).unwrap();
        path
    }
}

/// `set(key, value)` for builders that are a list of keys.
macro_rules! keyed {
    ($($t:ident),*) => {
        $(impl $t {
            pub fn set(mut self, k: &str, v: impl Into<Toml>) -> Self {
                self.0.set(k, v);
                self
            }
        })*
    };
}

keyed!(Source, Verify, Dest, Retry);

/// A `[[source]]`.
#[derive(Clone, Debug)]
pub struct Source(Keys);

impl Source {
    pub fn new(name: &str, path: &str) -> Source {
        Source(Keys::of(&[("name", name), ("path", path)]))
    }

    pub fn verify(self, v: Verify) -> Self {
        self.set("verify", v.0.inline())
    }
}

/// A source's `verify = { scheme = .., .. }`.
#[derive(Clone, Debug)]
pub struct Verify(Keys);

impl Verify {
    pub fn new(scheme: &str) -> Verify {
        Verify(Keys::of(&[("scheme", scheme)]))
    }

    /// Shorthand for the common `secret` key.
    pub fn secret(self, secret: &str) -> Self {
        self.set("secret", secret)
    }
}

/// A `[[destination]]`.
#[derive(Clone, Debug)]
pub struct Dest(Keys);

impl Dest {
    pub fn new(name: &str, url: &str) -> Dest {
        Dest(Keys::of(&[("name", name), ("url", url)]))
    }

    fn name(&self) -> Option<&str> {
        self.0.str("name")
    }

    pub fn sources<S: Into<Toml>>(self, names: impl IntoIterator<Item = S>) -> Self {
        self.set(
            "sources",
            Toml::List(names.into_iter().map(Into::into).collect()),
        )
    }

    pub fn retry(self, r: Retry) -> Self {
        self.set("retry", r.0.inline())
    }
}

/// A destination's `retry = { .. }`.
#[derive(Clone, Debug, Default)]
pub struct Retry(Keys);

impl Retry {
    /// Backoff from `initial` up to `max_interval` (humantime strings).
    pub fn every(initial: &str, max_interval: &str) -> Retry {
        Retry::default()
            .set("initial", initial)
            .set("max_interval", max_interval)
    }

    /// Retries fast and never gives up within a test.
    pub fn patient(initial: &str, max_interval: &str) -> Retry {
        Retry::every(initial, max_interval)
            .attempts(1_000_000)
            .set("max_age", "1h")
    }

    pub fn attempts(self, n: i64) -> Self {
        self.set("max_attempts", n)
    }
}

/// Writes `content` to `dir/name`, creating the folders on the way; its path.
pub fn write_file(dir: &Path, name: &str, content: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&path, content).unwrap();
    path
}
