//! Mermaid state diagrams of workflow definitions.

use chrono::Duration;

use super::def::WorkflowDef;

/// A Mermaid `stateDiagram-v2` of the definition: every state, every
/// transition labelled with its event (and guard) or timer, and the
/// outcome of each final state.
pub fn mermaid(def: &WorkflowDef) -> String {
    let mut out = String::from("stateDiagram-v2\n");
    out.push_str(&format!("    [*] --> {}\n", def.start));
    for (from, label, to) in def.edges() {
        out.push_str(&format!("    {from} --> {to}: {}\n", escape(&label)));
    }
    for (name, state) in &def.states {
        if let Some(outcome) = state.final_outcome {
            out.push_str(&format!("    {name} --> [*]: {}\n", outcome.as_str()));
        }
    }
    out
}

fn escape(label: &str) -> String {
    label.replace(':', "#58;").replace('"', "#quot;")
}

/// `7d`, `15m`, `1h30m`: a duration as authors write it.
pub fn human(duration: Duration) -> String {
    let mut seconds = duration.num_seconds();
    if seconds == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if seconds >= size {
            out.push_str(&format!("{}{unit}", seconds / size));
            seconds %= size;
        }
    }
    out
}
