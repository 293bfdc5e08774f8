//! Step kinds' executors that live in files of their own: each file here
//! implements `runtime::Execute` for one effect of the core
//! (`engine::EffectKind`). The files are declared by the core's registry
//! (`o2flow_core::step_kind_modules!`), and the executor dispatch
//! (`runtime::effects`) is generated from its `effect_kinds!` list.

o2flow_core::step_kind_modules!(shell);
