//! The client's `tracing` events, forwarded to a host-implemented [`Logger`] (in C#, an
//! `ILogger` adapter; in the tests, a Python class).
//!
//! The library is a cdylib with its own copy of `tracing`'s statics, so no subscriber of the
//! host process sees its events: [`set_logger`] installs one, a [`ForwardLayer`] over
//! `tracing_subscriber`'s registry, as this library's global default. The host's logger and
//! level sit in a [`Forwarder`] that can be swapped at any time. The level is also the layer's
//! callsite interest and max-level hint, so events more verbose than it are skipped by
//! `tracing`'s own macros before any field is looked at.
//!
//! Only the project's own crates (targets `storycad_*`) are forwarded: they never log a token
//! or secret, and keep it that way. The dependencies' events (h2's and hyper-util's
//! frame-level chatter) are not ours to vouch for, and would drown the host's log at `Trace`.

use std::{
    cell::Cell,
    fmt::{self, Write as _},
    panic::{self, AssertUnwindSafe},
    sync::{
        atomic::{AtomicU8, Ordering},
        Arc, Once, PoisonError, RwLock,
    },
};

use tracing::{
    field::{Field, Visit},
    level_filters::LevelFilter,
    span, Event, Level, Metadata, Subscriber,
};
use tracing_subscriber::{
    layer::{Context, SubscriberExt as _},
    registry::LookupSpan,
    Layer, Registry,
};

/// How severe an event is; the variants go from most to least severe, as `tracing`'s levels
/// do. In .NET they are `LogLevel.Error`, `Warning`, `Information`, `Debug` and `Trace`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, uniffi::Enum)]
pub enum LogLevel {
    /// A failure the library could not recover from.
    Error,
    /// Something unexpected that the library worked around.
    Warn,
    /// What happened, at the level of one call.
    Info,
    /// Each decision inside a call: every attempt, retry, token refresh, stream end.
    Debug,
    /// Finer than `Debug`.
    Trace,
}

impl LogLevel {
    fn of(level: &Level) -> Self {
        match *level {
            Level::ERROR => LogLevel::Error,
            Level::WARN => LogLevel::Warn,
            Level::INFO => LogLevel::Info,
            Level::DEBUG => LogLevel::Debug,
            _ => LogLevel::Trace,
        }
    }

    /// 1 (`Error`) to 5 (`Trace`); 0 is "nothing", the rank when no logger is set.
    fn rank(self) -> u8 {
        self as u8 + 1
    }
}

/// One event, formatted.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct LogRecord {
    /// The event's level.
    pub level: LogLevel,
    /// Where it comes from: the module path, e.g. `storycad_client::client`. A host can use it
    /// as the logger's category.
    pub target: String,
    /// The event's message, then its fields and those of the spans it is in (outermost first)
    /// as ` key=value` pairs, e.g. `retrying attempt=1 status=Some(503) ... method=POST
    /// path=/chat/completions model=storycad-fast stream=false n=1`. Never holds a token.
    pub message: String,
}

/// Where the library's log records go; the host app implements it (in C#, over an `ILogger`).
#[uniffi::export(with_foreign)]
pub trait Logger: Send + Sync {
    /// Takes one record. Called synchronously from the library's threads (the tokio workers
    /// that run requests), possibly from several at once, while the call that logged waits:
    /// it must be quick and thread-safe. An exception it raises is ignored (the record is
    /// lost, the call goes on).
    fn log(&self, record: LogRecord);
}

/// Sends the library's events at `max_level` and more severe to `logger`, replacing any logger
/// set before. Events more verbose than `max_level` are neither formatted nor sent.
///
/// The first call installs the forwarding subscriber as this library's global `tracing`
/// default. That fails only when one is already set, which only a Rust program linking this
/// crate as a Rust library can have done; the logger then receives nothing, and the program's
/// own subscriber keeps the events.
#[uniffi::export]
pub fn set_logger(logger: Arc<dyn Logger>, max_level: LogLevel) {
    FORWARDER.set(Some((logger, max_level)));
    install();
    tracing::callsite::rebuild_interest_cache();
}

/// Stops forwarding; the logger set before is dropped. Call it before the host tears down what
/// its logger writes to (at exit, say): requests still running keep logging until then.
#[uniffi::export]
pub fn clear_logger() {
    FORWARDER.set(None);
    tracing::callsite::rebuild_interest_cache();
}

static FORWARDER: Forwarder = Forwarder::new();

/// Installs the forwarding subscriber once. A subscriber already set is kept (see
/// [`set_logger`]).
///
/// With it goes a panic hook that stays quiet about the panics uniffi raises for an exception
/// of the host's `log`, which are ignored, and passes every other panic on to the hook before
/// it. (A cdylib has its own copy of std, so this is the library's hook, not the host's.)
fn install() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let subscriber = Registry::default().with(ForwardLayer(&FORWARDER));
        if tracing::subscriber::set_global_default(subscriber).is_err() {
            return;
        }
        let report = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !IN_HOST_LOG.try_with(Cell::get).unwrap_or(false) {
                report(info);
            }
        }));
    });
}

