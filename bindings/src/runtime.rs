//! The library's own tokio runtime, and running a call's future on it.

use std::{future::Future, sync::LazyLock};

use tokio::runtime::Runtime;

use crate::error::CollaboratorError;

/// Created on first use; lives as long as the process. Two worker threads: the work is I/O and
/// small JSON parses, and the host app has its own threads to run.
static RUNTIME: LazyLock<Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("storycad-ffi")
        .enable_all()
        .build()
        // Only fails when the OS refuses threads or an epoll fd; nothing can work then, and
        // uniffi turns the panic into an exception in the host.
        .expect("storycad-ffi: cannot start the tokio runtime")
});

pub(crate) fn runtime() -> &'static Runtime {
    &RUNTIME
}

/// Runs `fut` on the library's runtime and waits for it without blocking the calling thread.
///
/// When the host drops the call (a cancelled asyncio task, a disposed C# future), the spawned
/// task is aborted, so nothing keeps running (or holds a connection) for nobody.
pub(crate) async fn on_runtime<F, T>(fut: F) -> Result<T, CollaboratorError>
where
    F: Future<Output = Result<T, CollaboratorError>> + Send + 'static,
    T: Send + 'static,
{
    let mut task = runtime().spawn(fut);
    let _abort = AbortOnDrop(task.abort_handle());
    match (&mut task).await {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(CollaboratorError::cancelled(None)),
    }
}

/// Aborts the task when dropped (after completion, aborting is a no-op).
pub(crate) struct AbortOnDrop(pub(crate) tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
