//! One file at a time: metadata get, create, update and delete; simple
//! (`media`, `multipart`) uploads; downloads with `Range`; sharing.
//!
//! What bites here, as at Drive: a name is not a key (creating "a" twice makes
//! two files); `If-Match` and any other precondition are ignored, so an update
//! meant to be conditional overwrites whatever is there; simple uploads stop at
//! 5 MB; the JSON of a file carries only the `fields` asked for (by default
//! `kind,id,name,mimeType`, so no `size` and no checksum unless asked); a file
//! of the appDataFolder cannot be trashed or shared; an appdata-scoped token
//! sees nothing outside that folder (its files are simply not found).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use super::super::fake_http::Response;
use super::auth::Caller;
use super::server::{Call, SIMPLE_LIMIT};
use super::store::{self, File, Space};
use super::{wire, Shared};

pub const FOLDER: &str = "application/vnd.google-apps.folder";
const DEFAULT_FIELDS: &str = "kind,id,name,mimeType";
/// Drive's limit on one appProperties entry, key and value together.
const PROPERTY_BYTES: usize = 124;

/// Metadata a client sent with a create, an update or an upload.
#[derive(Default)]
pub struct Meta {
    pub name: Option<String>,
    pub parents: Option<Vec<String>>,
    pub description: Option<String>,
    /// A null value removes the key.
    pub app_properties: Vec<(String, Option<String>)>,
    pub mime: Option<String>,
    pub trashed: Option<bool>,
}

impl Meta {
    /// The JSON body of a request; Google refuses names it does not know.
    pub fn parse(body: &[u8]) -> Result<Self, Response> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self::default());
        }
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| wire::bad_request(&format!("Invalid JSON payload received. {e}")))?;
        let Value::Object(obj) = v else {
            return Err(wire::bad_request(
                "Invalid JSON payload received. Expected an object.",
            ));
        };
        let mut m = Self::default();
        let text = |k: &str, v: &Value| {
            v.as_str().map(str::to_owned).ok_or_else(|| {
                wire::bad_request(&format!("Invalid value at '{k}': expected a string"))
            })
        };
        for (k, v) in &obj {
            match k.as_str() {
                "name" => m.name = Some(text(k, v)?),
                "description" => m.description = Some(text(k, v)?),
                "mimeType" => m.mime = Some(text(k, v)?),
                "trashed" => m.trashed = v.as_bool(),
                "parents" => {
                    let list = v
                        .as_array()
                        .ok_or_else(|| wire::bad_request("parents: expected a list"))?;
                    m.parents = Some(list.iter().map(|p| text(k, p)).collect::<Result<_, _>>()?);
                }
                "appProperties" => {
                    let props = v
                        .as_object()
                        .ok_or_else(|| wire::bad_request("appProperties: expected an object"))?;
                    for (pk, pv) in props {
                        let value = match pv {
                            Value::Null => None,
                            Value::String(s) => Some(s.clone()),
                            other => Some(other.to_string()),
                        };
                        if pk.len() + value.as_ref().map_or(0, String::len) > PROPERTY_BYTES {
                            return Err(wire::error_at(
                                400,
                                "invalid",
                                &format!("The property with key '{pk}' exceeds the maximum size of {PROPERTY_BYTES} bytes for the key and value together."),
                                Some(("other", "appProperties")),
                            ));
                        }
                        m.app_properties.push((pk.clone(), value));
                    }
                }
                // Read-only or ignored fields Drive accepts in a request body.
                "kind" | "modifiedTime" | "createdTime" => {}
                other => {
                    return Err(wire::bad_request(&format!(
                    "Invalid JSON payload received. Unknown name \"{other}\": Cannot find field."
                )))
                }
            }
        }
        Ok(m)
    }
}

pub fn new_file(name: &str, space: Space, parent: String, content: Arc<Vec<u8>>, now: u64) -> File {
    File {
        id: store::new_id(),
        name: name.to_owned(),
        mime: "application/octet-stream".into(),
        space,
        parents: vec![parent],
        description: None,
        app_properties: BTreeMap::new(),
        sha256: store::sha256_hex(&content),
        content,
        created_ms: now,
        modified_ms: now,
        version: 0,
        revision: wire::random_string(40),
        trashed: false,
    }
}

