//! The Gist store against the fake GitHub: the conformance suite every backend
//! passes, then Gist's own limits. (The engine and mount tests run on Gist too:
//! GHOSTIE_TEST_BACKEND=gist.)

mod common;

use ghostie_fs::backend::gist::{Clock, GistStore, FILES_PER_GIST, PART_BYTES};
use ghostie_fs::backend::tests::Sizes;
use ghostie_fs::backend::ObjectStore;
use zeroize::Zeroizing;

use common::fake_github::FakeGithub;

/// Time as the fake GitHub keeps it: waiting moves the fake's clock instead of
/// sleeping, so a test covers rate-limit windows without waiting them out.
struct FakeClock {
    fake: std::sync::Arc<FakeGithub>,
    slept: std::sync::Mutex<std::time::Duration>,
}

impl FakeClock {
    fn new(fake: std::sync::Arc<FakeGithub>) -> Self {
        Self {
            fake,
            slept: Default::default(),
        }
    }
    fn slept(&self) -> std::time::Duration {
        *self.slept.lock().unwrap()
    }
}

impl Clock for FakeClock {
    fn now(&self) -> std::time::SystemTime {
        self.fake.now()
    }
    fn sleep(&self, d: std::time::Duration) {
        *self.slept.lock().unwrap() += d;
        self.fake.advance_clock(d);
    }
}

const TOKEN: &str = "ghp_gist0store0test0token000000000000001";

/// A store of one device, as a process of its own would open it.
fn store(fake: &FakeGithub) -> GistStore {
    GistStore::new(&fake.url(), Zeroizing::new(TOKEN.to_owned())).expect("store")
}

fn fake() -> FakeGithub {
    let fake = FakeGithub::start();
    fake.add_classic_token(TOKEN, "octo-ghost", &["gist"], None);
    fake
}

#[test]
fn the_gist_store_passes_the_conformance_suite() {
    let fake = fake();
    ghostie_fs::backend::tests::check(&store(&fake), Sizes::NotTold);
    // Another vault (another prefix) in the same account sees none of it.
    let other = store(&fake);
    other.put("w2/a/x", b"other vault").unwrap();
    assert!(other.list("w/", None).unwrap().is_empty());
    assert_eq!(
        store(&fake).list("v/a/", None).unwrap(),
        vec!["v/a/x", "v/a/z"]
    );
}

#[test]
fn objects_over_a_megabyte_are_read_whole_never_from_the_cut() {
    let fake = fake();
    let s = store(&fake);
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    s.put("ghostie/dev1/memories/pack.enc", &big).unwrap();
    // A second store, as another device would: reads the gist afresh.
    let other = store(&fake);
    assert_eq!(other.get("ghostie/dev1/memories/pack.enc").unwrap(), big);
    assert_eq!(
        other
            .get_range("ghostie/dev1/memories/pack.enc", 2_000_000..2_000_010)
            .unwrap(),
        &big[2_000_000..2_000_010]
    );
    assert!(fake.seen().iter().any(|r| r.path.starts_with("/raw/")));
}

#[test]
fn a_group_continues_in_a_new_gist_after_300_files() {
    let fake = fake();
    // 305 writes: the store paces itself under GitHub's 80 a minute (on the fake's
    // clock, so the test does not wait the five minutes out) and is never refused.
    let fake = std::sync::Arc::new(fake);
    let s = store(&fake).with_clock(std::sync::Arc::new(FakeClock::new(fake.clone())));
    for i in 0..(FILES_PER_GIST + 5) {
        s.put(
            &format!("ghostie/dev1/log/{i:06}.enc"),
            format!("{i}").as_bytes(),
        )
        .unwrap();
    }
    let stored = fake.everything_stored();
    assert_eq!(stored.len(), 2, "one gist of 300 files, then another");
    assert_eq!(fake.secondary_refusals(), 0);
    let other = store(&fake);
    let keys = other.list("ghostie/dev1/log/", None).unwrap();
    assert_eq!(keys.len(), FILES_PER_GIST + 5);
    assert_eq!(other.get("ghostie/dev1/log/000302.enc").unwrap(), b"302");
}

