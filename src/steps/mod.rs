//! Step kinds' executors that live in a folder of their own: each file here
//! implements `runtime::Execute` for one effect of the core
//! (`engine::EffectKind`) and is listed once in `runtime::effects`'s
//! `dispatch_effects!`.

pub mod call;
