//! GitHub Gist as an object store. A gist is a set of text files by name, so:
//!
//! - keys are grouped by their first two parts (`{prefix}/global`,
//!   `{prefix}/{device_id}`): each group lives in gists of its own, written by that
//!   group's device alone (one writer per gist, DESIGN §11), found by their
//!   descriptions ([`names`]);
//! - a key's file holds the object in base64 (a gist holds text only);
//! - a gist lists at most 300 files, so a group continues in gist n+1 when gist n
//!   has 300;
//! - content over 1 MB comes back truncated inline: such a file is read whole from
//!   its raw URL, never from the cut; raw URLs serve up to 10 MB, so an object over
//!   [`PART_BYTES`] is stored as parts (keys `KEY//part/00000`, …, which no real key
//!   can be: `/` never doubles in one) named by a small manifest under its own key,
//!   written last so no reader sees a manifest without its parts;
//! - every read of a gist or of the account's listing sends its ETag: an unchanged
//!   one answers 304, which GitHub does not count against the hourly limit, and an
//!   unchanged listing means no gist changed, so an idle look costs one free 304;
//! - there is no create-only write: a gist made for a group that another device
//!   made at the same moment is settled by a rule every device applies alike (the
//!   older gist wins, the loser deletes its own);
//! - writes keep under GitHub's secondary limits on their own ([`pacing`]), and a
//!   rate limit GitHub announces anyway is waited out as it says.

mod names;
pub mod pacing;
mod raw_cache;

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use reqwest::Method;
use zeroize::Zeroizing;

use super::github::{Answer, GithubApi, GithubError};
use super::{BackendError, BackendResult, ObjectStore};
use names::{description, file_name, parse_description, prefix_code, rest_of, split_key};
use pacing::WriteBudget;
use raw_cache::RawCache;

pub use names::prefix_code as vault_code;

/// Files a gist lists before it truncates the list.
pub const FILES_PER_GIST: usize = 300;
/// Bytes of an object per gist file: their base64 (4/3 as long) stays under the
/// 10 MiB that GitHub serves from a raw URL.
pub const PART_BYTES: usize = 7 * 1024 * 1024;
/// A split object's manifest starts so: `:` is not base64, so no object's content
/// can be taken for one.
const MANIFEST: &str = "parts:v1:";
const PART_KEY: &str = "//part/";
/// The longest wait GitHub's rate limits are obeyed for (the primary limit resets
/// within the hour); beyond it, or after this many waits in a row, the request fails.
const MAX_WAIT: Duration = Duration::from_secs(65 * 60);
const MAX_WAITS: u32 = 5;
/// Decoded raw files kept for ranged reads of the same pack.
const RAW_CACHE_BYTES: usize = 48 * 1024 * 1024;

/// The time, and waiting: the real ones, or (tests) a fake clock that moves when
/// waited on.
pub trait Clock: Send + Sync {
    fn now(&self) -> SystemTime;
    fn sleep(&self, d: Duration);
}

struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
    fn sleep(&self, d: Duration) {
        std::thread::sleep(d)
    }
}

/// What `status` tells of the account's limits and this store's use of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GistUsage {
    /// Gists of this vault in the account, as last listed.
    pub gists: usize,
    /// GitHub's count of this hour's requests and its limit, from its last answer.
    pub used: Option<u64>,
    pub limit: Option<u64>,
    /// When GitHub's hourly window resets.
    pub reset: Option<SystemTime>,
    /// Content-creating requests this store made in the last hour.
    pub writes_last_hour: usize,
    /// Until when a rate limit holds this store back, while one does.
    pub waiting_until: Option<SystemTime>,
}

pub struct GistStore {
    api: GithubApi,
    token: Zeroizing<String>,
    state: Mutex<State>,
    clock: Arc<dyn Clock>,
    budget: Mutex<WriteBudget>,
    usage: Mutex<GistUsage>,
    /// Tests: runs just before a gist is made, to let a rival in at that moment.
    before_create: Option<Box<dyn Fn() + Send + Sync>>,
    /// GitHub took the token (see [`GistStore::check_once`]).
    checked: std::sync::OnceLock<()>,
}