/// Whether the caller's token reaches `f` at all.
pub fn visible(caller: &Caller, f: &File) -> bool {
    match f.space {
        Space::AppData => caller.sees_app_data(),
        Space::Drive => caller.sees_drive(),
    }
}

fn insufficient_scope() -> Response {
    wire::error(
        403,
        "insufficientPermissions",
        "Request had insufficient authentication scopes.",
    )
}

/// The file as the caller may see it, or Drive's 404.
fn visible_file(shared: &Shared, caller: &Caller, id: &str) -> Result<File, Response> {
    shared
        .state()
        .store
        .get(id)
        .filter(|f| visible(caller, f))
        .cloned()
        .ok_or_else(|| wire::not_found(id))
}

pub fn file_answer(
    status: u16,
    f: &File,
    params: &std::collections::HashMap<String, String>,
) -> Result<Response, Response> {
    let fields = wire::fields_or(params, DEFAULT_FIELDS)?;
    Ok(wire::json(status, &wire::select(&f.resource(), &fields)))
}

/// A new file from `meta` and `content` (hashed by the caller, outside the lock).
pub fn create_with(
    shared: &Shared,
    caller: &Caller,
    meta: Meta,
    content: Arc<Vec<u8>>,
    sha256: String,
) -> Result<File, Response> {
    let mut state = shared.state();
    let now = state.now_ms();
    let parents = meta.parents.clone().unwrap_or_else(|| vec!["root".into()]);
    let [parent] = parents.as_slice() else {
        return Err(wire::error(
            403,
            "cannotAddParent",
            "A shared drive item must have exactly one parent.",
        ));
    };
    let Some((parent_id, space)) = state.parent(parent) else {
        return Err(wire::error_at(
            404,
            "notFound",
            &format!("File not found: {parent}."),
            Some(("parameter", "fileId")),
        ));
    };
    let reach = match space {
        Space::AppData => caller.sees_app_data(),
        Space::Drive => caller.sees_drive(),
    };
    if !reach {
        return Err(insufficient_scope());
    }
    if meta.trashed == Some(true) && space == Space::AppData {
        return Err(cannot_trash());
    }
    let mut f = new_file(
        meta.name.as_deref().unwrap_or("Untitled"),
        space,
        parent_id,
        content,
        now,
    );
    f.sha256 = sha256;
    f.mime = meta.mime.clone().unwrap_or_else(|| f.mime.clone());
    f.description = meta.description.clone();
    apply_props(&mut f, &meta);
    Ok(state.store.put(f, now).clone())
}

fn apply_props(f: &mut File, meta: &Meta) {
    for (k, v) in &meta.app_properties {
        match v {
            Some(v) => f.app_properties.insert(k.clone(), v.clone()),
            None => f.app_properties.remove(k),
        };
    }
}

fn cannot_trash() -> Response {
    wire::error(
        403,
        "insufficientFilePermissions",
        "Files in the appDataFolder cannot be trashed.",
    )
}

/// Changes `id`'s metadata and, with `content`, its bytes. No precondition of
/// any kind is looked at: the last writer wins.
pub fn update_with(
    shared: &Shared,
    caller: &Caller,
    id: &str,
    meta: Meta,
    content: Option<(Arc<Vec<u8>>, String)>,
) -> Result<File, Response> {
    let mut state = shared.state();
    let now = state.now_ms();
    let mut f = state
        .store
        .get(id)
        .filter(|f| visible(caller, f))
        .cloned()
        .ok_or_else(|| wire::not_found(id))?;
    if meta.parents.is_some() {
        return Err(wire::error(
            403,
            "fieldNotWritable",
            "The resource body includes fields which are not directly writable.",
        ));
    }
    if let Some(t) = meta.trashed {
        if t && f.space == Space::AppData {
            return Err(cannot_trash());
        }
        f.trashed = t;
    }
    if let Some(n) = meta.name.clone() {
        f.name = n;
    }
    if let Some(d) = meta.description.clone() {
        f.description = Some(d);
    }
    if let Some(m) = meta.mime.clone() {
        f.mime = m;
    }
    apply_props(&mut f, &meta);
    if let Some((c, sha)) = content {
        f.content = c;
        f.sha256 = sha;
        f.revision = wire::random_string(40);
    }
    Ok(state.store.put(f, now).clone())
}

