//! jq programs (the `jaq` crates): compiled once when the config loads, run
//! per message under a work budget.
//!
//! jaq has no fuel of its own, so the budget is counted where every loop of
//! a jq program must pass: each call of a defined filter clones the
//! evaluation context's data (our [`Budget`] type counts those clones, and
//! checks the stack there too, since a non-tail recursion would otherwise
//! overflow it and abort the process), and `range`, the one native filter
//! that loops without calling back (`last(range(1e12))`), is replaced by a
//! counting copy. Past the budget the evaluation unwinds (a panic with a
//! private payload, caught around the run and kept out of the panic hook's
//! output), and the message gets a clear error instead of a stalled worker.
//! Not bounded: one huge allocation (`"x" * 1e10`); programs are config,
//! written by the operator, not input.

use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Once};

use jaq_core::load::{self, Arena, File, Loader};
use jaq_core::{data::HasLut, Compiler, Ctx, DataT, Exn, Lut, Native, Vars};
use jaq_json::Val;

/// Steps (calls of defined filters, `range` outputs) one run may take:
/// about 10-40 ms of the slowest kinds of work on the reference machine,
/// three orders of magnitude above a typical filter or transform.
pub const STEP_BUDGET: u64 = 200_000;
/// Stack an evaluation must leave free; deeper recursion is refused.
const STACK_RESERVE: usize = 256 * 1024;

/// A compiled jq program; cheap to clone and shared across workers.
#[derive(Clone)]
pub struct Program {
    filter: Arc<jaq_core::Filter<Budgeted>>,
    source: Arc<str>,
}

impl std::fmt::Debug for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Program({:?})", self.source)
    }
}

/// Why a program did not compile: what, and where in the program (a byte
/// offset into it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} at character {}", .offset + 1)]
pub struct CompileError {
    pub offset: usize,
    pub message: String,
}

/// Why a run produced no value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    #[error("jq error: {0}")]
    Failed(String),
    #[error("jq program exceeded its work budget ({STEP_BUDGET} steps)")]
    Budget,
    #[error("jq program recursed too deeply")]
    Depth,
}

impl Program {
    /// Parses and compiles `code` with jq's standard library.
    pub fn compile(code: &str) -> Result<Program, CompileError> {
        let at = |s: &str| {
            let offset = (s.as_ptr() as usize).wrapping_sub(code.as_ptr() as usize);
            offset.min(code.len())
        };
        let defs = jaq_core::defs()
            .chain(jaq_std::defs())
            .chain(jaq_json::defs());
        let loader = Loader::new(defs);
        let arena = Arena::default();
        let modules = loader
            .load(&arena, File { code, path: () })
            .map_err(|errs| {
                let first = errs.into_iter().next().map(|(_, e)| e);
                match first {
                    Some(load::Error::Lex(es)) => {
                        es.first().map_or_else(unknown, |(exp, s)| CompileError {
                            offset: at(s),
                            message: format!("syntax error: expected {}", exp.as_str()),
                        })
                    }
                    Some(load::Error::Parse(es)) => es.first().map_or_else(unknown, |(exp, s)| {
                        let found = if s.is_empty() {
                            "the end".to_owned()
                        } else {
                            format!("{:?}", s.chars().take(20).collect::<String>())
                        };
                        CompileError {
                            offset: at(s),
                            message: format!(
                                "syntax error: expected {}, found {found}",
                                exp.as_str()
                            ),
                        }
                    }),
                    Some(load::Error::Io(_)) | None => unknown(),
                }
            })?;
        let filter = Compiler::default()
            .with_funs(funs())
            .compile(modules)
            .map_err(|errs| {
                let first = errs
                    .into_iter()
                    .next()
                    .and_then(|(_, es)| es.into_iter().next());
                match first {
                    Some((name, undefined)) => CompileError {
                        offset: at(name),
                        message: format!("undefined {} {name:?}", undefined_kind(&undefined)),
                    },
                    None => unknown(),
                }
            })?;
        install_quiet_hook();
        Ok(Program {
            filter: Arc::new(filter),
            source: code.into(),
        })
    }

