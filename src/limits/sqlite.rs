//! The embedded limits backend: the default without Redis. Quota counters
//! and reservations are kept in SQLite in the data dir (`quotas.db`), so a
//! single-instance deployment keeps the month's usage across restarts and
//! deploys; rate limits and connection slots stay in memory (they span a
//! minute and a connection's life, and a restart ends both).
//!
//! Its own file, not the store's: quota writes never wait for the store's
//! durable commits (the store uses `synchronous=FULL` for every `ack`).
//! Here `synchronous=NORMAL` in WAL mode: a commit survives the process
//! being killed at any point; only a power loss may take the last
//! transactions with it, and a reservation lost that way is one the
//! answer's settle then finds missing (it is logged, the usage of that one
//! answer is not counted).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, OptionalExtension, Transaction};
use rusqlite_migration::{Migrations, M};
use skald_actors::limits::local::LocalLimits;
use skald_actors::ports::limits::{
    LimitsBackend, LimitsError, QuotaLimits, QuotaUsage, RateDecision, RateKey, RateLimit,
    Reservation, ReserveDecision, Settle, SlotClaim, SlotKey,
};
use skald_actors::settings::LimitOverride;
use skald_actors::time::Month;
use skald_actors::UserId;

fn migrations() -> Migrations<'static> {
    Migrations::new(vec![
        M::up(
            r#"
CREATE TABLE quota_months (
    user TEXT NOT NULL,
    month TEXT NOT NULL,
    tokens_used INTEGER NOT NULL DEFAULT 0,
    requests_used INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user, month)
);
CREATE TABLE quota_reservations (
    id TEXT PRIMARY KEY,
    user TEXT NOT NULL,
    month TEXT NOT NULL,
    tokens INTEGER NOT NULL,
    made_at_ms INTEGER NOT NULL
);
CREATE INDEX quota_reservations_by_month ON quota_reservations (user, month);
"#,
        ),
        // Operators' per-user overrides (the Admin API), as JSON.
        M::up(
            r#"
CREATE TABLE user_limits (
    user TEXT PRIMARY KEY,
    limits TEXT NOT NULL
);
"#,
        ),
    ])
}

