//! The vault on a real S3 server (issue #5): SeaweedFS, started on loopback by
//! scripts/test.sh (scripts/lib/s3-server.sh), driven through the CLI like a user.
//! The engine and mount tests run on S3 too (GHOSTIE_TEST_BACKEND=s3); these are the
//! S3-only ones.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;

use common::*;

/// Rewrites one field of a home's backend settings.
fn set_backend_field(h: &TempHome, field: &str, value: &str) {
    let path = h.home().join("sync/config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    config["backend"][field] = value.into();
    std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
}

/// A web server that answers every request with a page, as a wrong URL would.
fn not_s3_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut buf = [0u8; 8192];
            let _ = conn.read(&mut buf);
            let page = "<html><body>Welcome to my blog</body></html>";
            let _ = write!(
                conn,
                "HTTP/1.1 404 Not Found\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
                page.len()
            );
        }
    });
    url
}

#[test]
fn two_devices_share_memories_through_a_bucket() {
    let Some(vault) = TempVault::s3() else { return };
    let laptop = TempHome::joined("laptop", &vault);
    for i in 0..30 {
        laptop.write(&format!("notes/m{i}.json"), memory_json(i, 2000));
    }
    laptop.write("big.bin", patterned(20 * 1024 * 1024, 5));
    laptop.ok(&["push"]);

    let phone = TempHome::joined("phone", &vault);
    phone.ok(&["pull"]);
    assert_eq!(contents_of(&phone.tree()), contents_of(&laptop.tree()));

    // And back, with the config naming the bucket and endpoint but no secret.
    phone.write("from-phone.json", b"{\"hello\": 1}");
    phone.ok(&["push"]);
    laptop.ok(&["pull"]);
    assert_eq!(
        laptop.read("from-phone.json"),
        Some(b"{\"hello\": 1}".to_vec())
    );
    let config = std::fs::read_to_string(laptop.home().join("sync/config.json")).unwrap();
    let s3 = vault.s3_parts().unwrap();
    assert!(
        config.contains(&s3.bucket) && config.contains(&s3.relay.url()),
        "{config}"
    );
    let secret = std::env::var("AWS_SECRET_ACCESS_KEY").unwrap_or_default();
    assert!(
        secret.is_empty() || !config.contains(&secret),
        "the secret was stored"
    );
}

#[test]
fn status_names_the_bucket_and_says_whether_it_answered() {
    let Some(vault) = TempVault::s3() else { return };
    let s3 = vault.s3_parts().unwrap();
    let h = TempHome::joined("laptop", &vault);
    let s = h.json(&["status", "--json"]);
    let backend = s["backend"].as_str().unwrap_or_default();
    assert!(
        backend.contains(&s3.bucket) && backend.contains(&s3.relay.url()),
        "{backend}"
    );
    assert_eq!(s["backend_reachable"], true);

    s3.relay.cut();
    let text = h.ok(&["status"]);
    assert!(text.contains("Backend reachable: no"), "{text}");
    assert!(text.contains("does not answer"), "{text}");
    assert!(text.contains(&s3.relay.url()), "{text}");
    s3.relay.restore();
    assert!(h.ok(&["status"]).contains("Backend reachable: yes"));
}

#[test]
fn setup_without_a_bucket_says_so() {
    let h = TempHome::new("laptop");
    let out = h.run(&["setup", "--backend", "s3", "--device", "laptop"]);
    // A usage mistake: the usage code.
    one_sentence(&out, 2, "--bucket");
}