    /// The program as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The program's first output for `input` (`None` if it has none),
    /// within [`STEP_BUDGET`]. Runs on the calling thread.
    pub fn first(&self, input: Val) -> Result<Option<Val>, RunError> {
        STEPS.with(|s| s.set(0));
        let filter = &self.filter;
        let run = panic::catch_unwind(AssertUnwindSafe(|| {
            let ctx = Ctx::<Budgeted>::new(Budget(&filter.lut), Vars::new([]));
            filter.id.run((ctx, input)).next()
        }));
        match run {
            Ok(None) => Ok(None),
            Ok(Some(Ok(v))) => Ok(Some(v)),
            // Never `unwrap_valr`: it exits the process on `halt`.
            Ok(Some(Err(e))) => Err(RunError::Failed(truncated(match e.get_err() {
                // `error("text")` reads as the text, other values as JSON.
                Ok(e) => match e.into_val() {
                    Val::TStr(b) | Val::BStr(b) => String::from_utf8_lossy(&b).into_owned(),
                    other => other.to_string(),
                },
                Err(_) => "halt is not available".into(),
            }))),
            Err(payload) => match payload.downcast_ref::<Exceeded>() {
                Some(Exceeded::Steps) => Err(RunError::Budget),
                Some(Exceeded::Stack) => Err(RunError::Depth),
                None => Err(RunError::Failed("jq evaluation panicked".into())),
            },
        }
    }
}

fn unknown() -> CompileError {
    CompileError {
        offset: 0,
        message: "cannot compile".into(),
    }
}

fn undefined_kind(u: &jaq_core::compile::Undefined) -> &'static str {
    use jaq_core::compile::Undefined;
    match u {
        Undefined::Mod => "module",
        Undefined::Var => "variable",
        Undefined::Label => "label",
        Undefined::Filter(_) => "filter",
        _ => "name",
    }
}

fn truncated(mut s: String) -> String {
    if s.len() > 200 {
        let mut cut = 200;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

thread_local! {
    /// Steps taken by the run in progress on this thread.
    static STEPS: Cell<u64> = const { Cell::new(0) };
}

/// The payload of the unwinding that ends a run over budget.
#[derive(Debug)]
enum Exceeded {
    Steps,
    Stack,
}

/// One step of work: over the budget, or near the end of the stack, the run
/// unwinds.
fn step() {
    let n = STEPS.with(|s| {
        let n = s.get() + 1;
        s.set(n);
        n
    });
    if n > STEP_BUDGET {
        panic::panic_any(Exceeded::Steps);
    }
    // Checked every few steps: it reads the thread's stack bounds.
    if n % 8 == 0 && stacker::remaining_stack().is_some_and(|r| r < STACK_RESERVE) {
        panic::panic_any(Exceeded::Stack);
    }
}

/// Keeps the unwinding of a run over budget out of the logs; every other
/// panic still goes to the hook that was installed before.
fn install_quiet_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if info.payload().downcast_ref::<Exceeded>().is_none() {
                previous(info);
            }
        }));
    });
}

/// The data kind of our runs: JSON values, and a context whose every clone
/// (each call of a defined filter) is a [`step`].
pub struct Budgeted;

impl DataT for Budgeted {
    type V<'a> = Val;
    type Data<'a> = Budget<'a>;
}

/// The run's lookup table; cloning it is how the budget sees work.
pub struct Budget<'a>(&'a Lut<Budgeted>);

impl Clone for Budget<'_> {
    fn clone(&self) -> Self {
        step();
        Budget(self.0)
    }
}

impl<'a> HasLut<'a, Budgeted> for Budget<'a> {
    fn lut(&self) -> &'a Lut<Budgeted> {
        self.0
    }
}

/// Native filters that reach outside the message (the environment, which
/// holds secrets; stdin; stderr; the process's exit): each answers with an
/// error instead.
const REFUSED: &[&str] = &[
    "env",
    "input",
    "inputs",
    "halt",
    "stderr_empty",
    "debug_empty",
];