thread_local! {
    /// Whether this thread is in the host's `log`.
    static IN_HOST_LOG: Cell<bool> = const { Cell::new(false) };
}

/// The host's logger and the most verbose level it takes, swappable while events are being
/// forwarded.
struct Forwarder {
    logger: RwLock<Option<Arc<dyn Logger>>>,
    /// [`LogLevel::rank`] of the logger's level, 0 when there is none: the check every event
    /// and span makes, without the lock.
    max_rank: AtomicU8,
}

impl Forwarder {
    const fn new() -> Self {
        Forwarder {
            logger: RwLock::new(None),
            max_rank: AtomicU8::new(0),
        }
    }

    fn set(&self, to: Option<(Arc<dyn Logger>, LogLevel)>) {
        // A poisoned lock only means a panic elsewhere while it was held; the slot itself is
        // always whole.
        let mut slot = self.logger.write().unwrap_or_else(PoisonError::into_inner);
        let rank = to.as_ref().map_or(0, |(_, level)| level.rank());
        *slot = to.map(|(logger, _)| logger);
        self.max_rank.store(rank, Ordering::Relaxed);
    }

    fn logger(&self) -> Option<Arc<dyn Logger>> {
        self.logger
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Whether events or spans of `meta` are forwarded now.
    fn wants(&self, meta: &Metadata<'_>) -> bool {
        LogLevel::of(meta.level()).rank() <= self.max_rank.load(Ordering::Relaxed)
            && meta.target().starts_with("storycad_")
    }

    fn max_level(&self) -> LevelFilter {
        match self.max_rank.load(Ordering::Relaxed) {
            0 => LevelFilter::OFF,
            1 => LevelFilter::ERROR,
            2 => LevelFilter::WARN,
            3 => LevelFilter::INFO,
            4 => LevelFilter::DEBUG,
            _ => LevelFilter::TRACE,
        }
    }
}

/// The `tracing_subscriber` layer that formats events into [`LogRecord`]s for the
/// [`Forwarder`]'s logger. Spans keep their fields, formatted once, in the registry's
/// extensions, so each event only appends them.
struct ForwardLayer(&'static Forwarder);

/// A span's fields, formatted as ` key=value` pairs.
struct SpanFields(String);

impl<S> Layer<S> for ForwardLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> tracing::subscriber::Interest {
        // Re-asked after each set_logger/clear_logger (rebuild_interest_cache).
        if self.0.wants(meta) {
            tracing::subscriber::Interest::always()
        } else {
            tracing::subscriber::Interest::never()
        }
    }

    fn enabled(&self, meta: &Metadata<'_>, _ctx: Context<'_, S>) -> bool {
        self.0.wants(meta)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(self.0.max_level())
    }

    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = String::new();
        attrs.record(&mut FieldWriter::span(&mut fields));
        span.extensions_mut().insert(SpanFields(fields));
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        if let Some(SpanFields(fields)) = extensions.get_mut::<SpanFields>() {
            values.record(&mut FieldWriter::span(fields));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        // The interest was cached as `always` at the level of its time: check the current one.
        if !self.0.wants(event.metadata()) {
            return;
        }
        let Some(logger) = self.0.logger() else {
            return;
        };
        let mut message = String::new();
        let mut fields = String::new();
        event.record(&mut FieldWriter::event(&mut message, &mut fields));
        message.push_str(&fields);
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(SpanFields(f)) = span.extensions().get::<SpanFields>() {
                    message.push_str(f);
                }
            }
        }
        let record = LogRecord {
            level: LogLevel::of(event.metadata().level()),
            target: event.metadata().target().to_owned(),
            message,
        };
        // uniffi panics when the host's `log` raised; the log is not worth the request.
        let _ = IN_HOST_LOG.try_with(|f| f.set(true));
        let _ignored = panic::catch_unwind(AssertUnwindSafe(|| logger.log(record)));
        let _ = IN_HOST_LOG.try_with(|f| f.set(false));
    }
}

/// Writes a `message` field into `message` (events only) and every other field as
/// ` key=value` into `fields`.
struct FieldWriter<'a> {
    message: Option<&'a mut String>,
    fields: &'a mut String,
}

impl<'a> FieldWriter<'a> {
    fn event(message: &'a mut String, fields: &'a mut String) -> Self {
        FieldWriter {
            message: Some(message),
            fields,
        }
    }

    fn span(fields: &'a mut String) -> Self {
        FieldWriter {
            message: None,
            fields,
        }
    }