/// Must-hold 5: each misconfiguration in one sentence at setup, push and mount.
#[test]
fn wrong_credentials_bucket_endpoint_or_server_each_say_so_in_one_sentence() {
    let Some(vault) = TempVault::s3() else { return };
    let not_s3 = not_s3_server();
    let nothing = "http://127.0.0.1:9";
    // (what is wrong, the environment or setting that makes it so, what the user reads)
    type Wrong<'a> = (
        &'a str,
        Option<(&'a str, &'a str)>,
        Option<(&'a str, &'a str)>,
        &'a str,
    );
    let cases: [Wrong; 5] = [
        (
            "wrong secret",
            Some(("AWS_SECRET_ACCESS_KEY", "not-the-secret")),
            None,
            "AWS_SECRET_ACCESS_KEY",
        ),
        (
            "unknown key",
            Some(("AWS_ACCESS_KEY_ID", "AKIDNOSUCHKEY")),
            None,
            "AWS_ACCESS_KEY_ID",
        ),
        (
            "missing bucket",
            None,
            Some(("bucket", "no-such-bucket-here")),
            "does not exist",
        ),
        (
            "not S3",
            None,
            Some(("endpoint", &not_s3)),
            "is not an S3 server",
        ),
        (
            "nothing there",
            None,
            Some(("endpoint", nothing)),
            "does not answer",
        ),
    ];
    let good = TempHome::joined("laptop", &vault);
    good.write("x.json", b"x");
    good.ok(&["push"]);
    let before = vault.keys();
    for (what, env, setting, needle) in cases {
        // setup
        let h = TempHome::new("phone");
        let mut args = vec!["setup".to_owned()];
        let mut backend_args = vault.setup_args();
        if let Some((field, value)) = setting {
            let flag = format!("--{field}");
            let at = backend_args.iter().position(|a| *a == flag).unwrap() + 1;
            backend_args[at] = value.to_owned();
        }
        args.extend(backend_args);
        args.extend(["--device".to_owned(), "phone".to_owned()]);
        let mut c = h.cmd();
        c.args(&args);
        if let Some((k, v)) = env {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        one_sentence(&out, 1, needle);
        assert!(
            !h.home().join("sync/config.json").exists(),
            "{what}: setup left a config"
        );

        // push, from a home set up while everything was right
        let h = TempHome::joined(&format!("p{}", what.len()), &vault);
        h.write("y.json", b"y");
        if let Some((field, value)) = setting {
            set_backend_field(&h, field, value);
        }
        let mut c = h.cmd();
        c.arg("push");
        if let Some((k, v)) = env {
            c.env(k, v);
        }
        one_sentence(&c.output().unwrap(), 1, needle);

        // mount
        let mut c = h.cmd();
        c.arg("mount");
        if let Some((k, v)) = env {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        if what == "nothing there" {
            // A backend that does not answer may be down for a while: the mount
            // works from this device's copy and says why it cannot upload.
            assert!(out.status.success(), "{what}: {}", stderr(&out));
            let mounted = h.adopt_mount();
            let warning = stderr(&out);
            assert!(
                warning.contains(needle) && warning.contains(nothing),
                "{warning}"
            );
            assert_eq!(std::fs::read(h.file("y.json")).unwrap(), b"y");
            // What was queued stays queued for the next mount.
            drop(mounted);
        } else {
            one_sentence(&out, 1, needle);
            assert!(
                !std::fs::read_to_string("/proc/mounts")
                    .unwrap()
                    .contains(h.memories().to_str().unwrap()),
                "{what}: mounted anyway"
            );
        }
    }
    // Each joined home added its device record; nothing else reached the bucket.
    assert_eq!(vault.keys().len(), before.len() + 5, "{:?}", vault.keys());

    // No credentials anywhere in the AWS chain.
    let h = TempHome::new("nocreds");
    let empty = tempfile::tempdir().unwrap();
    let mut args = vec!["setup".to_owned()];
    args.extend(vault.setup_args());
    let out = h
        .cmd()
        .args(&args)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env("HOME", empty.path())
        .env("AWS_CONFIG_FILE", empty.path().join("config"))
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            empty.path().join("credentials"),
        )
        .output()
        .unwrap();
    one_sentence(&out, 1, "No AWS credentials");

    // An endpoint that is not a URL at all.
    let h = TempHome::new("badurl");
    let out = h.run(&[
        "setup",
        "--backend",
        "s3",
        "--bucket",
        "b",
        "--endpoint",
        "s3 dot example",
    ]);
    one_sentence(&out, 1, "is not a URL");
}

/// Must-hold 3: requests share a few kept-alive connections, and uploads run a few
/// at a time, never one connection per object.
#[test]
fn uploads_reuse_connections_and_run_a_few_at_a_time() {
    let Some(vault) = TempVault::s3() else { return };
    let s3 = vault.s3_parts().unwrap();
    let h = TempHome::joined("laptop", &vault);
    // Files from 1 MiB get a pack each: 24 packs to upload.
    for i in 0..24 {
        h.write(&format!("big{i}.bin"), patterned(1024 * 1024 + i, i as u64));
    }
    s3.relay.reset_counts();
    h.ok(&["push"]);
    let packs = vault.keys_under("/memories/").len();
    assert!(packs >= 24, "{packs} packs");
    let connections = s3.relay.connections();
    assert!(
        connections <= 8,
        "{connections} connections for {packs} uploads: not reused"
    );
    // Counted as requests sent and not yet answered, not as open connections: a
    // client's pool keeps idle connections open, and may open one more in the
    // instant before another comes back to it, neither of which is a request.
    let most = s3.relay.most_in_flight();
    assert!(
        (2..=4).contains(&most),
        "{most} requests in flight at once: uploads should run four at a time"
    );
}

