//! Files that are never half-written, in directories only their owner can read.

use std::fs::{self, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

/// Whether [`write_atomically`] may replace a file that exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Existing {
    /// Fail with [`io::ErrorKind::AlreadyExists`] and leave the file as it is.
    Keep,
    /// Replace it.
    Replace,
}

/// Creates `dir` and its missing parents; on unix the new ones get mode 0700.
pub(crate) fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Writes `bytes` to `path` so that `path` holds either its old content (or nothing) or all
/// of `bytes`, never a part: the bytes go to a temporary file in the same folder, are synced,
/// then take `path`'s name in one step (a link for [`Existing::Keep`], so a file that appears
/// meanwhile is not overwritten either; a rename for [`Existing::Replace`]).
pub(crate) fn write_atomically(path: &Path, bytes: &[u8], existing: Existing) -> io::Result<()> {
    let temporary = temporary_path(path);
    let result = write_new(&temporary, bytes).and_then(|()| match existing {
        Existing::Keep => fs::hard_link(&temporary, path),
        Existing::Replace => fs::rename(&temporary, path),
    });
    // After a link, or after a failure: the temporary name must not stay behind.
    let _ = fs::remove_file(&temporary);
    if result.is_ok() {
        sync_parent(path);
    }
    result
}

fn write_new(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

fn temporary_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}", std::process::id()));
    path.with_file_name(name)
}

/// Makes a new name durable (unix); a failure only weakens durability, so it is ignored.
fn sync_parent(path: &Path) {
    #[cfg(unix)]
    if let Some(handle) = path.parent().and_then(|dir| fs::File::open(dir).ok()) {
        let _ = handle.sync_all();
    }
    #[cfg(not(unix))]
    let _ = path;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_refuses_an_existing_file_and_replace_replaces_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        write_atomically(&path, b"one", Existing::Keep).unwrap();
        let error = write_atomically(&path, b"two", Existing::Keep).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&path).unwrap(), b"one");
        write_atomically(&path, b"three", Existing::Replace).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"three");
        // Nothing but the file itself is left in the folder.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[cfg(unix)]
    #[test]
    fn private_dirs_are_for_their_owner_only() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("a/b");
        create_private_dir(&data).unwrap();
        let mode = fs::metadata(&data).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }
}
