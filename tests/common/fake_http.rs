//! HTTP/1.1 as far as the fake services need it (the fake GitHub and the fake
//! Dropbox): request heads, body framing by `Content-Length` or chunks, responses,
//! and the date formats their answers carry.
//!
//! Deliberately small and strict: a head that is not HTTP/1.x, lengths that
//! disagree, or a body past the service's limit end the connection, since nothing
//! after them can be trusted. Which of these a service answers, and how, is the
//! service's own business; this module only says what arrived.

use std::io::{self, BufRead, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// More than any request the product sends; a larger head is an error.
const HEAD_LIMIT: usize = 64 * 1024;
/// A chunk-size line longer than this is not HTTP.
const CHUNK_LINE_LIMIT: u64 = 1024;
/// Bodies at most this long go out in one write with their head: one segment
/// for a small answer, without a copy of a large one.
const COALESCE_LIMIT: usize = 64 * 1024;

pub struct Head {
    pub method: String,
    pub path: String,
    /// Unparsed, as each service reads its own parameters from it.
    pub query: String,
    http10: bool,
    headers: Vec<(String, String)>,
}

impl Head {
    /// The first header of that name (names are case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn headers_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether the client asked for the connection to end after this request
    /// (HTTP/1.0 ends it unless asked to keep it).
    pub fn wants_close(&self) -> bool {
        let has = |token: &str| {
            self.headers_named("connection")
                .flat_map(|v| v.split(','))
                .any(|t| t.trim().eq_ignore_ascii_case(token))
        };
        if self.http10 {
            !has("keep-alive")
        } else {
            has("close")
        }
    }
}

pub enum HeadError {
    /// The client went away, or broke off mid-head.
    Io,
    /// Not HTTP/1.x; what could be made of the request line, for the record.
    Malformed { method: String, target: String },
}

/// The next request's head; None when the client closed between requests.
///
/// Header lines are read as UTF-8 with invalid bytes replaced, so a header that
/// carried any byte outside ASCII still shows as non-ASCII to a service that
/// must refuse one.
pub fn read_head(r: &mut impl BufRead) -> Result<Option<Head>, HeadError> {
    let mut lines = Vec::new();
    let mut total = 0;
    loop {
        let mut line = Vec::new();
        let room = (HEAD_LIMIT + 1).saturating_sub(total) as u64;
        let n = r
            .take(room)
            .read_until(b'\n', &mut line)
            .map_err(|_| HeadError::Io)?;
        if n == 0 {
            return if lines.is_empty() && total == 0 {
                Ok(None)
            } else {
                Err(HeadError::Io)
            };
        }
        total += n;
        if total > HEAD_LIMIT {
            return Err(malformed(&lines));
        }
        if line.last() != Some(&b'\n') {
            return Err(HeadError::Io);
        }
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if line.is_empty() {
            // RFC 9112 lets a server skip empty lines before a request line.
            if lines.is_empty() {
                continue;
            }
            return parse_head(&lines).map(Some);
        }
        lines.push(String::from_utf8_lossy(&line).into_owned());
    }
}

fn malformed(lines: &[String]) -> HeadError {
    let mut parts = lines.first().map(|l| l.split(' ')).into_iter().flatten();
    HeadError::Malformed {
        method: parts.next().unwrap_or_default().to_owned(),
        target: parts.next().unwrap_or_default().to_owned(),
    }
}

fn parse_head(lines: &[String]) -> Result<Head, HeadError> {
    let bad = || malformed(lines);
    let request_line = lines.first().ok_or_else(bad)?;
    let parts: Vec<&str> = request_line.split(' ').collect();
    let [method, target, version] = parts[..] else {
        return Err(bad());
    };
    let http10 = match version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        _ => return Err(bad()),
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(bad());
    }
    // The absolute form is what a client sends through a proxy.
    let origin = match target
        .strip_prefix("http://")
        .or(target.strip_prefix("https://"))
    {
        Some(rest) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => target,
    };
    if !origin.starts_with('/') {
        return Err(bad());
    }
    let (path, query) = origin.split_once('?').unwrap_or((origin, ""));
    let mut headers = Vec::new();
    for line in &lines[1..] {
        // Folded continuation lines are obsolete and refused (RFC 9112 §5.2).
        let (name, value) = line.split_once(':').ok_or_else(bad)?;
        if name.is_empty() || name.contains(|c: char| c.is_whitespace()) {
            return Err(bad());
        }
        headers.push((name.to_owned(), value.trim().to_owned()));
    }
    Ok(Head {
        method: method.to_owned(),
        path: path.to_owned(),
        query: query.to_owned(),
        http10,
        headers,
    })
}