#[test]
fn an_idle_look_costs_only_free_not_modified_answers() {
    let fake = fake();
    let s = store(&fake);
    s.put("ghostie/dev1/log/000001.enc", b"1").unwrap();
    s.put("ghostie/dev2/log/000001.enc", b"2").unwrap();
    let reader = store(&fake);
    assert_eq!(reader.list("ghostie/", None).unwrap().len(), 2);
    let before = fake.seen().len();
    let free_before = fake.not_modified_count();
    assert_eq!(reader.list("ghostie/", None).unwrap().len(), 2);
    let spent = fake.seen().len() - before;
    assert_eq!(
        fake.not_modified_count() - free_before,
        spent,
        "every request a 304"
    );
    // An unchanged listing says no gist changed: the gists are not asked again.
    assert_eq!(spent, 1, "one conditional listing");
}

#[test]
fn github_sees_no_content_and_no_key_holds_a_slash() {
    let fake = fake();
    let s = store(&fake);
    s.put("ghostie/dev1/memories/a.enc", b"secret memory bytes")
        .unwrap();
    for g in fake.everything_stored() {
        assert!(!g.public);
        for rev in &g.revisions {
            for (name, content) in rev {
                assert!(!name.contains('/'));
                assert!(!content.contains("secret memory"));
            }
        }
    }
}

#[test]
fn a_rate_limit_is_waited_out_as_github_says_and_nothing_is_lost() {
    let fake = std::sync::Arc::new(fake());
    fake.set_secondary_limits(3, 500);
    let clock = fake.clone();
    let clock = std::sync::Arc::new(FakeClock::new(clock));
    let slept = clock.clone();
    // The fake's clock moves instead of the test sleeping.
    let s = store(&fake).with_clock(clock);
    for i in 0..8 {
        s.put(&format!("ghostie/dev1/log/{i:06}.enc"), &[i as u8; 10])
            .unwrap();
    }
    assert!(fake.secondary_refusals() > 0, "the limit never bit");
    let waited = slept.slept();
    assert!(waited >= std::time::Duration::from_secs(60), "{waited:?}");
    assert!(s.waiting_until().is_none());
    let other = store(&fake);
    for i in 0..8u8 {
        assert_eq!(
            other.get(&format!("ghostie/dev1/log/{i:06}.enc")).unwrap(),
            vec![i; 10]
        );
    }
}

#[test]
fn an_object_too_big_for_a_raw_url_is_stored_in_parts() {
    let fake = fake();
    let s = store(&fake);
    // 2.5 parts: a 50 MiB file's own object would be seven.
    let len = PART_BYTES * 5 / 2;
    let big: Vec<u8> = (0..len as u32).map(|i| (i % 253) as u8).collect();
    let key = "ghostie/dev1/memories/big.enc";
    s.put(key, &big).unwrap();
    // No file GitHub holds is beyond what its raw URL serves (10 MiB).
    assert!(
        fake.largest_file() <= 10 * 1024 * 1024,
        "{}",
        fake.largest_file()
    );
    let other = store(&fake);
    assert_eq!(other.list("ghostie/dev1/", None).unwrap(), vec![key]);
    assert_eq!(other.get(key).unwrap(), big);
    // A range across the first part boundary reads only the two parts it needs
    // (a device that has not read the object yet: parts once read are kept).
    let reader = store(&fake);
    let raw_before = fake
        .seen()
        .iter()
        .filter(|r| r.path.starts_with("/raw/"))
        .count();
    let at = PART_BYTES as u64;
    assert_eq!(
        reader.get_range(key, at - 5..at + 5).unwrap(),
        &big[PART_BYTES - 5..PART_BYTES + 5]
    );
    let raw_after = fake
        .seen()
        .iter()
        .filter(|r| r.path.starts_with("/raw/"))
        .count();
    assert_eq!(raw_after - raw_before, 2);
    // Replaced by a small object: the parts go. (A device that read the gist in
    // the last FRESH seconds may still see the former object: the engine never
    // replaces what another device must read at once.)
    s.put(key, b"small now").unwrap();
    let other = store(&fake);
    assert_eq!(other.get(key).unwrap(), b"small now");
    let files: usize = fake
        .everything_stored()
        .iter()
        .map(|g| g.revisions.last().unwrap().len())
        .sum();
    assert_eq!(files, 1);
    s.delete(key).unwrap();
    assert!(store(&fake).get(key).unwrap_err().is_not_found());
}
