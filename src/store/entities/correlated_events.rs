//! @generated in the shape of sea-orm-codegen; do not edit by hand.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "correlated_events")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub tenant_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub message_id: String,
    #[sea_orm(column_type = "Text")]
    pub event_type: String,
    #[sea_orm(column_type = "Text")]
    pub correlation_key: String,
    #[sea_orm(column_type = "Text")]
    pub payload: String,
    pub status: crate::store::KeptEventStatus,
    pub expires_at_ms: i64,
    pub created_at_ms: i64,
    pub delivered_at_ms: Option<i64>,
    #[sea_orm(column_type = "Text", nullable)]
    pub delivered_to: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
