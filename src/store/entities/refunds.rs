//! @generated in the shape of sea-orm-codegen; do not edit by hand.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "refunds")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false, column_type = "Text")]
    pub out_refund_no: String,
    #[sea_orm(column_type = "Text")]
    pub tenant_id: String,
    #[sea_orm(column_type = "Text")]
    pub instance_id: String,
    #[sea_orm(column_type = "Text")]
    pub out_trade_no: String,
    #[sea_orm(column_type = "Text")]
    pub effect_key: String,
    pub amount_fen: i64,
    #[sea_orm(column_type = "Text", nullable)]
    pub reason: Option<String>,
    pub status: crate::store::RefundStatus,
    #[sea_orm(column_type = "Text", nullable)]
    pub refund_id: Option<String>,
    pub automatic: bool,
    #[sea_orm(column_type = "Text", nullable)]
    pub last_error: Option<String>,
    pub next_check_at_ms: i64,
    pub locked_until_ms: Option<i64>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    #[sea_orm(column_type = "Text", nullable)]
    pub insurance: Option<String>,
    pub insurance_notified_at_ms: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