impl std::fmt::Debug for GistStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GistStore")
            .field("api", &self.api.url())
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct State {
    /// The account's gists of this store's kind by id, as last listed.
    gists: BTreeMap<String, Gist>,
    /// The ETag of the first page of the account's gists, for a free 304.
    listing_etag: Option<String>,
    /// Whether that page was the whole listing.
    listing_whole: bool,
    /// Prefixes by their code, as keys and listings name them.
    prefixes: BTreeMap<String, String>,
    /// Groups this store writes: nobody else does, so what it knows of them is
    /// the truth and a key it does not know there does not exist.
    owned: BTreeSet<(String, String)>,
    raw: RawCache,
}

#[derive(Clone)]
struct Gist {
    code: String,
    group: String,
    index: u32,
    created: String,
    etag: Option<String>,
    /// The listing changed since: the gist may have too.
    check: bool,
    /// File name → file, once the gist itself was read.
    files: Option<BTreeMap<String, File>>,
}

#[derive(Clone)]
struct File {
    name: String,
    raw_url: String,
    /// The inline content, when GitHub did not cut it.
    inline: Option<Arc<str>>,
}

/// Where a key's file is, or would be.
struct Place {
    code: String,
    group: String,
    name: String,
}

fn backend_error(e: GithubError) -> BackendError {
    let temporary = e.is_temporary();
    let message = e.to_string();
    match e {
        GithubError::BadToken | GithubError::NotGithub { .. } => BackendError::Refused(message),
        GithubError::Refused { status: 404, .. } => BackendError::NotFound { key: message },
        GithubError::Refused { status, .. } if (400..500).contains(&status) && status != 429 => {
            BackendError::Refused(message)
        }
        _ => BackendError::Io {
            message: message.clone(),
            temporary,
            source: std::io::Error::other(message),
        },
    }
}

