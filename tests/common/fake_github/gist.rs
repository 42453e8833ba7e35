//! The Gist API of the fake GitHub: what GitHub keeps of each gist, and the
//! endpoints that read and write it, with GitHub's documented limits.
//!
//! A gist is a list of revisions, each a full set of files by name; a revision is
//! never changed or dropped once made, and only deleting the whole gist removes the
//! history (GitHub keeps every revision, readable by anyone who knows the gist's
//! id). Files are kept whole and shared between revisions (`Arc<str>`); what is
//! cut is only what GitHub cuts when showing them:
//! - a file's inline `content` at 1 MiB (its `truncated`), and a gist's file list
//!   at 300 files, the first by name (the gist's `truncated`);
//! - `raw_url` serves a file whole up to 10 MiB, to anyone and without a token,
//!   and refuses beyond (GitHub: "you'll need to clone the gist"). It ignores
//!   `Range`, which GitHub does not document for it.
//!
//! Secret gists are unlisted, not private: `GET /gists/{id}`, its revisions and
//! the raw URLs answer anyone who has the id, as GitHub's do. Only listing hides a
//! secret gist from everyone but its owner, and only the owner may change it.
//!
//! Permission, secondary limits and the refusal of conditional writes are checked
//! before these handlers, in `State::gist_write`; `ETag`s and 304s in
//! `State::conditional`.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use super::http::{Head, Response};
use super::json::Json;
use super::GithubReply;
use super::{iso_time, parse_iso_time, user_json, Call, Kind, Token, DOCS_GISTS};

/// GET shows at most this many files of a gist.
const LISTED_FILES: usize = 300;
/// A file's inline `content` is cut past this many bytes.
const INLINE_BYTES: usize = 1024 * 1024;
/// raw_url serves files up to this many bytes; larger ones only through git.
const RAW_BYTES: usize = 10 * 1024 * 1024;
const PER_PAGE_DEFAULT: usize = 30;
const PER_PAGE_MAX: usize = 100;

const DOCS_CREATE: &str = "https://docs.github.com/rest/gists/gists#create-a-gist";
const DOCS_UPDATE: &str = "https://docs.github.com/rest/gists/gists#update-a-gist";
const DOCS_DELETE: &str = "https://docs.github.com/rest/gists/gists#delete-a-gist";
const DOCS_GET: &str = "https://docs.github.com/rest/gists/gists#get-a-gist";
const DOCS_LIST: &str =
    "https://docs.github.com/rest/gists/gists#list-gists-for-the-authenticated-user";

/// One gist as GitHub holds it, for tests that check what GitHub can see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredGist {
    pub id: String,
    /// The owner's login.
    pub owner: String,
    pub description: Option<String>,
    /// Every description the gist has had, oldest first, the current one last:
    /// a test of what GitHub sees should not miss one that was edited away.
    pub descriptions: Vec<String>,
    pub public: bool,
    /// Every revision's full files (name, content), oldest revision first.
    pub revisions: Vec<Vec<(String, String)>>,
}

type Files = BTreeMap<String, Arc<str>>;

struct Revision {
    version: String,
    committed_at: u64,
    files: Files,
}

struct Gist {
    id: String,
    owner: String,
    owner_id: u64,
    public: bool,
    description: Option<String>,
    descriptions: Vec<String>,
    created_at: u64,
    updated_at: u64,
    /// Where the gist's creation and its latest change fall in the store's
    /// sequence: the clock's seconds cannot order requests made in one second.
    created: u64,
    changed: u64,
    /// Oldest first; never empty.
    revisions: Vec<Revision>,
}

impl Gist {
    fn latest(&self) -> &Revision {
        self.revisions.last().expect("a gist has a revision")
    }
}

#[derive(Default)]
pub(super) struct Gists {
    by_id: HashMap<String, Gist>,
    /// Feeds ids, versions and the order of changes.
    sequence: u64,
}

