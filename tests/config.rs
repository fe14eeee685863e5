//! relay.toml as an operator writes it: the contract's example, every error naming
//! file, line and key, and paths resolved against the config's directory.

use std::path::Path;
use std::time::Duration;

#[path = "support/mod.rs"]
mod support;

use support::write_file;

use hookrelay::config::{
    Config, ConfigError, DeliveryOrder, Durability, OnExhausted, Problem, RateLimit, Schedule,
    Scheme, VerifySpec, WhsecKey,
};

const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// A real RSA certificate, as PayPal's `cert_file` must be.
const PAYPAL_CERT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/src/verify/testdata/paypal_test_cert.pem"
);

/// The example config of the product contract (kept outside this repository,
/// mirrored by the README's config reference), verbatim.
const CONTRACT_EXAMPLE: &str = r#"
[server]
listen = "127.0.0.1:8080"        # inbound webhooks
max_body_bytes = "1MiB"          # larger bodies get 413 and are not stored
request_timeout = "30s"          # whole-request read deadline (slow senders get 408)

[admin]
listen = "127.0.0.1:8081"        # admin API, health and metrics
token_env = "HOOKRELAY_ADMIN_TOKEN"  # bearer token for /api/*; also token / token_file.
                                 # A non-loopback admin listen address without a token is a config error.

[storage]
data_dir = "data"                # sled database lives here
durability = "fsync"             # "fsync": answer the sender only after the entry is on disk
                                 # (concurrent requests share one flush); "buffered": flush every 100ms
retention = "7d"                 # entries older than this AND finished by every destination are deleted
max_disk_bytes = "10GiB"         # above this, inbound gets 503 + Retry-After; nothing already stored is dropped

[[source]]
name = "stripe"                  # [a-z0-9_-]+, unique
path = "/hooks/stripe"           # POST target on server.listen, unique
verify = { scheme = "stripe", secret_env = "STRIPE_WEBHOOK_SECRET", tolerance = "5m" }
dedup_window = "24h"             # same idempotency key inside the window is accepted but not stored again

[[destination]]
name = "billing"                 # unique
url = "http://127.0.0.1:9000/stripe"   # http or https
sources = ["stripe"]             # which sources fan out here (one or more)
timeout = "10s"                  # per attempt
ordering = "strict"              # "strict": one delivery in flight, in log order (default)
                                 # "unordered": up to max_in_flight concurrent deliveries
max_in_flight = 1
rate_limit = "50/s"              # optional; also "600/m"
headers = { "X-Env" = "prod" }   # optional extra headers
forward_headers = ["x-github-event"]   # optional; inbound headers copied through, besides the defaults
signing = { secret_env = "BILLING_WHSEC" }  # optional; Standard Webhooks signature on every delivery
retry = { schedule = "exponential", initial = "1s", max_interval = "10m", max_attempts = 20, max_age = "72h" }
on_exhausted = "dead_letter"     # or "block": stop and wait for an operator
"#;

fn spec_env(name: &str) -> Option<String> {
    match name {
        "HOOKRELAY_ADMIN_TOKEN" => Some("admin-token".into()),
        "STRIPE_WEBHOOK_SECRET" => Some("whsec_test_secret".into()),
        "BILLING_WHSEC" => Some(WHSEC.into()),
        _ => None,
    }
}

fn no_env(_: &str) -> Option<String> {
    None
}

fn problems(err: ConfigError) -> Vec<Problem> {
    match err {
        ConfigError::Invalid { problems, .. } => problems,
        other => panic!("expected Invalid, got {other}"),
    }
}

/// 1-based line of the last line of `text` containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    match text
        .lines()
        .collect::<Vec<_>>()
        .iter()
        .rposition(|l| l.contains(needle))
    {
        Some(i) => i + 1,
        None => panic!("{needle:?} not in text"),
    }
}

