//! @generated in the shape of sea-orm-codegen; do not edit by hand.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "merchants")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = true)]
    pub id: i64,
    #[sea_orm(column_type = "Text")]
    pub tenant_id: String,
    #[sea_orm(column_type = "Text")]
    pub branch_id: String,
    #[sea_orm(column_type = "Text")]
    pub mchid: String,
    #[sea_orm(column_type = "Text")]
    pub appid: String,
    #[sea_orm(column_type = "Text")]
    pub serial_no: String,
    #[sea_orm(column_type = "Text")]
    pub private_key: String,
    #[sea_orm(column_type = "Text")]
    pub api_v3_key: String,
    #[sea_orm(column_type = "Text", nullable)]
    pub public_key: Option<String>,
    #[sea_orm(column_type = "Text", nullable)]
    pub public_key_id: Option<String>,
    pub platform_certificates: bool,
    #[sea_orm(column_type = "Text", nullable)]
    pub notify_url: Option<String>,
    #[sea_orm(column_type = "Text")]
    pub base_url: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
