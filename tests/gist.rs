//! The Gist backend through the CLI, against a fake GitHub of its own per test
//! (tests/common/fake_github.rs enforces GitHub's documented limits): setting up
//! and joining without an id, what GitHub gets to see, bad input, the create race,
//! a writer that keeps within the secondary limits, and idle polls that cost only
//! free 304s. The engine and mount tests run on Gist as well
//! (GHOSTIE_TEST_BACKEND=gist in scripts/test.sh).

mod common;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use ghostie_fs::backend::gist::{Clock, GistStore};
use ghostie_fs::backend::ObjectStore;
use zeroize::Zeroizing;

use common::fake_github::{FakeGithub, Outage};
use common::*;

/// How long a change may take to reach another device (a mount publishes at most
/// every 20 s on Gist while writes keep coming).
const WAIT: u64 = 60;

fn store_of(fake: &FakeGithub) -> GistStore {
    GistStore::new(&fake.url(), Zeroizing::new(GIST_TOKEN.to_owned())).expect("store")
}

/// Time as the fake keeps it: waiting moves the fake's clock.
struct FakeClock(Arc<FakeGithub>);

impl Clock for FakeClock {
    fn now(&self) -> std::time::SystemTime {
        self.0.now()
    }
    fn sleep(&self, d: Duration) {
        self.0.advance_clock(d);
    }
}

#[test]
fn the_first_device_creates_the_vault_and_the_next_finds_it_without_an_id() {
    let vault = TempVault::gist();
    let a = TempHome::new("laptop");
    a.set_github_token(Some(GIST_TOKEN));
    let args = vault.setup_command("laptop");
    let out = a.ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.contains("Created a new vault"), "{out}");
    assert!(out.contains("gist"), "{out}");

    let b = TempHome::new("phone");
    b.set_github_token(Some(GIST_TOKEN));
    let args = vault.setup_command("phone");
    let out = b.ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.contains("Joined the vault"), "{out}");

    a.write("notes/walk.json", b"{\"note\":\"walked by the river\"}");
    a.ok(&["push"]);
    b.ok(&["pull"]);
    assert_eq!(
        b.read("notes/walk.json").unwrap(),
        b"{\"note\":\"walked by the river\"}"
    );

    // status names the account, the gists in use and the hour's budget.
    let text = b.ok(&["status"]);
    for line in [
        format!("GitHub account: {GIST_ACCOUNT}"),
        "Gists in use: ".to_owned(),
        "Requests this hour: ".to_owned(),
    ] {
        assert!(text.contains(&line), "{line:?} missing: {text}");
    }
    let s = b.json(&["status", "--json"]);
    assert_eq!(s["provider"]["account"], GIST_ACCOUNT, "{s}");
    let gists = s["provider"]["containers"].as_u64().unwrap();
    assert_eq!(
        gists as usize,
        vault.gist_parts().unwrap().fake.everything_stored().len()
    );
    assert!(
        s["provider"]["requests_limit"].as_u64().unwrap() >= 5000,
        "{s}"
    );
    assert!(s["provider"]["resets_at"].as_u64().is_some(), "{s}");
}

/// Every word a user chose: file and folder names, contents, device names.
const SECRETS: [&str; 6] = [
    "holiday-plans",
    "zanzibar",
    "Zanzibar in March",
    "ada-laptop",
    "grace-phone",
    "river",
];

