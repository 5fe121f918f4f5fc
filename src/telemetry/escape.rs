//! Field values of the text log format with control characters escaped, so
//! that a value (a JWT `sub`, a header) holding a newline cannot forge a
//! log line. The JSON format escapes by itself.

use std::fmt::{self, Write};

use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::Writer;

/// Formats fields as `message key=value ...`, like the default, with every
/// control character of a value escaped (`\n`, `\r`, `\t`, `\u{1b}`).
#[derive(Debug, Default, Clone, Copy)]
pub struct EscapedFields;

impl<'w> FormatFields<'w> for EscapedFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut visitor = Visitor {
            writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct Visitor<'w> {
    writer: Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl Visitor<'_> {
    /// Writes ` name=` (or nothing before the message), then the value.
    fn write(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        if self.result.is_err() {
            return;
        }
        self.result = (|| {
            if !self.first {
                self.writer.write_char(' ')?;
            }
            self.first = false;
            if field.name() != "message" {
                self.writer.write_str(field.name())?;
                self.writer.write_char('=')?;
            }
            value(&mut self.writer)
        })();
    }
}

impl Visit for Visitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.write(field, |w| write_escaped(w, value));
    }

    // Numbers and booleans hold no control character: written as they are,
    // without the text a `Debug` value goes through.
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.write(field, |w| write!(w, "{value}"));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.write(field, |w| write!(w, "{value}"));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.write(field, |w| write!(w, "{value:?}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.write(field, |w| write!(w, "{value}"));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.write(field, |w| write!(Escaping(w), "{value:?}"));
    }
}

/// A `fmt::Write` that escapes control characters on the way through.
struct Escaping<'a, W: Write>(&'a mut W);

impl<W: Write> Write for Escaping<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        write_escaped(self.0, s)
    }
}

/// Writes `s` with control characters escaped.
pub fn write_escaped(w: &mut impl Write, s: &str) -> fmt::Result {
    if !s.chars().any(char::is_control) {
        return w.write_str(s);
    }
    for c in s.chars() {
        match c {
            '\n' => w.write_str("\\n")?,
            '\r' => w.write_str("\\r")?,
            '\t' => w.write_str("\\t")?,
            c if c.is_control() => write!(w, "\\u{{{:x}}}", c as u32)?,
            c => w.write_char(c)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_are_escaped() {
        let mut out = String::new();
        write_escaped(&mut out, "a\nb\r\tc\u{1b}[31m\u{7f}\u{85}é").unwrap();
        assert_eq!(out, "a\\nb\\r\\tc\\u{1b}[31m\\u{7f}\\u{85}é");
        assert!(!out.chars().any(char::is_control));
    }

    #[test]
    fn fields_of_every_kind_are_written_as_the_default_format_writes_them() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let out = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .fmt_fields(EscapedFields)
            .with_ansi(false)
            .without_time()
            .with_writer(move || out.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(
                n = 3u64,
                i = -2i64,
                x = 1.0f64,
                y = 4.25f64,
                ok = true,
                d = ?"a\u{1b}b",
                s = "c\nd",
                "msg"
            );
        });
        let line = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert!(
            line.ends_with("msg n=3 i=-2 x=1.0 y=4.25 ok=true d=\"a\\u{1b}b\" s=c\\nd\n"),
            "{line:?}"
        );
    }
}
