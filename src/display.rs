//! Names and messages shown to people: control characters escaped.
//!
//! File names come from backed-up trees and repositories, which a local user (or whoever wrote
//! the repository) controls. Printed raw, a newline in a name forges log lines and an escape
//! sequence reaches the administrator's terminal. Everything meant for people (stderr, stdout
//! other than JSON, logs, notification texts) goes through this module. One scheme throughout:
//!
//! - `\` is shown as `\\` by [`escape`] and [`path`] (names), so the mapping is unambiguous;
//! - `\n`, `\r`, `\t` as themselves, the other C0 controls and DEL as `\xHH` (`\x1b` for ESC);
//! - C1 controls (U+0080-U+009F), the line and paragraph separators (U+2028, U+2029) and the
//!   bidirectional formatting characters (U+200E, U+200F, U+202A-U+202E, U+2066-U+2069) as
//!   `\uHHHH` (`\u009b`);
//! - bytes that are not UTF-8 (names only) as `\xHH` with HH from 80 to ff: `\x` below 80 is a
//!   control character, from 80 up a raw byte, so nothing is lost.
//!
//! [`scrub`] is the net at the print edge (the error printer, warnings, the log formatter):
//! it escapes the characters above but leaves backslashes alone, so text already escaped
//! passes unchanged, and so does JSON (it never holds raw C0 controls, and `\uHHHH` is a JSON
//! escape of the same character).

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Whether `c` is escaped for people (see the module documentation).
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
        )
}

fn write_escaped_char(out: &mut impl fmt::Write, c: char) -> fmt::Result {
    match c {
        '\n' => out.write_str("\\n"),
        '\r' => out.write_str("\\r"),
        '\t' => out.write_str("\\t"),
        c if (c as u32) < 0x80 => write!(out, "\\x{:02x}", c as u32),
        c => write!(out, "\\u{:04x}", c as u32),
    }
}

fn write_str_escaped(out: &mut impl fmt::Write, s: &str, backslash: bool) -> fmt::Result {
    let mut start = 0;
    for (i, c) in s.char_indices() {
        let escape_it = needs_escape(c) || (backslash && c == '\\');
        if escape_it {
            out.write_str(&s[start..i])?;
            if c == '\\' {
                out.write_str("\\\\")?;
            } else {
                write_escaped_char(out, c)?;
            }
            start = i + c.len_utf8();
        }
    }
    out.write_str(&s[start..])
}

/// A name (bytes, as the file system gives them) shown escaped; see the module documentation.
#[derive(Clone, Copy)]
pub struct Escaped<'a>(pub &'a [u8]);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.utf8_chunks() {
            write_str_escaped(f, chunk.valid(), true)?;
            for b in chunk.invalid() {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// A path shown escaped (`format!("{}", display::path(p))` instead of `p.display()`).
pub fn path(p: &Path) -> Escaped<'_> {
    Escaped(p.as_os_str().as_bytes())
}

/// A name held as bytes, escaped.
pub fn bytes(b: &[u8]) -> Escaped<'_> {
    Escaped(b)
}

/// A name held as text (already converted from bytes), escaped, backslashes included.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    // Writing to a String cannot fail.
    let _ = write_str_escaped(&mut out, s, true);
    out
}

/// A whole message at the print edge: control characters escaped, backslashes left alone (see
/// the module documentation). Borrowed when there is nothing to escape.
pub fn scrub(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    // Writing to a String cannot fail.
    let _ = write_str_escaped(&mut out, s, false);
    Cow::Owned(out)
}

/// [`scrub`] of a message that holds several lines on purpose (a list of config errors): each
/// line scrubbed, the line breaks kept.
pub fn scrub_lines(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for (i, line) in s.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&scrub(line));
    }
    out
}

/// Appends `s` scrubbed to `out` (for formatters that build a line).
pub fn push_scrubbed(out: &mut String, s: &str) {
    let _ = out.write_str(&scrub(s));
}

/// `arg` as a POSIX shell reads it back: unchanged when it holds only safe characters, else in
/// single quotes (a command printed for an operator to paste: the ambiguous-`latest` message,
/// the recovery kit).
pub fn shell_quote(arg: &str) -> String {
    let safe = !arg.is_empty()
        && arg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+=:,@%".contains(&b));
    if safe {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_escaped_unambiguously() {
        assert_eq!(
            bytes(b"evil\n[lifeboat] forged").to_string(),
            "evil\\n[lifeboat] forged"
        );
        assert_eq!(bytes(b"\x1b]0;pwned\x07").to_string(), "\\x1b]0;pwned\\x07");
        assert_eq!(bytes(b"bad\xff\xfe.txt").to_string(), "bad\\xff\\xfe.txt");
        assert_eq!(bytes(b"a\\nb").to_string(), "a\\\\nb");
        assert_eq!(
            bytes("c1\u{9b}x\u{7f}".as_bytes()).to_string(),
            "c1\\u009bx\\x7f"
        );
        assert_eq!(
            bytes("rtl\u{202e}txt".as_bytes()).to_string(),
            "rtl\\u202etxt"
        );
        assert_eq!(bytes("ünïcödé ok".as_bytes()).to_string(), "ünïcödé ok");
        assert_eq!(escape("tab\there\\"), "tab\\there\\\\");
    }

    #[test]
    fn scrub_leaves_clean_text_escaped_text_and_json_alone() {
        assert!(matches!(scrub("plain: a\\b"), Cow::Borrowed(_)));
        let escaped = bytes(b"x\n\x1b\xff").to_string();
        assert_eq!(scrub(&escaped), escaped);
        assert_eq!(scrub("a\nb\x1b[2J"), "a\\nb\\x1b[2J");
        let json = serde_json::json!({"path": "a\u{9b}b\nc"}).to_string();
        let scrubbed = scrub(&json);
        assert!(!scrubbed.contains('\u{9b}'), "{scrubbed}");
        let back: serde_json::Value = serde_json::from_str(&scrubbed).expect("still JSON");
        assert_eq!(back["path"], "a\u{9b}b\nc");
        assert_eq!(scrub_lines("one\ntwo\x07"), "one\ntwo\\x07");
    }
}
