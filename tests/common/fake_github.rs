//! A fake of the GitHub REST API on a loopback port, for tests of the product's
//! GitHub code (login, the Gist store) that must not reach github.com.
//!
//! It is meant to be faithful rather than convenient: what GitHub documents (and
//! does) for each endpoint it serves is enforced, limits included, so a test that
//! passes here fails for the same reasons the real service would make it fail.
//! Plain HTTP/1.1 with keep-alive, std only: a request parser ([`http`]), one lock
//! over the whole service's state ([`State`]), a router ([`State::route`]) and a
//! handler per endpoint; the Gist API's store and endpoints live in [`gist`].
//! Stopped on drop.
//!
//! Time is the fake's own clock: the wall clock plus whatever a test has added with
//! [`FakeGithub::advance_clock`], so a test can cover an hour of rate-limit windows
//! without waiting. Every window, `x-ratelimit-reset`, `retry-after`, token expiry,
//! `Date` and the gists' timestamps are read from it.
//!
//! Limits, and where they are enforced: the primary hourly limits in
//! [`State::api`] (every API request but a 304, which GitHub does not count); the
//! secondary limits on content-creating requests (`POST`/`PATCH`/`PUT`/`DELETE` under
//! `/gists`, per token) in [`State::gist_write`]; truncation at 1 MiB a file and 300
//! files a gist, raw_url's 10 MiB and the rules on file names in [`gist`].

mod gist;

pub use self::gist::StoredGist;

use std::collections::{HashMap, VecDeque};
use std::io::{self, BufReader, Read};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use self::http::{Framing, Head, Response};
use self::json::Json;
use super::fake_http as http;
use super::fake_http::{http_date, iso_time, parse_iso_time};

/// GitHub caps request bodies lower, but does not say where; past this the fake
/// refuses (413) rather than hold an unbounded body in memory.
const BODY_LIMIT: usize = 100 * 1024 * 1024;
/// GitHub's documented primary rate limits, per hour.
const AUTHENTICATED_PER_HOUR: u32 = 5_000;
const UNAUTHENTICATED_PER_HOUR: u32 = 60;
const WINDOW_SECS: u64 = 3_600;
/// GitHub's documented secondary limits on content-creating requests: "no more than
/// 80 content-generating requests per minute and no more than 500 per hour".
const SECONDARY_PER_MINUTE: u32 = 80;
const SECONDARY_PER_HOUR: u32 = 500;
const MINUTE_MS: u64 = 60_000;
const HOUR_MS: u64 = 3_600_000;
/// The versions GitHub's REST API accepts in `X-GitHub-Api-Version`.
const API_VERSIONS: [&str; 2] = ["2022-11-28", "2026-03-10"];
const DEFAULT_API_VERSION: &str = "2022-11-28";
/// `POST /credentials/revoke` takes at most this many credentials per request.
const MAX_REVOKED_PER_REQUEST: usize = 1_000;
const JSON_TYPE: &str = "application/json; charset=utf-8";

const DOCS: &str = "https://docs.github.com/rest";
const DOCS_USER: &str = "https://docs.github.com/rest/users/users#get-the-authenticated-user";
const DOCS_GISTS: &str = "https://docs.github.com/rest/gists/gists";
const DOCS_REVOKE: &str =
    "https://docs.github.com/rest/credentials/revoke#revoke-a-list-of-credentials";
const DOCS_RATE_LIMITS: &str = "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api";
const DOCS_SECONDARY: &str = "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits";
const SECONDARY_MESSAGE: &str = "You have exceeded a secondary rate limit. Please wait a few \
     minutes before you try again.";
const DOCS_VERSIONS: &str = "https://docs.github.com/rest/overview/api-versions";
const USER_AGENT_REQUIRED: &str = "Request forbidden by administrative rules. Please make sure \
     your request has a User-Agent header \
     (https://docs.github.com/en/rest/overview/resources-in-the-rest-api#user-agent-required).";

/// The fake GitHub API server. Serves until dropped.
pub struct FakeGithub {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

/// Ways the service can fail as seen from the product, for tests of its error paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Outage {
    /// Normal service.
    #[default]
    None,
    /// Every request is answered 503 `{"message":"Service unavailable"}`, as during
    /// an incident on GitHub's side.
    ServerError,
    /// Each connection is closed as soon as a request's head has arrived, with no
    /// answer: a network that drops mid-request.
    CutConnections,
    /// Every request is answered 200 with an HTML page: a captive portal, or an
    /// `--api-url` that points at some other web server.
    NotGithub,
    /// Each request is read and never answered while the stall lasts (at most a
    /// minute): a server that hangs, for the client's timeouts.
    Stall,
    /// Every request is answered `307 Temporary Redirect` to the same path on
    /// `127.0.0.1:PORT`: a moved server, or one that would lure a token elsewhere.
    RedirectToPort(u16),
}

/// One request as the fake received it, for tests that check what the product sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub method: String,
    /// The path alone, without the query string (`/gists`, not `/gists?per_page=1`),
    /// so tests can compare routes whatever paging the product asks for.
    pub path: String,
    /// The `Authorization` header exactly as sent (`token …` or `Bearer …`).
    pub authorization: Option<String>,
    pub user_agent: Option<String>,
    /// The status answered; 0 when the connection was cut without an answer.
    pub status: u16,
}

/// GitHub's header format for a token's expiry (`2026-12-07 12:00:00 UTC`) for the
/// moment `from_now` ahead: a test that needs a live token with an expiry should not
/// write a date that will one day have passed, since the fake, like GitHub, refuses
/// an expired token.
pub fn expiry_in(from_now: Duration) -> String {
    github_time(now() + from_now.as_secs())
}

