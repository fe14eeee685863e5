//! From the raw tables to [`Config`]: defaults, units and cross-field rules
//! for `[server]`, `[admin]`, `[storage]` and the sources (their `verify`
//! tables: [`super::scheme`]; destinations: [`super::destination`]).
//! Every problem is collected; nothing stops at the first one.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use toml::Spanned;

use super::ctx::{unique_name, Ctx, SecretKeys, Seen};
use super::destination::destinations;
use super::raw::{
    OneOrMany, RawAdmin, RawConfig, RawNats, RawServer, RawSource, RawStorage, StorageBackend, Text,
};
use super::{
    scheme, AdminAccess, AdminConfig, Backend, Config, Durability, NatsAuth, NatsConfig, Problem,
    Secret, ServerConfig, SourceConfig, StorageConfig, StreamName, TlsConfig,
};
use crate::keys::{self, TlsIdentity, TlsKeyError};
use crate::model::SourceName;

/// Environment variable holding the admin token when `[admin]` names none.
const DEFAULT_TOKEN_ENV: &str = "HOOKRELAY_ADMIN_TOKEN";

pub(super) fn validate(
    raw: RawConfig,
    text: &str,
    file: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, Vec<Problem>> {
    let mut cx = Ctx::new(text, file, env);
    let server = server(&mut cx, raw.server.as_ref().map(Spanned::get_ref));
    let raw_admin = raw.admin.as_ref().map(Spanned::get_ref);
    let access = admin(&mut cx, raw_admin);
    let admin = AdminConfig {
        listen: access.listen,
        token: access.token,
        tls: raw_admin.and_then(|a| tls(&mut cx, "admin", &a.tls_cert_file, &a.tls_key_file)),
    };
    let storage = storage(&mut cx, raw.storage.as_ref().map(Spanned::get_ref));
    let sources = sources(&mut cx, &raw.source);
    // Names as written, valid or not, so a bad source does not also make
    // every destination naming it "unknown".
    let known: HashSet<&str> = raw
        .source
        .iter()
        .filter_map(|s| s.get_ref().name.as_ref().map(|n| n.get_ref().as_str()))
        .chain([crate::events::SOURCE])
        .collect();
    let destinations = destinations(&mut cx, &raw.destination, &known);
    super::reply::check(&mut cx, &raw.source, &sources, &destinations);
    // Port 0 picks a free port for each; a wildcard address takes the port
    // on every address.
    let (s, a) = (server.listen, admin.listen);
    let clash = s.port() != 0
        && s.port() == a.port()
        && (s.ip() == a.ip() || s.ip().is_unspecified() || a.ip().is_unspecified());
    if clash {
        let span = raw
            .admin
            .as_ref()
            .and_then(|a| a.get_ref().listen.as_ref())
            .map_or(0..0, Spanned::span);
        let msg = format!(
            "{a} clashes with server.listen {s}: the webhook and admin listeners need different ports"
        );
        cx.problem(span, "admin.listen", msg);
    }
    let mut problems = cx.problems;
    if problems.is_empty() {
        return Ok(Config {
            file: file.to_path_buf(),
            server,
            admin,
            storage,
            sources,
            destinations,
        });
    }
    problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
    Err(problems)
}

/// The `[admin]` table alone (see [`Config::load_admin`]): the TLS files
/// are only resolved, never read (the key is the service's secret).
pub(super) fn admin_only(
    raw: RawConfig,
    text: &str,
    file: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<AdminAccess, Vec<Problem>> {
    let mut cx = Ctx::new(text, file, env);
    let raw_admin = raw.admin.as_ref().map(Spanned::get_ref);
    let mut admin = admin(&mut cx, raw_admin);
    admin.tls_cert_file = raw_admin
        .and_then(|a| tls_files(&mut cx, "admin", &a.tls_cert_file, &a.tls_key_file))
        .map(|(cert, _)| cx.resolve(cert.get_ref()));
    if cx.problems.is_empty() {
        Ok(admin)
    } else {
        Err(cx.problems)
    }
}

/// Only what routing needs (source names, schemes and `event_type`
/// programs; destination names, sources and rules), for `hookrelay route
/// --body`: no secret is resolved and no file is read.
pub(super) fn routing_only(
    raw: RawConfig,
    text: &str,
    file: &Path,
) -> Result<super::RoutingConfig, Vec<Problem>> {
    use crate::route::EventTypeRule;
    let no_env = |_: &str| None;
    let mut cx = Ctx::new(text, file, &no_env);
    let mut out = super::RoutingConfig::default();
    for (i, s) in raw.source.iter().enumerate() {
        let r = s.get_ref();
        let Some(name) = r
            .name
            .as_ref()
            .and_then(|n| n.get_ref().parse::<SourceName>().ok())
        else {
            continue;
        };
        let scheme = r
            .verify
            .as_ref()
            .and_then(|v| v.get_ref().scheme.as_ref())
            .map_or(super::Scheme::None, |s| *s.get_ref());
        let rule = match &r.event_type {
            Some(p) => match cx.jq(p, &format!("source[{i}].event_type")) {
                Some(p) => EventTypeRule::Jq(p),
                None => continue,
            },
            None => EventTypeRule::Scheme(scheme),
        };
        out.sources.push((name, rule));
    }
    // Operator events carry their type in `.body.type`, as Standard Webhooks do.
    if let Ok(events) = crate::events::SOURCE.parse() {
        out.sources
            .push((events, EventTypeRule::Scheme(super::Scheme::Standard)));
    }
    for (i, d) in raw.destination.iter().enumerate() {
        let r = d.get_ref();
        let Some(name) = r.name.as_ref().and_then(|n| n.get_ref().parse().ok()) else {
            continue;
        };
        let sources = r.sources.as_ref().map_or_else(Vec::new, |l| {
            l.get_ref()
                .iter()
                .filter_map(|s| s.get_ref().parse().ok())
                .collect()
        });
        if let Some(rules) = super::destination::rules(&mut cx, r, &format!("destination[{i}]")) {
            out.destinations.push((name, sources, rules));
        }
    }
    if cx.problems.is_empty() {
        Ok(out)
    } else {
        Err(cx.problems)
    }
}

fn server(cx: &mut Ctx<'_>, raw: Option<&RawServer>) -> ServerConfig {
    let default = ServerConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
        max_body_bytes: 1 << 20,
        request_timeout: Duration::from_secs(30),
        tls: None,
    };
    let Some(r) = raw else { return default };
    ServerConfig {
        listen: cx.socket_addr(&r.listen, "server.listen", default.listen),
        max_body_bytes: cx.size(
            &r.max_body_bytes,
            "server.max_body_bytes",
            default.max_body_bytes,
        ),
        request_timeout: cx.positive_duration(
            &r.request_timeout,
            "server.request_timeout",
            default.request_timeout,
        ),
        tls: tls(cx, "server", &r.tls_cert_file, &r.tls_key_file),
    }
}

/// `tls_cert_file` and `tls_key_file` of `[table]`: both or neither. The
/// two values when both are set; a problem naming the missing one otherwise.
fn tls_files<'r>(
    cx: &mut Ctx<'_>,
    table: &str,
    cert: &'r Text,
    key: &'r Text,
) -> Option<(&'r Spanned<String>, &'r Spanned<String>)> {
    let mut usable = true;
    for (v, name) in [(cert, "tls_cert_file"), (key, "tls_key_file")] {
        if let Some(v) = v.as_ref().filter(|v| v.get_ref().trim().is_empty()) {
            cx.at(v, &format!("{table}.{name}"), "must not be empty");
            usable = false;
        }
    }
    match (cert, key) {
        (None, None) => None,
        (Some(c), Some(k)) => usable.then_some((c, k)),
        (Some(c), None) => {
            let msg = "required key is missing: `tls_cert_file` is set, and TLS needs both files (or neither)";
            cx.at(c, &format!("{table}.tls_key_file"), msg);
            None
        }
        (None, Some(k)) => {
            let msg = "required key is missing: `tls_key_file` is set, and TLS needs both files (or neither)";
            cx.at(k, &format!("{table}.tls_cert_file"), msg);
            None
        }
    }
}

