//! GitHub Gist as an object store (work in progress for issue 13: not yet offered
//! by `setup`). A gist is a set of text files by name, so:
//!
//! - keys are grouped by their first two parts (`ghostie/global`,
//!   `ghostie/{device_id}`): each group lives in gists of its own, written by that
//!   group's device alone (one writer per gist, DESIGN §11), found by description
//!   `ghostie-fs v1 {vault tag} {group} {n}`;
//! - a key's file name is the rest of the key with `/` as `~` (a name cannot hold
//!   `/`), its content the object in base64 (a gist holds text only);
//! - a gist lists at most 300 files, so a group continues in gist n+1 when gist n
//!   has 300;
//! - content over 1 MB comes back truncated inline: such a file is read whole from
//!   its raw URL, never from the cut; raw URLs serve up to 10 MB, so an object over
//!   [`PART_BYTES`] is stored as parts (files `NAME~~part~00000`, …, keys no real
//!   key can be: `/` never doubles in one) named by a small manifest under its own
//!   name, written last so no reader sees a manifest without its parts;
//! - a read of a gist sends its ETag: an unchanged gist answers 304, which GitHub
//!   does not count against the hourly limit.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use reqwest::Method;
use zeroize::Zeroizing;

use super::github::{GithubApi, GithubError};
use super::{BackendError, BackendResult, ObjectStore};

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

/// How the store waits out a rate limit: sleeping, or (tests) moving a fake clock.
pub type Sleeper = Box<dyn Fn(Duration) + Send + Sync>;
const DESCRIPTION: &str = "ghostie-fs v1";

pub struct GistStore {
    api: GithubApi,
    token: Zeroizing<String>,
    /// A random tag of the vault, in every one of its gists' descriptions.
    tag: String,
    state: Mutex<State>,
    sleeper: Sleeper,
    /// Until when a rate limit holds this store back, for `status`.
    waiting_until: Mutex<Option<SystemTime>>,
}

impl std::fmt::Debug for GistStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GistStore")
            .field("api", &self.api.url())
            .field("tag", &self.tag)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct State {
    /// The vault's gists by id, as last read.
    gists: BTreeMap<String, Gist>,
    /// The ETag of the first page of the account's gists, for a free 304.
    listing_etag: Option<String>,
}

#[derive(Clone)]
struct Gist {
    group: String,
    index: u32,
    etag: Option<String>,
    /// Key → file, once the gist itself was read.
    files: Option<BTreeMap<String, File>>,
}

#[derive(Clone)]
struct File {
    name: String,
    raw_url: String,
    /// The inline content, when GitHub did not cut it.
    inline: Option<String>,
}

fn group_of(key: &str) -> BackendResult<(&str, &str)> {
    let mut parts = key.splitn(3, '/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(a), Some(b), Some(rest)) if !a.is_empty() && !b.is_empty() && !rest.is_empty() => {
            Ok((&key[..a.len() + 1 + b.len()], rest))
        }
        _ => Err(BackendError::Invalid(format!(
            "the key {key} has no group for a gist"
        ))),
    }
}

fn file_name(rest: &str) -> String {
    rest.replace('/', "~")
}

