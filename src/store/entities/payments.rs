//! @generated in the shape of sea-orm-codegen; do not edit by hand.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "payments")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false, column_type = "Text")]
    pub out_trade_no: String,
    #[sea_orm(column_type = "Text")]
    pub tenant_id: String,
    #[sea_orm(column_type = "Text")]
    pub branch_id: String,
    #[sea_orm(column_type = "Text")]
    pub instance_id: String,
    #[sea_orm(column_type = "Text")]
    pub effect_key: String,
    #[sea_orm(column_type = "Text")]
    pub name: String,
    pub merchant_id: Option<i64>,
    #[sea_orm(column_type = "Text")]
    pub scene: String,
    #[sea_orm(column_type = "Text")]
    pub description: String,
    #[sea_orm(column_type = "Text")]
    pub payer_id: String,
    #[sea_orm(column_type = "Text", nullable)]
    pub payer_openid: Option<String>,
    pub amount_fen: i64,
    #[sea_orm(column_type = "Text", nullable)]
    pub bill: Option<String>,
    pub state: crate::store::PaymentState,
    #[sea_orm(column_type = "Text", nullable)]
    pub prepay_id: Option<String>,
    #[sea_orm(column_type = "Text", nullable)]
    pub code_url: Option<String>,
    #[sea_orm(column_type = "Text", nullable)]
    pub transaction_id: Option<String>,
    pub refunded_fen: i64,
    pub late: bool,
    #[sea_orm(column_type = "Text", nullable)]
    pub last_error: Option<String>,
    pub expires_at_ms: i64,
    pub next_check_at_ms: i64,
    pub locked_until_ms: Option<i64>,
    pub paid_at_ms: Option<i64>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    #[sea_orm(column_type = "Text", nullable)]
    pub mix_trade_no: Option<String>,
    #[sea_orm(column_type = "Text", nullable)]
    pub mix_pay_status: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