/// Long enough for a retry after the worker's longest backoff (30 s).
const WAIT: u64 = 90;

/// Waits for a background command and returns its output, failing after `secs`.
fn finish(mut child: std::process::Child, secs: u64) -> std::process::Output {
    assert!(
        eventually(secs, || child.try_wait().ok().flatten().is_some()),
        "the command did not finish within {secs} s"
    );
    child.wait_with_output().unwrap()
}

/// Must-hold 4: the S3 server stops in the middle of a push and starts again; the
/// same push finishes by itself, with nothing lost.
#[test]
fn a_push_waits_out_a_stopped_server_and_completes() {
    let Some(mut server) = OwnS3Server::start() else {
        return;
    };
    let vault = server.vault();
    let laptop = TempHome::joined("laptop", &vault);
    let phone = TempHome::joined("phone", &vault);
    // Files from 1 MiB get a pack each: the upload is long enough to interrupt.
    for i in 0..150 {
        laptop.write(
            &format!("big/b{i}.bin"),
            patterned(1024 * 1024 + i, i as u64),
        );
    }
    for i in 0..100 {
        laptop.write(&format!("notes/m{i}.json"), memory_json(i, 1500));
    }
    let push = laptop.background(&["push"]);
    assert!(
        eventually(WAIT, || !vault.keys_under("/memories/").is_empty()),
        "the push uploaded nothing"
    );
    server.stop();
    let mut push = push;
    assert!(
        push.try_wait().unwrap().is_none(),
        "the push finished before the server stopped: nothing was interrupted"
    );
    // Meanwhile, another device's status says the backend does not answer.
    let status = phone.ok(&["status"]);
    assert!(status.contains("Backend reachable: no"), "{status}");
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert!(push.try_wait().unwrap().is_none(), "the push gave up");
    server.restart();

    let out = finish(push, WAIT);
    assert!(out.status.success(), "the push failed: {}", stderr(&out));
    assert!(
        stderr(&out).contains("does not answer") && stderr(&out).contains("answers again"),
        "the push did not say why it paused: {}",
        stderr(&out)
    );
    assert!(phone.ok(&["status"]).contains("Backend reachable: yes"));
    phone.ok(&["pull"]);
    assert_eq!(contents_of(&phone.tree()), contents_of(&laptop.tree()));
    assert_eq!(phone.names().len(), 250 + 2);
}

/// Must-hold 4: the S3 server stops in the middle of a burst of writes through a
/// mount and starts again; the mount uploads everything without a remount.
#[test]
fn a_mount_keeps_every_write_through_a_stopped_server() {
    let Some(mut server) = OwnS3Server::start() else {
        return;
    };
    let vault = server.vault();
    let laptop = TempHome::joined("laptop", &vault);
    let phone = TempHome::joined("phone", &vault);
    let m = laptop.mount_with(&["--poll", "1"], &[]);
    std::fs::create_dir(m.path("burst")).unwrap();
    for i in 0..300 {
        if i == 100 {
            server.stop();
        }
        // Each close is an acknowledgement: the file must survive.
        std::fs::write(m.path(&format!("burst/f{i}.json")), memory_json(i, 1200)).unwrap();
    }
    assert!(
        eventually(WAIT, || m.status()["backend_reachable"] == false),
        "the mount never noticed"
    );
    let status = laptop.ok(&["status"]);
    assert!(status.contains("Backend reachable: no"), "{status}");
    // Reads of what it has keep working.
    assert_eq!(
        std::fs::read(m.path("burst/f250.json")).unwrap(),
        memory_json(250, 1200)
    );
    server.restart();

    assert!(
        m.drained(WAIT),
        "the queue did not drain after the server came back: {}",
        m.log()
    );
    assert!(eventually(WAIT, || m.status()["backend_reachable"] == true));
    phone.ok(&["pull"]);
    for i in 0..300 {
        assert_eq!(
            phone.read(&format!("burst/f{i}.json")),
            Some(memory_json(i, 1200)),
            "f{i}"
        );
    }
    // And the mount hears from the other device again.
    phone.write("after.json", b"{\"after\":true}");
    phone.ok(&["push"]);
    assert!(eventually(WAIT, || std::fs::read(m.path("after.json"))
        .ok()
        == Some(b"{\"after\":true}".to_vec())));
}

/// Must-hold 6: two devices mounted on one S3 vault write and read at once for a
/// minute; both end with the same namespace, and every file written is there, as
/// itself or as a conflict sibling.
#[test]
fn two_mounted_devices_write_and_read_at_once_for_a_minute() {
    let Some(vault) = TempVault::s3() else { return };
    two_mounts_write_and_read_at_once(&vault, 60);
}
