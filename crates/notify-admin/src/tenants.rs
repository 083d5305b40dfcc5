//! Tenants and their API keys and settings.

use anyhow::{anyhow, bail};
use store::Store;

use crate::Command;

/// The commands on tenants and keys; the others are `run`'s.
pub async fn administer(store: &Store, command: Command) -> anyhow::Result<()> {
    match command {
        Command::CreateTenant { name } => {
            let tenant = store.create_tenant(&name).await?;
            println!("tenant_id={}", tenant.tenant_id);
            println!("key_id={}", tenant.key_id);
            println!("api_key={}", tenant.api_key);
        }
        Command::CreateKey { tenant_id } => {
            let (key_id, key) =
                store.create_api_key(tenant_id).await?.ok_or_else(|| anyhow!("no tenant {tenant_id}"))?;
            println!("key_id={key_id}");
            println!("api_key={key}");
        }
        Command::ListKeys { tenant_id } => {
            for k in store.list_api_keys(tenant_id).await? {
                let state = match k.revoked_at {
                    Some(at) => format!("revoked {at}"),
                    None => "active".into(),
                };
                let used = k.last_used_at.map_or("never used".into(), |at| format!("last used {at}"));
                println!("{} {}... created {} {used} {state}", k.id, k.display_prefix, k.created_at);
            }
        }
        Command::RevokeKey { key_id } => {
            if !store.revoke_api_key(key_id).await? {
                bail!("no active key {key_id}");
            }
            println!("revoked {key_id}");
        }
        Command::SetRateLimit { tenant_id, per_second, burst, default: _ } => {
            let limit = per_second.zip(burst);
            if !store.set_rate_limit(tenant_id, limit).await? {
                bail!("no tenant {tenant_id}");
            }
            match limit {
                Some((p, b)) => println!("tenant {tenant_id}: {p} per second, burst {b}"),
                None => println!("tenant {tenant_id}: the configured default rate"),
            }
        }
        Command::SetTenant { tenant_id, default_locale, adhoc_types, http_action_urls } => {
            let locale = match default_locale {
                Some(tag) => Some(domain::locale::normalize(&tag).ok_or_else(|| anyhow!("`{tag}` is not a locale"))?),
                None => None,
            };
            if !store.set_tenant_settings(tenant_id, locale.as_deref(), adhoc_types, http_action_urls).await? {
                bail!("no tenant {tenant_id}");
            }
            println!("tenant {tenant_id}: updated");
        }
        Command::Migrate | Command::Dlq(_) | Command::RotateIntegrationKey { .. } => {
            unreachable!("run handles it")
        }
    }
    Ok(())
}
