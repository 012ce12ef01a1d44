//! A server on its own thread and tokio runtime, so it outlives any one test's runtime and can
//! be shared by every test of a binary (or run under a synchronous `main`).

use std::{
    future::Future,
    net::{SocketAddr, TcpListener as StdListener},
    sync::Arc,
    thread::JoinHandle,
    time::Duration,
};

use tokio::{net::TcpListener, sync::oneshot};

use crate::http::{self, After, Conn, Request};

/// The thread serving one listener; stops (cancelling every connection) when dropped.
pub(crate) struct Background {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Background {
    /// Binds 127.0.0.1:`port` and serves each request with `handle`.
    pub fn start<S, F, Fut>(
        port: u16,
        name: &str,
        state: Arc<S>,
        handle: F,
    ) -> std::io::Result<Self>
    where
        S: Send + Sync + 'static,
        F: Fn(Arc<S>, Request, Conn) -> Fut + Send + Sync + Copy + 'static,
        Fut: Future<Output = (Conn, After)> + Send + 'static,
    {
        let listener = StdListener::bind(("127.0.0.1", port))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                rt.block_on(async move {
                    let Ok(listener) = TcpListener::from_std(listener) else {
                        return;
                    };
                    tokio::spawn(async move {
                        loop {
                            let Ok((stream, _)) = listener.accept().await else {
                                tokio::time::sleep(Duration::from_millis(10)).await;
                                continue;
                            };
                            let state = state.clone();
                            tokio::spawn(async move {
                                http::serve_conn(stream, |req, conn| {
                                    handle(state.clone(), req, conn)
                                })
                                .await;
                            });
                        }
                    });
                    let _ = stopped.await;
                });
                // Cancels every connection task, including hanging ones.
                rt.shutdown_timeout(Duration::from_secs(1));
            })?;
        Ok(Background {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop();
    }
}
