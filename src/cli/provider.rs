//! What `status` says of a provider that counts requests (Gist): whose account, how
//! many gists, how much of the hour's budget is spent and when it resets.

use ghostie_fs::sync::ProviderStatus;

use super::login::{now, when};

fn minutes_from_now(at: u64) -> String {
    let secs = at.saturating_sub(now());
    match secs.div_ceil(60) {
        0 => "now".into(),
        1 => "in 1 minute".into(),
        m => format!("in {m} minutes"),
    }
}

pub fn lines(p: &ProviderStatus) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(a) = &p.account {
        out.push(format!("GitHub account: {a}"));
    }
    if let Some(n) = p.containers {
        out.push(format!("Gists in use: {n}"));
    }
    if let (Some(used), Some(limit)) = (p.requests_used, p.requests_limit) {
        let reset = p
            .resets_at
            .map(|r| format!(", resets {}", minutes_from_now(r)))
            .unwrap_or_default();
        out.push(format!("Requests this hour: {used} of {limit}{reset}"));
    }
    if let Some(w) = p.writes_last_hour.filter(|w| *w > 0) {
        out.push(format!("Writes in the last hour: {w} (GitHub allows 500)"));
    }
    if let Some(until) = p.waiting_until {
        out.push(format!(
            "Waiting for GitHub's rate limit until {} ({})",
            when(until),
            minutes_from_now(until)
        ));
    }
    out
}

pub fn json(p: Option<&ProviderStatus>) -> serde_json::Value {
    p.and_then(|p| serde_json::to_value(p).ok())
        .unwrap_or(serde_json::Value::Null)
}