#[test]
fn the_spec_example_parses_with_its_documented_values() {
    let c = Config::from_str_with_env(
        CONTRACT_EXAMPLE,
        Path::new("/etc/hookrelay/relay.toml"),
        &spec_env,
    )
    .unwrap();
    assert_eq!(c.file, Path::new("/etc/hookrelay/relay.toml"));
    assert_eq!(c.server.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(c.server.max_body_bytes, 1024 * 1024);
    assert_eq!(c.server.request_timeout, Duration::from_secs(30));
    assert_eq!(c.admin.listen, "127.0.0.1:8081".parse().unwrap());
    assert_eq!(c.admin.token.as_ref().unwrap().expose(), b"admin-token");
    assert_eq!(c.storage.data_dir, Path::new("/etc/hookrelay/data"));
    assert_eq!(c.storage.durability, Durability::Fsync);
    assert_eq!(c.storage.retention, Duration::from_secs(7 * 24 * 3600));
    assert_eq!(c.storage.max_disk_bytes, 10 * 1024 * 1024 * 1024);

    let s = c.source(&"stripe".parse().unwrap()).unwrap();
    assert_eq!(s.path, "/hooks/stripe");
    assert_eq!(s.verify.scheme(), Scheme::Stripe);
    assert_eq!(s.verify.shared_secrets().len(), 1);
    assert_eq!(s.verify.shared_secrets()[0].expose(), b"whsec_test_secret");
    assert_eq!(s.verify.tolerance(), Some(Duration::from_secs(300)));
    assert_eq!(s.dedup_window, Duration::from_secs(24 * 3600));

    let d = c.destination(&"billing".parse().unwrap()).unwrap();
    assert_eq!(d.url, "http://127.0.0.1:9000/stripe");
    assert_eq!(d.sources, vec![s.name.clone()]);
    assert_eq!(d.timeout, Duration::from_secs(10));
    assert_eq!(d.ordering, DeliveryOrder::Strict);
    assert_eq!(d.max_in_flight, 1);
    assert_eq!(
        d.rate_limit,
        Some(RateLimit {
            count: 50,
            per: Duration::from_secs(1)
        })
    );
    assert_eq!(d.headers.len(), 1);
    assert_eq!(d.headers[0].0, "x-env");
    assert_eq!(d.headers[0].1, "prod");
    assert_eq!(
        d.forward_headers,
        vec![http::HeaderName::from_static("x-github-event")]
    );
    assert_eq!(d.signing, WhsecKey::parse(WHSEC.as_bytes()));
    assert_eq!(d.retry.schedule, Schedule::Exponential);
    assert_eq!(d.retry.initial, Duration::from_secs(1));
    assert_eq!(d.retry.max_interval, Duration::from_secs(600));
    assert_eq!(d.retry.max_attempts, 20);
    assert_eq!(d.retry.max_age, Duration::from_secs(72 * 3600));
    assert_eq!(d.on_exhausted, OnExhausted::DeadLetter);

    // Secrets stay out of Debug output.
    let shown = format!("{c:?}");
    assert!(!shown.contains("whsec_"), "{shown}");
    assert!(!shown.contains("admin-token"), "{shown}");
}

#[test]
fn the_spec_example_loads_from_a_file_with_the_process_environment() {
    let text = CONTRACT_EXAMPLE
        .replace(
            "\"HOOKRELAY_ADMIN_TOKEN\"",
            "\"HOOKRELAY_IT_CONFIG_ADMIN_4F1C\"",
        )
        .replace(
            "\"STRIPE_WEBHOOK_SECRET\"",
            "\"HOOKRELAY_IT_CONFIG_STRIPE_4F1C\"",
        )
        .replace("\"BILLING_WHSEC\"", "\"HOOKRELAY_IT_CONFIG_BILLING_4F1C\"");
    // Unique names: nothing else reads or writes them.
    std::env::set_var("HOOKRELAY_IT_CONFIG_ADMIN_4F1C", "admin-token");
    std::env::set_var("HOOKRELAY_IT_CONFIG_STRIPE_4F1C", "whsec_test_secret");
    std::env::set_var("HOOKRELAY_IT_CONFIG_BILLING_4F1C", WHSEC);
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "relay.toml", &text);
    let c = Config::load(&path).unwrap();
    assert_eq!(c.admin.token.unwrap().expose(), b"admin-token");
    assert_eq!(
        c.sources[0].verify.shared_secrets()[0].expose(),
        b"whsec_test_secret"
    );
    assert_eq!(c.storage.data_dir, dir.path().join("data"));
}

const BASE: &str = r#"[[source]]
name = "a"
path = "/a"

[[destination]]
name = "d"
url = "http://127.0.0.1:9000/"
sources = ["a"]
"#;