/// jq's native filters, with `range` replaced by a copy that counts steps
/// and the [`REFUSED`] ones disabled.
fn funs() -> impl Iterator<Item = jaq_core::native::Filter<Native<Budgeted>>> {
    let range: jaq_core::native::Filter<jaq_core::RunPtr<Budgeted>> =
        ("range", jaq_core::native::v(3), |mut cv| {
            let by = cv.0.pop_var();
            let to = cv.0.pop_var();
            let from = cv.0.pop_var();
            Box::new(counted_range(from, to, by))
        });
    let refuse: jaq_core::RunPtr<Budgeted> = |_| {
        let e =
            jaq_core::Error::str("not available in hookrelay (env, input, halt, debug, stderr)");
        jaq_core::box_iter::box_once(Err(Exn::from(e)))
    };
    jaq_core::funs::<Budgeted>()
        .filter(|(name, arity, _)| !(*name == "range" && arity.len() == 3))
        .chain([jaq_core::native::run::<Budgeted>(range)])
        .chain(jaq_std::funs::<Budgeted>())
        .chain(jaq_json::funs::<Budgeted>())
        .map(move |(name, arity, native)| {
            if REFUSED.contains(&name) {
                (name, arity, Native::<Budgeted>::new(refuse))
            } else {
                (name, arity, native)
            }
        })
}

/// jaq's `range($from; $to; $by)`, one [`step`] per output.
fn counted_range<'a>(
    from: Val,
    to: Val,
    by: Val,
) -> impl Iterator<Item = jaq_core::ValX<'a, Val>> + 'a {
    use std::cmp::Ordering::{Equal, Greater, Less};
    let dir = by.partial_cmp(&Val::from(0isize)).unwrap_or(Equal);
    let mut next = Some(from);
    std::iter::from_fn(move || {
        let x = next.take()?;
        let more = match dir {
            Greater => x < to,
            Less => x > to,
            Equal => x != to,
        };
        if !more {
            return None;
        }
        step();
        match x.clone() + by.clone() {
            Ok(n) => next = Some(n),
            Err(e) => return Some(Err(e.into())),
        }
        Some(Ok(x))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(code: &str, input: &str) -> Result<Option<String>, RunError> {
        let p = Program::compile(code).unwrap();
        let input = jaq_json::read::parse_single(input.as_bytes()).unwrap();
        p.first(input).map(|v| v.map(|v| v.to_string()))
    }

    #[test]
    fn runs_jq_with_its_standard_library() {
        let body = r#"{"body":{"type":"invoice.paid","data":{"amount":5}}}"#;
        assert_eq!(
            run(".body.type", body).unwrap().unwrap(),
            r#""invoice.paid""#
        );
        let t = run(r#"{text: "\(.body.type): \(.body.data.amount)"}"#, body);
        assert_eq!(t.unwrap().unwrap(), r#"{"text":"invoice.paid: 5"}"#);
        assert_eq!(
            run(r#".body.type | startswith("invoice.")"#, body)
                .unwrap()
                .unwrap(),
            "true"
        );
        assert_eq!(run("[range(5)] | add", "null").unwrap().unwrap(), "10");
        assert_eq!(run("empty", "null").unwrap(), None);
        assert!(
            matches!(run("error(\"no\")", "null"), Err(RunError::Failed(e)) if e.contains("no"))
        );
    }

    #[test]
    fn syntax_errors_say_where() {
        let e = Program::compile(".body.a[").unwrap_err();
        assert_eq!(e.offset, 8, "the end: {e}");
        let e = Program::compile(".a | nosuch(1)").unwrap_err();
        assert_eq!((e.offset, e.message.contains("nosuch")), (5, true), "{e}");
        let e = Program::compile("{a: }").unwrap_err();
        assert!(e.to_string().contains("at character"), "{e}");
    }

    #[test]
    fn endless_programs_end_at_the_budget() {
        let started = std::time::Instant::now();
        assert_eq!(run("def f: f; f", "null"), Err(RunError::Budget));
        assert_eq!(run("last(range(1e12))", "null"), Err(RunError::Budget));
        assert_eq!(run("[range(1e12)] | length", "null"), Err(RunError::Budget));
        assert_eq!(
            run("def f: f, f; [limit(1; f)]", "null"),
            Err(RunError::Budget)
        );
        assert!(matches!(
            run("def f: 1 + f; f", "null"),
            Err(RunError::Depth | RunError::Budget)
        ));
        assert!(matches!(
            run("reduce range(1e9) as $x (0; . + $x)", "null"),
            Err(RunError::Budget)
        ));
        assert!(
            matches!(run("env", "null"), Err(RunError::Failed(e)) if e.contains("not available"))
        );
        assert!(matches!(run("halt", "null"), Err(RunError::Failed(_))));
        assert!(Program::compile("input").is_err());
        // The next run on this thread starts with a fresh budget.
        assert_eq!(run("1", "null").unwrap().unwrap(), "1");
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
    }
}