impl FakeGithub {
    /// Binds a free loopback port and serves on it from background threads.
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fake GitHub");
        let addr = listener.local_addr().expect("the fake GitHub's address");
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new(format!("http://{addr}"))),
            stopping: AtomicBool::new(false),
            connections: Mutex::new(Connections::default()),
        });
        let s = shared.clone();
        let acceptor = std::thread::Builder::new()
            .name("fake-github".into())
            .spawn(move || accept_loop(listener, s))
            .expect("start the fake GitHub");
        Self {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// The API root, as the product's `--api-url` takes it (no trailing slash, like
    /// `https://api.github.com`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A classic personal access token: GitHub lists its scopes in X-OAuth-Scopes.
    /// `expires` is GitHub's format (`2026-12-07 12:00:00 UTC`), sent back in
    /// `github-authentication-token-expiration`; past it the token is refused.
    pub fn add_classic_token(
        &self,
        token: &str,
        login: &str,
        scopes: &[&str],
        expires: Option<&str>,
    ) {
        let kind = Kind::Classic {
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
        };
        self.shared.state().add_token(token, login, kind, expires);
    }

    /// A fine-grained token: no X-OAuth-Scopes header at all; gists: whether it has
    /// the Gists permission (without it the Gist endpoints answer 404, as GitHub
    /// hides what a token may not see).
    pub fn add_fine_grained_token(
        &self,
        token: &str,
        login: &str,
        gists: bool,
        expires: Option<&str>,
    ) {
        self.shared
            .state()
            .add_token(token, login, Kind::FineGrained { gists }, expires);
    }

    /// Whether a token added here has been revoked (by [`Self::revoke`] or through
    /// `POST /credentials/revoke`); false for a token never added.
    pub fn is_revoked(&self, token: &str) -> bool {
        self.shared
            .state()
            .tokens
            .get(token)
            .is_some_and(|t| t.revoked)
    }

    /// As if the owner revoked the token on github.com: every later request with it
    /// gets 401 Bad credentials.
    pub fn revoke(&self, token: &str) {
        let mut state = self.shared.state();
        // A test revoking a token it never added is mistaken about its own setup;
        // the token itself stays out of the message.
        let t = state
            .tokens
            .get_mut(token)
            .expect("revoke: that token was never added to the fake GitHub");
        t.revoked = true;
    }

    /// The address the fake names itself by in its answers (`raw_url`, `url`): a
    /// relay's in front of it, so that a test cutting the relay cuts raw reads too.
    pub fn serve_as(&self, base_url: &str) {
        self.shared.state().base_url = base_url.trim_end_matches('/').to_owned();
    }

    pub fn set_outage(&self, o: Outage) {
        self.shared.state().outage = o;
    }

    /// The primary rate limits per hour: per token for authenticated requests, per
    /// client address for the others (GitHub's are 5,000 and 60). Counts already
    /// made this hour are kept.
    pub fn set_hourly_limits(&self, authenticated: u32, unauthenticated: u32) {
        let mut state = self.shared.state();
        state.limits = Limits {
            authenticated,
            unauthenticated,
        };
    }

    /// The secondary limits on content-creating requests (every `POST`, `PATCH`,
    /// `PUT` and `DELETE` under `/gists`), per token: at most `per_minute` in any
    /// sixty seconds and `per_hour` in any hour (GitHub's are 80 and 500). Requests
    /// already let through stay counted.
    pub fn set_secondary_limits(&self, per_minute: u32, per_hour: u32) {
        let mut state = self.shared.state();
        state.secondary.per_minute = per_minute;
        state.secondary.per_hour = per_hour;
    }

    /// The status of a request refused by a secondary limit: GitHub documents both
    /// 403 (the default here) and 429, so the product must take either.
    pub fn secondary_status(&self, status: u16) {
        assert!(
            matches!(status, 403 | 429),
            "GitHub answers a secondary limit with 403 or 429, not {status}"
        );
        self.shared.state().secondary.status = status;
    }

    /// Moves the fake's clock ahead (it never goes back): rate-limit windows,
    /// `retry-after`, `x-ratelimit-reset`, token expiry and the gists' timestamps
    /// all follow it, so a test can cover an hour without waiting one.
    pub fn advance_clock(&self, d: Duration) {
        self.shared.state().clock += d;
    }

    /// Every answer comes `latency` after its request (a network's round trip).
    pub fn set_latency(&self, latency: Duration) {
        self.shared.state().latency = latency;
    }

    /// The fake's clock: the wall clock plus what tests added.
    pub fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.shared.state().now_ms())
    }

    /// Everything GitHub keeps of the gists, as anyone who knows their ids can read
    /// it: every revision's full files, oldest revision first; deleted gists (whose
    /// history GitHub drops with them) are left out. In the order of creation.
    pub fn everything_stored(&self) -> Vec<StoredGist> {
        self.shared.state().gists.everything()
    }

    /// The longest file any gist holds now, in bytes (raw URLs serve 10 MiB).
    pub fn largest_file(&self) -> usize {
        self.everything_stored()
            .iter()
            .filter_map(|g| g.revisions.last())
            .flat_map(|files| files.iter().map(|(_, content)| content.len()))
            .max()
            .unwrap_or(0)
    }

    /// Content-creating requests received (`POST`, `PATCH`, `PUT`, `DELETE` under
    /// `/gists`), whatever became of them: refused, failed, cut or served.
    pub fn content_requests(&self) -> usize {
        self.shared.state().content_requests
    }

    /// Requests refused by a secondary rate limit.
    pub fn secondary_refusals(&self) -> usize {
        self.shared.state().secondary_refusals
    }

    /// Conditional requests answered 304 Not Modified (free of the primary limit).
    pub fn not_modified_count(&self) -> usize {
        self.shared.state().not_modified
    }

    /// Every request received so far, in order, outages and raw_url fetches
    /// included.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.state().seen.clone()
    }
}

impl Drop for FakeGithub {
    fn drop(&mut self) {
        {
            // Under the lock `register` takes, so no connection can slip in after
            // the sweep below and keep a thread waiting on a client forever.
            let mut conns = self.shared.connections();
            self.shared.stopping.store(true, SeqCst);
            for (_, c) in conns.open.drain() {
                let _ = c.shutdown(Shutdown::Both);
            }
        }
        // The acceptor only looks at `stopping` when a connection arrives.
        let _ = TcpStream::connect(self.addr);
        if let Some(acceptor) = self.acceptor.take() {
            // Joined so the port is closed once the fake is gone, as a test that
            // checks the product's "cannot reach GitHub" path expects.
            let _ = acceptor.join();
        }
    }
}