#[derive(Debug, thiserror::Error)]
#[error("quota counters at {path}: {source}")]
pub struct SqliteLimitsError {
    path: String,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

pub struct SqliteLimits {
    memory: LocalLimits,
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
}

impl SqliteLimits {
    /// Opens (creating if needed) `dir/quotas.db` and migrates it.
    pub fn open_in(dir: &Path) -> Result<SqliteLimits, SqliteLimitsError> {
        let path = dir.join("quotas.db");
        let err = |source: Box<dyn std::error::Error + Send + Sync>| SqliteLimitsError {
            path: path.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(|e| err(e.into()))?;
        let mut conn = Connection::open(&path).map_err(|e| err(e.into()))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .and_then(|_| conn.pragma_update(None, "synchronous", "NORMAL"))
            .and_then(|_| conn.busy_timeout(std::time::Duration::from_secs(5)))
            .map_err(|e| err(e.into()))?;
        migrations()
            .to_latest(&mut conn)
            .map_err(|e| err(e.into()))?;
        Ok(SqliteLimits {
            memory: LocalLimits::new(),
            conn: Arc::new(Mutex::new(conn)),
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` in one transaction, in a blocking task.
    async fn transaction<T, F>(&self, f: F) -> Result<T, LimitsError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction) -> rusqlite::Result<T> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = conn.lock().unwrap_or_else(|p| p.into_inner());
            let tx = conn.transaction()?;
            let value = f(&tx)?;
            tx.commit()?;
            Ok(value)
        })
        .await
        .map_err(LimitsError::unavailable)?
        .map_err(|e: rusqlite::Error| LimitsError::unavailable(format_args!("quota counters: {e}")))
    }
}

/// Drops the month's reservations older than `lease_ms` and reads its usage.
fn month_usage(
    tx: &Transaction,
    user: &str,
    month: &str,
    lease_ms: u64,
    now_ms: i64,
) -> rusqlite::Result<QuotaUsage> {
    tx.execute(
        "DELETE FROM quota_reservations WHERE user = ?1 AND month = ?2 AND made_at_ms <= ?3",
        params![user, month, now_ms - lease_ms as i64],
    )?;
    let (tokens_used, requests_used): (i64, i64) = tx
        .query_row(
            "SELECT tokens_used, requests_used FROM quota_months WHERE user = ?1 AND month = ?2",
            params![user, month],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?
        .unwrap_or((0, 0));
    let (tokens_reserved, requests_reserved): (i64, i64) = tx.query_row(
        "SELECT COALESCE(SUM(tokens), 0), COUNT(*) FROM quota_reservations \
         WHERE user = ?1 AND month = ?2",
        params![user, month],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    Ok(QuotaUsage {
        tokens_used: tokens_used as u64,
        requests_used: requests_used as u64,
        tokens_reserved: tokens_reserved as u64,
        requests_reserved: requests_reserved as u64,
    })
}

fn add(
    tx: &Transaction,
    user: &str,
    month: &str,
    tokens: u64,
    requests: u64,
) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO quota_months (user, month, tokens_used, requests_used) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (user, month) DO UPDATE SET tokens_used = tokens_used + ?3, \
         requests_used = requests_used + ?4",
        params![user, month, tokens as i64, requests as i64],
    )?;
    Ok(())
}

#[async_trait::async_trait]
impl LimitsBackend for SqliteLimits {
    async fn rate(
        &self,
        key: &RateKey,
        limit: RateLimit,
        now_ms: i64,
    ) -> Result<RateDecision, LimitsError> {
        self.memory.rate(key, limit, now_ms).await
    }

    async fn acquire_slot(&self, claim: &SlotClaim, now_ms: i64) -> Result<bool, LimitsError> {
        self.memory.acquire_slot(claim, now_ms).await
    }

    async fn release_slot(&self, key: &SlotKey, holder: &str) -> Result<(), LimitsError> {
        self.memory.release_slot(key, holder).await
    }

    async fn reserve(
        &self,
        r: &Reservation,
        limits: QuotaLimits,
        lease_ms: u64,
        now_ms: i64,
    ) -> Result<ReserveDecision, LimitsError> {
        let r = r.clone();
        self.transaction(move |tx| {
            let (user, month, id) = (r.user.as_str(), r.month.to_string(), r.id.as_str());
            let usage = month_usage(tx, user, &month, lease_ms, now_ms)?;
            let held: Option<i64> = tx
                .query_row(
                    "SELECT tokens FROM quota_reservations WHERE id = ?1",
                    params![id],
                    |row| row.get(0),
                )
                .optional()?;
            if let Some(tokens) = held {
                return Ok(ReserveDecision::Granted {
                    tokens: tokens as u64,
                });
            }
            let decision = usage.decide(&r, limits);
            if let ReserveDecision::Granted { tokens } = decision {
                tx.execute(
                    "INSERT INTO quota_reservations (id, user, month, tokens, made_at_ms) \
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![id, user, month, tokens as i64, now_ms],
                )?;
            }
            Ok(decision)
        })
        .await
    }

    async fn settle(&self, settles: &[Settle]) -> Result<Vec<bool>, LimitsError> {
        let settles = settles.to_vec();
        self.transaction(move |tx| {
            let mut applied = Vec::with_capacity(settles.len());
            for s in &settles {
                let month = s.month.to_string();
                let removed = tx.execute(
                    "DELETE FROM quota_reservations WHERE id = ?1 AND user = ?2 AND month = ?3",
                    params![s.id.as_str(), s.user.as_str(), month],
                )?;
                if removed > 0 {
                    add(tx, &s.user, &month, s.tokens, u64::from(s.count_request))?;
                }
                applied.push(removed > 0);
            }
            Ok(applied)
        })
        .await
    }

    async fn add_usage(
        &self,
        user: &UserId,
        month: Month,
        tokens: u64,
        requests: u64,
    ) -> Result<(), LimitsError> {
        let user = user.clone();
        self.transaction(move |tx| add(tx, &user, &month.to_string(), tokens, requests))
            .await
    }

    async fn usage(
        &self,
        user: &UserId,
        month: Month,
        lease_ms: u64,
        now_ms: i64,
    ) -> Result<QuotaUsage, LimitsError> {
        let user = user.clone();
        self.transaction(move |tx| month_usage(tx, &user, &month.to_string(), lease_ms, now_ms))
            .await
    }

    async fn forget(
        &self,
        rate_keys: &[RateKey],
        slot_keys: &[SlotKey],
    ) -> Result<(), LimitsError> {
        self.memory.forget(rate_keys, slot_keys).await
    }

    async fn user_limits(&self) -> Result<BTreeMap<UserId, LimitOverride>, LimitsError> {
        let all = self
            .transaction(|tx| {
                let mut stmt = tx.prepare_cached("SELECT user, limits FROM user_limits")?;
                let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
                rows.collect::<rusqlite::Result<Vec<(String, String)>>>()
            })
            .await?;
        Ok(crate::limits::read_user_limits(all))
    }

    async fn set_user_limits(
        &self,
        user: &UserId,
        limits: Option<&LimitOverride>,
    ) -> Result<(), LimitsError> {
        let user = user.to_string();
        let json = limits.map(crate::limits::user_limits_json);
        self.transaction(move |tx| {
            match json {
                Some(json) => tx.execute(
                    "INSERT OR REPLACE INTO user_limits (user, limits) VALUES (?1, ?2)",
                    params![user, json],
                ),
                None => tx.execute("DELETE FROM user_limits WHERE user = ?1", params![user]),
            }
            .map(drop)
        })
        .await
    }

    async fn ping(&self) -> Result<(), LimitsError> {
        self.transaction(|tx| tx.query_row("SELECT 1", [], |_| Ok(())))
            .await
    }

    fn name(&self) -> &'static str {
        "embedded"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passes_the_contract_and_keeps_quotas_across_reopening() {
        let dir = std::env::temp_dir().join(format!("skald-quotas-{}", uuid::Uuid::now_v7()));
        {
            let limits = SqliteLimits::open_in(&dir).unwrap();
            skald_actors::testkit::limits::run_all(&limits, "sqlite").await;
        }
        // What the contract left for one of its users is still there.
        let reopened = SqliteLimits::open_in(&dir).unwrap();
        let usage = reopened
            .usage(
                &"sqlite:batch".into(),
                Month::of(1_767_225_600_000),
                600_000,
                1_767_225_600_000,
            )
            .await
            .unwrap();
        assert_eq!((usage.tokens_used, usage.requests_used), (30, 2));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