/// `[table]`'s TLS identity: both files read and decoded, the key checked
/// against the certificate, each problem on the key of the file at fault.
fn tls(cx: &mut Ctx<'_>, table: &str, cert: &Text, key: &Text) -> Option<TlsConfig> {
    let (c, k) = tls_files(cx, table, cert, key)?;
    let (cert_key, key_key) = (
        format!("{table}.tls_cert_file"),
        format!("{table}.tls_key_file"),
    );
    let cert_file = cx.resolve(c.get_ref());
    let key_file = cx.resolve(k.get_ref());
    let chain = match std::fs::read(&cert_file) {
        Err(e) => {
            let msg = format!("cannot read certificate file {}: {e}", cert_file.display());
            cx.at(c, &cert_key, msg);
            None
        }
        Ok(pem) => keys::cert_chain_of_pem(&pem)
            .map_err(|e| cx.at(c, &cert_key, format!("{}: {e}", cert_file.display())))
            .ok(),
    };
    let private = match std::fs::read(&key_file) {
        Err(e) => {
            let msg = format!("cannot read key file {}: {e}", key_file.display());
            cx.at(k, &key_key, msg);
            None
        }
        Ok(pem) => keys::private_key_of_pem(&pem)
            .map_err(|e| cx.at(k, &key_key, format!("{}: {e}", key_file.display())))
            .ok(),
    };
    match TlsIdentity::new(chain?, private?) {
        Ok(identity) => Some(TlsConfig {
            cert_file,
            key_file,
            identity,
        }),
        Err(e) => {
            let (v, name, path) = if e.is_about_key() {
                (k, &key_key, &key_file)
            } else {
                (c, &cert_key, &cert_file)
            };
            let mut msg = format!("{}: {e}", path.display());
            if matches!(e, TlsKeyError::Mismatch) {
                msg.push_str(&format!(" in {}", cert_file.display()));
            }
            cx.at(v, name, msg);
            None
        }
    }
}

