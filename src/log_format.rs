//! The layout of log lines, with a fast path for the access line.
//!
//! tracing-subscriber's formatters write every field through `Debug` and paint every part with
//! an (empty) ANSI style; for the access line, written once per request, that was about a sixth
//! of the gateway's instructions per request (callgrind, benches/load profile: 82.2k -> 74.1k). [`LineFormat`]
//! writes the access line itself, in exactly the layout of tracing-subscriber's `Full` text or
//! `Json` format, and hands every other event (rare: start-up, warnings, debug output) to
//! those formatters unchanged. Colours on a terminal also go through them.

use std::fmt::{self, Write};
use std::time::Duration;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields, Writer};
use tracing_subscriber::registry::LookupSpan;

/// The target of the one line per request (see `gateway/mod.rs`), as a literal for `concat!`.
macro_rules! access_target {
    () => {
        "kbgate::access"
    };
}

/// The target of the one line per request (see `gateway/mod.rs`).
pub(crate) const ACCESS_TARGET: &str = access_target!();

/// Text or JSON lines; see the module documentation.
pub struct LineFormat {
    json: bool,
    text_format: format::Format<format::Full>,
    json_format: format::Format<format::Json>,
}

impl LineFormat {
    pub fn text() -> LineFormat {
        LineFormat::new(false)
    }

    pub fn json() -> LineFormat {
        LineFormat::new(true)
    }

    fn new(json: bool) -> LineFormat {
        LineFormat {
            json,
            text_format: format::Format::default(),
            json_format: format::Format::default().json(),
        }
    }
}

impl<S, N> FormatEvent<S, N> for LineFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let fast = event.metadata().target() == ACCESS_TARGET
            && !writer.has_ansi_escapes()
            && ctx.event_scope().is_none();
        match (fast, self.json) {
            (false, false) => self.text_format.format_event(ctx, writer, event),
            (false, true) => self.json_format.format_event(ctx, writer, event),
            (true, json) => {
                write_access_line(&mut writer, json, *event.metadata().level(), |fields| {
                    event.record(fields)
                })
            }
        }
    }
}

