//! A fake of the Dropbox API v2 on three loopback ports, for tests of the
//! product's Dropbox backend that must not reach dropbox.com.
//!
//! Faithful rather than convenient: each documented limit and behaviour of the
//! endpoints it serves is enforced, so the product fails here for the reasons real
//! users' copies would fail there. The three listeners play Dropbox's three hosts
//! (api: RPC endpoints, plus `/oauth2/token` and `/oauth2/authorize`; content:
//! uploads and downloads; notify: the long poll), and an endpoint asked of the
//! wrong host is refused. Plain HTTP/1.1 with keep-alive (the shared
//! `fake_http`), one thread per connection.
//!
//! The parts, one job each: [`server`] (listeners, connections, outages, routing),
//! [`wire`] (routes, how arguments arrive, error shapes),
//! [`auth`] (apps, OAuth, tokens, the account), [`tree`] (an app folder's files,
//! revisions and change order), [`files`] (upload, download, delete, folders,
//! metadata), [`listing`] (cursors, list_folder, the long poll), [`sessions`]
//! (upload sessions and batch commits).
//!
//! Concurrency, which the product must get right against Dropbox: each write to
//! a namespace (a commit: upload, a session's finish, a batch finish, a delete, a
//! new folder) holds that namespace's write lock for a real while — a few
//! milliseconds plus the configured latency — and a commit that arrives meanwhile
//! is refused `429 too_many_write_operations` with `Retry-After: 1`, as Dropbox
//! does. Uploading session data is not a commit and runs in parallel freely.
//!
//! Locks, in the only order they are ever taken: the state (`Shared::state`), then
//! one upload session's data. A namespace's write lock is a flag in the state, held
//! across the commit without the state lock, so overlapping requests really
//! overlap; hashing and copying large bodies happen outside the state lock too.
//! The register of open connections has a lock of its own, never held with
//! another.
//!
//! Time is the fake's own clock: the wall clock plus what a test has added with
//! [`FakeDropbox::advance_clock`]. Token and code expiry, session expiry,
//! timestamps and long-poll backoff follow it; the long poll's own timeout is
//! real time, as a client's socket sees it.

mod auth;
mod files;
mod listing;
mod server;
mod sessions;
mod tree;
mod wire;

use std::collections::{HashMap, HashSet};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use self::auth::Caller;
use self::wire::Style;
use super::fake_http::{Head, Response};

/// Dropbox's limit on one request's data ("do not use this to upload a file
/// larger than 150 MB", and so for a session's each call).
const BODY_LIMIT: usize = 150 * 1024 * 1024;
/// How long a commit holds its namespace's write lock, before the latency.
const COMMIT_TIME: Duration = Duration::from_millis(5);
/// Dropbox Basic's allocation.
const DEFAULT_QUOTA: u64 = 2 * 1024 * 1024 * 1024;
/// list_folder's largest page unless a test sets another: small enough that
/// tests page.
const DEFAULT_PAGE: usize = 500;
/// Dropbox adds "up to 90 seconds of random jitter" to a long poll's timeout. The
/// fake adds all of it unless told otherwise: the worst case, every time, so a
/// client timeout too short for it fails every time rather than now and then.
const LONGPOLL_JITTER: Duration = Duration::from_secs(90);
/// A stall ends after this even if the test forgets to end it.
const STALL_LIMIT: Duration = Duration::from_secs(60);

/// The fake Dropbox. Serves until dropped.
pub struct FakeDropbox {
    addrs: Vec<(Host, SocketAddr)>,
    shared: Arc<Shared>,
    acceptors: Vec<JoinHandle<()>>,
}

/// Ways the service can fail as the product sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Outage {
    #[default]
    None,
    /// Every request is answered 503 or 500 (in turn), as during an incident.
    ServerError,
    /// Each connection is closed once a request's head (and body) has arrived,
    /// without an answer.
    CutConnections,
    /// Each request is read and never answered while the stall lasts (at most a
    /// minute).
    Stall,
    /// Every request is answered 200 with an HTML page: a captive portal.
    NotDropbox,
    /// Every request is answered 429 `too_many_requests` with `Retry-After`.
    TooManyRequests { retry_after_secs: u64 },
}

/// Dropbox's hosts, each played by one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Host {
    /// api.dropboxapi.com (and www.dropbox.com's `/oauth2/authorize`).
    Api,
    /// content.dropboxapi.com.
    Content,
    /// notify.dropboxapi.com.
    Notify,
}

