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

tokio::task_local! {
    /// The id of the request the current task is serving (see [`in_request`]).
    static REQUEST_ID: Box<str>;
}

/// Runs `work` as the request `id`: every line logged while it runs carries `"span": {"request_id": id, "name":
/// "request"}` (and the same first entry in `"spans"`), the document a `tracing` span named `request` with a
/// `request_id` field gives. A task-local value instead of a `tracing` span: the span cost a registry slot, a JSON
/// rendering of its fields, and an enter and exit on every poll of the request, for every request (about 5% of the
/// instructions of a proxied request).
///
/// Not an `async fn`: each async layer stores the future it awaits and moves it once more, and a request's future is
/// large; pass it boxed.
pub fn in_request<F: std::future::Future>(id: &str, work: F) -> impl std::future::Future<Output = F::Output> {
    REQUEST_ID.scope(id.into(), work)
}

/// The JSON line of every log event, written directly: the same document as tracing-subscriber's JSON format with
/// the current span (`{"timestamp", "level", "fields": {...}, "target", "span": {..., "name"}, "spans": [...]}`),
/// without its per-event detours (re-parsing each span's stored fields as JSON, serialising through serde). Span
/// fields are stored as JSON by [`tracing_subscriber::fmt::format::JsonFields`] and embedded as they are. The
/// request being served ([`in_request`]) is the outermost span.
pub struct JsonLine;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for JsonLine
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let mut line = String::with_capacity(512);
        line.push_str("{\"timestamp\":\"");
        crate::civil::push_rfc3339(&mut line, std::time::SystemTime::now(), 6);
        line.push_str("\",\"level\":\"");
        line.push_str(event.metadata().level().as_str());
        line.push_str("\",\"fields\":{");
        event.record(&mut Fields { out: &mut line, first: true });
        line.push_str("},\"target\":");
        push_json_str(&mut line, event.metadata().target());
        // The spans from the root, comma-separated, and where the innermost one starts.
        let mut spans = String::new();
        let mut current = 0;
        let _ = REQUEST_ID.try_with(|id| {
            spans.push_str("{\"request_id\":");
            push_json_str(&mut spans, id);
            spans.push_str(",\"name\":\"request\"}");
        });
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                if !spans.is_empty() {
                    spans.push(',');
                }
                current = spans.len();
                push_span_json::<S, N>(&mut spans, &span);
            }
        }
        if !spans.is_empty() {
            line.push_str(",\"span\":");
            line.push_str(&spans[current..]);
            line.push_str(",\"spans\":[");
            line.push_str(&spans);
            line.push(']');
        }
        line.push_str("}\n");
        writer.write_str(&line)
    }
}

/// Appends `{<the span's fields>, "name": <its name>}`.
fn push_span_json<S, N>(out: &mut String, span: &tracing_subscriber::registry::SpanRef<'_, S>)
where
    S: for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    out.push('{');
    let extensions = span.extensions();
    if let Some(stored) = extensions.get::<tracing_subscriber::fmt::FormattedFields<N>>() {
        let inner = stored.fields.trim();
        let inner = inner.strip_prefix('{').and_then(|i| i.strip_suffix('}')).unwrap_or(inner).trim();
        if !inner.is_empty() {
            out.push_str(inner);
            out.push(',');
        }
    }
    out.push_str("\"name\":");
    push_json_str(out, span.name());
    out.push('}');
}

/// Writes an event's fields as JSON members, as tracing-subscriber's JSON format does: strings, booleans and
/// integers as themselves, finite floats as numbers, everything else (`Display`/`Debug` values, errors, the message)
/// as the string it formats to.
struct Fields<'a> {
    out: &'a mut String,
    first: bool,
}

impl Fields<'_> {
    fn key(&mut self, field: &tracing::field::Field) {
        if !std::mem::take(&mut self.first) {
            self.out.push(',');
        }
        push_json_str(self.out, field.name());
        self.out.push(':');
    }
}

impl tracing::field::Visit for Fields<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.key(field);
        push_json_str(self.out, value);
    }

    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.key(field);
        self.out.push_str(if value { "true" } else { "false" });
    }

    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        use std::fmt::Write as _;
        self.key(field);
        let _ = write!(self.out, "{value}");
    }

    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        use std::fmt::Write as _;
        self.key(field);
        let _ = write!(self.out, "{value}");
    }

    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        use std::fmt::Write as _;
        self.key(field);
        if value.is_finite() {
            let _ = write!(self.out, "{value}");
        } else {
            push_json_str(self.out, &value.to_string());
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write as _;
        self.key(field);
        // Formatted straight into the line, escaped on the way (no intermediate string).
        self.out.push('"');
        let _ = write!(Escaped(self.out), "{value:?}");
        self.out.push('"');
    }
}

