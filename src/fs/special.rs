//! What the mount answers to requests outside plain files and folders: extended
//! attributes (read-only `user.ghostie.*`), hard links, device nodes, ioctls and
//! names that are not UTF-8. Each answer is decided here, not in the binding.

use super::changes::{entry_of, put};
use super::errno::{Errno, FsResult};
use super::mount_fs::{check_name, precise_now_ns, Attr, MountFs};
use super::tree::{Ino, Kind};
use crate::model::Entry;

/// The attributes the mount shows, all read-only.
const OURS: &[u8] = b"user.ghostie.";

/// A name from the kernel: paths in the vault are UTF-8, and other names could not
/// be synced faithfully.
pub fn name_of(bytes: &[u8]) -> FsResult<&str> {
    std::str::from_utf8(bytes).map_err(|_| Errno::INVAL)
}

/// How rename(2) was asked to behave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RenameMode {
    pub no_replace: bool,
    /// RENAME_EXCHANGE or RENAME_WHITEOUT: not supported.
    pub other: bool,
}

impl MountFs {
    /// mknod(2): a regular file is created as by open(O_CREAT) and recorded at once;
    /// a fifo or a socket is made on this device only (see `local.rs`); device
    /// nodes are refused (a FUSE mount is `nodev`, and a device number means
    /// nothing on another machine).
    pub fn mknod(&self, parent: Ino, name: &str, mode: u32) -> FsResult<Attr> {
        let kind = match mode & libc::S_IFMT {
            0 | libc::S_IFREG => {
                let (a, fh) = self.create(parent, name, mode & 0o7777, libc::O_WRONLY)?;
                self.flush(a.ino, fh)?;
                self.release(a.ino, fh)?;
                return self.getattr(a.ino);
            }
            libc::S_IFIFO => Kind::Fifo,
            libc::S_IFSOCK => Kind::Socket,
            _ => return Err(Errno::PERM),
        };
        check_name(name)?;
        let mut st = self.state();
        let path = Self::child_path(&st, parent, name)?;
        if st.tree.ino_of(&path).is_some() {
            return Err(Errno::EXIST);
        }
        let now = precise_now_ns();
        let ino = st.tree.add_local(&path, kind, mode & 0o7777, now);
        if let Err(e) = self.keep_local(&mut st, std::slice::from_ref(&path)) {
            st.tree.remove_subtree(ino);
            return Err(e);
        }
        st.tree.touch_dir(parent, now);
        self.node_attr(&st, ino)
    }

    /// link(2): one more name for the same inode on this device. In the vault the
    /// new name is a file of its own with the same content (sealed once: nothing is
    /// uploaded again), so other devices see two files; here both names share the
    /// inode, its attributes and its writes, and the grouping is kept locally.
    pub fn link(&self, ino: Ino, new_parent: Ino, new_name: &str) -> FsResult<Attr> {
        check_name(new_name)?;
        let ino = self.state().tree.canonical(ino);
        // A file open with unrecorded changes is recorded first: the new name must
        // hold what the file holds.
        self.commit_if_dirty(ino)?;
        let mut st = self.state();
        let node = st.tree.get(ino).cloned().ok_or(Errno::NOENT)?;
        let path = Self::child_path(&st, new_parent, new_name)?;
        if st.tree.ino_of(&path).is_some() {
            return Err(Errno::EXIST);
        }
        let now = precise_now_ns();
        let group = st.tree.link_group(ino).unwrap_or(now);
        let extra = match node.kind {
            Kind::Dir => return Err(Errno::PERM),
            Kind::Fifo | Kind::Socket => {
                let extra = st.tree.add_local(&path, node.kind, node.mode, now);
                st.tree.add_link(ino, extra, group);
                extra
            }
            Kind::File | Kind::Symlink => {
                let entry = entry_of(&node).ok_or(Errno::IO)?;
                let change = put(&st, &path, entry, node.mtime_ns);
                self.record(&mut st, vec![change], std::slice::from_ref(&path))?;
                self.note_change();
                let extra = st.tree.ino_of(&path).ok_or(Errno::IO)?;
                st.tree.add_link(ino, extra, group);
                extra
            }
        };
        if let Some(n) = st.tree.get_mut(ino) {
            n.ctime_ns = now;
        }
        st.tree.touch_dir(new_parent, now);
        let mut paths = vec![node.path.clone()];
        paths.extend(st.tree.other_names(ino));
        if let Err(e) = self.keep_local(&mut st, &paths) {
            tracing::warn!("cannot keep the link {path} of {}: {e:?}", node.path);
        }
        let _ = extra;
        self.node_attr(&st, ino)
    }