struct Shared {
    state: Mutex<State>,
    stopping: AtomicBool,
    connections: Mutex<Connections>,
}

#[derive(Default)]
struct Connections {
    next: u64,
    /// Kept so that drop can end keep-alive connections a client left open.
    open: HashMap<u64, TcpStream>,
}

impl Shared {
    /// A handler that panicked has already failed its test; the state it leaves is
    /// still the best account of what happened, so later requests still see it.
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn connections(&self) -> MutexGuard<'_, Connections> {
        self.connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn register(&self, stream: &TcpStream) -> Option<u64> {
        let mut conns = self.connections();
        if self.stopping.load(SeqCst) {
            return None;
        }
        let clone = stream.try_clone().ok()?;
        conns.next += 1;
        let id = conns.next;
        conns.open.insert(id, clone);
        Some(id)
    }

    fn unregister(&self, id: u64) {
        self.connections().open.remove(&id);
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stopping.load(SeqCst) {
            break;
        }
        let Ok(stream) = stream else { continue };
        let Some(id) = shared.register(&stream) else {
            let _ = stream.shutdown(Shutdown::Both);
            continue;
        };
        let s = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("fake-github-conn".into())
            .spawn(move || {
                serve(stream, &s);
                s.unregister(id);
            });
        if spawned.is_err() {
            shared.unregister(id);
        }
    }
}

/// Answers the requests of one connection, in turn, until either side closes it.
fn serve(stream: TcpStream, shared: &Shared) {
    let Ok(peer) = stream.peer_addr() else { return };
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let head = match http::read_head(&mut reader) {
            Ok(Some(head)) => head,
            Ok(None) | Err(http::HeadError::Io) => return,
            Err(http::HeadError::Malformed { method, target }) => {
                let mut state = shared.state();
                let response =
                    Response::error(400, "Problems parsing the request", DOCS).dated(state.now());
                state.record_raw(&method, &target, response.status);
                drop(state);
                let _ = response.write_to(&mut writer, true);
                http::linger_close(&mut reader, &writer);
                return;
            }
        };
        let framing = http::framing(&head, BODY_LIMIT);
        if shared.state().outage == Outage::Stall {
            shared.state().record(&head, 0);
            let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
            while shared.state().outage == Outage::Stall && std::time::Instant::now() < until {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            let _ = writer.shutdown(Shutdown::Both);
            return;
        }
        if shared.state().outage == Outage::CutConnections {
            // The declared body is read first: closing with unread bytes makes the
            // kernel send a reset, and the client should see a plain end of stream.
            if let Framing::Length(n) = framing {
                let _ = io::copy(&mut (&mut reader).take(n as u64), &mut io::sink());
            }
            shared.state().record(&head, 0);
            let _ = writer.shutdown(Shutdown::Both);
            return;
        }
        let body = match framing {
            Framing::Length(n) => {
                let mut body = vec![0; n];
                if reader.read_exact(&mut body).is_err() {
                    return;
                }
                Some(body)
            }
            _ => None,
        };
        let close = head.wants_close() || framing.must_close();
        // A network's round trip, outside the lock: requests on other connections
        // travel meanwhile, as on a real link.
        let latency = shared.state().latency;
        if !latency.is_zero() {
            std::thread::sleep(latency);
        }
        let response = shared
            .state()
            .answer(&head, &framing, body.as_deref(), peer.ip());
        if response.write_to(&mut writer, close).is_err() {
            return;
        }
        if close {
            http::linger_close(&mut reader, &writer);
            return;
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Limits {
    authenticated: u32,
    unauthenticated: u32,
}

#[derive(Debug, Clone)]
enum Kind {
    Classic { scopes: Vec<String> },
    FineGrained { gists: bool },
}

#[derive(Debug, Clone)]
struct Token {
    login: String,
    user_id: u64,
    kind: Kind,
    /// As given (GitHub's format, echoed back) and as unix seconds.
    expires: Option<(String, u64)>,
    revoked: bool,
}

impl Token {
    fn usable_at(&self, now: u64) -> bool {
        !self.revoked && self.expires.as_ref().is_none_or(|(_, at)| now < *at)
    }
}

/// Whose allowance a request counts against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Bucket {
    Token(String),
    Address(IpAddr),
}

/// One hour of a bucket's requests, from its first one (GitHub's windows start at
/// the first request, not on the clock's hour).
#[derive(Debug, Clone, Copy)]
struct Window {
    start: u64,
    used: u32,
}

struct RateLimit {
    limit: u32,
    used: u32,
    reset: u64,
}

/// Who is calling, as far as the token says.
enum Caller {
    Anonymous,
    Known(Token),
    /// A token GitHub does not know, or no longer honours.
    Bad,
}

/// The secondary limits on content-creating requests, per token. Each token's
/// log holds the moments of the requests let through in the last hour, so the
/// limits hold over any sixty seconds and any hour (a sliding window: stricter than
/// fixed windows, which would let 160 through across a minute's boundary, and
/// GitHub does not say which it uses).
struct Secondary {
    per_minute: u32,
    per_hour: u32,
    status: u16,
    /// Milliseconds on the fake's clock, oldest first.
    writes: HashMap<String, VecDeque<u64>>,
}

impl Secondary {
    /// Whole seconds until `token` may make another content-creating request
    /// (rounded up, so waiting that long is always enough); None if it may now.
    fn wait(&mut self, token: &str, now_ms: u64) -> Option<u64> {
        let log = self.writes.entry(token.to_owned()).or_default();
        while log.front().is_some_and(|&t| t + HOUR_MS <= now_ms) {
            log.pop_front();
        }
        let mut wait_ms = 0;
        for (limit, span) in [(self.per_minute, MINUTE_MS), (self.per_hour, HOUR_MS)] {
            let limit = limit as usize;
            let in_span = log.iter().rev().take_while(|&&t| t + span > now_ms).count();
            if in_span >= limit {
                // Under the limit again once the limit-th newest request has left
                // the span.
                let frees_at = match limit {
                    0 => now_ms + span,
                    _ => log[log.len() - limit] + span,
                };
                wait_ms = wait_ms.max(frees_at.saturating_sub(now_ms).max(1));
            }
        }
        (wait_ms > 0).then(|| wait_ms.div_ceil(1_000))
    }

    fn note(&mut self, token: &str, now_ms: u64) {
        self.writes
            .entry(token.to_owned())
            .or_default()
            .push_back(now_ms);
    }
}

/// One request on its way through the API, with what the checks before the
/// endpoint found out about it.
struct Call<'a> {
    head: &'a Head,
    body: &'a [u8],
    who: Option<&'a Token>,
    /// The token as sent, for the limits kept per token.
    token: Option<&'a str>,
    request_id: &'a str,
    now_ms: u64,
}

impl Call<'_> {
    fn now(&self) -> u64 {
        self.now_ms / 1_000
    }
}