impl Gists {
    /// `GET /gists`: the caller's own gists, secret ones included, or every
    /// public gist for an anonymous caller; newest change first, paged. Listing
    /// needs no scope from a classic token and no permission from a fine-grained
    /// one (GitHub's documentation), so it tells nothing about whether a token may
    /// write gists.
    pub(super) fn list(&self, call: &Call, base: &str) -> Response {
        let query = query_pairs(&call.head.query);
        let number = |key: &str| {
            query
                .iter()
                .find(|(k, _)| k == key)
                .and_then(|(_, v)| v.parse::<usize>().ok())
                .filter(|n| *n > 0)
        };
        // GitHub takes a per_page past the maximum as the maximum.
        let per_page = number("per_page").map_or(PER_PAGE_DEFAULT, |n| n.min(PER_PAGE_MAX));
        let page = number("page").unwrap_or(1);
        let since = match query.iter().find(|(k, _)| k == "since") {
            None => None,
            Some((_, v)) => match parse_iso_time(v) {
                Some(t) => Some(t),
                None => return validation_failed("since", "invalid", DOCS_LIST),
            },
        };
        let mut shown: Vec<&Gist> = self
            .by_id
            .values()
            .filter(|g| match call.who {
                Some(t) => g.owner_id == t.user_id,
                None => g.public,
            })
            .filter(|g| since.is_none_or(|s| g.updated_at >= s))
            .collect();
        shown.sort_by_key(|g| Reverse(g.changed));
        let items = shown
            .iter()
            .skip((page - 1).saturating_mul(per_page))
            .take(per_page)
            .map(|g| gist_json(base, g, g.latest(), false))
            .collect();
        let mut response = Response::json(200, &Json::Arr(items));

        let last = shown.len().div_ceil(per_page).max(1);
        if last > 1 {
            let since = since.map(|s| format!("&since={}", iso_time(s)));
            let url = |p: usize| {
                format!(
                    "<{base}/gists?per_page={per_page}&page={p}{}>",
                    since.as_deref().unwrap_or_default()
                )
            };
            let mut links = Vec::new();
            if page > 1 {
                links.push(format!("{}; rel=\"prev\"", url(page - 1)));
            }
            if page < last {
                links.push(format!("{}; rel=\"next\"", url(page + 1)));
                links.push(format!("{}; rel=\"last\"", url(last)));
            }
            if page > 1 {
                links.push(format!("{}; rel=\"first\"", url(1)));
            }
            response = response.with("link", links.join(", "));
        }
        match call.who.map(|t| &t.kind) {
            Some(Kind::FineGrained { .. }) => response.with(
                "x-accepted-github-permissions",
                "allows_permissionless_access=true",
            ),
            Some(Kind::Classic { .. }) => response.with("x-accepted-oauth-scopes", ""),
            None => response,
        }
    }

    /// `GET /gists/{id}` and `GET /gists/{id}/{sha}` (a revision): to anyone who
    /// has the id, secret or not.
    pub(super) fn get(&self, call: &Call, base: &str) -> Response {
        let not_found = || Response::error(404, "Not Found", DOCS_GET);
        let rest = call.head.path.strip_prefix("/gists/").unwrap_or_default();
        let mut parts = rest.split('/');
        let (Some(id), sha, None) = (parts.next(), parts.next(), parts.next()) else {
            return not_found();
        };
        let Some(g) = self.by_id.get(id) else {
            return not_found();
        };
        let revision = match sha {
            None => g.latest(),
            Some(sha) => match g.revisions.iter().find(|r| r.version == sha) {
                Some(r) => r,
                None => return not_found(),
            },
        };
        Response::json(200, &gist_json(base, g, revision, true))
    }

    /// `POST /gists`, `PATCH /gists/{id}`, `DELETE /gists/{id}`, for a caller
    /// already let through the permission and limit checks.
    pub(super) fn write(&mut self, call: &Call, t: &Token, base: &str) -> Response {
        let under = call.head.path.strip_prefix("/gists").unwrap_or_default();
        let segments: Vec<&str> = under.split('/').skip(1).collect();
        let result = match (call.head.method.as_str(), segments.as_slice()) {
            ("POST", []) => self.create(call, t, base),
            ("PATCH", [id]) => self.update(call, t, base, id),
            ("DELETE", [id]) => Ok(self.delete(t, id)),
            _ => Err(Response::error(404, "Not Found", DOCS_GISTS)),
        };
        result.unwrap_or_else(|refusal| refusal)
    }

