//! A fake of the Google Drive API v3 and Google's OAuth endpoints on one
//! loopback port, for tests of the product's Drive backend that must not reach
//! Google.
//!
//! Faithful rather than convenient: each documented Drive behaviour the product
//! must live with is enforced, so a client that would fail against Google fails
//! here. Names are not unique and there is no compare-and-swap (`If-Match` is
//! ignored); simple uploads stop at 5 MB and resumable chunks must be multiples
//! of 256 KiB; list pages come back short or empty before the end; `q` refuses
//! range operators on names; `fields` hides what was not asked for; access
//! tokens die after an hour and a testing client's refresh tokens after a week;
//! a per-user request budget answers Google's 403/429 rate-limit errors; and the
//! appDataFolder is a space apart that cannot be trashed or shared.
//!
//! One listener plays every Google host the product talks to: www.googleapis.com
//! (`/drive/v3`, `/upload/drive/v3`), oauth2.googleapis.com (`/token`,
//! `/device/code`, `/revoke`) and accounts.google.com's consent page
//! (`/o/oauth2/v2/auth`). Plain HTTP/1.1 with keep-alive (the shared
//! `fake_http`), one thread per connection.
//!
//! The parts, one job each: [`server`] (listener, connections, outages, the
//! rate budget, routing, the record), [`wire`] (error shapes, parameters,
//! `fields`), [`auth`] (clients, flows, tokens), [`store`] (files, revisions, the
//! change log), [`query`] (`q`), [`files`] (get, create, update, delete,
//! download, simple uploads), [`resumable`] (upload sessions), [`listing`]
//! (files.list and the changes feed), [`pacer`] (the request budget).
//!
//! Locks, in the only order they are ever taken: the state, then nothing. The
//! register of open connections has a lock of its own, never held with the
//! state. Hashing large bodies happens outside the state lock.
//!
//! Time is the fake's own clock: the wall clock plus what a test has added with
//! [`FakeGdrive::advance_clock`]; tokens, codes and timestamps follow it. The
//! request budget runs on real time, as a client's pacing does.

mod auth;
mod files;
mod listing;
mod pacer;
mod query;
mod resumable;
mod server;
mod store;
mod wire;

use std::collections::HashMap;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use self::auth::ClientKind;

/// Google's budget is per user per 100 s; rclone paces Drive at 10 requests a
/// second, which is what a well-behaved client may expect to get.
const DEFAULT_RATE: f64 = 10.0;
const DEFAULT_BURST: u32 = 20;
/// A stall ends after this even if the test forgets to end it.
const STALL_LIMIT: Duration = Duration::from_secs(60);

/// The fake Google. Serves until dropped.
pub struct FakeGdrive {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

/// Ways the service can fail as the product sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Outage {
    #[default]
    None,
    /// Every request is answered 503 or 500 (in turn), Google's backendError.
    ServerError,
    /// Each connection is closed once a request has arrived, without an answer.
    CutConnections,
    /// Each request is read and never answered while the stall lasts (at most a
    /// minute).
    Stall,
    /// Every request is answered 200 with an HTML page: a captive portal.
    NotGoogle,
    /// Every request is refused for rate, 403 and 429 in turn.
    RateLimited,
}

/// One request as the fake received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: String,
    /// 0 when the connection was cut or stalled without an answer.
    pub status: u16,
    /// `errors[0].reason` of a Drive error; `error` of an OAuth one.
    pub reason: Option<String>,
}