/// `GET /drive/v3/files/{id}`: metadata, or with `alt=media` the bytes.
pub fn get(call: Call, id: &str) -> Result<Response, Response> {
    let f = visible_file(call.shared, &call.caller, id)?;
    if call.params.get("alt").map(String::as_str) != Some("media") {
        return file_answer(200, &f, &call.params);
    }
    if f.mime == FOLDER {
        return Err(wire::error(
            403,
            "fileNotDownloadable",
            "Only files with binary content can be downloaded.",
        ));
    }
    Ok(download(&f, call.head.header("range")))
}

fn download(f: &File, range: Option<&str>) -> Response {
    let len = f.content.len();
    let whole = || {
        wire::response(200)
            .with("content-type", f.mime.clone())
            .with_shared_body(f.content.clone(), 0..len)
    };
    let Some(spec) = range.and_then(|r| r.trim().strip_prefix("bytes=")) else {
        return whole();
    };
    if spec.contains(',') {
        // Drive serves one range; several get the whole file.
        return whole();
    }
    let Some((a, b)) = spec.split_once('-') else {
        return whole();
    };
    let (start, end) = match (a.trim().parse::<usize>(), b.trim().parse::<usize>()) {
        (Ok(s), Ok(e)) if s <= e => (s, e.min(len.saturating_sub(1))),
        (Ok(s), Err(_)) if b.trim().is_empty() => (s, len.saturating_sub(1)),
        (Err(_), Ok(n)) if a.trim().is_empty() && n > 0 => {
            (len.saturating_sub(n), len.saturating_sub(1))
        }
        _ => return whole(),
    };
    if start >= len {
        return wire::response(416)
            .with("content-range", format!("bytes */{len}"))
            .with("content-type", "text/html; charset=UTF-8")
            .with_body(b"Requested range not satisfiable".to_vec());
    }
    wire::response(206)
        .with("content-type", f.mime.clone())
        .with("content-range", format!("bytes {start}-{end}/{len}"))
        .with_shared_body(f.content.clone(), start..end + 1)
}

/// `POST /drive/v3/files`: a file with no content (or a folder).
pub fn create(call: Call) -> Result<Response, Response> {
    let meta = Meta::parse(&call.body)?;
    let empty = Arc::new(Vec::new());
    let sha = store::sha256_hex(&empty);
    let f = create_with(call.shared, &call.caller, meta, empty, sha)?;
    file_answer(200, &f, &call.params)
}

/// `PATCH /drive/v3/files/{id}`: metadata only. `If-Match` is not looked at.
pub fn update(call: Call, id: &str) -> Result<Response, Response> {
    if call.params.contains_key("addParents") || call.params.contains_key("removeParents") {
        return Err(wire::unsupported("moving files (addParents/removeParents)"));
    }
    let meta = Meta::parse(&call.body)?;
    let f = update_with(call.shared, &call.caller, id, meta, None)?;
    file_answer(200, &f, &call.params)
}

/// `DELETE /drive/v3/files/{id}`: gone for good (and a folder's contents with it).
pub fn delete(call: Call, id: &str) -> Result<Response, Response> {
    visible_file(call.shared, &call.caller, id)?;
    let mut state = call.shared.state();
    let now = state.now_ms();
    let mut doomed = vec![id.to_owned()];
    while let Some(next) = doomed.pop() {
        // Only a folder has children; a file's delete must not cost a scan.
        let is_folder = state.store.get(&next).is_some_and(|f| f.mime == FOLDER);
        let children: Vec<String> = if is_folder {
            state
                .store
                .files
                .values()
                .filter(|f| f.parents.contains(&next))
                .map(|f| f.id.clone())
                .collect()
        } else {
            Vec::new()
        };
        state.store.delete(&next, now);
        doomed.extend(children);
    }
    Ok(wire::response(204))
}

/// The account every fake Drive belongs to.
pub const ACCOUNT_NAME: &str = "Ghost Owner";
pub const ACCOUNT_EMAIL: &str = "ghost.owner@gmail.com";
/// A free account's 15 GB.
const QUOTA_LIMIT: u64 = 16_106_127_360;