    fn create(&mut self, call: &Call, t: &Token, base: &str) -> Result<Response, Response> {
        let doc = parse_object(call.body, DOCS_CREATE)?;
        let members = match doc.get("files") {
            Some(Json::Obj(m)) if !m.is_empty() => m,
            _ => return Err(validation_failed("files", "missing_field", DOCS_CREATE)),
        };
        let description = description_of(&doc, DOCS_CREATE)?.flatten();
        // GitHub takes `public` as a boolean or as the string "true" or "false".
        let public = match doc.get("public") {
            None | Some(Json::Null) => false,
            Some(Json::Bool(b)) => *b,
            Some(Json::Str(s)) if s == "true" || s == "false" => s == "true",
            Some(_) => return Err(validation_failed("public", "invalid", DOCS_CREATE)),
        };
        let mut files = Files::new();
        for (name, value) in members {
            check_name(name, DOCS_CREATE)?;
            // More than 300 files is fine: only the reading side cuts the list.
            files.insert(name.clone(), content_of(value, DOCS_CREATE)?);
        }
        let now = call.now();
        let id = self.fresh_hex(base, 32);
        let version = self.fresh_hex(base, 40);
        let seq = self.next();
        let gist = Gist {
            id: id.clone(),
            owner: t.login.clone(),
            owner_id: t.user_id,
            public,
            descriptions: description.iter().cloned().collect(),
            description,
            created_at: now,
            updated_at: now,
            created: seq,
            changed: seq,
            revisions: vec![Revision {
                version,
                committed_at: now,
                files,
            }],
        };
        let body = gist_json(base, &gist, gist.latest(), true);
        self.by_id.insert(id.clone(), gist);
        Ok(Response::json(201, &body).with("location", format!("{base}/gists/{id}")))
    }

    /// Files named in the request are changed, renamed or (set to null, or to an
    /// empty object) deleted; the others carry over. A change makes a revision.
    fn update(
        &mut self,
        call: &Call,
        t: &Token,
        base: &str,
        id: &str,
    ) -> Result<Response, Response> {
        let not_found = || Response::error(404, "Not Found", DOCS_UPDATE);
        // Another user's gist is hidden from its would-be editor, as GitHub does.
        let g = self
            .by_id
            .get(id)
            .filter(|g| g.owner_id == t.user_id)
            .ok_or_else(not_found)?;
        let doc = parse_object(call.body, DOCS_UPDATE)?;
        let description = description_of(&doc, DOCS_UPDATE)?;
        let edits = match doc.get("files") {
            None => None,
            Some(Json::Obj(m)) => Some(m),
            Some(_) => return Err(validation_failed("files", "invalid", DOCS_UPDATE)),
        };
        // GitHub: "At least one of description or files is required."
        if description.is_none() && edits.is_none() {
            return Err(validation_failed("files", "missing_field", DOCS_UPDATE));
        }
        let current = &g.latest().files;
        let mut next = current.clone();
        for (key, value) in edits.into_iter().flatten() {
            let delete = match value {
                Json::Null => true,
                Json::Obj(m) => m.is_empty(),
                _ => return Err(validation_failed("files", "invalid", DOCS_UPDATE)),
            };
            if delete {
                if next.remove(key).is_none() {
                    return Err(validation_failed("files", "missing", DOCS_UPDATE));
                }
                continue;
            }
            let content = match value.get("content") {
                None | Some(Json::Null) => None,
                Some(_) => Some(content_of(value, DOCS_UPDATE)?),
            };
            let rename = match value.get("filename") {
                None | Some(Json::Null) => None,
                Some(Json::Str(n)) => Some(n),
                Some(_) => return Err(validation_failed("files", "invalid", DOCS_UPDATE)),
            };
            let old = next.remove(key);
            if old.is_none() {
                check_name(key, DOCS_UPDATE)?;
            }
            let content = content
                .or(old)
                .ok_or_else(|| validation_failed("files", "missing_field", DOCS_UPDATE))?;
            let name = rename.unwrap_or(key);
            check_name(name, DOCS_UPDATE)?;
            if next.contains_key(name) {
                return Err(validation_failed("files", "already_exists", DOCS_UPDATE));
            }
            next.insert(name.clone(), content);
        }
        // A gist cannot be left without files: deleting the gist is how it goes.
        if next.is_empty() {
            return Err(validation_failed("files", "missing_field", DOCS_UPDATE));
        }
        let description = description.unwrap_or_else(|| g.description.clone());
        let changed = next != *current || description != g.description;
        if changed {
            let now = call.now();
            let version = self.fresh_hex(base, 40);
            let seq = self.next();
            let g = self.by_id.get_mut(id).ok_or_else(not_found)?;
            if description != g.description {
                g.descriptions.extend(description.iter().cloned());
                g.description = description;
            }
            g.updated_at = now;
            g.changed = seq;
            g.revisions.push(Revision {
                version,
                committed_at: now,
                files: next,
            });
        }
        let g = self.by_id.get(id).ok_or_else(not_found)?;
        Ok(Response::json(200, &gist_json(base, g, g.latest(), true)))
    }