#[test]
fn nothing_github_keeps_names_a_memory_a_path_or_a_device() {
    let vault = TempVault::gist();
    let a = TempHome::joined("ada-laptop", &vault);
    let b = TempHome::joined("grace-phone", &vault);
    a.write(
        "holiday-plans/zanzibar.json",
        b"{\"trip\":\"Zanzibar in March\",\"walk\":\"river\"}",
    );
    a.ok(&["push"]);
    a.write(
        "holiday-plans/zanzibar.json",
        b"{\"trip\":\"Zanzibar in March, maybe\"}",
    );
    a.ok(&["push"]);
    b.ok(&["pull"]);
    assert!(b.read("holiday-plans/zanzibar.json").is_some());

    let fake = &vault.gist_parts().unwrap().fake;
    let stored = fake.everything_stored();
    assert!(stored.len() >= 3, "global and one gist per device");
    let mut seen_files = 0;
    for g in &stored {
        assert!(!g.public, "a vault gist must be secret");
        // Not even the vault's prefix: descriptions carry a code for it.
        for d in &g.descriptions {
            assert!(d.starts_with("ghostie-fs v1 "), "{d}");
            assert!(!d.contains("ghostie/"), "{d}");
            for s in SECRETS {
                assert!(!d.to_lowercase().contains(&s.to_lowercase()), "{s} in {d}");
            }
        }
        for revision in &g.revisions {
            for (name, content) in revision {
                seen_files += 1;
                for s in SECRETS {
                    assert!(
                        !name.to_lowercase().contains(&s.to_lowercase()),
                        "{s} in {name}"
                    );
                    assert!(!content.contains(s), "{s} in the text of {name}");
                }
                // What the text stands for, too: base64 of sealed bytes (or a
                // manifest of parts), and only keyring.json is readable JSON.
                if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(content.trim())
                {
                    let text = String::from_utf8_lossy(&bytes);
                    for s in SECRETS {
                        assert!(!text.contains(s), "{s} inside {name}");
                    }
                    if name != "keyring.json" {
                        assert!(
                            serde_json::from_slice::<serde_json::Value>(&bytes).is_err(),
                            "{name} holds readable JSON"
                        );
                    }
                } else {
                    assert!(
                        content.starts_with("parts:v1:"),
                        "{name}: neither base64 nor a manifest"
                    );
                }
            }
        }
    }
    assert!(seen_files > 5, "the history holds the vault's files");
}