struct State {
    base_url: String,
    tokens: HashMap<String, Token>,
    /// User IDs by login, so that two tokens of one user show one ID.
    users: HashMap<String, u64>,
    outage: Outage,
    limits: Limits,
    windows: HashMap<Bucket, Window>,
    secondary: Secondary,
    /// How far the fake's clock is ahead of the wall clock.
    clock: Duration,
    /// Added before each answer (benchmarks: a realistic round trip).
    latency: Duration,
    gists: gist::Gists,
    seen: Vec<Seen>,
    requests: u64,
    content_requests: usize,
    secondary_refusals: usize,
    not_modified: usize,
}

impl State {
    fn new(base_url: String) -> Self {
        Self {
            base_url,
            tokens: HashMap::new(),
            users: HashMap::new(),
            outage: Outage::None,
            limits: Limits {
                authenticated: AUTHENTICATED_PER_HOUR,
                unauthenticated: UNAUTHENTICATED_PER_HOUR,
            },
            windows: HashMap::new(),
            secondary: Secondary {
                per_minute: SECONDARY_PER_MINUTE,
                per_hour: SECONDARY_PER_HOUR,
                status: 403,
                writes: HashMap::new(),
            },
            clock: Duration::ZERO,
            latency: Duration::ZERO,
            gists: gist::Gists::default(),
            seen: Vec::new(),
            requests: 0,
            content_requests: 0,
            secondary_refusals: 0,
            not_modified: 0,
        }
    }

    /// The fake's clock, in milliseconds since the epoch.
    fn now_ms(&self) -> u64 {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        u64::try_from((wall + self.clock).as_millis()).unwrap_or(u64::MAX)
    }

    /// The fake's clock, in seconds since the epoch.
    fn now(&self) -> u64 {
        self.now_ms() / 1_000
    }

    fn add_token(&mut self, token: &str, login: &str, kind: Kind, expires: Option<&str>) {
        let next_id = 1_000 + self.users.len() as u64 + 1;
        let user_id = *self.users.entry(login.to_owned()).or_insert(next_id);
        let expires = expires.map(|e| {
            let at = parse_github_time(e).unwrap_or_else(|| {
                panic!("token expiry {e:?} is not in GitHub's format, 2026-12-07 12:00:00 UTC")
            });
            (e.to_owned(), at)
        });
        self.tokens.insert(
            token.to_owned(),
            Token {
                login: login.to_owned(),
                user_id,
                kind,
                expires,
                revoked: false,
            },
        );
    }

    fn record(&mut self, head: &Head, status: u16) {
        self.push_seen(Seen {
            method: head.method.clone(),
            path: head.path.clone(),
            authorization: head.header("authorization").map(str::to_owned),
            user_agent: head.header("user-agent").map(str::to_owned),
            status,
        });
    }

    fn record_raw(&mut self, method: &str, target: &str, status: u16) {
        self.push_seen(Seen {
            method: method.to_owned(),
            path: target.split('?').next().unwrap_or_default().to_owned(),
            authorization: None,
            user_agent: None,
            status,
        });
    }

    fn push_seen(&mut self, seen: Seen) {
        if is_content_request(&seen.method, &seen.path) {
            self.content_requests += 1;
        }
        self.seen.push(seen);
    }

    /// The whole answer to one request (recorded before it is sent, so a test that
    /// has its answer also finds it in `seen`).
    fn answer(
        &mut self,
        head: &Head,
        framing: &Framing,
        body: Option<&[u8]>,
        peer: IpAddr,
    ) -> Response {
        let response = match self.outage {
            Outage::ServerError => Response::json(
                503,
                &Json::obj([("message", Json::str("Service unavailable"))]),
            ),
            Outage::RedirectToPort(port) => Response::text(307, "text/html", "")
                .with("location", format!("http://127.0.0.1:{port}{}", head.path)),
            Outage::NotGithub => Response::html(
                200,
                "<html><head><title>Welcome</title></head><body><p>Please sign in to \
                 continue to the internet.</p></body></html>",
            ),
            Outage::None | Outage::CutConnections | Outage::Stall => match framing {
                // The raw host is not the API: no token, no User-Agent, no limits.
                Framing::Length(_) | Framing::Empty if head.path.starts_with("/raw/") => {
                    self.gists.raw(head)
                }
                Framing::Length(_) | Framing::Empty => {
                    self.api(head, body.unwrap_or_default(), peer)
                }
                Framing::LengthRequired | Framing::Chunked => {
                    Response::text(411, "text/html", "<h1>411 Length Required</h1>")
                }
                Framing::TooLarge => {
                    Response::text(413, "text/html", "<h1>413 Payload Too Large</h1>")
                }
                Framing::Invalid => Response::error(400, "Problems parsing the request", DOCS),
            },
        };
        let response = response.dated(self.now());
        self.record(head, response.status);
        response
    }