/// One request as the fake received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub host: Host,
    /// `files/list_folder/continue`, `oauth2/token`, …
    pub endpoint: String,
    /// 0 when the connection was cut or stalled without an answer.
    pub status: u16,
    /// The `error_summary` of an error (for `oauth2/token`, its `error`).
    pub error_summary: Option<String>,
    /// The `Authorization` header exactly as sent.
    pub authorization: Option<String>,
}

impl FakeDropbox {
    /// Binds three free loopback ports, one per host, and serves them from
    /// background threads.
    pub fn start() -> Self {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new()),
            changed: Condvar::new(),
            stopping: AtomicBool::new(false),
            connections: Mutex::new(Connections::default()),
        });
        let mut addrs = Vec::new();
        let mut acceptors = Vec::new();
        for host in [Host::Api, Host::Content, Host::Notify] {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fake Dropbox");
            addrs.push((host, listener.local_addr().expect("its address")));
            let s = shared.clone();
            let acceptor = std::thread::Builder::new()
                .name(format!("fake-dropbox-{host:?}"))
                .spawn(move || server::accept_loop(listener, host, s))
                .expect("start the fake Dropbox");
            acceptors.push(acceptor);
        }
        Self {
            addrs,
            shared,
            acceptors,
        }
    }

    fn addr(&self, host: Host) -> SocketAddr {
        self.addrs
            .iter()
            .find(|(h, _)| *h == host)
            .map(|(_, a)| *a)
            .expect("every host is served")
    }

    /// api.dropboxapi.com's part (also `/oauth2/token` and `/oauth2/authorize`).
    pub fn api_url(&self) -> String {
        format!("http://{}", self.addr(Host::Api))
    }

    pub fn content_url(&self) -> String {
        format!("http://{}", self.addr(Host::Content))
    }

    pub fn notify_url(&self) -> String {
        format!("http://{}", self.addr(Host::Notify))
    }

    /// `127.0.0.1:P`, for a relay in front of the host.
    pub fn api_addr(&self) -> String {
        self.addr(Host::Api).to_string()
    }

    pub fn content_addr(&self) -> String {
        self.addr(Host::Content).to_string()
    }

    pub fn notify_addr(&self) -> String {
        self.addr(Host::Notify).to_string()
    }

    /// An app with App-folder access: its own namespace in the test account.
    pub fn add_app(&self, app_key: &str, app_name: &str) {
        let mut state = self.shared.state();
        let ns = 1 + state.trees.len() as u64;
        state.trees.insert(ns, tree::Tree::new());
        state.auth.add_app(app_key, app_name, ns);
    }

    /// A refresh token, as if the test account had approved the app for offline
    /// access.
    pub fn grant(&self, app_key: &str) -> String {
        self.shared
            .state()
            .auth
            .grant(app_key)
            .expect("grant: that app was never added to the fake Dropbox")
    }

    /// A refresh token of the test's choosing, as if the test account had approved
    /// the app for offline access (every fake of a run can then share one).
    pub fn grant_as(&self, app_key: &str, refresh_token: &str) {
        self.shared
            .state()
            .auth
            .grant_as(app_key, refresh_token)
            .expect("grant_as: that app was never added to the fake Dropbox");
    }

    /// As if the user removed the app from their account (Dropbox's "connected
    /// apps"): every login of it, and every access token, stops working.
    pub fn revoke_app(&self, app_key: &str) {
        let mut state = self.shared.state();
        for token in state.auth.refresh_tokens_of(app_key) {
            state.auth.revoke_refresh(&token);
        }
    }

    /// Revokes every login of the app but `keep` (one device's login, say, while
    /// the test's own stays good).
    pub fn revoke_logins_except(&self, app_key: &str, keep: &str) {
        let mut state = self.shared.state();
        for token in state.auth.refresh_tokens_of(app_key) {
            if token != keep {
                state.auth.revoke_refresh(&token);
            }
        }
    }

    /// What the user's browser does with the URL the product prints: Ok(the code
    /// the page shows), or Err(the page's complaint about the URL).
    pub fn approve(&self, authorize_url: &str) -> Result<String, String> {
        let after_scheme = authorize_url
            .split_once("://")
            .map_or(authorize_url, |(_, r)| r);
        let target = after_scheme.find('/').map_or("/", |i| &after_scheme[i..]);
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        if path != "/oauth2/authorize" {
            return Err(format!("{authorize_url} is not Dropbox's authorize page"));
        }
        let mut state = self.shared.state();
        let now = state.now_ms();
        state.auth.approve(query, now)
    }

    /// As if the user removed the app from their account: the refresh token and
    /// every access token issued from it stop working.
    pub fn revoke_refresh_token(&self, refresh_token: &str) {
        self.shared.state().auth.revoke_refresh(refresh_token);
    }

    /// Moves the fake's clock ahead (it never goes back).
    pub fn advance_clock(&self, d: Duration) {
        self.shared.state().clock += d;
        self.shared.changed.notify_all();
    }

    /// The fake's clock.
    pub fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.shared.state().now_ms())
    }

    pub fn set_outage(&self, o: Outage) {
        self.shared.state().outage = o;
    }

    /// Every cursor issued so far answers 409 `reset` from now on (as Dropbox may
    /// at any time); cursors issued later work.
    pub fn reset_cursors(&self) {
        self.shared.state().cursor_epoch += 1;
        self.shared.changed.notify_all();
    }

    /// The account's allocation in bytes; a commit that would take the files'
    /// total past it fails `insufficient_space`.
    pub fn set_quota(&self, bytes: u64) {
        self.shared.state().allocation = bytes;
    }

    /// Added to every answer, and to each commit's hold on its write lock.
    pub fn set_latency(&self, d: Duration) {
        self.shared.state().latency = d;
    }

    /// Long-poll answers carry `"backoff": secs`, and a long poll of the same
    /// namespace sooner than that after one is refused (429).
    pub fn set_longpoll_backoff(&self, secs: Option<u64>) {
        self.shared.state().longpoll_backoff = secs;
    }

    /// The jitter added to a long poll's timeout (Dropbox: up to 90 s; the fake
    /// adds exactly this, 90 s unless set).
    pub fn set_longpoll_jitter(&self, d: Duration) {
        self.shared.state().longpoll_jitter = d;
    }

    /// list_folder's largest page (a request's `limit` may lower it).
    pub fn set_page_size(&self, n: usize) {
        assert!(n > 0, "a page holds at least one entry");
        self.shared.state().page_size = n;
    }

    /// Every request so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.state().seen.clone()
    }

    /// Requests to `endpoint` (`files/upload`, `oauth2/token`, …) so far.
    pub fn count(&self, endpoint: &str) -> usize {
        let state = self.shared.state();
        state.seen.iter().filter(|s| s.endpoint == endpoint).count()
    }

    /// Commits refused `too_many_write_operations` so far.
    pub fn write_conflicts(&self) -> usize {
        self.shared.state().write_conflicts
    }

    /// The files in every app folder now, by path_display (app folders in the
    /// order the apps were added).
    pub fn files(&self) -> Vec<(String, Vec<u8>)> {
        let state = self.shared.state();
        let mut ns: Vec<_> = state.trees.keys().copied().collect();
        ns.sort_unstable();
        ns.iter().flat_map(|n| state.trees[n].files()).collect()
    }

    /// The files in one app's folder now.
    pub fn files_of(&self, app_key: &str) -> Vec<(String, Vec<u8>)> {
        let state = self.shared.state();
        let ns = state.auth.ns_of(app_key).expect("files_of: no such app");
        state.trees[&ns].files()
    }

    /// Everything Dropbox holds or has held: every path and revision stored in
    /// every app folder, deleted ones included, folders (with no bytes), and the
    /// data of upload sessions not yet committed (as `upload_session:ID`).
    pub fn everything_stored(&self) -> Vec<(String, Vec<u8>)> {
        let state = self.shared.state();
        let mut ns: Vec<_> = state.trees.keys().copied().collect();
        ns.sort_unstable();
        let mut all: Vec<_> = ns
            .iter()
            .flat_map(|n| state.trees[n].everything())
            .collect();
        all.extend(state.sessions.everything());
        all
    }

    /// The test account's id, as tokens and get_current_account name it.
    pub fn account_id(&self) -> &'static str {
        auth::ACCOUNT_ID
    }
}