/// One access line, `fields` written between its head (timestamp, level, target) and its end,
/// in the layout of tracing-subscriber's `Full` text or `Json` format. The fast path above and
/// the access log's own route past tracing (`log_direct`) both write it here.
pub(crate) fn write_access_line<W: Write>(
    writer: &mut W,
    json: bool,
    level: Level,
    fields: impl FnOnce(&mut Fields<'_, W>),
) -> fmt::Result {
    if json {
        writer.write_str("{\"timestamp\":\"")?;
    }
    write_timestamp(writer)?;
    write_level(writer, json, level)?;
    let mut visitor = Fields {
        writer: &mut *writer,
        json,
        first: true,
        result: Ok(()),
    };
    fields(&mut visitor);
    visitor.result?;
    match json {
        false => writer.write_char('\n'),
        true => writer.write_str(concat!("},\"target\":\"", access_target!(), "\"}\n")),
    }
}

/// What follows the timestamp up to the fields. Text: a space, the level right-aligned in five
/// columns (as `{:>5}` pads it) and the target; JSON: the level. A constant in each arm, copied
/// inline (put together from parts, it took five calls to `memcpy`).
fn write_level<W: Write>(writer: &mut W, json: bool, level: Level) -> fmt::Result {
    macro_rules! arms {
        ($($level:ident $padded:literal),*) => {
            match (json, level) {
                $(
                    (false, Level::$level) => {
                        writer.write_str(concat!($padded, " ", access_target!(), ": "))
                    }
                    (true, Level::$level) => writer.write_str(concat!(
                        "\",\"level\":\"",
                        stringify!($level),
                        "\",\"fields\":{"
                    )),
                )*
            }
        };
    }
    arms!(TRACE " TRACE", DEBUG " DEBUG", INFO "  INFO", WARN "  WARN", ERROR " ERROR")
}

/// RFC 3339 in UTC with microseconds, as tracing-subscriber's default timer writes it. The
/// date and time of day are formatted once per second per thread; only the microseconds are
/// written for each line.
fn write_timestamp<W: Write>(writer: &mut W) -> fmt::Result {
    thread_local! {
        /// The whole second last formatted, and its text up to the seconds' dot.
        static SECOND: std::cell::RefCell<(u64, String)> = const {
            std::cell::RefCell::new((u64::MAX, String::new()))
        };
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    SECOND.with_borrow_mut(|(second, text)| {
        if *second != now.as_secs() {
            let whole = std::time::UNIX_EPOCH + Duration::from_secs(now.as_secs());
            *text = humantime::format_rfc3339_seconds(whole).to_string();
            text.pop(); // the `Z`
            text.push('.');
            *second = now.as_secs();
        }
        writer.write_str(text)
    })?;
    let micros = now.subsec_micros();
    for place in [100_000, 10_000, 1_000, 100, 10, 1] {
        writer.write_char(char::from(b'0' + (micros / place % 10) as u8))?;
    }
    writer.write_char('Z')
}

/// The bytes a text-format string shows as they are between its quotes (as `Debug` would):
/// printable ASCII and the space, but `"` and `\\`.
const PLAIN: [bool; 256] = {
    let mut plain = [false; 256];
    let mut b = 0;
    while b < 256 {
        let byte = b as u8;
        plain[b] = byte == b' ' || byte.is_ascii_graphic() && byte != b'"' && byte != b'\\';
        b += 1;
    }
    plain
};

/// Whether every byte of `value` is [`PLAIN`]. Every access line checks several strings, so
/// eight bytes are looked at together: a byte below the space, above `~`, `"` or `\\` sets
/// its high bit in one of the words below (the classic "has less", "has more" and "has zero
/// byte" tests, exact for whether any byte does).
fn is_plain(value: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    let has_zero = |word: u64| word.wrapping_sub(ONES) & !word;
    let mut words = value.chunks_exact(8);
    for word in &mut words {
        let word = u64::from_ne_bytes(word.try_into().expect("eight bytes"));
        let below_space = word.wrapping_sub(ONES * 0x20) & !word;
        let above_tilde = word.wrapping_add(ONES) | word;
        let quote = has_zero(word ^ (ONES * u64::from(b'"')));
        let backslash = has_zero(word ^ (ONES * u64::from(b'\\')));
        if (below_space | above_tilde | quote | backslash) & HIGHS != 0 {
            return false;
        }
    }
    words.remainder().iter().all(|&b| PLAIN[usize::from(b)])
}

/// An event's fields. Text: `name=value` pairs separated by spaces, strings quoted and escaped
/// as `Debug` does, other values as `Debug` writes them (a `%value` field: its `Display`).
/// JSON: `"name":value` pairs, strings and `Debug` output as JSON strings, numbers as numbers.
/// Plain strings and numbers are written directly: `core::fmt` is most of what a field costs.
pub(crate) struct Fields<'w, W: Write> {
    writer: &'w mut W,
    json: bool,
    first: bool,
    result: fmt::Result,
}

impl<W: Write> Fields<'_, W> {
    #[inline(always)]
    fn write(&mut self, name: impl FieldName, value: impl FnOnce(&mut W) -> fmt::Result) {
        if self.result.is_err() {
            return;
        }
        let (json, first) = (self.json, self.first);
        self.first = false;
        let writer = &mut *self.writer;
        self.result = name
            .write_prefix(writer, json, first)
            .and_then(|()| value(writer));
    }

    #[inline(always)]
    pub(crate) fn str(&mut self, name: impl FieldName, value: &str) {
        let json = self.json;
        let plain = is_plain(value.as_bytes());
        self.write(name, |w| match (json, plain) {
            (true, _) => write_json_str(w, value),
            (false, true) => ["\"", value, "\""]
                .into_iter()
                .try_for_each(|part| w.write_str(part)),
            (false, false) => write!(w, "{value:?}"),
        });
    }

    /// A `%value` field of a string: its `Display`, written as it is in text and as a JSON
    /// string in JSON, without `core::fmt`.
    #[inline(always)]
    pub(crate) fn display(&mut self, name: impl FieldName, value: &str) {
        let json = self.json;
        self.write(name, |w| match json {
            false => w.write_str(value),
            true => write_json_str(w, value),
        });
    }

    /// A `%value` field of a header value: as [`Fields::display`] writes its text, or `-`
    /// when it is not ASCII (as `to_str` would have it). ASCII, nearly every value, is
    /// appended as it is (in JSON, when it needs no escape), with no UTF-8 check.
    #[inline(always)]
    pub(crate) fn header(&mut self, name: impl FieldName, value: &[u8])
    where
        W: LineWrite,
    {
        let (json, ascii) = (self.json, value.is_ascii());
        match (json, ascii) {
            (false, true) => self.write(name, |w| w.write_ascii(value)),
            (true, true) if is_plain(value) => self.write(name, |w| w.write_quoted_ascii(value)),
            _ => {
                let text = ascii.then(|| std::str::from_utf8(value).ok()).flatten();
                self.display(name, text.unwrap_or("-"));
            }
        }
    }

    /// A string field given as bytes, client input: as [`Fields::str`] writes the text, invalid
    /// UTF-8 replaced. Plain bytes, nearly every value, are appended as they are, quoted, with
    /// no UTF-8 check.
    #[inline(always)]
    pub(crate) fn bytes(&mut self, name: impl FieldName, value: &[u8])
    where
        W: LineWrite,
    {
        match is_plain(value) {
            true => self.write(name, |w| w.write_quoted_ascii(value)),
            false => self.str(name, &String::from_utf8_lossy(value)),
        }
    }

    #[inline(always)]
    pub(crate) fn u64(&mut self, name: impl FieldName, value: u64) {
        self.write(name, |w| w.write_str(itoa::Buffer::new().format(value)));
    }

    /// Whole microseconds as milliseconds, written exactly as `Debug` (and serde_json) write
    /// the float `micros as f64 / 1000.0`: `1.5`, `0.042`, `2000.0`, with no float arithmetic.
    #[inline(always)]
    pub(crate) fn millis(&mut self, name: impl FieldName, micros: u64) {
        self.write(name, |w| {
            // The microseconds' digits, split three from the end: 1500 -> `1` `500` -> `1.5`.
            let mut buffer = itoa::Buffer::new();
            let digits = buffer.format(micros);
            let (whole, fraction) = match digits.len() {
                n if n > 3 => digits.split_at(n - 3),
                _ => ("0", digits),
            };
            let zeros = &"00"[..3 - fraction.len()];
            let fraction = fraction.trim_end_matches('0');
            w.write_str(whole)?;
            w.write_char('.')?;
            if fraction.is_empty() {
                return w.write_char('0');
            }
            w.write_str(zeros)?;
            w.write_str(fraction)
        });
    }
}

