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
    fn write(&mut self, field: &Field, value: &str) {
        if self.result.is_err() {
            return;
        }
        self.result = (|| {
            if !self.first {
                self.writer.write_char(' ')?;
            }
            self.first = false;
            if field.name() != "message" {
                write!(self.writer, "{}=", field.name())?;
            }
            write_escaped(&mut self.writer, value)
        })();
    }
}

impl Visit for Visitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.write(field, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        self.write(field, &text);
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
}
