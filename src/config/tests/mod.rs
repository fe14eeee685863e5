//! Validation rules, one by one. Units and secrets have their own tests in
//! their modules; file-based cases live in `tests/config.rs`.

use std::path::Path;
use std::time::Duration;

use super::*;

mod schemes;

const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn env(name: &str) -> Option<String> {
    match name {
        "SET" => Some("s3cr3t-from-env".into()),
        "OTHER" => Some("other-from-env".into()),
        "EMPTY" => Some(String::new()),
        "WHSEC" => Some(WHSEC.into()),
        _ => None,
    }
}

fn env_with_admin(name: &str) -> Option<String> {
    match name {
        "HOOKRELAY_ADMIN_TOKEN" => Some("admin-from-env".into()),
        other => env(other),
    }
}

fn load(text: &str) -> Result<Config, Vec<Problem>> {
    Config::from_str_with_env(text, Path::new("relay.toml"), &env).map_err(|e| match e {
        ConfigError::Invalid { problems, .. } => problems,
        other => panic!("unexpected {other}"),
    })
}

fn problems(text: &str) -> Vec<Problem> {
    match load(text) {
        Ok(_) => panic!("config was accepted:\n{text}"),
        Err(p) => p,
    }
}

/// The 1-based line of the first line containing `needle`.
fn line(text: &str, needle: &str) -> Option<usize> {
    text.lines().position(|l| l.contains(needle)).map(|i| i + 1)
}

/// Exactly one problem, at the line containing `needle`, for `key`, whose message contains `msg`.
fn assert_one(text: &str, needle: &str, key: &str, msg: &str) {
    let ps = problems(text);
    assert_eq!(ps.len(), 1, "expected one problem, got {ps:#?}");
    assert_problem(&ps[0], text, needle, key, msg);
}

fn assert_problem(p: &Problem, text: &str, needle: &str, key: &str, msg: &str) {
    assert_eq!(p.key, key, "{p:?}");
    assert_eq!(p.line, line(text, needle), "{p:?}");
    assert!(
        p.message.contains(msg),
        "{:?} does not contain {msg:?}",
        p.message
    );
}

const SRC: &str = "[[source]]\nname = \"a\"\npath = \"/a\"\n";

fn with_dest(extra: &str) -> String {
    format!("{SRC}\n[[destination]]\nname = \"d\"\nurl = \"http://127.0.0.1:9000/x\"\nsources = [\"a\"]\n{extra}\n")
}

fn with_verify(verify: &str) -> String {
    format!("[[source]]\nname = \"a\"\npath = \"/a\"\nverify = {{ {verify} }}\n")
}

/// A source with this verify table has exactly one problem, at the line of
/// `verify`, on `source[0].verify` + `key`, saying `msg`.
fn refuse_verify(verify: &str, key: &str, msg: &str) {
    let key = format!("source[0].verify{key}");
    assert_one(&with_verify(verify), "verify", &key, msg);
}

/// A destination with `extra` has exactly one problem, at the line of
/// `needle`, on `destination[0].` + `key`, saying `msg`.
fn refuse_dest(extra: &str, needle: &str, key: &str, msg: &str) {
    let key = format!("destination[0].{key}");
    assert_one(&with_dest(extra), needle, &key, msg);
}