/// Each broken config, the line to find the problem on (last line containing
/// the needle) and the key it must name.
#[test]
fn every_kind_of_error_names_file_line_and_key() {
    let cases: &[(&str, &str, &str)] = &[
        // Syntax and shape.
        ("[server]\nlisten = \"127.0.0.1:1\"\nlistne = \"x\"\n", "listne", "server.listne"),
        (&format!("{BASE}colour = \"red\"\n"), "colour", "destination[0].colour"),
        (&format!("{BASE}timeout = \"10x\"\n"), "10x", "destination[0].timeout"),
        (&format!("{BASE}timeout = 10\n"), "timeout", "destination[0].timeout"),
        ("[storage]\nmax_disk_bytes = \"big\"\n", "big", "storage.max_disk_bytes"),
        (&format!("{BASE}url2 = 1\n"), "url2", "destination[0].url2"),
        // Names and routing.
        (&format!("{BASE}[[source]]\nname = \"a\"\npath = \"/b\"\n"), "name = \"a\"", "source[1].name"),
        (&format!("{BASE}[[source]]\nname = \"b\"\npath = \"/a\"\n"), "path = \"/a\"", "source[1].path"),
        ("[[source]]\nname = \"a\"\npath = \"a\"\n", "path", "source[0].path"),
        ("[[source]]\nname = \"a\"\npath = \"/a\"\n[[destination]]\nname = \"d\"\nurl = \"http://h/\"\nsources = [\"b\"]\n", "sources", "destination[0].sources[0]"),
        (&format!("{BASE}max_in_flight = 2\n"), "max_in_flight", "destination[0].max_in_flight"),
        (&format!("{BASE}max_in_flight = \"one\"\n"), "one", "destination[0].max_in_flight"),
        // Secrets.
        ("[[source]]\nname = \"a\"\npath = \"/a\"\nverify = { scheme = \"github\" }\n", "verify", "source[0].verify"),
        ("[[source]]\nname = \"a\"\npath = \"/a\"\nverify = { scheme = \"github\", secret = \"x\", secret_file = \"f\" }\n", "verify", "source[0].verify.secret_file"),
        ("[[source]]\nname = \"a\"\npath = \"/a\"\nverify = { scheme = \"github\", secret_env = \"HOOKRELAY_IT_UNSET_9D2A\" }\n", "verify", "source[0].verify.secret_env"),
        ("[[source]]\nname = \"a\"\npath = \"/a\"\n\n[source.verify]\nscheme = \"github\"\nsecret_file = \"/nonexistent/hookrelay/s\"\n", "secret_file", "source[0].verify.secret_file"),
        ("[admin]\nlisten = \"0.0.0.0:8081\"\n", "listen", "admin.listen"),
        ("[admin]\ntoken_env = \"HOOKRELAY_IT_UNSET_9D2A\"\n", "token_env", "admin.token_env"),
        (&format!("{BASE}signing = {{ secret = \"not-whsec\" }}\n"), "signing", "destination[0].signing.secret"),
        // Scheme requirements.
        ("[[source]]\nname = \"a\"\npath = \"/a\"\nverify = { scheme = \"hmac\", secret = \"x\" }\n", "verify", "source[0].verify.header"),
        ("[[source]]\nname = \"a\"\npath = \"/a\"\nverify = { scheme = \"paypal\", webhook_id = \"W\" }\n", "verify", "source[0].verify.cert_file"),
        ("[[source]]\nname = \"a\"\npath = \"/a\"\nverify = { scheme = \"paypal\", cert_file = \"/nonexistent/c.pem\", webhook_id = \"W\" }\n", "verify", "source[0].verify.cert_file"),
        (&format!("[[source]]\nname = \"a\"\npath = \"/a\"\n[source.verify]\nscheme = \"paypal\"\ncert_file = \"{PAYPAL_CERT}\"\n"), "[source.verify]", "source[0].verify.webhook_id"),
        ("[[source]]\nname = \"a\"\npath = \"/a\"\n[source.verify]\nscheme = \"paypal\"\nwebhook_id = \"W\"\ncert_file = \"relay.toml\"\n", "cert_file", "source[0].verify.cert_file"),
        ("[[source]]\nname = \"a\"\npath = \"/a\"\nverify = { scheme = \"discord\", public_key = \"abcd\" }\n", "verify", "source[0].verify.public_key"),
        ("[[source]]\nname = \"a\"\npath = \"/a\"\nverify = { scheme = \"meta\", secret = \"x\" }\n", "verify", "source[0].verify.verify_token"),
        ("[[source]]\nname = \"a\"\npath = \"/a\"\nverify = { scheme = \"twilio\", secret = \"x\" }\n", "verify", "source[0].verify.public_url"),
    ];
    let dir = tempfile::tempdir().unwrap();
    // The admin case expects no token from the process environment.
    let admin_env_set = std::env::var_os("HOOKRELAY_ADMIN_TOKEN").is_some();
    for (text, needle, key) in cases {
        if admin_env_set && *key == "admin.listen" {
            continue;
        }
        let path = write_file(dir.path(), "relay.toml", text);
        let err = match Config::load(&path) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => e,
        };
        let shown = err.to_string();
        let ps = problems(err);
        assert_eq!(ps.len(), 1, "{text}\n{ps:#?}");
        let line = line_of(text, needle);
        assert_eq!(ps[0].line, Some(line), "{text}\n{ps:#?}");
        assert_eq!(ps[0].key, *key, "{text}\n{ps:#?}");
        let prefix = format!("{}:{line}: {key}: ", path.display());
        assert!(
            shown.starts_with(&prefix),
            "{shown:?} should start with {prefix:?}"
        );
    }
}

