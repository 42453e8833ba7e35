//! Benchmark W6 on Dropbox (ignored by `cargo test`; `bench/dropbox.sh` runs it):
//! how long after a device's `push` ends a second device's mount shows the new
//! file, through the fake Dropbox with 100 ms added to every request (a realistic
//! round trip), with the longpoll (the product) and with polling alone (the mount's
//! default 10 s interval, the longpoll's change never heard: what a backend without
//! change notification gives). Medians of five.

mod common;

use std::time::{Duration, Instant};

use common::*;

const LATENCY: Duration = Duration::from_millis(100);
const RUNS: usize = 5;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Seconds from the end of each push to the file showing in the mount.
fn w6(poll: &str, env: &[(&str, &str)]) -> Vec<f64> {
    let vault = TempVault::dropbox();
    let fake = &vault.dropbox_parts().unwrap().fake;
    let a = TempHome::joined("laptop", &vault);
    let b = TempHome::joined("phone", &vault);
    fake.set_latency(LATENCY);
    let m = b.mount_with(&["--poll", poll], env);
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

#[test]
#[ignore = "a benchmark: bench/dropbox.sh"]
fn bench_dropbox_w6_longpoll_against_polling() {
    let longpoll = w6("10", &[]);
    // GHOSTIE_NO_CHANGE_NOTIFY stands for a backend that cannot tell of changes.
    let polling = w6("10", &[("GHOSTIE_NO_CHANGE_NOTIFY", "1")]);
    println!("ghostie-fs dropbox benchmark: W6, a second device sees a new file");
    println!("{LATENCY:?} added to every request, poll interval 10 s, median of {RUNS}");
    println!(
        "longpoll (the product)   {:6.2} s   runs {:?}",
        median(longpoll.clone()),
        longpoll
            .iter()
            .map(|s| format!("{s:.2}"))
            .collect::<Vec<_>>()
    );
    println!(
        "polling alone            {:6.2} s   runs {:?}",
        median(polling.clone()),
        polling
            .iter()
            .map(|s| format!("{s:.2}"))
            .collect::<Vec<_>>()
    );
    println!(
        "polling / longpoll       {:6.1} x",
        median(polling) / median(longpoll)
    );
}