#[test]
fn an_empty_file_gives_every_default() {
    let c = load("").unwrap();
    assert_eq!(c.server.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(c.server.max_body_bytes, 1 << 20);
    assert_eq!(c.server.request_timeout, Duration::from_secs(30));
    assert_eq!(c.admin.listen, "127.0.0.1:8081".parse().unwrap());
    assert!(c.admin.token.is_none());
    assert_eq!(c.storage.data_dir, Path::new("data"));
    assert_eq!(c.storage.durability, Durability::Fsync);
    assert_eq!(c.storage.retention, Duration::from_secs(7 * 86400));
    assert_eq!(c.storage.max_disk_bytes, 10 << 30);
    assert!(c.sources.is_empty() && c.destinations.is_empty());
}

#[test]
fn source_and_destination_defaults() {
    let c = load(&with_dest("")).unwrap();
    let s = &c.sources[0];
    assert_eq!(s.verify.scheme(), Scheme::None);
    assert!(s.verify.shared_secrets().is_empty());
    assert_eq!(s.dedup_window, Duration::from_secs(86400));
    assert!(s.dedup_header.is_none());
    let d = &c.destinations[0];
    assert_eq!(d.url, "http://127.0.0.1:9000/x");
    assert_eq!(d.sources, vec!["a".parse().unwrap()]);
    assert_eq!(d.timeout, Duration::from_secs(10));
    assert_eq!(d.ordering, DeliveryOrder::Strict);
    assert_eq!(d.max_in_flight, 1);
    assert!(d.rate_limit.is_none() && d.signing.is_none() && d.ca_file.is_none());
    assert!(d.headers.is_empty() && d.forward_headers.is_empty());
    assert_eq!(
        d.retry,
        RetryPolicy {
            schedule: Schedule::Exponential,
            initial: Duration::from_secs(1),
            max_interval: Duration::from_secs(600),
            max_attempts: 20,
            max_age: Duration::from_secs(72 * 3600),
        }
    );
    assert_eq!(d.on_exhausted, OnExhausted::DeadLetter);
    assert!(c.source(&"a".parse().unwrap()).is_some());
    assert!(c.destination(&"d".parse().unwrap()).is_some());
    assert!(c.destination(&"zz".parse().unwrap()).is_none());
}

#[test]
fn admin_token_defaults_to_the_env_var_when_set() {
    let c = Config::from_str_with_env("", Path::new("relay.toml"), &env_with_admin).unwrap();
    assert_eq!(c.admin.token.unwrap().expose(), b"admin-from-env");
}

#[test]
fn syntax_errors_give_the_line() {
    let text = "[server]\nlisten = \"127.0.0.1:1\"\nrequest_timeout = \"30s\nx = 1\n";
    let ps = problems(text);
    assert_eq!(ps.len(), 1);
    assert_eq!(ps[0].line, Some(3));
    assert_eq!(ps[0].key, "");
}

#[test]
fn unknown_keys_name_the_key_and_line() {
    assert_one(
        "[server]\nlisten = \"127.0.0.1:1\"\nlistn = 1\n",
        "listn",
        "server.listn",
        "unknown key (expected one of: `listen`, `max_body_bytes`, `request_timeout`, `tls_cert_file`, `tls_key_file`)",
    );
    assert_one("[serve]\n", "[serve]", "serve", "unknown key");
    refuse_dest(
        "retry = { initial = \"1s\", tries = 3 }",
        "tries",
        "retry.tries",
        "unknown key (expected one of: `schedule`, ",
    );
    let text = with_verify("scheme = \"github\", secret = \"x\", colour = \"red\"");
    assert_one(&text, "colour", "source[0].verify.colour", "unknown key");
    // The keys listed are those of the scheme in use, not of every scheme.
    let msg = &problems(&text)[0].message;
    let want = "unknown key (scheme \"github\" takes `scheme`, `secret`, `secrets`, `secret_env`, `secrets_env`, `secret_file`)";
    assert_eq!(msg, want);
    let text = with_verify("scheme = \"discord\", public_key = \"x\", secret_fil = \"f\"");
    let msg = &problems(&text)[0].message;
    assert!(
        msg.ends_with("scheme \"discord\" takes `scheme`, `tolerance`, `public_key`)"),
        "{msg}"
    );
    // Without a known scheme, every key a verify table can hold.
    let text = with_verify("scheme = \"githb\", colour = \"red\"");
    let ps = problems(&text);
    let colour = ps.iter().find(|p| p.key == "source[0].verify.colour");
    assert!(
        colour.is_some_and(|p| p.message.contains("expected one of: `scheme`, `secret`")),
        "{ps:#?}"
    );
}

#[test]
fn every_unknown_key_is_reported_at_its_own_line() {
    // A table header, a plain key, a dotted key, an inline table, a table
    // under an array of tables, and a key of a table the file does not have.
    let text = "[server]\nlisten = \"127.0.0.1:1\"\nlistne = \"x\"\n\n\
                [[source]]\nname = \"a\"\npath = \"/a\"\nverify = { scheme = \"github\", secret = \"x\", colour = \"red\" }\n\n\
                [[destination]]\nname = \"d\"\nurl = \"http://h/\"\nsources = [\"a\"]\nretry.tries = 3\n\n\
                [[destination]]\nname = \"e\"\nurl = \"http://h/\"\nsources = [\"a\"]\nretyr = { initial = \"1s\" }\n\n\
                [destination.signing]\nsecret_env = \"WHSEC\"\nsecret_envv = \"X\"\n\n\
                [serve.deep]\nx = 1\n";
    let got: Vec<(Option<usize>, String)> = problems(text)
        .into_iter()
        .map(|p| (p.line, p.key))
        .collect();
    let want = [
        (line(text, "listne"), "server.listne"),
        (line(text, "colour"), "source[0].verify.colour"),
        (line(text, "tries"), "destination[0].retry.tries"),
        (line(text, "retyr"), "destination[1].retyr"),
        (
            line(text, "secret_envv"),
            "destination[1].signing.secret_envv",
        ),
        (line(text, "[serve.deep]"), "serve"),
    ];
    let want: Vec<(Option<usize>, String)> =
        want.into_iter().map(|(l, k)| (l, k.to_string())).collect();
    assert_eq!(got, want);
}

#[test]
fn unknown_keys_come_with_every_other_problem() {
    let text = with_dest(
        "timeout = \"10x\"\nmax_in_flight = \"one\"\nordering = \"random\"\ncolour = \"red\"\n\
         retry = { initial = \"1s\", max_attempts = \"lots\", tries = 3 }",
    );
    let text = text.replace(
        "path = \"/a\"\n",
        "path = \"/a\"\nverify = { scheme = \"stripe\", secret = \"x\", prefix = \"p\", colour = 1 }\n",
    );
    let got: Vec<(Option<usize>, &str, String)> = problems(&text)
        .into_iter()
        .map(|p| {
            let kind = if p.message.starts_with("unknown key") {
                "unknown"
            } else if p.message.starts_with("invalid type")
                || p.message.starts_with("unknown variant")
            {
                "type"
            } else {
                "value"
            };
            (p.line, kind, p.key)
        })
        .collect();
    let want = [
        (
            line(&text, "colour = 1"),
            "unknown",
            "source[0].verify.colour",
        ),
        (line(&text, "prefix"), "value", "source[0].verify.prefix"),
        (line(&text, "10x"), "value", "destination[0].timeout"),
        (
            line(&text, "max_in_flight"),
            "type",
            "destination[0].max_in_flight",
        ),
        (line(&text, "random"), "type", "destination[0].ordering"),
        (
            line(&text, "colour = \"red\""),
            "unknown",
            "destination[0].colour",
        ),
        (
            line(&text, "tries"),
            "unknown",
            "destination[0].retry.tries",
        ),
        (
            line(&text, "lots"),
            "type",
            "destination[0].retry.max_attempts",
        ),
    ];
    let want: Vec<(Option<usize>, &str, String)> = want
        .into_iter()
        .map(|(l, kind, k)| (l, kind, k.to_string()))
        .collect();
    assert_eq!(got, want);
}

#[test]
fn a_value_of_the_wrong_type_is_not_also_missing() {
    // `name` is required and `github` needs a secret: neither is reported
    // again for the value that had the wrong type.
    let text =
        "[[source]]\nname = 5\npath = \"/a\"\nverify = { scheme = \"github\", secret = 5 }\n";
    let keys: Vec<String> = problems(text).into_iter().map(|p| p.key).collect();
    assert_eq!(keys, ["source[0].name", "source[0].verify.secret"]);
    let text = with_dest("signing = { secret = [\"x\"] }");
    let keys: Vec<String> = problems(&text).into_iter().map(|p| p.key).collect();
    assert_eq!(keys, ["destination[0].signing.secret"]);
    // A whole table of the wrong type.
    let text = format!(
        "{}\n[server]\nlisten = \"127.0.0.1:1\"\n",
        with_dest("retry = 3")
    );
    let keys: Vec<String> = problems(&text).into_iter().map(|p| p.key).collect();
    assert_eq!(keys, ["destination[0].retry"]);
}

#[test]
fn a_signing_secret_written_as_a_string_is_not_echoed() {
    let text = with_dest("signing = \"whsec_TOPSECRET\"");
    let ps = problems(&text);
    assert_eq!(ps.len(), 1, "{ps:#?}");
    assert_eq!(ps[0].key, "destination[0].signing");
    assert!(!ps[0].message.contains("TOPSECRET"), "{:?}", ps[0]);
    assert!(ps[0].message.starts_with("must be a table"), "{:?}", ps[0]);
}

#[test]
fn parsing_gives_up_after_many_values_of_the_wrong_type() {
    let mut text = String::from(SRC);
    for i in 0..150 {
        text.push_str(&format!(
            "[[destination]]\nname = \"d{i}\"\nurl = \"http://h/\"\nsources = [\"a\"]\ntimeout = 1\n"
        ));
    }
    let ps = problems(&text);
    assert_eq!(ps.len(), 101, "{ps:#?}");
    assert_eq!(ps[99].key, "destination[99].timeout");
    assert_eq!(
        ps[100].message,
        "stopped after 100 values of the wrong type; fix these first"
    );
}

#[test]
fn the_unknown_key_walk_knows_every_raw_field() {
    // The lists come from serde; a struct that stopped deriving its fields
    // would make every key unknown.
    assert_eq!(
        raw::fields::<raw::RawRetry>(),
        [
            "schedule",
            "initial",
            "max_interval",
            "max_attempts",
            "max_age"
        ]
    );
    assert_eq!(
        raw::fields::<raw::RawConfig>(),
        ["server", "admin", "storage", "source", "destination"]
    );
    assert!(load(CONTRACT_LIKE).is_ok());
}

/// Every table and key the config takes, once.
const CONTRACT_LIKE: &str = r#"
[server]
listen = "127.0.0.1:8080"
max_body_bytes = "1MiB"
request_timeout = "30s"
[admin]
listen = "127.0.0.1:8081"
token = "t"
[storage]
data_dir = "data"
durability = "fsync"
retention = "7d"
max_disk_bytes = "10GiB"
[[source]]
name = "a"
path = "/a"
verify = { scheme = "stripe", secret = "x", tolerance = "5m" }
dedup_window = "24h"
dedup_header = "x-id"
[[destination]]
name = "d"
url = "http://127.0.0.1:9000/"
sources = ["a"]
timeout = "10s"
ordering = "strict"
max_in_flight = 1
rate_limit = "50/s"
headers = { "X-Env" = "prod" }
forward_headers = ["x-github-event"]
signing = { secret_env = "WHSEC" }
retry = { schedule = "exponential", initial = "1s", max_interval = "10m", max_attempts = 20, max_age = "72h" }
on_exhausted = "dead_letter"
"#;

#[test]
fn wrong_types_name_the_key_and_line() {
    assert_one(
        "[server]\n\nlisten = 8080\n",
        "8080",
        "server.listen",
        "invalid type",
    );
    refuse_dest(
        "ordering = \"random\"",
        "random",
        "ordering",
        "unknown variant",
    );
}

#[test]
fn wrong_types_on_secrets_do_not_echo_the_value() {
    let text = with_verify("scheme = \"github\", secrets = \"TOPSECRET\"");
    let ps = problems(&text);
    assert_eq!(ps[0].key, "source[0].verify.secrets");
    assert!(!ps[0].message.contains("TOPSECRET"), "{:?}", ps[0]);
}

#[test]
fn problems_print_as_file_line_key_message() {
    let text = with_dest("timeout = \"10x\"");
    let err = Config::from_str_with_env(&text, Path::new("relay.toml"), &env).unwrap_err();
    let n = line(&text, "10x").unwrap();
    assert_eq!(
        err.to_string(),
        format!(
            "relay.toml:{n}: destination[0].timeout: invalid duration \"10x\" (use e.g. \"500ms\", \"30s\", \"5m\", \"72h\", \"7d\")"
        )
    );
}

#[test]
fn all_problems_are_reported_in_line_order() {
    let text = "[server]\nrequest_timeout = \"soon\"\n[storage]\nmax_disk_bytes = \"lots\"\n\
                [[source]]\nname = \"Bad Name\"\npath = \"nope\"\n\
                [[destination]]\nname = \"d\"\nurl = \"ftp://x\"\nsources = [\"zz\"]\ntimeout = \"0s\"\n";
    let ps = problems(text);
    let keys: Vec<&str> = ps.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "server.request_timeout",
            "storage.max_disk_bytes",
            "source[0].name",
            "source[0].path",
            "destination[0].url",
            "destination[0].sources[0]",
            "destination[0].timeout",
        ]
    );
    let lines: Vec<usize> = ps.iter().map(|p| p.line.unwrap()).collect();
    assert_eq!(lines, [2, 4, 6, 7, 10, 11, 12]);
}

