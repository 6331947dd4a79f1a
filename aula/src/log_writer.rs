//! Log lines that a client cannot forge: control characters from requests and tokens (a
//! newline in an identity, an ESC in a path) are written escaped, so one event is one line.

use std::io::{self, Write};

/// Writes each formatted event to stderr with its control characters escaped (`\n` as `\\n`,
/// others as `\\x1b`), except the event's own final newline.
pub struct EscapedStderr;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for EscapedStderr {
    type Writer = EscapedWriter;
    fn make_writer(&'a self) -> EscapedWriter {
        EscapedWriter
    }
}

pub struct EscapedWriter;

impl Write for EscapedWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // tracing-subscriber's fmt layer hands over one whole event per write_all.
        let out = escape_event(buf);
        io::stderr().lock().write_all(&out)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

/// `buf` with every ASCII control byte but the trailing newline escaped; tabs stay.
pub fn escape_event(buf: &[u8]) -> Vec<u8> {
    let body = buf.strip_suffix(b"\n").unwrap_or(buf);
    let mut out = Vec::with_capacity(buf.len() + 8);
    for &b in body {
        match b {
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.push(b),
            0..=0x1f | 0x7f => out.extend_from_slice(format!("\\x{b:02x}").as_bytes()),
            _ => out.push(b),
        }
    }
    if body.len() < buf.len() {
        out.push(b'\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::escape_event;

    #[test]
    fn one_event_stays_one_line() {
        assert_eq!(
            escape_event(b"INFO refused name=\"a\nINFO forged\x1b[2J\"\n"),
            b"INFO refused name=\"a\\nINFO forged\\x1b[2J\"\n".to_vec()
        );
        assert_eq!(escape_event(b"plain\ttab"), b"plain\ttab".to_vec());
        assert_eq!(escape_event("día ✓\n".as_bytes()), "día ✓\n".as_bytes());
    }
}