    /// The API proper: the checks GitHub makes of every request, then the endpoint.
    fn api(&mut self, head: &Head, body: &[u8], peer: IpAddr) -> Response {
        let now_ms = self.now_ms();
        let now = now_ms / 1_000;
        self.requests += 1;
        let request_id = format!(
            "FA4E:{:04X}:{:06X}:{:07X}:{:08X}",
            port_of(&self.base_url),
            self.requests,
            self.requests.wrapping_mul(7_919) & 0xFF_FFFF,
            now & 0xFFFF_FFFF
        );
        let caller = self.caller(head, now);
        let token = match &caller {
            Caller::Known(_) => head.header("authorization").and_then(token_of),
            Caller::Anonymous | Caller::Bad => None,
        };
        let (bucket, limit) = match token {
            Some(token) => (Bucket::Token(token.to_owned()), self.limits.authenticated),
            None => (Bucket::Address(peer), self.limits.unauthenticated),
        };

        let user_agent = head.header("user-agent").filter(|ua| !ua.trim().is_empty());
        let (rate, response) = if user_agent.is_none() {
            // Refused at GitHub's front door, before the request is counted.
            let rate = self.peek(&bucket, limit, now);
            let body = Json::obj([("message", Json::str(USER_AGENT_REQUIRED))]);
            (rate, Response::json(403, &body))
        } else {
            // A conditional request past the limit is refused like any other:
            // GitHub promises that a 304 is not counted, not that one is given
            // once the hour is used up.
            let rate = self.peek(&bucket, limit, now);
            let over = rate.used >= limit;
            let response = if over {
                rate_limited(&caller, peer, &request_id, now)
            } else if let Caller::Bad = caller {
                Response::error(401, "Bad credentials", DOCS)
            } else if let Some(v) = head
                .header("x-github-api-version")
                .filter(|v| !API_VERSIONS.contains(v))
            {
                Response::error(
                    400,
                    &format!("API version {v} is not supported."),
                    DOCS_VERSIONS,
                )
            } else {
                let who = match &caller {
                    Caller::Known(t) => Some(t),
                    _ => None,
                };
                self.route(&Call {
                    head,
                    body,
                    who,
                    token,
                    request_id: &request_id,
                    now_ms,
                })
            };
            // A refused request is not counted, and neither is a 304: "making a
            // conditional request does not count against your primary rate limit
            // if a 304 response is returned" (GitHub). So the headers of a 304
            // show the allowance as it was.
            let rate = if over || response.status == 304 {
                rate
            } else {
                self.charge(&bucket, limit, now)
            };
            (rate, response)
        };

        let mut response = response
            .with("x-ratelimit-limit", rate.limit.to_string())
            .with(
                "x-ratelimit-remaining",
                rate.limit.saturating_sub(rate.used).to_string(),
            )
            .with("x-ratelimit-reset", rate.reset.to_string())
            .with("x-ratelimit-used", rate.used.to_string())
            .with("x-ratelimit-resource", "core")
            .with("x-github-request-id", request_id)
            .with("x-github-media-type", "github.v3; format=json")
            .with(
                "x-github-api-version-selected",
                head.header("x-github-api-version")
                    .filter(|v| API_VERSIONS.contains(v))
                    .unwrap_or(DEFAULT_API_VERSION),
            );
        if let Caller::Known(t) = &caller {
            if let Kind::Classic { scopes } = &t.kind {
                response = response.with("x-oauth-scopes", scopes.join(", "));
            }
            if let Some((expires, _)) = &t.expires {
                response = response.with("github-authentication-token-expiration", expires.clone());
            }
        }
        response
    }

    fn caller(&self, head: &Head, now: u64) -> Caller {
        let Some(value) = head.header("authorization") else {
            return Caller::Anonymous;
        };
        match token_of(value).and_then(|t| self.tokens.get(t)) {
            Some(t) if t.usable_at(now) => Caller::Known(t.clone()),
            _ => Caller::Bad,
        }
    }

    /// The bucket's window as of `now`, a new one if the last has run out.
    fn window(&self, bucket: &Bucket, now: u64) -> Window {
        match self.windows.get(bucket) {
            Some(w) if now < w.start + WINDOW_SECS => *w,
            _ => Window {
                start: now,
                used: 0,
            },
        }
    }

    fn peek(&self, bucket: &Bucket, limit: u32, now: u64) -> RateLimit {
        let w = self.window(bucket, now);
        RateLimit {
            limit,
            used: w.used.min(limit),
            reset: w.start + WINDOW_SECS,
        }
    }

    /// Counts one request the bucket's hour had room for.
    fn charge(&mut self, bucket: &Bucket, limit: u32, now: u64) -> RateLimit {
        let mut w = self.window(bucket, now);
        w.used += 1;
        self.windows.insert(bucket.clone(), w);
        self.peek(bucket, limit, now)
    }

    fn route(&mut self, call: &Call) -> Response {
        let (method, path) = (call.head.method.as_str(), call.head.path.as_str());
        if is_content_request(method, path) {
            return self.gist_write(call);
        }
        let response = match (method, path) {
            ("GET", "/user") => return self.get_user(call.who),
            ("POST", "/credentials/revoke") => return self.revoke_credentials(call.who, call.body),
            ("GET", "/gists") => self.gists.list(call, &self.base_url),
            ("GET", p) if p.starts_with("/gists/") => self.gists.get(call, &self.base_url),
            _ => return Response::error(404, "Not Found", DOCS),
        };
        self.conditional(call.head, response)
    }

    /// GitHub's conditional GET: each representation has an `ETag`, and a request
    /// whose `If-None-Match` names it is answered 304 with no body.
    fn conditional(&mut self, head: &Head, response: Response) -> Response {
        if response.status != 200 {
            return response;
        }
        let etag = response.etag();
        let matches = head.header("if-none-match").is_some_and(|wanted| {
            wanted.split(',').map(str::trim).any(|w| {
                // Weak comparison (RFC 9110 §13.1.2): the W/ prefix is not compared.
                w == "*" || w.trim_start_matches("W/") == etag.trim_start_matches("W/")
            })
        });
        if matches {
            self.not_modified += 1;
            Response::empty(304).with("etag", etag)
        } else {
            response.with("etag", etag)
        }
    }