#[test]
fn duplicate_source_names_and_paths_are_refused() {
    let text = format!(
        "{SRC}[[source]]\nname = \"a\"\npath = \"/b\"\n[[source]]\nname = \"c\"\npath = \"/a\"\n"
    );
    let ps = problems(&text);
    assert_eq!(ps.len(), 2, "{ps:#?}");
    assert_eq!(
        (ps[0].key.as_str(), ps[0].line),
        ("source[1].name", Some(5))
    );
    assert!(
        ps[0].message.contains("first on line 2"),
        "{}",
        ps[0].message
    );
    assert_eq!(
        (ps[1].key.as_str(), ps[1].line),
        ("source[2].path", Some(9))
    );
    assert!(ps[1].message.contains("duplicate source path"));
}

#[test]
fn duplicate_destination_names_are_refused() {
    let text = format!(
        "{}[[destination]]\nname = \"d\"\nurl = \"http://h/\"\nsources = [\"a\"]\n",
        with_dest("")
    );
    let ps = problems(&text);
    assert_eq!(ps.len(), 1);
    assert_eq!(ps[0].key, "destination[1].name");
}

#[test]
fn source_paths_must_start_with_a_slash() {
    let text = "[[source]]\nname = \"a\"\npath = \"hooks/a\"\n";
    assert_one(text, "hooks/a", "source[0].path", "must start with `/`");
    let text = "[[source]]\nname = \"a\"\npath = \"/a?b=1\"\n";
    assert_one(text, "/a?b", "source[0].path", "without query");
}

