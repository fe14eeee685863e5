//! The validation context: collects problems with their lines, and the shared
//! value parsers (durations, sizes, addresses, header names, paths, secrets).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::raw::{Text, TextList};
use super::units::{self, RawSize};
use super::{Problem, Secret};

/// 1-based line of a byte offset.
pub(super) fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    1 + text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
}

/// A key as it would be written in TOML: bare when possible, else quoted.
pub(super) fn show_key(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare {
        key.to_string()
    } else {
        format!("{key:?}")
    }
}

/// The ways one secret-bearing table can give its secret. `prefix` names the
/// keys: `{p}`, `{p}s`, `{p}_env`, `{p}s_env`, `{p}_file`.
pub(super) struct SecretKeys<'r> {
    pub prefix: &'static str,
    pub one: &'r Text,
    pub many: Option<&'r TextList>,
    pub env: &'r Text,
    pub many_env: Option<&'r TextList>,
    pub file: &'r Text,
}

impl SecretKeys<'_> {
    /// The forms present, as `(key name, span)`, in declaration order.
    pub fn given(&self) -> Vec<(String, Range<usize>)> {
        let p = self.prefix;
        let mut out = Vec::new();
        if let Some(v) = self.one {
            out.push((p.to_string(), v.span()));
        }
        if let Some(Some(v)) = self.many {
            out.push((format!("{p}s"), v.span()));
        }
        if let Some(v) = self.env {
            out.push((format!("{p}_env"), v.span()));
        }
        if let Some(Some(v)) = self.many_env {
            out.push((format!("{p}s_env"), v.span()));
        }
        if let Some(v) = self.file {
            out.push((format!("{p}_file"), v.span()));
        }
        out
    }

    /// "`secret`, `secrets`, `secret_env`, `secrets_env` or `secret_file`".
    pub fn choices(&self) -> String {
        let p = self.prefix;
        let mut names = vec![format!("`{p}`")];
        if self.many.is_some() {
            names.push(format!("`{p}s`"));
        }
        names.push(format!("`{p}_env`"));
        if self.many_env.is_some() {
            names.push(format!("`{p}s_env`"));
        }
        let last = format!("`{p}_file`");
        format!("{} or {last}", names.join(", "))
    }
}

/// A secret that was read, with where it was configured (for later checks).
pub(super) struct GivenSecret {
    pub secret: Secret,
    pub key: String,
    pub span: Range<usize>,
}

pub(super) struct Ctx<'a> {
    text: &'a str,
    dir: PathBuf,
    env: &'a dyn Fn(&str) -> Option<String>,
    pub problems: Vec<Problem>,
}