impl Drop for FakeDropbox {
    fn drop(&mut self) {
        {
            // Under the lock `register` takes, so no connection slips in after
            // the sweep and keeps a thread waiting on a client forever.
            let mut conns = self.shared.connections();
            self.shared.stopping.store(true, SeqCst);
            for (_, c) in conns.open.drain() {
                let _ = c.shutdown(Shutdown::Both);
            }
        }
        self.shared.changed.notify_all();
        // Acceptors only look at `stopping` when a connection arrives.
        for (_, addr) in &self.addrs {
            let _ = TcpStream::connect(addr);
        }
        for a in self.acceptors.drain(..) {
            // Joined so the ports are closed once the fake is gone.
            let _ = a.join();
        }
    }
}

struct Shared {
    state: Mutex<State>,
    /// Signalled after every change to a namespace, a cursor reset and on stop:
    /// long polls wait on it.
    changed: Condvar,
    stopping: AtomicBool,
    connections: Mutex<Connections>,
}

#[derive(Default)]
struct Connections {
    next: u64,
    open: HashMap<u64, TcpStream>,
}

impl Shared {
    /// A handler that panicked has already failed its test; the state it left
    /// is still the best account of what happened.
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

    /// Runs a commit into namespace `ns`: refused 429 if another commit holds
    /// its write lock, else holds it for the commit time plus the latency (the
    /// state unlocked, so other requests go on), then runs `work`.
    fn commit(
        &self,
        ns: u64,
        work: impl FnOnce() -> Result<Response, Response>,
    ) -> Result<Response, Response> {
        let hold = {
            let mut state = self.state();
            if !state.busy.insert(ns) {
                state.write_conflicts += 1;
                return Err(wire::rate_limited("too_many_write_operations", 1));
            }
            COMMIT_TIME + state.latency
        };
        let _lock = WriteLock { shared: self, ns };
        std::thread::sleep(hold);
        let result = work();
        self.changed.notify_all();
        result
    }
}

