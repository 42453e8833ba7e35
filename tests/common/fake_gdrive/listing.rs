//! files.list and the changes feed.
//!
//! Pages are opaque tokens over ordered maps (files by id, changes by number),
//! so a page starts where the last stopped without a scan from the start. What
//! bites: a page may come back short or even empty while `nextPageToken` says
//! there is more — now and then by default, and on every page with
//! [`super::FakeGdrive::set_short_pages`] — so a client that stops at the first
//! short page loses files; `pageSize` stops at 1,000; a token belongs to its
//! query; and `fields` drops `nextPageToken` unless asked for it.

use std::ops::Bound;

use serde_json::{json, Value};

use super::super::fake_http::Response;
use super::files::visible;
use super::query::{self, Query};
use super::server::Call;
use super::store::Space;
use super::{wire, State};

const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1_000;
const LIST_FIELDS: &str = "kind,incompleteSearch,nextPageToken,files(kind,id,name,mimeType)";
const CHANGE_FIELDS: &str = "kind,nextPageToken,newStartPageToken,\
    changes(kind,changeType,time,removed,fileId,file(kind,id,name,mimeType))";

/// The spaces a call asks for, checked against its token's scopes.
fn spaces(call: &Call) -> Result<Vec<Space>, Response> {
    let raw = call.params.get("spaces").map_or("drive", String::as_str);
    let mut out = Vec::new();
    for s in raw.split(',').map(str::trim) {
        let (space, reach) = match s {
            "appDataFolder" => (Space::AppData, call.caller.sees_app_data()),
            "drive" => (Space::Drive, call.caller.sees_drive()),
            _ => return Err(wire::invalid("spaces", &format!("Invalid Value: {s}"))),
        };
        if !reach {
            return Err(wire::error(
                403,
                "insufficientPermissions",
                "The granted scopes do not give access to all of the requested spaces.",
            ));
        }
        out.push(space);
    }
    Ok(out)
}

fn page_size(call: &Call) -> Result<usize, Response> {
    match call.params.get("pageSize") {
        None => Ok(DEFAULT_PAGE),
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| {
                wire::invalid(
                    "pageSize",
                    &format!("Invalid value '{v}'. Values must be within the range: [1, 1000]"),
                )
            }),
    }
}

impl State {
    /// How many entries this page may hold: `size`, or fewer, as Drive's pages
    /// sometimes are — every page with short pages on, else now and then.
    fn page_limit(&mut self, size: usize) -> usize {
        self.pages_served += 1;
        let k = self.pages_served;
        if self.short_pages {
            if k % 2 == 0 {
                0
            } else {
                (size / 2).max(1)
            }
        } else if k % 11 == 0 {
            0
        } else if k % 5 == 0 {
            (size / 2).max(1)
        } else {
            size
        }
    }
}

/// The query with Drive's aliases (`appDataFolder`, `root`) as real ids.
fn resolve(q: Query, state: &State) -> Query {
    let r = |q: Box<Query>| Box::new(resolve(*q, state));
    match q {
        Query::InParents(id) => Query::InParents(state.parent(&id).map_or(id, |(real, _)| real)),
        Query::Not(a) => Query::Not(r(a)),
        Query::And(a, b) => Query::And(r(a), r(b)),
        Query::Or(a, b) => Query::Or(r(a), r(b)),
        other => other,
    }
}

fn fingerprint(parts: &[&str]) -> String {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut h = DefaultHasher::new();
    parts.hash(&mut h);
    format!("{:016x}", h.finish())
}

