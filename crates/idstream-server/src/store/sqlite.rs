//! The embedded [`Store`]: its tables live in the log's own SQLite file (schema:
//! [`super::migrate::SQLITE`]), so a [`Txn`] (log entries + state ops + checkpoint) is one
//! SQLite transaction on the log's writer thread.

use async_trait::async_trait;
use rusqlite::{params, OptionalExtension, Transaction};
use serde_json::Value;
use tokio::sync::oneshot;

use crate::log::sqlite::{Cmd, SqliteLog};
use crate::log::{Appended, LogError};
use crate::store::sql_types::{JsonCol, OutcomeCol};
use crate::store::*;

fn json_text<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("store records always serialise")
}

/// Applies one op inside the writer's transaction. The outer error is SQLite failing (the whole
/// batch rolls back); the inner one is the op's condition not holding (this txn rolls back).
pub(crate) fn apply(tx: &Transaction<'_>, op: &Op) -> rusqlite::Result<Result<(), TxnError>> {
    match op {
        Op::SetCheckpoint { consumer, offset } => {
            tx.prepare_cached(
                "INSERT INTO checkpoints (consumer, offset, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (consumer) DO UPDATE SET offset = excluded.offset, updated_at = excluded.updated_at",
            )?
            .execute(params![consumer, *offset as i64, crate::util::now_us()])?;
        }
        Op::PutDecision(d) => {
            tx.prepare_cached(
                "INSERT INTO decisions (id, tenant, session_id, subject, event_id, event_offset, outcome, score,
                    ruleset_version, reasons, decided_by, decided_at, detail)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            )?
            .execute(params![
                d.id,
                d.tenant,
                d.session_id,
                d.subject,
                d.event_id,
                d.event_offset.map(|o| o as i64),
                d.outcome.as_str(),
                d.score,
                d.ruleset_version,
                json_text(&d.reasons),
                d.decided_by,
                d.decided_at_us,
                json_text(&d.detail),
            ])?;
        }
        Op::UpsertSession(s) => {
            let (outcome, decision_id) = s.decision.clone().unzip();
            let outcome = outcome.map(Outcome::as_str);
            tx.prepare_cached(
                "INSERT INTO sessions (tenant, session_id, subject, provider_status, state, outcome, decision_id,
                    created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)
                 ON CONFLICT (tenant, session_id) DO UPDATE SET
                    subject = COALESCE(excluded.subject, subject),
                    provider_status = COALESCE(excluded.provider_status, provider_status),
                    state = excluded.state,
                    outcome = COALESCE(excluded.outcome, outcome),
                    decision_id = COALESCE(excluded.decision_id, decision_id),
                    updated_at = excluded.updated_at",
            )?
            .execute(params![
                s.tenant,
                s.session_id,
                s.subject,
                s.provider_status,
                s.state,
                outcome,
                decision_id,
                s.now_us
            ])?;
        }
        Op::OpenReview(r) => {
            tx.prepare_cached(
                "INSERT INTO reviews (id, tenant, session_id, subject, decision_id, reasons, status, opened_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'open', ?7)",
            )?
            .execute(params![
                r.id,
                r.tenant,
                r.session_id,
                r.subject,
                r.decision_id,
                json_text(&r.reasons),
                r.opened_at_us
            ])?;
        }
        Op::Observe(obs) => {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO identities (tenant, kind, hash, session_id, subject, seen_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (tenant, kind, hash, session_id) DO UPDATE SET subject = excluded.subject, seen_at = excluded.seen_at",
            )?;
            for o in obs {
                stmt.execute(params![o.tenant, o.kind, o.hash, o.session_id, o.subject, o.seen_at_us])?;
            }
        }
        Op::ClaimReview { tenant, id, actor, now_us } => {
            let n = tx
                .prepare_cached(
                    "UPDATE reviews SET status = 'claimed', claimed_by = ?3, claimed_at = ?4
                     WHERE tenant = ?1 AND id = ?2 AND status = 'open'",
                )?
                .execute(params![tenant, id, actor, now_us])?;
            if n == 0 {
                return review_conflict(tx, tenant, id);
            }
        }
        Op::ResolveReview { tenant, id, actor, outcome, note, now_us, force } => {
            let n = tx
                .prepare_cached(
                    "UPDATE reviews SET status = 'resolved', resolved_by = ?3, resolved_at = ?4, outcome = ?5, note = ?6
                     WHERE tenant = ?1 AND id = ?2
                       AND (status = 'claimed' AND claimed_by = ?3 OR ?7 AND status != 'resolved')",
                )?
                .execute(params![tenant, id, actor, now_us, outcome.map(Outcome::as_str), note, force])?;
            if n == 0 {
                return review_conflict(tx, tenant, id);
            }
        }
        Op::PutSubject { tenant, id, attributes, actor, now_us } => {
            tx.prepare_cached(
                "INSERT INTO subjects (tenant, id, attributes, updated_by, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (tenant, id) DO UPDATE SET attributes = excluded.attributes,
                    updated_by = excluded.updated_by, updated_at = excluded.updated_at",
            )?
            .execute(params![tenant, id, json_text(attributes), actor, now_us])?;
        }
        Op::PutRuleset(r) => {
            tx.prepare_cached(
                "INSERT INTO rulesets (tenant, version, label, text, created_by, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (tenant, version) DO NOTHING",
            )?
            .execute(params![r.tenant, r.version, r.label, r.text, r.created_by, r.created_at_us])?;
        }
        Op::ActivateRuleset { tenant, version, actor, now_us } => {
            let exists: Option<i64> = tx
                .prepare_cached("SELECT 1 FROM rulesets WHERE tenant = ?1 AND version = ?2")?
                .query_row(params![tenant, version], |r| r.get(0))
                .optional()?;
            if exists.is_none() {
                return Ok(Err(TxnError::NotFound(format!("no ruleset version `{version}` (upload it first)"))));
            }
            tx.prepare_cached(
                "INSERT INTO active_rulesets (tenant, version, activated_by, activated_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (tenant) DO UPDATE SET version = excluded.version,
                    activated_by = excluded.activated_by, activated_at = excluded.activated_at",
            )?
            .execute(params![tenant, version, actor, now_us])?;
        }
        Op::AddBlock(b) => {
            tx.prepare_cached(
                "INSERT INTO blocklist (tenant, kind, hash, reason, added_by, added_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (tenant, kind, hash) DO UPDATE SET reason = excluded.reason,
                    added_by = excluded.added_by, added_at = excluded.added_at",
            )?
            .execute(params![b.tenant, b.kind, b.hash, b.reason, b.added_by, b.added_at_us])?;
        }
        Op::RemoveBlock { tenant, kind, hash } => {
            let n = tx
                .prepare_cached("DELETE FROM blocklist WHERE tenant = ?1 AND kind = ?2 AND hash = ?3")?
                .execute(params![tenant, kind, hash])?;
            if n == 0 {
                return Ok(Err(TxnError::NotFound(format!("no {} blocklist entry `{hash}`", kind.as_str()))));
            }
        }
    }
    Ok(Ok(()))
}