/// A line writer that also takes bytes checked to be ASCII, with no UTF-8 check of its own.
/// Only the access line's own buffer ([`LineBuf`]) is one: tracing's writers take `str`.
pub(crate) trait LineWrite: Write {
    /// Appends `ascii`, which the caller has checked is ASCII.
    fn write_ascii(&mut self, ascii: &[u8]) -> fmt::Result;

    /// Appends `ascii` between double quotes.
    #[inline(always)]
    fn write_quoted_ascii(&mut self, ascii: &[u8]) -> fmt::Result {
        self.write_char('"')?;
        self.write_ascii(ascii)?;
        self.write_char('"')
    }
}

/// The access line's buffer: text, kept as bytes so that values known to be ASCII are
/// appended as they are (turned into `str` first, each was checked as UTF-8: three checks a
/// line, ~250 instructions; callgrind, benches/load).
pub(crate) struct LineBuf(Vec<u8>);

impl LineBuf {
    pub(crate) const fn new() -> LineBuf {
        LineBuf(Vec::new())
    }

    pub(crate) fn clear(&mut self) {
        self.0.clear();
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl Write for LineBuf {
    #[inline]
    fn write_str(&mut self, text: &str) -> fmt::Result {
        self.0.extend_from_slice(text.as_bytes());
        Ok(())
    }

    #[inline]
    fn write_char(&mut self, c: char) -> fmt::Result {
        match u8::try_from(c) {
            Ok(byte) if byte.is_ascii() => {
                self.0.push(byte);
                Ok(())
            }
            _ => self.write_str(c.encode_utf8(&mut [0; 4])),
        }
    }
}

impl LineWrite for LineBuf {
    #[inline]
    fn write_ascii(&mut self, ascii: &[u8]) -> fmt::Result {
        debug_assert!(ascii.is_ascii(), "{ascii:?}");
        self.0.extend_from_slice(ascii);
        Ok(())
    }
}

/// What comes before a field's value: the separator from the previous field, the name, and
/// `=` (text) or `:` (JSON).
pub(crate) trait FieldName {
    fn write_prefix<W: Write>(&self, writer: &mut W, json: bool, first: bool) -> fmt::Result;
}

impl FieldName for &str {
    fn write_prefix<W: Write>(&self, writer: &mut W, json: bool, first: bool) -> fmt::Result {
        match (json, first) {
            (false, true) => {}
            (false, false) => writer.write_str(" ")?,
            (true, true) => {}
            (true, false) => writer.write_str(",")?,
        }
        match json {
            false => writer.write_str(self).and_then(|()| writer.write_str("=")),
            true => write_json_str(writer, self).and_then(|()| writer.write_str(":")),
        }
    }
}

/// A field name known when the program is built, with its prefixes written out in full: one
/// write instead of four to six for each field of the access line. Made by [`field_name!`].
pub(crate) struct Name {
    /// ` name=`
    pub(crate) text: &'static str,
    /// `,"name":` (a name needing no JSON escape)
    pub(crate) json: &'static str,
}

/// A [`Name`] for a plain field name.
macro_rules! field_name {
    ($name:literal) => {
        $crate::log_format::Name {
            text: concat!(" ", $name, "="),
            json: concat!(",\"", $name, "\":"),
        }
    };
}
pub(crate) use field_name;

impl FieldName for &Name {
    #[inline(always)]
    fn write_prefix<W: Write>(&self, writer: &mut W, json: bool, first: bool) -> fmt::Result {
        // The separator is the prefix's first byte. One write in each arm: there the prefix's
        // length is a constant, and the copy is made inline rather than by a call to `memcpy`.
        match (json, first) {
            (false, false) => writer.write_str(self.text),
            (false, true) => writer.write_str(&self.text[1..]),
            (true, false) => writer.write_str(self.json),
            (true, true) => writer.write_str(&self.json[1..]),
        }
    }
}

impl<W: Write> Visit for Fields<'_, W> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.str(field.name(), value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.u64(field.name(), value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.write(field.name(), |w| {
            w.write_str(itoa::Buffer::new().format(value))
        });
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.write(field.name(), |w| {
            w.write_str(if value { "true" } else { "false" })
        });
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // JSON has no NaN or infinity; serde_json (and so tracing-subscriber) writes null.
        let (nan, infinity, minus_infinity) = match self.json {
            false => ("NaN", "inf", "-inf"),
            true => ("null", "null", "null"),
        };
        self.write(field.name(), |w| {
            write_f64(w, value, nan, infinity, minus_infinity)
        });
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let json = self.json;
        self.write(field.name(), |w| match json {
            false => write!(w, "{value:?}"),
            true => {
                w.write_char('"')?;
                write!(JsonEscaped(w), "{value:?}")?;
                w.write_char('"')
            }
        });
    }
}

