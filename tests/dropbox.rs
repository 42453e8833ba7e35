//! The Dropbox backend through the CLI, against a fake Dropbox of its own per test
//! (tests/common/fake_dropbox.rs enforces Dropbox's documented behaviour): logging
//! in with PKCE, what Dropbox gets to see, writes batched so that no commit meets
//! another, idle polls that cost one request, changes heard through the longpoll,
//! access tokens renewed mid-run, faults and bad input. The engine and mount tests
//! run on Dropbox as well (GHOSTIE_TEST_BACKEND=dropbox in scripts/test.sh).

mod common;

use std::time::{Duration, Instant};

use common::fake_dropbox::Outage;
use common::*;

/// How long a change may take to reach another device in these tests (the
/// benchmark, not a test, measures how fast it is).
const WAIT: u64 = 30;

const SECRETS: [&str; 6] = [
    "ada-laptop",
    "grace-phone",
    "holiday-plans",
    "zanzibar",
    "Zanzibar in March",
    "river",
];

fn setup(h: &TempHome, vault: &TempVault) -> std::process::Output {
    let args = vault.setup_command(&h.name);
    h.run(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

#[test]
fn a_device_logs_in_and_the_next_joins_and_status_names_the_account() {
    let vault = TempVault::dropbox();
    let a = TempHome::joined("laptop", &vault);
    let b = TempHome::joined("phone", &vault);
    // From here on both use what 'login dropbox' stored, not the environment.
    a.set_dropbox_env(false);
    b.set_dropbox_env(false);
    a.write("notes/walk.json", b"{\"note\":\"walked by the river\"}");
    a.ok(&["push"]);
    b.ok(&["pull"]);
    assert_eq!(
        b.read("notes/walk.json").unwrap(),
        b"{\"note\":\"walked by the river\"}"
    );
    // Without the passphrase status cannot open the sealed login, but it names
    // the account the login was stored for.
    let status = b.json(&["status", "--json"]);
    assert!(
        status.to_string().contains("app folder"),
        "status does not say where the vault lives: {status}"
    );
    let stored = status["credentials"]["credentials"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        stored
            .iter()
            .any(|c| c["provider"] == "dropbox"
                && c["account"].as_str().is_some_and(|a| !a.is_empty())),
        "{status}"
    );
    // With a login it can use, it asks Dropbox whose account and how full.
    b.set_dropbox_env(true);
    let status = b.json(&["status", "--json"]);
    let account = status["provider"]["account"].as_str().unwrap_or_default();
    assert!(!account.is_empty(), "status names no account: {status}");
    assert!(
        status["provider"]["space_used"].as_u64().is_some(),
        "{status}"
    );
    let login = b.json(&["login", "--status", "--json"]);
    let listed = login["credentials"].as_array().unwrap();
    assert!(listed.iter().any(|c| c["provider"] == "dropbox"), "{login}");
    assert!(!login.to_string().contains(DROPBOX_REFRESH_TOKEN));
    // Logging out revokes the login at Dropbox, not only here.
    b.set_dropbox_env(false);
    let out = b.ok(&["logout", "dropbox"]);
    assert!(out.contains("revoked at Dropbox"), "{out}");
    let fake = &vault.dropbox_parts().unwrap().fake;
    assert!(fake.count("auth/token/revoke") >= 1);
    let login = b.json(&["login", "--status", "--json"]);
    assert!(
        login["credentials"].as_array().unwrap().is_empty(),
        "{login}"
    );
    b.write("after-logout.json", b"{}");
    let out = b.run(&["push"]);
    one_sentence(&out, 1, "login dropbox");
}

#[test]
fn a_device_without_a_keyring_logs_in_as_it_sets_up() {
    let vault = TempVault::dropbox();
    let d = vault.dropbox_parts().unwrap();
    let homes = [TempHome::new("phone"), TempHome::new("tablet")];
    for (h, verb) in homes.iter().zip(["Created", "Joined"]) {
        // No OS keyring in the tests' environment: a login before setup has
        // nowhere to go, and says how to log in instead.
        let out = h
            .cmd()
            .args([
                "login",
                "dropbox",
                "--app-key",
                DROPBOX_APP_KEY,
                // Were a keyring to answer, the code would go to the fake.
                "--api-url",
                &d.relays[0].url(),
                "--code-stdin",
            ])
            .write_stdin("code\n")
            .output()
            .unwrap();
        one_sentence(&out, 1, "setup --backend dropbox --app-key");
        let mut args: Vec<String> = vault.setup_command(&h.name);
        args.extend([
            "--app-key".into(),
            DROPBOX_APP_KEY.into(),
            "--code-stdin".into(),
        ]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (out, printed) = with_dropbox_consent(d, h.home(), &args, |c| {
            c.envs_isolated(h).env("GHOSTIE_PASSPHRASE", PASSPHRASE);
        });
        assert!(out.status.success(), "setup: {printed}{}", stderr(&out));
        assert!(printed.contains(verb), "{printed}");
        assert!(printed.contains("Logged in to Dropbox"), "{printed}");
    }
    // The login was kept, sealed: later commands need no environment.
    homes[0].write("from-the-phone.json", b"{}");
    homes[0].ok(&["push"]);
    homes[1].ok(&["pull"]);
    assert!(homes[1].read("from-the-phone.json").is_some());
    let stored = homes[1].json(&["login", "--status", "--json"]);
    assert_eq!(stored["credentials"][0]["provider"], "dropbox", "{stored}");
    assert_eq!(stored["credentials"][0]["kept_in"], "file", "{stored}");
    // Without an app key and without a login, setup says what to give.
    let h = TempHome::new("laptop");
    let out = setup(&h, &vault);
    one_sentence(&out, 2, "--app-key");
    // A setup that fails after its login (a wrong passphrase for the vault)
    // leaves no usable login behind: it is revoked at Dropbox.
    let revoked_before = d.fake.count("auth/token/revoke");
    let mut args: Vec<String> = vault.setup_command("desk");
    args.extend([
        "--app-key".into(),
        DROPBOX_APP_KEY.into(),
        "--code-stdin".into(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let desk = TempHome::new("desk");
    let (out, printed) = with_dropbox_consent(d, desk.home(), &args, |c| {
        c.envs_isolated(&desk)
            .env("GHOSTIE_PASSPHRASE", "not the vault's passphrase");
    });
    assert_eq!(out.status.code(), Some(5), "{printed}{}", stderr(&out));
    assert_eq!(d.fake.count("auth/token/revoke"), revoked_before + 1);
    assert!(!desk.home().join("sync/config.json").exists());
}

#[test]
fn nothing_dropbox_keeps_names_a_memory_a_path_or_a_device() {
    let vault = TempVault::dropbox();
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
    let stored = vault.dropbox_parts().unwrap().fake.everything_stored();
    assert!(
        stored.len() > 5,
        "the app folder holds the vault: {}",
        stored.len()
    );
    for (path, content) in &stored {
        for s in SECRETS {
            assert!(
                !path.to_lowercase().contains(&s.to_lowercase()),
                "{s} in the path {path}"
            );
            assert!(
                !content.windows(s.len()).any(|w| w == s.as_bytes()),
                "{s} inside {path}"
            );
        }
        if !path.ends_with("keyring.json") && !content.is_empty() {
            assert!(
                serde_json::from_slice::<serde_json::Value>(content).is_err(),
                "{path} holds readable JSON"
            );
        }
    }
}

#[test]
fn ten_thousand_memories_and_a_200_mib_file_push_without_a_write_conflict() {
    let vault = TempVault::dropbox();
    let a = TempHome::joined("laptop", &vault);
    for i in 0..10_000usize {
        a.write(
            &format!("m{:02}/{i:05}.json", i % 50),
            memory_json(i, 1024 + (i * 7919) % (7 * 1024)),
        );
    }
    a.write("big/model.bin", patterned(200 * 1024 * 1024, 13));
    a.ok(&["push"]);
    let fake = &vault.dropbox_parts().unwrap().fake;
    assert_eq!(
        fake.write_conflicts(),
        0,
        "a commit met another (too_many_write_operations)"
    );
    let b = TempHome::joined("phone", &vault);
    b.ok(&["pull"]);
    assert!(
        contents_of(&b.tree()) == contents_of(&a.tree()),
        "the new device does not read what was pushed"
    );
    assert_eq!(fake.write_conflicts(), 0);
    eprintln!(
        "{} requests in all: {} single uploads, {} session starts, {} appends, {} batch commits",
        fake.seen().len(),
        fake.count("files/upload"),
        fake.count("files/upload_session/start"),
        fake.count("files/upload_session/append_v2"),
        fake.count("files/upload_session/finish_batch_v2"),
    );
}

#[test]
fn an_idle_poll_costs_one_list_folder_continue_for_the_whole_vault() {
    let vault = TempVault::dropbox();
    let a = TempHome::joined("laptop", &vault);
    let b = TempHome::joined("phone", &vault);
    let c = TempHome::joined("tablet", &vault);
    for h in [&b, &c] {
        h.write(&format!("{}.json", h.name), b"{}");
        h.ok(&["push"]);
    }
    // Polls further apart than a listing is shared, so each one asks Dropbox.
    let m = a.mount_with(&["--poll", "1.5"], &[]);
    assert!(eventually(WAIT, || m.path("tablet.json").exists()));
    assert!(m.drained(WAIT));
    std::thread::sleep(Duration::from_secs(2));
    let fake = &vault.dropbox_parts().unwrap().fake;
    let before = fake.seen().len();
    let polls_before = m.status()["polls"].as_u64().unwrap();
    std::thread::sleep(Duration::from_secs(9));
    let polls = m.status()["polls"].as_u64().unwrap() - polls_before;
    let window: Vec<_> = fake.seen()[before..].to_vec();
    let asked: Vec<&str> = window
        .iter()
        .map(|s| s.endpoint.as_str())
        .filter(|e| *e != "files/list_folder/longpoll")
        .collect();
    assert!(polls >= 3, "the mount did not poll: {polls} polls");
    assert!(
        asked.iter().all(|e| *e == "files/list_folder/continue"),
        "an idle poll asked for more than the changes: {asked:?}"
    );
    assert!(
        asked.len() as u64 <= polls + 1,
        "{} requests for {polls} polls of a vault of three devices",
        asked.len()
    );
}

#[test]
fn a_mount_hears_of_a_new_file_at_once_not_at_the_poll_interval() {
    let vault = TempVault::dropbox();
    let a = TempHome::joined("laptop", &vault);
    let b = TempHome::joined("phone", &vault);
    // A poll interval longer than the test: only the longpoll can bring the file.
    let m = b.mount_with(&["--poll", "600"], &[]);
    assert!(m.drained(WAIT));
    std::thread::sleep(Duration::from_secs(1));
    a.write("news.json", b"{\"heard\":true}");
    a.ok(&["push"]);
    let pushed = Instant::now();
    assert!(
        eventually(WAIT, || m.path("news.json").exists()),
        "the new file never reached the mount: {}",
        m.log()
    );
    eprintln!("seen {:?} after the push ended", pushed.elapsed());
    assert_eq!(
        std::fs::read(m.path("news.json")).unwrap(),
        b"{\"heard\":true}"
    );
    // And after Dropbox resets every cursor, changes still arrive.
    vault.dropbox_parts().unwrap().fake.reset_cursors();
    a.write("after-reset.json", b"{}");
    a.ok(&["push"]);
    assert!(eventually(WAIT, || m.path("after-reset.json").exists()));
}

#[test]
fn a_mount_whose_polls_fail_does_not_hammer_dropbox_when_told_of_changes() {
    let vault = TempVault::dropbox();
    let a = TempHome::joined("laptop", &vault);
    let b = TempHome::joined("phone", &vault);
    a.set_dropbox_env(false);
    let fake = &vault.dropbox_parts().unwrap().fake;
    let m = a.mount_with(&["--poll", "0.5"], &[]);
    assert!(m.drained(WAIT));
    std::thread::sleep(Duration::from_secs(1));
    // The laptop's login is revoked (its polls now fail), the phone's is not; the
    // longpoll needs no login and keeps telling the laptop of the phone's changes.
    fake.revoke_logins_except(DROPBOX_APP_KEY, DROPBOX_REFRESH_TOKEN);
    fake.advance_clock(Duration::from_secs(5 * 3600));
    let before = fake.seen().len();
    for i in 0..3 {
        b.write(&format!("p{i}.json"), b"{}");
        b.ok(&["push"]);
    }
    std::thread::sleep(Duration::from_secs(5));
    let window: Vec<_> = fake.seen()[before..].to_vec();
    let longpolls = window
        .iter()
        .filter(|s| s.endpoint == "files/list_folder/longpoll")
        .count();
    let from_laptop = window.len();
    assert!(
        longpolls <= 4,
        "{longpolls} longpolls in 5 s: the change notification spins"
    );
    assert!(
        from_laptop < 120,
        "{from_laptop} requests in 5 s from a mount whose polls fail"
    );
    assert!(
        m.status()["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("login dropbox")),
        "{}",
        m.status()
    );
}

#[test]
fn an_access_token_that_expires_mid_run_is_renewed_without_a_failure() {
    let vault = TempVault::dropbox();
    let a = TempHome::joined("laptop", &vault);
    let b = TempHome::joined("phone", &vault);
    a.set_dropbox_env(false);
    let fake = &vault.dropbox_parts().unwrap().fake;
    let m = a.mount_with(&["--poll", "0.5"], &[]);
    std::fs::write(m.path("before.json"), b"{\"n\":1}").unwrap();
    assert!(m.drained(WAIT));
    let refreshes = fake.count("oauth2/token");
    // Five hours on Dropbox's clock: every access token issued so far has lapsed.
    fake.advance_clock(Duration::from_secs(5 * 3600));
    std::fs::write(m.path("after.json"), b"{\"n\":2}").unwrap();
    assert!(
        eventually(WAIT, || {
            b.ok(&["pull"]);
            b.read("after.json").is_some()
        }),
        "the write after the tokens lapsed never arrived: {}",
        m.log()
    );
    assert!(
        fake.count("oauth2/token") > refreshes,
        "no new access token was asked for"
    );
    let expired = fake
        .seen()
        .iter()
        .filter(|s| {
            s.error_summary
                .as_deref()
                .is_some_and(|e| e.starts_with("expired_access_token"))
        })
        .count();
    assert!(expired > 0, "Dropbox never said the token expired");
    let status = m.status();
    assert!(status["last_error"].is_null(), "{status}");
    assert_eq!(b.read("after.json").unwrap(), b"{\"n\":2}");
}

#[test]
fn a_revoked_login_stops_with_one_sentence_saying_to_log_in_again() {
    let vault = TempVault::dropbox();
    let a = TempHome::joined("laptop", &vault);
    a.set_dropbox_env(false);
    // The owner removes the app at Dropbox: every login of it is void, the
    // access token this device stored included.
    vault
        .dropbox_parts()
        .unwrap()
        .fake
        .revoke_app(DROPBOX_APP_KEY);
    a.write("x.json", b"{}");
    let out = a.run(&["push"]);
    one_sentence(&out, 6, "login dropbox");
}

#[test]
fn bad_input_is_one_sentence_each() {
    let vault = TempVault::dropbox();
    let d = vault.dropbox_parts().unwrap();
    // No login at all.
    let h = TempHome::new("nobody");
    let out = setup(&h, &vault);
    one_sentence(&out, 2, "--app-key");
    // A login with an app key Dropbox does not know, and with a mistyped code.
    let a = TempHome::joined("laptop", &vault);
    for (key, code, needle) in [
        ("unknownappkey", "some-code", "app key"),
        (DROPBOX_APP_KEY, "mistyped-code", "did not take that code"),
    ] {
        let out = a
            .cmd()
            .args([
                "login",
                "dropbox",
                "--app-key",
                key,
                "--api-url",
                &d.relays[0].url(),
                "--code-stdin",
            ])
            .write_stdin(format!("{code}\n"))
            .output()
            .unwrap();
        one_sentence(&out, 6, needle);
    }
    let out = a
        .cmd()
        .args(["login", "dropbox", "--app-key", "not a key!"])
        .output()
        .unwrap();
    one_sentence(&out, 2, "app key");
    // A Dropbox that is full.
    d.fake.set_quota(1);
    a.write("big.json", vec![b'x'; 10_000]);
    let out = a.run(&["push"]);
    one_sentence(&out, 1, "full");
    d.fake.set_quota(u64::MAX / 4);
    a.ok(&["push"]);
    // A server that is not Dropbox.
    d.fake.set_outage(Outage::NotDropbox);
    let h = TempHome::new("elsewhere");
    h.set_dropbox_env(true);
    let out = setup(&h, &vault);
    one_sentence(&out, 1, "does not answer as");
    d.fake.set_outage(Outage::None);
}

#[test]
fn a_push_rides_out_server_errors_throttling_and_cut_connections() {
    // Also once the push is under way: a long outage in the middle of it.
    let long = TempVault::dropbox();
    let l = TempHome::joined("desktop", &long);
    for i in 0..40 {
        l.write(&format!("bulk/{i}.json"), memory_json(i, 300_000));
    }
    let lf = &long.dropbox_parts().unwrap().fake;
    lf.set_latency(Duration::from_millis(50));
    let uploads = || lf.count("files/upload_session/start") + lf.count("files/upload");
    let before = uploads();
    let push = l.background(&["push"]);
    assert!(eventually(WAIT, || uploads() > before));
    lf.set_outage(Outage::ServerError);
    std::thread::sleep(Duration::from_secs(6));
    lf.set_outage(Outage::None);
    let out = push.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "a long outage mid-push: {}",
        stderr(&out)
    );

    let vault = TempVault::dropbox();
    let a = TempHome::joined("laptop", &vault);
    let b = TempHome::joined("phone", &vault);
    let fake = &vault.dropbox_parts().unwrap().fake;
    for (n, outage) in [
        Outage::ServerError,
        Outage::TooManyRequests {
            retry_after_secs: 1,
        },
        Outage::CutConnections,
    ]
    .into_iter()
    .enumerate()
    {
        a.write(&format!("f{n}.json"), format!("{{\"n\":{n}}}"));
        fake.set_outage(outage);
        let push = a.background(&["push"]);
        // Shorter than a command's patience with a backend that has not answered
        // it yet (about 3 s, README "Backends"): longer is taken as a wrong address.
        std::thread::sleep(Duration::from_millis(1_500));
        fake.set_outage(Outage::None);
        let out = push.wait_with_output().unwrap();
        assert!(out.status.success(), "{outage:?}: {}", stderr(&out));
    }
    b.ok(&["pull"]);
    for n in 0..3 {
        assert_eq!(
            b.read(&format!("f{n}.json")).unwrap(),
            format!("{{\"n\":{n}}}").as_bytes()
        );
    }
}

#[test]
fn two_mounted_devices_write_and_read_at_once_for_a_minute() {
    let vault = TempVault::dropbox();
    two_mounts_write_and_read_at_once(&vault, 60);
}

/// Against real Dropbox, only when GHOSTIE_LIVE_DROPBOX_TOKEN holds an access token
/// of an app with App-folder access (never on this project's machines, which reach
/// no provider): a vault under a prefix of its own carried between two devices;
/// everything it made is deleted.
#[test]
fn live_dropbox_round_trip() {
    let Ok(token) = std::env::var("GHOSTIE_LIVE_DROPBOX_TOKEN") else {
        eprintln!("GHOSTIE_LIVE_DROPBOX_TOKEN is unset: the live Dropbox test did not run");
        return;
    };
    let prefix = unique_prefix("ghostie-live");
    let run = |h: &TempHome, args: &[&str]| -> String {
        let out = h
            .cmd()
            .args(args)
            .env("GHOSTIE_DROPBOX_TOKEN", &token)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        stdout(&out)
    };
    let a = TempHome::new("live-a");
    let b = TempHome::new("live-b");
    for h in [&a, &b] {
        run(
            h,
            &[
                "setup",
                "--backend",
                "dropbox",
                "--prefix",
                &prefix,
                "--device",
                &h.name,
            ],
        );
    }
    a.write("live.json", b"{\"live\":true}");
    run(&a, &["push"]);
    run(&b, &["pull"]);
    assert_eq!(b.read("live.json").unwrap(), b"{\"live\":true}");
}
