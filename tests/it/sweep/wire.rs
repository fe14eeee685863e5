//! Running one case over raw TCP, and judging what the relay sent back.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::cases::{find, Silent, Step, Template};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum End {
    /// The relay closed the connection.
    Eof,
    /// Reset (the relay closed with unread input) or another read error.
    Reset,
    /// Neither within the deadline.
    Deadline,
}

pub struct Exchange {
    pub data: Vec<u8>,
    pub end: End,
    /// From connecting to the end of the connection.
    pub elapsed: Duration,
}

/// Connects, performs `steps` while reading everything the relay sends
/// until it closes, or until `deadline`.
pub async fn exchange(addr: SocketAddr, steps: &[Step], deadline: Duration) -> Exchange {
    let start = Instant::now();
    let until = tokio::time::Instant::now() + deadline;
    let mut stream = TcpStream::connect(addr)
        .await
        .expect("connect to the relay");
    let (mut rd, mut wr) = stream.split();
    let reader = async {
        let mut data = Vec::new();
        let mut buf = vec![0u8; 16 * 1024];
        let end = loop {
            match tokio::time::timeout_at(until, rd.read(&mut buf)).await {
                Err(_) => break End::Deadline,
                Ok(Ok(0)) => break End::Eof,
                Ok(Ok(n)) => data.extend_from_slice(&buf[..n]),
                Ok(Err(_)) => break End::Reset,
            }
        };
        (data, end)
    };
    let writer = async {
        // A write error means the relay closed: stop writing, keep reading.
        'steps: for step in steps {
            match step {
                Step::Send(bytes) => {
                    if wr.write_all(bytes).await.is_err() {
                        break;
                    }
                }
                Step::Trickle(bytes, pause) => {
                    for b in bytes {
                        if wr.write_all(&[*b]).await.is_err() {
                            break 'steps;
                        }
                        tokio::time::sleep(*pause).await;
                    }
                }
                Step::TrickleForever(b, pause) => loop {
                    if wr.write_all(&[*b]).await.is_err() {
                        break 'steps;
                    }
                    tokio::time::sleep(*pause).await;
                },
                Step::HalfClose => {
                    let _ = wr.shutdown().await;
                }
            }
        }
        std::future::pending::<()>().await
    };
    let (data, end) = tokio::select! {
        r = reader => r,
        _ = writer => unreachable!(),
    };
    Exchange {
        data,
        end,
        elapsed: start.elapsed(),
    }
}

/// HTTP/1 answers in `data`: their statuses, in order. A last answer cut
/// short by a reset still counts by its status line.
pub fn http_statuses(data: &[u8], head: bool) -> Result<Vec<u16>, String> {
    let mut rest = data;
    let mut statuses = Vec::new();
    while !rest.is_empty() {
        let show = || String::from_utf8_lossy(&rest[..rest.len().min(80)]).into_owned();
        if !rest.starts_with(b"HTTP/1.1 ") || rest.len() < 12 {
            return Err(format!("not an HTTP/1.1 answer: {:?}", show()));
        }
        let status: u16 = std::str::from_utf8(&rest[9..12])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line: {:?}", show()))?;
        statuses.push(status);
        let Some(end) = find(rest, b"\r\n\r\n") else {
            break;
        };
        let head_text = String::from_utf8_lossy(&rest[..end]).to_ascii_lowercase();
        let len: usize = head_text
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(Ok(0), |v| v.trim().parse())
            .map_err(|_| format!("bad content-length in {head_text:?}"))?;
        let len = if head { 0 } else { len };
        rest = &rest[(end + 4 + len).min(rest.len())..];
    }
    Ok(statuses)
}

/// HTTP/2 frames in `data`: the GOAWAY error code if any; an error for any
/// frame that could carry an answer (HEADERS, DATA, PUSH_PROMISE).
pub fn h2_goaway(data: &[u8]) -> Result<Option<u32>, String> {
    let mut rest = data;
    let mut goaway = None;
    while rest.len() >= 9 {
        let len = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
        let kind = rest[3];
        let payload = &rest[9..(9 + len).min(rest.len())];
        match kind {
            0 | 1 | 5 => return Err(format!("HTTP/2 frame of type {kind} in answer to junk")),
            7 if payload.len() >= 8 => {
                goaway = Some(u32::from_be_bytes(payload[4..8].try_into().unwrap()));
            }
            _ => {}
        }
        rest = &rest[(9 + len).min(rest.len())..];
    }
    Ok(goaway)
}

/// How [`judge`] starts its complaint about a close without an answer.
pub const SILENT_CLOSE: &str = "the relay closed without an answer";

/// Whether a label from [`judge`] is a close without an answer.
pub fn is_silent(label: &str) -> bool {
    label.starts_with("no answer") || label.starts_with("h2 frames without GOAWAY")
}

/// One finished case: its label for the histogram, or what was wrong.
pub fn judge(case: &Template, ex: &Exchange) -> Result<String, String> {
    if ex.end == End::Deadline {
        return Err(format!(
            "no answer and not closed within {:?} (got {} bytes)",
            ex.elapsed,
            ex.data.len()
        ));
    }
    let closed = match ex.end {
        End::Eof => "closed",
        _ => "reset",
    };
    // What the relay ended with when it sent no answer to the junk.
    let silent = if ex.data.is_empty() {
        Some(format!("no answer, {closed}"))
    } else if case.h2 && !ex.data.starts_with(b"HTTP/") {
        match h2_goaway(&ex.data)? {
            Some(code) => return Ok(format!("h2 GOAWAY error {code}")),
            // Its SETTINGS are no answer to the junk.
            None => Some(format!("h2 frames without GOAWAY, {closed}")),
        }
    } else {
        None
    };
    if let Some(label) = silent {
        return match case.silent {
            Silent::Expected => Ok(label),
            Silent::Never => Err(format!(
                "{SILENT_CLOSE} ({label}, after {:.2?}), where it must answer one of {:?}",
                ex.elapsed, case.expect
            )),
        };
    }
    let statuses = http_statuses(&ex.data, case.head)?;
    for s in &statuses {
        if !(400..600).contains(s) {
            return Err(format!("answered {s}: junk must be refused"));
        }
        if !case.expect.contains(s) {
            return Err(format!("answered {s}, expected one of {:?}", case.expect));
        }
    }
    let label: Vec<String> = statuses.iter().map(u16::to_string).collect();
    Ok(label.join("+"))
}
