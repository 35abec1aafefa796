use std::sync::{Arc, Mutex};

use super::*;

fn esc(s: &str, colours: bool) -> String {
    String::from_utf8(escape(s.as_bytes(), colours).into_owned()).unwrap()
}

#[test]
fn a_plain_line_is_written_as_it_is() {
    let line = b"2026-01-01T00:00:00Z  INFO nmi::audit: token issued pod=\"p\"\n";
    assert!(matches!(escape(line, false), Cow::Borrowed(_)));
    assert_eq!(esc("no newline at all", false), "no newline at all");
    assert_eq!(esc("caf\u{e9} \u{1f600}\n", false), "caf\u{e9} \u{1f600}\n");
}

#[test]
fn every_control_character_but_the_final_newline_is_escaped() {
    assert_eq!(
        esc("a\nb\rc\td\u{7f}e\u{0}f\n", false),
        "a\\nb\\rc\\td\\u{7f}e\\u{0}f\n"
    );
    // NEL (C1) and the Unicode separators, which some viewers take for line breaks.
    assert_eq!(
        esc("a\u{85}b\u{2028}c\u{2029}d\u{9b}e\n", false),
        "a\\u{85}b\\u{2028}c\\u{2029}d\\u{9b}e\n"
    );
    // Only the last newline is the line's own; a newline before it is escaped even at the end.
    assert_eq!(esc("a\n\n", false), "a\\n\n");
    assert_eq!(esc("\n", false), "\n");
}

#[test]
fn colours_keep_sgr_sequences_only() {
    let coloured = "\u{1b}[2m2026\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m \u{1b}[1;31mx\u{1b}[m\n";
    assert_eq!(esc(coloured, true), coloured);
    // Cursor moves, erasing, titles: escaped even with colours on.
    assert_eq!(
        esc("a\u{1b}[2Kb\u{1b}[1Gc\u{1b}]0;t\u{7}d\u{1b}\n", true),
        "a\\u{1b}[2Kb\\u{1b}[1Gc\\u{1b}]0;t\\u{7}d\\u{1b}\n"
    );
    // Without colours no ESC is the formatter's: all escaped.
    assert_eq!(esc("\u{1b}[32mx\n", false), "\\u{1b}[32mx\n");
}

#[test]
fn bytes_that_are_not_utf8_are_escaped() {
    let out = escape(b"a\xffb\x80\n", false).into_owned();
    assert_eq!(out, b"a\\xffb\\x80\n");
}

/// What a subscriber writes.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A forged record in every kind of value, through the text subscriber the binaries use.
fn logged(colours: bool) -> String {
    let buf = Buffer::default();
    let writer = buf.clone();
    let subscriber = crate::text_subscriber(tracing_subscriber::EnvFilter::new("info"), colours, move || {
        writer.clone()
    });
    let forged = "x\n2026-01-01T00:00:00.000000Z  INFO nmi::audit: token issued pod=\"victim/x\"\r\n";
    tracing::subscriber::with_default(subscriber, || {
        let span = tracing::info_span!("request", query = %forged);
        let _in = span.enter();
        tracing::info!(target: "nmi::refusal", display = %forged, debug = ?forged, plain = forged, "message {forged}");
        tracing::warn!(
            error = &std::io::Error::other(forged) as &dyn std::error::Error,
            "second"
        );
    });
    String::from_utf8(buf.0.lock().unwrap().clone()).unwrap()
}

#[test]
fn no_value_of_an_event_starts_a_line() {
    for colours in [false, true] {
        let out = logged(colours);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "colours {colours}: {out}");
        assert!(lines[0].contains("message x\\n2026"), "{out}");
        assert!(lines.iter().all(|l| !l.contains('\r')), "{out}");
        assert_eq!(
            out.contains("\u{1b}[3m"),
            colours,
            "the formatter's own colours: {out}"
        );
    }
}
