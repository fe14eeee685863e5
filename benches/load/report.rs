//! The per-run cost tables: fixed rows, padded Markdown, so that
//! BENCHMARKS.md can quote them as printed.

use std::time::Duration;

use crate::cost::Cost;

/// A table printed as padded Markdown: the first column left-aligned, the
/// middle ones right-aligned (figures), the last one left-aligned (notes).
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table {
            rows: vec![header.iter().map(|h| h.to_string()).collect()],
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        let mut cells = cells;
        cells.resize(self.rows[0].len(), String::new());
        self.rows.push(cells);
    }

    /// A row with one figure, in `column` (the label's is 0), and a note in the last.
    pub fn figure_row(&mut self, label: &str, column: usize, figure: String, note: String) {
        let mut cells = vec![String::new(); self.rows[0].len()];
        cells[0] = label.to_string();
        cells[column] = figure;
        if let Some(last) = cells.last_mut() {
            *last = note;
        }
        self.rows.push(cells);
    }

    pub fn print(&self) {
        let n = self.rows[0].len();
        let width: Vec<usize> = (0..n)
            .map(|c| {
                let w = self.rows.iter().map(|r| r[c].chars().count()).max();
                w.unwrap_or(0).max(3)
            })
            .collect();
        let right = |c: usize| c > 0 && c + 1 < n;
        let line = |cells: Vec<String>| println!("| {} |", cells.join(" | "));
        for (i, row) in self.rows.iter().enumerate() {
            line(
                row.iter()
                    .enumerate()
                    .map(|(c, cell)| {
                        let pad = " ".repeat(width[c] - cell.chars().count());
                        if right(c) {
                            format!("{pad}{cell}")
                        } else {
                            format!("{cell}{pad}")
                        }
                    })
                    .collect(),
            );
            if i == 0 {
                line(
                    (0..n)
                        .map(|c| {
                            if right(c) {
                                format!("{}:", "-".repeat(width[c] - 1))
                            } else {
                                "-".repeat(width[c])
                            }
                        })
                        .collect(),
                );
            }
        }
    }
}

/// `12345.6` → `"12,346"`.
pub fn thousands(x: f64) -> String {
    let digits = format!("{:.0}", x.abs());
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    if x < -0.5 {
        out.insert(0, '-');
    }
    out
}

/// A ratio: `0.16×`, `1.92×`, `12.5×`.
pub fn times(x: f64) -> String {
    if !x.is_finite() {
        "—".into()
    } else if x < 10.0 {
        format!("{x:.2}×")
    } else {
        format!("{x:.1}×")
    }
}

/// Megabytes (10^6 bytes), as `df` and the issue count them.
pub fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// One process's figures over one window, divided by `units` (webhooks
/// acknowledged, requests answered or deliveries made).
pub struct Measured<'a> {
    /// Short name for notes: `hookrelay`, `ingest`, `drain`, `bare`.
    pub name: &'a str,
    pub units: usize,
    /// Units per second.
    pub rate: f64,
    pub cost: &'a Cost,
}

impl Measured<'_> {
    fn per(&self, x: f64) -> f64 {
        x / self.units.max(1) as f64
    }

    fn cpu_us(&self) -> f64 {
        self.per(self.cost.cpu.as_secs_f64() * 1e6)
    }

    fn switches(&self) -> f64 {
        self.per(self.cost.switches() as f64)
    }
}

/// The cost table: rate, CPU, context switches, disk bytes and memory of each
/// column per unit, and notes comparing them with the bare server `bare`.
/// `body_bytes` is the size of one webhook's body.
pub fn cost_table(
    unit: &str,
    bare: Option<&Measured>,
    cols: &[Measured],
    body_bytes: usize,
) -> Table {
    let mut header = vec![format!("per {unit}")];
    header.extend(bare.map(|_| "bare hyper".to_string()));
    header.extend(cols.iter().map(|c| c.name.to_string()));
    header.push(if bare.is_some() { "vs bare hyper" } else { "" }.to_string());
    let mut t = Table::new(&header.iter().map(String::as_str).collect::<Vec<_>>());

    // A note for each column: "x" alone when there is one, "name x" else.
    let notes = |f: &dyn Fn(&Measured) -> Option<String>| -> String {
        let notes: Vec<String> = cols
            .iter()
            .filter_map(|c| {
                let note = f(c)?;
                Some(if cols.len() == 1 {
                    note
                } else {
                    format!("{} {note}", c.name)
                })
            })
            .collect();
        notes.join("; ")
    };
    let vs_bare = |f: &dyn Fn(&Measured) -> f64| notes(&|c| bare.map(|b| times(f(c) / f(b))));
    let mut row = |label: &str, cell: &dyn Fn(&Measured) -> String, note: String| {
        let mut cells = vec![label.to_string()];
        cells.extend(bare.map(cell));
        cells.extend(cols.iter().map(cell));
        cells.push(note);
        t.row(cells);
    };

    row(
        "rate",
        &|m| format!("{}/s", thousands(m.rate)),
        vs_bare(&|m| m.rate),
    );
    row(
        "CPU (utime+stime)",
        &|m| format!("{:.1} µs", m.cpu_us()),
        vs_bare(&|m| m.cpu_us()),
    );
    row(
        "… threads' schedstat",
        &|m| format!("{:.1} µs", m.per(m.cost.thread_cpu.as_secs_f64() * 1e6)),
        String::new(),
    );
    row(
        "context switches",
        &|m| format!("{:.2}", m.switches()),
        vs_bare(&|m| m.switches()),
    );
    row(
        "… voluntary / involuntary",
        &|m| {
            format!(
                "{:.2} / {:.2}",
                m.per(m.cost.voluntary as f64),
                m.per(m.cost.involuntary as f64)
            )
        },
        String::new(),
    );
    row(
        "disk written (write_bytes)",
        &|m| format!("{} B", thousands(m.per(m.cost.write_bytes as f64))),
        notes(&|c| {
            let per_byte = c.per(c.cost.write_bytes as f64) / body_bytes as f64;
            Some(format!("{per_byte:.2} per body byte"))
        }),
    );
    row(
        "disk read (read_bytes)",
        &|m| format!("{} B", thousands(m.per(m.cost.read_bytes as f64))),
        String::new(),
    );
    row(
        "RSS peak / at the end",
        &|m| format!("{:.1} / {:.1} MiB", m.cost.hwm_mib, m.cost.rss_mib),
        String::new(),
    );
    t
}

/// Where one process's CPU and context switches went, by thread name.
pub fn thread_table(what: &str, m: &Measured) -> Table {
    let unit = |d: Duration| format!("{:.1} µs", m.per(d.as_secs_f64() * 1e6));
    let mut t = Table::new(&[what, "threads", "CPU", "ctx switches", ""]);
    for g in &m.cost.threads {
        t.row(vec![
            g.name.clone(),
            g.threads.to_string(),
            unit(g.cpu),
            format!("{:.2}", m.per(g.switches as f64)),
            String::new(),
        ]);
    }
    let c = m.cost;
    t.row(vec![
        format!("all threads seen ({} exited)", c.threads_exited),
        c.threads_seen.to_string(),
        unit(c.thread_cpu),
        format!("{:.2}", m.switches()),
        format!(
            "{:.0} % of the process CPU",
            100.0 * c.thread_cpu.as_secs_f64() / c.cpu.as_secs_f64().max(1e-9)
        ),
    ]);
    t
}
