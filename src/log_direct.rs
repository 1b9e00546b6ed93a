//! The access line's route past tracing. Passed as a tracing event, each of its thirteen fields
//! goes through tracing's dispatch and a field visitor: about 8.7k instructions per request of
//! the 68.8k (callgrind, benches/load arm C). When the process logs plain lines (no ANSI
//! colours), `main` installs the sink here and the access log writes its line into a reused
//! buffer and hands it to the sink itself, in the same layout byte for byte (the log filter
//! still decides whether it is written). Tests and benches that install their own subscriber
//! install nothing here and get the line through tracing.

use crate::log_format::{Fields, LineBuf, write_access_line};
use crate::log_sink::LogSink;
use std::cell::RefCell;
use std::io::Write as _;
use std::sync::OnceLock;
use tracing::Level;

/// The sink and the layout the access line is written in.
pub struct DirectLines {
    sink: LogSink,
    json: bool,
}

static DIRECT: OnceLock<DirectLines> = OnceLock::new();

/// Sends access lines straight to `sink` from now on, as JSON or text.
pub fn install(sink: LogSink, json: bool) {
    let _ = DIRECT.set(DirectLines { sink, json });
}

/// The installed route, if any.
pub(crate) fn installed() -> Option<&'static DirectLines> {
    DIRECT.get()
}

impl DirectLines {
    /// Writes one INFO access line whose fields `fields` writes.
    pub(crate) fn write(&self, fields: impl FnOnce(&mut Fields<'_, LineBuf>)) {
        thread_local! {
            static LINE: RefCell<LineBuf> = const { RefCell::new(LineBuf::new()) };
        }
        LINE.with_borrow_mut(|line| {
            line.clear();
            if write_access_line(line, self.json, Level::INFO, fields).is_ok() {
                // Nowhere to report a failed write of the log itself.
                let _ = (&self.sink).write_all(line.as_bytes());
            }
        });
    }
}