#[test]
fn required_keys_are_reported_at_their_table() {
    let text = "[[source]]\nname = \"a\"\n\n[[destination]]\nname = \"d\"\n";
    let ps = problems(text);
    assert_eq!(ps.len(), 3, "{ps:#?}");
    assert_eq!(
        (ps[0].key.as_str(), ps[0].line),
        ("source[0].path", Some(1))
    );
    assert_eq!(
        (ps[1].key.as_str(), ps[1].line),
        ("destination[0].url", Some(4))
    );
    assert_eq!(
        (ps[2].key.as_str(), ps[2].line),
        ("destination[0].sources", Some(4))
    );
}

#[test]
fn destinations_must_name_known_sources() {
    let text = format!("{SRC}[[destination]]\nname = \"d\"\nurl = \"http://h/\"\nsources = [\n  \"a\",\n  \"b\",\n]\n");
    assert_one(
        &text,
        "\"b\"",
        "destination[0].sources[1]",
        "unknown source \"b\"",
    );
    let text = format!("{SRC}[[destination]]\nname = \"d\"\nurl = \"http://h/\"\nsources = []\n");
    assert_one(&text, "sources", "destination[0].sources", "at least one");
}

#[test]
fn destination_urls_need_http_and_a_host() {
    for bad in ["ftp://h/x", "/just/a/path", "http//h", "not a url"] {
        let text =
            format!("{SRC}[[destination]]\nname = \"d\"\nurl = \"{bad}\"\nsources = [\"a\"]\n");
        assert_one(&text, "url", "destination[0].url", "");
    }
    let text = format!(
        "{SRC}[[destination]]\nname = \"d\"\nurl = \"https://user:pw@h/x\"\nsources = [\"a\"]\n"
    );
    // Credentials in the URL would never be sent by the client: refused, and
    // the message must not echo them.
    assert_one(&text, "url", "destination[0].url", "not supported");
    let err = format!("{:?}", load(&text).unwrap_err());
    assert!(!err.contains("pw"), "{err}");
}