/// `[admin]` without its TLS files (read by [`tls`] or [`tls_files`]).
fn admin(cx: &mut Ctx<'_>, raw: Option<&RawAdmin>) -> AdminAccess {
    let default_listen = SocketAddr::from(([127, 0, 0, 1], 8081));
    let from_default_env = |cx: &Ctx<'_>| {
        cx.env(DEFAULT_TOKEN_ENV)
            .filter(|v| !v.is_empty())
            .map(Secret::new)
    };
    let Some(a) = raw else {
        return AdminAccess {
            listen: default_listen,
            token: from_default_env(cx),
            tls_cert_file: None,
        };
    };
    let listen = cx.socket_addr(&a.listen, "admin.listen", default_listen);
    let keys = SecretKeys {
        prefix: "token",
        one: &a.token,
        many: None,
        env: &a.token_env,
        many_env: None,
        file: &a.token_file,
    };
    let explicit = !keys.given().is_empty();
    let token = if explicit {
        cx.read_secrets("admin", &keys)
            .into_iter()
            .next()
            .map(|g| g.secret)
    } else {
        from_default_env(cx)
    };
    if let (Some(l), false) = (&a.listen, explicit || token.is_some()) {
        if !listen.ip().is_loopback() {
            let msg = format!(
                "{listen} is not a loopback address, so the admin API needs a token: \
                 set `token`, `token_env` or `token_file` (or {DEFAULT_TOKEN_ENV})"
            );
            cx.at(l, "admin.listen", msg);
        }
    }
    AdminAccess {
        listen,
        token,
        tls_cert_file: None,
    }
}

fn storage(cx: &mut Ctx<'_>, raw: Option<&RawStorage>) -> StorageConfig {
    let default = StorageConfig {
        data_dir: cx.resolve("data"),
        durability: Durability::Fsync,
        retention: Duration::from_secs(7 * 86400),
        max_disk_bytes: 10 << 30,
        min_free_bytes: 1 << 30,
        backend: Backend::Sled,
    };
    let Some(r) = raw else { return default };
    let data_dir = match &r.data_dir {
        Some(d) if d.get_ref().is_empty() => {
            cx.at(d, "storage.data_dir", "must not be empty");
            default.data_dir
        }
        Some(d) => cx.resolve(d.get_ref()),
        None => default.data_dir,
    };
    StorageConfig {
        data_dir,
        durability: r
            .durability
            .as_ref()
            .map_or(default.durability, |d| *d.get_ref()),
        retention: cx.positive_duration(&r.retention, "storage.retention", default.retention),
        max_disk_bytes: cx.size(
            &r.max_disk_bytes,
            "storage.max_disk_bytes",
            default.max_disk_bytes,
        ),
        min_free_bytes: cx.size_or_zero(
            &r.min_free_bytes,
            "storage.min_free_bytes",
            default.min_free_bytes,
        ),
        backend: backend(cx, r),
    }
}

