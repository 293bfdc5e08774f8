//! Where rendered messages go: each channel is one implementation of
//! `Deliver`, registered once in `Channels` (built from configuration). A
//! channel takes the message in the form it needs (`templates::Rendered`
//! carries each form) and says what happened: `Delivered::Inbox` (kept by
//! o2flow, written with the outbox row's completion in one transaction) or
//! `Delivered::Sent` (taken by an outside system), or a `DeliveryError`
//! that is `Transient` (retried with the same key) or `Permanent`.
//!
//! Adding a channel: a variant of `dsl::Channel` (its name in workflow
//! files), a file here implementing `Deliver`, and its line in
//! `Channels::new`. The runtime does not change.

pub mod inbox;
pub mod webhook;

use std::collections::HashMap;

use futures::future::BoxFuture;

use crate::domain::Party;
use crate::dsl::Channel;
use crate::store::Store;
use crate::templates::Rendered;

/// Why a delivery failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// Worth retrying with the same key: a timeout, a 5xx, a 429.
    #[error("{0}")]
    Transient(String),
    /// Retrying cannot help: a 4xx, a channel that is not configured.
    #[error("{0}")]
    Permanent(String),
}

/// One message to deliver.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    /// The effect key: passed on to the receiver (`Idempotency-Key`).
    pub key: &'a str,
    pub tenant_id: &'a str,
    pub instance_id: &'a str,
    pub to: &'a Party,
    pub template: &'a str,
    pub purpose: Option<&'a str>,
    pub message: &'a Rendered,
    /// How many times delivery was tried before.
    pub attempts: i32,
}

/// What a channel did with a message.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivered {
    /// Kept by o2flow: the web inbox row to write.
    Inbox {
        party_id: String,
        template: String,
        title: String,
        body: String,
    },
    /// Taken by an outside system; `detail` goes into the history.
    Sent { detail: serde_json::Value },
}

/// A channel.
pub trait Deliver: Send + Sync {
    fn deliver<'a>(
        &'a self,
        message: &'a Outgoing<'a>,
    ) -> BoxFuture<'a, Result<Delivered, DeliveryError>>;
}

/// The channels of this process, by name.
pub struct Channels {
    by_name: HashMap<Channel, Box<dyn Deliver>>,
}

impl Channels {
    /// Every channel, configured: the inbox, and the webhook (each
    /// tenant's or branch's `webhook` endpoint, else `--webhook-url`).
    pub fn new(
        store: Store,
        http: reqwest::Client,
        webhook: Option<webhook::WebhookConfig>,
    ) -> Channels {
        let mut by_name: HashMap<Channel, Box<dyn Deliver>> = HashMap::new();
        by_name.insert(Channel::Inbox, Box::new(inbox::Inbox));
        by_name.insert(
            Channel::Webhook,
            Box::new(webhook::Webhook::new(store, http, webhook)),
        );
        Channels { by_name }
    }

    /// The channel named `which`.
    ///
    /// # Errors
    /// `Permanent` when this process has no such channel.
    pub fn get(&self, which: Channel) -> Result<&dyn Deliver, DeliveryError> {
        self.by_name.get(&which).map(AsRef::as_ref).ok_or_else(|| {
            DeliveryError::Permanent(format!("the {} channel is not available", which.as_str()))
        })
    }
}