#[test]
fn admin_off_loopback_needs_a_token() {
    let text = "[admin]\nlisten = \"0.0.0.0:8081\"\n";
    assert_one(text, "listen", "admin.listen", "needs a token");
    let c = load("[admin]\nlisten = \"0.0.0.0:8081\"\ntoken_env = \"SET\"\n").unwrap();
    assert_eq!(c.admin.token.unwrap().expose(), b"s3cr3t-from-env");
    let c = Config::from_str_with_env(text, Path::new("relay.toml"), &env_with_admin).unwrap();
    assert!(c.admin.token.is_some());
}

#[test]
fn an_explicit_admin_token_source_must_exist() {
    let text = "[admin]\ntoken_env = \"NOPE_NOT_SET\"\n";
    assert_one(text, "token_env", "admin.token_env", "is not set");
    let text = "[admin]\ntoken = \"a\"\ntoken_file = \"t\"\n";
    assert_one(text, "token_file", "admin.token_file", "both set");
}

#[test]
fn tls_needs_both_files_or_neither() {
    for table in ["server", "admin"] {
        let text = format!("[{table}]\ntls_cert_file = \"cert.pem\"\n");
        let key = format!("{table}.tls_key_file");
        assert_one(&text, "tls_cert_file", &key, "required key is missing");
        let text = format!("[{table}]\nlisten = \"127.0.0.1:0\"\ntls_key_file = \"key.pem\"\n");
        let key = format!("{table}.tls_cert_file");
        assert_one(&text, "tls_key_file", &key, "required key is missing");
        let text = format!("[{table}]\ntls_cert_file = \"\"\ntls_key_file = \"k.pem\"\n");
        let key = format!("{table}.tls_cert_file");
        assert_one(&text, "tls_cert_file", &key, "must not be empty");
    }
    let c = load("").unwrap();
    assert!(c.server.tls.is_none() && c.admin.tls.is_none());
}

/// A self-signed certificate for localhost and its key, as PEM.
fn cert_and_key() -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    (cert.pem(), key.serialize_pem())
}

#[test]
fn tls_files_are_read_resolved_and_checked_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = cert_and_key();
    let (_, other_key) = cert_and_key();
    std::fs::create_dir(dir.path().join("tls")).unwrap();
    std::fs::write(dir.path().join("tls/cert.pem"), &cert).unwrap();
    std::fs::write(dir.path().join("tls/key.pem"), &key).unwrap();
    std::fs::write(dir.path().join("tls/other.pem"), &other_key).unwrap();
    std::fs::write(dir.path().join("tls/junk.pem"), "hello\n").unwrap();
    let file = dir.path().join("relay.toml");
    let load_at = |text: &str| {
        Config::from_str_with_env(text, &file, &env).map_err(|e| match e {
            ConfigError::Invalid { problems, .. } => problems,
            other => panic!("unexpected {other}"),
        })
    };

    let text = "[server]\ntls_cert_file = \"tls/cert.pem\"\ntls_key_file = \"tls/key.pem\"\n\
                [admin]\ntls_cert_file = \"tls/cert.pem\"\ntls_key_file = \"tls/key.pem\"\n";
    let c = load_at(text).unwrap();
    let tls = c.server.tls.as_ref().unwrap();
    assert_eq!(tls.cert_file, dir.path().join("tls/cert.pem"));
    assert_eq!(tls.key_file, dir.path().join("tls/key.pem"));
    assert!(c.admin.tls.is_some());
    // Neither the key nor its PEM shows in the config's Debug output.
    let shown = format!("{c:?}");
    let body = key.lines().nth(1).unwrap();
    assert!(
        !shown.contains(body) && shown.contains("[redacted]"),
        "{shown}"
    );

    let cases = [
        (
            "tls/cert.pem",
            "tls/other.pem",
            "server.tls_key_file",
            "does not match the certificate",
        ),
        (
            "tls/cert.pem",
            "tls/missing.pem",
            "server.tls_key_file",
            "cannot read key file",
        ),
        (
            "tls/missing.pem",
            "tls/key.pem",
            "server.tls_cert_file",
            "cannot read certificate file",
        ),
        (
            "tls/junk.pem",
            "tls/key.pem",
            "server.tls_cert_file",
            "holds no PEM certificate",
        ),
        (
            "tls/cert.pem",
            "tls/cert.pem",
            "server.tls_key_file",
            "holds no PEM private key",
        ),
    ];
    for (cert_file, key_file, key, msg) in cases {
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ntls_cert_file = \"{cert_file}\"\ntls_key_file = \"{key_file}\"\n"
        );
        let ps = load_at(&text).unwrap_err();
        assert_eq!(ps.len(), 1, "{ps:#?}");
        let needle = if key.ends_with("key_file") {
            "tls_key_file"
        } else {
            "tls_cert_file"
        };
        assert_problem(&ps[0], &text, needle, key, msg);
        assert!(!ps[0].message.contains(body), "{:?}", ps[0]);
    }
    // Both files unreadable: both reported at once.
    let text = "[admin]\ntls_cert_file = \"nope.pem\"\ntls_key_file = \"nope.key\"\n";
    let keys: Vec<String> = load_at(text)
        .unwrap_err()
        .into_iter()
        .map(|p| p.key)
        .collect();
    assert_eq!(keys, ["admin.tls_cert_file", "admin.tls_key_file"]);
}

