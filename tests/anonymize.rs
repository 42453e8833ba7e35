//! Anonymization across devices (README "Anonymization"): untrusted devices hold
//! pseudonyms and no byte they can decrypt holds an original; trusted devices show
//! memories as written, and restore the originals in an untrusted device's edits.

mod common;

use common::*;
use ghostie_fs::crypto::{blob::open_chunks, SubKeys, WrappedKey};
use ghostie_fs::model::BlobId;

/// Sensitive values, one per built-in detector, and where a memory holds them.
const EMAIL: &str = "anna.smith@example.org";
const PHONE: &str = "+44 20 7946 0958";
const CARD: &str = "4111 1111 1111 1111";
const IBAN: &str = "GB82 WEST 1234 5698 7654 32";
const KEY: &str = "sk_live_4eC39HqLyjWDarjtT1zdp7dc";
const IP: &str = "203.0.113.9";
const ORIGINALS: [&str; 6] = [EMAIL, PHONE, CARD, IBAN, KEY, IP];

fn memory_one() -> String {
    format!(
        "{{\n  \"content\": \"Anna ({EMAIL}, {PHONE}) paid with {CARD}; refund to {IBAN}.\",\n  \"context\": {{\"api\": \"{KEY}\", \"host\": \"{IP}\", \"mood\": \"calm\"}}\n}}\n"
    )
}

fn memory_two() -> String {
    format!("Meeting notes: write to {EMAIL} about the garden on 2025-06-28.\n")
}

fn text(h: &TempHome, rel: &str) -> String {
    String::from_utf8(h.read(rel).unwrap_or_else(|| panic!("{rel} missing"))).unwrap()
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Every file under `dir`, with its bytes.
fn files_under(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() {
                out.push((path.clone(), std::fs::read(&path).unwrap_or_default()));
            }
        }
    }
    out
}

/// The plaintext of every blob of every pack in the vault, opened with the keys
/// every device of the vault holds (what an untrusted device can decrypt).
fn every_blob(vault: &TempVault) -> Vec<Vec<u8>> {
    let ring = WrappedKey::from_json(&vault.get("ghostie/global/keyring.json")).unwrap();
    let keys = SubKeys::derive(&ring.unwrap_key(PASSPHRASE.as_bytes()).unwrap());
    let mut out = Vec::new();
    for (key, bytes) in vault.objects() {
        if !key.contains("/memories/") {
            continue;
        }
        // A pack: its header, then blobs (id, then chunks). Memories are small: one
        // chunk each, whose length is found by trying.
        let mut pos = 8;
        'blobs: while pos + 16 + 28 <= bytes.len() {
            let blob = BlobId(bytes[pos..pos + 16].try_into().unwrap());
            let body = &bytes[pos + 16..];
            for len in 0..=(body.len() - 28) {
                if let Ok(plain) = open_chunks(&keys, &blob, len as u64, 0, &body[..len + 28]) {
                    out.push(plain);
                    pos += 16 + 28 + len;
                    continue 'blobs;
                }
            }
            panic!("{key}: a blob at {pos} does not open");
        }
    }
    assert!(!out.is_empty(), "no pack opened");
    out
}

/// A vault with anonymization on, turned on by the laptop with the tablet already
/// in the vault (so trusted) and the tablet holding the key; the two memories
/// pushed. Returns the vault, laptop and tablet.
fn anonymized_vault() -> (TempVault, TempHome, TempHome) {
    let vault = TempVault::new();
    let laptop = TempHome::joined("laptop", &vault);
    let tablet = TempHome::joined("tablet", &vault);
    let on = laptop.json(&["anonymize", "on", "--json"]);
    assert_eq!(on["enabled"], true, "{on}");
    assert_eq!(on["waiting"], serde_json::json!(["tablet"]), "{on}");
    // The tablet publishes its exchange key at its next sync, the laptop hands it
    // the key at its own, and the tablet has it from then on.
    tablet.ok(&["sync"]);
    laptop.ok(&["sync"]);
    let rules = tablet.json(&["anonymize", "rules", "--json"]);
    assert_eq!(rules["waiting"], serde_json::json!([]), "{rules}");
    laptop.write("m1.json", memory_one());
    laptop.write("notes/m2.txt", memory_two());
    laptop.ok(&["push"]);
    (vault, laptop, tablet)
}

