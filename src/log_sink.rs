//! Where log lines go: stderr, written in batches by one thread.
//!
//! The access log writes a line per request. Written directly, that is one write(2) per request
//! on the worker thread that serves it, about a fifth of the gateway's CPU time under load (see
//! benches/load). Here a line is appended to a buffer in memory, and a writer thread wakes
//! when the buffer stops being empty, lets lines gather for [`BATCH_WINDOW`], and writes them
//! with one call. Nothing is dropped: when more than [`MAX_PENDING`] bytes wait, the thread that
//! logs writes the batch itself. [`LogSink::write_pending`] (and dropping the [`FlushOnDrop`] guard)
//! writes whatever is pending, so shutdown and errors lose no line.

use crate::lock;
use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

/// How long the writer thread lets lines gather before writing them.
const BATCH_WINDOW: Duration = Duration::from_millis(50);
/// Above this many pending bytes, the logging thread writes the batch itself.
const MAX_PENDING: usize = 1 << 20;

/// A cloneable handle that appends log lines; see the module documentation.
#[derive(Clone)]
pub struct LogSink {
    shared: Arc<Shared>,
}

struct Shared {
    pending: Mutex<Pending>,
    not_empty: Condvar,
    /// Held while a batch is taken and written, so batches reach the output in order.
    output: Mutex<Output>,
}

struct Output {
    writer: Box<dyn Write + Send>,
    /// The previous batch's buffer, emptied: swapped in for the pending one, so the buffers
    /// keep their capacity instead of growing anew for every batch.
    spare: Vec<u8>,
}

#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    closed: bool,
}

/// Writes what is pending and stops the writer thread when dropped.
pub struct FlushOnDrop {
    sink: LogSink,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl LogSink {
    /// A sink writing to stderr, and the guard that flushes it.
    pub fn stderr() -> (LogSink, FlushOnDrop) {
        LogSink::new(Box::new(io::stderr()))
    }

    /// A sink writing to `output` through its own writer thread.
    pub fn new(output: Box<dyn Write + Send>) -> (LogSink, FlushOnDrop) {
        let sink = LogSink {
            shared: Arc::new(Shared {
                pending: Mutex::new(Pending::default()),
                not_empty: Condvar::new(),
                output: Mutex::new(Output {
                    writer: output,
                    spare: Vec::new(),
                }),
            }),
        };
        let writer = {
            let sink = sink.clone();
            std::thread::Builder::new()
                .name("kbgate-log".into())
                .spawn(move || sink.run_writer())
                .ok()
        };
        let guard = FlushOnDrop {
            sink: sink.clone(),
            writer,
        };
        (sink, guard)
    }

    /// Writes every pending line now.
    fn write_pending(&self) -> io::Result<()> {
        let mut output = lock(&self.shared.output);
        let Output { writer, spare } = &mut *output;
        std::mem::swap(spare, &mut lock(&self.shared.pending).bytes);
        let written = writer.write_all(spare).and_then(|()| writer.flush());
        spare.clear();
        written
    }

    fn run_writer(&self) {
        loop {
            {
                let mut pending = lock(&self.shared.pending);
                while pending.bytes.is_empty() && !pending.closed {
                    pending = self
                        .shared
                        .not_empty
                        .wait(pending)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                if pending.closed {
                    return;
                }
            }
            std::thread::sleep(BATCH_WINDOW);
            // Nowhere to report a failed write of the log itself; the next batch tries again.
            let _ = self.write_pending();
        }
    }
}

impl Write for &LogSink {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        let mut pending = lock(&self.shared.pending);
        let was_empty = pending.bytes.is_empty();
        pending.bytes.extend_from_slice(line);
        let full = pending.bytes.len() > MAX_PENDING;
        drop(pending);
        if full {
            self.write_pending()?;
        } else if was_empty {
            self.shared.not_empty.notify_one();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        // Lines are written in batches; `LogSink::write_pending` forces one.
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogSink {
    type Writer = &'a LogSink;

    fn make_writer(&'a self) -> &'a LogSink {
        self
    }
}

impl Drop for FlushOnDrop {
    fn drop(&mut self) {
        lock(&self.sink.shared.pending).closed = true;
        self.sink.shared.not_empty.notify_one();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
        let _ = self.sink.write_pending();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// An output that records what reached it and how many writes it took.
    #[derive(Clone, Default)]
    struct Recorded(Arc<Mutex<(Vec<u8>, usize)>>);

    impl Write for Recorded {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let mut recorded = self.0.lock().unwrap();
            recorded.0.extend_from_slice(buf);
            recorded.1 += 1;
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Recorded {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().0.clone()).unwrap()
        }
        fn writes(&self) -> usize {
            self.0.lock().unwrap().1
        }
    }

    #[test]
    fn lines_arrive_in_order_in_few_writes() {
        let output = Recorded::default();
        let (sink, guard) = LogSink::new(Box::new(output.clone()));
        let expected: String = (0..1000).map(|i| format!("line {i}\n")).collect();
        for i in 0..1000 {
            (&sink).write_all(format!("line {i}\n").as_bytes()).unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while output.text().len() < expected.len() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(
            output.text(),
            expected,
            "the writer thread wrote every line"
        );
        assert!(output.writes() < 1000, "{} writes", output.writes());
        drop(guard);
    }

    #[test]
    fn dropping_the_guard_writes_what_is_pending() {
        let output = Recorded::default();
        let (sink, guard) = LogSink::new(Box::new(output.clone()));
        (&sink).write_all(b"last words\n").unwrap();
        drop(guard);
        assert_eq!(output.text(), "last words\n");
    }

    #[test]
    fn a_full_buffer_is_written_by_the_caller() {
        let output = Recorded::default();
        let (sink, guard) = LogSink::new(Box::new(output.clone()));
        let line = vec![b'x'; MAX_PENDING + 1];
        (&sink).write_all(&line).unwrap();
        assert_eq!(
            output.text().len(),
            line.len(),
            "written before write returned"
        );
        drop(guard);
    }
}
