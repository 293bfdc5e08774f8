//! o2flow: hospital and hotel O2O flows written in YAML, run as durable
//! state machines.
//!
//! The path of an event: `http` (or the timer loop in `runtime`) turns a
//! request into an `engine::Event`; `runtime` loads the instance from
//! `store`, asks the pure `engine::step` for a `Transition`, and commits
//! the new state, history, timers and outbox rows in one transaction; after
//! commit `runtime` executes the outbox effects (a `send` renders a `tera`
//! template into the web inbox). `dsl` parses and checks workflow files.
//! See ARCHITECTURE.md for the invariants.

pub mod app;
pub mod bench;
pub mod cache;
pub mod channels;
pub mod cli;
pub mod endpoints;
pub mod http;
pub mod payments;
pub mod runtime;
pub mod steps;
pub mod store;
pub mod templates;

/// The pure core, in its own crate (`crates/core`): no IO below this line.
pub use o2flow_core::{clock, domain, dsl, engine};
/// The WeChat clients and crypto, in their own crate (`crates/wechat`).
pub use o2flow_wechat as wechat;