#[test]
fn an_untrusted_device_holds_no_original_in_anything_it_can_read() {
    let (vault, laptop, tablet) = anonymized_vault();
    // Text in another encoding than UTF-8 is looked into too.
    let latin1 = [&b"Caf\xe9 cr\xe8me: "[..], EMAIL.as_bytes(), b" \xff\n"].concat();
    laptop.write("latin1.txt", &latin1);
    laptop.ok(&["push"]);
    // A trusted device shows memories as written.
    tablet.ok(&["pull"]);
    assert_eq!(text(&tablet, "m1.json"), memory_one());
    assert_eq!(text(&tablet, "notes/m2.txt"), memory_two());
    assert_eq!(tablet.read("latin1.txt").unwrap(), latin1);

    // The phone joins later: untrusted.
    let phone = TempHome::joined("phone", &vault);
    phone.ok(&["pull"]);
    let one = text(&phone, "m1.json");
    let two = text(&phone, "notes/m2.txt");
    for original in ORIGINALS {
        assert!(!one.contains(original), "{original} in {one}");
    }
    // JSON stays JSON, with the same shape; what is not sensitive stays.
    let doc: serde_json::Value = serde_json::from_str(&one).unwrap();
    assert_eq!(doc["context"]["mood"], "calm");
    assert!(
        two.contains("2025-06-28") && two.contains("garden"),
        "{two}"
    );
    // The same value gives the same pseudonym in both memories: search works.
    let token = |s: &str| -> String {
        let at = s.find("⟦email:").unwrap();
        let end = at + s[at..].find('⟧').unwrap() + '⟧'.len_utf8();
        s[at..end].to_owned()
    };
    assert_eq!(token(&one), token(&two));
    for kind in ["email", "phone", "card", "iban", "secret", "ip"] {
        assert!(
            one.contains(&format!("⟦{kind}:")),
            "no {kind} pseudonym in {one}"
        );
    }
    let grep = std::process::Command::new("grep")
        .arg("-rl")
        .arg(token(&one))
        .arg(phone.memories())
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&grep.stdout).lines().count(), 3);
    let other = phone.read("latin1.txt").unwrap();
    assert!(other.starts_with(b"Caf\xe9 cr\xe8me: \xe2\x9f\xa6email:"));

    // Nowhere in the phone's home (folder, index, caches, queue, keys) …
    phone.ok(&["status"]);
    for (path, bytes) in files_under(phone.home()) {
        for original in ORIGINALS {
            assert!(
                !contains(&bytes, original),
                "{original} in {}",
                path.display()
            );
        }
    }
    // … nor in any content the vault's keys open.
    for plain in every_blob(&vault) {
        for original in ORIGINALS {
            assert!(
                !contains(&plain, original),
                "{original} in a blob: {}",
                String::from_utf8_lossy(&plain)
            );
        }
    }
    // And the provider sees none of it either.
    for (key, bytes) in vault.objects() {
        for original in ORIGINALS {
            assert!(!contains(&bytes, original), "{original} in {key}");
        }
    }
}