fn review_conflict(tx: &Transaction<'_>, tenant: &str, id: &str) -> rusqlite::Result<Result<(), TxnError>> {
    let row: Option<(String, Option<String>, Option<String>)> = tx
        .prepare_cached("SELECT status, claimed_by, resolved_by FROM reviews WHERE tenant = ?1 AND id = ?2")?
        .query_row(params![tenant, id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    Ok(Err(match row {
        None => TxnError::NotFound(format!("no review `{id}`")),
        Some((status, _, Some(by))) if status == "resolved" => {
            TxnError::Conflict(format!("review `{id}` was already resolved by `{by}`"))
        }
        Some((_, Some(by), _)) => TxnError::Conflict(format!("review `{id}` is claimed by `{by}`")),
        Some((status, _, _)) => TxnError::Conflict(format!("review `{id}` is {status}; claim it first")),
    }))
}

fn lookup_one(c: &rusqlite::Connection, req: &LookupRequest) -> rusqlite::Result<LookupResult> {
    let mut out = LookupResult::default();
    let mut block = c.prepare_cached("SELECT 1 FROM blocklist WHERE tenant = ?1 AND kind = ?2 AND hash = ?3")?;
    for (kind, hash) in &req.block_hashes {
        if block.query_row(params![req.tenant, kind, hash], |_| Ok(())).optional()?.is_some()
            && !out.blocked.contains(kind)
        {
            out.blocked.push(*kind);
        }
    }
    let mut vel = c.prepare_cached(
        "SELECT DISTINCT subject FROM identities
         WHERE tenant = ?1 AND kind = ?2 AND hash = ?3 AND seen_at >= ?4 AND subject != ?5 LIMIT 1000",
    )?;
    for (kind, hash) in &req.velocity_hashes {
        let subjects = vel
            .query_map(params![req.tenant, kind, hash, req.velocity_since_us, req.subject], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<String>>>()?;
        out.velocity.push((*kind, subjects));
    }
    // (`session_id != ?` in SQL would make the planner scan the tenant's sessions by primary key.)
    out.other_sessions = c
        .prepare_cached("SELECT session_id, outcome FROM sessions INDEXED BY sessions_by_subject WHERE tenant = ?1 AND subject = ?2")?
        .query_map(params![req.tenant, req.subject], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<OutcomeCol>>(1)?.map(|o| o.0))))?
        .filter(|r| r.as_ref().map_or(true, |(s, _)| *s != req.session_id))
        .collect::<rusqlite::Result<_>>()?;
    out.open_review = c
        .prepare_cached(&format!(
            "SELECT {REVIEW_COLS} FROM reviews WHERE tenant = ?1 AND session_id = ?2 AND status != 'resolved'
             ORDER BY opened_at DESC LIMIT 1"
        ))?
        .query_row(params![req.tenant, req.session_id], row_review)
        .optional()?;
    if let Some(id) = &req.subject_id {
        out.subject_attributes = c
            .prepare_cached("SELECT attributes FROM subjects WHERE tenant = ?1 AND id = ?2")?
            .query_row(params![req.tenant, id], |r| r.get::<_, JsonCol<Value>>(0))
            .optional()?
            .map(|j| j.0);
    }
    Ok(out)
}

const DECISION_COLS: &str = "id, tenant, session_id, subject, event_id, event_offset, outcome, score, ruleset_version,
    reasons, decided_by, decided_at, detail";

fn row_decision(r: &rusqlite::Row<'_>) -> rusqlite::Result<DecisionRecord> {
    Ok(DecisionRecord {
        id: r.get(0)?,
        tenant: r.get(1)?,
        session_id: r.get(2)?,
        subject: r.get(3)?,
        event_id: r.get(4)?,
        event_offset: r.get::<_, Option<i64>>(5)?.map(|o| o as u64),
        outcome: r.get::<_, OutcomeCol>(6)?.0,
        score: r.get(7)?,
        ruleset_version: r.get(8)?,
        reasons: r.get::<_, JsonCol<_>>(9)?.0,
        decided_by: r.get(10)?,
        decided_at_us: r.get(11)?,
        detail: r.get::<_, JsonCol<_>>(12)?.0,
    })
}

const REVIEW_COLS: &str = "id, tenant, session_id, subject, decision_id, reasons, status, opened_at, claimed_by,
    claimed_at, resolved_by, resolved_at, outcome, note";

fn row_review(r: &rusqlite::Row<'_>) -> rusqlite::Result<ReviewRecord> {
    Ok(ReviewRecord {
        id: r.get(0)?,
        tenant: r.get(1)?,
        session_id: r.get(2)?,
        subject: r.get(3)?,
        decision_id: r.get(4)?,
        reasons: r.get::<_, JsonCol<_>>(5)?.0,
        status: r.get(6)?,
        opened_at_us: r.get(7)?,
        claimed_by: r.get(8)?,
        claimed_at_us: r.get(9)?,
        resolved_by: r.get(10)?,
        resolved_at_us: r.get(11)?,
        outcome: r.get::<_, Option<OutcomeCol>>(12)?.map(|o| o.0),
        note: r.get(13)?,
    })
}

fn row_ruleset(r: &rusqlite::Row<'_>) -> rusqlite::Result<RulesetRecord> {
    Ok(RulesetRecord {
        tenant: r.get(0)?,
        version: r.get(1)?,
        label: r.get(2)?,
        text: r.get(3)?,
        created_by: r.get(4)?,
        created_at_us: r.get(5)?,
    })
}

impl SqliteLog {
    /// A read on one of the log's reader connections.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        Ok(self.with_reader(f).await?)
    }
}