    /// Every content-creating request under `/gists`: authentication, then the
    /// secondary limits (which count every such request of the token, whatever its
    /// fate after them), then the permission, then the endpoint.
    fn gist_write(&mut self, call: &Call) -> Response {
        let (Some(t), Some(token)) = (call.who, call.token) else {
            return Response::error(401, "Requires authentication", DOCS_GISTS);
        };
        if let Some(retry_after) = self.secondary.wait(token, call.now_ms) {
            // Refused, not counted, and nothing changes.
            self.secondary_refusals += 1;
            let message = format!(
                "{SECONDARY_MESSAGE} If you reach out to GitHub Support for help, please \
                 include the request ID {}.",
                call.request_id
            );
            return Response::error(self.secondary.status, &message, DOCS_SECONDARY)
                .with("retry-after", retry_after.to_string());
        }
        self.secondary.note(token, call.now_ms);
        // GitHub hides what a classic token may not reach (404) and names the
        // permission a fine-grained one lacks (403), on every write alike; and it
        // checks before reading the body, so an empty POST tells a token that may
        // write gists (422) from one that may not without making anything.
        match &t.kind {
            Kind::Classic { scopes } if !scopes.iter().any(|s| s == "gist") => {
                return Response::error(404, "Not Found", DOCS_GISTS)
                    .with("x-accepted-oauth-scopes", "gist");
            }
            Kind::FineGrained { gists: false } => {
                return Response::error(
                    403,
                    "Resource not accessible by personal access token",
                    DOCS_GISTS,
                )
                .with("x-accepted-github-permissions", "gists=write");
            }
            _ => {}
        }
        // GitHub has no conditional writes: no compare-and-swap on a revision and
        // no create-only write, so a client that sends the headers is told so
        // rather than left believing it was protected.
        if let Some(h) = ["if-match", "if-none-match", "if-unmodified-since"]
            .into_iter()
            .find(|h| call.head.header(h).is_some())
        {
            return Response::error(
                400,
                &format!("Conditional requests are not supported: {h} was sent."),
                DOCS_GISTS,
            );
        }
        let base = self.base_url.clone();
        self.gists.write(call, t, &base)
    }

    /// `GET /user`: the token's owner.
    fn get_user(&self, who: Option<&Token>) -> Response {
        let Some(t) = who else {
            return Response::error(401, "Requires authentication", DOCS_USER);
        };
        let user = user_json(&self.base_url, &t.login, t.user_id);
        let response = Response::json(200, &user).with("x-accepted-oauth-scopes", "");
        match t.kind {
            Kind::FineGrained { .. } => response.with(
                "x-accepted-github-permissions",
                "allows_permissionless_access=true",
            ),
            Kind::Classic { .. } => response,
        }
    }

    /// `POST /credentials/revoke`: anyone may report leaked tokens, so only callers
    /// without one are served.
    fn revoke_credentials(&mut self, who: Option<&Token>, body: &[u8]) -> Response {
        if who.is_some() {
            return Response::error(
                403,
                "Authenticated requests are not accepted by this endpoint.",
                DOCS_REVOKE,
            );
        }
        // GitHub's documented split: a body that is not JSON, or not a JSON object,
        // is a 400; an object whose fields are wrong is a 422.
        let Some(doc) = std::str::from_utf8(body).ok().and_then(Json::parse) else {
            return Response::error(400, "Problems parsing JSON", DOCS_REVOKE);
        };
        let Json::Obj(_) = doc else {
            return Response::error(400, "Body should be a JSON object", DOCS_REVOKE);
        };
        let listed = match doc.get("credentials") {
            Some(Json::Arr(items)) => items
                .iter()
                .map(|i| match i {
                    Json::Str(s) => Some(s.as_str()),
                    _ => None,
                })
                .collect::<Option<Vec<&str>>>(),
            _ => None,
        };
        let Some(listed) = listed.filter(|l| (1..=MAX_REVOKED_PER_REQUEST).contains(&l.len()))
        else {
            let errors = Json::Arr(vec![Json::obj([
                ("resource", Json::str("Credential")),
                ("field", Json::str("credentials")),
                ("code", Json::str("invalid")),
            ])]);
            let body = Json::obj([
                ("message", Json::str("Validation Failed")),
                ("errors", errors),
                ("documentation_url", Json::str(DOCS_REVOKE)),
                ("status", Json::str("422")),
            ]);
            return Response::json(422, &body);
        };
        for token in listed {
            // Unknown credentials are passed over in silence: the answer must not
            // tell a caller which strings are live tokens.
            if let Some(t) = self.tokens.get_mut(token) {
                t.revoked = true;
            }
        }
        Response::json(202, &Json::Obj(Vec::new()))
    }
}

/// A user as `GET /user` shows it (a gist's `owner` is the same object).
fn user_json(base_url: &str, login: &str, user_id: u64) -> Json {
    let api = format!("{base_url}/users/{login}");
    let created = "2020-01-01T00:00:00Z";
    Json::obj([
        ("login", Json::str(login)),
        ("id", Json::int(user_id)),
        (
            "node_id",
            Json::str(base64(format!("04:User{user_id}").as_bytes())),
        ),
        (
            "avatar_url",
            Json::str(format!(
                "https://avatars.githubusercontent.com/u/{user_id}?v=4"
            )),
        ),
        ("gravatar_id", Json::str("")),
        ("url", Json::str(&api)),
        ("html_url", Json::str(format!("https://github.com/{login}"))),
        ("followers_url", Json::str(format!("{api}/followers"))),
        (
            "following_url",
            Json::str(format!("{api}/following{{/other_user}}")),
        ),
        ("gists_url", Json::str(format!("{api}/gists{{/gist_id}}"))),
        (
            "starred_url",
            Json::str(format!("{api}/starred{{/owner}}{{/repo}}")),
        ),
        (
            "subscriptions_url",
            Json::str(format!("{api}/subscriptions")),
        ),
        ("organizations_url", Json::str(format!("{api}/orgs"))),
        ("repos_url", Json::str(format!("{api}/repos"))),
        ("events_url", Json::str(format!("{api}/events{{/privacy}}"))),
        (
            "received_events_url",
            Json::str(format!("{api}/received_events")),
        ),
        ("type", Json::str("User")),
        ("user_view_type", Json::str("private")),
        ("site_admin", Json::Bool(false)),
        ("name", Json::Null),
        ("company", Json::Null),
        ("blog", Json::str("")),
        ("location", Json::Null),
        ("email", Json::Null),
        ("hireable", Json::Null),
        ("bio", Json::Null),
        ("twitter_username", Json::Null),
        ("notification_email", Json::Null),
        ("public_repos", Json::int(0)),
        ("public_gists", Json::int(0)),
        ("followers", Json::int(0)),
        ("following", Json::int(0)),
        ("created_at", Json::str(created)),
        ("updated_at", Json::str(created)),
    ])
}

