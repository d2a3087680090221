//! Beside the request path: the webhook outbox table, `mlflow_gate.webhook_outbox`. A replica inserts its
//! deliveries before it answers the client; any replica claims due rows with `FOR UPDATE SKIP LOCKED` under a
//! lease (`claimed_until`), so two replicas never hold one delivery at once and the claims of a replica that died
//! expire; a delivered or given-up row is deleted by its claimer, a failed attempt is put back with its next time.

use std::time::Duration;

use super::{DbError, FleetDb, SCHEMA};

/// Replicas creating the schema at the same instant take turns on this transaction lock ("mlflowga").
const MIGRATION_LOCK: i64 = 7_884_789_663_531_493_217;

/// One delivery to store.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    /// Sent as `X-MLflow-Gate-Delivery-Id`; the primary key (a retried insert is a no-op).
    pub delivery_id: String,
    /// The configured webhook's id.
    pub webhook_id: String,
    /// The event name (for logs).
    pub event: String,
    /// The exact body that is signed and sent.
    pub body: String,
}

/// A delivery this replica has claimed (until its lease ends).
#[derive(Debug, Clone)]
pub struct Claimed {
    /// The delivery id.
    pub delivery_id: String,
    /// The webhook's id.
    pub webhook_id: String,
    /// The event name.
    pub event: String,
    /// The body.
    pub body: String,
    /// Attempts made so far, this one included (counted when claimed, so a crash still counts).
    pub attempts: u32,
}

/// What the outbox holds, for logs and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxStats {
    /// Rows not yet delivered or given up (every replica's).
    pub pending: u64,
}

pub(super) fn schema_sql() -> String {
    format!(
        "BEGIN;
         SELECT pg_advisory_xact_lock({MIGRATION_LOCK});
         CREATE SCHEMA IF NOT EXISTS {SCHEMA};
         CREATE TABLE IF NOT EXISTS {SCHEMA}.webhook_outbox (
             seq bigserial,
             delivery_id text PRIMARY KEY,
             webhook_id text NOT NULL,
             event text NOT NULL,
             body text NOT NULL,
             produced_by text NOT NULL,
             created_at timestamptz NOT NULL DEFAULT now(),
             attempts integer NOT NULL DEFAULT 0,
             next_attempt_at timestamptz NOT NULL DEFAULT now(),
             claimed_by text,
             claimed_until timestamptz,
             last_error text
         );
         CREATE INDEX IF NOT EXISTS webhook_outbox_due ON {SCHEMA}.webhook_outbox (next_attempt_at, seq);
         COMMIT;"
    )
}

impl FleetDb {
    /// Stores deliveries (one statement, so all or none); a delivery id already stored is left as it is.
    pub async fn insert_deliveries(&self, produced_by: &str, rows: &[NewDelivery]) -> Result<(), DbError> {
        let column = |f: fn(&NewDelivery) -> &String| rows.iter().map(|r| f(r).clone()).collect::<Vec<String>>();
        let (ids, hooks) = (column(|r| &r.delivery_id), column(|r| &r.webhook_id));
        let (events, bodies) = (column(|r| &r.event), column(|r| &r.body));
        let sql = format!(
            "INSERT INTO {SCHEMA}.webhook_outbox (delivery_id, webhook_id, event, body, produced_by)
             SELECT d, w, e, b, $5 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS u(d, w, e, b)
             ON CONFLICT (delivery_id) DO NOTHING"
        );
        self.client().await?.execute(&sql, &[&ids, &hooks, &events, &bodies, &produced_by]).await?;
        Ok(())
    }

    /// Claims at most `limit` due deliveries of the given webhooks for `lease`, oldest first, skipping rows another
    /// replica is claiming at this instant and rows whose lease has not ended.
    pub async fn claim_deliveries(
        &self,
        claimer: &str,
        webhook_ids: &[String],
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<Claimed>, DbError> {
        let sql = format!(
            "UPDATE {SCHEMA}.webhook_outbox o
                SET claimed_by = $1, claimed_until = now() + make_interval(secs => $2), attempts = o.attempts + 1
              WHERE o.delivery_id IN (
                    SELECT delivery_id FROM {SCHEMA}.webhook_outbox
                     WHERE next_attempt_at <= now() AND (claimed_until IS NULL OR claimed_until < now())
                       AND webhook_id = ANY($3)
                     ORDER BY next_attempt_at, seq
                     LIMIT $4
                       FOR UPDATE SKIP LOCKED)
          RETURNING o.delivery_id, o.webhook_id, o.event, o.body, o.attempts"
        );
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let ids: Vec<String> = webhook_ids.to_vec();
        let rows = self.client().await?.query(&sql, &[&claimer, &lease.as_secs_f64(), &ids, &limit]).await?;
        rows.iter()
            .map(|r| {
                Ok(Claimed {
                    delivery_id: r.try_get(0)?,
                    webhook_id: r.try_get(1)?,
                    event: r.try_get(2)?,
                    body: r.try_get(3)?,
                    attempts: u32::try_from(r.try_get::<_, i32>(4)?).unwrap_or(0),
                })
            })
            .collect()
    }

    /// Removes a delivery this replica holds (delivered, or given up). False if its claim had been lost.
    pub async fn finish_delivery(&self, claimer: &str, delivery_id: &str) -> Result<bool, DbError> {
        let sql = format!("DELETE FROM {SCHEMA}.webhook_outbox WHERE delivery_id = $1 AND claimed_by = $2");
        Ok(self.client().await?.execute(&sql, &[&delivery_id, &claimer]).await? > 0)
    }

    /// Puts a delivery this replica holds back, due after `delay`, with the failure's reason.
    pub async fn retry_delivery(
        &self,
        claimer: &str,
        delivery_id: &str,
        delay: Duration,
        reason: &str,
    ) -> Result<bool, DbError> {
        let sql = format!(
            "UPDATE {SCHEMA}.webhook_outbox
                SET claimed_by = NULL, claimed_until = NULL, next_attempt_at = now() + make_interval(secs => $3),
                    last_error = $4
              WHERE delivery_id = $1 AND claimed_by = $2"
        );
        let n = self.client().await?.execute(&sql, &[&delivery_id, &claimer, &delay.as_secs_f64(), &reason]).await?;
        Ok(n > 0)
    }

    /// Gives back every claim of `claimer` (at shutdown: another replica may take them at once).
    pub async fn release_claims(&self, claimer: &str) -> Result<u64, DbError> {
        let sql =
            format!("UPDATE {SCHEMA}.webhook_outbox SET claimed_by = NULL, claimed_until = NULL WHERE claimed_by = $1");
        Ok(self.client().await?.execute(&sql, &[&claimer]).await?)
    }

    /// How many deliveries the outbox holds.
    pub async fn outbox_stats(&self) -> Result<OutboxStats, DbError> {
        let sql = format!("SELECT count(*) FROM {SCHEMA}.webhook_outbox");
        let row = self.client().await?.query_one(&sql, &[]).await?;
        Ok(OutboxStats { pending: u64::try_from(row.try_get::<_, i64>(0)?).unwrap_or(0) })
    }
}