impl FakeGdrive {
    /// Binds a free loopback port and serves it from background threads.
    pub fn start() -> Self {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new()),
            stopping: AtomicBool::new(false),
            connections: Mutex::new(Connections::default()),
        });
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fake Google");
        let addr = listener.local_addr().expect("its address");
        let s = shared.clone();
        let acceptor = std::thread::Builder::new()
            .name("fake-gdrive".into())
            .spawn(move || server::accept_loop(listener, s))
            .expect("start the fake Google");
        Self {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// The root of every role: API, uploads, OAuth.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `127.0.0.1:P`, for a relay in front.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    pub fn add_client(
        &self,
        client_id: &str,
        client_secret: &str,
        kind: ClientKind,
        testing: bool,
    ) {
        self.shared
            .state()
            .auth
            .add_client(client_id, client_secret, kind, testing);
    }

    /// A refresh token for drive.appdata, as if the user had consented.
    pub fn grant(&self, client_id: &str) -> String {
        let token = format!("1//0{}", wire::random_string(100));
        self.grant_as(client_id, &token);
        token
    }

    /// A refresh token of the test's choosing (every fake of a run can share one).
    pub fn grant_as(&self, client_id: &str, refresh_token: &str) {
        let mut state = self.shared.state();
        let now = state.now_ms();
        state
            .auth
            .grant_as(client_id, refresh_token, now)
            .expect("grant: that client was never added to the fake Google");
    }

    /// What the user's browser does with the consent URL the product opens:
    /// Ok(the `code` the loopback redirect would carry), or Err(Google's
    /// complaint about the URL).
    pub fn approve(&self, authorize_url: &str) -> Result<String, String> {
        let after_scheme = authorize_url
            .split_once("://")
            .map_or(authorize_url, |(_, r)| r);
        let target = after_scheme.find('/').map_or("/", |i| &after_scheme[i..]);
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        if path != "/o/oauth2/v2/auth" && path != "/o/oauth2/auth" {
            return Err(format!("{authorize_url} is not Google's consent page"));
        }
        let mut state = self.shared.state();
        let now = state.now_ms();
        state.auth.approve(query, now)
    }

    /// The user typing `user_code` at google.com/device and allowing access.
    pub fn approve_device(&self, user_code: &str) -> Result<(), String> {
        let mut state = self.shared.state();
        let now = state.now_ms();
        state.auth.approve_device(user_code, true, now)
    }

    /// The user typing `user_code` and refusing.
    pub fn deny_device(&self, user_code: &str) -> Result<(), String> {
        let mut state = self.shared.state();
        let now = state.now_ms();
        state.auth.approve_device(user_code, false, now)
    }

    /// As if the user removed the app's access: the refresh token and every
    /// access token minted from it stop working.
    pub fn revoke_refresh_token(&self, token: &str) {
        self.shared.state().auth.revoke(token);
    }

    /// Moves the fake's clock ahead (it never goes back).
    pub fn advance_clock(&self, d: Duration) {
        self.shared.state().clock += d;
    }

    pub fn set_outage(&self, o: Outage) {
        self.shared.state().outage = o;
    }

    /// The per-user budget: `per_second` sustained, `burst` at once.
    pub fn set_rate_limit(&self, per_second: f64, burst: u32) {
        self.shared.state().pacer.set(per_second, burst);
    }

    /// Every list page before the last comes back short, every other one empty.
    /// Off, a page is still short now and then, as Drive's are.
    pub fn set_short_pages(&self, on: bool) {
        self.shared.state().short_pages = on;
    }

    /// Added to every answer.
    pub fn set_latency(&self, d: Duration) {
        self.shared.state().latency = d;
    }

    /// A file of the user's own Drive (My Drive's root), which an appdata-scoped
    /// app must never see.
    pub fn put_in_my_drive(&self, name: &str, data: &[u8]) -> String {
        let mut state = self.shared.state();
        let now = state.now_ms();
        let root = state.root_id.clone();
        let file = files::new_file(
            name,
            store::Space::Drive,
            root,
            Arc::new(data.to_vec()),
            now,
        );
        let id = file.id.clone();
        state.store.put(file, now);
        id
    }

    /// Every request so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.state().seen.clone()
    }

    /// Requests of `method` whose path starts with `path_prefix`.
    pub fn count(&self, method: &str, path_prefix: &str) -> usize {
        let state = self.shared.state();
        state
            .seen
            .iter()
            .filter(|s| s.method == method && s.path.starts_with(path_prefix))
            .count()
    }

    /// Requests refused for rate so far (outages included).
    pub fn rate_refusals(&self) -> usize {
        self.shared.state().rate_refusals
    }

    /// The appDataFolder's current files (trashed ones included: there are none).
    pub fn files(&self) -> Vec<(String, String, Vec<u8>)> {
        let state = self.shared.state();
        state
            .store
            .files
            .values()
            .filter(|f| f.space == store::Space::AppData)
            .map(|f| (f.id.clone(), f.name.clone(), f.content.as_ref().clone()))
            .collect()
    }

    /// Every state any file ever had — each name, description and
    /// appProperties (as `name | description | {props}`) with its content —
    /// deleted files included, and the bytes of unfinished upload sessions (as
    /// `upload_session:ID`).
    pub fn everything_stored(&self) -> Vec<(String, Vec<u8>)> {
        let state = self.shared.state();
        let mut all = state.store.history();
        all.extend(state.sessions.everything());
        all
    }

    /// How many names more than one current appDataFolder file carries.
    pub fn duplicate_names(&self) -> usize {
        self.shared.state().store.duplicate_names()
    }

    /// The fake's clock.
    pub fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.shared.state().now_ms())
    }
}

