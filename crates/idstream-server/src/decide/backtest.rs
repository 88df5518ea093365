//! Backtest: replay past decisions through a candidate ruleset, without side effects.
//!
//! Every decision stores the exact context it was made from, so a backtest re-evaluates the
//! candidate on those same inputs (not on today's history or blocklists) and compares: how many
//! outcomes change and how (live × candidate matrix), which sessions change, and, where an
//! analyst resolved the review, whether the candidate agrees with the analyst. Nothing is
//! written anywhere. Used by `idstream backtest` and `POST /v1/backtests`.

use idstream_rules::{Context, Outcome, Ruleset};
use serde::Serialize;
use std::collections::BTreeMap;
use utoipa::ToSchema;

use crate::store::{Store, StoreError};

/// At most this many changed sessions are listed (all are counted).
pub const MAX_LISTED: usize = 1000;

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Change {
    pub session_id: String,
    pub decision_id: String,
    pub tenant: String,
    pub live: Outcome,
    pub candidate: Outcome,
    pub candidate_reasons: Vec<String>,
    /// The review case the live decision opened (live `review`), for a link to it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub review_id: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct AnalystAgreement {
    /// Live `review` decisions whose case an analyst resolved.
    pub resolved_reviews: u64,
    /// The candidate gives the analyst's outcome outright.
    pub candidate_agrees: u64,
    /// The candidate would decide the opposite of the analyst.
    pub candidate_disagrees: u64,
    /// The candidate would still send the case to review.
    pub candidate_reviews: u64,
    /// candidate_agrees / resolved_reviews.
    pub agreement: Option<f64>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Report {
    pub candidate_version: String,
    pub candidate_label: String,
    pub since: String,
    pub until: String,
    pub decisions: u64,
    pub changed: u64,
    /// live outcome → candidate outcome → count.
    pub matrix: BTreeMap<String, BTreeMap<String, u64>>,
    pub changed_sessions: Vec<Change>,
    pub changed_sessions_truncated: bool,
    pub analysts: AnalystAgreement,
    /// Decisions whose stored inputs could not be read back (none unless the store was altered).
    pub skipped: u64,
}

/// The case a `review` decision opened (the session's cases are few: read them all).
async fn opened_case(store: &dyn Store, d: &crate::store::DecisionRecord) -> Result<Option<String>, StoreError> {
    let cases = store
        .reviews(crate::store::ReviewFilter {
            tenant: Some(d.tenant.clone()),
            session_id: Some(d.session_id.clone()),
            limit: 1000,
            ..Default::default()
        })
        .await?;
    Ok(cases.into_iter().find(|r| r.decision_id == d.id).map(|r| r.id))
}

/// Replays the rules' decisions made in `[since_us, until_us)` (optionally of one tenant).
pub async fn run(
    store: &dyn Store,
    candidate: &Ruleset,
    since_us: i64,
    until_us: i64,
    tenant: Option<&str>,
    progress: &(dyn Fn(u64) + Send + Sync),
) -> Result<Report, StoreError> {
    let mut report = Report {
        candidate_version: candidate.version().to_owned(),
        candidate_label: candidate.version_label().to_owned(),
        since: if since_us == 0 { "the beginning".to_owned() } else { idstream_core::event::rfc3339_us(since_us) },
        until: if until_us == i64::MAX { "now".to_owned() } else { idstream_core::event::rfc3339_us(until_us) },
        decisions: 0,
        changed: 0,
        matrix: BTreeMap::new(),
        changed_sessions: Vec::new(),
        changed_sessions_truncated: false,
        analysts: AnalystAgreement::default(),
        skipped: 0,
    };
    let mut cursor: Option<(i64, String)> = None;
    loop {
        let (since, after) = match &cursor {
            Some((t, id)) => (*t, Some(id.as_str())),
            None => (since_us, None),
        };
        let page = store.decisions_between(since, until_us, tenant, after, 1000).await?;
        let Some(last) = page.last() else { break };
        cursor = Some((last.decided_at_us, last.id.clone()));
        for d in &page {
            let Ok(ctx) = serde_json::from_value::<Context>(d.detail["inputs"].clone()) else {
                report.skipped += 1;
                continue;
            };
            let c = candidate.evaluate(&ctx);
            let cand = c.outcome;
            report.decisions += 1;
            *report
                .matrix
                .entry(d.outcome.as_str().to_owned())
                .or_default()
                .entry(cand.as_str().to_owned())
                .or_default() += 1;
            if cand != d.outcome {
                report.changed += 1;
                if report.changed_sessions.len() < MAX_LISTED {
                    let review_id = if d.outcome == Outcome::Review { opened_case(store, d).await? } else { None };
                    report.changed_sessions.push(Change {
                        review_id,
                        session_id: d.session_id.clone(),
                        decision_id: d.id.clone(),
                        tenant: d.tenant.clone(),
                        live: d.outcome,
                        candidate: cand,
                        candidate_reasons: c.reasons.clone(),
                    });
                } else {
                    report.changed_sessions_truncated = true;
                }
            }
            if d.outcome == Outcome::Review {
                if let Some(r) = store.resolved_review_for_session(&d.tenant, &d.session_id).await? {
                    if let Some(analyst) = r.outcome {
                        let a = &mut report.analysts;
                        a.resolved_reviews += 1;
                        match cand {
                            Outcome::Review => a.candidate_reviews += 1,
                            o if o == analyst => a.candidate_agrees += 1,
                            _ => a.candidate_disagrees += 1,
                        }
                    }
                }
            }
        }
        progress(report.decisions + report.skipped);
    }
    let a = &mut report.analysts;
    a.agreement = (a.resolved_reviews > 0).then(|| a.candidate_agrees as f64 / a.resolved_reviews as f64);
    Ok(report)
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let short = self.candidate_version.get(..12).unwrap_or(&self.candidate_version);
        writeln!(f, "backtest of ruleset {} ({short}) over {} .. {}", self.candidate_label, self.since, self.until)?;
        let pct = |n: u64| if self.decisions == 0 { 0.0 } else { 100.0 * n as f64 / self.decisions as f64 };
        writeln!(f, "decisions replayed: {}   changed: {} ({:.1}%)", self.decisions, self.changed, pct(self.changed))?;
        let outcomes = ["approve", "review", "decline"];
        writeln!(f, "\n  live \\ candidate   approve    review   decline")?;
        for live in outcomes {
            let row = self.matrix.get(live);
            let cell = |c: &str| row.and_then(|r| r.get(c)).copied().unwrap_or(0);
            writeln!(f, "  {live:<17} {:>8}  {:>8}  {:>8}", cell("approve"), cell("review"), cell("decline"))?;
        }
        let a = &self.analysts;
        if a.resolved_reviews > 0 {
            writeln!(
                f,
                "\nanalyst-resolved reviews: {}   candidate agrees: {}   disagrees: {}   would still review: {}   agreement: {:.1}%",
                a.resolved_reviews,
                a.candidate_agrees,
                a.candidate_disagrees,
                a.candidate_reviews,
                100.0 * a.agreement.unwrap_or(0.0)
            )?;
        } else {
            writeln!(f, "\nno analyst-resolved reviews in this window")?;
        }
        if !self.changed_sessions.is_empty() {
            writeln!(f, "\nsessions whose outcome would change:")?;
            for c in self.changed_sessions.iter().take(50) {
                writeln!(f, "  {} {} -> {}  [{}]", c.session_id, c.live, c.candidate, c.candidate_reasons.join(", "))?;
            }
            if self.changed_sessions.len() > 50 {
                let more = self.changed as usize - 50;
                writeln!(f, "  ... {more} more (--json lists up to {MAX_LISTED})")?;
            }
        }
        if self.skipped > 0 {
            writeln!(f, "\n{} decisions skipped: their stored inputs could not be read", self.skipped)?;
        }
        Ok(())
    }
}

/// Parses `2026-11-01`, `2026-11-01T12:00:00Z` or a Unix time in seconds into Unix µs.
pub fn parse_time(s: &str) -> Result<i64, String> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(n) = s.parse::<i64>() {
        return Ok(n.saturating_mul(1_000_000));
    }
    if let Ok(t) = time::OffsetDateTime::parse(s, &Rfc3339) {
        return Ok((t.unix_timestamp_nanos() / 1000) as i64);
    }
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    if let Ok(d) = time::Date::parse(s, &fmt) {
        return Ok(d.midnight().assume_utc().unix_timestamp() * 1_000_000);
    }
    Err(format!("`{s}` is not a date (2026-11-01), an RFC 3339 time (2026-11-01T12:00:00Z) or Unix seconds"))
}
