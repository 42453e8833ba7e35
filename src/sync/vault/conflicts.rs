//! Conflicts as the owner sees them (`conflict list`), and `conflict resolve`, which
//! is the same as renaming a sibling onto its path (keep one device's version) or
//! each sibling to a name of its own (keep all): it goes through the same rules.

use super::*;
use crate::model::Showing;
use crate::sync::rules::{After, Change, LocalChange, Seen};

/// One path in conflict.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Conflict {
    pub path: String,
    /// The device whose version is shown at the path.
    pub shown_device: String,
    pub siblings: Vec<ConflictSibling>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ConflictSibling {
    pub path: String,
    pub device: String,
}

/// Which side of a conflict to keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Keep {
    Device(String),
    /// Keep every version: the shown one at the path, each other as its own file.
    All,
}

/// `name.json` kept from device `d` becomes `name.d.json`, still a `.json` file.
pub fn kept_name(path: &str, device: &str) -> String {
    let (dir, file) = match path.rsplit_once('/') {
        Some((d, f)) => (Some(d), f),
        None => (None, path),
    };
    let renamed = match file.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => format!("{stem}.{device}.{ext}"),
        _ => format!("{file}.{device}"),
    };
    match dir {
        Some(d) => format!("{d}/{renamed}"),
        None => renamed,
    }
}

impl Vault {
    /// Every path in conflict, with the siblings beside it.
    pub fn conflicts(&self) -> SyncResult<Vec<Conflict>> {
        let ns = self.namespace()?;
        let names = self.name_map()?;
        let name = |d: &DeviceId| {
            names
                .get(d)
                .cloned()
                .unwrap_or_else(|| d.as_str()[..8].to_owned())
        };
        let mut out: Vec<Conflict> = Vec::new();
        for (path, shown) in &ns {
            let Some(main) = &shown.sibling_of else {
                continue;
            };
            let sib = ConflictSibling {
                path: path.clone(),
                device: name(&shown.version.device),
            };
            match out.iter_mut().find(|c| &c.path == main) {
                Some(c) => c.siblings.push(sib),
                None => out.push(Conflict {
                    path: main.clone(),
                    shown_device: ns
                        .get(main)
                        .map(|s| name(&s.version.device))
                        .unwrap_or_default(),
                    siblings: vec![sib],
                }),
            }
        }
        Ok(out)
    }

    /// Resolves the conflict at `path` as `keep` says. New names for kept copies avoid
    /// every path the vault shows and every path `taken` names (files in a folder that
    /// no version names yet, say).
    pub fn resolve_conflict(
        &self,
        path: &str,
        keep: &Keep,
        taken: &dyn Fn(&str) -> bool,
    ) -> SyncResult<()> {
        let heads = self.index().heads_of(path)?;
        let not_in_conflict = || {
            SyncError::Invalid(format!(
                "'{path}' is not in conflict ('ghostie-fs conflict' lists the paths that are)"
            ))
        };
        let (winner, losers) = namespace::resolve(&heads).ok_or_else(not_in_conflict)?;
        if losers.is_empty() {
            return Err(not_in_conflict());
        }
        let names = self.name_map()?;
        let name_of = |d: &DeviceId| {
            names
                .get(d)
                .cloned()
                .unwrap_or_else(|| d.as_str()[..8].to_owned())
        };
        // The command acts on everything the device knows of the path.
        let seen = Seen {
            at: Some(Showing::of(winner, None)),
            group: heads
                .iter()
                .filter(|h| h.device != winner.device || h.counter() != winner.counter())
                .map(|h| Showing::of(h, Some(path.to_owned())))
                .collect(),
        };
        let put = |path: &str, seen: Seen, v: &Version| Change {
            path: path.to_owned(),
            seen,
            after: After::Put {
                entry: v.entry.clone(),
                mtime_ns: v.mtime_ns,
            },
            local: LocalChange::Keep,
        };
        let mut changes = Vec::new();
        match keep {
            Keep::Device(wanted) => {
                let chosen = heads
                    .iter()
                    .find(|v| &name_of(&v.device) == wanted && !v.entry.is_deleted())
                    .ok_or_else(|| {
                        let devices: Vec<String> = std::iter::once(winner)
                            .chain(losers.iter().copied())
                            .map(|v| name_of(&v.device))
                            .collect();
                        SyncError::Invalid(format!(
                            "no version of {path} from a device called '{wanted}' is in conflict (choose one of: {})",
                            devices.join(", ")
                        ))
                    })?;
                changes.push(put(path, seen, chosen));
            }
            Keep::All => {
                let ns = self.namespace()?;
                let mut chosen: Vec<String> = Vec::new();
                let index = self.index();
                let mut kept = Vec::new();
                for l in &losers {
                    // Never over an earlier kept copy: x.pixel9.json, x.pixel9-2.json, …
                    let mut target = kept_name(path, &name_of(&l.device));
                    let mut n = 2;
                    loop {
                        let live_there = index
                            .heads_of(&target)?
                            .iter()
                            .any(|v| !v.entry.is_deleted());
                        let free = !live_there
                            && !chosen.contains(&target)
                            && !ns.contains_key(&target)
                            && !taken(&target);
                        if free {
                            break;
                        }
                        target = kept_name(path, &format!("{}-{n}", name_of(&l.device)));
                        n += 1;
                    }
                    chosen.push(target.clone());
                    kept.push((target, *l));
                }
                drop(index);
                for (target, l) in kept {
                    changes.push(put(&target, Seen::nothing(), l));
                }
                changes.push(put(path, seen, winner));
            }
        }
        self.record(changes, Vec::new())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_names_stay_json() {
        assert_eq!(
            kept_name("2025-06-28.json", "pixel9"),
            "2025-06-28.pixel9.json"
        );
        assert_eq!(
            kept_name("notes/a.b.json", "laptop"),
            "notes/a.b.laptop.json"
        );
        assert_eq!(kept_name("README", "x"), "README.x");
        assert_eq!(kept_name(".hidden", "x"), ".hidden.x");
    }
}
