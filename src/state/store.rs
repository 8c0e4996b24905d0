//! The files the admin API writes (the rules file, the tenant settings file): read with
//! their SHA-256 (the ETag), replaced atomically, restored when a reload refuses them.
//!
//! A write goes to a temporary file in the same directory, is flushed to disk, renamed over
//! the target and the directory is flushed, so that a crash leaves either the old or the
//! new file, never a torn one — and the file watcher sees one rename, as with an editor.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A file's bytes as they are now; `None` when it does not exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Current {
    pub bytes: Option<Vec<u8>>,
    /// SHA-256 of the bytes (of the empty string when the file does not exist).
    pub sha256: String,
}

pub fn read(path: &Path) -> io::Result<Current> {
    match fs::read(path) {
        Ok(b) => Ok(Current { sha256: sha256_hex(&b), bytes: Some(b) }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Current { bytes: None, sha256: sha256_hex(b"") }),
        Err(e) => Err(e),
    }
}

/// Where to write: the file itself, or, when `path` is a symlink, the file it points to (so
/// a symlinked rules file stays a symlink).
fn target(path: &Path) -> PathBuf {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()),
        _ => path.to_path_buf(),
    }
}

/// Replace `path` with `bytes`: temp file in the same directory + fsync + rename + fsync of
/// the directory. The file keeps its permissions.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let path = target(path);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file path"))?
        .to_string_lossy()
        .into_owned();
    let suffix: u64 = rand::random();
    let tmp = dir.join(format!(".{name}.{}.{suffix:016x}.tmp", std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        if let Ok(meta) = fs::metadata(&path) {
            f.set_permissions(meta.permissions())?;
        }
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, &path)?;
        File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Put a file back as it was before a write (`None`: it did not exist).
pub fn restore(path: &Path, previous: &Option<Vec<u8>>) -> io::Result<()> {
    match previous {
        Some(b) => write_atomic(path, b),
        None => match fs::remove_file(target(path)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        },
    }
}

/// Does an `If-Match` header value accept the version `sha256`? (`*`, or one of the listed
/// strong ETags; a weak ETag never matches.)
pub fn if_match_accepts(header: &str, sha256: &str) -> bool {
    header.split(',').map(str::trim).any(|tag| {
        tag == "*"
            || tag.strip_prefix('"').and_then(|t| t.strip_suffix('"')).is_some_and(|t| t.eq_ignore_ascii_case(sha256))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_keeps_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("rules.json");
        assert_eq!(read(&p).unwrap().bytes, None);
        write_atomic(&p, b"[1]").unwrap();
        write_atomic(&p, b"[2]").unwrap();
        let cur = read(&p).unwrap();
        assert_eq!(cur.bytes.as_deref(), Some(&b"[2]"[..]));
        assert_eq!(cur.sha256, sha256_hex(b"[2]"));
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        restore(&p, &Some(b"[1]".to_vec())).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"[1]");
        restore(&p, &None).unwrap();
        assert!(!p.exists());
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_stay_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.json");
        let link = dir.path().join("rules.json");
        fs::write(&real, b"[]").unwrap();
        std::os::unix::fs::symlink(&real, &link).unwrap();
        write_atomic(&link, b"[3]").unwrap();
        assert!(fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        assert_eq!(fs::read(&real).unwrap(), b"[3]");
    }

    #[test]
    fn if_match() {
        assert!(if_match_accepts("\"abc\"", "abc"));
        assert!(if_match_accepts("\"x\", \"abc\"", "abc"));
        assert!(if_match_accepts("*", "abc"));
        assert!(!if_match_accepts("W/\"abc\"", "abc"));
        assert!(!if_match_accepts("abc", "abc"));
        assert!(!if_match_accepts("\"abd\"", "abc"));
    }
}
