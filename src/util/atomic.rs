//! Atomic file writes: write a temp file beside the target, fsync it, rename it into place, fsync the
//! directory. A crash leaves either the old file or the new one, never a torn file.
//!
//! Key decision: temp names are setdino's own unique pattern, `.NAME.tmp.PID.SEQ` beside `NAME` (a
//! directory for stores, a file otherwise), so the next write of the same output can recognise what an
//! earlier, killed writer left and remove exactly that: temps of a process that is no longer alive. Nothing
//! else is ever removed.
use anyhow::{Context, Result};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

static SEQ: AtomicU64 = AtomicU64::new(0);

/// Writes `bytes` to `path` atomically (temp file in the same directory + fsync + rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = TempFile::new(path)?;
    {
        let mut f = File::create(tmp.path())
            .with_context(|| format!("creating {}", tmp.path().display()))?;
        f.write_all(bytes)
            .with_context(|| format!("writing {}", tmp.path().display()))?;
        f.sync_all()
            .with_context(|| format!("syncing {}", tmp.path().display()))?;
    }
    tmp.commit()
}

/// A fresh temp name beside `path` (`.NAME.tmp.PID.SEQ`, unique within and across processes) that
/// [`commit`] renames into place; creates the directory and first removes stale temps of the same output
/// (see [`remove_stale_temps`]). For writers that stream into a file and must not leave a torn one;
/// prefer [`TempFile`], which also removes the temp when the write fails.
pub fn temp_path(path: &Path) -> Result<PathBuf> {
    let dir = parent_dir(path);
    fs::create_dir_all(&dir).with_context(|| format!("creating directory {}", dir.display()))?;
    let name = file_name(path)?;
    remove_stale_temps(path)?;
    Ok(dir.join(format!(
        ".{name}.tmp.{}.{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )))
}

/// Rename a finished (synced) temp file onto `path` and fsync the directory.
pub fn commit(tmp: &Path, path: &Path) -> Result<()> {
    fs::rename(tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    sync_dir(&parent_dir(path));
    Ok(())
}

/// A temp file (or directory) for `path` that is removed on drop unless committed.
#[derive(Debug)]
pub struct TempFile {
    tmp: PathBuf,
    target: PathBuf,
    done: bool,
}

impl TempFile {
    /// A temp name for `path` (nothing is created yet).
    pub fn new(path: &Path) -> Result<TempFile> {
        Ok(TempFile {
            tmp: temp_path(path)?,
            target: path.to_path_buf(),
            done: false,
        })
    }

    /// The temp path to write to.
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// The final path.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Rename the temp into place.
    pub fn commit(mut self) -> Result<()> {
        commit(&self.tmp, &self.target)?;
        self.done = true;
        Ok(())
    }

    /// Forget the temp without removing it (the caller renamed it itself).
    pub fn keep(mut self) -> PathBuf {
        self.done = true;
        std::mem::take(&mut self.tmp)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.done {
            remove_any(&self.tmp);
        }
    }
}

fn remove_any(p: &Path) {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => {
            let _ = fs::remove_dir_all(p);
        }
        Ok(_) => {
            let _ = fs::remove_file(p);
        }
        Err(_) => {}
    }
}

/// The process id in a temp name of `name` (`.NAME.tmp.PID` or `.NAME.tmp.PID.SEQ`), or `Some(None)` for
/// the legacy `.NAME.tmp` and `.NAME.partial`; `None` when `entry` is not a temp of `name`.
fn temp_owner(name: &str, entry: &str) -> Option<Option<i32>> {
    if entry == format!(".{name}.partial") {
        // The temp name of `embed` before this scheme.
        return Some(None);
    }
    let rest = entry.strip_prefix(&format!(".{name}.tmp"))?;
    if rest.is_empty() {
        return Some(None);
    }
    let rest = rest.strip_prefix('.')?;
    let (pid, seq) = match rest.split_once('.') {
        Some((p, s)) => (p, Some(s)),
        None => (rest, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(pid) || !seq.is_none_or(digits) {
        return None;
    }
    pid.parse::<i32>().ok().map(Some)
}

/// Whether a process with this id is alive (a zombie counts as alive until reaped).
fn alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    if u32::try_from(pid).is_ok_and(|p| p == std::process::id()) {
        return true;
    }
    // SAFETY: signal 0 only checks that the process exists; no signal is sent.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Removes the temps of `path` left by writers that are no longer running (files or directories named
/// `.NAME.tmp.PID[.SEQ]` with a dead PID, and the legacy `.NAME.tmp` and `.NAME.partial`); returns how
/// many it removed.
/// Temps of live processes (a concurrent writer) and every other file are left alone.
pub fn remove_stale_temps(path: &Path) -> Result<usize> {
    let dir = parent_dir(path);
    let name = file_name(path)?;
    let Ok(entries) = fs::read_dir(&dir) else {
        return Ok(0);
    };
    let mut n = 0;
    for e in entries.flatten() {
        let entry = e.file_name().to_string_lossy().into_owned();
        match temp_owner(&name, &entry) {
            Some(Some(pid)) if alive(pid) => {}
            Some(_) => {
                remove_any(&e.path());
                n += 1;
            }
            None => {}
        }
    }
    Ok(n)
}

/// Best-effort directory fsync (makes a rename durable; not all filesystems support it).
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

fn file_name(path: &Path) -> Result<String> {
    Ok(path
        .file_name()
        .with_context(|| format!("{} has no file name", path.display()))?
        .to_string_lossy()
        .into_owned())
}

/// The directory holding `path` (`.` for a bare name).
pub fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names() {
        assert_eq!(temp_owner("a.npy", ".a.npy.tmp.12.3"), Some(Some(12)));
        assert_eq!(temp_owner("a.npy", ".a.npy.tmp.12"), Some(Some(12)));
        assert_eq!(temp_owner("a.npy", ".a.npy.tmp"), Some(None));
        assert_eq!(temp_owner("a.npy", ".a.npy.partial"), Some(None));
        assert_eq!(temp_owner("a.npy", ".a.npy.tmp.x"), None);
        assert_eq!(temp_owner("a.npy", ".a.npy.tmp.1.2.3"), None);
        assert_eq!(temp_owner("a.npy", "a.npy"), None);
        assert_eq!(temp_owner("a.npy", ".b.npy.tmp.1"), None);
    }

    #[test]
    fn stale_temps_of_dead_writers_only() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("x.bin");
        // A pid that cannot be alive (above the kernel's pid_max limit of 2^22).
        let dead = d.path().join(".x.bin.tmp.99999999.0");
        let live = d
            .path()
            .join(format!(".x.bin.tmp.{}.77", std::process::id()));
        let other = d.path().join(".y.bin.tmp.99999999.0");
        let user = d.path().join("x.bin.tmp");
        for p in [&dead, &live, &other, &user] {
            fs::write(p, b"1").unwrap();
        }
        assert_eq!(remove_stale_temps(&out).unwrap(), 1);
        assert!(!dead.exists() && live.exists() && other.exists() && user.exists());
        write_atomic(&out, b"hello").unwrap();
        assert_eq!(fs::read(&out).unwrap(), b"hello");
        // A failed write leaves no temp.
        let t = TempFile::new(&out).unwrap();
        fs::write(t.path(), b"partial").unwrap();
        let tp = t.path().to_path_buf();
        drop(t);
        assert!(!tp.exists());
    }
}