    /// Programs ask every file whether it is a terminal (Python does on every open):
    /// answered at once, and quietly.
    pub fn ioctl(&self) -> FsResult<()> {
        Err(Errno::NOTTY)
    }

    pub fn rename_as(
        &self,
        parent: Ino,
        name: &str,
        new_parent: Ino,
        new_name: &str,
        mode: RenameMode,
    ) -> FsResult<()> {
        if mode.other {
            return Err(Errno::INVAL);
        }
        self.rename(parent, name, new_parent, new_name, mode.no_replace)
    }

    pub fn setxattr(&self, name: &[u8]) -> FsResult<()> {
        if name.starts_with(OURS) {
            Err(Errno::PERM)
        } else {
            Err(Errno::NOTSUP)
        }
    }

    pub fn removexattr(&self, name: &[u8]) -> FsResult<()> {
        if name.starts_with(OURS) {
            Err(Errno::PERM)
        } else {
            Err(Errno::NODATA)
        }
    }

    /// One attribute's value. The kernel asks for security.capability before every
    /// write: that is answered without touching the index.
    pub fn getxattr(&self, ino: Ino, name: &[u8]) -> FsResult<Vec<u8>> {
        if !name.starts_with(OURS) {
            return Err(Errno::NODATA);
        }
        self.xattrs(ino)?
            .into_iter()
            .find(|(n, _)| n.as_bytes() == name)
            .map(|(_, v)| v)
            .ok_or(Errno::NODATA)
    }

    /// The attribute names, each ending in a NUL byte.
    pub fn listxattr(&self, ino: Ino) -> FsResult<Vec<u8>> {
        let mut list = Vec::new();
        for (n, _) in self.xattrs(ino)? {
            list.extend_from_slice(n.as_bytes());
            list.push(0);
        }
        Ok(list)
    }

    /// `user.ghostie.*`: what the index knows about this file, read-only.
    pub fn xattrs(&self, ino: Ino) -> FsResult<Vec<(String, Vec<u8>)>> {
        let names = self.vault.device_names()?;
        let st = self.state();
        let n = st.tree.get(ino).ok_or(Errno::NOENT)?;
        let Some(shown) = &n.shown else {
            return Ok(Vec::new());
        };
        let v = &shown.version;
        let device = names
            .get(&v.device)
            .cloned()
            .unwrap_or_else(|| v.device.as_str()[..8].to_owned());
        let mut out = vec![
            (
                "user.ghostie.version".to_owned(),
                format!("{}:{}", v.device, v.counter()).into_bytes(),
            ),
            ("user.ghostie.device".to_owned(), device.into_bytes()),
        ];
        if let Entry::File { content, .. } = &v.entry {
            if !st.files.is_dirty(ino) {
                out.push((
                    "user.ghostie.sha256".to_owned(),
                    content.sha256.to_string().into_bytes(),
                ));
            }
        }
        let conflict = match &shown.sibling_of {
            Some(main) => format!("sibling of {main}"),
            None => {
                let sibs: Vec<String> = st
                    .tree
                    .siblings_of(&n.path)
                    .iter()
                    .filter_map(|i| st.tree.get(*i).map(|s| s.name().to_owned()))
                    .collect();
                if sibs.is_empty() {
                    "none".to_owned()
                } else {
                    format!("in conflict with {}", sibs.join(", "))
                }
            }
        };
        out.push(("user.ghostie.conflict".to_owned(), conflict.into_bytes()));
        Ok(out)
    }
}