/// `storage.backend` and `storage.nats`: the table is required with `nats`
/// and refused with `sled`, so a half-written fleet config never silently
/// runs as a lone relay.
fn backend(cx: &mut Ctx<'_>, r: &RawStorage) -> Backend {
    let chosen = r.backend.as_ref().map(|b| *b.get_ref());
    match (chosen, &r.nats) {
        (None | Some(StorageBackend::Sled), None) => Backend::Sled,
        (None | Some(StorageBackend::Sled), Some(n)) => {
            let msg = "is only read with backend = \"nats\"; set that, or remove this table";
            cx.at(n, "storage.nats", msg);
            Backend::Sled
        }
        (Some(StorageBackend::Nats), None) => {
            let b = r.backend.as_ref().map(|b| b.span()).unwrap_or_default();
            let msg = "backend = \"nats\" needs a `nats` table (url, stream, replicas)";
            cx.problem(b, "storage.nats", msg.to_owned());
            Backend::Sled
        }
        (Some(StorageBackend::Nats), Some(n)) => Backend::Nats(nats(cx, n)),
    }
}

fn nats(cx: &mut Ctx<'_>, n: &Spanned<RawNats>) -> NatsConfig {
    let r = n.get_ref();
    let mut urls = Vec::new();
    match &r.url {
        None => cx.missing(n.span(), "storage.nats.url"),
        Some(u) => {
            let given: Vec<&str> = match u.get_ref() {
                OneOrMany::One(one) => vec![one.as_str()],
                OneOrMany::Many(many) => many.iter().map(String::as_str).collect(),
            };
            if given.is_empty() {
                cx.at(u, "storage.nats.url", "must list at least one server");
            }
            for url in given {
                match nats_url(url) {
                    Ok(()) => urls.push(url.to_owned()),
                    Err(why) => cx.at(u, "storage.nats.url", format!("{url:?}: {why}")),
                }
            }
        }
    }
    let stream = match &r.stream {
        None => StreamName::parse("hookrelay"),
        Some(s) => {
            let parsed = StreamName::parse(s.get_ref());
            if parsed.is_none() {
                cx.at(s, "storage.nats.stream", "must be 1-32 of A-Z a-z 0-9 _ -");
            }
            parsed
        }
    };
    let replicas = match &r.replicas {
        None => 1,
        Some(v) => match *v.get_ref() {
            n @ (1 | 3 | 5) => n as usize,
            _ => {
                let msg =
                    "must be 1, 3 or 5 (JetStream keeps a majority; 3 survives one server lost)";
                cx.at(v, "storage.nats.replicas", msg);
                1
            }
        },
    };
    let ack_wait = cx.positive_duration(
        &r.ack_wait,
        "storage.nats.ack_wait",
        Duration::from_secs(30),
    );
    if ack_wait < Duration::from_secs(1) {
        if let Some(v) = &r.ack_wait {
            cx.at(v, "storage.nats.ack_wait", "must be at least 1s");
        }
    }
    NatsConfig {
        urls,
        stream: stream.unwrap_or_else(|| StreamName("hookrelay".into())),
        replicas,
        ack_wait,
        auth: nats_auth(cx, r),
    }
}

/// `nats://` or `tls://` with a host; the client parses the rest.
fn nats_url(url: &str) -> Result<(), &'static str> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err("expected nats://host:port");
    };
    if !matches!(scheme, "nats" | "tls") {
        return Err("the scheme must be nats or tls");
    }
    let authority = rest.split('/').next().unwrap_or_default();
    let host = authority.rsplit('@').next().unwrap_or_default();
    if host.is_empty() || host.starts_with(':') {
        return Err("no host");
    }
    if authority.contains('@') {
        return Err("put credentials in token, user/password or credentials_file, not the URL");
    }
    Ok(())
}

