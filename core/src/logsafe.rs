//! Values from outside (a caller's executable path, a token name, a claim) in
//! logs: every control character is escaped, so one event stays one line and a
//! value cannot forge another line or drive the reader's terminal.
//!
//! The CLI's log formatter passes every field through [`Escaped`]
//! (`cli/logging.rs`), so no log site has to remember it; use it directly where
//! such a value is printed another way (`eprintln!`, an error shown to a human).

use std::fmt;

/// Displays a string with control characters escaped: `\n`, `\r`, `\t` as
/// such, other C0/C1 controls (ESC, BEL, DEL, CSI U+009B) and the Unicode line
/// separators and bidirectional overrides as `\u{..}`. Backslashes stay as they
/// are: a literal `\n` in a value reads as two characters, never as a line break.
pub struct Escaped<'a>(pub &'a str);

/// Characters that change how a line reads without being visible: line and
/// paragraph separators, bidirectional embeddings, overrides and isolates.
fn invisible_layout(c: char) -> bool {
    matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}')
}

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(i) = rest.find(|c: char| c.is_control() || invisible_layout(c)) {
            f.write_str(&rest[..i])?;
            let c = rest[i..].chars().next().unwrap_or('\0');
            match c {
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                c => write!(f, "\\u{{{:x}}}", c as u32)?,
            }
            rest = &rest[i + c.len_utf8()..];
        }
        f.write_str(rest)
    }
}

impl fmt::Debug for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forged_log_line_stays_on_one_line() {
        let exe = "/tmp/x\n2026-01-01T00:00:00Z  INFO sigil: \x1b[32mbot identity installed\x1b[0m\r/evil";
        let s = Escaped(exe).to_string();
        assert!(!s.chars().any(|c| c.is_control()), "{s}");
        assert_eq!(s, "/tmp/x\\n2026-01-01T00:00:00Z  INFO sigil: \\u{1b}[32mbot identity installed\\u{1b}[0m\\r/evil");
    }

    #[test]
    fn c1_controls_and_bidi_overrides_are_escaped_and_plain_text_is_kept() {
        assert_eq!(Escaped("a\u{9b}b\u{202e}c\u{2028}d").to_string(), "a\\u{9b}b\\u{202e}c\\u{2028}d");
        assert_eq!(Escaped("/usr/bin/python3 é \\n").to_string(), "/usr/bin/python3 é \\n");
        assert_eq!(Escaped("").to_string(), "");
    }
}