#[test]
fn strict_ordering_allows_one_in_flight() {
    refuse_dest(
        "max_in_flight = 4",
        "max_in_flight",
        "max_in_flight",
        "strict",
    );
    refuse_dest(
        "ordering = \"unordered\"\nmax_in_flight = 0",
        "max_in_flight",
        "max_in_flight",
        "at least 1",
    );
    let c = load(&with_dest("ordering = \"unordered\"\nmax_in_flight = 4")).unwrap();
    assert_eq!(c.destinations[0].max_in_flight, 4);
    let c = load(&with_dest("ordering = \"unordered\"")).unwrap();
    assert_eq!(c.destinations[0].max_in_flight, 1);
}

#[test]
fn rate_limits_parse() {
    let c = load(&with_dest("rate_limit = \"600/m\"")).unwrap();
    assert_eq!(
        c.destinations[0].rate_limit,
        Some(RateLimit {
            count: 600,
            per: Duration::from_secs(60)
        })
    );
    assert_one(
        &with_dest("rate_limit = \"0/s\""),
        "rate_limit",
        "destination[0].rate_limit",
        "invalid rate",
    );
}

#[test]
fn headers_must_be_valid_and_not_reserved() {
    let c = load(&with_dest(
        "headers = { \"X-Env\" = \"prod\" }\nforward_headers = [\"X-GitHub-Event\"]",
    ))
    .unwrap();
    let d = &c.destinations[0];
    assert_eq!(d.headers[0].0.as_str(), "x-env");
    assert_eq!(d.headers[0].1, "prod");
    assert_eq!(d.forward_headers[0].as_str(), "x-github-event");
    assert_one(
        &with_dest("headers = { \"X Env\" = \"prod\" }"),
        "headers",
        "destination[0].headers.\"X Env\"",
        "header name",
    );
    assert_one(
        &with_dest("headers = { \"X-Env\" = \"a\\nb\" }"),
        "headers",
        "destination[0].headers.X-Env",
        "header value",
    );
    assert_one(
        &with_dest("headers = { Host = \"x\" }"),
        "headers",
        "destination[0].headers.Host",
        "cannot be configured",
    );
    assert_one(
        &with_dest("forward_headers = [\"ok\", \"bad:name\"]"),
        "forward_headers",
        "destination[0].forward_headers[1]",
        "header name",
    );
    assert_one(
        &with_dest("forward_headers = [\"Transfer-Encoding\"]"),
        "forward_headers",
        "destination[0].forward_headers[0]",
        "hop-by-hop",
    );
}

#[test]
fn signing_takes_one_whsec_secret() {
    let c = load(&with_dest("signing = { secret_env = \"WHSEC\" }")).unwrap();
    assert_eq!(c.destinations[0].signing, WhsecKey::parse(WHSEC.as_bytes()));
    let unpadded = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    assert!(load(&with_dest(&format!(
        "signing = {{ secret = \"{unpadded}\" }}"
    )))
    .is_ok());
    for bad in ["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_", "whsec_***"] {
        refuse_dest(
            &format!("signing = {{ secret = \"{bad}\" }}"),
            "signing",
            "signing.secret",
            "whsec_",
        );
    }
    refuse_dest(
        "signing = { secrets = [\"a\"] }",
        "signing",
        "signing.secrets",
        "single secret",
    );
    refuse_dest("signing = {}", "signing", "signing", "missing secret");
}

#[test]
fn retry_values_are_checked() {
    let c = load(&with_dest(
        "retry = { schedule = \"fixed\", initial = \"30s\", max_interval = \"10s\", max_attempts = 3, max_age = \"1h\" }\non_exhausted = \"block\"",
    ))
    .unwrap();
    let d = &c.destinations[0];
    assert_eq!(d.retry.schedule, Schedule::Fixed);
    assert_eq!(d.retry.max_attempts, 3);
    assert_eq!(d.on_exhausted, OnExhausted::Block);
    assert_one(
        &with_dest("retry = { max_attempts = 0 }"),
        "retry",
        "destination[0].retry.max_attempts",
        "between 1",
    );
    assert_one(
        &with_dest("retry = { initial = \"20m\" }"),
        "retry",
        "destination[0].retry.initial",
        "max_interval",
    );
    assert_one(
        &with_dest("retry = { max_age = \"0s\" }"),
        "retry",
        "destination[0].retry.max_age",
        "more than zero",
    );
}

