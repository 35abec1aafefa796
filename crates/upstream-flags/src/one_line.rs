//! Text logs with one line per event, whatever the event carries (issue 21 §5, log forging).
//!
//! A log line holds text that pods, requests and Kubernetes objects supply: a query parameter's
//! name, a header, an object's name. A field logged with `Display` (`%value`) is written as it
//! is, so a newline in it used to start a second line, which anyone reading the log (and
//! `kubectl pod-identity`, which parses NMI's lines) took for a line NMI wrote: a pod could forge
//! `nmi::audit: token issued pod="victim/x"`.
//!
//! The fix sits in the writer rather than in a custom `FormatFields`: `tracing_subscriber::fmt`
//! formats each event into one buffer and hands it to the writer in one `write_all`
//! (`fmt_layer.rs`, `on_event`, tracing-subscriber 0.3.23), so the writer sees whole lines and
//! can escape every control character but the line's final newline, in every field, message,
//! span and target alike, including those a future field formatter or a new call site adds.
//! A `FormatFields` would have to be right for every way a value can be recorded (`Display`,
//! `Debug`, errors and their sources, span fields) and would still miss the message's own text.
//! JSON logs need none of this: serde escapes every control character inside a string.
//!
//! Colours: on a terminal the formatter writes SGR sequences (`ESC [ digits ; ... m`) around
//! levels and field names. Those are kept, and so is an SGR sequence a pod wrote (it can only
//! recolour text, not move the cursor or erase, so it cannot fake a line's start); every other
//! ESC is escaped. Without colours (a container's log, a file) every ESC is escaped, since none
//! is the formatter's. tracing-subscriber already escapes ESC in messages; this covers every
//! other field too.

use std::{
    borrow::Cow,
    io::{self, Write},
};

use tracing_subscriber::fmt::MakeWriter;

/// A [`MakeWriter`] whose writers escape control characters, so every event is one line.
#[derive(Clone, Debug)]
pub struct OneLine<M> {
    inner: M,
    colours: bool,
}

impl<M> OneLine<M> {
    /// `colours`: whether the formatter writes ANSI colours (then SGR sequences are kept).
    pub fn new(inner: M, colours: bool) -> Self {
        Self { inner, colours }
    }
}

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for OneLine<M> {
    type Writer = OneLineWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        OneLineWriter {
            inner: self.inner.make_writer(),
            colours: self.colours,
        }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        OneLineWriter {
            inner: self.inner.make_writer_for(meta),
            colours: self.colours,
        }
    }
}

/// Writes each buffer it is given as one line: see [`escape`].
pub struct OneLineWriter<W> {
    inner: W,
    colours: bool,
}

impl<W: Write> Write for OneLineWriter<W> {
    /// Always takes the whole buffer, so that `write_all` calls this once per event and the
    /// buffer's last byte is the event's own newline.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write_all(&escape(buf, self.colours))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// `line` with every control character escaped except a final `\n`: C0 and DEL, C1 (U+0080 to
/// U+009F, of which NEL breaks lines in some viewers) and the Unicode line and paragraph
/// separators. `\n`, `\r` and `\t` become those two characters, the others `\u{..}` as Rust
/// writes them. ESC is kept where it starts an SGR sequence when `colours` is on. Bytes that are
/// not UTF-8 become `\x..`. A line with nothing to escape is returned as it is.
pub fn escape(line: &[u8], colours: bool) -> Cow<'_, [u8]> {
    let (body, end): (&[u8], &[u8]) = match line.strip_suffix(b"\n") {
        Some(body) => (body, b"\n"),
        None => (line, b""),
    };
    // Plain ASCII, what nearly every line is, needs no look at characters; anything else (C1,
    // the separators, bytes that are not UTF-8) is checked character by character.
    if body.iter().all(|b| (0x20..0x7f).contains(b)) {
        return Cow::Borrowed(line);
    }
    let mut out = Vec::with_capacity(line.len() + 32);
    for chunk in body.utf8_chunks() {
        escape_str(chunk.valid(), colours, &mut out);
        for b in chunk.invalid() {
            out.extend_from_slice(format!("\\x{b:02x}").as_bytes());
        }
    }
    out.extend_from_slice(end);
    Cow::Owned(out)
}

fn escape_str(s: &str, colours: bool, out: &mut Vec<u8>) {
    let mut rest = s;
    while let Some((at, c)) = rest.char_indices().find(|&(_, c)| needs_escape(c)) {
        out.extend_from_slice(&rest.as_bytes()[..at]);
        let tail = &rest[at..];
        if colours && let Some(len) = sgr_len(tail) {
            out.extend_from_slice(&tail.as_bytes()[..len]);
            rest = &tail[len..];
            continue;
        }
        match c {
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            c => out.extend_from_slice(format!("\\u{{{:x}}}", c as u32).as_bytes()),
        }
        rest = &tail[c.len_utf8()..];
    }
    out.extend_from_slice(rest.as_bytes());
}

fn needs_escape(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')
}

/// The length of the SGR sequence `s` starts with (`ESC [`, digits and `;`, `m`), if it does.
fn sgr_len(s: &str) -> Option<usize> {
    let params = s.strip_prefix("\u{1b}[")?;
    let n = params
        .bytes()
        .take_while(|b| b.is_ascii_digit() || *b == b';')
        .count();
    (params.as_bytes().get(n) == Some(&b'm')).then_some(2 + n + 1)
}

#[cfg(test)]
mod tests;
