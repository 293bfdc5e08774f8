//! The harness's stand-in for the hospital's own system: the `webhook`
//! channel of the o2flow under test posts every message here. Each flow
//! registers its patient before it starts and is told when each of its
//! messages arrives; a message whose key was seen before is a duplicate.

use std::collections::{HashMap, HashSet};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use actix_web::{web, App, HttpResponse, HttpServer};
use serde::Deserialize;
use tokio::sync::mpsc;

/// One message as it arrived: its template and when.
pub type Arrival = (String, Instant);

#[derive(Default)]
pub struct Sink {
    waiting: Mutex<HashMap<String, mpsc::UnboundedSender<Arrival>>>,
    keys: Mutex<HashSet<String>>,
    pub duplicates: AtomicU64,
    pub unexpected: AtomicU64,
}

#[derive(Deserialize)]
struct Posted {
    key: String,
    to: String,
    template: String,
}

impl Sink {
    /// Serves the sink on `listener`; returns its URL.
    ///
    /// # Errors
    /// The listener cannot be used.
    pub fn serve(self: &Arc<Self>, listener: TcpListener) -> std::io::Result<String> {
        let url = format!("http://{}/hook", listener.local_addr()?);
        let sink = web::Data::from(self.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(sink.clone())
                .app_data(web::JsonConfig::default().limit(64 * 1024))
                .route("/hook", web::post().to(receive))
        })
        .workers(1)
        .listen(listener)?
        .run();
        tokio::spawn(server);
        Ok(url)
    }

    /// Messages to `party` go to `sender` until `forget`.
    pub fn expect(&self, party: &str, sender: mpsc::UnboundedSender<Arrival>) {
        if let Ok(mut waiting) = self.waiting.lock() {
            waiting.insert(party.to_owned(), sender);
        }
    }

    pub fn forget(&self, party: &str) {
        if let Ok(mut waiting) = self.waiting.lock() {
            waiting.remove(party);
        }
    }

    fn arrived(&self, posted: Posted) {
        let at = Instant::now();
        let first = self
            .keys
            .lock()
            .map(|mut keys| keys.insert(posted.key))
            .unwrap_or(true);
        if !first {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let sender = self
            .waiting
            .lock()
            .ok()
            .and_then(|waiting| waiting.get(&posted.to).cloned());
        match sender {
            Some(sender) if sender.send((posted.template, at)).is_ok() => {}
            _ => {
                self.unexpected.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

async fn receive(sink: web::Data<Sink>, posted: web::Json<Posted>) -> HttpResponse {
    sink.arrived(posted.into_inner());
    HttpResponse::Ok().finish()
}