#[test]
fn syntax_errors_name_the_line() {
    let text = format!("{BASE}url = \"http://h/\"\n");
    let err = Config::from_str_with_env(&text, Path::new("relay.toml"), &no_env).unwrap_err();
    assert_eq!(err.to_string(), "relay.toml:9: duplicate key `url`");
    let err = Config::from_str_with_env("[server\n", Path::new("relay.toml"), &no_env).unwrap_err();
    assert!(err.to_string().starts_with("relay.toml:1: "), "{err}");
}

#[test]
fn all_problems_are_reported_at_once() {
    let text = "[server]\nlisten = \"nowhere\"\n\n[[source]]\nname = \"a\"\npath = \"a\"\n\n\
                [[destination]]\nname = \"d\"\nurl = \"ftp://h/\"\nsources = [\"b\"]\nmax_in_flight = 3\n";
    let err = Config::from_str_with_env(text, Path::new("relay.toml"), &no_env).unwrap_err();
    let shown = err.to_string();
    let ps = problems(err);
    let got: Vec<(Option<usize>, &str)> = ps.iter().map(|p| (p.line, p.key.as_str())).collect();
    assert_eq!(
        got,
        [
            (Some(2), "server.listen"),
            (Some(6), "source[0].path"),
            (Some(10), "destination[0].url"),
            (Some(11), "destination[0].sources[0]"),
            (Some(12), "destination[0].max_in_flight"),
        ]
    );
    assert_eq!(shown.lines().count(), 5, "{shown}");
    assert!(
        shown.lines().all(|l| l.starts_with("relay.toml:")),
        "{shown}"
    );
}

#[test]
fn a_missing_file_names_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.toml");
    let err = Config::load(&path).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
}

#[test]
fn relative_paths_resolve_against_the_config_directory() {
    let dir = tempfile::tempdir().unwrap();
    write_file(dir.path(), "secrets/github.txt", "from-file\n\n");
    write_file(dir.path(), "secrets/signing.txt", format!("{WHSEC}\r\n"));
    write_file(dir.path(), "secrets/admin.txt", "admin-from-file\n");
    let cert = std::fs::read_to_string(PAYPAL_CERT).unwrap();
    write_file(dir.path(), "certs/paypal.pem", cert);
    write_file(dir.path(), "certs/ca.pem", "-----BEGIN CERTIFICATE-----\n");
    let text = r#"
[admin]
listen = "0.0.0.0:8081"
token_file = "secrets/admin.txt"

[storage]
data_dir = "var/db"

[[source]]
name = "gh"
path = "/gh"
verify = { scheme = "github", secret_file = "secrets/github.txt" }

[[source]]
name = "pp"
path = "/pp"
verify = { scheme = "paypal", cert_file = "certs/paypal.pem", webhook_id = "WH-1" }

[[destination]]
name = "d"
url = "https://app.internal/hooks"
sources = ["gh", "pp"]
signing = { secret_file = "secrets/signing.txt" }
ca_file = "certs/ca.pem"
"#;
    let path = write_file(dir.path(), "relay.toml", text);
    let c = Config::load(&path).unwrap();
    assert_eq!(c.storage.data_dir, dir.path().join("var/db"));
    assert_eq!(c.admin.token.unwrap().expose(), b"admin-from-file");
    assert_eq!(
        c.sources[0].verify.shared_secrets()[0].expose(),
        b"from-file"
    );
    assert!(matches!(c.sources[1].verify, VerifySpec::Paypal { .. }));
    assert_eq!(c.destinations[0].signing, WhsecKey::parse(WHSEC.as_bytes()));
    assert_eq!(
        c.destinations[0].ca_file.as_deref(),
        Some(&*dir.path().join("certs/ca.pem"))
    );

    // The same file seen from elsewhere still finds its neighbours.
    let moved = tempfile::tempdir().unwrap();
    let err =
        Config::from_str_with_env(text, &moved.path().join("relay.toml"), &no_env).unwrap_err();
    let keys: Vec<String> = problems(err).into_iter().map(|p| p.key).collect();
    assert_eq!(
        keys,
        [
            "admin.token_file",
            "source[0].verify.secret_file",
            "source[1].verify.cert_file",
            "destination[0].signing.secret_file",
            "destination[0].ca_file",
        ]
    );
}

