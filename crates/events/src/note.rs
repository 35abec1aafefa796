//! Notes fit to show: the API takes at most 1 KB, and a note quotes text others wrote (a pod's
//! labels, a parameter name it sent, an error from ARM), which must not start a new line in
//! `kubectl describe` or carry terminal escapes.

/// The longest note the API accepts.
pub const MAX_NOTE: usize = 1024;

/// `text` on one line, control characters escaped (`\n`, `\u{1b}`), cut to [`MAX_NOTE`] bytes.
pub fn one_line(text: &str) -> String {
    truncate(&escape(text), MAX_NOTE)
}

/// Control characters (including newlines and ESC) written as Rust escapes; the rest as is.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// At most `max` bytes, cut at a character boundary.
pub fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_stay_on_one_line() {
        let n = one_line("pod a/b\nINFO forged line\r\x1b[31mred\u{85}");
        assert!(!n.chars().any(char::is_control), "{n:?}");
        assert_eq!(n, "pod a/b\\nINFO forged line\\r\\u{1b}[31mred\\u{85}");
    }

    #[test]
    fn notes_fit_the_api() {
        assert!(one_line(&"é".repeat(800)).len() <= MAX_NOTE);
        assert_eq!(truncate("éa", 1), "");
    }
}
