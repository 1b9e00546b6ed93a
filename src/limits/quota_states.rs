//! Where the keys of a list page stand with their quotas: one Redis round trip for the page
//! (a pipeline), not one per key.

use super::{Backend, Limiter, QuotaState};
use crate::keys::StoreError;
use crate::keys::limits::Quota;
use chrono::Utc;

impl Limiter {
    /// [`Limiter::quota_state`] of each (key id, its own quota), in order.
    pub async fn quota_states(
        &self,
        keys: &[(&str, Option<&Quota>)],
    ) -> Result<Vec<Option<QuotaState>>, StoreError> {
        let quotas: Vec<Option<(&Quota, i64, chrono::DateTime<Utc>)>> = keys
            .iter()
            .map(|(_, own)| {
                own.or(self.settings.defaults.quota.as_ref()).map(|quota| {
                    let period = self.periods.now(quota.period);
                    (quota, period.start, period.end())
                })
            })
            .collect();
        let periods: Vec<(&str, i64)> = keys
            .iter()
            .zip(&quotas)
            .filter_map(|((id, _), quota)| quota.map(|(_, start, _)| (*id, start)))
            .collect();
        let counted = match &self.backend {
            Backend::Memory(memory) => periods
                .iter()
                .map(|(id, start)| memory.used(id, *start))
                .collect(),
            Backend::Redis { store, .. } => store.quota_used_many(&periods).await?,
        };
        let mut counted = counted.into_iter();
        Ok(quotas
            .into_iter()
            .map(|quota| {
                let (quota, _, resets_at) = quota?;
                let used = counted.next().unwrap_or(0);
                Some(QuotaState {
                    used,
                    remaining: quota.requests.saturating_sub(used),
                    resets_at,
                })
            })
            .collect())
    }
}