/// A `fmt::Write` that appends what is written to it as the inside of a JSON string.
struct Escaped<'a>(&'a mut String);

impl std::fmt::Write for Escaped<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        push_json_escaped(self.0, s);
        Ok(())
    }
}

/// Appends `s` as a JSON string (quotes, backslashes and control characters escaped).
fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    push_json_escaped(out, s);
    out.push('"');
}

/// Appends `s` escaped for the inside of a JSON string. Every byte that needs escaping is ASCII, so the scan is over
/// bytes, and the runs between them are copied whole.
fn push_json_escaped(out: &mut String, s: &str) {
    use std::fmt::Write as _;
    let bytes = s.as_bytes();
    let mut plain = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escaped = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            b if b < 0x20 => "",
            _ => continue,
        };
        // `i` is at an ASCII byte, so both slices end on character boundaries.
        out.push_str(&s[plain..i]);
        if escaped.is_empty() {
            let _ = write!(out, "\\u{:04x}", b);
        } else {
            out.push_str(escaped);
        }
        plain = i + 1;
    }
    out.push_str(&s[plain..]);
}

#[cfg(test)]
mod format_tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().map_err(|_| std::io::Error::other("poisoned"))?.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// How the request is marked: a `tracing` span (what tracing-subscriber sees) or [`in_request`].
    #[derive(Clone, Copy, PartialEq)]
    enum Marked {
        Span,
        TaskLocal,
    }

    /// The JSON lines `emit` logs, through this module's format or through tracing-subscriber's own.
    fn logged(with_ours: bool, emit: impl Fn()) -> Vec<serde_json::Value> {
        let capture = Capture::default();
        let writer = capture.clone();
        let make = move || writer.clone();
        if with_ours {
            let subscriber = tracing_subscriber::fmt()
                .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
                .event_format(JsonLine)
                .with_writer(make)
                .finish();
            tracing::subscriber::with_default(subscriber, emit);
        } else {
            let subscriber = tracing_subscriber::fmt().json().with_current_span(true).with_writer(make).finish();
            tracing::subscriber::with_default(subscriber, emit);
        }
        let bytes = capture.0.lock().map(|b| b.clone()).unwrap_or_default();
        let text = String::from_utf8(bytes).unwrap_or_default();
        text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
    }

    fn lines(with_ours: bool, marked: Marked) -> Vec<serde_json::Value> {
        let events = || {
            tracing::info!(method = "GET", sub = "a\"b\\c\n\u{1}\u{8}\u{c}é", n = 7u64, d = -3i64, f = 0.5, ok = true,
                error = %std::io::Error::other("bo\"om"), "request");
            tracing::warn!(would_deny = %"x; y", "shadow-mode rules would deny this request");
        };
        logged(with_ours, || match marked {
            Marked::Span => {
                let span = tracing::info_span!("request", request_id = "08af90dbacb2392f");
                let _entered = span.enter();
                events();
            }
            Marked::TaskLocal => {
                let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
                runtime.block_on(in_request("08af90dbacb2392f", async { events() }));
            }
        })
    }

    #[test]
    fn the_line_is_the_document_tracing_subscriber_writes() {
        let theirs = lines(false, Marked::Span);
        for marked in [Marked::Span, Marked::TaskLocal] {
            let ours = lines(true, marked);
            assert_eq!(ours.len(), 2);
            for (mut a, mut b) in ours.into_iter().zip(theirs.clone()) {
                let (ta, tb) = (a["timestamp"].take(), b["timestamp"].take());
                assert_eq!(a, b);
                assert_eq!(a["span"]["request_id"], "08af90dbacb2392f");
                let (ta, tb) = (ta.as_str().unwrap_or_default().to_owned(), tb.as_str().unwrap_or_default().to_owned());
                assert_eq!(ta.len(), tb.len(), "{ta} vs {tb}");
                assert_eq!(ta[..16], tb[..16], "same minute: {ta} vs {tb}");
            }
        }
    }

    #[test]
    fn a_line_outside_a_request_has_no_span() {
        for with_ours in [true, false] {
            let lines = logged(with_ours, || tracing::info!(n = 1u64, "started"));
            assert_eq!(lines.len(), 1);
            assert!(lines[0].get("span").is_none() && lines[0].get("spans").is_none(), "{}", lines[0]);
        }
    }
}
