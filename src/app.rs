//! The one start-up path: `serve` and the in-process test app both build
//! the application here, serve HTTP and run the same background jobs
//! (`runtime::JOBS`), stopping them when the server stops.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use actix_web::dev::{Server, ServerHandle};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::runtime::{Options, Runtime};

/// How often the background loops look for due work when no commit woke them.
pub const TICK: std::time::Duration = std::time::Duration::from_millis(500);

/// When the background jobs (`runtime::JOBS`) run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Background {
    /// In loops, on every commit and at least every `tick` (`serve`).
    Loops { tick: std::time::Duration },
    /// Only when asked: `Runtime::settle` or a clock advance runs the same
    /// jobs, one pass after another, so a test sees each step happen.
    OnDemand,
}

/// The application: the runtime, served over HTTP, with its background jobs.
pub struct App {
    runtime: Arc<Runtime>,
    sizing: crate::http::Sizing,
}

/// A started application.
pub struct Running {
    pub address: SocketAddr,
    server: Server,
    shutdown: watch::Sender<bool>,
    jobs: Vec<JoinHandle<()>>,
}

impl App {
    pub fn new(options: Options) -> App {
        App {
            runtime: Arc::new(Runtime::new(options)),
            sizing: crate::http::Sizing::default(),
        }
    }

    /// HTTP workers and the write requests admitted at once.
    #[must_use]
    pub fn sized(self, sizing: crate::http::Sizing) -> App {
        App { sizing, ..self }
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// Serves HTTP on `listener` and starts the background jobs.
    ///
    /// # Errors
    /// The listener cannot be used.
    pub fn start(&self, listener: TcpListener, background: Background) -> std::io::Result<Running> {
        let address = listener.local_addr()?;
        let server = crate::http::server(self.runtime.clone(), listener, self.sizing)?;
        let (shutdown, stopped) = watch::channel(false);
        let jobs = match background {
            Background::Loops { tick } => self.runtime.spawn_jobs(tick, &stopped),
            Background::OnDemand => Vec::new(),
        };
        Ok(Running {
            address,
            server,
            shutdown,
            jobs,
        })
    }
}

impl Running {
    /// A handle that stops the server (and so the jobs).
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until the server is stopped (a signal, or a `handle().stop`),
    /// then stops the background jobs and waits for them.
    ///
    /// # Errors
    /// The server failed.
    pub async fn until_stopped(self) -> std::io::Result<()> {
        let served = self.server.await;
        let _ = self.shutdown.send(true);
        for job in self.jobs {
            let _ = job.await;
        }
        served
    }
}