#[test]
fn sizes_and_addresses_are_checked() {
    let c =
        load("[server]\nmax_body_bytes = 4096\n[storage]\nmax_disk_bytes = \"1GiB\"\n").unwrap();
    assert_eq!(
        (c.server.max_body_bytes, c.storage.max_disk_bytes),
        (4096, 1 << 30)
    );
    assert_one(
        "[server]\nmax_body_bytes = 0\n",
        "max_body",
        "server.max_body_bytes",
        "more than zero",
    );
    assert_one(
        "[server]\nmax_body_bytes = \"1 lot\"\n",
        "max_body",
        "server.max_body_bytes",
        "invalid size",
    );
    assert_one(
        "[server]\nlisten = \"localhost:80\"\n",
        "listen",
        "server.listen",
        "IP:PORT",
    );
}

#[test]
fn no_message_ever_contains_a_secret() {
    let text = "[admin]\nlisten = \"0.0.0.0:1\"\ntoken = \"TOPSECRET1\"\ntoken_env = \"X\"\n\
                [[source]]\nname = \"a\"\npath = \"/a\"\nverify = { scheme = \"standard\", secret = \"TOPSECRET2*\" }\n\
                [[source]]\nname = \"b\"\npath = \"/b\"\nverify = { scheme = \"none\", secret = \"TOPSECRET3\" }\n\
                [[destination]]\nname = \"d\"\nurl = \"http://TOPSECRET4:pw@h:99999/\"\nsources = [\"a\"]\nsigning = { secret = \"TOPSECRET5\" }\n";
    let err = Config::from_str_with_env(text, Path::new("relay.toml"), &env).unwrap_err();
    let shown = format!("{err}\n{err:?}");
    assert!(!shown.contains("TOPSECRET"), "{shown}");
    let ConfigError::Invalid { problems, .. } = err else {
        panic!()
    };
    assert_eq!(problems.len(), 5, "{problems:#?}");
}

#[test]
fn configured_header_values_never_show_in_debug_output() {
    let text = format!(
        "{SRC}[[destination]]\nname = \"d\"\nurl = \"http://h/\"\nsources = [\"a\"]\nheaders = {{ \"Authorization\" = \"Bearer hunter2\" }}\n"
    );
    let config = load(&text).unwrap();
    assert!(!format!("{config:?}").contains("hunter2"));
}

/// A source `a` whose `reply` is `reply`, and destination `d` (`dest` extra keys).
fn with_reply(reply: &str, dest: &str) -> String {
    format!(
        "[[source]]\nname = \"a\"\npath = \"/a\"\nreply = {{ {reply} }}\n\n[[destination]]\nname = \"d\"\nurl = \"http://127.0.0.1:9000/x\"\nsources = [\"a\"]\n{dest}\n"
    )
}

#[test]
fn a_reply_takes_defaults_and_its_fallback() {
    let c = load(&with_reply(
        "destination = \"d\", status = 202, content_type = \"text/xml\", body = \"<Response/>\"",
        "ordering = \"unordered\"",
    ))
    .unwrap();
    let r = c.sources[0].reply.as_ref().unwrap();
    assert_eq!(r.destination.as_str(), "d");
    assert_eq!(r.timeout, Duration::from_secs(2));
    assert_eq!(r.status, http::StatusCode::ACCEPTED);
    assert_eq!(r.content_type, "text/xml");
    assert_eq!(&r.body[..], b"<Response/>");
    let c = load(&with_reply(
        "destination = \"d\"",
        "ordering = \"unordered\"",
    ))
    .unwrap();
    let r = c.sources[0].reply.as_ref().unwrap();
    assert_eq!((r.status, r.body.len()), (http::StatusCode::OK, 0));
    assert!(c.sources[0].reply.is_some());
}

#[test]
fn a_reply_destination_must_be_unordered_known_and_fed_by_the_source() {
    let text = with_reply("destination = \"d\"", "");
    assert_one(
        &text,
        "reply",
        "source[0].reply.destination",
        "must have ordering = \"unordered\": a synchronous answer cannot wait behind a strict queue",
    );
    assert_one(
        &with_reply("destination = \"nope\"", "ordering = \"unordered\""),
        "reply",
        "source[0].reply.destination",
        "unknown destination \"nope\" (defined: d)",
    );
    let text = format!(
        "{}[[source]]\nname = \"b\"\npath = \"/b\"\n",
        with_reply("destination = \"d\"", "ordering = \"unordered\"")
    )
    .replace("sources = [\"a\"]", "sources = [\"b\"]");
    assert_one(
        &text,
        "reply",
        "source[0].reply.destination",
        "destination \"d\" does not list source \"a\" in its sources",
    );
}

#[test]
fn a_reply_refuses_bad_values_each_at_its_key() {
    let unordered = "ordering = \"unordered\"";
    let cases = [
        ("timeout = \"1s\"", "reply.destination", "missing"),
        (
            "destination = \"d\", timeout = \"0s\"",
            "reply.timeout",
            "more than zero",
        ),
        (
            "destination = \"d\", timeout = \"2m\"",
            "reply.timeout",
            "at most 60s",
        ),
        (
            "destination = \"d\", status = 99",
            "reply.status",
            "from 200 to 599",
        ),
        (
            "destination = \"d\", status = 101",
            "reply.status",
            "from 200 to 599",
        ),
        (
            "destination = \"d\", status = 204, body = \"x\"",
            "reply.body",
            "status 204 has no body",
        ),
        (
            "destination = \"d\", content_type = \"a\\nb\"",
            "reply.content_type",
            "header value",
        ),
        (
            "destination = \"d\", colour = \"red\"",
            "reply.colour",
            "unknown key",
        ),
    ];
    for (reply, key, msg) in cases {
        let ps = problems(&with_reply(reply, unordered));
        assert!(
            ps.iter()
                .any(|p| p.key == format!("source[0].{key}") && p.message.contains(msg)),
            "{reply}: {ps:#?}"
        );
    }
}