/// A namespace's write lock, released however the commit ends.
struct WriteLock<'a> {
    shared: &'a Shared,
    ns: u64,
}

impl Drop for WriteLock<'_> {
    fn drop(&mut self) {
        self.shared.state().busy.remove(&self.ns);
    }
}

struct State {
    /// How far the fake's clock is ahead of the wall clock.
    clock: Duration,
    outage: Outage,
    /// Answers given in an outage, so a server error alternates 503 and 500.
    outage_answers: u64,
    latency: Duration,
    page_size: usize,
    longpoll_backoff: Option<u64>,
    longpoll_jitter: Duration,
    /// When each namespace may long-poll again (fake clock, ms), after a backoff.
    longpoll_after: HashMap<u64, u64>,
    allocation: u64,
    auth: auth::Auth,
    /// The app folders, by namespace id.
    trees: HashMap<u64, tree::Tree>,
    sessions: sessions::Sessions,
    /// Namespaces whose write lock a commit holds.
    busy: HashSet<u64>,
    /// Cursors carry the epoch they were issued in; older ones are reset.
    cursor_epoch: u64,
    /// Keys this fake's cursors, so another fake's are refused.
    cursor_salt: u64,
    seen: Vec<Seen>,
    write_conflicts: usize,
}

impl State {
    fn new() -> Self {
        Self {
            clock: Duration::ZERO,
            outage: Outage::None,
            outage_answers: 0,
            latency: Duration::ZERO,
            page_size: DEFAULT_PAGE,
            longpoll_backoff: None,
            longpoll_jitter: LONGPOLL_JITTER,
            longpoll_after: HashMap::new(),
            allocation: DEFAULT_QUOTA,
            auth: auth::Auth::default(),
            trees: HashMap::new(),
            sessions: sessions::Sessions::default(),
            busy: HashSet::new(),
            cursor_epoch: 0,
            cursor_salt: wire::random_u64(),
            seen: Vec::new(),
            write_conflicts: 0,
        }
    }

    /// The fake's clock, in milliseconds since the epoch.
    fn now_ms(&self) -> u64 {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        u64::try_from((wall + self.clock).as_millis()).unwrap_or(u64::MAX)
    }

    fn now(&self) -> u64 {
        self.now_ms() / 1_000
    }

    /// Bytes of files in all the account's app folders (versions do not count).
    fn used(&self) -> u64 {
        self.trees.values().map(|t| t.used).sum()
    }

    /// Bytes the account may still add.
    fn room(&self) -> u64 {
        self.allocation.saturating_sub(self.used())
    }

    fn tree(&mut self, ns: u64) -> &mut tree::Tree {
        self.trees.entry(ns).or_insert_with(tree::Tree::new)
    }
}

/// One authenticated API request on its way to its endpoint.
struct Call<'a> {
    shared: &'a Shared,
    endpoint: &'a str,
    style: Style,
    head: &'a Head,
    caller: Caller,
    args: Value,
    body: Vec<u8>,
}

impl Call<'_> {
    /// The request's argument as a struct with these fields.
    fn args(&self, fields: &[&str]) -> Result<wire::Obj<'_>, Response> {
        wire::Obj::top(&self.args, self.endpoint, self.style, fields)
    }
}
