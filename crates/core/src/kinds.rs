//! The registry of step kinds and effect kinds: one line each. Every enum
//! and dispatch over them is generated from these lists where it is used
//! (`dsl::ActionSpec` and `dsl::Action` in the DSL, the checks in
//! `dsl::validate`, `engine::actions::run`, `engine::EffectKind`, and the
//! shell's executor dispatch, `o2flow::runtime::effects`), so adding a kind
//! adds a line here and nowhere else, and leaving out a piece (a check, a
//! run function, an executor) does not compile.
//!
//! A step kind: `name => Variant(Spec, Action) check path::to::check, run
//! path::to::run, "doc"`. The check has the signature
//! `fn(&mut Checker, &Spec, &YamlPath) -> Option<Action>`, the run
//! `fn(&Action, &mut ActionContext) -> Result<(), engine::Error>`; the
//! action implements `dsl::ActionExprs`.

/// Calls `$then! { … }` with the list of step kinds.
#[macro_export]
#[doc(hidden)]
macro_rules! step_kinds {
    ($then:ident) => {
        $then! {
            set => Set(
                ::indexmap::IndexMap<String, $crate::dsl::ExprText>,
                $crate::dsl::SetAction
            ) check $crate::dsl::validate::kind_set, run $crate::engine::actions::set::run,
            "Sets instance data fields to the values of CEL expressions: `set: { reminders_sent: \"data.reminders_sent + 1\" }`.";
            send => Send($crate::dsl::SendSpec, $crate::dsl::SendAction)
                check $crate::dsl::validate::kind_send, run $crate::engine::actions::send::run,
            "Sends a message rendered from a template to a party.";
            start => Start($crate::dsl::StartSpec, $crate::dsl::StartAction)
                check $crate::dsl::validate::kind_start, run $crate::engine::actions::start::run,
            "Starts a child instance of another workflow; this instance receives `child.completed` (`{child_id, workflow, outcome, state, data}`) when it ends.";
            pay => Pay($crate::dsl::PaySpec, $crate::dsl::PayAction)
                check $crate::dsl::validate::kind_pay, run $crate::engine::actions::pay::run,
            "Asks a party to pay: creates a WeChat Pay order (or a sandbox one), then the flow receives `payment.succeeded`, `payment.failed` or `payment.expired`.";
            refund => Refund($crate::dsl::RefundSpec, $crate::dsl::RefundAction)
                check $crate::dsl::validate::kind_refund, run $crate::engine::actions::pay::run_refund,
            "Refunds a payment of this instance, in full or in part; the flow receives `refund.succeeded`, `refund.failed` or `refund.abnormal`.";
            call => Call($crate::dsl::call::CallSpec, $crate::dsl::call::CallAction)
                check $crate::dsl::call::check, run $crate::engine::actions::call::run,
            "Calls the hospital's or hotel's own system (a named endpoint) with a signed JSON body; named fields of the answer are written into `data` and the flow receives `call.succeeded`.";
        }
    };
}

/// Declares the files of the step kinds that have files of their own, in
/// the layer named: `dsl` (`dsl/<kind>.rs`), `engine`
/// (`engine/actions/<kind>.rs`) and `shell` (the application's
/// `steps/<kind>.rs`). Each layer's `mod.rs` calls it, so a new kind's
/// files are declared here, beside its registry lines, and nowhere else.
#[macro_export]
#[doc(hidden)]
macro_rules! step_kind_modules {
    (dsl) => {
        pub mod call;
    };
    (engine) => {
        pub mod call;
        pub mod pay;
        pub mod send;
        pub mod set;
        pub mod start;
    };
    (shell) => {
        pub mod call;
    };
}

/// Calls `$then! { … }` with the list of effect kinds: `tag => Variant(Effect)`.
/// The tag is what the outbox stores.
#[macro_export]
macro_rules! effect_kinds {
    ($then:ident) => {
        $then! {
            send => Send($crate::engine::SendEffect),
            start_child => StartChild($crate::engine::StartChildEffect),
            notify_parent => NotifyParent($crate::engine::NotifyParentEffect),
            pay => Pay($crate::engine::PayEffect),
            refund => Refund($crate::engine::RefundEffect),
            call => Call($crate::engine::actions::call::CallEffect),
        }
    };
}
