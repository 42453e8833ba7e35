//! Benchmark (ignored by `cargo test`; `bench/gist.sh` runs it): 10,000 memories of
//! 1–8 KiB pushed by one device and pulled by a new one through the fake GitHub with
//! 100 ms added to every request, against a naive layout of one gist file per memory
//! written and read through the same store. Prints requests and seconds of each.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use ghostie_fs::backend::gist::pacing::WriteBudget;
use ghostie_fs::backend::gist::{Clock, GistStore};
use ghostie_fs::backend::ObjectStore;
use zeroize::Zeroizing;

use common::fake_github::FakeGithub;
use common::*;

const MEMORIES: usize = 10_000;
/// The naive layout is measured on this many memories and scaled up: it is linear,
/// and 10,000 of its writes take GitHub's limits most of a day.
const NAIVE_SAMPLE: usize = 300;
const LATENCY: Duration = Duration::from_millis(100);

/// Waiting on the store's pacing moves the fake's clock, and is counted.
struct CountedClock {
    fake: Arc<FakeGithub>,
    waited: std::sync::Mutex<Duration>,
}

impl Clock for CountedClock {
    fn now(&self) -> std::time::SystemTime {
        self.fake.now()
    }
    fn sleep(&self, d: Duration) {
        *self.waited.lock().unwrap() += d;
        self.fake.advance_clock(d);
    }
}

fn memory(i: usize) -> Vec<u8> {
    memory_json(i, 1024 + (i * 7919) % (7 * 1024))
}

#[test]
#[ignore = "a benchmark: bench/gist.sh"]
fn bench_gist_push_and_pull_10000_memories() {
    let vault = TempVault::gist();
    let fake = &vault.gist_parts().unwrap().fake;
    let a = TempHome::joined("laptop", &vault);
    let b = TempHome::joined("phone", &vault);
    for i in 0..MEMORIES {
        a.write(&format!("m{:02}/{i:05}.json", i % 50), memory(i));
    }
    fake.set_latency(LATENCY);

    let (before, writes_before) = (fake.seen().len(), fake.content_requests());
    let t = Instant::now();
    a.ok(&["push"]);
    let push_secs = t.elapsed().as_secs_f64();
    let push_requests = fake.seen().len() - before;
    let push_writes = fake.content_requests() - writes_before;

    let before = fake.seen().len();
    let t = Instant::now();
    b.ok(&["pull"]);
    let pull_secs = t.elapsed().as_secs_f64();
    let pull_requests = fake.seen().len() - before;
    assert_eq!(contents_of(&a.tree()), contents_of(&b.tree()));
    assert_eq!(fake.secondary_refusals(), 0);

    // The naive layout: a gist file per memory, through the same store.
    let naive_fake = Arc::new(FakeGithub::start());
    naive_fake.add_classic_token(GIST_TOKEN, GIST_ACCOUNT, &["gist"], None);
    naive_fake.set_latency(LATENCY);
    let clock = Arc::new(CountedClock {
        fake: naive_fake.clone(),
        waited: Default::default(),
    });
    let writer = GistStore::new(&naive_fake.url(), Zeroizing::new(GIST_TOKEN.to_owned()))
        .unwrap()
        .with_clock(clock.clone());
    let t = Instant::now();
    for i in 0..NAIVE_SAMPLE {
        writer
            .put(&format!("naive/dev1/{i:05}.json"), &memory(i))
            .unwrap();
    }
    let naive_push_wall = t.elapsed().as_secs_f64();
    let naive_push_waited = clock.waited.lock().unwrap().as_secs_f64();
    let naive_push_requests = naive_fake.seen().len();
    let reader = GistStore::new(&naive_fake.url(), Zeroizing::new(GIST_TOKEN.to_owned())).unwrap();
    let t = Instant::now();
    for key in reader.list("naive/dev1/", None).unwrap() {
        reader.get(&key).unwrap();
    }
    let naive_pull_secs = t.elapsed().as_secs_f64();
    let naive_pull_requests = naive_fake.seen().len() - naive_push_requests;

    let scale = MEMORIES as f64 / NAIVE_SAMPLE as f64;
    // Its writes, each as long as the sample's took, paced as the store paces them:
    // the sample alone fits in the first hour's budget, 10,000 writes do not.
    let per_write = Duration::from_secs_f64(naive_push_wall / NAIVE_SAMPLE as f64);
    let mut budget = WriteBudget::default();
    let start = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1 << 30);
    let mut now = start;
    for _ in 0..MEMORIES {
        now += budget.wait_before_next(now);
        budget.record(now);
        now += per_write;
    }
    let naive_push_secs = now.duration_since(start).unwrap().as_secs_f64();
    eprintln!("the naive sample waited {naive_push_waited:.0} s for GitHub's limits");
    let naive_push_requests = naive_push_requests as f64 * scale;
    let naive_pull_secs = naive_pull_secs * scale;
    let naive_pull_requests = naive_pull_requests as f64 * scale;
    println!(
        "ghostie-fs gist benchmark: {MEMORIES} memories of 1-8 KiB, {} ms per request",
        LATENCY.as_millis()
    );
    println!("                       requests   writes    seconds");
    println!("push, ghostie-fs       {push_requests:>8} {push_writes:>8} {push_secs:>10.1}");
    println!(
        "push, naive            {naive_push_requests:>8.0} {:>8.0} {naive_push_secs:>10.0}   ({:.1} h under GitHub's write limits)",
        MEMORIES as f64,
        naive_push_secs / 3600.0
    );
    println!(
        "pull, ghostie-fs       {pull_requests:>8} {:>8} {pull_secs:>10.1}",
        0
    );
    println!(
        "pull, naive            {naive_pull_requests:>8.0} {:>8} {naive_pull_secs:>10.1}",
        0
    );
    println!(
        "naive / ghostie-fs: push {:.0}x the requests, {:.0}x the time; pull {:.0}x the requests, {:.0}x the time",
        naive_push_requests / push_requests as f64,
        naive_push_secs / push_secs,
        naive_pull_requests / pull_requests as f64,
        naive_pull_secs / pull_secs
    );
}
