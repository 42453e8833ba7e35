//! Must-hold 8: a push killed at several points leaves the vault consistent and the
//! next push completes it; no device ever sees a log entry whose content is missing;
//! a pull killed half-way leaves no half-written file. The process is killed with
//! SIGKILL at named points (GHOSTIE_FAILPOINT), exactly as `kill -9` would.

mod common;

use std::os::unix::process::ExitStatusExt;

use common::*;

fn killed(out: &std::process::Output) -> bool {
    out.status.signal() == Some(9)
}

fn many_files(h: &TempHome) {
    // Over two packs' worth, so a kill between two uploads is possible.
    for i in 0..150 {
        h.write(&format!("batch/m{i:03}.json"), memory_json(i, 40_000 + i));
    }
}

#[test]
fn a_killed_push_leaves_the_vault_consistent_and_the_next_push_completes_it() {
    for point in ["push-after-seal", "push-mid-upload", "push-after-segment"] {
        let vault = TempVault::new();
        let a = TempHome::joined("laptop", &vault);
        a.write("before.json", b"pushed before the crash");
        a.ok(&["push"]);
        many_files(&a);
        let out = a
            .cmd()
            .env("GHOSTIE_FAILPOINT", point)
            .arg("push")
            .output()
            .unwrap();
        assert!(
            killed(&out),
            "{point}: not killed: {:?} {}",
            out.status,
            stderr(&out)
        );

        // Another device sees a consistent vault: everything it is told of is there.
        let c = TempHome::joined("checker", &vault);
        c.ok(&["pull"]);
        let v = c.run(&["verify"]);
        assert!(v.status.success(), "{point}: verify failed: {}", stderr(&v));
        assert_eq!(c.read("before.json").unwrap(), b"pushed before the crash");

        let r = a.json(&["push", "--json"]);
        assert!(
            r["uploaded"].as_u64().unwrap() > 0 || point == "push-after-segment",
            "{point}: {r}"
        );
        c.ok(&["pull"]);
        assert_eq!(
            c.tree(),
            a.tree(),
            "{point}: trees differ after the completing push"
        );
        let again = a.json(&["push", "--json"]);
        assert_eq!(again["uploaded"], 0, "{point}: {again}");
    }
}

#[test]
fn a_killed_pull_leaves_no_half_written_file() {
    let vault = TempVault::new();
    let a = TempHome::joined("laptop", &vault);
    many_files(&a);
    a.ok(&["push"]);
    let b = TempHome::joined("phone", &vault);
    let out = b
        .cmd()
        .env("GHOSTIE_FAILPOINT", "pull-mid-apply@40")
        .arg("pull")
        .output()
        .unwrap();
    assert!(killed(&out), "not killed: {:?}", out.status);

    let want = a.tree();
    let got = b.tree();
    assert!(
        !got.is_empty() && got.len() < want.len(),
        "kill came too early or too late"
    );
    for (path, node) in &got {
        assert_eq!(
            want.get(path),
            Some(node),
            "{path} is not a whole file of the vault"
        );
    }
    b.ok(&["pull"]);
    assert_eq!(b.tree(), want);
    // The files written before the kill were adopted, not taken for local edits.
    let r = b.json(&["push", "--json"]);
    assert_eq!(r["uploaded"], 0, "{r}");
}

#[test]
fn a_sequence_number_whose_versions_were_superseded_still_gets_its_segment() {
    let vault = TempVault::new();
    let a = TempHome::joined("laptop", &vault);
    a.write("x.json", b"one");
    let out = a
        .cmd()
        .env("GHOSTIE_FAILPOINT", "push-before-segment")
        .arg("push")
        .output()
        .unwrap();
    assert!(killed(&out), "not killed: {:?}", out.status);
    // The version waiting in segment 1 is superseded before it is ever published.
    a.write("x.json", b"two, a different length");
    a.ok(&["push"]);
    a.write("y.json", b"later");
    a.ok(&["push"]);
    let b = TempHome::joined("phone", &vault);
    b.ok(&["pull"]);
    assert_eq!(b.read("x.json").unwrap(), b"two, a different length");
    assert_eq!(b.read("y.json").unwrap(), b"later");
    let v = b.run(&["verify"]);
    assert!(v.status.success(), "{}", stderr(&v));
}