/// A finite float as `Debug` (and serde_json) write it, shortest first: `1.5`, `2000.0`.
fn write_f64<W: Write>(
    writer: &mut W,
    value: f64,
    nan: &str,
    infinity: &str,
    minus_infinity: &str,
) -> fmt::Result {
    writer.write_str(match value {
        v if v.is_nan() => nan,
        f64::INFINITY => infinity,
        f64::NEG_INFINITY => minus_infinity,
        v => return writer.write_str(ryu::Buffer::new().format_finite(v)),
    })
}

fn write_json_str<W: Write>(writer: &mut W, value: &str) -> fmt::Result {
    writer.write_char('"')?;
    JsonEscaped(writer).write_str(value)?;
    writer.write_char('"')
}

/// Writes what it is given with JSON string escapes (RFC 8259 §7).
struct JsonEscaped<'w, W: Write>(&'w mut W);

impl<W: Write> Write for JsonEscaped<'_, W> {
    fn write_str(&mut self, value: &str) -> fmt::Result {
        let mut plain = 0;
        for (at, byte) in value.bytes().enumerate() {
            let escape = match byte {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0..0x20 => "",
                _ => continue,
            };
            self.0.write_str(&value[plain..at])?;
            match escape {
                "" => write!(self.0, "\\u{byte:04x}")?,
                escape => self.0.write_str(escape)?,
            }
            plain = at + 1;
        }
        self.0.write_str(&value[plain..])
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::log_sink::LogSink;
    use std::sync::{Arc, Mutex};

    /// Collects what a sink writes.
    #[derive(Clone, Default)]
    pub(crate) struct Captured(pub(crate) Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The lines one access event and one other event make, through `format`.
    fn lines(json: bool, format: impl FnOnce() -> Option<LineFormat>) -> Vec<String> {
        let captured = Captured::default();
        let (sink, guard) = LogSink::new(Box::new(captured.clone()));
        let builder = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(Level::TRACE)
            .with_writer(sink);
        let subscriber: Box<dyn Subscriber + Send + Sync> = match (json, format()) {
            (false, None) => Box::new(builder.finish()),
            (false, Some(format)) => Box::new(builder.event_format(format).finish()),
            (true, None) => Box::new(builder.json().finish()),
            (true, Some(format)) => Box::new(builder.json().event_format(format).finish()),
        };
        tracing::subscriber::with_default(subscriber, || {
            let method = http::Method::GET;
            tracing::info!(
                target: "kbgate::access",
                request_id = %"abc-1",
                client_ip = %"2001:db8::1",
                key_id = "key_1",
                method = %method,
                path = "/v1/article/a%20b",
                route = "/v1/article/{id}",
                bytes_in = 0u64,
                bytes_out = 18_446_744_073_709_551_615u64,
                user_agent = "Mozilla/5.0 (\"x\") \u{1b}[31m \t \u{0} é \u{2028} \u{fffd}",
                odd = "quote \" backslash \\ tab \t bell \u{7} é",
                quoted = "say \"hi\" \\o/",
                status = 200u16,
                signed = -3i64,
                flag = true,
                latency_ms = 1.5f64,
                upstream_ms = Some(2000.0f64),
                missing = None::<f64>,
                not_a_number = f64::NAN,
                infinite = f64::NEG_INFINITY,
            );
            tracing::warn!(target: "kbgate::app", answer = 42, "something else");
            // The access layout at every level (each has its own head).
            tracing::trace!(target: "kbgate::access", status = 100u16);
            tracing::debug!(target: "kbgate::access", status = 101u16);
            tracing::warn!(target: "kbgate::access", status = 102u16);
            tracing::error!(target: "kbgate::access", status = 103u16);
        });
        drop(guard);
        let bytes = captured.0.lock().unwrap().clone();
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The timestamp is the only part that may differ between two formatters' lines.
    fn without_timestamp(line: &str, json: bool) -> String {
        match json {
            false => line.split_once(' ').unwrap().1.to_string(),
            true => {
                let mut value: serde_json::Value = serde_json::from_str(line).unwrap();
                let time = value["timestamp"].take();
                assert!(
                    humantime::parse_rfc3339(time.as_str().unwrap()).is_ok(),
                    "{time}"
                );
                value.to_string()
            }
        }
    }

    #[test]
    fn plain_bytes_are_told_eight_at_a_time_as_one_by_one() {
        let by_table = |value: &[u8]| value.iter().all(|&b| PLAIN[usize::from(b)]);
        for len in 1..=24 {
            for at in 0..len {
                for byte in 0..=255u8 {
                    let mut value = vec![b'a'; len];
                    value[at] = byte;
                    // Beside a byte that would carry or borrow into its neighbour.
                    let mut edged = value.clone();
                    if at + 1 < len {
                        edged[at + 1] = 0x7f;
                    }
                    for value in [value, edged] {
                        assert_eq!(is_plain(&value), by_table(&value), "{value:?}");
                    }
                }
            }
        }
        for text in [
            "",
            "é",
            "éabcdefgh",
            "abcdefgh\"",
            "key_01HZX3Q8RZ2V6F8K9D4W7N5M1C",
            "a\u{7f}bcdefgh",
            "/v1/article/a1",
        ] {
            assert_eq!(
                is_plain(text.as_bytes()),
                by_table(text.as_bytes()),
                "{text:?}"
            );
        }
    }

    #[test]
    fn access_lines_are_laid_out_exactly_as_tracing_subscriber_lays_them_out() {
        for json in [false, true] {
            let ours = lines(json, || Some(LineFormat::new(json)));
            let theirs = lines(json, || None);
            assert_eq!(ours.len(), 6, "{ours:?}");
            assert_eq!(theirs.len(), 6, "{theirs:?}");
            for (ours, theirs) in ours.iter().zip(&theirs) {
                assert_eq!(
                    without_timestamp(ours, json),
                    without_timestamp(theirs, json),
                    "json: {json}"
                );
            }
        }
    }

    #[test]
    fn text_timestamps_are_rfc3339_with_microseconds() {
        let ours = lines(false, || Some(LineFormat::text()));
        let time = ours[0].split_once(' ').unwrap().0;
        assert_eq!(time.len(), "2026-11-27T04:39:02.972524Z".len(), "{time}");
        assert!(humantime::parse_rfc3339(time).is_ok(), "{time}");
    }

    #[test]
    fn whole_microseconds_are_written_as_the_float_of_milliseconds_is() {
        let mut values: Vec<u64> = (0..20_000).collect();
        values.extend([
            999_999,
            1_000_000,
            1_234_567,
            86_400_000_000,
            u64::from(u32::MAX),
        ]);
        values.extend((1..40).map(|shift| (1u64 << shift) + 7));
        for micros in values {
            let mut ours = String::new();
            let mut fields = Fields {
                writer: &mut ours,
                json: false,
                first: true,
                result: Ok(()),
            };
            fields.millis("m", micros);
            let float = micros as f64 / 1000.0;
            assert_eq!(ours, format!("m={float:?}"), "{micros}");
        }
    }
}
