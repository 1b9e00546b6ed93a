//! `kbgate migrate`: copies every key (id, secret hashes, settings and usage), the admin tokens
//! and the audit trail from one store to another, so moving from the embedded store to Redis
//! (or back) reissues no secret and the trail still verifies.

use crate::app::open_store;
use crate::keys::StoreConfig;

/// Copies all keys; a key already in the destination is replaced by the source's version.
/// Returns how many keys were copied. Stop the gateways using the embedded store first: its
/// file is locked by the process that has it open.
pub async fn migrate(from: &StoreConfig, to: &StoreConfig) -> Result<usize, String> {
    let source = open_store(from).map_err(|e| format!("source store: {e}"))?;
    let destination = open_store(to).map_err(|e| format!("destination store: {e}"))?;
    let records = source
        .list()
        .await
        .map_err(|e| format!("source store: {e}"))?;
    // On the store trait, not the key service: the service's create issues new secrets, and a
    // migration copies each record as it is, hashes and usage included (`KeyStore::import`).
    for record in &records {
        destination
            .import(record)
            .await
            .map_err(|e| format!("destination store, key {}: {e}", record.id))?;
    }
    let tokens = source
        .admin_tokens()
        .await
        .map_err(|e| format!("source store: {e}"))?;
    let chain = source
        .audit_chain()
        .await
        .map_err(|e| format!("source store: {e}"))?;
    destination
        .import_audit(&tokens, &chain)
        .await
        .map_err(|e| format!("destination store, admin tokens and audit trail: {e}"))?;
    Ok(records.len())
}
