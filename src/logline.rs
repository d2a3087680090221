//! The log writer: the one JSON line per request (and every other log line) leaves the request path as a copy into
//! a bounded in-memory buffer; a background thread writes the buffer to stderr in batches, one `write` per batch
//! instead of one per line. Policy on overflow: the request path never blocks on the log. When the buffer holds
//! `CAPACITY` bytes (stderr slower than the gate, e.g. a blocked pipe), further lines are dropped whole and counted
//! (`dropped()`, exported as `mlflow_gate_log_lines_dropped_total`). Lines reach stderr within about
//! `BATCH_INTERVAL` of being logged; dropping the `Guard` (at the end of `serve`) writes what is buffered. This is
//! the operator's log only: the audit log keeps its own durable writer (`crate::audit`).

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// Bytes buffered at most before lines are dropped.
pub const CAPACITY: usize = 4 << 20;
/// How long the writer lets lines accumulate after a write before it takes the next batch.
pub const BATCH_INTERVAL: Duration = Duration::from_millis(5);

static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Lines dropped since start because the buffer was full.
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

#[derive(Default)]
struct State {
    buf: Vec<u8>,
    closed: bool,
}

struct Shared {
    state: Mutex<State>,
    ready: Condvar,
    capacity: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves a byte buffer, still usable.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Hands out writers (`tracing_subscriber::fmt::MakeWriter`) into the shared buffer.
#[derive(Clone)]
pub struct NonBlocking {
    shared: Arc<Shared>,
}

/// Stops the background writer, writing what is buffered, when dropped.
pub struct Guard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// Starts the background thread writing to `out`; `capacity` bounds the buffer in bytes.
pub fn spawn<W: Write + Send + 'static>(out: W, capacity: usize) -> std::io::Result<(NonBlocking, Guard)> {
    let shared = Arc::new(Shared { state: Mutex::new(State::default()), ready: Condvar::new(), capacity });
    let worker = shared.clone();
    let thread = std::thread::Builder::new().name("log-writer".into()).spawn(move || drain(&worker, out))?;
    Ok((NonBlocking { shared: shared.clone() }, Guard { shared, thread: Some(thread) }))
}

fn drain<W: Write>(shared: &Shared, mut out: W) {
    let mut batch = Vec::new();
    loop {
        let closed = {
            let mut state = shared.lock();
            while state.buf.is_empty() && !state.closed {
                state = shared.ready.wait(state).unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            std::mem::swap(&mut state.buf, &mut batch);
            state.closed
        };
        // A failing stderr loses the batch; nothing else can be done with a log line.
        let _ = out.write_all(&batch).and_then(|()| out.flush());
        batch.clear();
        if closed {
            // One last look: lines logged between the swap and the close.
            let rest = std::mem::take(&mut shared.lock().buf);
            let _ = out.write_all(&rest).and_then(|()| out.flush());
            return;
        }
        std::thread::sleep(BATCH_INTERVAL);
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.ready.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One event's writer: `tracing_subscriber` formats the whole line, then writes it here in one call.
pub struct LineWriter<'a> {
    shared: &'a Shared,
}

impl Write for LineWriter<'_> {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let was_empty = {
            let mut state = self.shared.lock();
            if state.closed || state.buf.len() + line.len() > self.shared.capacity {
                DROPPED.fetch_add(1, Ordering::Relaxed);
                return Ok(line.len());
            }
            let was_empty = state.buf.is_empty();
            state.buf.extend_from_slice(line);
            was_empty
        };
        // Only the first line of a batch wakes the writer: later ones find it awake or about to look.
        if was_empty {
            self.shared.ready.notify_one();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for NonBlocking {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter { shared: &self.shared }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::fmt::MakeWriter;

    /// A sink the test can read and can hold still (a blocked stderr).
    #[derive(Clone, Default)]
    struct Sink {
        out: Arc<Mutex<Vec<u8>>>,
        gate: Arc<Mutex<()>>,
    }

    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            let _held = self.gate.lock().unwrap();
            self.out.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_reaches_the_output_in_order_once_the_guard_is_dropped() {
        let sink = Sink::default();
        let (writer, guard) = spawn(sink.clone(), CAPACITY).unwrap();
        for i in 0..1000 {
            writer.make_writer().write_all(format!("line {i}\n").as_bytes()).unwrap();
        }
        drop(guard);
        let text = String::from_utf8(sink.out.lock().unwrap().clone()).unwrap();
        let expected: String = (0..1000).map(|i| format!("line {i}\n")).collect();
        assert_eq!(text, expected);
    }

    #[test]
    fn a_blocked_output_drops_and_counts_whole_lines_instead_of_blocking_the_logger() {
        let sink = Sink::default();
        let held = sink.gate.lock().unwrap();
        let (writer, guard) = spawn(sink.clone(), 100).unwrap();
        let before = dropped();
        // The writer takes at most one batch (<= 9 lines of 11 bytes) before it blocks on the sink; the buffer then
        // fills with at most 9 more.
        for _ in 0..50 {
            writer.make_writer().write_all(b"0123456789\n").unwrap();
        }
        let lost = dropped() - before;
        assert!(lost >= 50 - 2 * 9, "only {lost} lines counted as dropped");
        drop(held);
        drop(guard);
        let out = sink.out.lock().unwrap().clone();
        assert_eq!(out.len() % 11, 0, "a line was cut");
        assert_eq!(out.len() / 11 + usize::try_from(lost).unwrap(), 50);
    }
}