impl Drop for FakeGdrive {
    fn drop(&mut self) {
        {
            let mut conns = self.shared.connections();
            self.shared.stopping.store(true, SeqCst);
            for (_, c) in conns.open.drain() {
                let _ = c.shutdown(Shutdown::Both);
            }
        }
        // The acceptor only looks at `stopping` when a connection arrives.
        let _ = TcpStream::connect(self.addr);
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
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
}

struct State {
    /// How far the fake's clock is ahead of the wall clock.
    clock: Duration,
    outage: Outage,
    /// Answers given in an outage, so errors alternate.
    outage_answers: u64,
    latency: Duration,
    short_pages: bool,
    /// List pages served, so the occasional short page comes deterministically.
    pages_served: u64,
    pacer: pacer::Pacer,
    auth: auth::Auth,
    store: store::Store,
    sessions: resumable::Sessions,
    /// The appDataFolder's and My Drive root's real ids (Drive reports these in
    /// `parents`, not the aliases).
    appdata_id: String,
    root_id: String,
    seen: Vec<Seen>,
    rate_refusals: usize,
}

impl State {
    fn new() -> Self {
        Self {
            clock: Duration::ZERO,
            outage: Outage::None,
            outage_answers: 0,
            latency: Duration::ZERO,
            short_pages: false,
            pages_served: 0,
            pacer: pacer::Pacer::new(DEFAULT_RATE, DEFAULT_BURST),
            auth: auth::Auth::default(),
            store: store::Store::new(),
            sessions: resumable::Sessions::default(),
            appdata_id: format!("0A{}", wire::random_string(26)),
            root_id: format!("0A{}", wire::random_string(26)),
            seen: Vec::new(),
            rate_refusals: 0,
        }
    }

    /// The fake's clock, in milliseconds since the epoch.
    fn now_ms(&self) -> u64 {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        u64::try_from((wall + self.clock).as_millis()).unwrap_or(u64::MAX)
    }

    /// A parent as written by a client (`appDataFolder`, `root`, an id) as the
    /// real id, with the space it is in; None if no such folder.
    fn parent(&self, p: &str) -> Option<(String, store::Space)> {
        if p == "appDataFolder" || p == self.appdata_id {
            return Some((self.appdata_id.clone(), store::Space::AppData));
        }
        if p == "root" || p == self.root_id {
            return Some((self.root_id.clone(), store::Space::Drive));
        }
        self.store
            .get(p)
            .filter(|f| f.mime == files::FOLDER && !f.trashed)
            .map(|f| (f.id.clone(), f.space))
    }
}
