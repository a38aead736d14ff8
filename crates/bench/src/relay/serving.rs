//! The part every relay shares: a loopback listener, the `mf-relay` thread and its
//! single-threaded runtime, one task per accepted connection, and stopping (which drops
//! the runtime, so every connection task and its sockets go with it). What a connection
//! does is the caller's.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// The thread name of every relay: the benchmark counts its CPU as a peer's, not ours.
pub(crate) const THREAD_NAME: &str = "mf-relay";

/// A listener served on its own thread until dropped.
pub(super) struct Serving {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Serving {
    /// Listens on `127.0.0.1:0` and runs `on_conn` for every accepted connection.
    pub(super) fn start<F, Fut>(on_conn: F) -> io::Result<Serving>
    where
        F: Fn(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        // Bound here, not on the thread: the caller learns the address (or why there is
        // none) before `start` returns.
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(THREAD_NAME.into())
            .spawn(move || {
                rt.block_on(async move {
                    let listener = match TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(_) => return,
                    };
                    let accept = async {
                        loop {
                            match listener.accept().await {
                                Ok((conn, _)) => {
                                    tokio::spawn(on_conn(conn));
                                }
                                // Out of file descriptors, say: wait, the peers will close.
                                Err(_) => {
                                    tokio::time::sleep(std::time::Duration::from_millis(10)).await
                                }
                            }
                        }
                    };
                    tokio::select! {
                        _ = stopped => {}
                        _ = accept => {}
                    }
                });
                // Dropping the runtime drops every connection task and closes its sockets.
                drop(rt);
            })?;
        Ok(Serving {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub(super) fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