fn invalid_answer(what: &str) -> BackendError {
    BackendError::Invalid(format!("GitHub's answer to {what} is not a gist"))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl GistStore {
    pub fn new(api_url: &str, token: Zeroizing<String>) -> BackendResult<Self> {
        Ok(Self {
            api: GithubApi::new(api_url).map_err(backend_error)?,
            token,
            state: Mutex::new(State::default()),
            clock: Arc::new(SystemClock),
            budget: Mutex::new(WriteBudget::default()),
            usage: Mutex::new(GistUsage::default()),
            before_create: None,
            checked: std::sync::OnceLock::new(),
        })
    }

    /// Tests: `hook` runs just before each gist this store makes, so a test can let
    /// another device make the same gist at that very moment.
    #[doc(hidden)]
    pub fn before_create(mut self, hook: Box<dyn Fn() + Send + Sync>) -> Self {
        self.before_create = Some(hook);
        self
    }

    /// Keeps time and waits with `clock` (tests move a fake clock).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Until when GitHub's rate limit (or this store's own pacing) holds it back.
    pub fn waiting_until(&self) -> Option<SystemTime> {
        lock(&self.usage).waiting_until
    }

    /// The account's limits and this store's use of them, as last seen.
    pub fn usage(&self) -> GistUsage {
        let mut usage = lock(&self.usage).clone();
        let state = lock(&self.state);
        usage.gists = state
            .gists
            .values()
            .filter(|g| state.prefixes.contains_key(&g.code))
            .count();
        drop(state);
        usage.writes_last_hour = lock(&self.budget).last_hour(self.clock.now());
        usage
    }

    /// The account the token belongs to, refused when the token may not write gists
    /// (one request; a fine-grained token's permission is tried with a write).
    pub fn account(&self) -> BackendResult<String> {
        self.account_with(true)
    }

    /// Whether GitHub takes the token at all, before this store's first call: one
    /// read, so a bad, revoked or too narrow classic token, or a server that is not
    /// GitHub, is said at once, in those words, rather than as whatever the first
    /// call would fail with. A network that does not answer is not an error here (a
    /// mount starts offline); the check is made again at the next call.
    fn check_once(&self) -> BackendResult<()> {
        if self.checked.get().is_some() {
            return Ok(());
        }
        match self.account_with(false) {
            Ok(_) => {
                let _ = self.checked.set(());
                Ok(())
            }
            Err(e) if e.is_temporary() => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn account_with(&self, probe_write: bool) -> BackendResult<String> {
        let info = self
            .api
            .check_token_with(&self.token, probe_write)
            .map_err(backend_error)?;
        if !info.reaches_gists {
            return Err(BackendError::Refused(
                "the GitHub token may not write gists: give it the 'gist' scope (or, for a fine-grained token, Gists read and write)".into(),
            ));
        }
        Ok(info.account)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    fn wait(&self, d: Duration) {
        lock(&self.usage).waiting_until = Some(self.clock.now() + d);
        self.clock.sleep(d);
        lock(&self.usage).waiting_until = None;
    }

    /// One API call; a rate limit is waited out as GitHub says (retry-after, or the
    /// hour's reset), then the call is made again. Content-creating calls first wait
    /// for room in this store's own budget.
    fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
        etag: Option<&str>,
    ) -> BackendResult<Answer> {
        self.check_once()?;
        let creating = method != Method::GET;
        let mut waits = 0;
        loop {
            if creating {
                let pause = lock(&self.budget).wait_before_next(self.clock.now());
                if !pause.is_zero() {
                    tracing::info!("pacing writes to GitHub: waiting {} s", pause.as_secs());
                    self.wait(pause);
                }
                lock(&self.budget).record(self.clock.now());
            }
            match self.api.call(method.clone(), path, &self.token, body, etag) {
                Err(GithubError::RateLimited {
                    wait: Some(wait),
                    reset,
                }) if waits < MAX_WAITS && wait <= MAX_WAIT => {
                    waits += 1;
                    tracing::info!("GitHub's rate limit: waiting, it resets {reset}");
                    // A second more: GitHub's windows end on whole seconds.
                    self.wait(wait + Duration::from_secs(1));
                }
                Ok(answer) => {
                    self.note_limits(&answer);
                    return Ok(answer);
                }
                Err(e) => return Err(backend_error(e)),
            }
        }
    }

    fn note_limits(&self, answer: &Answer) {
        let mut usage = lock(&self.usage);
        if let Some(used) = answer.rate.used {
            usage.used = Some(used);
        }
        if let Some(limit) = answer.rate.limit {
            usage.limit = Some(limit);
        }
        if let Some(reset) = answer.rate.reset {
            usage.reset = Some(SystemTime::UNIX_EPOCH + Duration::from_secs(reset));
        }
    }

    fn learn_prefix(&self, prefix: &str) -> String {
        let code = prefix_code(prefix);
        self.state()
            .prefixes
            .entry(code.clone())
            .or_insert_with(|| prefix.to_owned());
        code
    }

    fn place(&self, key: &str) -> BackendResult<Place> {
        let parts = split_key(key)?;
        Ok(Place {
            code: self.learn_prefix(parts.prefix),
            group: parts.group.to_owned(),
            name: file_name(parts.rest),
        })
    }

    /// Every gist of the account of this store's kind (new ones included). A
    /// changed listing marks every gist to be looked at again (conditionally: a 304
    /// is free); an unchanged one of one page means no gist was made or edited
    /// (GitHub lists each gist with its time of change), so none needs a look.
    fn refresh_listing(&self, force: bool) -> BackendResult<()> {
        let first_etag = if force {
            None
        } else {
            self.state().listing_etag.clone()
        };
        let mut page = 1;
        let mut found = BTreeMap::new();
        let mut first_page_etag = None;
        loop {
            let path = format!("/gists?per_page=100&page={page}");
            let etag = if page == 1 {
                first_etag.as_deref()
            } else {
                None
            };
            let answer = self.call(Method::GET, &path, None, etag)?;
            if answer.status == 304 {
                let mut state = self.state();
                if !state.listing_whole {
                    state.gists.values_mut().for_each(|g| g.check = true);
                }
                return Ok(());
            }
            if page == 1 {
                first_page_etag = answer.etag.clone();
            }
            let list: Vec<serde_json::Value> =
                serde_json::from_str(&answer.body).map_err(|_| invalid_answer("a listing"))?;
            for g in &list {
                let field = |name: &str| g.get(name).and_then(|v| v.as_str());
                let (Some(id), Some(desc)) = (field("id"), field("description")) else {
                    continue;
                };
                if let Some((code, group, index)) = parse_description(desc) {
                    let created = field("created_at").unwrap_or_default().to_owned();
                    found.insert(id.to_owned(), (code, group, index, created));
                }
            }
            let more = answer
                .link
                .as_deref()
                .is_some_and(|l| l.contains("rel=\"next\""));
            if !more || list.is_empty() {
                break;
            }
            page += 1;
        }
        let mut state = self.state();
        state.listing_etag = first_page_etag;
        state.listing_whole = page == 1;
        state.gists.retain(|id, _| found.contains_key(id));
        state.gists.values_mut().for_each(|g| g.check = true);
        for (id, (code, group, index, created)) in found {
            state.gists.entry(id).or_insert(Gist {
                code,
                group,
                index,
                created,
                etag: None,
                check: true,
                files: None,
            });
        }
        Ok(())
    }

    /// Reads one gist again (a 304, free, keeps what was read before).
    fn refresh_gist(&self, id: &str) -> BackendResult<()> {
        let etag = {
            let state = self.state();
            let Some(g) = state.gists.get(id) else {
                return Ok(());
            };
            g.etag.clone()
        };
        let answer = match self.call(Method::GET, &format!("/gists/{id}"), None, etag.as_deref()) {
            Ok(a) => a,
            // Deleted since it was listed (its last file removed, by its device).
            Err(e) if e.is_not_found() => {
                self.state().gists.remove(id);
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        if answer.status == 304 {
            if let Some(g) = self.state().gists.get_mut(id) {
                g.check = false;
            }
            return Ok(());
        }
        self.take_gist(id, &answer.body, answer.etag)
    }

    /// Records a gist's JSON (from a read or a write).
    fn take_gist(&self, id: &str, body: &str, etag: Option<String>) -> BackendResult<()> {
        let json: serde_json::Value =
            serde_json::from_str(body).map_err(|_| invalid_answer("a gist"))?;
        if json.get("truncated").and_then(|v| v.as_bool()) == Some(true) {
            return Err(BackendError::Invalid(format!(
                "the gist {id} lists more than {FILES_PER_GIST} files"
            )));
        }
        let mut files = BTreeMap::new();
        if let Some(map) = json.get("files").and_then(|v| v.as_object()) {
            for (name, f) in map {
                let raw_url = f
                    .get("raw_url")
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_owned();
                let cut = f.get("truncated").and_then(|v| v.as_bool()) == Some(true);
                let inline = (!cut)
                    .then(|| f.get("content").and_then(|v| v.as_str()).map(Arc::from))
                    .flatten();
                files.insert(
                    name.clone(),
                    File {
                        name: name.clone(),
                        raw_url,
                        inline,
                    },
                );
            }
        }
        let mut state = self.state();
        if let Some(gist) = state.gists.get_mut(id) {
            gist.files = Some(files);
            gist.etag = etag;
            gist.check = false;
        }
        Ok(())
    }

    /// The gists of a group by index: of two gists made for one place at once, the
    /// older (then the smaller id) is the one every device uses.
    fn group_ids(&self, code: &str, group: &str) -> Vec<String> {
        let state = self.state();
        let mut winners: BTreeMap<u32, (&str, &str)> = BTreeMap::new();
        for (id, g) in &state.gists {
            if g.code != code || g.group != group {
                continue;
            }
            let candidate = (g.created.as_str(), id.as_str());
            winners
                .entry(g.index)
                .and_modify(|w| {
                    if candidate < *w {
                        *w = candidate
                    }
                })
                .or_insert(candidate);
        }
        winners.into_values().map(|(_, id)| id.to_owned()).collect()
    }

    fn owned(&self, p: &Place) -> bool {
        self.state()
            .owned
            .contains(&(p.code.clone(), p.group.clone()))
    }

    fn file_in(&self, id: &str, name: &str) -> Option<File> {
        self.state()
            .gists
            .get(id)
            .and_then(|g| g.files.as_ref())
            .and_then(|f| f.get(name))
            .cloned()
    }

    fn look_in_group(&self, p: &Place, refresh: bool) -> BackendResult<Option<(String, File)>> {
        for id in self.group_ids(&p.code, &p.group) {
            if refresh {
                self.refresh_gist(&id)?;
            }
            if let Some(f) = self.file_in(&id, &p.name) {
                return Ok(Some((id, f)));
            }
        }
        Ok(None)
    }

    /// Where a key's file is: known already and still there (asked again, a free
    /// 304 when unchanged, unless `trust_own` and this store writes the group), else
    /// in the group's gists as they are now, else in a gist the account's listing
    /// shows anew. A key this store never wrote in a group it writes does not exist:
    /// nobody else writes there. Reads do not trust their own picture of a gist, so
    /// a change made behind this store's back (the provider's, or an attacker's) is
    /// read as it is, for the engine to judge.
    fn find(&self, p: &Place, trust_own: bool) -> BackendResult<Option<(String, File)>> {
        let owned = self.owned(p);
        if let Some((id, _)) = self.look_in_group(p, false)? {
            if !(trust_own && owned) {
                self.refresh_gist(&id)?;
            }
            if let Some(f) = self.file_in(&id, &p.name) {
                return Ok(Some((id, f)));
            }
        }
        if owned {
            return Ok(None);
        }
        if let Some(found) = self.look_in_group(p, true)? {
            return Ok(Some(found));
        }
        self.refresh_listing(false)?;
        self.look_in_group(p, true)
    }

    /// Takes a group as this store's to write: what GitHub holds of it is read once,
    /// after which this store's own picture is the truth.
    fn own(&self, p: &Place) -> BackendResult<()> {
        if self.owned(p) {
            return Ok(());
        }
        self.refresh_listing(false)?;
        for id in self.group_ids(&p.code, &p.group) {
            self.refresh_gist(&id)?;
        }
        self.state().owned.insert((p.code.clone(), p.group.clone()));
        Ok(())
    }

    /// A file's text: inline when GitHub sent it whole, else from its raw URL (a
    /// raw URL names one revision, so what was fetched from it stays true).
    fn bytes(&self, file: &File) -> BackendResult<Arc<Vec<u8>>> {
        if let Some(bytes) = self.state().raw.get(&file.raw_url) {
            return Ok(bytes);
        }
        let decoded = match &file.inline {
            Some(text) => decode(file, text)?,
            None => {
                let text = Zeroizing::new(self.api.raw(&file.raw_url).map_err(backend_error)?);
                decode(file, &text)?
            }
        };
        let bytes = Arc::new(decoded);
        self.state().raw.put(&file.raw_url, Arc::clone(&bytes));
        Ok(bytes)
    }

    /// The object at `key`, or, for a split one, bytes `range` of it fetching only
    /// the parts that hold them.
    fn read(&self, key: &str, range: Option<Range<u64>>) -> BackendResult<Vec<u8>> {
        let place = self.place(key)?;
        let Some((_, file)) = self.find(&place, false)? else {
            return Err(BackendError::NotFound {
                key: key.to_owned(),
            });
        };
        let Some((parts, len)) = manifest_of(&file) else {
            let all = self.bytes(&file)?;
            return Ok(match range {
                Some(r) => slice(&all, r).to_vec(),
                None => all.to_vec(),
            });
        };
        let want = range.unwrap_or(0..len);
        let (start, end) = (want.start.min(len), want.end.min(len));
        let mut out = Vec::new();
        for i in 0..parts {
            let from = i * PART_BYTES as u64;
            let to = (from + PART_BYTES as u64).min(len);
            if to <= start || from >= end {
                continue;
            }
            let part_key = format!("{key}{PART_KEY}{i:05}");
            let Some((_, part)) = self.find(&self.place(&part_key)?, false)? else {
                return Err(BackendError::Invalid(format!(
                    "part {i} of {key} is missing from the gist"
                )));
            };
            let bytes = self.bytes(&part)?;
            let lo = start.saturating_sub(from);
            let hi = end.min(to) - from;
            out.extend_from_slice(slice(&bytes, lo..hi));
        }
        Ok(out)
    }

    fn write(&self, key: &str, data: &[u8], only_new: bool) -> BackendResult<()> {
        let place = self.place(key)?;
        if !only_new {
            self.own(&place)?;
        }
        let existing = self.find(&place, true)?;
        if only_new && existing.is_some() {
            return Err(BackendError::AlreadyExists {
                key: key.to_owned(),
            });
        }
        let old_parts = existing
            .as_ref()
            .and_then(|(_, f)| manifest_of(f))
            .map_or(0, |(n, _)| n);
        if data.len() <= PART_BYTES {
            self.write_text(&place, &B64.encode(data), only_new)
                .map_err(|e| already(e, key))?;
        } else {
            let chunks: Vec<&[u8]> = data.chunks(PART_BYTES).collect();
            for (i, chunk) in chunks.iter().enumerate() {
                let part = self.place(&format!("{key}{PART_KEY}{i:05}"))?;
                self.write_text(&part, &B64.encode(chunk), false)?;
            }
            let manifest = format!("{MANIFEST}{}:{}", chunks.len(), data.len());
            self.write_text(&place, &manifest, only_new)
                .map_err(|e| already(e, key))?;
        }
        // Parts the object no longer has (it was split before, into more).
        let kept = if data.len() > PART_BYTES {
            data.len().div_ceil(PART_BYTES) as u64
        } else {
            0
        };
        for i in kept..old_parts {
            self.remove(&format!("{key}{PART_KEY}{i:05}"))?;
        }
        Ok(())
    }

    /// Writes one file into its group's gists: into the gist that holds it, else
    /// the last one with room, else a new gist. Returns `AlreadyExists` (with an
    /// empty key) when a device that made the same new gist at the same moment won.
    fn write_text(&self, p: &Place, text: &str, only_new: bool) -> BackendResult<()> {
        let content = serde_json::json!({ "files": { p.name.clone(): { "content": text } } });
        let found = self.find(p, true)?;
        let target = match found {
            Some((id, _)) => Some(id),
            None => {
                let ids = self.group_ids(&p.code, &p.group);
                let state = self.state();
                ids.into_iter().rev().find(|id| {
                    state
                        .gists
                        .get(id)
                        .and_then(|g| g.files.as_ref())
                        .is_some_and(|f| f.len() < FILES_PER_GIST)
                })
            }
        };
        if let Some(id) = target {
            let answer = self.call(Method::PATCH, &format!("/gists/{id}"), Some(&content), None)?;
            return self.take_gist(&id, &answer.body, None);
        }
        let index = {
            let state = self.state();
            state
                .gists
                .values()
                .filter(|g| g.code == p.code && g.group == p.group)
                .map(|g| g.index + 1)
                .max()
                .unwrap_or(0)
        };
        if let Some(hook) = &self.before_create {
            hook();
        }
        let mut body = content;
        body["description"] = serde_json::Value::String(description(&p.code, &p.group, index));
        body["public"] = serde_json::Value::Bool(false);
        let answer = self.call(Method::POST, "/gists", Some(&body), None)?;
        let json: serde_json::Value =
            serde_json::from_str(&answer.body).map_err(|_| invalid_answer("a new gist"))?;
        let field = |name: &str| json.get(name).and_then(|v| v.as_str()).map(str::to_owned);
        let id = field("id").ok_or_else(|| invalid_answer("a new gist"))?;
        self.state().gists.insert(
            id.clone(),
            Gist {
                code: p.code.clone(),
                group: p.group.clone(),
                index,
                created: field("created_at").unwrap_or_default(),
                etag: None,
                check: false,
                files: None,
            },
        );
        self.take_gist(&id, &answer.body, None)?;
        self.settle_new_gist(p, &id, index, text, only_new)
    }

    /// After making a gist: another device may have made one for the same place at
    /// the same moment (there is no create-only write). The listing decides; a loser
    /// deletes its gist and, for a create-only write, reports the key as taken.
    fn settle_new_gist(
        &self,
        p: &Place,
        id: &str,
        index: u32,
        text: &str,
        only_new: bool,
    ) -> BackendResult<()> {
        self.refresh_listing(true)?;
        // Ours yields to any gist of the same place made no later than ours: one
        // made earlier may already have settled as the only one (it saw none), and
        // two made in the same second both yield, so a device can never win after
        // another was told it had.
        let rival = {
            let state = self.state();
            let mine = state.gists.get(id).map(|g| g.created.clone());
            state
                .gists
                .iter()
                .filter(|(other, g)| {
                    other.as_str() != id
                        && g.code == p.code
                        && g.group == p.group
                        && g.index == index
                        && mine.as_ref().is_none_or(|m| g.created <= *m)
                })
                .map(|(other, _)| other.clone())
                .min()
        };
        match rival {
            Some(w) => {
                tracing::info!(
                    "another device made a gist for the same group at once; its gist is kept"
                );
                self.call(Method::DELETE, &format!("/gists/{id}"), None, None)?;
                self.state().gists.remove(id);
                if only_new {
                    return Err(BackendError::AlreadyExists { key: String::new() });
                }
                self.refresh_gist(&w)?;
                self.write_text(p, text, only_new)
            }
            // Alone (or a rival GitHub's listing does not show yet): ours stands.
            None => Ok(()),
        }
    }

    fn keys(&self, prefix: &str) -> BackendResult<Vec<String>> {
        if let Some((first, _)) = prefix.split_once('/') {
            self.learn_prefix(first);
        }
        self.refresh_listing(false)?;
        let groups: Vec<(String, String, String)> = {
            let state = self.state();
            let mut g: Vec<(String, String, String)> = state
                .gists
                .values()
                .filter_map(|g| {
                    let p = state.prefixes.get(&g.code)?;
                    Some((g.code.clone(), g.group.clone(), format!("{p}/{}/", g.group)))
                })
                .collect();
            g.sort();
            g.dedup();
            g
        };
        let mut keys = Vec::new();
        for (code, group, dir) in groups {
            if !(dir.starts_with(prefix) || prefix.starts_with(&dir)) {
                continue;
            }
            let owned = self.state().owned.contains(&(code.clone(), group.clone()));
            for id in self.group_ids(&code, &group) {
                let look = self
                    .state()
                    .gists
                    .get(&id)
                    .is_some_and(|g| g.check || g.files.is_none());
                if !owned && look {
                    self.refresh_gist(&id)?;
                }
                let state = self.state();
                if let Some(files) = state.gists.get(&id).and_then(|g| g.files.as_ref()) {
                    keys.extend(
                        files
                            .keys()
                            .map(|name| format!("{dir}{}", rest_of(name)))
                            .filter(|k| k.starts_with(prefix) && !k.contains(PART_KEY)),
                    );
                }
            }
        }
        keys.sort();
        keys.dedup();
        Ok(keys)
    }

    /// Removes one gist file (the whole gist when it is the last file).
    fn remove(&self, key: &str) -> BackendResult<()> {
        let place = self.place(key)?;
        self.own(&place)?;
        let Some((id, file)) = self.find(&place, true)? else {
            return Ok(());
        };
        let alone = self
            .state()
            .gists
            .get(&id)
            .and_then(|g| g.files.as_ref())
            .is_some_and(|f| f.len() == 1);
        if alone {
            // GitHub refuses an edit that leaves a gist without files.
            self.call(Method::DELETE, &format!("/gists/{id}"), None, None)?;
            self.state().gists.remove(&id);
            return Ok(());
        }
        let body = serde_json::json!({ "files": { file.name: serde_json::Value::Null } });
        let answer = self.call(Method::PATCH, &format!("/gists/{id}"), Some(&body), None)?;
        self.take_gist(&id, &answer.body, None)
    }
}

/// A lost race on a create-only write names the key the caller asked for.
fn already(e: BackendError, key: &str) -> BackendError {
    match e {
        BackendError::AlreadyExists { .. } => BackendError::AlreadyExists {
            key: key.to_owned(),
        },
        other => other,
    }
}

fn decode(file: &File, text: &str) -> BackendResult<Vec<u8>> {
    B64.decode(text.trim())
        .map_err(|_| BackendError::Invalid(format!("the gist file {} is not base64", file.name)))
}

/// `(parts, length)` when the file is a split object's manifest. Only a small file
/// can be one, so a big one is never fetched to find out.
fn manifest_of(file: &File) -> Option<(u64, u64)> {
    let rest = file.inline.as_deref()?.trim().strip_prefix(MANIFEST)?;
    let (parts, len) = rest.split_once(':')?;
    Some((parts.parse().ok()?, len.parse().ok()?))
}

impl ObjectStore for GistStore {
    fn put(&self, key: &str, data: &[u8]) -> BackendResult<()> {
        self.write(key, data, false)
    }

    fn put_if_absent(&self, key: &str, data: &[u8]) -> BackendResult<()> {
        self.write(key, data, true)
    }

    fn get(&self, key: &str) -> BackendResult<Vec<u8>> {
        self.read(key, None)
    }

    fn get_range(&self, key: &str, range: Range<u64>) -> BackendResult<Vec<u8>> {
        self.read(key, Some(range))
    }

    fn list(&self, prefix: &str, start_after: Option<&str>) -> BackendResult<Vec<String>> {
        Ok(self
            .keys(prefix)?
            .into_iter()
            .filter(|k| start_after.is_none_or(|s| k.as_str() > s))
            .collect())
    }

    fn list_dirs(&self, prefix: &str) -> BackendResult<Vec<String>> {
        Ok(super::dirs_below(prefix, self.keys(prefix)?))
    }

    fn delete(&self, key: &str) -> BackendResult<()> {
        // The manifest first: a reader then finds nothing, never a manifest whose
        // parts are gone.
        let place = self.place(key)?;
        self.own(&place)?;
        let parts = self
            .find(&place, true)?
            .and_then(|(_, f)| manifest_of(&f))
            .map_or(0, |(n, _)| n);
        self.remove(key)?;
        for i in 0..parts {
            self.remove(&format!("{key}{PART_KEY}{i:05}"))?;
        }
        Ok(())
    }

    fn describe(&self) -> String {
        describe_api(self.api.url())
    }

    fn provider_status(&self, look: bool) -> Option<super::ProviderStatus> {
        let mut account = None;
        if look {
            account = self.account().ok();
            let _ = self.refresh_listing(false);
        }
        let usage = self.usage();
        let unix = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .ok()
                .map(|d| d.as_secs())
        };
        Some(super::ProviderStatus {
            provider: Some("GitHub".into()),
            account,
            containers: Some(usage.gists),
            requests_used: usage.used,
            requests_limit: usage.limit,
            resets_at: usage.reset.and_then(unix),
            writes_last_hour: Some(usage.writes_last_hour),
            waiting_until: usage.waiting_until.and_then(unix),
            ..super::ProviderStatus::default()
        })
    }
}

/// How `status` names a Gist vault.
pub fn describe_api(api_url: &str) -> String {
    if super::github::is_github_com(api_url) {
        "secret gists of GitHub".into()
    } else {
        format!("secret gists of the GitHub API at {api_url}")
    }
}

fn slice(bytes: &[u8], range: Range<u64>) -> &[u8] {
    let start = usize::try_from(range.start)
        .unwrap_or(usize::MAX)
        .min(bytes.len());
    let end = usize::try_from(range.end)
        .unwrap_or(usize::MAX)
        .min(bytes.len());
    &bytes[start..end.max(start)]
}
