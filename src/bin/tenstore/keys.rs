//! Keys as the command line shows and takes them.
//!
//! Keys are bytes. The CLI prints them, and reads them from its arguments,
//! in one escaped form: text stays as it is, except that a backslash is
//! written `\\`, and every byte that is not valid UTF-8 or belongs to a
//! control character (U+0000-U+001F, U+007F-U+009F) or a line or paragraph
//! separator (U+2028, U+2029) is written `\xHH` (two hex digits). So a
//! listing holds one key per line, and every line reads back as the key it
//! shows.

use std::fmt::Write;

/// The escaped form of `key`.
pub fn escape(key: &[u8]) -> String {
    let mut out = String::with_capacity(key.len());
    for chunk in key.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '\\' {
                out.push_str("\\\\");
            } else if c.is_control() || c == '\u{2028}' || c == '\u{2029}' {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    let _ = write!(out, "\\x{b:02x}");
                }
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

/// The key bytes an escaped argument names (see [`escape`]).
pub fn parse(arg: &str) -> Result<Vec<u8>, String> {
    let bytes = arg.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        let hex = |b: Option<&u8>| b.and_then(|&b| (b as char).to_digit(16));
        match bytes.get(i + 1) {
            Some(b'\\') => {
                out.push(b'\\');
                i += 2;
            }
            Some(b'x') => match (hex(bytes.get(i + 2)), hex(bytes.get(i + 3))) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 4;
                }
                _ => return Err(bad_escape(arg)),
            },
            _ => return Err(bad_escape(arg)),
        }
    }
    Ok(out)
}

fn bad_escape(arg: &str) -> String {
    format!("key {arg:?}: a backslash starts an escape, \\\\ for a backslash or \\xHH for a byte")
}

/// The bytes of `key` as lowercase hex.
pub fn hex(key: &[u8]) -> String {
    let mut out = String::with_capacity(key.len() * 2);
    for b in key {
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{escape, hex, parse};

    #[test]
    fn text_keys_print_as_they_are() {
        for key in ["sample-001", "é/ü", "with space", "a%2Fb", "日本"] {
            assert_eq!(escape(key.as_bytes()), key);
            assert_eq!(parse(key).unwrap(), key.as_bytes());
        }
    }

    #[test]
    fn other_bytes_are_escaped_and_read_back() {
        for (key, shown) in [
            (&b"\xff"[..], "\\xff"),
            (b"\xfe", "\\xfe"),
            (b"a\nb", "a\\x0ab"),
            (b"a\\b", "a\\\\b"),
            (b"\\x41", "\\\\x41"),
            (b"\x00\x7f", "\\x00\\x7f"),
            ("\u{85}\u{2028}".as_bytes(), "\\xc2\\x85\\xe2\\x80\\xa8"),
            (b"\xc3", "\\xc3"),
        ] {
            assert_eq!(escape(key), shown);
            assert_eq!(parse(shown).unwrap(), key);
            assert!(!escape(key).contains('\n'));
        }
        assert_eq!(parse("\\xFF").unwrap(), b"\xff");
    }

    #[test]
    fn every_byte_string_round_trips() {
        let mut keys: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b, b'k', b]).collect();
        keys.push((0..=255u8).collect());
        for key in keys {
            assert_eq!(parse(&escape(&key)).unwrap(), key);
        }
    }

    #[test]
    fn broken_escapes_are_refused() {
        for arg in ["a\\", "a\\n", "\\x", "\\x4", "\\xg0", "C:\\data"] {
            assert!(parse(arg).is_err(), "{arg}");
        }
    }

    #[test]
    fn hex_is_lowercase_pairs() {
        assert_eq!(hex(b"\x00\xffA"), "00ff41");
    }
}