#[test]
fn an_untrusted_edit_comes_back_with_its_originals_and_conflicts_show_them() {
    let (vault, laptop, tablet) = anonymized_vault();
    let phone = TempHome::joined("phone", &vault);
    phone.ok(&["pull"]);
    let view = text(&phone, "m1.json");
    // The phone keeps the email's pseudonym, drops the phone number's, adds words.
    let at = view.find("⟦phone:").unwrap();
    let end = at + view[at..].find('⟧').unwrap() + '⟧'.len_utf8();
    let edited = format!(
        "{}no number{} Edited on the phone.",
        &view[..at],
        &view[end..]
    );
    phone.write("m1.json", &edited);
    phone.ok(&["push"]);
    tablet.ok(&["pull"]);
    let expected = memory_one().replace(PHONE, "no number") + " Edited on the phone.";
    assert_eq!(text(&tablet, "m1.json"), expected);
    laptop.ok(&["pull"]);
    assert_eq!(text(&laptop, "m1.json"), expected);

    // A trusted and an untrusted edit at once: DESIGN §6, with the originals shown
    // on the trusted side, in the file and in its conflict sibling alike.
    laptop.write("notes/m2.txt", memory_two() + "Laptop line.\n");
    let phone_view = text(&phone, "notes/m2.txt");
    phone.write("notes/m2.txt", phone_view + "Phone line.\n");
    laptop.ok(&["push"]);
    phone.ok(&["push"]);
    laptop.ok(&["pull"]);
    // Which edit stands at the path depends on their times (DESIGN §6); the
    // other stands beside it, and both show the originals here.
    let main = text(&laptop, "notes/m2.txt");
    let sibling = [
        "notes/m2.txt.conflict-phone",
        "notes/m2.txt.conflict-laptop",
    ]
    .iter()
    .find_map(|name| laptop.read(name))
    .map(|b| String::from_utf8(b).unwrap())
    .expect("a conflict sibling");
    let mut both = [main, sibling];
    both.sort();
    let mut want = [
        memory_two() + "Laptop line.\n",
        memory_two() + "Phone line.\n",
    ];
    want.sort();
    assert_eq!(both, want);
    // The phone's own view of the conflict holds no original.
    phone.ok(&["pull"]);
    for name in [
        "notes/m2.txt",
        "notes/m2.txt.conflict-phone",
        "notes/m2.txt.conflict-laptop",
    ] {
        if let Some(bytes) = phone.read(name) {
            assert!(
                !contains(&bytes, EMAIL),
                "{name}: {}",
                String::from_utf8_lossy(&bytes)
            );
        }
    }
}

#[test]
fn pseudonyms_differ_between_vaults() {
    let token_in = |vault: &TempVault| -> String {
        let laptop = TempHome::joined("laptop", vault);
        laptop.ok(&["anonymize", "on", "--detectors", "email"]);
        laptop.write("m.txt", format!("mail {EMAIL}\n"));
        laptop.ok(&["push"]);
        let phone = TempHome::joined("phone", vault);
        phone.ok(&["pull"]);
        let view = text(&phone, "m.txt");
        assert!(!view.contains(EMAIL), "{view}");
        view
    };
    let (a, b) = (TempVault::new(), TempVault::new());
    assert_ne!(token_in(&a), token_in(&b));
}

#[test]
fn a_new_rule_reaches_untrusted_devices_and_an_untrusted_device_reads_nothing_new() {
    let (vault, laptop, tablet) = anonymized_vault();
    laptop.write("ticket.txt", "Ask about TCK-123456 tomorrow.\n");
    laptop.ok(&["push"]);
    let phone = TempHome::joined("phone", &vault);
    phone.ok(&["pull"]);
    assert!(text(&phone, "ticket.txt").contains("TCK-123456"));
    tablet.ok(&["pull"]);
    let tablet_before = files_under(&tablet.memories());

    // A rule added on a trusted device: the phone sees a pseudonym at its next pull.
    let rules_file = laptop.home().join("anonymize.toml");
    let mut rules = std::fs::read_to_string(&rules_file).unwrap();
    rules.push_str("\n[[pattern]]\nname = \"ticket\"\nregex = \"TCK-[0-9]{6}\"\n");
    std::fs::write(&rules_file, rules).unwrap();
    let on = laptop.json(&["anonymize", "on", "--json"]);
    assert_eq!(on["resealed"], 1, "{on}");
    phone.ok(&["pull"]);
    let ticket = text(&phone, "ticket.txt");
    assert!(
        !ticket.contains("TCK-123456") && ticket.contains("⟦ticket:"),
        "{ticket}"
    );
    // Trusted devices keep what they hold, byte for byte.
    tablet.ok(&["pull"]);
    assert_eq!(files_under(&tablet.memories()), tablet_before);
    assert_eq!(
        text(&laptop, "ticket.txt"),
        "Ask about TCK-123456 tomorrow.\n"
    );

    // The tablet is no longer trusted: values written from now on stay closed to it.
    let out = laptop.json(&["devices", "untrust", "tablet", "--json"]);
    assert_eq!(out["trusted"], serde_json::json!(["laptop"]), "{out}");
    let later = "later.person@example.net";
    laptop.write("later.txt", format!("New contact {later}\n"));
    laptop.ok(&["push"]);
    tablet.ok(&["pull"]);
    let seen = text(&tablet, "later.txt");
    assert!(!seen.contains(later) && seen.contains("⟦email:"), "{seen}");
    for (path, bytes) in files_under(tablet.home()) {
        assert!(!contains(&bytes, later), "{later} in {}", path.display());
    }
    // It may not change the rules or trust anyone any more.
    let out = tablet.run(&["devices", "trust", "phone"]);
    assert_ne!(out.status.code(), Some(0));

    // Trusting the phone: after its next sync and the laptop's, it shows originals.
    laptop.ok(&["devices", "trust", "phone"]);
    phone.ok(&["sync"]);
    laptop.ok(&["sync"]);
    phone.ok(&["pull"]);
    assert_eq!(text(&phone, "later.txt"), format!("New contact {later}\n"));
    assert_eq!(text(&phone, "m1.json"), memory_one());
}

