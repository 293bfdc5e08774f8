pub mod domain;
pub mod dsl;
pub mod engine;
pub mod templates;