fn rate_limited(caller: &Caller, peer: IpAddr, request_id: &str, now: u64) -> Response {
    let support = format!(
        "If you reach out to GitHub Support for help, please include the request ID \
         {request_id} and timestamp {}.",
        github_time(now)
    );
    let message = match caller {
        Caller::Known(t) => format!(
            "API rate limit exceeded for user ID {}. {support}",
            t.user_id
        ),
        Caller::Anonymous | Caller::Bad => format!(
            "API rate limit exceeded for {peer}. (But here's the good news: Authenticated \
             requests get a higher rate limit. Check out the documentation for more \
             details.) {support}"
        ),
    };
    Response::error(403, &message, DOCS_RATE_LIMITS)
}

/// Whether a request is one of GitHub's "content-creating" ones that the secondary
/// limits count: any write under `/gists`.
fn is_content_request(method: &str, path: &str) -> bool {
    matches!(method, "POST" | "PATCH" | "PUT" | "DELETE")
        && (path == "/gists" || path.starts_with("/gists/"))
}

/// The token in an `Authorization` header; GitHub takes both schemes, in any case.
fn token_of(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    let known = scheme.eq_ignore_ascii_case("token") || scheme.eq_ignore_ascii_case("bearer");
    (known && !token.is_empty()).then_some(token)
}

/// A per-fake number for request IDs, so two fakes in one test do not share them.
fn port_of(base_url: &str) -> u16 {
    base_url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0)
}