#[test]
fn a_fleet_config_reads_every_nats_key() {
    let c = load(
        "[storage]\nbackend = \"nats\"\n\
         nats = { url = [\"nats://10.0.0.1:4222\", \"tls://nats.internal:4222\"], stream = \"hooks-prod\", replicas = 3, ack_wait = \"10s\", user = \"relay\", password = \"pw\" }\n",
    )
    .unwrap();
    let crate::config::Backend::Nats(n) = &c.storage.backend else {
        panic!("not the nats backend: {:?}", c.storage.backend)
    };
    assert_eq!(n.urls, ["nats://10.0.0.1:4222", "tls://nats.internal:4222"]);
    assert_eq!(n.stream.as_str(), "hooks-prod");
    assert_eq!((n.replicas, n.ack_wait), (3, Duration::from_secs(10)));
    assert!(
        matches!(&n.auth, crate::config::NatsAuth::UserPassword { user, password } if user == "relay" && password.expose() == b"pw")
    );
    assert!(
        !format!("{c:?}").contains("\"pw\""),
        "the password stays out of Debug"
    );
    // One URL as a string; defaults for the rest.
    let c = load("[storage]\nbackend = \"nats\"\nnats = { url = \"nats://127.0.0.1:4222\" }\n")
        .unwrap();
    let crate::config::Backend::Nats(n) = &c.storage.backend else {
        panic!("not the nats backend")
    };
    assert_eq!((n.stream.as_str(), n.replicas), ("hookrelay", 1));
    assert!(matches!(n.auth, crate::config::NatsAuth::None));
    assert!(matches!(
        load("").unwrap().storage.backend,
        crate::config::Backend::Sled
    ));
}

#[test]
fn bad_fleet_configs_name_their_key_and_line() {
    let nats = |table: &str| format!("[storage]\nbackend = \"nats\"\nnats = {table}\n");
    assert_one(
        "[storage]\nbackend = \"nats\"\n",
        "backend",
        "storage.nats",
        "needs a `nats` table",
    );
    assert_one(
        "[storage]\nnats = { url = \"nats://a:4222\" }\n",
        "nats =",
        "storage.nats",
        "only read with backend = \"nats\"",
    );
    assert_one(
        &nats("{ stream = \"s\" }"),
        "nats =",
        "storage.nats.url",
        "required key is missing",
    );
    assert_one(
        &nats("{ url = \"http://a:4222\" }"),
        "nats =",
        "storage.nats.url",
        "scheme must be nats",
    );
    assert_one(
        &nats("{ url = \"nats://u:p@a:4222\" }"),
        "nats =",
        "storage.nats.url",
        "not the URL",
    );
    assert_one(
        &nats("{ url = [] }"),
        "nats =",
        "storage.nats.url",
        "at least one server",
    );
    assert_one(
        &nats("{ url = \"nats://a:4222\", stream = \"a.b\" }"),
        "nats =",
        "storage.nats.stream",
        "A-Z a-z 0-9",
    );
    assert_one(
        &nats("{ url = \"nats://a:4222\", replicas = 2 }"),
        "nats =",
        "storage.nats.replicas",
        "1, 3 or 5",
    );
    assert_one(
        &nats("{ url = \"nats://a:4222\", ack_wait = \"10ms\" }"),
        "nats =",
        "storage.nats.ack_wait",
        "at least 1s",
    );
    assert_one(
        &nats("{ url = \"nats://a:4222\", token = \"t\", user = \"u\" }"),
        "nats =",
        "storage.nats.user",
        "authenticate one way",
    );
    assert_one(
        &nats("{ url = \"nats://a:4222\", user = \"u\" }"),
        "nats =",
        "storage.nats.password",
        "needs `password`",
    );
    assert_one(
        &nats("{ url = \"nats://a:4222\", credentials_file = \"/nonexistent.creds\" }"),
        "nats =",
        "storage.nats.credentials_file",
        "does not exist",
    );
    assert_one(
        &nats("{ url = \"nats://a:4222\", colour = \"red\" }"),
        "colour",
        "storage.nats.colour",
        "unknown key",
    );
    // Sync replies work in a fleet too.
    let reply = format!(
        "{}[[source]]\nname = \"s\"\npath = \"/s\"\nreply = {{ destination = \"d\" }}\n\
         [[destination]]\nname = \"d\"\nurl = \"http://127.0.0.1:1/\"\nsources = [\"s\"]\nordering = \"unordered\"\n",
        nats("{ url = \"nats://a:4222\" }")
    );
    assert!(load(&reply).expect("valid").sources[0].reply.is_some());
}
