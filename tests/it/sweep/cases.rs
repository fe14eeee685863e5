//! The sweep's cases: a table of templates, each a name, what the client
//! sends (built from a variant number, so that repeats differ), and which
//! answers are allowed. Counts and checks are derived from the tables.
//!
//! Anything well framed that reaches the unverified source would (rightly)
//! be stored, so every well-framed request goes to the signed source or a
//! wrong path, and only requests that are broken as HTTP go to the
//! unverified one.

use std::sync::LazyLock;
use std::time::Duration;

use hmac::{Hmac, Mac};

use super::{MAX_BODY, OPEN, SECRET, SIGNED};

/// One thing the client does on the connection, in order.
#[derive(Clone, Debug)]
pub enum Step {
    Send(Vec<u8>),
    /// One byte at a time with a pause after each.
    Trickle(Vec<u8>, Duration),
    /// The same byte forever, with a pause after each (until the relay closes).
    TrickleForever(u8, Duration),
    /// Shut down the write side (the relay reads EOF) and keep reading.
    HalfClose,
}

/// Whether the relay may end a case by closing the connection without
/// sending anything. A panic in a request handler ends only that
/// connection's task, so the client sees exactly such a silent close: it
/// must not pass where the relay has something to answer.
///
/// Against the relay as it is, every fast case is answered (an HTTP status,
/// or a GOAWAY for HTTP/2 junk), broken framing and bodies cut short by the
/// client's half-close included; only the slowloris kinds that never finish
/// a request head are closed on without an answer (hyper's header timeout
/// sends no 408).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Silent {
    /// There is something to answer: a close without an answer fails.
    Never,
    /// No request head was ever complete: the relay can only close.
    Expected,
}

/// What a template builds from: the variant (how many times the template
/// came round before) and a body unique to the case.
pub struct Input {
    pub v: usize,
    /// A small JSON body unique to the case.
    pub body: Vec<u8>,
}

type Build = Box<dyn Fn(&Input) -> Vec<Step> + Send + Sync>;

/// One kind of malformed request.
pub struct Template {
    pub category: &'static str,
    /// Unique among all templates.
    pub name: String,
    /// Statuses a case may be answered with.
    pub expect: &'static [u16],
    pub silent: Silent,
    /// A HEAD request: its answer has no body whatever `content-length` says.
    pub head: bool,
    /// Answers are HTTP/2 frames.
    pub h2: bool,
    build: Build,
}

impl Template {
    /// A template that sends what `bytes` builds in one write.
    fn send(
        name: &str,
        expect: &'static [u16],
        bytes: impl Fn(&Input) -> Vec<u8> + Send + Sync + 'static,
    ) -> Template {
        Template {
            category: "",
            name: name.to_string(),
            expect,
            silent: Silent::Never,
            head: false,
            h2: false,
            build: Box::new(move |x| vec![Step::Send(bytes(x))]),
        }
    }

    /// A template that always takes the same `steps`.
    fn steps(name: &str, expect: &'static [u16], steps: Vec<Step>) -> Template {
        Template {
            build: Box::new(move |_| steps.clone()),
            ..Template::send(name, expect, |_| vec![])
        }
    }

    /// Half-closes after the rest.
    fn half_close(mut self) -> Template {
        let build = self.build;
        self.build = Box::new(move |x| {
            let mut steps = build(x);
            steps.push(Step::HalfClose);
            steps
        });
        self
    }

    fn head(self) -> Template {
        Template { head: true, ..self }
    }

    fn silent(self) -> Template {
        Template {
            silent: Silent::Expected,
            ..self
        }
    }

    /// The steps of case `n`, variant `v`.
    pub fn case(&self, n: usize, v: usize) -> Vec<Step> {
        let body = format!("{{\"junk\":{n}}}").into_bytes();
        (self.build)(&Input { v, body })
    }

    /// `category: name`, as the tally reports it.
    pub fn label(&self) -> String {
        format!("{}: {}", self.category, self.name)
    }
}