fn now() -> u64 {
    http::unix_now()
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `2026-12-07 12:00:00 UTC`, the format of GitHub's expiry header.
fn github_time(unix: u64) -> String {
    iso_time(unix).replacen('T', " ", 1).replace('Z', " UTC")
}

fn parse_github_time(s: &str) -> Option<u64> {
    let (date, rest) = s.trim().split_once(' ')?;
    let (time, zone) = rest.split_once(' ')?;
    if zone != "UTC" {
        return None;
    }
    http::parse_utc(date, time)
}

/// The constructors of GitHub's answers over the shared [`Response`]: every
/// answer names its server and carries a `Date`.
trait GithubReply: Sized {
    fn text(status: u16, content_type: &str, body: &str) -> Self;
    fn json(status: u16, body: &Json) -> Self;
    fn html(status: u16, body: &str) -> Self;
    /// GitHub's error document.
    fn error(status: u16, message: &str, documentation_url: &str) -> Self;
    /// No body at all: a 204, or a 304 (which carries its 200's `ETag`).
    fn empty(status: u16) -> Self;
    /// The `Date` header as of the fake's clock.
    fn dated(self, unix: u64) -> Self;
}

impl GithubReply for Response {
    fn text(status: u16, content_type: &str, body: &str) -> Self {
        Self::empty(status)
            .with("content-type", content_type)
            .with_body(body.as_bytes().to_vec())
    }

    fn json(status: u16, body: &Json) -> Self {
        Self::text(status, JSON_TYPE, &body.to_string())
    }

    fn html(status: u16, body: &str) -> Self {
        Self::text(status, "text/html; charset=utf-8", body)
    }

    fn error(status: u16, message: &str, documentation_url: &str) -> Self {
        let body = Json::obj([
            ("message", Json::str(message)),
            ("documentation_url", Json::str(documentation_url)),
            ("status", Json::str(status.to_string())),
        ]);
        Self::json(status, &body)
    }

    fn empty(status: u16) -> Self {
        Response::new(status)
            .with("server", "github.com")
            .with("date", http_date(now()))
    }

    fn dated(self, unix: u64) -> Self {
        self.set("date", http_date(unix))
    }
}

/// Just enough JSON for GitHub's request and response bodies, without a dependency.
mod json {
    use std::fmt;

    #[derive(Debug, Clone, PartialEq)]
    pub enum Json {
        Null,
        Bool(bool),
        /// The number's text, as written: checked, never computed with.
        Num(String),
        Str(String),
        Arr(Vec<Json>),
        /// In order, as GitHub's documents are written.
        Obj(Vec<(String, Json)>),
    }

    /// Deeper documents are refused rather than risking the parser's stack.
    const MAX_DEPTH: usize = 128;

    impl Json {
        pub fn str(s: impl Into<String>) -> Self {
            Json::Str(s.into())
        }

        pub fn int(n: u64) -> Self {
            Json::Num(n.to_string())
        }

        pub fn obj<'a>(pairs: impl IntoIterator<Item = (&'a str, Json)>) -> Self {
            Json::Obj(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
        }

        /// A member of an object (the last, if the key repeats, as most parsers do).
        pub fn get(&self, key: &str) -> Option<&Json> {
            match self {
                Json::Obj(members) => members.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v),
                _ => None,
            }
        }

        /// A whole document (RFC 8259); None if it is not one.
        pub fn parse(text: &str) -> Option<Json> {
            let mut p = Parser {
                s: text.as_bytes(),
                i: 0,
            };
            let value = p.value(0)?;
            p.ws();
            (p.i == p.s.len()).then_some(value)
        }
    }

    struct Parser<'a> {
        s: &'a [u8],
        i: usize,
    }

    impl Parser<'_> {
        fn ws(&mut self) {
            while matches!(self.s.get(self.i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
                self.i += 1;
            }
        }

        fn eat(&mut self, b: u8) -> bool {
            self.ws();
            let hit = self.s.get(self.i) == Some(&b);
            if hit {
                self.i += 1;
            }
            hit
        }

        fn literal(&mut self, word: &str, value: Json) -> Option<Json> {
            let end = self.i + word.len();
            (self.s.get(self.i..end) == Some(word.as_bytes())).then(|| {
                self.i = end;
                value
            })
        }

        fn value(&mut self, depth: usize) -> Option<Json> {
            if depth > MAX_DEPTH {
                return None;
            }
            self.ws();
            match *self.s.get(self.i)? {
                b'n' => self.literal("null", Json::Null),
                b't' => self.literal("true", Json::Bool(true)),
                b'f' => self.literal("false", Json::Bool(false)),
                b'"' => self.string().map(Json::Str),
                b'[' => {
                    self.i += 1;
                    let mut items = Vec::new();
                    if self.eat(b']') {
                        return Some(Json::Arr(items));
                    }
                    loop {
                        items.push(self.value(depth + 1)?);
                        if self.eat(b']') {
                            return Some(Json::Arr(items));
                        }
                        if !self.eat(b',') {
                            return None;
                        }
                    }
                }
                b'{' => {
                    self.i += 1;
                    let mut members = Vec::new();
                    if self.eat(b'}') {
                        return Some(Json::Obj(members));
                    }
                    loop {
                        self.ws();
                        let key = self.string()?;
                        if !self.eat(b':') {
                            return None;
                        }
                        members.push((key, self.value(depth + 1)?));
                        if self.eat(b'}') {
                            return Some(Json::Obj(members));
                        }
                        if !self.eat(b',') {
                            return None;
                        }
                    }
                }
                _ => self.number(),
            }
        }

        fn digits(&mut self) -> usize {
            let start = self.i;
            while self.s.get(self.i).is_some_and(u8::is_ascii_digit) {
                self.i += 1;
            }
            self.i - start
        }

        fn number(&mut self) -> Option<Json> {
            let start = self.i;
            if self.s.get(self.i) == Some(&b'-') {
                self.i += 1;
            }
            match self.s.get(self.i) {
                Some(b'0') => self.i += 1,
                Some(b'1'..=b'9') => {
                    self.digits();
                }
                _ => return None,
            }
            if self.s.get(self.i) == Some(&b'.') {
                self.i += 1;
                if self.digits() == 0 {
                    return None;
                }
            }
            if matches!(self.s.get(self.i), Some(b'e' | b'E')) {
                self.i += 1;
                if matches!(self.s.get(self.i), Some(b'+' | b'-')) {
                    self.i += 1;
                }
                if self.digits() == 0 {
                    return None;
                }
            }
            let text = std::str::from_utf8(&self.s[start..self.i]).ok()?;
            Some(Json::Num(text.to_owned()))
        }

        fn hex4(&mut self) -> Option<u32> {
            let digits = self.s.get(self.i..self.i + 4)?;
            let n = u32::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()?;
            self.i += 4;
            Some(n)
        }

        fn string(&mut self) -> Option<String> {
            if self.s.get(self.i) != Some(&b'"') {
                return None;
            }
            self.i += 1;
            // Bytes are copied whole between escapes, so UTF-8 in the input (valid,
            // as it came from a str) stays valid.
            let mut out = Vec::new();
            loop {
                let b = *self.s.get(self.i)?;
                self.i += 1;
                match b {
                    b'"' => return String::from_utf8(out).ok(),
                    b'\\' => {
                        let e = *self.s.get(self.i)?;
                        self.i += 1;
                        let c = match e {
                            b'"' => '"',
                            b'\\' => '\\',
                            b'/' => '/',
                            b'b' => '\u{8}',
                            b'f' => '\u{c}',
                            b'n' => '\n',
                            b'r' => '\r',
                            b't' => '\t',
                            b'u' => {
                                let hi = self.hex4()?;
                                let code = if (0xD800..0xDC00).contains(&hi) {
                                    if self.s.get(self.i..self.i + 2) != Some(b"\\u") {
                                        return None;
                                    }
                                    self.i += 2;
                                    let lo = self.hex4()?;
                                    if !(0xDC00..0xE000).contains(&lo) {
                                        return None;
                                    }
                                    0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                                } else {
                                    hi
                                };
                                char::from_u32(code)?
                            }
                            _ => return None,
                        };
                        let mut buf = [0; 4];
                        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                    }
                    0..=0x1F => return None,
                    _ => out.push(b),
                }
            }
        }
    }

    fn write_str(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
        f.write_str("\"")?;
        // Runs without escapes are written whole: gist contents run to megabytes.
        let mut plain = 0;
        for (i, c) in s.char_indices() {
            let short = match c {
                '"' => Some("\\\""),
                '\\' => Some("\\\\"),
                '\n' => Some("\\n"),
                '\r' => Some("\\r"),
                '\t' => Some("\\t"),
                c if u32::from(c) < 0x20 => None,
                _ => continue,
            };
            f.write_str(&s[plain..i])?;
            match short {
                Some(e) => f.write_str(e)?,
                None => write!(f, "\\u{:04x}", u32::from(c))?,
            }
            plain = i + c.len_utf8();
        }
        f.write_str(&s[plain..])?;
        f.write_str("\"")
    }

    /// Compact, as GitHub writes its documents.
    impl fmt::Display for Json {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match self {
                Json::Null => f.write_str("null"),
                Json::Bool(b) => write!(f, "{b}"),
                Json::Num(n) => f.write_str(n),
                Json::Str(s) => write_str(f, s),
                Json::Arr(items) => {
                    f.write_str("[")?;
                    for (i, item) in items.iter().enumerate() {
                        if i > 0 {
                            f.write_str(",")?;
                        }
                        write!(f, "{item}")?;
                    }
                    f.write_str("]")
                }
                Json::Obj(members) => {
                    f.write_str("{")?;
                    for (i, (k, v)) in members.iter().enumerate() {
                        if i > 0 {
                            f.write_str(",")?;
                        }
                        write_str(f, k)?;
                        write!(f, ":{v}")?;
                    }
                    f.write_str("}")
                }
            }
        }
    }
}