/// `GET /drive/v3/files`.
pub fn list(call: Call) -> Result<Response, Response> {
    let spaces = spaces(&call)?;
    let size = page_size(&call)?;
    if call.params.contains_key("orderBy") {
        return Err(wire::unsupported("orderBy"));
    }
    let fields = wire::fields_or(&call.params, LIST_FIELDS)?;
    let q_text = call.params.get("q").map_or("", String::as_str);
    let raw_q = query::parse(q_text).map_err(|()| wire::invalid("q", "Invalid Value"))?;
    let fp = fingerprint(&[q_text, call.params.get("spaces").map_or("", String::as_str)]);
    let after = match call.params.get("pageToken") {
        None => None,
        Some(t) => {
            let (tfp, last) = t
                .strip_prefix("~!!~")
                .and_then(|r| r.split_once('.'))
                .filter(|(tfp, _)| *tfp == fp)
                .ok_or_else(|| wire::invalid("pageToken", "Invalid Value"))?;
            let _ = tfp;
            Some(
                String::from_utf8(
                    hex::decode(last).map_err(|_| wire::invalid("pageToken", "Invalid Value"))?,
                )
                .map_err(|_| wire::invalid("pageToken", "Invalid Value"))?,
            )
        }
    };
    let mut state = call.shared.state();
    let q = resolve(raw_q, &state);
    let limit = state.page_limit(size);
    let lower = match &after {
        Some(last) => Bound::Excluded(last.clone()),
        None => Bound::Unbounded,
    };
    let mut files = Vec::new();
    let mut next = None;
    if limit == 0 {
        next = Some(after.clone().unwrap_or_default());
    } else {
        for (id, f) in state.store.files.range((lower, Bound::Unbounded)) {
            if !spaces.contains(&f.space) || !visible(&call.caller, f) || !q.matches(f) {
                continue;
            }
            files.push(f.resource());
            if files.len() == limit {
                next = Some(id.clone());
                break;
            }
        }
    }
    drop(state);
    let mut v = json!({ "kind": "drive#fileList", "incompleteSearch": false, "files": files });
    if let Some(last) = next {
        v["nextPageToken"] = json!(format!("~!!~{fp}.{}", hex::encode(last)));
    }
    Ok(wire::json(200, &wire::select(&v, &fields)))
}

/// `GET /drive/v3/changes/startPageToken`.
pub fn start_page_token(call: Call) -> Result<Response, Response> {
    let token = call.shared.state().store.start_token();
    Ok(wire::json(
        200,
        &json!({ "kind": "drive#startPageToken", "startPageToken": token.to_string() }),
    ))
}

/// `GET /drive/v3/changes?pageToken=…`: each file changed since, once, in
/// the state it is in now.
pub fn changes(call: Call) -> Result<Response, Response> {
    let spaces = spaces(&call)?;
    let size = page_size(&call)?;
    let fields = wire::fields_or(&call.params, CHANGE_FIELDS)?;
    let Some(raw) = call.params.get("pageToken") else {
        return Err(wire::error_at(
            400,
            "required",
            "Required parameter: pageToken",
            Some(("parameter", "pageToken")),
        ));
    };
    let include_removed = call.params.get("includeRemoved").map(String::as_str) != Some("false");
    let mut state = call.shared.state();
    let from = raw
        .parse::<u64>()
        .ok()
        .filter(|t| *t >= 1 && *t <= state.store.start_token())
        .ok_or_else(|| wire::invalid("pageToken", "Invalid Value"))?;
    let limit = state.page_limit(size);
    let mut out = Vec::new();
    let mut next = None;
    if limit == 0 {
        next = Some(from);
    } else {
        for (seq, c) in state.store.changes_from(from) {
            if !spaces.contains(&c.space) {
                continue;
            }
            let file = state
                .store
                .get(&c.file_id)
                .filter(|f| visible(&call.caller, f));
            if file.is_none() && !include_removed {
                continue;
            }
            let mut change = json!({
                "kind": "drive#change",
                "changeType": "file",
                "time": wire::rfc3339_ms(c.time_ms),
                "removed": file.is_none(),
                "fileId": c.file_id,
            });
            if let Some(f) = file {
                change["file"] = f.resource();
            }
            out.push(change);
            if out.len() == limit {
                next = Some(seq + 1);
                break;
            }
        }
    }
    let mut v: Value = json!({ "kind": "drive#changeList", "changes": out });
    match next {
        Some(n) => v["nextPageToken"] = json!(n.to_string()),
        None => v["newStartPageToken"] = json!(state.store.start_token().to_string()),
    }
    drop(state);
    Ok(wire::json(200, &wire::select(&v, &fields)))
}