fn key_of(group: &str, name: &str) -> String {
    format!("{group}/{}", name.replace('~', "/"))
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

impl GistStore {
    pub fn new(api_url: &str, token: Zeroizing<String>, tag: &str) -> BackendResult<Self> {
        Ok(Self {
            api: GithubApi::new(api_url).map_err(backend_error)?,
            token,
            tag: tag.to_owned(),
            state: Mutex::new(State::default()),
            sleeper: Box::new(std::thread::sleep),
            waiting_until: Mutex::new(None),
        })
    }

    /// Waits out rate limits with `sleeper` instead of sleeping (tests move a fake
    /// clock).
    pub fn with_sleeper(mut self, sleeper: Sleeper) -> Self {
        self.sleeper = sleeper;
        self
    }

    /// Until when GitHub's rate limit holds this store back, while it does.
    pub fn waiting_until(&self) -> Option<SystemTime> {
        *self.waiting_until.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn description(&self, group: &str, index: u32) -> String {
        format!("{DESCRIPTION} {} {group} {index}", self.tag)
    }

    fn parse_description(&self, text: &str) -> Option<(String, u32)> {
        let rest = text.strip_prefix(DESCRIPTION)?.strip_prefix(' ')?;
        let rest = rest.strip_prefix(self.tag.as_str())?.strip_prefix(' ')?;
        let (group, index) = rest.rsplit_once(' ')?;
        Some((group.to_owned(), index.parse().ok()?))
    }

    /// One API call; a rate limit is waited out as GitHub says (retry-after, or the
    /// hour's reset), then the call is made again.
    fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
        etag: Option<&str>,
    ) -> BackendResult<super::github::Answer> {
        let mut waits = 0;
        loop {
            match self.api.call(method.clone(), path, &self.token, body, etag) {
                Err(GithubError::RateLimited {
                    wait: Some(wait),
                    reset,
                }) if waits < MAX_WAITS && wait <= MAX_WAIT => {
                    waits += 1;
                    // A second more: GitHub's windows end on whole seconds.
                    let wait = wait + Duration::from_secs(1);
                    tracing::info!("GitHub's rate limit: waiting {reset}");
                    self.set_waiting(Some(SystemTime::now() + wait));
                    (self.sleeper)(wait);
                    self.set_waiting(None);
                }
                other => return other.map_err(backend_error),
            }
        }
    }

    fn set_waiting(&self, until: Option<SystemTime>) {
        *self.waiting_until.lock().unwrap_or_else(|p| p.into_inner()) = until;
    }

    /// Every gist of the account that belongs to this vault (new ones included).
    fn refresh_listing(&self) -> BackendResult<()> {
        let first_etag = self.state().listing_etag.clone();
        let mut page = 1;
        let mut found = BTreeMap::new();
        loop {
            let path = format!("/gists?per_page=100&page={page}");
            let etag = if page == 1 {
                first_etag.as_deref()
            } else {
                None
            };
            let answer = self.call(Method::GET, &path, None, etag)?;
            if answer.status == 304 {
                return Ok(());
            }
            if page == 1 {
                self.state().listing_etag = answer.etag.clone();
            }
            let list: Vec<serde_json::Value> =
                serde_json::from_str(&answer.body).map_err(|_| invalid_answer("a listing"))?;
            for g in &list {
                let (Some(id), Some(desc)) = (
                    g.get("id").and_then(|v| v.as_str()),
                    g.get("description").and_then(|v| v.as_str()),
                ) else {
                    continue;
                };
                if let Some((group, index)) = self.parse_description(desc) {
                    found.insert(id.to_owned(), (group, index));
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
        state.gists.retain(|id, _| found.contains_key(id));
        for (id, (group, index)) in found {
            state.gists.entry(id).or_insert(Gist {
                group,
                index,
                etag: None,
                files: None,
            });
        }
        Ok(())
    }

    /// Reads one gist (a 304 keeps what was read before).
    fn refresh_gist(&self, id: &str) -> BackendResult<()> {
        let etag = self.state().gists.get(id).and_then(|g| g.etag.clone());
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
        let mut state = self.state();
        let Some(gist) = state.gists.get_mut(id) else {
            return Ok(());
        };
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
                    .then(|| f.get("content").and_then(|v| v.as_str()).map(str::to_owned))
                    .flatten();
                files.insert(
                    key_of(&gist.group, name),
                    File {
                        name: name.clone(),
                        raw_url,
                        inline,
                    },
                );
            }
        }
        gist.files = Some(files);
        gist.etag = etag;
        Ok(())
    }

    /// The ids of `group`'s gists, by index, each read (conditionally).
    fn group_gists(&self, group: &str) -> BackendResult<Vec<String>> {
        let ids: Vec<(u32, String)> = self
            .state()
            .gists
            .iter()
            .filter(|(_, g)| g.group == group)
            .map(|(id, g)| (g.index, id.clone()))
            .collect();
        let mut ids = ids;
        ids.sort();
        for (_, id) in &ids {
            self.refresh_gist(id)?;
        }
        Ok(ids.into_iter().map(|(_, id)| id).collect())
    }

    /// Where `key` is: its gist and file, looking again at the account when unknown.
    fn find(&self, key: &str) -> BackendResult<Option<(String, File)>> {
        let (group, _) = group_of(key)?;
        for attempt in 0..2 {
            if attempt == 1 {
                self.refresh_listing()?;
            }
            for id in self.group_gists(group)? {
                let state = self.state();
                let file = state
                    .gists
                    .get(&id)
                    .and_then(|g| g.files.as_ref())
                    .and_then(|f| f.get(key))
                    .cloned();
                if let Some(f) = file {
                    return Ok(Some((id, f)));
                }
            }
        }
        Ok(None)
    }

    fn text(&self, file: &File) -> BackendResult<Zeroizing<String>> {
        Ok(match &file.inline {
            Some(t) => Zeroizing::new(t.clone()),
            None => Zeroizing::new(self.api.raw(&file.raw_url).map_err(backend_error)?),
        })
    }

    fn decode(file: &File, text: &str) -> BackendResult<Vec<u8>> {
        B64.decode(text.trim()).map_err(|_| {
            BackendError::Invalid(format!("the gist file {} is not base64", file.name))
        })
    }

    /// The object at `key`, or, for a split one, bytes `range` of it fetching only
    /// the parts that hold them.
    fn read(&self, key: &str, range: Option<Range<u64>>) -> BackendResult<Vec<u8>> {
        let Some((_, file)) = self.find(key)? else {
            return Err(BackendError::NotFound {
                key: key.to_owned(),
            });
        };
        let text = self.text(&file)?;
        let Some((parts, len)) = parse_manifest(&text) else {
            let all = Self::decode(&file, &text)?;
            return Ok(match range {
                Some(r) => slice(&all, r).to_vec(),
                None => all,
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
            let Some((_, part)) = self.find(&part_key)? else {
                return Err(BackendError::Invalid(format!(
                    "part {i} of {key} is missing from the gist"
                )));
            };
            let bytes = Self::decode(&part, &self.text(&part)?)?;
            let lo = start.saturating_sub(from) as usize;
            let hi = (end.min(to) - from) as usize;
            out.extend_from_slice(slice(&bytes, lo as u64..hi as u64));
        }
        Ok(out)
    }

    fn write(&self, key: &str, data: &[u8], only_new: bool) -> BackendResult<()> {
        if only_new && self.find(key)?.is_some() {
            return Err(BackendError::AlreadyExists {
                key: key.to_owned(),
            });
        }
        let old_parts = self.parts_of(key)?;
        if data.len() <= PART_BYTES {
            self.write_text(key, &B64.encode(data), only_new)?;
        } else {
            let chunks: Vec<&[u8]> = data.chunks(PART_BYTES).collect();
            for (i, chunk) in chunks.iter().enumerate() {
                self.write_text(&format!("{key}{PART_KEY}{i:05}"), &B64.encode(chunk), false)?;
            }
            let manifest = format!("{MANIFEST}{}:{}", chunks.len(), data.len());
            self.write_text(key, &manifest, only_new)?;
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

    /// How many parts the object at `key` is split into now (0: not split, or none).
    fn parts_of(&self, key: &str) -> BackendResult<u64> {
        let Some((_, file)) = self.find(key)? else {
            return Ok(0);
        };
        // Only a small file can be a manifest; a big one is not read for this.
        if file
            .inline
            .as_deref()
            .is_some_and(|t| t.starts_with(MANIFEST))
        {
            return Ok(parse_manifest(&self.text(&file)?).map_or(0, |(n, _)| n));
        }
        Ok(0)
    }

    fn write_text(&self, key: &str, text: &str, only_new: bool) -> BackendResult<()> {
        let (group, rest) = group_of(key)?;
        let name = file_name(rest);
        let found = self.find(key)?;
        if found.is_some() && only_new {
            return Err(BackendError::AlreadyExists {
                key: key.to_owned(),
            });
        }
        let content = serde_json::json!({ "files": { name.clone(): { "content": text } } });
        let target = match found {
            Some((id, _)) => Some(id),
            None => {
                let ids = self.group_gists(group)?;
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
        match target {
            Some(id) => {
                let answer =
                    self.call(Method::PATCH, &format!("/gists/{id}"), Some(&content), None)?;
                self.take_gist(&id, &answer.body, None)
            }
            None => {
                let index = self
                    .state()
                    .gists
                    .values()
                    .filter(|g| g.group == group)
                    .map(|g| g.index + 1)
                    .max()
                    .unwrap_or(0);
                let mut body = content;
                body["description"] = serde_json::Value::String(self.description(group, index));
                body["public"] = serde_json::Value::Bool(false);
                let answer = self.call(Method::POST, "/gists", Some(&body), None)?;
                let json: serde_json::Value =
                    serde_json::from_str(&answer.body).map_err(|_| invalid_answer("a new gist"))?;
                let id = json
                    .get("id")
                    .and_then(|v| v.as_str())
                    .ok_or_else(|| invalid_answer("a new gist"))?
                    .to_owned();
                self.state().gists.insert(
                    id.clone(),
                    Gist {
                        group: group.to_owned(),
                        index,
                        etag: None,
                        files: None,
                    },
                );
                self.take_gist(&id, &answer.body, None)
            }
        }
    }

    fn keys(&self, prefix: &str) -> BackendResult<Vec<String>> {
        self.refresh_listing()?;
        let groups: Vec<String> = {
            let state = self.state();
            let mut g: Vec<String> = state.gists.values().map(|g| g.group.clone()).collect();
            g.sort();
            g.dedup();
            g
        };
        let mut keys = Vec::new();
        for group in groups {
            let g = format!("{group}/");
            if !(g.starts_with(prefix) || prefix.starts_with(&g)) {
                continue;
            }
            for id in self.group_gists(&group)? {
                let state = self.state();
                if let Some(files) = state.gists.get(&id).and_then(|g| g.files.as_ref()) {
                    keys.extend(
                        files
                            .keys()
                            .filter(|k| k.starts_with(prefix) && !k.contains(PART_KEY))
                            .cloned(),
                    );
                }
            }
        }
        keys.sort();
        keys.dedup();
        Ok(keys)
    }
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
        let mut dirs: Vec<String> = self
            .keys(prefix)?
            .into_iter()
            .filter_map(|k| {
                let rest = k.strip_prefix(prefix)?;
                let (dir, _) = rest.split_once('/')?;
                Some(format!("{prefix}{dir}/"))
            })
            .collect();
        dirs.dedup();
        Ok(dirs)
    }

    fn delete(&self, key: &str) -> BackendResult<()> {
        // The manifest first: a reader then finds nothing, never a manifest whose
        // parts are gone.
        let parts = self.parts_of(key)?;
        self.remove(key)?;
        for i in 0..parts {
            self.remove(&format!("{key}{PART_KEY}{i:05}"))?;
        }
        Ok(())
    }

    fn describe(&self) -> String {
        format!("gist (GitHub at {})", self.api.url())
    }
}

impl GistStore {
    /// Removes one gist file (the whole gist when it is the last file).
    fn remove(&self, key: &str) -> BackendResult<()> {
        let Some((id, file)) = self.find(key)? else {
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

/// `(parts, length)` of a split object's manifest.
fn parse_manifest(text: &str) -> Option<(u64, u64)> {
    let rest = text.trim().strip_prefix(MANIFEST)?;
    let (parts, len) = rest.split_once(':')?;
    Some((parts.parse().ok()?, len.parse().ok()?))
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
