//! Atomic file writes: write a temp file beside the target, fsync it, rename it into place, fsync the
//! directory. A crash leaves either the old file or the new one, never a torn file.
use anyhow::{Context, Result};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` atomically (temp file in the same directory + fsync + rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temp_path(path)?;
    {
        let mut f = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(bytes)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.sync_all()
            .with_context(|| format!("syncing {}", tmp.display()))?;
    }
    commit(&tmp, path)
}

/// The temp file beside `path` that [`commit`] renames into place (`.NAME.tmp.PID`); creates the
/// directory. For writers that stream into a file and must not leave a torn one.
pub fn temp_path(path: &Path) -> Result<PathBuf> {
    let dir = parent_dir(path);
    fs::create_dir_all(&dir).with_context(|| format!("creating directory {}", dir.display()))?;
    let name = path
        .file_name()
        .with_context(|| format!("{} has no file name", path.display()))?;
    Ok(dir.join(format!(
        ".{}.tmp.{}",
        name.to_string_lossy(),
        std::process::id()
    )))
}

/// Rename a finished (synced) temp file onto `path` and fsync the directory.
pub fn commit(tmp: &Path, path: &Path) -> Result<()> {
    fs::rename(tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    if let Ok(d) = File::open(parent_dir(path)) {
        // Directory fsync makes the rename durable; not all filesystems support it, so it is best effort.
        let _ = d.sync_all();
    }
    Ok(())
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}
