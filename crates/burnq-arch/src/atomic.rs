//! The one atomic file write: every artifact (model files, checkpoints, JSON reports, ONNX
//! graphs) goes through [`write_atomic`], so a reader sees the old file or the new one, never a
//! partial one, and a killed writer leaves at most a temporary file that the next successful
//! write of the same path removes.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Writes `bytes` to `path` atomically: a new temporary file `<name>.<pid>-<n>.tmp` in the same
/// folder (created exclusively, so concurrent writers never share one), synced, then renamed
/// over `path`. Creates the folder if needed. After the rename, temporary files of the same
/// `<name>` left by writers that no longer run (a killed save) are removed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let (dir, name) = split(path)?;
    fs::create_dir_all(&dir)?;
    let (tmp, mut file) = create_temp(&dir, &name)?;
    let written = file
        .write_all(bytes)
        .and_then(|()| file.sync_all())
        .and_then(|()| fs::rename(&tmp, path));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
        return written;
    }
    remove_stale_temps(&dir, &name);
    Ok(())
}

/// The folder (`.` for a bare file name) and the file name of `path`.
fn split(path: &Path) -> io::Result<(PathBuf, String)> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} has no UTF-8 file name", path.display()),
            )
        })?
        .to_owned();
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    Ok((dir, name))
}

/// A fresh `<name>.<pid>-<n>.tmp` in `dir`, created exclusively.
fn create_temp(dir: &Path, name: &str) -> io::Result<(PathBuf, File)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!("{name}.{}-{n}.tmp", std::process::id()));
        match OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(file) => return Ok((tmp, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// The writer's process id if `file` is a temporary file of `name` (`<name>.<pid>-<n>.tmp`).
fn temp_owner(file: &str, name: &str) -> Option<u32> {
    let rest = file.strip_prefix(name)?.strip_prefix('.')?;
    let (pid, n) = rest.strip_suffix(".tmp")?.split_once('-')?;
    n.parse::<u64>().ok()?;
    pid.parse().ok()
}

/// Removes the temporary files of `name` in `dir` whose writer no longer runs. Where a
/// process's liveness cannot be told (no `/proc`), nothing is removed. Best effort: a file
/// that cannot be listed or removed is left.
fn remove_stale_temps(dir: &Path, name: &str) {
    let proc_fs = Path::new("/proc/self");
    if !proc_fs.exists() {
        return;
    }
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file = entry.file_name();
        let Some(pid) = file.to_str().and_then(|f| temp_owner(f, name)) else {
            continue;
        };
        if pid != std::process::id() && !Path::new("/proc").join(pid.to_string()).exists() {
            let _ = fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_replaces_and_creates_folders() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a").join("model.bin");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["model.bin"]);
    }

    #[test]
    fn parses_temp_names() {
        assert_eq!(temp_owner("m.bpk.123-4.tmp", "m.bpk"), Some(123));
        for other in [
            "m.bpk",
            "m.bpk.tmp",
            "m.bpk.x-1.tmp",
            "m.bpk.1-x.tmp",
            "n.bpk.1-2.tmp",
        ] {
            assert_eq!(temp_owner(other, "m.bpk"), None, "{other}");
        }
    }

    #[test]
    fn a_killed_writers_temp_file_is_removed_by_the_next_write() {
        if !Path::new("/proc/self").exists() {
            eprintln!("SKIPPED: no /proc to tell whether a writer still runs");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.bin");
        // A process id above Linux's pid_max (2^22) never runs.
        let dead = dir.path().join("model.bin.4294967295-0.tmp");
        let alive = dir
            .path()
            .join(format!("model.bin.{}-999999.tmp", std::process::id()));
        let unrelated = dir.path().join("other.bin.4294967295-0.tmp");
        for f in [&dead, &alive, &unrelated] {
            fs::write(f, b"partial").unwrap();
        }
        write_atomic(&path, b"new").unwrap();
        assert!(!dead.exists(), "the dead writer's temp file stays");
        assert!(alive.exists() && unrelated.exists());
    }

    #[test]
    fn a_path_without_file_name_is_an_error() {
        assert_eq!(
            write_atomic(Path::new("/"), b"x").unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    }
}