#[test]
fn bad_tokens_and_a_server_that_is_not_github_are_one_sentence_each() {
    let vault = TempVault::gist();
    let fake = &vault.gist_parts().unwrap().fake;
    let setup = |h: &TempHome| {
        let args = vault.setup_command(&h.name);
        h.run(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };

    let nobody = TempHome::new("nobody");
    let out = setup(&nobody);
    one_sentence(&out, 1, "no GitHub token");
    assert!(!nobody.home().join("sync").exists());

    let wrong = TempHome::new("wrong");
    wrong.set_github_token(Some("ghp_this0token0github0never0issued00000000"));
    one_sentence(&setup(&wrong), 1, "GitHub refused the token");
    assert!(!wrong.home().join("sync").exists());

    let no_scope = "ghp_only0repo0scope0token00000000000000001";
    fake.add_classic_token(no_scope, GIST_ACCOUNT, &["repo"], None);
    let narrow = TempHome::new("narrow");
    narrow.set_github_token(Some(no_scope));
    one_sentence(&setup(&narrow), 1, "may not write gists");

    // Plain HTTP to a host that is not this machine would send the token in clear.
    let far = TempHome::new("far");
    far.set_github_token(Some(GIST_TOKEN));
    let out = far.run(&[
        "setup",
        "--backend",
        "gist",
        "--api-url",
        "http://example.invalid/api/v3",
    ]);
    one_sentence(&out, 2, "HTTPS");

    // A set-up device whose token goes bad later: each case at push and at mount.
    let a = TempHome::joined("laptop", &vault);
    a.write("x.json", b"x");
    a.ok(&["push"]);
    a.write("y.json", b"y");
    let at_push_and_mount = |needle: &str| {
        one_sentence(&a.run(&["push"]), 1, needle);
        one_sentence(&a.run(&["mount"]), 1, needle);
    };
    a.set_github_token(Some(no_scope));
    at_push_and_mount("may not write gists");
    let own = "ghp_laptop0own0token000000000000000000001";
    fake.add_classic_token(own, GIST_ACCOUNT, &["gist"], None);
    a.set_github_token(Some(own));
    a.ok(&["push"]);
    fake.revoke(own);
    a.write("z.json", b"z");
    at_push_and_mount("GitHub refused the token");

    // An --api-url that answers, but not as GitHub does (a captive portal).
    fake.set_outage(Outage::NotGithub);
    let portal = TempHome::new("portal");
    portal.set_github_token(Some(GIST_TOKEN));
    one_sentence(&setup(&portal), 1, "does not answer as the GitHub API does");
    a.set_github_token(Some(GIST_TOKEN));
    at_push_and_mount("does not answer as the GitHub API does");
}

#[test]
fn a_deleted_vault_gist_is_named_not_taken_for_an_empty_vault() {
    let vault = TempVault::gist();
    let a = TempHome::joined("laptop", &vault);
    a.write("x.json", b"x");
    a.ok(&["push"]);
    // The owner deletes every gist of the vault on github.com.
    let parts = vault.gist_parts().unwrap();
    for key in parts.store.list("ghostie/", None).unwrap() {
        parts.store.delete(&key).unwrap();
    }
    assert!(parts.fake.everything_stored().is_empty());
    a.write("y.json", b"y");
    one_sentence(&a.run(&["push"]), 3, "the vault has no keyring");
    one_sentence(&a.run(&["mount"]), 3, "the vault has no keyring");
}

#[test]
fn a_push_rides_out_github_failing_and_loses_nothing() {
    let vault = TempVault::gist();
    let a = TempHome::joined("laptop", &vault);
    let b = TempHome::joined("phone", &vault);
    let fake = &vault.gist_parts().unwrap().fake;
    for (i, outage) in [Outage::ServerError, Outage::CutConnections]
        .into_iter()
        .enumerate()
    {
        a.write(&format!("f{i}.json"), format!("{{\"n\":{i}}}"));
        fake.set_outage(outage);
        let push = a.background(&["push"]);
        // Shorter than the 3 s a command gives a backend that has not answered yet
        // (README "Backends"): longer, and the push rightly gives up.
        std::thread::sleep(Duration::from_secs(1));
        fake.set_outage(Outage::None);
        let out = push.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{outage:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        b.ok(&["pull"]);
        assert_eq!(
            b.read(&format!("f{i}.json")).unwrap(),
            format!("{{\"n\":{i}}}").into_bytes()
        );
    }
}

#[test]
fn two_devices_making_the_vault_at_the_same_moment_end_with_one() {
    let fake = Arc::new(FakeGithub::start());
    fake.add_classic_token(GIST_TOKEN, GIST_ACCOUNT, &["gist"], None);
    let rival = Arc::new(store_of(&fake));
    let raced = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // The rival creates the vault between our look (none there) and our create.
    let hook = {
        let (rival, raced) = (rival.clone(), raced.clone());
        Box::new(move || {
            if !raced.swap(true, std::sync::atomic::Ordering::SeqCst) {
                rival
                    .put_if_absent("ghostie/global/keyring.json", b"the rival's keyring")
                    .expect("the rival creates");
            }
        })
    };
    let ours = store_of(&fake).before_create(hook);
    let lost = ours.put_if_absent("ghostie/global/keyring.json", b"our keyring");
    assert!(
        raced.load(std::sync::atomic::Ordering::SeqCst),
        "the race never ran"
    );
    assert!(
        matches!(
            lost,
            Err(ghostie_fs::backend::BackendError::AlreadyExists { .. })
        ),
        "{lost:?}"
    );
    // One gist left, the rival's, and every device reads the rival's keyring.
    assert_eq!(fake.everything_stored().len(), 1);
    assert_eq!(
        store_of(&fake).get("ghostie/global/keyring.json").unwrap(),
        b"the rival's keyring"
    );
    assert_eq!(
        ours.get("ghostie/global/keyring.json").unwrap(),
        b"the rival's keyring"
    );
}

#[test]
fn a_device_writing_for_hours_never_meets_a_secondary_limit() {
    // GitHub's real limits (80 a minute, 500 an hour), on the fake's clock.
    let fake = Arc::new(FakeGithub::start());
    fake.add_classic_token(GIST_TOKEN, GIST_ACCOUNT, &["gist"], None);
    let start = fake.now();
    let store = store_of(&fake).with_clock(Arc::new(FakeClock(fake.clone())));
    // A log segment and a small pack per publish, as fast as the store allows.
    for i in 0..700u32 {
        store
            .put(&format!("ghostie/dev1/log/{i:020}.enc"), &i.to_le_bytes())
            .unwrap();
        store
            .put(&format!("ghostie/dev1/memories/{i:08}.enc"), &[7; 300])
            .unwrap();
    }
    let hours = fake.now().duration_since(start).unwrap().as_secs_f64() / 3600.0;
    assert_eq!(fake.secondary_refusals(), 0, "a write was refused");
    assert!(hours > 2.0, "1,400 writes cannot fit in {hours:.2} hours");
    assert!(
        fake.content_requests() as f64 <= 500.0 * hours.ceil(),
        "{} writes in {hours:.2} hours",
        fake.content_requests()
    );
    // Over 300 files: the device continues in further gists, all readable.
    assert!(fake.everything_stored().len() >= 5);
    let reader = store_of(&fake);
    assert_eq!(reader.list("ghostie/dev1/log/", None).unwrap().len(), 700);
    assert_eq!(
        reader
            .get(&format!("ghostie/dev1/log/{:020}.enc", 699))
            .unwrap(),
        699u32.to_le_bytes()
    );
}

#[test]
fn an_idle_mount_costs_github_nothing_but_free_not_modified_answers() {
    let vault = TempVault::gist();
    let a = TempHome::joined("laptop", &vault);
    let b = TempHome::joined("phone", &vault);
    b.write("seen.json", b"{}");
    b.ok(&["push"]);
    let m = a.mount_with(&["--poll", "0.2"], &[]);
    assert!(eventually(WAIT, || m.path("seen.json").exists()));
    assert!(m.drained(WAIT));
    std::thread::sleep(Duration::from_secs(1));
    let fake = &vault.gist_parts().unwrap().fake;
    // One list read once at each end: each request is in it with its answer, so
    // counting the free ones cannot race a request answered between two reads.
    let before = fake.seen().len();
    std::thread::sleep(Duration::from_secs(3));
    let window: Vec<_> = fake.seen().split_off(before);
    assert!(
        window.len() >= 5,
        "the mount did not poll: {} requests",
        window.len()
    );
    let paid: Vec<String> = window
        .iter()
        .filter(|s| s.status != 304)
        .map(|s| format!("{} {} -> {}", s.method, s.path, s.status))
        .collect();
    assert!(paid.is_empty(), "an idle poll paid for a request: {paid:?}");
    // And a change still arrives.
    b.write("new.json", b"{\"n\":1}");
    b.ok(&["push"]);
    assert!(eventually(WAIT, || m.path("new.json").exists()));
}

#[test]
fn two_mounted_devices_write_and_read_at_once_for_a_minute() {
    let vault = TempVault::gist();
    two_mounts_write_and_read_at_once(&vault, 60);
    // Both devices share one account's secondary limits and kept within them.
    assert_eq!(vault.gist_parts().unwrap().fake.secondary_refusals(), 0);
}

#[test]
fn a_rate_limit_is_waited_out_shown_in_status_and_nothing_is_lost() {
    let vault = TempVault::gist();
    let a = TempHome::joined("laptop", &vault);
    let b = TempHome::joined("phone", &vault);
    let fake = &vault.gist_parts().unwrap().fake;
    let m = a.mount_with(&["--poll", "0.5"], &[]);
    // From now on GitHub allows one write a minute (its answer: 403, retry-after).
    fake.set_secondary_limits(1, 500);
    std::fs::write(m.path("first.json"), b"{\"n\":1}").unwrap();
    assert!(
        eventually(WAIT, || fake.secondary_refusals() > 0),
        "the limit never bit"
    );
    let waiting = |s: &serde_json::Value| s["provider"]["waiting_until"].as_u64();
    assert!(
        eventually(10, || waiting(&a.json(&["status", "--json"])).is_some()),
        "status never said the mount waits: {}\n{}",
        a.json(&["status", "--json"]),
        std::fs::read_to_string(a.home().join("sync/mount.log")).unwrap_or_default()
    );
    let text = a.ok(&["status"]);
    assert!(
        text.contains("Waiting for GitHub's rate limit until"),
        "{text}"
    );
    // GitHub lets writes through again; the mount still waits as it was told, and
    // reading goes on meanwhile: another device's change arrives during the wait.
    fake.set_secondary_limits(80, 500);
    b.write("theirs.json", b"{\"from\":\"phone\"}");
    let pushed = b
        .cmd()
        .arg("push")
        .timeout(Duration::from_secs(300))
        .output()
        .unwrap();
    assert!(pushed.status.success(), "{}", stderr(&pushed));
    assert!(
        eventually(20, || m.path("theirs.json").exists()),
        "the mount stopped looking while its upload waited"
    );
    assert!(
        waiting(&a.json(&["status", "--json"])).is_some(),
        "the wait ended early"
    );
    // After the wait (about a minute), the write is there for the other device.
    assert!(m.drained(150), "the upload never completed after the wait");
    b.ok(&["pull"]);
    assert_eq!(b.read("first.json").unwrap(), b"{\"n\":1}");
    assert!(waiting(&a.json(&["status", "--json"])).is_none());
}

#[test]
fn ten_thousand_memories_and_a_50_mib_file_fit_githubs_limits() {
    let vault = TempVault::gist();
    let a = TempHome::joined("laptop", &vault);
    for i in 0..10_000usize {
        a.write(
            &format!("m{:02}/{i:05}.json", i % 50),
            memory_json(i, 1024 + (i * 7919) % (7 * 1024)),
        );
    }
    a.write("big/model.bin", patterned(50 * 1024 * 1024, 13));
    a.ok(&["push"]);
    let b = TempHome::joined("phone", &vault);
    b.ok(&["pull"]);
    assert_eq!(
        contents_of(&b.tree()),
        contents_of(&a.tree()),
        "the new device does not read what was pushed"
    );
    let fake = &vault.gist_parts().unwrap().fake;
    assert_eq!(fake.secondary_refusals(), 0, "a write met GitHub's limit");
    // No file GitHub holds is beyond what its raw URL serves (10 MiB).
    assert!(
        fake.largest_file() <= 10 * 1024 * 1024,
        "{}",
        fake.largest_file()
    );
    eprintln!(
        "{} content-creating requests, {} requests in all, {} gists",
        fake.content_requests(),
        fake.seen().len(),
        fake.everything_stored().len()
    );
}

/// Deletes, at the end of the live test, every gist it made (whatever failed).
struct LiveCleanup {
    token: String,
    prefix: String,
}

impl Drop for LiveCleanup {
    fn drop(&mut self) {
        let Ok(store) = GistStore::new(
            ghostie_fs::backend::github::DEFAULT_API_URL,
            Zeroizing::new(self.token.clone()),
        ) else {
            return;
        };
        if let Ok(keys) = store.list(&format!("{}/", self.prefix), None) {
            for key in keys {
                let _ = store.delete(&key);
            }
        }
    }
}

/// Against real GitHub, only when GHOSTIE_LIVE_GITHUB_TOKEN holds a token with the
/// gist scope (never on this project's machines, which reach no provider): a vault
/// under a prefix of its own, made by one device and found by another, a memory
/// carried between them, status naming the account; every gist it made is deleted.
#[test]
fn live_github_round_trip() {
    let Ok(token) = std::env::var("GHOSTIE_LIVE_GITHUB_TOKEN") else {
        eprintln!("GHOSTIE_LIVE_GITHUB_TOKEN is unset: the live GitHub test did not run");
        return;
    };
    let prefix = unique_prefix("ghostie-live");
    let _cleanup = LiveCleanup {
        token: token.clone(),
        prefix: prefix.clone(),
    };
    let run = |h: &TempHome, args: &[&str]| -> String {
        let out = h.cmd().args(args).env("GH_TOKEN", &token).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        stdout(&out)
    };
    let a = TempHome::new("live-a");
    let b = TempHome::new("live-b");
    for (h, verb) in [(&a, "Created"), (&b, "Joined")] {
        let out = run(
            h,
            &[
                "setup",
                "--backend",
                "gist",
                "--prefix",
                &prefix,
                "--device",
                &h.name,
            ],
        );
        assert!(out.contains(verb), "{out}");
    }
    a.write("live.json", b"{\"live\":true}");
    run(&a, &["push"]);
    run(&b, &["pull"]);
    assert_eq!(b.read("live.json").unwrap(), b"{\"live\":true}");
    let status: serde_json::Value =
        serde_json::from_str(run(&b, &["status", "--json"]).trim()).unwrap();
    assert!(status["provider"]["account"].is_string(), "{status}");
    assert!(
        status["provider"]["containers"].as_u64().unwrap() >= 3,
        "{status}"
    );
}
