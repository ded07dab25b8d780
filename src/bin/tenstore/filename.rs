//! Turning keys and tensor names into file names that stay inside their
//! directory, whatever bytes they hold, and writing those files without
//! following or truncating anything already there.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use sha2::{Digest, Sha256};

/// Escaped names longer than this are shortened by [`key_file_name`].
const SHORTEN_OVER: usize = 200;

/// A single path component for `stem` plus `suffix`: bytes other than
/// ASCII letters, digits, `-`, `_` and `.` are written `%XX`, and so is a
/// leading `.` (no hidden files, no `.` or `..`). Refused when the result
/// would exceed 255 bytes.
pub fn safe_file_name(stem: &[u8], suffix: &str) -> Result<String, String> {
    let mut out = String::with_capacity(stem.len() + suffix.len());
    for (i, &b) in stem.iter().enumerate() {
        let plain = b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || (b == b'.' && i > 0);
        if plain {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.is_empty() {
        out.push('%');
    }
    out.push_str(suffix);
    if out.len() > 255 {
        return Err(format!(
            "key {:?} is too long for a file name ({} bytes escaped; at most 255)",
            String::from_utf8_lossy(stem),
            out.len()
        ));
    }
    Ok(out)
}

/// The file name of a key in an export: [`safe_file_name`] when that fits
/// in [`SHORTEN_OVER`] bytes, else the first part of it, `~` and 32 hex
/// digits of the key's SHA-256 (`~` is escaped in every unshortened name,
/// so the two kinds never meet). The flag says whether it was shortened.
pub fn key_file_name(key: &[u8], suffix: &str) -> (String, bool) {
    let mut name = match safe_file_name(key, "") {
        Ok(n) => n,
        // Only too long fails; such names are shortened below.
        Err(_) => escape_all(key),
    };
    if name.len() + suffix.len() <= SHORTEN_OVER {
        name.push_str(suffix);
        return (name, false);
    }
    // Cut at most 160 bytes, never inside a %XX escape.
    let mut cut = 160;
    while name.as_bytes()[cut - 1] == b'%' || name.as_bytes()[cut - 2] == b'%' {
        cut -= 1;
    }
    name.truncate(cut);
    let digest = Sha256::digest(key);
    name.push('~');
    for b in &digest[..16] {
        name.push_str(&format!("{b:02x}"));
    }
    name.push_str(suffix);
    (name, true)
}

/// [`safe_file_name`]'s escaping with no length limit.
fn escape_all(stem: &[u8]) -> String {
    let mut out = String::new();
    for (i, &b) in stem.iter().enumerate() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || (b == b'.' && i > 0) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Makes `dir` (and its parents) if missing; an existing `dir` must be a
/// directory, and empty unless `force`.
pub fn prepare_dir(dir: &Path, force: bool) -> Result<(), String> {
    let shown = dir.display();
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if !force && entries.next().is_some() {
                return Err(format!(
                    "{shown} is not empty: give a new or empty directory, or --force to write into it (files of the same names are replaced)"
                ));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(|e| format!("{shown}: {e}"))
        }
        Err(e) => Err(format!("{shown}: {e}")),
    }
}

/// Opens `path` for writing only if nothing is there: no symlink is
/// followed and no existing file truncated.
fn create_new(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o644)
        .open(path)
}

/// Writes `bytes` as the file `name` in `dir`. Without `force` the name
/// must be free; with `force` the bytes go to a new temporary file in
/// `dir` that is then renamed over `name` (which replaces a symlink there,
/// never its target). A failed write leaves no partial file.
pub fn write_file(dir: &Path, name: &str, bytes: &[u8], force: bool) -> Result<(), String> {
    let path = dir.join(name);
    let shown = path.display();
    let write = |target: &Path| -> std::io::Result<()> {
        let mut file = create_new(target)?;
        let result = file.write_all(bytes).and_then(|()| file.flush());
        if result.is_err() {
            let _ = std::fs::remove_file(target);
        }
        result
    };
    if !force {
        return write(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => {
                format!("{shown} already exists (--force replaces it)")
            }
            _ => format!("{shown}: {e}"),
        });
    }
    let mut n = 0u32;
    let temp = loop {
        let temp = dir.join(format!(".tenstore-{}-{n}.tmp", std::process::id()));
        match write(&temp) {
            Ok(()) => break temp,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 100 => n += 1,
            Err(e) => return Err(format!("{}: {e}", temp.display())),
        }
    };
    std::fs::rename(&temp, &path).map_err(|e| {
        let _ = std::fs::remove_file(&temp);
        format!("{shown}: {e}")
    })
}

#[cfg(test)]
mod tests {
    use super::{key_file_name, safe_file_name};

    #[test]
    fn long_keys_get_short_distinct_names() {
        let (name, short) = key_file_name(b"plain", ".ten");
        assert_eq!((name.as_str(), short), ("plain.ten", false));
        let mut names = std::collections::HashSet::new();
        for key in [vec![b'k'; 511], vec![b'/'; 511], {
            let mut k = vec![b'k'; 510];
            k.push(b'x');
            k
        }] {
            let (name, short) = key_file_name(&key, ".ten");
            assert!(short && name.len() <= 200, "{name}");
            assert!(name.ends_with(".ten") && name.contains('~'), "{name}");
            assert!(!name.contains('/') && !name.starts_with('.'), "{name}");
            assert!(names.insert(name));
        }
    }

    #[test]
    fn plain_keys_stay_readable() {
        assert_eq!(
            safe_file_name(b"sample-001_a.b", ".ten").unwrap(),
            "sample-001_a.b.ten"
        );
    }

    #[test]
    fn nothing_escapes_the_directory() {
        for (key, expected) in [
            (&b".."[..], "%2E..ten"),
            (b".", "%2E.ten"),
            (b"../../etc/passwd", "%2E.%2F..%2Fetc%2Fpasswd.ten"),
            (b"/abs", "%2Fabs.ten"),
            (b"a\0b", "a%00b.ten"),
            (b"a%2Fb", "a%252Fb.ten"),
            (b"", "%.ten"),
            ("é".as_bytes(), "%C3%A9.ten"),
        ] {
            let name = safe_file_name(key, ".ten").unwrap();
            assert_eq!(name, expected);
            assert!(
                !name.contains('/')
                    && !name.contains('\0')
                    && name != ".."
                    && !name.starts_with('.')
            );
        }
    }

    #[test]
    fn distinct_keys_get_distinct_names() {
        let keys: [&[u8]; 4] = [b"a/b", b"a%2Fb", b"a_b", b"a.b"];
        let names: std::collections::HashSet<String> = keys
            .iter()
            .map(|k| safe_file_name(k, "").unwrap())
            .collect();
        assert_eq!(names.len(), keys.len());
    }

    #[test]
    fn overlong_names_are_refused() {
        assert!(safe_file_name(&[b'k'; 251], ".ten").is_ok());
        assert!(safe_file_name(&[b'k'; 252], ".ten").is_err());
        assert!(safe_file_name(&[b'/'; 100], ".ten").is_err());
    }
}