    /// The gist and its whole history go.
    fn delete(&mut self, t: &Token, id: &str) -> Response {
        match self.by_id.get(id) {
            Some(g) if g.owner_id == t.user_id => {
                self.by_id.remove(id);
                Response::empty(204)
            }
            _ => Response::error(404, "Not Found", DOCS_DELETE),
        }
    }

    /// `GET /raw/{id}/{sha}/{filename}`: a file of a revision, whole, as GitHub's
    /// raw host serves it to anyone with the URL; not the API, so no token, no
    /// User-Agent and no rate limit apply.
    pub(super) fn raw(&self, head: &Head) -> Response {
        let not_found = || Response::text(404, "text/plain; charset=utf-8", "404: Not Found");
        if head.method != "GET" {
            return not_found();
        }
        let rest = head.path.strip_prefix("/raw/").unwrap_or_default();
        let mut parts = rest.splitn(3, '/');
        let (Some(id), Some(sha), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
            return not_found();
        };
        let content = percent_decode(name).and_then(|name| {
            let g = self.by_id.get(id)?;
            let revision = g.revisions.iter().find(|r| r.version == sha)?;
            revision.files.get(&name).cloned()
        });
        match content {
            None => not_found(),
            Some(c) if c.len() > RAW_BYTES => Response::json(
                403,
                &Json::obj([("message", Json::str("file too large: clone the gist"))]),
            ),
            // Whole, whatever `Range` asked for.
            Some(c) => Response::text(200, "text/plain; charset=utf-8", &c)
                .with("x-content-type-options", "nosniff"),
        }
    }

    pub(super) fn everything(&self) -> Vec<StoredGist> {
        let mut gists: Vec<&Gist> = self.by_id.values().collect();
        gists.sort_by_key(|g| g.created);
        gists
            .into_iter()
            .map(|g| StoredGist {
                id: g.id.clone(),
                owner: g.owner.clone(),
                description: g.description.clone(),
                descriptions: g.descriptions.clone(),
                public: g.public,
                revisions: g
                    .revisions
                    .iter()
                    .map(|r| {
                        r.files
                            .iter()
                            .map(|(n, c)| (n.clone(), c.to_string()))
                            .collect()
                    })
                    .collect(),
            })
            .collect()
    }

    fn next(&mut self) -> u64 {
        self.sequence += 1;
        self.sequence
    }

    /// A new id (32 hex digits, as GitHub's gist ids) or version (40, a git
    /// sha); the fake's own URL goes in, so two fakes in one test do not share ids.
    fn fresh_hex(&mut self, base: &str, digits: usize) -> String {
        let n = self.next();
        let mut out = String::new();
        let mut part = 0u8;
        while out.len() < digits {
            let mut h = DefaultHasher::new();
            (base, n, part).hash(&mut h);
            out.push_str(&format!("{:016x}", h.finish()));
            part += 1;
        }
        out.truncate(digits);
        out
    }
}

/// A gist's JSON: in full (`GET`, `POST`, `PATCH`: contents and history) or as
/// listed (no `content`, no `truncated` per file, no history).
fn gist_json(base: &str, g: &Gist, revision: &Revision, full: bool) -> Json {
    let api = format!("{base}/gists/{}", g.id);
    let files = revision
        .files
        .iter()
        .take(LISTED_FILES)
        .map(|(name, content)| {
            (
                name.clone(),
                file_json(base, g, revision, name, content, full),
            )
        })
        .collect();
    let owner = user_json(base, &g.owner, g.owner_id);
    let mut members = vec![
        ("url", Json::str(&api)),
        ("forks_url", Json::str(format!("{api}/forks"))),
        ("commits_url", Json::str(format!("{api}/commits"))),
        ("id", Json::str(&g.id)),
        (
            "node_id",
            Json::str(super::base64(format!("08:Gist{}", g.id).as_bytes())),
        ),
        ("git_pull_url", Json::str(format!("{base}/{}.git", g.id))),
        ("git_push_url", Json::str(format!("{base}/{}.git", g.id))),
        ("html_url", Json::str(format!("{base}/{}", g.id))),
        ("files", Json::Obj(files)),
        ("public", Json::Bool(g.public)),
        ("created_at", Json::str(iso_time(g.created_at))),
        ("updated_at", Json::str(iso_time(g.updated_at))),
        (
            "description",
            g.description.as_deref().map_or(Json::Null, Json::str),
        ),
        ("comments", Json::int(0)),
        ("comments_enabled", Json::Bool(true)),
        ("user", Json::Null),
        ("comments_url", Json::str(format!("{api}/comments"))),
        ("owner", owner.clone()),
    ];
    if full {
        let history = g
            .revisions
            .iter()
            .rev()
            .map(|r| {
                Json::obj([
                    ("user", owner.clone()),
                    ("version", Json::str(&r.version)),
                    ("committed_at", Json::str(iso_time(r.committed_at))),
                    ("url", Json::str(format!("{api}/{}", r.version))),
                ])
            })
            .collect();
        members.push(("forks", Json::Arr(Vec::new())));
        members.push(("history", Json::Arr(history)));
    }
    members.push(("truncated", Json::Bool(revision.files.len() > LISTED_FILES)));
    Json::obj(members)
}

