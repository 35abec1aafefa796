//! One line of NMI's text log, read strictly (issue 21 §5, log forging).
//!
//! NMI writes `<timestamp> <LEVEL> <target>: <message> <key>=<value> ...`
//! (`upstream_flags::text_subscriber`), one line per event: its writer escapes every newline a
//! value holds. Text a pod supplies can still sit inside a line (a query parameter's name in a
//! refusal's `detail`), so a record is only what the line's own start says it is: the timestamp
//! and level first, then the target and message, then fields read one after another, each
//! value either Debug-quoted (`"…"`, escapes undone) or a bare word. Text that merely looks like
//! a record somewhere inside a line, an escaped `\n` followed by a forged line included, is a
//! value, never a second record; a line whose fields do not read cleanly is no record at all.

/// A line's parts before its fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line<'a> {
    pub time: &'a str,
    pub level: &'a str,
    pub target: &'a str,
    /// The message and the fields after it, as written.
    pub rest: &'a str,
}

/// A field's key and its value, unescaped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub key: String,
    pub value: String,
}

const LEVELS: [&str; 5] = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"];

/// The parts of a line (without colour codes) that starts as NMI's formatter starts every line.
pub fn line(s: &str) -> Option<Line<'_>> {
    let (time, after) = s.split_once(' ')?;
    if !is_timestamp(time) {
        return None;
    }
    // The level is right-aligned in five columns: `  INFO`, ` WARN`, `ERROR`.
    let after = after.trim_start_matches(' ');
    let (level, after) = after.split_once(' ')?;
    if !LEVELS.contains(&level) {
        return None;
    }
    let (target, rest) = after.split_once(": ")?;
    let plain_target = !target.is_empty()
        && target
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':');
    plain_target.then_some(Line {
        time,
        level,
        target,
        rest,
    })
}

/// `2026-01-01T00:00:01.123456Z`: RFC 3339 in UTC, as tracing-subscriber writes it.
fn is_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 20
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[10] == b'T'
        && b.last() == Some(&b'Z')
        && b.iter()
            .all(|c| c.is_ascii_digit() || matches!(c, b'-' | b':' | b'T' | b'.' | b'Z'))
}

/// The fields after `message` in a line's `rest`: `None` unless `rest` is `message` followed by
/// nothing or by a space and well-formed fields, no key twice.
pub fn fields_after(rest: &str, message: &str) -> Option<Vec<Field>> {
    let after = rest.strip_prefix(message)?;
    if after.is_empty() {
        return Some(Vec::new());
    }
    let mut s = after.strip_prefix(' ')?;
    let mut fields: Vec<Field> = Vec::new();
    loop {
        let (key, value) = s.split_once('=')?;
        let plain_key = !key.is_empty()
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.');
        if !plain_key || fields.iter().any(|f| f.key == key) {
            return None;
        }
        let (value, next) = match value.strip_prefix('"') {
            Some(quoted) => unquote(quoted)?,
            // A bare word runs to the next space, which stays to separate the next field.
            None => {
                let end = value.find(' ').unwrap_or(value.len());
                (value[..end].to_owned(), &value[end..])
            }
        };
        fields.push(Field {
            key: key.to_owned(),
            value,
        });
        if next.is_empty() {
            return Some(fields);
        }
        s = next.strip_prefix(' ')?;
    }
}

/// A Debug-quoted string's value (after its opening quote), and the text after its closing
/// quote; `None` when it is not closed or has an escape Debug never writes.
fn unquote(s: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((at, c)) = chars.next() {
        match c {
            '"' => return Some((out, &s[at + 1..])),
            '\\' => out.push(match chars.next()?.1 {
                'n' => '\n',
                'r' => '\r',
                't' => '\t',
                '0' => '\0',
                c @ ('\\' | '"' | '\'') => c,
                'u' => {
                    let rest = &s[at + 2..];
                    let hex = rest.strip_prefix('{')?.split_once('}')?.0;
                    let c = char::from_u32(u32::from_str_radix(hex, 16).ok()?)?;
                    for _ in 0..hex.len() + 2 {
                        chars.next();
                    }
                    c
                }
                _ => return None,
            }),
            c => out.push(c),
        }
    }
    None
}

/// Without terminal colour codes (`ESC [ ... m`), which NMI's text log carries on a terminal.
pub fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
