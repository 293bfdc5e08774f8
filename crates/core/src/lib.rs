//! o2flow's pure core: what a flow is and how it moves, with no IO.
//!
//! Layers, bottom up: `domain` (money in fen, parties, durations, bills,
//! the names of the events o2flow raises), `dsl` (YAML workflow files,
//! checked into a `WorkflowDef`), `engine` (a pure function of definition,
//! instance, event and `now` that returns a transition with its effects as
//! data) and `clock` (where the shell reads `now`).
//!
//! Architecture invariant: this crate depends on no runtime, database or
//! HTTP crate (no tokio, sea-orm, actix, reqwest); the workspace enforces
//! it, since nothing here can name them.

#[macro_use]
mod kinds;

pub mod clock;
pub mod domain;
pub mod dsl;
pub mod engine;
