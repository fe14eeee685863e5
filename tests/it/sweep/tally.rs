//! Counting how the cases ended, by status, category and template.

use std::collections::BTreeMap;
use std::time::Duration;

use super::cases::{Silent, Template};
use super::wire::{is_silent, SILENT_CLOSE};

#[derive(Clone, Copy)]
pub struct TemplateCount {
    pub silent: Silent,
    /// Answered with one of the expected statuses (or an h2 GOAWAY).
    pub answered: usize,
    /// Closed without an answer, allowed or not.
    pub closed: usize,
    /// Any other failure.
    pub failed: usize,
}

#[derive(Default)]
pub struct Tally {
    /// category -> answer label -> count
    pub by_category: BTreeMap<&'static str, BTreeMap<String, usize>>,
    /// template -> how its cases ended
    pub by_template: BTreeMap<String, TemplateCount>,
    /// status (or "no answer") -> count
    pub by_status: BTreeMap<String, usize>,
    pub cases: usize,
    /// The longest fast case, connect to close.
    pub slowest: Duration,
    pub failures: Vec<String>,
    pub failure_count: usize,
}

impl Tally {
    pub fn record(&mut self, what: String, case: &Template, result: Result<String, String>) {
        self.cases += 1;
        let t = self
            .by_template
            .entry(case.label())
            .or_insert(TemplateCount {
                silent: case.silent,
                answered: 0,
                closed: 0,
                failed: 0,
            });
        match &result {
            Ok(label) if is_silent(label) => t.closed += 1,
            Ok(_) => t.answered += 1,
            Err(e) if e.starts_with(SILENT_CLOSE) => t.closed += 1,
            Err(_) => t.failed += 1,
        }
        match result {
            Ok(label) => {
                for part in label.split('+') {
                    let key = if part.starts_with("no answer") || part.starts_with("h2") {
                        part.to_string()
                    } else {
                        format!("HTTP {part}")
                    };
                    *self.by_status.entry(key).or_default() += 1;
                }
                *self
                    .by_category
                    .entry(case.category)
                    .or_default()
                    .entry(label)
                    .or_default() += 1;
            }
            Err(e) => {
                self.failure_count += 1;
                if self.failures.len() < 30 {
                    self.failures
                        .push(format!("{what} [{}]: {e}", case.label()));
                }
            }
        }
    }

    pub fn merge(&mut self, other: Tally) {
        for (c, labels) in other.by_category {
            let mine = self.by_category.entry(c).or_default();
            for (l, n) in labels {
                *mine.entry(l).or_default() += n;
            }
        }
        for (s, n) in other.by_status {
            *self.by_status.entry(s).or_default() += n;
        }
        for (name, t) in other.by_template {
            self.by_template
                .entry(name)
                .and_modify(|mine| {
                    mine.answered += t.answered;
                    mine.closed += t.closed;
                    mine.failed += t.failed;
                })
                .or_insert(t);
        }
        self.cases += other.cases;
        self.slowest = self.slowest.max(other.slowest);
        self.failure_count += other.failure_count;
        self.failures.extend(other.failures);
        self.failures.truncate(30);
    }

    pub fn status(&self, key: &str) -> usize {
        self.by_status.get(key).copied().unwrap_or(0)
    }
}
