//! Benchmarks of the Google Drive backend (ignored by `cargo test`;
//! `bench/gdrive.sh` runs them) through the fake Drive with 100 ms added to every
//! request (a realistic round trip) and Google's pace of 10 requests a second:
//! requests and seconds to push 10,000 memories and to pull them on a new device,
//! and W6 (a second device's mount shows a file another device pushed), at the
//! default poll interval and at 2 s. Medians of five for W6.

mod common;

use std::time::{Duration, Instant};

use common::*;

const LATENCY: Duration = Duration::from_millis(100);
const RUNS: usize = 5;
const MEMORIES: usize = 10_000;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Seconds from the end of each push to the file showing in the mount.
fn w6(poll: &str) -> Vec<f64> {
    let vault = TempVault::gdrive();
    let fake = &vault.gdrive_parts().unwrap().fake;
    let a = TempHome::joined("laptop", &vault);
    let b = TempHome::joined("phone", &vault);
    fake.set_latency(LATENCY);
    let m = b.mount_with(&["--poll", poll], &[]);
    assert!(m.drained(60));
    let mut seen = Vec::new();
    for run in 0..RUNS {
        std::thread::sleep(Duration::from_millis(1500));
        let name = format!("w6-{run}.json");
        a.write(&name, format!("{{\"run\":{run}}}"));
        a.ok(&["push"]);
        let pushed = Instant::now();
        assert!(eventually(120, || m.path(&name).exists()));
        seen.push(pushed.elapsed().as_secs_f64());
    }
    seen
}

fn runs(v: &[f64]) -> Vec<String> {
    v.iter().map(|s| format!("{s:.2}")).collect()
}

#[test]
#[ignore = "a benchmark: bench/gdrive.sh"]
fn bench_gdrive_ten_thousand_memories_and_w6() {
    let vault = TempVault::gdrive();
    let fake = &vault.gdrive_parts().unwrap().fake;
    let a = TempHome::joined("laptop", &vault);
    for i in 0..MEMORIES {
        a.write(
            &format!("m{:02}/{i:05}.json", i % 50),
            memory_json(i, 1024 + (i * 7919) % (7 * 1024)),
        );
    }
    let b = TempHome::joined("phone", &vault);
    fake.set_latency(LATENCY);
    let before = fake.seen().len();
    let started = Instant::now();
    a.ok(&["push"]);
    let push_secs = started.elapsed().as_secs_f64();
    let push_requests = fake.seen().len() - before;
    let before = fake.seen().len();
    let started = Instant::now();
    b.ok(&["pull"]);
    let pull_secs = started.elapsed().as_secs_f64();
    let pull_requests = fake.seen().len() - before;
    assert!(contents_of(&b.tree()) == contents_of(&a.tree()));
    let refusals = fake.rate_refusals();
    drop(vault);
    let default_poll = w6("10");
    let short_poll = w6("2");
    println!("ghostie-fs gdrive benchmark: {MEMORIES} memories of 1-8 KiB, then W6");
    println!("{LATENCY:?} added to every request; the product paces itself at 10 requests/s");
    println!("                 requests   seconds");
    println!("push             {push_requests:8}   {push_secs:7.1}");
    println!("pull (new device){pull_requests:8}   {pull_secs:7.1}");
    println!("refused for rate {refusals:8}");
    println!(
        "one file per memory, at Google's pace: >= {MEMORIES} requests, >= {:.0} s each way",
        MEMORIES as f64 / 10.0
    );
    println!(
        "W6, poll 10 s (default)  {:6.2} s   runs {:?}",
        median(default_poll.clone()),
        runs(&default_poll)
    );
    println!(
        "W6, poll 2 s             {:6.2} s   runs {:?}",
        median(short_poll.clone()),
        runs(&short_poll)
    );
}