/// At most one of token, user and password, or credentials file.
fn nats_auth(cx: &mut Ctx<'_>, r: &RawNats) -> NatsAuth {
    let token_keys = SecretKeys {
        prefix: "token",
        one: &r.token,
        many: None,
        env: &r.token_env,
        many_env: None,
        file: &r.token_file,
    };
    let password_keys = SecretKeys {
        prefix: "password",
        one: &r.password,
        many: None,
        env: &r.password_env,
        many_env: None,
        file: &r.password_file,
    };
    let ways = [
        token_keys
            .given()
            .first()
            .map(|(k, s)| (k.to_string(), s.clone())),
        r.user.as_ref().map(|u| ("user".to_string(), u.span())),
        r.credentials_file
            .as_ref()
            .map(|c| ("credentials_file".to_string(), c.span())),
    ];
    let ways: Vec<_> = ways.into_iter().flatten().collect();
    if let [(first, _), rest @ ..] = ways.as_slice() {
        for (other, span) in rest {
            let msg = format!("`{first}` and `{other}` are both set; authenticate one way");
            cx.problem(span.clone(), &format!("storage.nats.{other}"), msg);
        }
        if !rest.is_empty() {
            return NatsAuth::None;
        }
    }
    if !token_keys.given().is_empty() {
        return cx
            .read_secrets("storage.nats", &token_keys)
            .into_iter()
            .next()
            .map_or(NatsAuth::None, |g| NatsAuth::Token(g.secret));
    }
    if let Some(file) = &r.credentials_file {
        return cx
            .existing_file(file, "storage.nats.credentials_file")
            .map_or(NatsAuth::None, NatsAuth::CredentialsFile);
    }
    let password = cx
        .read_secrets("storage.nats", &password_keys)
        .into_iter()
        .next();
    match (&r.user, password) {
        (Some(user), Some(p)) => NatsAuth::UserPassword {
            user: user.get_ref().clone(),
            password: p.secret,
        },
        (Some(user), None) if password_keys.given().is_empty() => {
            cx.at(
                user,
                "storage.nats.password",
                "`user` needs `password`, `password_env` or `password_file`",
            );
            NatsAuth::None
        }
        (None, Some(p)) => {
            cx.problem(
                p.span,
                "storage.nats.user",
                "a password needs `user`".to_owned(),
            );
            NatsAuth::None
        }
        _ => NatsAuth::None,
    }
}

fn sources(cx: &mut Ctx<'_>, raw: &[Spanned<RawSource>]) -> Vec<SourceConfig> {
    let mut names = Seen::default();
    let mut paths = Seen::default();
    let mut out = Vec::new();
    for (i, s) in raw.iter().enumerate() {
        let base = format!("source[{i}]");
        let r = s.get_ref();
        let name = match &r.name {
            None => {
                cx.missing(s.span(), &format!("{base}.name"));
                None
            }
            Some(n) if n.get_ref() == crate::events::SOURCE => {
                let msg = "\"hookrelay\" is reserved for the relay's own operator events \
                           (list it in a destination's sources to receive them)";
                cx.at(n, &format!("{base}.name"), msg);
                None
            }
            Some(n) => {
                unique_name::<SourceName>(cx, &mut names, n, &format!("{base}.name"), "source")
            }
        };
        let path = match &r.path {
            None => {
                cx.missing(s.span(), &format!("{base}.path"));
                None
            }
            Some(p) => source_path(cx, &mut paths, p, &format!("{base}.path")),
        };
        let verify = scheme::verify(cx, &base, r.verify.as_ref());
        let dedup_window = cx.duration(
            &r.dedup_window,
            &format!("{base}.dedup_window"),
            Duration::from_secs(86400),
        );
        let dedup_header = r
            .dedup_header
            .as_ref()
            .and_then(|h| cx.header_name(h, &format!("{base}.dedup_header")));
        let program = r
            .event_type
            .as_ref()
            .map(|p| cx.jq(p, &format!("{base}.event_type")));
        let reply = match &r.reply {
            None => Some(None),
            Some(raw) => super::reply::reply(cx, &base, raw).map(Some),
        };
        if let (Some(name), Some(path), Some(verify), Some(reply)) = (name, path, verify, reply) {
            let event_type = match program {
                Some(Some(p)) => crate::route::EventTypeRule::Jq(p),
                Some(None) => continue,
                None => crate::route::EventTypeRule::Scheme(verify.scheme()),
            };
            out.push(SourceConfig {
                name,
                path,
                verify,
                dedup_window,
                dedup_header,
                event_type,
                reply,
            });
        }
    }
    out
}

fn source_path(
    cx: &mut Ctx<'_>,
    seen: &mut Seen,
    v: &Spanned<String>,
    key: &str,
) -> Option<String> {
    let p = v.get_ref();
    if !p.starts_with('/') {
        cx.at(
            v,
            key,
            format!("path {p:?} must start with `/`, e.g. \"/hooks/stripe\""),
        );
        return None;
    }
    if p.contains(['?', '#']) || p.parse::<http::uri::PathAndQuery>().is_err() {
        cx.at(
            v,
            key,
            format!("invalid path {p:?}: use a plain URL path without query"),
        );
        return None;
    }
    if let Some(first) = seen.check(cx, v) {
        cx.at(
            v,
            key,
            format!("duplicate source path {p:?} (first on line {first})"),
        );
        return None;
    }
    Some(p.clone())
}
