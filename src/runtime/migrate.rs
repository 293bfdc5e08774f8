//! Moving running instances to another version of their workflow.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::json;

use super::{Error, Runtime};
use crate::dsl::WorkflowDef;
use crate::store::{self, from_ms, InstanceMove, InstanceRow, TimerRow};

/// `POST /api/v1/workflows/{name}/migrations`.
#[derive(Debug, Clone)]
pub struct MigrationRequest {
    pub from_version: i32,
    pub to_version: i32,
    /// Old state → new state; a state with the same name in both maps to itself.
    pub states: BTreeMap<String, String>,
    pub dry_run: bool,
}

/// What a migration does (or would do) to each active instance.
#[derive(Debug, Clone, Serialize)]
pub struct MigrationReport {
    pub workflow: String,
    pub from_version: i32,
    pub to_version: i32,
    pub dry_run: bool,
    pub applied: bool,
    pub instances: Vec<InstancePlan>,
}

#[derive(Debug, Clone, Serialize)]
pub struct InstancePlan {
    pub instance_id: String,
    pub from_state: String,
    pub to_state: Option<String>,
    /// Why the instance cannot move; the migration is refused if any has one.
    pub problem: Option<String>,
    pub data_added: Vec<String>,
    pub data_removed: Vec<String>,
    pub timers: Vec<TimerPlan>,
    /// Events the instance waits for before and after.
    pub waits_before: Vec<String>,
    pub waits_after: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TimerPlan {
    pub index: i32,
    pub due_at: String,
    /// Kept with its due time, or dropped (the new state has no such timer).
    pub kept: bool,
}

const ATTEMPTS: usize = 3;

impl Runtime {
    /// Plans and, unless `dry_run`, applies a migration of every active
    /// instance of `from_version` to `to_version`, all or none.
    ///
    /// # Errors
    /// Unknown versions, an invalid mapping, instances whose state has no
    /// mapping (`Unmigratable` with the report), or a store error.
    pub async fn migrate(
        &self,
        tenant_id: &str,
        workflow: &str,
        request: &MigrationRequest,
    ) -> Result<MigrationReport, Error> {
        if request.from_version == request.to_version {
            return Err(Error::InvalidMigration(
                "the source and target versions are the same".into(),
            ));
        }
        let rows = self.store.definitions(tenant_id).await?;
        let find = |version: i32| {
            rows.iter()
                .find(|r| r.name == workflow && r.version == version)
                .cloned()
                .ok_or_else(|| Error::VersionNotFound(workflow.to_owned(), version))
        };
        let (source_row, target_row) = (find(request.from_version)?, find(request.to_version)?);
        let source = self.definition(&source_row).await?;
        let target = self.definition(&target_row).await?;
        check_mapping(&source, &target, &request.states)?;
        for _ in 0..ATTEMPTS {
            let instances = self
                .store
                .active_instances_of(tenant_id, workflow, request.from_version)
                .await?;
            let mut plans = Vec::with_capacity(instances.len());
            let mut moves = Vec::with_capacity(instances.len());
            for instance in &instances {
                let timers = self.store.timers_of(&instance.id).await?;
                let (plan, change) = plan(
                    &source,
                    &target,
                    &request.states,
                    instance,
                    &timers,
                    request.to_version,
                );
                plans.push(plan);
                moves.extend(change);
            }
            let report = MigrationReport {
                workflow: workflow.to_owned(),
                from_version: request.from_version,
                to_version: request.to_version,
                dry_run: request.dry_run,
                applied: false,
                instances: plans,
            };
            if report.instances.iter().any(|p| p.problem.is_some()) {
                return if request.dry_run {
                    Ok(report)
                } else {
                    Err(Error::Unmigratable(Box::new(report)))
                };
            }
            if request.dry_run {
                return Ok(report);
            }
            match self
                .store
                .apply_migration(&target_row, &moves, self.now())
                .await
            {
                Ok(()) => {
                    tracing::info!(workflow.name = %workflow, "migrated {} instance(s) from version {} to {}", moves.len(), request.from_version, request.to_version);
                    self.wake();
                    return Ok(MigrationReport {
                        applied: true,
                        ..report
                    });
                }
                // An instance moved while we planned: plan again.
                Err(store::Error::Conflict) => continue,
                Err(error) => return Err(error.into()),
            }
        }
        Err(Error::Busy)
    }
}

fn check_mapping(
    source: &WorkflowDef,
    target: &WorkflowDef,
    states: &BTreeMap<String, String>,
) -> Result<(), Error> {
    for (from, to) in states {
        if !source.states.contains_key(from) {
            return Err(Error::InvalidMigration(format!(
                "the source version has no state `{from}`"
            )));
        }
        match target.states.get(to) {
            None => {
                return Err(Error::InvalidMigration(format!(
                    "the target version has no state `{to}`"
                )))
            }
            Some(state) if state.final_outcome.is_some() => {
                return Err(Error::InvalidMigration(format!(
                    "`{to}` is final: running instances can only be mapped to states that are not"
                )))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

fn plan(
    source: &WorkflowDef,
    target: &WorkflowDef,
    states: &BTreeMap<String, String>,
    instance: &InstanceRow,
    timers: &[TimerRow],
    to_version: i32,
) -> (InstancePlan, Option<InstanceMove>) {
    let waits = |def: &WorkflowDef, state: &str| -> Vec<String> {
        def.states
            .get(state)
            .map(|s| s.on.keys().cloned().collect())
            .unwrap_or_default()
    };
    let mapped = states.get(&instance.state).cloned().or_else(|| {
        target
            .states
            .get(&instance.state)
            .filter(|s| s.final_outcome.is_none())
            .map(|_| instance.state.clone())
    });
    let mut data: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&instance.data).unwrap_or_default();
    let data_removed: Vec<String> = data
        .keys()
        .filter(|k| !target.data.contains_key(*k))
        .cloned()
        .collect();
    let data_added: Vec<String> = target
        .data
        .keys()
        .filter(|k| !data.contains_key(*k))
        .cloned()
        .collect();
    let mut timer_plans = Vec::new();
    let mut drop_timers = Vec::new();
    for timer in timers {
        let kept = mapped
            .as_ref()
            .and_then(|m| target.states.get(m))
            .is_some_and(|s| usize::try_from(timer.timer_index).is_ok_and(|i| i < s.timers.len()));
        if !kept {
            drop_timers.push(timer.id);
        }
        timer_plans.push(TimerPlan {
            index: timer.timer_index,
            due_at: from_ms(timer.due_at_ms).to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            kept,
        });
    }
    let plan = InstancePlan {
        instance_id: instance.id.clone(),
        from_state: instance.state.clone(),
        to_state: mapped.clone(),
        problem: mapped.is_none().then(|| {
            format!(
                "state `{}` has no counterpart in version {to_version}: map it in `states`",
                instance.state
            )
        }),
        data_added: data_added.clone(),
        data_removed: data_removed.clone(),
        timers: timer_plans,
        waits_before: waits(source, &instance.state),
        waits_after: mapped
            .as_deref()
            .map(|m| waits(target, m))
            .unwrap_or_default(),
    };
    let change = mapped.map(|state| {
        for name in &data_removed {
            data.remove(name);
        }
        for name in &data_added {
            let field = &target.data[name];
            let value = field
                .default
                .as_ref()
                .and_then(|d| crate::dsl::check_value(field, d).ok())
                .unwrap_or(serde_json::Value::Null);
            data.insert(name.clone(), value);
        }
        InstanceMove {
            instance_id: instance.id.clone(),
            revision: instance.revision,
            detail: json!({"from_version": instance.version, "to_version": to_version, "from_state": instance.state, "to_state": state, "timers_dropped": drop_timers.len()}),
            state,
            data: serde_json::Value::Object(data),
            drop_timers,
        }
    });
    (plan, change)
}