#[async_trait]
impl Store for SqliteLog {
    async fn commit(&self, txn: Txn) -> Result<Vec<Appended>, TxnError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Cmd::Txn { txn, reply }).await.map_err(|_| LogError::Closed)?;
        rx.await.map_err(|_| LogError::Closed)?
    }

    async fn lookup(&self, reqs: Vec<LookupRequest>) -> Result<Vec<LookupResult>, StoreError> {
        self.read(move |c| {
            // One read transaction: every lookup of the batch sees the same snapshot.
            c.execute_batch("BEGIN")?;
            let out = reqs.iter().map(|req| lookup_one(c, req)).collect::<rusqlite::Result<Vec<_>>>();
            // Ended even when a lookup failed, so the pooled connection holds no snapshot.
            let end = c.execute_batch("COMMIT");
            let out = out?;
            end?;
            Ok(out)
        })
        .await
    }

    async fn decision(&self, id: &str) -> Result<Option<DecisionRecord>, StoreError> {
        let id = id.to_owned();
        self.read(move |c| {
            c.prepare_cached(&format!("SELECT {DECISION_COLS} FROM decisions WHERE id = ?1"))?
                .query_row([id], row_decision)
                .optional()
        })
        .await
    }

    async fn decisions_between(
        &self,
        since_us: i64,
        until_us: i64,
        tenant: Option<&str>,
        after_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DecisionRecord>, StoreError> {
        let (tenant, after_id) = (tenant.map(str::to_owned), after_id.unwrap_or("").to_owned());
        self.read(move |c| {
            c.prepare_cached(&format!(
                "SELECT {DECISION_COLS} FROM decisions
                 WHERE decided_by = 'rules' AND (decided_at, id) > (?1, ?2) AND decided_at < ?3
                   AND (?4 IS NULL OR tenant = ?4)
                 ORDER BY decided_at, id LIMIT ?5"
            ))?
            .query_map(params![since_us, after_id, until_us, tenant, limit as i64], row_decision)?
            .collect()
        })
        .await
    }

    async fn session(&self, tenant: &str, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        let (tenant, id) = (tenant.to_owned(), id.to_owned());
        self.read(move |c| {
            c.prepare_cached(
                "SELECT tenant, session_id, subject, provider_status, state, outcome, decision_id, created_at, updated_at
                 FROM sessions WHERE tenant = ?1 AND session_id = ?2",
            )?
            .query_row(params![tenant, id], |r| {
                Ok(SessionRecord {
                    tenant: r.get(0)?,
                    session_id: r.get(1)?,
                    subject: r.get(2)?,
                    provider_status: r.get(3)?,
                    state: r.get(4)?,
                    outcome: r.get::<_, Option<OutcomeCol>>(5)?.map(|o| o.0),
                    decision_id: r.get(6)?,
                    created_at_us: r.get(7)?,
                    updated_at_us: r.get(8)?,
                })
            })
            .optional()
        })
        .await
    }

    async fn session_decisions(&self, tenant: &str, id: &str) -> Result<Vec<DecisionRecord>, StoreError> {
        let (tenant, id) = (tenant.to_owned(), id.to_owned());
        self.read(move |c| {
            c.prepare_cached(&format!(
                "SELECT {DECISION_COLS} FROM decisions WHERE tenant = ?1 AND session_id = ?2 ORDER BY decided_at, id"
            ))?
            .query_map(params![tenant, id], row_decision)?
            .collect()
        })
        .await
    }

    async fn open_sessions_with(
        &self,
        tenant: &str,
        kind: BlocklistKind,
        hash: &str,
    ) -> Result<Vec<ReviewRecord>, StoreError> {
        let (tenant, hash) = (tenant.to_owned(), hash.to_owned());
        self.read(move |c| {
            c.prepare_cached(&format!(
                "SELECT {REVIEW_COLS} FROM reviews WHERE tenant = ?1 AND status != 'resolved' AND session_id IN
                   (SELECT session_id FROM identities WHERE tenant = ?1 AND kind = ?2 AND hash = ?3)"
            ))?
            .query_map(params![tenant, kind, hash], row_review)?
            .collect()
        })
        .await
    }

    async fn review(&self, tenant: Option<&str>, id: &str) -> Result<Option<ReviewRecord>, StoreError> {
        let (tenant, id) = (tenant.map(str::to_owned), id.to_owned());
        self.read(move |c| {
            c.prepare_cached(&format!(
                "SELECT {REVIEW_COLS} FROM reviews WHERE id = ?1 AND (?2 IS NULL OR tenant = ?2)"
            ))?
            .query_row(params![id, tenant], row_review)
            .optional()
        })
        .await
    }

    async fn reviews(&self, f: ReviewFilter) -> Result<Vec<ReviewRecord>, StoreError> {
        self.read(move |c| {
            let rows: Vec<ReviewRecord> = c
                .prepare_cached(&format!(
                    "SELECT {REVIEW_COLS} FROM reviews
                     WHERE (?1 IS NULL OR tenant = ?1) AND (?2 IS NULL OR status = ?2) AND (?3 IS NULL OR opened_at < ?3)
                       AND (?4 IS NULL OR session_id = ?4)
                     ORDER BY opened_at, id"
                ))?
                .query_map(params![f.tenant, f.status, f.opened_before_us, f.session_id], row_review)?
                .filter(|r| match (&f.reason, r) {
                    (Some(reason), Ok(r)) => r.reasons.iter().any(|x| x == reason || x.starts_with(&format!("{reason}."))),
                    _ => true,
                })
                .take(f.limit)
                .collect::<rusqlite::Result<_>>()?;
            Ok(rows)
        })
        .await
    }

    async fn resolved_review_for_session(&self, tenant: &str, id: &str) -> Result<Option<ReviewRecord>, StoreError> {
        let (tenant, id) = (tenant.to_owned(), id.to_owned());
        self.read(move |c| {
            c.prepare_cached(&format!(
                "SELECT {REVIEW_COLS} FROM reviews WHERE tenant = ?1 AND session_id = ?2 AND status = 'resolved'
                 AND resolved_by != 'rules' AND resolved_by NOT LIKE 'blocklist:%' ORDER BY resolved_at DESC LIMIT 1"
            ))?
            .query_row(params![tenant, id], row_review)
            .optional()
        })
        .await
    }

    async fn blocks(&self, tenant: &str, kind: BlocklistKind, limit: usize) -> Result<Vec<BlockRecord>, StoreError> {
        let tenant = tenant.to_owned();
        self.read(move |c| {
            c.prepare_cached(
                "SELECT tenant, kind, hash, reason, added_by, added_at FROM blocklist WHERE tenant = ?1 AND kind = ?2
                 ORDER BY added_at DESC LIMIT ?3",
            )?
            .query_map(params![tenant, kind, limit as i64], |r| {
                Ok(BlockRecord {
                    tenant: r.get(0)?,
                    kind: r.get(1)?,
                    hash: r.get(2)?,
                    reason: r.get(3)?,
                    added_by: r.get(4)?,
                    added_at_us: r.get(5)?,
                })
            })?
            .collect()
        })
        .await
    }

    async fn subject(&self, tenant: &str, id: &str) -> Result<Option<SubjectRecord>, StoreError> {
        let (tenant, id) = (tenant.to_owned(), id.to_owned());
        self.read(move |c| {
            c.prepare_cached(
                "SELECT tenant, id, attributes, updated_by, updated_at FROM subjects WHERE tenant = ?1 AND id = ?2",
            )?
            .query_row(params![tenant, id], |r| {
                Ok(SubjectRecord {
                    tenant: r.get(0)?,
                    id: r.get(1)?,
                    attributes: r.get::<_, JsonCol<_>>(2)?.0,
                    updated_by: r.get(3)?,
                    updated_at_us: r.get(4)?,
                })
            })
            .optional()
        })
        .await
    }

    async fn ruleset(&self, tenant: &str, version: &str) -> Result<Option<RulesetRecord>, StoreError> {
        let (tenant, version) = (tenant.to_owned(), version.to_owned());
        self.read(move |c| {
            c.prepare_cached(
                "SELECT tenant, version, label, text, created_by, created_at FROM rulesets WHERE tenant = ?1 AND version = ?2",
            )?
            .query_row(params![tenant, version], row_ruleset)
            .optional()
        })
        .await
    }

    async fn rulesets(&self, tenant: &str) -> Result<Vec<RulesetRecord>, StoreError> {
        let tenant = tenant.to_owned();
        self.read(move |c| {
            c.prepare_cached(
                "SELECT tenant, version, label, text, created_by, created_at FROM rulesets WHERE tenant = ?1
                 ORDER BY created_at DESC",
            )?
            .query_map(params![tenant], row_ruleset)?
            .collect()
        })
        .await
    }

    async fn active_rulesets(&self) -> Result<Vec<(String, ActiveRuleset)>, StoreError> {
        self.read(move |c| {
            c.prepare_cached("SELECT tenant, version, activated_by, activated_at FROM active_rulesets")?
                .query_map([], |r| {
                    Ok((
                        r.get(0)?,
                        ActiveRuleset { version: r.get(1)?, activated_by: r.get(2)?, activated_at_us: r.get(3)? },
                    ))
                })?
                .collect()
        })
        .await
    }
}