#[test]
fn off_by_default_nothing_changes_and_turning_it_on_adds_the_policy() {
    let vault = TempVault::new();
    let laptop = TempHome::joined("laptop", &vault);
    let phone = TempHome::joined("phone", &vault);
    laptop.write("m.txt", format!("mail {EMAIL}\n"));
    laptop.ok(&["push"]);
    phone.ok(&["pull"]);
    assert_eq!(text(&phone, "m.txt"), format!("mail {EMAIL}\n"));
    let keys = vault.keys();
    assert!(
        !keys
            .iter()
            .any(|k| k.contains("anonymize") || k.contains("exchange") || k.contains("originals")),
        "{keys:?}"
    );
    let rules = laptop.ok(&["anonymize", "rules"]);
    assert!(rules.contains("never turned on"), "{rules}");
    let json = laptop.json(&["anonymize", "rules", "--json"]);
    assert_eq!(json["enabled"], false);
    assert!(!laptop.home().join("anonymize.toml").exists());

    // Off after on: what is written from now on travels as written.
    laptop.ok(&["anonymize", "on"]);
    // (A provider's listing may lag a write by a moment.)
    assert!(eventually(10, || vault
        .keys()
        .iter()
        .any(|k| k.ends_with("global/anonymize.enc"))));
    assert!(laptop.home().join("anonymize.toml").exists());
    laptop.ok(&["anonymize", "off"]);
    laptop.write("after.txt", format!("mail {EMAIL}\n"));
    laptop.ok(&["push"]);
    let newcomer = TempHome::joined("newcomer", &vault);
    newcomer.ok(&["pull"]);
    assert_eq!(text(&newcomer, "after.txt"), format!("mail {EMAIL}\n"));
    // A bad rules file is refused, naming it.
    std::fs::write(
        laptop.home().join("anonymize.toml"),
        "detectors = [\"mail\"]\n",
    )
    .unwrap();
    let out = laptop.run(&["anonymize", "on"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("anonymize.toml") && err.contains("'mail'"),
        "{err}"
    );
}

/// The first pseudonym of `kind` in `text`.
fn token_in(text: &str, kind: &str) -> String {
    let start = text
        .find(&format!("⟦{kind}:"))
        .unwrap_or_else(|| panic!("no {kind} pseudonym in {text}"));
    let end = start + text[start..].find('⟧').unwrap() + '⟧'.len_utf8();
    text[start..end].to_owned()
}

/// What the mount shows: its size (asked before any read) and its bytes.
fn shown(m: &Mount, rel: &str) -> (u64, String) {
    let size = std::fs::metadata(m.path(rel)).map(|m| m.len()).unwrap_or(0);
    let text = std::fs::read_to_string(m.path(rel)).unwrap_or_default();
    (size, text)
}

#[test]
fn through_the_mount_a_trusted_device_shows_originals_and_an_untrusted_one_pseudonyms() {
    const WAIT: u64 = 60;
    let (vault, laptop, tablet) = anonymized_vault();
    laptop.write(
        "mail.json",
        "{\"to\": \"jonathan.longname@example-company.com\"}\n",
    );
    laptop.ok(&["push"]);
    // A trusted mount shows each memory as written, at its size from the first stat.
    let tm = tablet.mount_with(&["--poll", "0.5"], &[]);
    let one = memory_one();
    assert_eq!(shown(&tm, "m1.json"), (one.len() as u64, one.clone()));
    let two = memory_two();
    assert_eq!(shown(&tm, "notes/m2.txt"), (two.len() as u64, two));
    // What it writes reaches the vault as a view, and reads back as written; an
    // edit in place keeps the values it did not touch.
    let note = "{\"note\": \"call +1 202 555 0143 or write bob@example.com\"}\n";
    std::fs::write(tm.path("t.json"), note).unwrap();
    assert_eq!(shown(&tm, "t.json"), (note.len() as u64, note.to_owned()));
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(tm.path("mail.json"))
            .unwrap();
        f.write_all(b"{\"cc\": \"eve@example.com\"}\n").unwrap();
    }
    let mail =
        "{\"to\": \"jonathan.longname@example-company.com\"}\n{\"cc\": \"eve@example.com\"}\n";
    assert_eq!(
        shown(&tm, "mail.json"),
        (mail.len() as u64, mail.to_owned())
    );
    assert!(tm.drained(WAIT), "the tablet's mount did not publish");
    // An untrusted device gets pseudonyms for all of it.
    let phone = TempHome::joined("phone", &vault);
    phone.ok(&["pull"]);
    let t = text(&phone, "t.json");
    assert!(
        !t.contains("bob@example.com") && !t.contains("555 0143"),
        "{t}"
    );
    assert!(t.contains("⟦email:") && t.contains("⟦phone:"), "{t}");
    let m = text(&phone, "mail.json");
    assert!(
        !m.contains("eve@example.com") && !m.contains("jonathan.longname@example-company.com"),
        "{m}"
    );
    // Its own mount shows the same pseudonyms, sizes matching the bytes.
    let pm = phone.mount_with(&["--poll", "0.5"], &[]);
    let (size, m1) = shown(&pm, "m1.json");
    assert_eq!(size, m1.len() as u64);
    for original in ORIGINALS {
        assert!(!m1.contains(original), "{original} on the phone: {m1}");
    }
    // The phone writes: a pseudonym kept, a new value added. It reads back as
    // written there; the trusted mount shows both values, restored.
    let kept = token_in(&m1, "email");
    let edit = format!("{{\"note\": \"{kept} and carol@example.com\"}}\n");
    std::fs::write(pm.path("p.json"), &edit).unwrap();
    assert_eq!(shown(&pm, "p.json"), (edit.len() as u64, edit.clone()));
    let restored = format!("{{\"note\": \"{EMAIL} and carol@example.com\"}}\n");
    assert!(
        eventually(WAIT, || shown(&tm, "p.json")
            == (restored.len() as u64, restored.clone())),
        "the trusted mount shows {:?}",
        shown(&tm, "p.json")
    );
    // A trusted edit of it through the mount reaches the phone as pseudonyms.
    let both = format!("{{\"note\": \"{EMAIL} and carol@example.com, seen\"}}\n");
    std::fs::write(tm.path("p.json"), &both).unwrap();
    assert!(
        eventually(WAIT, || shown(&pm, "p.json").1.ends_with(", seen\"}\n")),
        "the phone's mount shows {:?}",
        shown(&pm, "p.json")
    );
    let (size, p) = shown(&pm, "p.json");
    assert_eq!(size, p.len() as u64);
    assert!(
        p.contains(&kept) && !p.contains(EMAIL) && !p.contains("carol@example.com"),
        "{p}"
    );
    drop(pm);
    drop(tm);
    // Nothing the laptop or the tablet wrote is in the phone's home in the clear.
    for (path, bytes) in files_under(phone.home()) {
        for original in ORIGINALS
            .iter()
            .chain(&["bob@example.com", "eve@example.com"])
        {
            assert!(
                !contains(&bytes, original),
                "{original} in {}",
                path.display()
            );
        }
    }
    // The laptop's folder gets every value back.
    laptop.ok(&["pull"]);
    assert_eq!(text(&laptop, "t.json"), note);
    assert_eq!(text(&laptop, "mail.json"), mail);
    assert_eq!(text(&laptop, "p.json"), both);
}