#[test]
fn no_truncation_or_corruption_of_the_example_panics() {
    let text = CONTRACT_EXAMPLE;
    for (i, _) in text.char_indices() {
        let _ = Config::from_str_with_env(&text[..i], Path::new("relay.toml"), &spec_env);
        let mut broken = String::from(&text[..i]);
        broken.push_str("\"=[{");
        broken.push_str(&text[i..]);
        let _ = Config::from_str_with_env(&broken, Path::new("relay.toml"), &spec_env);
    }
}

#[test]
fn check_reports_a_ca_file_that_holds_no_valid_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pem = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    write_file(dir.path(), "bad.pem", pem);
    let text = "[[source]]\nname = \"s\"\npath = \"/s\"\n\n[[destination]]\nname = \"d\"\nurl = \"https://127.0.0.1:1/\"\nsources = [\"s\"]\nca_file = \"bad.pem\"\n";
    let path = write_file(dir.path(), "relay.toml", text);
    let (code, stdout, stderr) =
        support::run_cli(["check".as_ref(), "--config".as_ref(), path.as_os_str()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("destination d: ca_file") && stderr.contains("invalid certificate"),
        "{stderr}"
    );
    assert!(stdout.is_empty(), "no `ok` line");
}

/// issue 13 item 5: `check` reports every unknown key at once (a table, an
/// array of tables, inline tables), each at its own line and with its full
/// path, together with the values that are wrong in the rest of the file.
#[test]
fn check_reports_every_unknown_key_with_the_other_problems() {
    let text = r#"[server]
listen = "127.0.0.1:8080"
listne = "127.0.0.1:9999"

[[source]]
name = "gh"
path = "/gh"
verify = { scheme = "github", secret = "s3cr3t", colour = "red" }

[[destination]]
name = "first"
url = "http://127.0.0.1:9000/"
sources = ["gh"]
timeout = "10x"

[[destination]]
name = "second"
url = "http://127.0.0.1:9001/"
sources = ["gh"]
retyr = 3
max_in_flight = "two"
retry = { initial = "1s", tries = 5 }
"#;
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "relay.toml", text);
    let (code, stdout, stderr) =
        support::run_cli(["check".as_ref(), "--config".as_ref(), path.as_os_str()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    let file = path.display();
    let want = [
        (
            "listne",
            "server.listne",
            "unknown key (expected one of: `listen`, `max_body_bytes`, `request_timeout`, `tls_cert_file`, `tls_key_file`)",
        ),
        (
            "colour",
            "source[0].verify.colour",
            "unknown key (scheme \"github\" takes `scheme`, `secret`, `secrets`, `secret_env`, `secrets_env`, `secret_file`)",
        ),
        (
            "10x",
            "destination[0].timeout",
            "invalid duration \"10x\" (use e.g. \"500ms\", \"30s\", \"5m\", \"72h\", \"7d\")",
        ),
        ("retyr", "destination[1].retyr", "unknown key (expected one of: `name`, `url`, "),
        ("two", "destination[1].max_in_flight", "invalid type: string \"two\""),
        (
            "tries",
            "destination[1].retry.tries",
            "unknown key (expected one of: `schedule`, `initial`, `max_interval`, `max_attempts`, `max_age`)",
        ),
    ];
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), want.len(), "{stderr}");
    for (got, (needle, key, message)) in lines.iter().zip(want) {
        let prefix = format!(
            "hookrelay: {file}:{}: {key}: {message}",
            line_of(text, needle)
        );
        assert!(
            got.starts_with(&prefix),
            "{got:?} should start with {prefix:?}"
        );
    }
    assert!(!stderr.contains("s3cr3t"), "{stderr}");
}
