//! What `status` says of a provider's account (Gist, Dropbox): whose it is, and
//! what the provider counts: gists and the hour's request budget (GitHub), space
//! (Dropbox).

use ghostie_fs::sync::ProviderStatus;

use super::login::{now, when};
use super::units::human_bytes;

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
    let provider = p.provider.as_deref().unwrap_or("Provider");
    if let Some(a) = &p.account {
        out.push(format!("{provider} account: {a}"));
    }
    if let Some(used) = p.space_used {
        let of = p
            .space_allocated
            .map(|a| format!(" of {}", human_bytes(a)))
            .unwrap_or_default();
        out.push(format!("{provider} space used: {}{of}", human_bytes(used)));
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
            "Waiting for {provider}'s rate limit until {} ({})",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_provider_is_named_as_itself() {
        let p = ProviderStatus {
            provider: Some("Dropbox".into()),
            account: Some("Ghost <g@example.com>".into()),
            space_used: Some(2048),
            space_allocated: Some(2 * 1024 * 1024 * 1024),
            ..ProviderStatus::default()
        };
        assert_eq!(
            lines(&p),
            vec![
                "Dropbox account: Ghost <g@example.com>".to_owned(),
                "Dropbox space used: 2.0 KiB of 2.0 GiB".to_owned(),
            ]
        );
    }
}
