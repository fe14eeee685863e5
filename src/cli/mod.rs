//! The `hookrelay` command line: argument parsing, logging setup, and the
//! commands. Exit codes: 0 success, 1 runtime failure, 2 bad usage or config
//! (clap itself exits 2 on bad arguments).

mod client;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand, ValueEnum};
use http::Method;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::{Error, Listeners};

/// Self-hosted webhook relay.
#[derive(Debug, Parser)]
#[command(name = "hookrelay", version, about)]
pub struct Cli {
    /// Config file; before or after the command. Client commands read only
    /// its `[admin]` table.
    #[arg(
        long,
        global = true,
        env = "HOOKRELAY_CONFIG",
        default_value = "relay.toml"
    )]
    config: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

/// Log line format for `serve`.
#[derive(Debug, Clone, Copy, ValueEnum, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the relay.
    Serve {
        /// Log format on stderr (level from RUST_LOG, default info).
        #[arg(long, value_enum, default_value_t)]
        log_format: LogFormat,
        /// Once ready, write `{"pid":..,"ingest":"ip:port","admin":"ip:port"}`
        /// here (atomically; removed at exit), for scripts and tests using port 0.
        #[arg(long)]
        ready_file: Option<PathBuf>,
    },
    /// Validate the config and exit: 0 valid, 2 invalid.
    Check,
    /// Show every destination of the running relay: state, cursor, head, lag, dead letters, last error.
    Status {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Pause deliveries to a destination (persists across restarts).
    Pause {
        /// Destination name.
        dest: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Resume a paused or blocked destination.
    Resume {
        /// Destination name.
        dest: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Ask the running relay to re-read its config (same as SIGHUP): exit 0
    /// when applied, 2 with every problem when the new config is invalid
    /// (the running one stays).
    Reload {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print webhooks as they are stored, one line each (seq, time, source,
    /// event type, bytes), until interrupted.
    Tail {
        /// Only this source's webhooks.
        #[arg(long)]
        source: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show what a destination's routing does with a stored message (asks
    /// the running relay) or with a sample body (offline, from the config):
    /// `deliver` and the body that would be sent, `skip`, or `error: reason`.
    #[command(group(clap::ArgGroup::new("what").required(true).args(["seq", "body"])))]
    Route {
        /// Destination name.
        dest: String,
        /// A stored message.
        #[arg(long)]
        seq: Option<u64>,
        /// A file holding a sample body.
        #[arg(long)]
        body: Option<PathBuf>,
        /// The sample's source (needed when the destination has several).
        #[arg(long, requires = "body")]
        source: Option<String>,
        /// A header of the sample, as 'Name: value' (repeatable).
        #[arg(long = "header", requires = "body")]
        headers: Vec<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List a destination's dead letters, oldest first (at most 1000).
    DeadLetters {
        /// Destination name.
        dest: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Deliver dead letters again (one more attempt each, out of order).
    Redeliver {
        /// Destination name.
        dest: String,
        /// The dead letter to deliver again.
        #[arg(long, conflicts_with = "all", required_unless_present = "all")]
        seq: Option<u64>,
        /// Every dead letter of the destination, oldest first.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Rewind a destination's cursor; delivery restarts from there with the original ids.
    #[command(group(clap::ArgGroup::new("from").required(true).args(["from_seq", "from_time"])))]
    Replay {
        /// Destination name.
        dest: String,
        /// First seq to deliver again.
        #[arg(long)]
        from_seq: Option<u64>,
        /// First receive time to deliver again (RFC 3339 with its offset,
        /// e.g. 2026-12-03T08:00:00Z).
        #[arg(long)]
        from_time: Option<String>,
        /// Last seq to deliver again; afterwards delivery resumes where it was.
        #[arg(long)]
        to_seq: Option<u64>,
        /// Print how many messages would go again, and change nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// Options of the commands that talk to a running relay.
#[derive(Debug, clap::Args)]
pub struct ClientArgs {
    /// Print the admin API's JSON instead of a table.
    #[arg(long)]
    json: bool,
}

impl Cli {
    /// Runs the parsed command; returns the process exit code.
    pub fn run(self) -> i32 {
        main(self)
    }
}

fn main(cli: Cli) -> i32 {
    let config = cli.config;
    match cli.command {
        Command::Check => match Config::load(&config) {
            // The outbound TLS setup (`ca_file`) is checked as `serve` checks it.
            Ok(c) => {
                if let Err(e) = crate::delivery::Clients::build(&c.destinations) {
                    return report(&Error::Tls(e));
                }
                for warning in c.warnings() {
                    eprintln!("hookrelay: warning: {}: {warning}", config.display());
                }
                println!(
                    "{}: ok ({}, {})",
                    config.display(),
                    count(c.sources.len(), "source"),
                    count(c.destinations.len(), "destination")
                );
                0
            }
            Err(e) => report(&Error::Config(e)),
        },
        Command::Status { client } => remote(&config, client, |c| async move {
            let v = c.call(Method::GET, "/api/v1/destinations", None).await?;
            Ok((v.clone(), client::status_table(&v)))
        }),
        Command::Reload { client } => {
            let invalid = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let seen = invalid.clone();
            let exit = remote(&config, client, |c| async move {
                let (status, v) = c.send(Method::POST, "/api/v1/reload", None).await?;
                if status == http::StatusCode::BAD_REQUEST && v["problems"].is_array() {
                    seen.store(true, std::sync::atomic::Ordering::Relaxed);
                    eprintln!("hookrelay: the new config is invalid; the running one stays:");
                    for p in v["problems"].as_array().into_iter().flatten() {
                        eprintln!("hookrelay: {}", p.as_str().unwrap_or(""));
                    }
                    return Ok((serde_json::Value::Null, String::new()));
                }
                if !status.is_success() {
                    let message = v["error"].as_str().unwrap_or("").to_owned();
                    return Err(client::ClientError::Refused { status, message });
                }
                Ok((v.clone(), client::reload_text(&v)))
            });
            if exit == 0 && invalid.load(std::sync::atomic::Ordering::Relaxed) {
                2
            } else {
                exit
            }
        }
        Command::Tail { source, client } => {
            let json = client.json;
            remote(&config, client, |c| async move {
                let path = match &source {
                    Some(s) => format!("/api/v1/stream?source={s}"),
                    None => "/api/v1/stream".to_owned(),
                };
                c.follow(&path, |event| match event {
                    client::StreamEvent::Opened(from) => {
                        eprintln!("hookrelay: following new webhooks ({from}); Ctrl-C stops")
                    }
                    client::StreamEvent::Message(m) if json => println!("{m}"),
                    client::StreamEvent::Message(m) => println!("{}", client::tail_line(&m)),
                })
                .await?;
                Ok((serde_json::Value::Null, String::new()))
            })
        }
        Command::Route {
            dest,
            seq: Some(seq),
            client,
            ..
        } => {
            let failed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let seen = failed.clone();
            let exit = remote(&config, client, |c| async move {
                let path = format!("/api/v1/destinations/{dest}/route/{seq}");
                let v = c.call(Method::GET, &path, None).await?;
                seen.store(
                    v["decision"] == "error",
                    std::sync::atomic::Ordering::Relaxed,
                );
                Ok((v.clone(), client::route_text(&v)))
            });
            // `error:` exits 1, like a failed delivery.
            if exit == 0 && failed.load(std::sync::atomic::Ordering::Relaxed) {
                1
            } else {
                exit
            }
        }
        Command::Route {
            dest,
            body,
            source,
            headers,
            client,
            ..
        } => route_sample(&config, &dest, body, source, &headers, client.json),
        Command::DeadLetters { dest, client } => remote(&config, client, |c| async move {
            let path = format!("/api/v1/destinations/{dest}/dead-letters?limit=1000");
            let v = c.call(Method::GET, &path, None).await?;
            Ok((v.clone(), client::dead_letter_table(&v)))
        }),
        Command::Redeliver {
            dest,
            seq,
            all: _,
            client,
        } => remote(&config, client, |c| async move {
            let path = match seq {
                Some(n) => format!("/api/v1/destinations/{dest}/dead-letters/{n}/redeliver"),
                None => format!("/api/v1/destinations/{dest}/dead-letters/redeliver"),
            };
            let v = c.call(Method::POST, &path, None).await?;
            let text = match seq {
                Some(n) => format!("{dest}: seq {n} queued for redelivery"),
                None => format!("{dest}: {} dead letters queued for redelivery", v["queued"]),
            };
            Ok((v, text))
        }),
        Command::Pause { dest, client } => set_state(&config, client, dest, "pause"),
        Command::Resume { dest, client } => set_state(&config, client, dest, "resume"),
        Command::Replay {
            dest,
            from_seq,
            from_time,
            to_seq,
            dry_run,
            client,
        } => remote(&config, client, |c| async move {
            let mut body = match (from_seq, from_time) {
                (Some(n), _) => serde_json::json!({ "from_seq": n }),
                (None, Some(t)) => serde_json::json!({ "from_time": t }),
                (None, None) => serde_json::json!({}),
            };
            if let Some(to) = to_seq {
                body["to_seq"] = to.into();
            }
            if dry_run {
                body["dry_run"] = true.into();
            }
            let path = format!("/api/v1/destinations/{dest}/replay");
            let v = c.call(Method::POST, &path, Some(body)).await?;
            let text = if dry_run {
                let at_least = if v["complete"] == false {
                    "at least "
                } else {
                    ""
                };
                format!(
                    "{dest}: replaying seqs {} to {} would send {at_least}{} messages again (dry run: nothing changed)",
                    v["from_seq"], v["to_seq"], v["messages"]
                )
            } else if to_seq.is_some() {
                format!(
                    "{dest}: cursor now {}; after seq {} delivery resumes where it was",
                    v["cursor"], v["to_seq"]
                )
            } else {
                format!("{dest}: cursor now {}", v["cursor"])
            };
            Ok((v, text))
        }),
        Command::Serve {
            log_format,
            ready_file,
        } => {
            init_logging(log_format);
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => return report(&Error::Config(e)),
            };
            let Some(runtime) = runtime(tokio::runtime::Builder::new_multi_thread()) else {
                return 1;
            };
            if let Some(path) = &ready_file {
                remove_stale_ready_file(path);
            }
            match runtime.block_on(serve(config, ready_file)) {
                Ok(()) => 0,
                Err(e) => report(&e),
            }
        }
    }
}

/// A runtime from `builder`; `None` once the failure is reported (exit 1).
fn runtime(mut builder: tokio::runtime::Builder) -> Option<tokio::runtime::Runtime> {
    builder
        .enable_all()
        .build()
        .map_err(|e| report(&Error::Runtime(e)))
        .ok()
}

/// `hookrelay route DEST --body FILE`: the destination's rules applied to a
/// sample, from the config alone (no relay, no secrets).
fn route_sample(
    config: &Path,
    dest: &str,
    body: Option<PathBuf>,
    source: Option<String>,
    headers: &[String],
    json: bool,
) -> i32 {
    let usage = |msg: String| {
        eprintln!("hookrelay: {msg}");
        2
    };
    let routing = match Config::load_routing(config) {
        Ok(r) => r,
        Err(e) => return report(&Error::Config(e)),
    };
    let Some((name, sources, rules)) = routing
        .destinations
        .iter()
        .find(|(n, ..)| n.as_str() == dest)
    else {
        return usage(format!("no destination {dest:?} in {}", config.display()));
    };
    let source = match (source, sources.as_slice()) {
        (Some(s), _) => s,
        (None, [only]) => only.to_string(),
        (None, _) => {
            return usage(format!(
                "{dest} has several sources: name one with --source"
            ))
        }
    };
    let Some((source, event_rule)) = routing.sources.iter().find(|(n, _)| n.as_str() == source)
    else {
        return usage(format!("no source {source:?} in {}", config.display()));
    };
    let Some(path) = body else {
        return usage("give --body FILE".into());
    };
    let body = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) => return usage(format!("cannot read {}: {e}", path.display())),
    };
    let mut parsed = Vec::new();
    for h in headers {
        let Some((k, v)) = h.split_once(':') else {
            return usage(format!("--header {h:?} is not 'Name: value'"));
        };
        parsed.push((k.trim().to_ascii_lowercase(), v.trim().as_bytes().to_vec()));
    }
    let content_type = parsed
        .iter()
        .find(|(k, _)| k == "content-type")
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        .or_else(|| {
            serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .map(|_| "application/json".into())
        });
    let now = crate::time::now_ms();
    let input = crate::route::Input {
        seq: None,
        id: None,
        source: source.as_str(),
        event_type: None,
        received_at_ms: now,
        headers: &parsed,
        query: None,
        content_type: content_type.as_deref(),
        body: &body,
    };
    let event_type = match event_rule.event_type(&input) {
        Ok(t) => t,
        Err(e) => {
            println!("error: event_type: {e}");
            return 1;
        }
    };
    let message = crate::store::Message {
        id: crate::model::MessageId::generate(now),
        source: source.clone(),
        received_at_ms: now,
        event_type,
        content_type,
        idempotency_key: None,
        query: None,
        headers: parsed,
        body,
    };
    let decision = rules.decide(crate::model::Seq(0), &message);
    let failed = matches!(decision, crate::route::Decision::Fail(_));
    let v = crate::route::decision_json(name, crate::model::Seq(0), &message, decision);
    if json {
        println!("{v:#}");
    } else {
        println!("{}", client::route_text(&v).trim_end());
    }
    i32::from(failed)
}

/// "1 source", "2 sources".
fn count(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// `pause` or `resume` a destination; prints its new state.
fn set_state(config: &Path, client: ClientArgs, dest: String, action: &'static str) -> i32 {
    remote(config, client, |c| async move {
        let path = format!("/api/v1/destinations/{dest}/{action}");
        let v = c.call(Method::POST, &path, None).await?;
        let state = format!("{dest}: {}", v["state"].as_str().unwrap_or("?"));
        Ok((v, state))
    })
}

/// Runs a client command against the relay `config` names (only its
/// `[admin]` table is read); prints JSON or text.
fn remote<F, Fut>(config: &Path, args: ClientArgs, f: F) -> i32
where
    F: FnOnce(client::AdminClient) -> Fut,
    Fut: std::future::Future<Output = Result<(serde_json::Value, String), client::ClientError>>,
{
    let admin = match Config::load_admin(config) {
        Ok(a) => a,
        Err(e) => return report(&Error::Config(e)),
    };
    let Some(runtime) = runtime(tokio::runtime::Builder::new_current_thread()) else {
        return 1;
    };
    let client = match client::AdminClient::from_config(&admin) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hookrelay: {e}");
            return e.exit_code();
        }
    };
    match runtime.block_on(f(client)) {
        // A command that printed as it went (`tail`).
        Ok((serde_json::Value::Null, text)) if text.is_empty() => 0,
        Ok((json, text)) => {
            if args.json {
                println!("{json:#}");
            } else {
                println!("{}", text.trim_end());
            }
            0
        }
        Err(e) => {
            eprintln!("hookrelay: {e}");
            e.exit_code()
        }
    }
}

async fn serve(config: Config, ready_file: Option<PathBuf>) -> Result<(), Error> {
    let listeners = Listeners::bind(&config).await?;
    let shutdown = CancellationToken::new();
    tokio::spawn(on_signal(shutdown.clone()));
    crate::run_notify(config, listeners, shutdown, |ready| {
        ready_file.and_then(|path| match ReadyFile::write(path, ready) {
            Ok(file) => Some(file),
            Err((path, e)) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot write the ready file");
                None
            }
        })
    })
    .await
}

/// The `--ready-file` this process wrote; removed when dropped, which
/// [`crate::run_notify`] does as soon as shutdown begins. A few bytes, once
/// each way: blocking is fine here.
struct ReadyFile(PathBuf);

impl ReadyFile {
    /// Writes through a temporary name and a rename, so a reader never sees
    /// half of it.
    fn write(path: PathBuf, ready: crate::Ready) -> Result<ReadyFile, (PathBuf, std::io::Error)> {
        let body = serde_json::json!({
            "pid": std::process::id(),
            "ingest": ready.ingest.to_string(),
            "admin": ready.admin.to_string(),
        });
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let written =
            std::fs::write(&tmp, body.to_string()).and_then(|()| std::fs::rename(&tmp, &path));
        match written {
            Ok(()) => Ok(ReadyFile(path)),
            Err(e) => Err((path, e)),
        }
    }
}

impl Drop for ReadyFile {
    fn drop(&mut self) {
        // Only while it is still ours: another relay may have taken it over.
        if ready_file_pid(&self.0) == Some(std::process::id()) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// The pid a ready file names, if it can be read.
fn ready_file_pid(path: &std::path::Path) -> Option<u32> {
    let text = std::fs::read(path).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&text).ok()?;
    v["pid"].as_u64().and_then(|p| u32::try_from(p).ok())
}

/// Removes a ready file left by a relay that is gone (killed with -9), so
/// nobody reads old ports as "ready" while this one starts. A file whose
/// process still runs is left alone: it belongs to a relay that is up.
fn remove_stale_ready_file(path: &std::path::Path) {
    let alive = ready_file_pid(path)
        .is_some_and(|pid| std::path::Path::new("/proc").join(pid.to_string()).exists());
    if !alive {
        let _ = std::fs::remove_file(path);
    }
}

/// Cancels `shutdown` on the first SIGTERM or SIGINT.
async fn on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
    shutdown.cancel();
}

/// Prints `e` with the `hookrelay:` prefix on every line (a config error
/// has one line per problem); returns its exit code.
fn report(e: &Error) -> i32 {
    for line in e.to_string().lines() {
        eprintln!("hookrelay: {line}");
    }
    e.exit_code()
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
