//! The filesystem driven without a kernel (see mount_fs.rs).