/// How the body after a head is delimited.
#[derive(Debug, Clone, Copy)]
pub enum Framing {
    Length(usize),
    /// No body, and none expected.
    Empty,
    /// `Transfer-Encoding: chunked`: the body is there, of unknown length, and
    /// the connection can carry another request only once it has been read
    /// ([`read_chunked`]).
    Chunked,
    /// A method that carries a body came without `Content-Length` or chunks.
    LengthRequired,
    /// Declared longer than the service takes; the body is left unread.
    TooLarge,
    /// Conflicting or unreadable lengths: nothing after this head can be trusted.
    Invalid,
}

impl Framing {
    /// Whether the connection must end after the answer if the body is not read
    /// (a service that reads a chunked body may keep it).
    pub fn must_close(&self) -> bool {
        match self {
            Framing::Length(_) | Framing::Empty | Framing::LengthRequired => false,
            Framing::Chunked | Framing::TooLarge | Framing::Invalid => true,
        }
    }
}

/// The framing of the body after `head`, for a service that takes bodies up to
/// `limit` bytes.
pub fn framing(head: &Head, limit: usize) -> Framing {
    let lengths: Vec<&str> = head.headers_named("content-length").collect();
    if let Some(te) = head.header("transfer-encoding") {
        return if !lengths.is_empty() {
            // Both at once is how request smuggling is done (RFC 9112 §6.3).
            Framing::Invalid
        } else if te.trim().eq_ignore_ascii_case("chunked") {
            Framing::Chunked
        } else {
            Framing::Invalid
        };
    }
    match lengths.as_slice() {
        [] if matches!(head.method.as_str(), "POST" | "PUT" | "PATCH") => Framing::LengthRequired,
        [] => Framing::Empty,
        [first, rest @ ..] if rest.iter().all(|l| l == first) => match first.parse::<usize>() {
            Ok(n) if n > limit => Framing::TooLarge,
            Ok(n) => Framing::Length(n),
            Err(_) => Framing::Invalid,
        },
        _ => Framing::Invalid,
    }
}

/// Why a body could not be read whole.
#[derive(Debug)]
pub enum BodyError {
    /// The connection failed or ended early.
    Io,
    /// A chunked body ran past the limit; the rest is unread.
    TooLarge,
    /// Not valid chunked framing.
    Invalid,
}

/// Exactly `n` bytes, without zeroing a buffer first (bodies run to 150 MiB).
pub fn read_length(r: &mut impl Read, n: usize) -> Result<Vec<u8>, BodyError> {
    let mut body = Vec::with_capacity(n);
    r.take(n as u64)
        .read_to_end(&mut body)
        .map_err(|_| BodyError::Io)?;
    if body.len() == n {
        Ok(body)
    } else {
        Err(BodyError::Io)
    }
}

/// A chunked body (RFC 9112 §7.1), extensions and trailers read and dropped.
pub fn read_chunked(r: &mut impl BufRead, limit: usize) -> Result<Vec<u8>, BodyError> {
    let mut body = Vec::new();
    loop {
        let line = chunk_line(r)?;
        let size = line.split(';').next().unwrap_or_default().trim();
        let n = usize::from_str_radix(size, 16).map_err(|_| BodyError::Invalid)?;
        if n == 0 {
            // Trailer fields, up to the empty line.
            while !chunk_line(r)?.is_empty() {}
            return Ok(body);
        }
        if body.len().saturating_add(n) > limit {
            return Err(BodyError::TooLarge);
        }
        let read = r
            .take(n as u64)
            .read_to_end(&mut body)
            .map_err(|_| BodyError::Io)?;
        if read != n {
            return Err(BodyError::Io);
        }
        if !chunk_line(r)?.is_empty() {
            return Err(BodyError::Invalid);
        }
    }
}

