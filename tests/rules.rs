//! DESIGN §6 through both front-ends: the same table of conflict cases, played by two
//! devices that sync a plain folder (push and pull), by two mounts (driven without a
//! kernel, as the FUSE binding calls them), and by one of each. Every run must end in
//! the same namespace on both devices, and it must be the one the table expects: the
//! rules live in one place (the engine), so no front-end may bend them.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::sync::Arc;

use ghostie_fs::backend::{MemoryStore, SharedStore};
use ghostie_fs::config::{BackendConfig, Home};
use ghostie_fs::folder;
use ghostie_fs::fs::tree::Kind;
use ghostie_fs::fs::{MountFs, MountOptions};
use ghostie_fs::sync::{setup_vault, NoProgress, SetupRequest, Vault};

use common::TestPass;

type View = BTreeMap<String, Vec<u8>>;

/// One device, whatever its front-end.
trait Device {
    /// Writes `data` at `path` with modification time `mtime` (seconds).
    fn write(&self, path: &str, data: &[u8], mtime: i64);
    fn remove(&self, path: &str);
    fn rename(&self, from: &str, to: &str);
    /// Sends its changes and takes in the others'.
    fn sync(&self);
    /// Every file it shows, with its bytes.
    fn view(&self) -> View;
}

fn open_vault(dir: &Path, name: &str, store: &SharedStore) -> Vault {
    let home = Home::new(dir.join(name));
    let req = SetupRequest {
        home: home.clone(),
        backend: BackendConfig::Local {
            path: "/unused".into(),
        },
        prefix: "ghostie".into(),
        device_name: name.into(),
        force: false,
    };
    setup_vault(&req, store.clone(), &TestPass).expect("setup");
    Vault::open_with_store(home, store.clone(), Box::new(TestPass)).expect("open")
}

struct FolderDevice {
    vault: Vault,
}

impl FolderDevice {
    fn root(&self) -> std::path::PathBuf {
        self.vault.home().memories()
    }
}

impl Device for FolderDevice {
    fn write(&self, path: &str, data: &[u8], mtime: i64) {
        let p = self.root().join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, data).unwrap();
        filetime::set_file_mtime(&p, filetime::FileTime::from_unix_time(mtime, 0)).unwrap();
    }
    fn remove(&self, path: &str) {
        fs::remove_file(self.root().join(path)).unwrap();
    }
    fn rename(&self, from: &str, to: &str) {
        fs::rename(self.root().join(from), self.root().join(to)).unwrap();
    }
    fn sync(&self) {
        folder::pull(&self.vault, &NoProgress).unwrap();
        folder::push(&self.vault, &NoProgress).unwrap();
    }
    fn view(&self) -> View {
        let mut out = View::new();
        let root = self.root();
        fn walk(root: &Path, dir: &Path, out: &mut View) {
            for e in fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    walk(root, &p, out);
                } else {
                    let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                    out.insert(rel, fs::read(&p).unwrap());
                }
            }
        }
        walk(&root, &root, &mut out);
        out
    }
}

struct MountDevice {
    fs: Arc<MountFs>,
}

impl MountDevice {
    fn parent(&self, path: &str) -> (u64, String) {
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        let mut ino = self.fs.root_ino();
        for part in dir.split('/').filter(|p| !p.is_empty()) {
            ino = match self.fs.lookup(ino, part) {
                Ok(a) => a.ino,
                Err(_) => self.fs.mkdir(ino, part, 0o755).unwrap().ino,
            };
        }
        (ino, name.to_owned())
    }
}

impl Device for MountDevice {
    fn write(&self, path: &str, data: &[u8], mtime: i64) {
        let (parent, name) = self.parent(path);
        let (ino, fh) = match self.fs.lookup(parent, &name) {
            Ok(a) => {
                let fh = self.fs.open(a.ino, libc::O_WRONLY).unwrap();
                self.fs
                    .setattr(a.ino, None, None, None, Some(0), None, Some(fh))
                    .unwrap();
                (a.ino, fh)
            }
            Err(_) => {
                let (a, fh) = self
                    .fs
                    .create(parent, &name, 0o644, libc::O_WRONLY)
                    .unwrap();
                (a.ino, fh)
            }
        };
        self.fs.write(ino, fh, 0, data).unwrap();
        self.fs
            .setattr(
                ino,
                None,
                None,
                None,
                None,
                Some(mtime * 1_000_000_000),
                Some(fh),
            )
            .unwrap();
        self.fs.flush(ino, fh).unwrap();
        self.fs.release(ino, fh).unwrap();
    }
    fn remove(&self, path: &str) {
        let (parent, name) = self.parent(path);
        self.fs.unlink(parent, &name).unwrap();
    }
    fn rename(&self, from: &str, to: &str) {
        let (p, n) = self.parent(from);
        let (q, m) = self.parent(to);
        self.fs.rename(p, &n, q, &m, false).unwrap();
    }
    fn sync(&self) {
        self.fs.sync_once().unwrap();
    }
    fn view(&self) -> View {
        let mut out = View::new();
        let mut stack = vec![(self.fs.root_ino(), String::new())];
        while let Some((dir, prefix)) = stack.pop() {
            for (attr, name) in self.fs.readdir(dir).unwrap() {
                if name == "." || name == ".." {
                    continue;
                }
                let path = format!("{prefix}{name}");
                if attr.kind == Kind::Dir {
                    stack.push((attr.ino, format!("{path}/")));
                    continue;
                }
                let fh = self.fs.open(attr.ino, libc::O_RDONLY).unwrap();
                let data = self
                    .fs
                    .read(attr.ino, 0, attr.size as u32 + 1)
                    .unwrap()
                    .to_vec();
                self.fs.release(attr.ino, fh).unwrap();
                out.insert(path, data);
            }
        }
        out
    }
}