#[test]
fn a_trusted_mount_learns_restored_sizes_once_and_keeps_them() {
    let (_vault, laptop, tablet) = anonymized_vault();
    // Memories of 24 KiB that do not compress, each with an address longer than
    // its pseudonym... or shorter: either way the restored size is not the view's.
    let memory = |i: usize| {
        let filler: String = patterned(12 * 1024, i as u64)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("{{\"content\": \"write to person{i}@example.org\", \"blob\": \"{filler}\"}}\n")
    };
    for i in 0..20 {
        laptop.write(&format!("big/m{i}.json"), memory(i));
    }
    laptop.ok(&["push"]);
    let meter = tablet.home().join("meter.json");
    let env = [("GHOSTIE_METER_FILE", meter.to_str().unwrap())];
    let fetched = || -> u64 {
        let bytes = std::fs::read(&meter).unwrap_or_default();
        serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v["bytes_out"].as_u64())
            .unwrap_or(0)
    };
    let sizes_shown = |m: &Mount| {
        for i in 0..20 {
            let rel = format!("big/m{i}.json");
            let size = std::fs::metadata(m.path(&rel)).unwrap().len();
            assert_eq!(size, memory(i).len() as u64, "{rel}");
        }
    };
    {
        let m = tablet.mount_with(&[], &env);
        sizes_shown(&m);
        // The first start reads every memory to learn its size.
        assert!(fetched() > 20 * 24 * 1024, "fetched {}", fetched());
        // One more, written here: what it learned of it is kept at unmount.
        std::fs::write(m.path("big/m20.json"), memory(20)).unwrap();
        assert!(m.drained(60), "the mount did not publish");
    }
    let m = tablet.mount_with(&[], &env);
    sizes_shown(&m);
    let size = std::fs::metadata(m.path("big/m20.json")).unwrap().len();
    assert_eq!(size, memory(20).len() as u64);
    eprintln!("a second start fetched {} bytes", fetched());
    assert!(
        fetched() < 16 * 1024,
        "a second start fetched {} bytes",
        fetched()
    );
    assert_eq!(
        std::fs::read_to_string(m.path("big/m7.json")).unwrap(),
        memory(7)
    );
}

