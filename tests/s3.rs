//! The vault on a real S3 server (issue #5): SeaweedFS, started on loopback by
//! scripts/test.sh (scripts/lib/s3-server.sh), driven through the CLI like a user.

mod common;

use common::*;

/// The test server's endpoint and bucket, and a prefix of this test's own (`tag`).
fn s3_vault(tag: &str) -> Option<(String, String, String)> {
    let Ok(endpoint) = std::env::var("GHOSTIE_TEST_S3_ENDPOINT") else {
        assert!(
            std::env::var_os("GHOSTIE_REQUIRE_S3").is_none(),
            "GHOSTIE_REQUIRE_S3 is set but no S3 server was started"
        );
        eprintln!("no S3 server (GHOSTIE_TEST_S3_ENDPOINT unset): run scripts/test.sh");
        return None;
    };
    let bucket = std::env::var("GHOSTIE_TEST_S3_BUCKET").expect("GHOSTIE_TEST_S3_BUCKET");
    let prefix = format!("t{}-{tag}", std::process::id());
    Some((endpoint, bucket, prefix))
}

fn join_s3(name: &str, endpoint: &str, bucket: &str, prefix: &str) -> TempHome {
    let h = TempHome::new(name);
    h.ok(&[
        "setup",
        "--backend",
        "s3",
        "--bucket",
        bucket,
        "--endpoint",
        endpoint,
        "--path-style",
        "--prefix",
        prefix,
        "--device",
        name,
    ]);
    h
}

#[test]
fn two_devices_share_memories_through_a_bucket() {
    let Some((endpoint, bucket, prefix)) = s3_vault("share") else {
        return;
    };
    let laptop = join_s3("laptop", &endpoint, &bucket, &prefix);
    for i in 0..30 {
        laptop.write(&format!("notes/m{i}.json"), memory_json(i, 2000));
    }
    laptop.write("big.bin", patterned(3 * 1024 * 1024, 5));
    laptop.ok(&["push"]);

    let phone = join_s3("phone", &endpoint, &bucket, &prefix);
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
    assert!(
        config.contains(&bucket) && config.contains(&endpoint),
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
    let Some((endpoint, bucket, prefix)) = s3_vault("status") else {
        return;
    };
    let h = join_s3("laptop", &endpoint, &bucket, &prefix);
    let s = h.json(&["status", "--json"]);
    let backend = s["backend"].as_str().unwrap_or_default();
    assert!(
        backend.contains(&bucket) && backend.contains(&endpoint),
        "{backend}"
    );
    assert_eq!(s["backend_reachable"], true);

    // The same home pointed at an endpoint where nothing listens.
    let config_path = h.home().join("sync/config.json");
    let config = std::fs::read_to_string(&config_path).unwrap();
    std::fs::write(
        &config_path,
        config.replace(&endpoint, "http://127.0.0.1:9"),
    )
    .unwrap();
    let text = h.ok(&["status"]);
    assert!(text.contains("Backend reachable: no"), "{text}");
    assert!(text.contains("127.0.0.1:9"), "{text}");
}

#[test]
fn setup_without_a_bucket_says_so() {
    let h = TempHome::new("laptop");
    let out = h.run(&["setup", "--backend", "s3", "--device", "laptop"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--bucket"), "{}", stderr(&out));
}
