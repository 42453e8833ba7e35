//! Must-hold 2, as a property: three devices in one process over a shared in-memory
//! store, random interleavings of write, delete, rename, push and pull. Afterwards every
//! device shows the same namespace, and every content any device wrote is either still
//! visible (at its path, renamed, or as a conflict sibling) or was replaced by a device
//! that had it in its folder when it made the change.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use proptest::prelude::*;
use zeroize::Zeroizing;

use ghostie_fs::backend::MemoryStore;
use ghostie_fs::config::{BackendConfig, Home};
use ghostie_fs::folder;
use ghostie_fs::sync::{
    setup_vault, NoProgress, PassphraseSource, SetupRequest, SyncResult, Vault,
};

const PATHS: [&str; 4] = ["a.json", "b.json", "c.json", "d/e.json"];
const DEVICES: usize = 3;

struct Pass;
impl PassphraseSource for Pass {
    fn existing(&self) -> SyncResult<Zeroizing<String>> {
        Ok(Zeroizing::new("model test passphrase".into()))
    }
    fn new_passphrase(&self) -> SyncResult<Zeroizing<String>> {
        self.existing()
    }
}

/// Three devices set up once (key derivation is slow on purpose), copied per case.
struct Template {
    _dir: tempfile::TempDir,
    homes: Vec<std::path::PathBuf>,
    store: MemoryStore,
}

fn template() -> &'static Template {
    static T: OnceLock<Template> = OnceLock::new();
    T.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(MemoryStore::new());
        let mut homes = Vec::new();
        for i in 0..DEVICES {
            let home = dir.path().join(format!("dev{i}"));
            let req = SetupRequest {
                home: Home::new(&home),
                backend: BackendConfig::Local {
                    path: "/unused".into(),
                },
                prefix: "ghostie".into(),
                device_name: format!("dev{i}"),
                force: false,
            };
            setup_vault(&req, store.clone(), &Pass).unwrap();
            homes.push(home);
        }
        Template {
            store: store.duplicate(),
            homes,
            _dir: dir,
        }
    })
}

#[derive(Debug, Clone)]
enum Op {
    Write(usize, usize),
    Delete(usize, usize),
    Rename(usize, usize, usize),
    Push(usize),
    Pull(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let d = 0..DEVICES;
    let p = 0..PATHS.len();
    prop_oneof![
        3 => (d.clone(), p.clone()).prop_map(|(d, p)| Op::Write(d, p)),
        1 => (d.clone(), p.clone()).prop_map(|(d, p)| Op::Delete(d, p)),
        1 => (d.clone(), p.clone(), p).prop_map(|(d, a, b)| Op::Rename(d, a, b)),
        2 => d.clone().prop_map(Op::Push),
        2 => d.prop_map(Op::Pull),
    ]
}

/// Contents a device shows at `path` or beside it as a sibling.
fn visible_at(root: &Path, path: &str) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(c) = fs::read_to_string(root.join(path)) {
        out.push(c);
    }
    let p = root.join(path);
    let (dir, name) = (
        p.parent().unwrap(),
        p.file_name().unwrap().to_string_lossy().into_owned(),
    );
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with(&format!("{name}.conflict-")) {
                out.push(fs::read_to_string(e.path()).unwrap());
            }
        }
    }
    out
}

fn contents(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    fn go(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        for e in fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                go(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.insert(rel, fs::read_to_string(&p).unwrap());
            }
        }
    }
    go(root, root, &mut out);
    out
}

fn run_case(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let t = template();
    let work = tempfile::tempdir().unwrap();
    let store = Arc::new(t.store.duplicate());
    let mut vaults: Vec<Vault> = Vec::new();
    let mut roots = Vec::new();
    for (i, h) in t.homes.iter().enumerate() {
        let home = work.path().join(format!("dev{i}"));
        common::copy_dir(h, &home);
        let v = Vault::open_with_store(Home::new(&home), store.clone(), Box::new(Pass)).unwrap();
        roots.push(home.join("memories"));
        vaults.push(v);
    }
    let mut written: BTreeSet<String> = BTreeSet::new();
    let mut superseded: BTreeSet<String> = BTreeSet::new();
    let mut n = 0;
    for op in ops {
        match op {
            Op::Write(d, p) => {
                superseded.extend(visible_at(&roots[d], PATHS[p]));
                n += 1;
                let c = format!("dev{d} write {n}");
                let f = roots[d].join(PATHS[p]);
                fs::create_dir_all(f.parent().unwrap()).unwrap();
                fs::write(&f, &c).unwrap();
                written.insert(c);
            }
            Op::Delete(d, p) => {
                if roots[d].join(PATHS[p]).is_file() {
                    superseded.extend(visible_at(&roots[d], PATHS[p]));
                    fs::remove_file(roots[d].join(PATHS[p])).unwrap();
                }
            }
            Op::Rename(d, a, b) => {
                if a != b && roots[d].join(PATHS[a]).is_file() {
                    // The moved content stays visible at `b`; what `b` showed is replaced,
                    // and `a` is a deletion that supersedes its siblings.
                    let moved = fs::read_to_string(roots[d].join(PATHS[a])).unwrap();
                    // Superseded already by a device that saw it, it stays superseded.
                    let was_superseded = superseded.contains(&moved);
                    superseded.extend(
                        visible_at(&roots[d], PATHS[a])
                            .into_iter()
                            .filter(|c| *c != moved),
                    );
                    superseded.extend(visible_at(&roots[d], PATHS[b]));
                    let to = roots[d].join(PATHS[b]);
                    fs::create_dir_all(to.parent().unwrap()).unwrap();
                    fs::rename(roots[d].join(PATHS[a]), to).unwrap();
                    if !was_superseded {
                        superseded.remove(&moved);
                    }
                }
            }
            Op::Push(d) => {
                folder::push(&vaults[d], &NoProgress).unwrap();
            }
            Op::Pull(d) => {
                folder::pull(&vaults[d], &NoProgress).unwrap();
            }
        }
    }
    for _ in 0..2 {
        for v in vaults.iter_mut() {
            folder::pull(v, &NoProgress).unwrap();
            folder::push(v, &NoProgress).unwrap();
        }
    }
    for v in vaults.iter_mut() {
        folder::pull(v, &NoProgress).unwrap();
    }
    let first = contents(&roots[0]);
    for r in &roots[1..] {
        prop_assert_eq!(&contents(r), &first, "devices disagree");
    }
    let shown: BTreeSet<&String> = first.values().collect();
    for c in &written {
        prop_assert!(
            shown.contains(c) || superseded.contains(c),
            "content {:?} was lost; final: {:?}",
            c,
            first
        );
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(48)
}

proptest! {
    // 48 cases in CI; `PROPTEST_CASES=2000 cargo test --test model` explores further.
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]
    #[test]
    fn devices_converge_and_nothing_pushed_is_lost(ops in proptest::collection::vec(op(), 1..40)) {
        run_case(ops)?;
    }
}
