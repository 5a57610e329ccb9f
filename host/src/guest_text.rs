//! Guest-provided text (stdout and stderr lines, `wasi:logging` messages,
//! `Err` reasons, health reasons, trap messages) is data: this module owns
//! the two rules every place that shows or keeps such text follows.
//!
//! - [`escape`]: control characters and line breaks become visible escapes,
//!   so no guest can forge a host log line or steer a terminal. The host's
//!   text log format runs every field of every event through it (`main.rs`),
//!   which also covers guest text quoted inside a host message; the JSON
//!   format escapes them by itself.
//! - [`cap`]: a size bound, cut on a char boundary, the cut marked.
//!   [`MAX_KEPT_BYTES`] bounds what is kept in status and crash reports.

use std::borrow::Cow;
use std::fmt::Write;

/// Bytes of guest text kept in a plugin's status (health reasons) and in
/// crash reports (trap and `Err` messages, backtrace frames); longer text is
/// cut there and the cut marked (see [`cap`]).
pub const MAX_KEPT_BYTES: usize = 1024;

/// `text` with control characters and line breaks escaped: `\n`, `\r` and
/// `\t` as those two characters, any other (C0, DEL, C1, the Unicode line
/// and paragraph separators, bidirectional overrides) as `\u{..}`. All other
/// text, non-ASCII included, is kept as is. Escaping twice changes nothing.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` cut to at most `max` bytes, on a char boundary, followed by
/// `… [cut: N bytes in all]` when it was longer.
pub fn cap(text: &str, max: usize) -> Cow<'_, str> {
    if text.len() <= max {
        return Cow::Borrowed(text);
    }
    let kept = &text[..text.floor_char_boundary(max)];
    Cow::Owned(format!("{kept}… [cut: {} bytes in all]", text.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_makes_line_breaks_and_control_characters_visible() {
        assert_eq!(
            escape("a\nb\r\tc\u{1b}[31m\u{7f}\u{85}\u{2028}\u{202e}"),
            "a\\nb\\r\\tc\\u{1b}[31m\\u{7f}\\u{85}\\u{2028}\\u{202e}"
        );
        assert!(matches!(escape("plain, ünïcödé ✓"), Cow::Borrowed(_)));
        let once = escape("x\ny\u{0}");
        assert_eq!(escape(&once), once, "escaping twice changes nothing");
    }

    #[test]
    fn cap_cuts_on_a_char_boundary_and_marks_the_cut() {
        assert!(matches!(cap("short", 5), Cow::Borrowed("short")));
        assert_eq!(cap("abcdef", 4), "abcd… [cut: 6 bytes in all]");
        // 'é' is two bytes: a cut inside it keeps the char boundary before it.
        assert_eq!(cap("aé", 2), "a… [cut: 3 bytes in all]");
        let long = "x".repeat(8 << 20);
        let kept = cap(&long, MAX_KEPT_BYTES);
        assert!(kept.len() < MAX_KEPT_BYTES + 40, "{}", kept.len());
        assert!(kept.ends_with("[cut: 8388608 bytes in all]"), "{kept}");
    }
}
