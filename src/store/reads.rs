//! The read side for `http`: every query an API answer needs, scoped to
//! the caller's tenant, in as few queries as the answer allows (an
//! instance's payments and all their refunds in two queries, not one per
//! payment). `http` reads through here and changes through `Runtime`,
//! never through the store itself.

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};

use super::entities::refunds;
use super::{
    DefinitionRow, HistoryRow, InboxRow, IncidentRow, InstanceFilter, InstanceRow, MerchantRow,
    PaymentRow, RefundRow, Result, ScheduleRow, Store, TimerRow,
};

/// Tenant-scoped reads.
#[derive(Clone)]
pub struct Reads {
    store: Store,
    /// Valid API keys by hash, for `KEY_TTL`: a key is read once, not on
    /// every request. An unknown key is never cached, so a new one works
    /// at once.
    keys: std::sync::Arc<crate::cache::TtlCache<(String, String)>>,
}

/// How long a valid API key is trusted without reading it again.
const KEY_TTL: std::time::Duration = std::time::Duration::from_secs(10);

/// A payment with its refunds.
pub type PaymentWithRefunds = (PaymentRow, Vec<RefundRow>);

impl Reads {
    pub fn new(store: Store) -> Reads {
        Reads {
            store,
            keys: std::sync::Arc::new(crate::cache::TtlCache::new(KEY_TTL)),
        }
    }

    /// `(tenant, role)` of an API key.
    ///
    /// # Errors
    /// A database error.
    pub async fn authenticate(&self, key: &str) -> Result<Option<(String, String)>> {
        let hash = super::sha256_hex(key.as_bytes());
        if let Some(found) = self.keys.get(&hash) {
            return Ok(Some(found));
        }
        let found = self.store.authenticate(key).await?;
        if let Some(found) = &found {
            self.keys.put(&hash, found.clone());
        }
        Ok(found)
    }

    /// # Errors
    /// A database error.
    pub async fn instance(&self, tenant_id: &str, id: &str) -> Result<Option<InstanceRow>> {
        self.store.instance(tenant_id, id).await
    }

    /// An instance with its armed timers.
    ///
    /// # Errors
    /// A database error.
    pub async fn instance_with_timers(
        &self,
        tenant_id: &str,
        id: &str,
    ) -> Result<Option<(InstanceRow, Vec<TimerRow>)>> {
        let Some(row) = self.store.instance(tenant_id, id).await? else {
            return Ok(None);
        };
        let timers = self.store.timers_of(&row.id).await?;
        Ok(Some((row, timers)))
    }

    /// # Errors
    /// A database error.
    pub async fn instances(
        &self,
        tenant_id: &str,
        filter: &InstanceFilter,
    ) -> Result<Vec<InstanceRow>> {
        self.store.list_instances(tenant_id, filter).await
    }

    /// An instance's history from `from_seq`; none for another tenant's instance.
    ///
    /// # Errors
    /// A database error.
    pub async fn history(
        &self,
        tenant_id: &str,
        id: &str,
        from_seq: i64,
        limit: u64,
    ) -> Result<Option<Vec<HistoryRow>>> {
        if self.store.instance(tenant_id, id).await?.is_none() {
            return Ok(None);
        }
        Ok(Some(self.store.history(id, from_seq, limit).await?))
    }

    /// # Errors
    /// A database error.
    pub async fn definitions(&self, tenant_id: &str) -> Result<Vec<DefinitionRow>> {
        self.store.definitions(tenant_id).await
    }

    /// The schedules of one workflow.
    ///
    /// # Errors
    /// A database error.
    pub async fn schedules_of(&self, tenant_id: &str, workflow: &str) -> Result<Vec<ScheduleRow>> {
        Ok(self
            .store
            .schedules(tenant_id)
            .await?
            .into_iter()
            .filter(|s| s.workflow == workflow)
            .collect())
    }

    /// # Errors
    /// A database error.
    pub async fn incidents(
        &self,
        tenant_id: &str,
        status: Option<&str>,
        limit: u64,
    ) -> Result<Vec<IncidentRow>> {
        self.store.incidents(tenant_id, status, limit).await
    }

    /// # Errors
    /// A database error.
    pub async fn inbox(
        &self,
        tenant_id: &str,
        party_id: &str,
        limit: u64,
    ) -> Result<Vec<InboxRow>> {
        self.store.inbox(tenant_id, party_id, limit).await
    }

    /// # Errors
    /// A database error.
    pub async fn merchants(&self, tenant_id: &str) -> Result<Vec<MerchantRow>> {
        self.store.merchants(Some(tenant_id)).await
    }

    /// An instance's payments with their refunds, in two queries; none for
    /// another tenant's instance.
    ///
    /// # Errors
    /// A database error.
    pub async fn payments_of(
        &self,
        tenant_id: &str,
        id: &str,
    ) -> Result<Option<Vec<PaymentWithRefunds>>> {
        if self.store.instance(tenant_id, id).await?.is_none() {
            return Ok(None);
        }
        let payments = self.store.payments_of(id).await?;
        let mut refunds = refunds::Entity::find()
            .filter(refunds::Column::InstanceId.eq(id))
            .order_by_asc(refunds::Column::CreatedAtMs)
            .order_by_asc(refunds::Column::OutRefundNo)
            .all(&self.store.db)
            .await?;
        Ok(Some(
            payments
                .into_iter()
                .map(|payment| {
                    let (of, rest): (Vec<RefundRow>, Vec<RefundRow>) = refunds
                        .drain(..)
                        .partition(|r| r.out_trade_no == payment.out_trade_no);
                    refunds = rest;
                    (payment, of)
                })
                .collect(),
        ))
    }
}