/// `GET /drive/v3/about`: who the user is and how much space the files take.
/// Drive answers this method only with `fields` given.
pub fn about(call: Call) -> Result<Response, Response> {
    if !call.params.contains_key("fields") {
        return Err(wire::error_at(
            400,
            "required",
            "The 'fields' parameter is required for this method.",
            Some(("parameter", "fields")),
        ));
    }
    let fields = wire::fields_or(&call.params, "")?;
    let usage: u64 = {
        let state = call.shared.state();
        state
            .store
            .files
            .values()
            .map(|f| f.content.len() as u64)
            .sum()
    };
    let v = serde_json::json!({
        "kind": "drive#about",
        "user": {
            "kind": "drive#user",
            "displayName": ACCOUNT_NAME,
            "emailAddress": ACCOUNT_EMAIL,
            "me": true,
        },
        "storageQuota": {
            "limit": QUOTA_LIMIT.to_string(),
            "usage": usage.to_string(),
            "usageInDrive": usage.to_string(),
            "usageInDriveTrash": "0",
        },
    });
    Ok(wire::json(200, &wire::select(&v, &fields)))
}

/// `POST /drive/v3/files/{id}/permissions`: appDataFolder files cannot be shared.
pub fn share(call: Call, id: &str) -> Result<Response, Response> {
    let f = visible_file(call.shared, &call.caller, id)?;
    if f.space == Space::AppData {
        return Err(wire::error(
            403,
            "insufficientFilePermissions",
            "Files in the appDataFolder cannot be shared.",
        ));
    }
    Err(wire::unsupported("sharing files outside the appDataFolder"))
}

/// `POST|PATCH /upload/drive/v3/files[/{id}]?uploadType=media|multipart`.
pub fn upload(call: Call, id: Option<String>) -> Result<Response, Response> {
    let multipart = call.params.get("uploadType").map(String::as_str) == Some("multipart");
    let (meta, content) = if multipart {
        let (json, media) = split_multipart(call.head.header("content-type"), &call.body)?;
        (Meta::parse(&json)?, media)
    } else {
        (Meta::default(), call.body)
    };
    if content.len() > SIMPLE_LIMIT {
        return Err(wire::error(
            413,
            "uploadTooLarge",
            "Request Too Large: media and multipart uploads are limited to 5 MB; use uploadType=resumable",
        ));
    }
    let sha = store::sha256_hex(&content);
    let content = Arc::new(content);
    let f = match id {
        None => create_with(call.shared, &call.caller, meta, content, sha)?,
        Some(id) => update_with(call.shared, &call.caller, &id, meta, Some((content, sha)))?,
    };
    file_answer(200, &f, &call.params)
}

/// A `multipart/related` body: the JSON metadata part and the media part.
fn split_multipart(
    content_type: Option<&str>,
    body: &[u8],
) -> Result<(Vec<u8>, Vec<u8>), Response> {
    let bad = |why: &str| wire::bad_request(&format!("Invalid multipart request: {why}"));
    let ct = content_type.unwrap_or("");
    if !ct.to_ascii_lowercase().starts_with("multipart/related") {
        return Err(bad("Content-Type must be multipart/related"));
    }
    let boundary = ct
        .split(';')
        .filter_map(|p| p.trim().strip_prefix("boundary="))
        .next()
        .map(|b| b.trim_matches('"'))
        .filter(|b| !b.is_empty())
        .ok_or_else(|| bad("no boundary"))?;
    let delim = format!("--{boundary}").into_bytes();
    let mut starts = Vec::new();
    let mut i = 0;
    while let Some(at) = find(&body[i..], &delim) {
        starts.push(i + at);
        i += at + delim.len();
    }
    if starts.len() != 3 {
        return Err(bad("expected exactly two parts"));
    }
    let part = |from: usize, to: usize| -> Result<Vec<u8>, Response> {
        let raw = &body[from + delim.len()..to];
        let head_end = find(raw, b"\r\n\r\n").ok_or_else(|| bad("a part without headers"))?;
        let mut content = &raw[head_end + 4..];
        content = content.strip_suffix(b"\r\n").unwrap_or(content);
        Ok(content.to_vec())
    };
    if !body[starts[2] + delim.len()..].starts_with(b"--") {
        return Err(bad("no closing delimiter"));
    }
    Ok((part(starts[0], starts[1])?, part(starts[1], starts[2])?))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