    fn write(&mut self, field: &Field, value: fmt::Arguments<'_>) {
        // Writing to a String cannot fail.
        let _ = match &mut self.message {
            Some(message) if field.name() == "message" => message.write_fmt(value),
            _ => write!(self.fields, " {}={}", field.name(), value),
        };
    }
}

impl Visit for FieldWriter<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.write(field, format_args!("{value}"));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.write(field, format_args!("{value:?}"));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tracing::field;

    use super::*;

    /// Keeps what it is given.
    #[derive(Default)]
    struct Collect(Mutex<Vec<LogRecord>>);

    impl Logger for Collect {
        fn log(&self, record: LogRecord) {
            self.0.lock().unwrap().push(record);
        }
    }

    impl Collect {
        fn take(&self) -> Vec<LogRecord> {
            std::mem::take(&mut *self.0.lock().unwrap())
        }
    }

    /// Runs `body` with a forwarder of its own to `logger` at `level` as this thread's
    /// default subscriber: the global one is the Python tests' to install.
    fn with_logger(
        logger: Arc<dyn Logger>,
        level: LogLevel,
        body: impl FnOnce(&'static Forwarder),
    ) {
        let forwarder: &'static Forwarder = Box::leak(Box::new(Forwarder::new()));
        forwarder.set(Some((logger, level)));
        let subscriber = Registry::default().with(ForwardLayer(forwarder));
        tracing::subscriber::with_default(subscriber, || body(forwarder));
    }

    #[test]
    fn a_record_holds_the_message_then_the_event_and_span_fields() {
        let collect = Arc::new(Collect::default());
        with_logger(collect.clone(), LogLevel::Debug, |_| {
            let request = tracing::info_span!(
                target: "storycad_client::client",
                "storycad_request",
                method = "POST",
                path = "/chat/completions",
                model = "storycad-fast",
                stream = false,
                request_id = field::Empty,
            );
            request.record("request_id", "req_1");
            let _request = request.enter();
            let _attempt =
                tracing::info_span!(target: "storycad_client::client", "attempt", n = 1u32)
                    .entered();
            let err = "HTTP 503";
            tracing::debug!(
                target: "storycad_client::client",
                attempt = 1u32,
                status = ?Some(503u16),
                error = %err,
                "retrying"
            );
        });
        assert_eq!(
            collect.take(),
            [LogRecord {
                level: LogLevel::Debug,
                target: "storycad_client::client".into(),
                message: "retrying attempt=1 status=Some(503) error=HTTP 503 method=POST \
                          path=/chat/completions model=storycad-fast stream=false \
                          request_id=req_1 n=1"
                    .into(),
            }]
        );
    }

    #[test]
    fn each_tracing_level_maps_to_its_log_level() {
        let collect = Arc::new(Collect::default());
        with_logger(collect.clone(), LogLevel::Trace, |_| {
            tracing::error!(target: "storycad_client", "e");
            tracing::warn!(target: "storycad_client", "w");
            tracing::info!(target: "storycad_client", "i");
            tracing::debug!(target: "storycad_client", "d");
            tracing::trace!(target: "storycad_client", "t");
        });
        let got: Vec<_> = collect
            .take()
            .into_iter()
            .map(|r| (r.level, r.message))
            .collect();
        assert_eq!(
            got,
            [
                (LogLevel::Error, "e".to_owned()),
                (LogLevel::Warn, "w".to_owned()),
                (LogLevel::Info, "i".to_owned()),
                (LogLevel::Debug, "d".to_owned()),
                (LogLevel::Trace, "t".to_owned()),
            ]
        );
    }

    #[test]
    fn only_the_projects_events_at_the_level_or_more_severe_are_sent() {
        let collect = Arc::new(Collect::default());
        with_logger(collect.clone(), LogLevel::Info, |forwarder| {
            assert_eq!(forwarder.max_level(), LevelFilter::INFO);
            tracing::debug!(target: "storycad_client::client", "too verbose");
            tracing::info!(target: "h2::codec", "not ours");
            tracing::info!(target: "storycad_client::client", "sent");
            tracing::warn!(target: "storycad_client::client", "sent too");
            forwarder.set(None);
            assert_eq!(forwarder.max_level(), LevelFilter::OFF);
            tracing::warn!(target: "storycad_client::client", "after clearing");
        });
        let got: Vec<_> = collect.take().into_iter().map(|r| r.message).collect();
        assert_eq!(got, ["sent", "sent too"]);
    }

    /// Stands for a host whose `log` raised: uniffi panics on the library's side.
    struct Raises;

    impl Logger for Raises {
        fn log(&self, _record: LogRecord) {
            panic!("the host's logger raised");
        }
    }

    #[test]
    fn a_logger_that_fails_loses_the_record_not_the_call() {
        with_logger(Arc::new(Raises), LogLevel::Debug, |_| {
            tracing::debug!(target: "storycad_client::client", "lost");
        });
    }
}
