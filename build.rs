//! Records the commit the binary is built from, for `ghostie-fs --version`: a bug
//! report then names the exact code. Outside a git checkout (a source tarball) the
//! commit is "unknown".

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

fn main() {
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=GHOSTIE_COMMIT={commit}");
    // Built again when HEAD moves: a checkout (HEAD) or a commit on the branch (the
    // branch's ref, loose or packed).
    println!("cargo:rerun-if-changed=build.rs");
    // A path that does not exist would make cargo run this script at every build.
    let watch = |name: &str| {
        if let Some(path) = git(&["rev-parse", "--git-path", name]) {
            if std::path::Path::new(&path).exists() {
                println!("cargo:rerun-if-changed={path}");
            }
        }
    };
    watch("HEAD");
    // Written at every commit and checkout, even when the branch's ref is packed.
    watch("logs/HEAD");
    watch("packed-refs");
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watch(&branch);
    }
}