/// Sets `category` on each of `templates`.
fn group(category: &'static str, templates: Vec<Template>) -> Vec<Template> {
    templates
        .into_iter()
        .map(|t| Template { category, ..t })
        .collect()
}

// ---------------------------------------------------------------------------
// Building blocks.

const O: &[u8] = OPEN.as_bytes();
const S: &[u8] = SIGNED.as_bytes();
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hmac_hex(key: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    mac.update(body);
    hex(&mac.finalize().into_bytes())
}

/// `X-Hub-Signature-256` value for `body`.
pub fn sign(body: &[u8]) -> String {
    format!("sha256={}", hmac_hex(SECRET.as_bytes(), body))
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A well-framed POST with `Connection: close` and `extra` header lines.
fn post_close(path: &[u8], extra: &str, body: &[u8]) -> Vec<u8> {
    cat(&[
        b"POST ",
        path,
        format!(
            " HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n{extra}Content-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
        body,
    ])
}

/// [`post_close`] to the unverified source, its `POST` replaced by `method`.
fn with_method(x: &Input, method: &[u8]) -> Vec<u8> {
    let mut r = post_close(O, "", &x.body);
    r.splice(0..4, method.to_vec());
    r
}

/// [`post_close`] to the unverified source, its `HTTP/1.1` replaced by `version`.
fn with_version(x: &Input, version: &[u8]) -> Vec<u8> {
    let mut r = post_close(O, "", &x.body);
    let at = find(&r, b"HTTP/1.1").unwrap();
    r.splice(at..at + 8, version.to_vec());
    r
}

/// A chunked POST head to `path` with `Connection: close`.
fn chunked_head(path: &str, extra: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n{extra}Transfer-Encoding: chunked\r\n\r\n"
    )
    .into_bytes()
}

/// A chunked POST to the unverified source with `Transfer-Encoding: coding`.
fn coded_head(coding: &[u8]) -> Vec<u8> {
    let mut r = chunked_head(OPEN, "");
    let at = r.len() - b"chunked\r\n\r\n".len();
    r.splice(at..at + 7, coding.to_vec());
    r
}

/// An HTTP/2 frame: 24-bit length, type, flags, stream id, payload.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// The HTTP/2 preface and `frames`, then a half-close (which ends the
/// connection even where HTTP/2 would only reset a stream).
fn h2(name: &str, frames: impl Fn(&Input) -> Vec<Vec<u8>> + Send + Sync + 'static) -> Template {
    let t = Template::send(name, &[], move |x| cat(&[H2_PREFACE, &frames(x).concat()]));
    Template { h2: true, ..t }.half_close()
}

/// An empty SETTINGS frame.
fn settings() -> Vec<u8> {
    h2_frame(4, 0, 0, &[])
}

/// A signed POST one byte over `max_body_bytes`.
fn signed_big() -> Vec<u8> {
    let big = vec![b'g'; MAX_BODY + 1];
    post_close(S, &format!("X-Hub-Signature-256: {}\r\n", sign(&big)), &big)
}

/// A POST to the signed source with `header` as its signature header line(s).
fn signed_with(
    header: impl Fn(&Input) -> String + Send + Sync + 'static,
) -> impl Fn(&Input) -> Vec<u8> {
    move |x| post_close(S, &header(x), &x.body)
}

// ---------------------------------------------------------------------------
// The tables.

/// Every fast template; case `i` of the sweep is template `i % len`.
pub static FAST: LazyLock<Vec<Template>> = LazyLock::new(|| {
    [
        group("bad method", bad_methods()),
        group("broken chunked", broken_chunked()),
        group("lying content-length", lying_lengths()),
        group("huge headers", bad_headers()),
        group("bad path", bad_paths()),
        group("nul, non-utf-8 bytes", nul_bytes()),
        group("bad version", bad_versions()),
        group("h2 garbage", h2_garbage()),
        group("bad signature", bad_signatures()),
        group("too large body", too_large()),
    ]
    .into_iter()
    .flatten()
    .collect()
});

fn bad_methods() -> Vec<Template> {
    vec![
        Template::send("FOO", &[405], |x| with_method(x, b"FOO")),
        Template::send("GET", &[405], |x| with_method(x, b"GET")),
        Template::send("lower-case post", &[405], |x| with_method(x, b"post")),
        Template::send("TLS hello first", &[400], |x| {
            cat(&[
                b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",
                &post_close(O, "", &x.body),
            ])
        }),
        Template::send("CONNECT to a path", &[400, 404, 405], |_| {
            b"CONNECT /hooks/open HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n".to_vec()
        }),
        Template::send("CONNECT to an authority", &[400, 404, 405], |_| {
            b"CONNECT 127.0.0.1:443 HTTP/1.1\r\nHost: 127.0.0.1:443\r\nConnection: close\r\n\r\n"
                .to_vec()
        }),
        Template::send("70 kB method", &[400, 431], |_| {
            cat(&[&vec![b'X'; 70_000], b" /hooks/open HTTP/1.1\r\n\r\n"])
        }),
        Template::send("1 kB method", &[400, 405], |x| {
            with_method(x, &vec![b'M'; 1024 + x.v % 512])
        }),
        Template::send("NUL in the method", &[400], |x| with_method(x, b"PO\0ST")),
        Template::send("separators in the method", &[400], |x| {
            let bad: [&[u8]; 5] = [b"PO(ST", b"POST\t", b"PO/ST", b"\"POST\"", b"PO\x7fST"];
            with_method(x, bad[x.v % bad.len()])
        }),
        Template::send("HEAD", &[405], |_| {
            b"HEAD /hooks/open HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n".to_vec()
        })
        .head(),
        Template::send("other methods", &[405], |x| {
            let m = ["DELETE", "PUT", "PATCH", "OPTIONS", "TRACE", "PROPFIND"][x.v % 6];
            with_method(x, m.as_bytes())
        }),
        Template::send("spaces before the method", &[400], |x| {
            cat(&[b"   ", &post_close(O, "", &x.body)])
        }),
    ]
}

fn broken_chunked() -> Vec<Template> {
    let open = |rest: &'static [u8]| move |_: &Input| cat(&[&chunked_head(OPEN, ""), rest]);
    let signed = |rest: &'static [u8]| move |_: &Input| cat(&[&chunked_head(SIGNED, ""), rest]);
    vec![
        Template::send("size not hex", &[400], open(b"zz\r\nabc\r\n0\r\n\r\n")),
        Template::send("no CRLF after data", &[400], open(b"3\r\nabcX0\r\n\r\n")),
        Template::send(
            "size overflows",
            &[400],
            open(b"ffffffffffffffffff\r\nabc\r\n0\r\n\r\n"),
        ),
        Template::send("cut inside a chunk", &[400], open(b"10\r\nabc")).half_close(),
        Template::send("negative size", &[400], open(b"-1\r\nabc\r\n0\r\n\r\n")),
        Template::send("20 kB extension", &[400], |_| {
            cat(&[
                &chunked_head(OPEN, ""),
                b"3;",
                &vec![b'e'; 20_000],
                b"\r\nabc\r\n0\r\n\r\n",
            ])
        }),
        Template::send(
            "control bytes in an extension",
            &[400, 401],
            signed(b"3;\x01\x02=\x7f\r\nabc\r\n0\r\n\r\n"),
        ),
        Template::send("chunked, then gzip", &[400], |_| {
            cat(&[&coded_head(b"chunked, gzip"), b"3\r\nabc\r\n0\r\n\r\n"])
        }),
        Template::send("gzip only", &[400, 501], |_| {
            cat(&[&coded_head(b"gzip"), b"abc"])
        }),
        Template::send("no last chunk", &[400], open(b"3\r\nabc\r\n")).half_close(),
        Template::send(
            "space after the size",
            &[400, 401],
            signed(b"3 \r\nabc\r\n0\r\n\r\n"),
        ),
        Template::send(
            "NUL in a trailer",
            &[400, 401],
            signed(b"3\r\nabc\r\n0\r\nX-T\0: v\r\n\r\n"),
        ),
        Template::send(
            "chunk longer than its size",
            &[400],
            open(b"3\r\nabcdef\r\n0\r\n\r\n"),
        ),
        Template::send("empty size line", &[400], open(b"\r\n\r\n")),
    ]
}

fn lying_lengths() -> Vec<Template> {
    vec![
        Template::send("longer than sent", &[400], |x| {
            cat(&[
                b"POST /hooks/open HTTP/1.1\r\nHost: relay\r\nContent-Length: 100\r\n\r\n",
                &x.body,
            ])
        })
        .half_close(),
        // Shorter than sent, signed over everything sent: the relay sees a
        // prefix (401), then the rest as a request line (400).
        Template::send("shorter than sent", &[401, 400], |x| {
            let full = cat(&[&x.body, b"-JUNK\r\n\r\n"]);
            cat(&[
                format!(
                    "POST /hooks/signed HTTP/1.1\r\nHost: relay\r\nX-Hub-Signature-256: {}\r\nContent-Length: 5\r\n\r\n",
                    sign(&full)
                )
                .as_bytes(),
                &full,
            ])
        }),
        Template::send("two lengths, one wrong", &[400], |x| {
            post_close(
                O,
                &format!("Content-Length: {}\r\n", x.body.len() + 1),
                &x.body,
            )
        }),
        Template::send("a list of lengths", &[400], |x| {
            let mut r = post_close(O, "", &x.body);
            let text = format!("Content-Length: {}\r\n", x.body.len());
            let at = find(&r, text.as_bytes()).unwrap();
            r.splice(
                at..at + text.len(),
                format!("Content-Length: {}, {}\r\n", x.body.len(), x.body.len() + 1).into_bytes(),
            );
            r
        }),
        Template::send("the same length twice", &[400, 401], |x| {
            post_close(S, &format!("Content-Length: {}\r\n", x.body.len()), &x.body)
        }),
        Template::send("length and chunked", &[400, 401], |_| {
            cat(&[
                &chunked_head(
                    SIGNED,
                    "Content-Length: 3\r\nX-Hub-Signature-256: sha256=00\r\n",
                ),
                b"3\r\nabc\r\n0\r\n\r\n",
            ])
        }),
        Template::send("not a number", &[400], |x| {
            let bad = [
                "-5",
                "abc",
                "+5",
                "0x5",
                "5 5",
                "5.0",
                "",
                "18446744073709551616",
                "5\0",
            ];
            cat(&[
                format!(
                    "POST /hooks/open HTTP/1.1\r\nHost: relay\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
                    bad[x.v % bad.len()]
                )
                .as_bytes(),
                &x.body,
            ])
        }),
        Template::send("a gigabyte declared", &[413], |_| {
            b"POST /hooks/open HTTP/1.1\r\nHost: relay\r\nContent-Length: 1000000000\r\n\r\nabc"
                .to_vec()
        }),
        Template::send("cut short", &[400], |_| {
            cat(&[
                b"POST /hooks/open HTTP/1.1\r\nHost: relay\r\nContent-Length: 1000\r\n\r\n",
                &[b'z'; 600],
            ])
        })
        .half_close(),
    ]
}

fn bad_headers() -> Vec<Template> {
    let many = |n: usize| (0..n).map(|k| format!("X-{k}: v\r\n")).collect::<String>();
    let open_with = |extra: &'static str| move |x: &Input| post_close(O, extra, &x.body);
    vec![
        Template::send("70 kB value", &[431], |x| {
            post_close(O, &format!("X-Huge: {}\r\n", "h".repeat(70_000)), &x.body)
        }),
        Template::send("5000 headers", &[431], move |x| {
            post_close(O, &many(5000), &x.body)
        }),
        Template::send("101 headers", &[431], move |x| {
            post_close(O, &many(101), &x.body)
        }),
        Template::send("70 kB query", &[414, 431], |x| {
            post_close(
                format!("/hooks/open?{}", "q".repeat(70_000)).as_bytes(),
                "",
                &x.body,
            )
        }),
        Template::send("space in a name", &[400], open_with("X Bad: v\r\n")),
        Template::send("no colon", &[400], open_with("X-No-Colon\r\n")),
        Template::send(
            "folded value",
            &[400],
            open_with("X-Folded: a\r\n  folded\r\n"),
        ),
        Template::send("empty name", &[400], open_with(": nameless\r\n")),
        Template::send("bare CR in a value", &[400], open_with("X-Cr: a\rb\r\n")),
        Template::send("40 kB value, signed source", &[401, 431], |x| {
            post_close(S, &format!("X-Big: {}\r\n", "b".repeat(40_000)), &x.body)
        }),
    ]
}

fn bad_paths() -> Vec<Template> {
    let path = |p: &'static [u8]| move |x: &Input| post_close(p, "", &x.body);
    vec![
        Template::send("not UTF-8", &[400], path(b"/hooks/\xff\xfeopen")),
        Template::send("percent and dot junk", &[400, 404], |x| {
            let paths = [
                "/hooks/open%00",
                "/hooks%2Fopen",
                "/%ZZ%",
                "/hooks/open/..",
                "//hooks/open",
                "/hooks/./open",
                "/HOOKS/OPEN",
                "/hooks/open%20",
                "/hooks/open/",
                "/hooks/%6fpen",
                "/hooks/open;x",
                "/%",
                "/hooks/open%C0%AE",
                "/%E2%80%AE/hooks/open",
            ];
            post_close(paths[x.v % paths.len()].as_bytes(), "", &x.body)
        }),
        Template::send("control byte", &[400], path(b"/hooks/o\x01pen")),
        Template::send("space", &[400], path(b"/hooks/open x")),
        Template::send("asterisk", &[400, 404], path(b"*")),
        Template::send(
            "bad query escapes",
            &[400, 401],
            path(b"/hooks/signed?a=%ZZ&b=%%&c=%u0041"),
        ),
        Template::send("fragment", &[400, 401], path(b"/hooks/signed#fragment")),
        Template::send(
            "broken absolute URI",
            &[400],
            path(b"http://[::1/hooks/open"),
        ),
        Template::send("NUL", &[400], |x| {
            post_close(format!("/hooks/open\u{0}/{}", x.v).as_bytes(), "", &x.body)
        }),
        Template::send("no leading slash", &[400], path(b"hooks/open")),
    ]
}

fn nul_bytes() -> Vec<Template> {
    vec![
        Template::send("NUL in a header name", &[400], |x| {
            post_close(O, "X-\0A: v\r\n", &x.body)
        }),
        Template::send("NUL in a header value", &[400], |x| {
            post_close(O, "X-A: a\0b\r\n", &x.body)
        }),
        Template::send("NULs before the request", &[400], |x| {
            cat(&[b"\0\0\0", &post_close(O, "", &x.body)])
        }),
        Template::send("only NULs", &[400], |x| vec![0u8; 1024 + x.v % 1024]),
        // Not UTF-8 in a header value is valid HTTP (obs-text): signed source.
        Template::send("non-UTF-8 header value", &[401], |x| {
            let mut r = post_close(S, "X-Bin: \r\n", &x.body);
            let at = find(&r, b"X-Bin: ").unwrap() + 7;
            r.splice(at..at, *b"\xff\xfe\x80 not utf-8");
            r
        }),
    ]
}

fn bad_versions() -> Vec<Template> {
    vec![
        Template::send("HTTP/0.9 request line", &[400], |_| {
            b"GET /hooks/open\r\n\r\n".to_vec()
        }),
        Template::send("HTTP/3.0", &[400, 505], |x| with_version(x, b"HTTP/3.0")),
        Template::send("HTTP/2.0 in HTTP/1 framing", &[400, 505], |x| {
            with_version(x, b"HTTP/2.0")
        }),
        Template::send("malformed versions", &[400, 505], |x| {
            let bad: [&[u8]; 6] = [
                b"HTTP/1.2",
                b"HTTP/1.10",
                b"http/1.1",
                b"HTTP/11",
                b"HTTP/1.1 extra",
                b"HTTP/0.9",
            ];
            with_version(x, bad[x.v % bad.len()])
        }),
        Template::send("no version", &[400], |_| {
            b"POST /hooks/open\r\nHost: relay\r\nContent-Length: 3\r\n\r\nabc".to_vec()
        }),
    ]
}

fn h2_garbage() -> Vec<Template> {
    vec![
        h2("junk after the preface", |x| {
            vec![vec![0xde; 64 + x.v % 64]]
        }),
        h2("SETTINGS of a bad size", |_| {
            vec![h2_frame(4, 0, 0, &[0; 7])]
        }),
        h2("HEADERS with a bad block", |_| {
            vec![settings(), h2_frame(1, 0x5, 1, &[0xff; 16])]
        }),
        h2("HEADERS on stream 0", |_| {
            vec![settings(), h2_frame(1, 0x5, 0, &[0x82])]
        }),
        h2("DATA on an idle stream", |_| {
            vec![settings(), h2_frame(0, 0x1, 1, b"data")]
        }),
        h2("a 16 MiB frame length", |_| {
            let mut f = h2_frame(0, 0, 1, &[]);
            f[..3].copy_from_slice(&[0xff, 0xff, 0xff]);
            vec![settings(), f]
        }),
        h2("a bad ENABLE_PUSH", |_| {
            vec![h2_frame(4, 0, 0, &[0, 2, 0, 0, 0, 2])]
        }),
        h2("a short WINDOW_UPDATE", |_| {
            vec![settings(), h2_frame(8, 0, 0, &[0, 0, 0, 0])]
        }),
        Template::send("a broken preface", &[400, 505], |_| {
            b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n".to_vec()
        }),
    ]
}

/// Junk aimed at the signed source with good framing: only the signature is wrong.
fn bad_signatures() -> Vec<Template> {
    let header = |v: &str| format!("X-Hub-Signature-256: {v}\r\n");
    vec![
        Template::send("no signature", &[401], signed_with(|_| String::new())),
        Template::send(
            "zeros",
            &[401],
            signed_with(move |_| header(&format!("sha256={}", "0".repeat(64)))),
        ),
        Template::send(
            "malformed",
            &[401],
            signed_with(move |x| {
                let bad = [
                    "sha256=zz".to_string(),
                    "md5=abc".to_string(),
                    "".to_string(),
                    format!("sha256={}", "a".repeat(63)),
                    sign(&x.body).to_uppercase(),
                    format!("sha1={}", "b".repeat(40)),
                    "sha256".to_string(),
                ];
                header(&bad[x.v % bad.len()])
            }),
        ),
        Template::send(
            "another body's",
            &[401],
            signed_with(move |_| header(&sign(b"another body"))),
        ),
        Template::send(
            "two signatures",
            &[401],
            signed_with(move |_| header(&sign(b"x")) + &header(&sign(b"y"))),
        ),
        Template::send(
            "another secret's",
            &[401],
            signed_with(move |x| header(&format!("sha256={}", hmac_hex(b"wrong secret", &x.body)))),
        ),
        Template::send("chunked, over another body", &[401], |_| {
            cat(&[
                &chunked_head(
                    SIGNED,
                    &format!("X-Hub-Signature-256: {}\r\n", sign(b"abcdef")),
                ),
                b"3\r\nabc\r\n3\r\ndeg\r\n0\r\n\r\n",
            ])
        }),
    ]
}

/// Bodies over `max_body_bytes`, declared or streamed.
fn too_large() -> Vec<Template> {
    vec![
        Template::send("declared", &[413], |x| {
            post_close(O, "", &vec![b'L'; MAX_BODY + 1 + x.v % 4096])
        }),
        Template::send("streamed in chunks", &[413], |_| {
            let mut r = chunked_head(OPEN, "");
            let chunk = vec![b'C'; 8 * 1024];
            for _ in 0..(MAX_BODY / chunk.len() + 2) {
                r.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                r.extend_from_slice(&chunk);
                r.extend_from_slice(b"\r\n");
            }
            r.extend_from_slice(b"0\r\n\r\n");
            r
        }),
        Template::send("signed", &[413], |_| signed_big()),
    ]
}

/// A slowloris template and how many of its connections are open at once.
pub struct Slowloris {
    pub template: Template,
    pub connections: usize,
}

/// Every slowloris kind; each of its connections must be cut within the
/// request timeout plus slack.
pub static SLOW: LazyLock<Vec<Slowloris>> = LazyLock::new(|| {
    let pace = Duration::from_millis(100);
    let kinds = vec![
        // hyper's header timeout closes without a 408.
        (
            Template::steps(
                "request head one byte at a time, never finished",
                &[408],
                vec![
                    Step::Trickle(b"POST /hooks/open HTTP/1.1\r\nHost: relay\r\nX-Slow: ".to_vec(), pace),
                    Step::TrickleForever(b'a', pace),
                ],
            )
            .silent(),
            8,
        ),
        (
            Template::steps(
                "body one byte at a time",
                &[408],
                vec![
                    Step::Send(b"POST /hooks/open HTTP/1.1\r\nHost: relay\r\nContent-Length: 1000\r\n\r\n".to_vec()),
                    Step::TrickleForever(b'b', pace),
                ],
            ),
            8,
        ),
        (
            Template::steps(
                "chunks one byte at a time",
                &[408],
                vec![
                    Step::Send(chunked_head(OPEN, "")),
                    Step::Trickle(b"1\r\na\r\n1\r\nb\r\n".to_vec(), pace),
                    Step::TrickleForever(b'f', pace),
                ],
            ),
            8,
        ),
        (Template::steps("connects and sends nothing", &[], vec![]).silent(), 8),
        (
            Template::steps(
                "HTTP/2 preface one byte at a time",
                &[],
                vec![Step::Trickle(H2_PREFACE.to_vec(), Duration::from_millis(250))],
            )
            .silent(),
            8,
        ),
        (
            Template::steps("the first byte of a preface", &[], vec![Step::Send(b"P".to_vec())])
                .silent(),
            8,
        ),
        (
            Template::steps(
                "idle after one answer",
                &[404],
                vec![Step::Send(
                    b"POST /nowhere HTTP/1.1\r\nHost: relay\r\nContent-Length: 2\r\n\r\nhi".to_vec(),
                )],
            ),
            8,
        ),
        (
            Template::steps(
                "part of the body, then nothing",
                &[408],
                vec![Step::Send(
                    b"POST /hooks/open HTTP/1.1\r\nHost: relay\r\nContent-Length: 100\r\n\r\nonly this"
                        .to_vec(),
                )],
            ),
            8,
        ),
        // All but the last byte of a body of `max_body_bytes`: the relay
        // holds what it read until the body deadline, so these many at once
        // are what lifts its memory during the sweep.
        (
            Template::steps(
                "all but the last byte of a big body",
                &[408],
                vec![Step::Send(cat(&[
                    format!(
                        "POST /hooks/open HTTP/1.1\r\nHost: relay\r\nContent-Length: {MAX_BODY}\r\n\r\n"
                    )
                    .as_bytes(),
                    &vec![b'B'; MAX_BODY - 1],
                ]))],
            ),
            64,
        ),
    ];
    kinds
        .into_iter()
        .map(|(t, connections)| Slowloris {
            template: Template {
                category: "slowloris",
                ..t
            },
            connections,
        })
        .collect()
});