fn file_json(
    base: &str,
    g: &Gist,
    revision: &Revision,
    name: &str,
    content: &str,
    full: bool,
) -> Json {
    let (kind, language) = match name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()) {
        Some(e) if e == "json" => ("application/json", Json::str("JSON")),
        Some(e) if e == "md" => ("text/markdown", Json::str("Markdown")),
        Some(e) if e == "txt" => ("text/plain", Json::str("Text")),
        _ => ("text/plain", Json::Null),
    };
    let raw_url = format!(
        "{base}/raw/{}/{}/{}",
        g.id,
        revision.version,
        percent_encode(name)
    );
    let mut members = vec![
        ("filename", Json::str(name)),
        ("type", Json::str(kind)),
        ("language", language),
        ("raw_url", Json::str(raw_url)),
        ("size", Json::int(content.len() as u64)),
    ];
    if full {
        let truncated = content.len() > INLINE_BYTES;
        // Cut on a character boundary: JSON carries text, not bytes.
        let mut cut = content.len().min(INLINE_BYTES);
        while !content.is_char_boundary(cut) {
            cut -= 1;
        }
        members.push(("truncated", Json::Bool(truncated)));
        members.push(("content", Json::str(&content[..cut])));
    }
    Json::obj(members)
}

/// `description` in a request: absent (None), null (Some(None)) or a string.
fn description_of(doc: &Json, docs: &str) -> Result<Option<Option<String>>, Response> {
    match doc.get("description") {
        None => Ok(None),
        Some(Json::Null) => Ok(Some(None)),
        Some(Json::Str(s)) => Ok(Some(Some(s.clone()))),
        Some(_) => Err(validation_failed("description", "invalid", docs)),
    }
}

/// A file's `content` in a request: text, and not empty (GitHub refuses a blank
/// file).
fn content_of(value: &Json, docs: &str) -> Result<Arc<str>, Response> {
    match value.get("content") {
        Some(Json::Str(c)) if !c.is_empty() => Ok(Arc::from(c.as_str())),
        _ => Err(validation_failed("files", "missing_field", docs)),
    }
}

/// A gist's files are git paths at its root: a name cannot be empty or hold `/`.
fn check_name(name: &str, docs: &str) -> Result<(), Response> {
    if name.is_empty() || name.contains('/') {
        return Err(validation_failed("files", "invalid", docs));
    }
    Ok(())
}

/// GitHub's documented split: a body that is not JSON, or not a JSON object, is a
/// 400; an object whose fields are wrong is a 422.
fn parse_object(body: &[u8], docs: &str) -> Result<Json, Response> {
    let Some(doc) = std::str::from_utf8(body).ok().and_then(Json::parse) else {
        return Err(Response::error(400, "Problems parsing JSON", docs));
    };
    match doc {
        Json::Obj(_) => Ok(doc),
        _ => Err(Response::error(400, "Body should be a JSON object", docs)),
    }
}

fn validation_failed(field: &str, code: &str, docs: &str) -> Response {
    let errors = Json::Arr(vec![Json::obj([
        ("resource", Json::str("Gist")),
        ("field", Json::str(field)),
        ("code", Json::str(code)),
    ])]);
    Response::json(
        422,
        &Json::obj([
            ("message", Json::str("Validation Failed")),
            ("errors", errors),
            ("documentation_url", Json::str(docs)),
            ("status", Json::str("422")),
        ]),
    )
}

fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Some((percent_decode(k)?, percent_decode(v)?))
        })
        .collect()
}

/// A file name as a URL path segment: all but RFC 3986's unreserved bytes escaped.
fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}