#[test]
fn a_journal_a_crash_cut_short_does_not_swallow_the_originals_written_after_it() {
    let (_vault, laptop, tablet) = anonymized_vault();
    // What a mount killed in the middle of an append leaves behind.
    let queue = tablet.home().join("sync").join("originals");
    std::fs::create_dir_all(&queue).unwrap();
    std::fs::write(queue.join("journal"), b"0123456789abcdef0123").unwrap();
    let note = "{\"to\": \"zed@example.com\"}\n";
    {
        let m = tablet.mount();
        std::fs::write(m.path("n.json"), note).unwrap();
        assert!(m.drained(60), "the mount did not publish");
    }
    laptop.ok(&["pull"]);
    assert_eq!(text(&laptop, "n.json"), note);
}

#[test]
fn rekeying_keeps_anonymization_and_a_removed_device_loses_the_sensitive_key() {
    let (vault, laptop, tablet) = anonymized_vault();
    tablet.ok(&["pull"]);
    // The whole vault sealed again under a new key, the older keys dropped: the
    // policy and the exchange keys follow.
    laptop.ok(&["rekey", "--rewrite"]);
    tablet.ok(&["sync"]);
    laptop.ok(&["pull"]);
    let r = laptop.json(&["rekey", "--rewrite", "--json"]);
    assert_eq!(r["rewrite"]["waiting_for"], serde_json::json!([]), "{r}");
    assert_ne!(r["rewrite"]["dropped"], serde_json::json!([]), "{r}");
    let rules = tablet.json(&["anonymize", "rules", "--json"]);
    assert_eq!(rules["enabled"], true, "{rules}");
    laptop.write("after-rekey.txt", format!("to {EMAIL}\n"));
    laptop.ok(&["push"]);
    tablet.ok(&["pull"]);
    assert_eq!(text(&tablet, "after-rekey.txt"), format!("to {EMAIL}\n"));

    // The tablet is lost: removing it also replaces the sensitive key.
    let new = "a passphrase the tablet never knew";
    let out = laptop
        .cmd()
        .env("GHOSTIE_NEW_PASSPHRASE", new)
        .args(["devices", "remove", "tablet"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rules = laptop
        .cmd()
        .env("GHOSTIE_PASSPHRASE", new)
        .args(["anonymize", "rules", "--json"])
        .output()
        .unwrap();
    let rules: serde_json::Value = serde_json::from_slice(&rules.stdout).unwrap();
    assert_eq!(rules["trusted"], serde_json::json!(["laptop"]), "{rules}");
    let _ = vault;
}

#[test]
fn a_pull_killed_on_a_trusted_device_leaves_no_edit_or_conflict_behind() {
    let (_vault, laptop, tablet) = anonymized_vault();
    let out = tablet
        .cmd()
        .env("GHOSTIE_FAILPOINT", "pull-mid-apply@1")
        .arg("pull")
        .output()
        .unwrap();
    assert!(!out.status.success(), "not killed");
    // What the killed pull wrote (the originals restored) is adopted as the
    // version it restored, not taken for an edit of the tablet's.
    let r = tablet.json(&["push", "--json"]);
    assert_eq!(r["uploaded"], 0, "{r}");
    tablet.ok(&["pull"]);
    assert_eq!(text(&tablet, "m1.json"), memory_one());
    assert_eq!(text(&tablet, "notes/m2.txt"), memory_two());
    laptop.ok(&["pull"]);
    let names = laptop.names();
    assert!(!names.iter().any(|n| n.contains(".conflict-")), "{names:?}");
}

#[test]
fn a_rules_file_left_as_written_never_undoes_a_change_made_elsewhere() {
    let (_vault, laptop, tablet) = anonymized_vault();
    // The tablet adds a rule.
    let file = tablet.home().join("anonymize.toml");
    tablet.ok(&["anonymize", "rules"]);
    let mut rules = std::fs::read_to_string(&file).unwrap_or_default();
    if rules.is_empty() {
        rules =
            "detectors = [\"email\", \"phone\", \"card\", \"iban\", \"secret\", \"ip\"]\n".into();
    }
    rules.push_str("\n[[pattern]]\nname = \"ticket\"\nregex = \"TCK-[0-9]{6}\"\n");
    std::fs::write(&file, rules).unwrap();
    tablet.ok(&["anonymize", "on"]);
    // The laptop's file still says the older rules, untouched: turning on again
    // keeps the tablet's rule.
    let on = laptop.json(&["anonymize", "on", "--json"]);
    assert!(
        on["rules"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r.as_str().unwrap().contains("ticket")),
        "{on}"
    );
    // An edit of a stale file is refused, naming what to do.
    let laptop_file = laptop.home().join("anonymize.toml");
    let text = std::fs::read_to_string(&laptop_file).unwrap();
    std::fs::write(&laptop_file, text.replace("ticket", "ticket2")).unwrap();
    tablet.ok(&["anonymize", "on", "--detectors", "email"]);
    let out = laptop.run(&["anonymize", "on"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("changed on another device"), "{err}");
}

#[test]
fn a_devices_originals_objects_are_merged_into_one_and_still_restore() {
    let (vault, laptop, tablet) = anonymized_vault();
    let originals = || {
        vault
            .keys()
            .into_iter()
            .filter(|k| k.contains("/originals/"))
            .count()
    };
    // One originals object per push that met a new value: with the one of the
    // memories pushed first, eight. (A provider's listing may lag a write.)
    let friends: Vec<String> = (1..8).map(|i| format!("friend{i}@example.org")).collect();
    for (i, friend) in friends.iter().enumerate() {
        laptop.write(&format!("friends/{i}.txt"), format!("write to {friend}\n"));
        laptop.ok(&["push"]);
    }
    assert!(eventually(10, || originals() == 8), "{}", originals());
    let dry = laptop.json(&["gc", "--dry-run", "--json"]);
    assert_eq!(dry["originals_merged"], 8, "{dry}");
    assert_eq!(originals(), 8);
    let r = laptop.json(&["gc", "--json"]);
    assert_eq!(r["originals_merged"], 8, "{r}");
    assert!(eventually(10, || originals() == 1), "{}", originals());
    let again = laptop.json(&["gc", "--json"]);
    assert_eq!(again["originals_merged"], 0, "{again}");
    // A trusted device that never read any of them restores every value from the
    // merged object; an untrusted one still holds none.
    tablet.ok(&["pull"]);
    assert_eq!(text(&tablet, "m1.json"), memory_one());
    for (i, friend) in friends.iter().enumerate() {
        assert_eq!(
            text(&tablet, &format!("friends/{i}.txt")),
            format!("write to {friend}\n")
        );
    }
    let phone = TempHome::joined("phone", &vault);
    phone.ok(&["pull"]);
    for (path, bytes) in files_under(phone.home()) {
        for friend in &friends {
            assert!(!contains(&bytes, friend), "{friend} in {}", path.display());
        }
    }
}
