//! Turning keys and tensor names into file names that stay inside their
//! directory, whatever bytes they hold.

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

#[cfg(test)]
mod tests {
    use super::safe_file_name;

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