#[derive(Clone, Copy, Debug)]
enum Frontend {
    Folder,
    Mount,
}

fn device(kind: Frontend, dir: &Path, name: &str, store: &SharedStore) -> Box<dyn Device> {
    let vault = open_vault(dir, name, store);
    match kind {
        Frontend::Folder => Box::new(FolderDevice { vault }),
        Frontend::Mount => Box::new(MountDevice {
            fs: MountFs::new(vault, MountOptions::default()).unwrap(),
        }),
    }
}

/// Every device sends its changes, then every device takes in the others'.
fn settle(devices: &[&dyn Device]) {
    for _ in 0..2 {
        for d in devices {
            d.sync();
        }
    }
}

const T0: i64 = 1_800_000_000;

/// A case of the table: what the two devices do, from x.json = "0" on both.
struct Case {
    name: &'static str,
    play: fn(&dyn Device, &dyn Device),
    expect: &'static [(&'static str, &'static str)],
}

/// The laptop and the phone edit x.json at once; the phone's edit is newer.
fn edit_vs_edit(a: &dyn Device, b: &dyn Device) {
    a.write("x.json", b"laptop", T0 + 10);
    b.write("x.json", b"phone", T0 + 20);
    settle(&[a, b]);
}

const CASES: &[Case] = &[
    Case {
        name: "edit vs edit: the newer at the path, the other beside it",
        play: edit_vs_edit,
        expect: &[("x.json", "phone"), ("x.json.conflict-laptop", "laptop")],
    },
    Case {
        name: "edit vs delete: the edit survives",
        play: |a, b| {
            a.remove("x.json");
            b.write("x.json", b"phone", T0 + 20);
            settle(&[a, b]);
        },
        expect: &[("x.json", "phone")],
    },
    Case {
        name: "deleting the main file removes its siblings too",
        play: |a, b| {
            edit_vs_edit(a, b);
            a.remove("x.json");
            settle(&[a, b]);
        },
        expect: &[],
    },
    Case {
        name: "removing a sibling keeps what the path shows",
        play: |a, b| {
            edit_vs_edit(a, b);
            b.remove("x.json.conflict-laptop");
            settle(&[a, b]);
        },
        expect: &[("x.json", "phone")],
    },
    Case {
        name: "an edited sibling becomes a file of its own",
        play: |a, b| {
            edit_vs_edit(a, b);
            a.write("x.json.conflict-laptop", b"kept apart", T0 + 30);
            settle(&[a, b]);
        },
        expect: &[
            ("x.json", "phone"),
            ("x.json.conflict-laptop", "kept apart"),
        ],
    },
    Case {
        name: "renaming the sibling onto the path keeps the sibling",
        play: |a, b| {
            edit_vs_edit(a, b);
            b.rename("x.json.conflict-laptop", "x.json");
            settle(&[a, b]);
        },
        expect: &[("x.json", "laptop")],
    },
    Case {
        name: "renaming another file onto a sibling replaces it with a file of its own",
        play: |a, b| {
            edit_vs_edit(a, b);
            a.write("y.json", b"y", T0 + 30);
            settle(&[a, b]);
            a.rename("y.json", "x.json.conflict-laptop");
            settle(&[a, b]);
        },
        expect: &[("x.json", "phone"), ("x.json.conflict-laptop", "y")],
    },
    Case {
        name: "the same content written on both is no conflict",
        play: |a, b| {
            a.write("x.json", b"same", T0 + 10);
            b.write("x.json", b"same", T0 + 20);
            settle(&[a, b]);
        },
        expect: &[("x.json", "same")],
    },
];

/// Plays `case` with the laptop on `fa` and the phone on `fb`; returns what each shows.
fn play(case: &Case, fa: Frontend, fb: Frontend) -> (View, View) {
    let work = tempfile::tempdir().unwrap();
    let store: SharedStore = Arc::new(MemoryStore::new());
    let a = device(fa, work.path(), "laptop", &store);
    let b = device(fb, work.path(), "phone", &store);
    a.write("x.json", b"0", T0);
    settle(&[a.as_ref(), b.as_ref()]);
    assert_eq!(b.view().get("x.json").map(Vec::as_slice), Some(&b"0"[..]));
    (case.play)(a.as_ref(), b.as_ref());
    (a.view(), b.view())
}

#[test]
fn every_case_of_the_conflict_rules_ends_alike_through_either_front_end() {
    for case in CASES {
        let expected: View = case
            .expect
            .iter()
            .map(|(p, c)| (p.to_string(), c.as_bytes().to_vec()))
            .collect();
        for (fa, fb) in [
            (Frontend::Folder, Frontend::Folder),
            (Frontend::Mount, Frontend::Mount),
            (Frontend::Folder, Frontend::Mount),
            (Frontend::Mount, Frontend::Folder),
        ] {
            let (a, b) = play(case, fa, fb);
            let shown = |v: &View| -> BTreeMap<String, String> {
                v.iter()
                    .map(|(k, d)| (k.clone(), String::from_utf8_lossy(d).into_owned()))
                    .collect()
            };
            assert_eq!(
                shown(&a),
                shown(&expected),
                "{}: the laptop ({fa:?}) shows something else (phone: {fb:?})",
                case.name
            );
            assert_eq!(
                shown(&b),
                shown(&expected),
                "{}: the phone ({fb:?}) shows something else (laptop: {fa:?})",
                case.name
            );
        }
    }
}
