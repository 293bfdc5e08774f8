//! Database migrations for o2flow, shared by SQLite and PostgreSQL.
//! One file per change, each with `down`.

pub use sea_orm_migration::prelude::*;

mod m20261123_000001_create_core_tables;
mod m20261123_000002_add_claim_leases;
mod m20261123_000003_create_correlated_events;
mod m20261123_000004_create_incidents;
mod m20261123_000005_create_schedules;
mod m20261123_000006_add_instance_parent;
mod m20261123_000007_create_payments;
mod m20261201_000008_add_medical_insurance;
mod m20261202_000009_create_message_templates;
mod m20261202_000010_create_endpoints;
mod m20261202_000011_add_claim_owner;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261123_000001_create_core_tables::Migration),
            Box::new(m20261123_000002_add_claim_leases::Migration),
            Box::new(m20261123_000003_create_correlated_events::Migration),
            Box::new(m20261123_000004_create_incidents::Migration),
            Box::new(m20261123_000005_create_schedules::Migration),
            Box::new(m20261123_000006_add_instance_parent::Migration),
            Box::new(m20261123_000007_create_payments::Migration),
            Box::new(m20261201_000008_add_medical_insurance::Migration),
            Box::new(m20261202_000009_create_message_templates::Migration),
            Box::new(m20261202_000010_create_endpoints::Migration),
            Box::new(m20261202_000011_add_claim_owner::Migration),
        ]
    }
}