fn chunk_line(r: &mut impl BufRead) -> Result<String, BodyError> {
    let mut line = Vec::new();
    r.take(CHUNK_LINE_LIMIT)
        .read_until(b'\n', &mut line)
        .map_err(|_| BodyError::Io)?;
    if line.pop() != Some(b'\n') {
        return Err(BodyError::Io);
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    String::from_utf8(line).map_err(|_| BodyError::Invalid)
}

/// Ends a connection after its last answer without resetting it: bytes the
/// client sent that were never read would make the kernel send a reset, which
/// can destroy the answer before the client reads it.
pub fn linger_close(reader: &mut impl Read, writer: &TcpStream) {
    let _ = writer.shutdown(Shutdown::Write);
    let _ = writer.set_read_timeout(Some(Duration::from_millis(500)));
    let _ = io::copy(&mut reader.take(1024 * 1024), &mut io::sink());
}

/// A response body: owned bytes, or a range of bytes a service keeps anyway
/// (a stored file), sent without copying them.
enum Body {
    Bytes(Vec<u8>),
    Shared(Arc<Vec<u8>>, Range<usize>),
}

impl Body {
    fn bytes(&self) -> &[u8] {
        match self {
            Body::Bytes(b) => b,
            Body::Shared(b, range) => &b[range.clone()],
        }
    }
}

/// A response under construction: status, headers in order, body. Each service
/// adds its own headers (`server`, `date`, …) through [`Response::with`].
pub struct Response {
    pub status: u16,
    headers: Vec<(String, String)>,
    body: Body,
}

impl Response {
    /// No headers and no body yet.
    pub fn new(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Body::Bytes(Vec::new()),
        }
    }

    pub fn with(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    /// Replaces every header of that name with one of this value.
    pub fn set(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.with(name, value)
    }

    pub fn with_body(mut self, body: Vec<u8>) -> Self {
        self.body = Body::Bytes(body);
        self
    }

    /// `range` of `bytes` as the body, sent straight from `bytes`.
    pub fn with_shared_body(mut self, bytes: Arc<Vec<u8>>, range: Range<usize>) -> Self {
        self.body = Body::Shared(bytes, range);
        self
    }

    /// The first header of that name (names are case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn body(&self) -> &[u8] {
        self.body.bytes()
    }

    /// A weak validator of what is shown: the body and, for a page of a list,
    /// its `Link` (the same items with no next page are news too).
    pub fn etag(&self) -> String {
        use std::hash::{DefaultHasher, Hash, Hasher};
        let link = self.headers.iter().find(|(n, _)| n == "link");
        let half = |salt: u8| {
            let mut h = DefaultHasher::new();
            salt.hash(&mut h);
            self.body().hash(&mut h);
            link.hash(&mut h);
            h.finish()
        };
        format!("W/\"{:016x}{:016x}\"", half(1), half(2))
    }

    pub fn write_to(&self, w: &mut impl Write, close: bool) -> io::Result<()> {
        let mut out = format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        for (name, value) in &self.headers {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        let body = self.body();
        // RFC 9110 §8.6: no Content-Length on a 204; on a 304 it would have to
        // be the 200's, and none is clearer.
        if !matches!(self.status, 204 | 304) {
            out.push_str(&format!("content-length: {}\r\n", body.len()));
        }
        if close {
            out.push_str("connection: close\r\n");
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        if body.len() <= COALESCE_LIMIT {
            bytes.extend_from_slice(body);
            w.write_all(&bytes)?;
        } else {
            w.write_all(&bytes)?;
            w.write_all(body)?;
        }
        w.flush()
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        // Google calls it "Resume Incomplete" in its upload protocol.
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Payload Too Large",
        416 => "Range Not Satisfiable",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// The wall clock, in seconds since the epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

pub fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `2026-12-07T12:00:00Z`: ISO 8601 in UTC to the second, the timestamps of both
/// GitHub's and Dropbox's JSON.
pub fn iso_time(unix: u64) -> String {
    let secs = unix as i64;
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let t = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        t / 3_600,
        t / 60 % 60,
        t % 60
    )
}

pub fn parse_iso_time(s: &str) -> Option<u64> {
    let (date, time) = s.strip_suffix('Z')?.split_once('T')?;
    parse_utc(date, time)
}

/// `2026-12-07` and `12:00:00` in UTC, as seconds since the epoch; None unless
/// both are exactly that shape and in range.
pub fn parse_utc(date: &str, time: &str) -> Option<u64> {
    let num = |p: &str, max: i64| {
        p.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| p.parse::<i64>().ok())
            .flatten()
            .filter(|n| (0..=max).contains(n))
    };
    let mut ymd = date.split('-');
    let (y, m, d) = (
        num(ymd.next()?, 9_999)?,
        num(ymd.next()?, 12)?,
        num(ymd.next()?, 31)?,
    );
    let mut hms = time.split(':');
    let (h, mi, sec) = (
        num(hms.next()?, 23)?,
        num(hms.next()?, 59)?,
        num(hms.next()?, 60)?,
    );
    if ymd.next().is_some() || hms.next().is_some() || m == 0 || d == 0 {
        return None;
    }
    let secs = days_from_civil(y, m, d) * 86_400 + h * 3_600 + mi * 60 + sec;
    u64::try_from(secs).ok()
}

/// `Mon, 30 Nov 2026 05:23:14 GMT`, for the `Date` header.
pub fn http_date(unix: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = (unix / 86_400) as i64;
    let (y, m, d) = civil_from_days(days);
    let t = unix % 86_400;
    format!(
        "{}, {d:02} {} {y:04} {:02}:{:02}:{:02} GMT",
        DAYS[days.rem_euclid(7) as usize],
        MONTHS[(m - 1) as usize],
        t / 3_600,
        t / 60 % 60,
        t % 60
    )
}