impl<'a> Ctx<'a> {
    pub fn new(text: &'a str, file: &Path, env: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Ctx {
            text,
            dir: file.parent().map(Path::to_path_buf).unwrap_or_default(),
            env,
            problems: Vec::new(),
        }
    }

    pub fn env(&self, name: &str) -> Option<String> {
        (self.env)(name)
    }

    /// 1-based line of a span's start.
    pub fn line(&self, span: &Range<usize>) -> usize {
        line_of(self.text, span.start)
    }

    /// Records a problem at `span`.
    pub fn problem(&mut self, span: Range<usize>, key: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            line: Some(self.line(&span)),
            key: key.to_string(),
            message: message.into(),
        });
    }

    /// Records a problem at a spanned value.
    pub fn at<T>(&mut self, v: &Spanned<T>, key: &str, message: impl Into<String>) {
        self.problem(v.span(), key, message);
    }

    /// A jq program, compiled; a syntax error names its position in the program.
    pub fn jq(&mut self, v: &Spanned<String>, key: &str) -> Option<crate::route::Program> {
        match crate::route::Program::compile(v.get_ref()) {
            Ok(p) => Some(p),
            Err(e) => {
                self.at(v, key, format!("invalid jq program: {e}"));
                None
            }
        }
    }

    /// Records a missing required key, at the line of its table.
    pub fn missing(&mut self, table: Range<usize>, key: &str) {
        self.problem(table, key, "required key is missing");
    }

    /// A path from the config, resolved against the config file's directory.
    pub fn resolve(&self, p: &str) -> PathBuf {
        self.dir.join(p)
    }

    pub fn duration(&mut self, v: &Text, key: &str, default: Duration) -> Duration {
        let Some(v) = v else { return default };
        match units::parse_duration(v.get_ref()) {
            Ok(d) => d,
            Err(e) => {
                self.at(v, key, e);
                default
            }
        }
    }

    /// A duration that must be more than zero.
    pub fn positive_duration(&mut self, v: &Text, key: &str, default: Duration) -> Duration {
        let d = self.duration(v, key, default);
        if let (Some(v), true) = (v, d.is_zero()) {
            self.at(v, key, "must be more than zero");
            return default;
        }
        d
    }

    /// A size that must be more than zero.
    pub fn size(&mut self, v: &Option<Spanned<RawSize>>, key: &str, default: u64) -> u64 {
        match self.size_or_zero(v, key, default) {
            0 => {
                if let Some(v) = v {
                    self.at(v, key, "must be more than zero");
                }
                default
            }
            n => n,
        }
    }

    /// A size where `0` is allowed (and means "off").
    pub fn size_or_zero(&mut self, v: &Option<Spanned<RawSize>>, key: &str, default: u64) -> u64 {
        let Some(v) = v else { return default };
        match units::parse_size(v.get_ref()) {
            Ok(n) => n,
            Err(e) => {
                self.at(v, key, e);
                default
            }
        }
    }

    pub fn socket_addr(&mut self, v: &Text, key: &str, default: SocketAddr) -> SocketAddr {
        let Some(v) = v else { return default };
        match v.get_ref().trim().parse() {
            Ok(a) => a,
            Err(_) => {
                let msg = format!(
                    "invalid listen address {:?} (use IP:PORT, e.g. \"127.0.0.1:8080\" or \"[::1]:8080\")",
                    v.get_ref()
                );
                self.at(v, key, msg);
                default
            }
        }
    }

    pub fn header_name(&mut self, v: &Spanned<String>, key: &str) -> Option<http::HeaderName> {
        match http::HeaderName::from_bytes(v.get_ref().as_bytes()) {
            Ok(h) => Some(h),
            Err(_) => {
                let msg = format!("invalid HTTP header name {:?}", v.get_ref());
                self.at(v, key, msg);
                None
            }
        }
    }

    /// An absolute http or https URL with a host. The URL is not echoed: it may carry credentials.
    pub fn http_url(&mut self, v: &Spanned<String>, key: &str) -> Option<http::Uri> {
        let uri = match v.get_ref().parse::<http::Uri>() {
            Ok(u) => u,
            Err(e) => {
                self.at(
                    v,
                    key,
                    format!("invalid URL: {e} (use e.g. \"https://example.com/path\")"),
                );
                return None;
            }
        };
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            self.at(v, key, "URL must start with http:// or https://");
            return None;
        }
        if uri.host().is_none_or(str::is_empty) {
            self.at(v, key, "URL has no host");
            return None;
        }
        // http::Uri accepts any digits as a port; a delivery needs a u16.
        let authority = uri.authority().map_or("", |a| a.as_str());
        if authority.contains('@') {
            // The client would never send them, and they would sit in the config's Debug output.
            self.at(
                v,
                key,
                "URL credentials (user:pass@) are not supported; use headers = { \"Authorization\" = \"...\" }",
            );
            return None;
        }
        let host_port = authority.rsplit('@').next().unwrap_or(authority);
        let after_host = host_port.rsplit(']').next().unwrap_or(host_port);
        if let Some((_, port)) = after_host.rsplit_once(':') {
            if !port.is_empty() && port.parse::<u16>().is_err() {
                self.at(v, key, "URL has an invalid port");
                return None;
            }
        }
        Some(uri)
    }

    /// A path that must name an existing file.
    pub fn existing_file(&mut self, v: &Spanned<String>, key: &str) -> Option<PathBuf> {
        let path = self.resolve(v.get_ref());
        if path.is_file() {
            Some(path)
        } else {
            let msg = format!("file {} does not exist", path.display());
            self.at(v, key, msg);
            None
        }
    }

    /// Reads every secret given through `keys` (in table `base`). More than
    /// one form is a problem (and nothing is read); every value that cannot
    /// be read is a problem.
    /// Whether the secret is required or allowed at all is the caller's call.
    pub fn read_secrets(&mut self, base: &str, keys: &SecretKeys<'_>) -> Vec<GivenSecret> {
        let given = keys.given();
        if let Some((first, _)) = given.first() {
            for (other, span) in given.iter().skip(1) {
                let msg = format!(
                    "`{first}` and `{other}` are both set; give the secret exactly one way"
                );
                self.problem(span.clone(), &format!("{base}.{other}"), msg);
            }
        }
        if given.len() > 1 {
            return Vec::new();
        }
        let p = keys.prefix;
        let mut out = Vec::new();
        type Read<'a> = fn(&mut Ctx<'a>, &Spanned<String>, &str, &mut Vec<GivenSecret>);
        let forms: [(&Text, Option<&TextList>, &str, Read<'a>); 2] = [
            (keys.one, keys.many, "", Ctx::literal),
            (keys.env, keys.many_env, "_env", Ctx::read_env),
        ];
        for (one, many, suffix, read) in forms {
            if let Some(v) = one {
                read(self, v, &format!("{base}.{p}{suffix}"), &mut out);
            }
            if let Some(Some(list)) = many {
                let key = format!("{base}.{p}s{suffix}");
                self.non_empty_list(list, &key);
                for (i, v) in list.get_ref().iter().enumerate() {
                    read(self, v, &format!("{key}[{i}]"), &mut out);
                }
            }
        }
        if let Some(v) = keys.file {
            let key = format!("{base}.{p}_file");
            self.read_file(v, &key, &mut out);
        }
        out
    }

    fn non_empty_list(&mut self, list: &Spanned<Vec<Spanned<String>>>, key: &str) {
        if list.get_ref().is_empty() {
            self.at(list, key, "must list at least one entry");
        }
    }

    fn literal(&mut self, v: &Spanned<String>, key: &str, out: &mut Vec<GivenSecret>) {
        if v.get_ref().is_empty() {
            self.at(v, key, "secret is empty");
            return;
        }
        out.push(GivenSecret {
            secret: Secret::new(v.get_ref().as_bytes()),
            key: key.to_string(),
            span: v.span(),
        });
    }

    fn read_env(&mut self, v: &Spanned<String>, key: &str, out: &mut Vec<GivenSecret>) {
        let name = v.get_ref();
        if name.is_empty() {
            self.at(v, key, "environment variable name is empty");
            return;
        }
        match self.env(name) {
            None => self.at(v, key, format!("environment variable {name} is not set")),
            Some(s) if s.is_empty() => {
                self.at(v, key, format!("environment variable {name} is empty"))
            }
            Some(s) => out.push(GivenSecret {
                secret: Secret::new(s),
                key: key.to_string(),
                span: v.span(),
            }),
        }
    }

    fn read_file(&mut self, v: &Spanned<String>, key: &str, out: &mut Vec<GivenSecret>) {
        let path = self.resolve(v.get_ref());
        match std::fs::read(&path) {
            Err(e) => {
                let msg = format!("cannot read secret file {}: {e}", path.display());
                self.at(v, key, msg);
            }
            Ok(mut bytes) => {
                while matches!(bytes.last(), Some(b'\n' | b'\r')) {
                    bytes.pop();
                }
                if bytes.is_empty() {
                    let msg = format!("secret file {} is empty", path.display());
                    self.at(v, key, msg);
                } else {
                    out.push(GivenSecret {
                        secret: Secret::new(bytes),
                        key: key.to_string(),
                        span: v.span(),
                    });
                }
            }
        }
    }
}

/// Remembers the first line of each value, to report duplicates.
#[derive(Default)]
pub(super) struct Seen(HashMap<String, usize>);

impl Seen {
    /// `Some(first line)` when `v` was seen before.
    pub fn check(&mut self, cx: &Ctx<'_>, v: &Spanned<String>) -> Option<usize> {
        match self.0.get(v.get_ref()) {
            Some(first) => Some(*first),
            None => {
                self.0.insert(v.get_ref().clone(), cx.line(&v.span()));
                None
            }
        }
    }
}

/// A valid, unique source or destination name.
pub(super) fn unique_name<N: std::str::FromStr<Err = crate::model::InvalidName>>(
    cx: &mut Ctx<'_>,
    seen: &mut Seen,
    v: &Spanned<String>,
    key: &str,
    what: &str,
) -> Option<N> {
    let name = match v.get_ref().parse::<N>() {
        Ok(n) => n,
        Err(e) => {
            cx.at(v, key, e.to_string());
            return None;
        }
    };
    if let Some(first) = seen.check(cx, v) {
        let msg = format!(
            "duplicate {what} name {:?} (first on line {first})",
            v.get_ref()
        );
        cx.at(v, key, msg);
        return None;
    }
    Some(name)
}
