//! Upgrading a data directory in place: `tests/it/data/v0/` was written by idstream before the
//! embedded schema was versioned (the release before, running `simulate`, reviews, a ruleset,
//! blocklist changes and a subject update). Opening it migrates it, and everything it held is
//! still there; a database written by a newer idstream is refused.

use std::path::Path;
use std::sync::Arc;

use idstream_server::state::hash_api_key;
use idstream_server::store::IdentityQuery;
use serde_json::Value;

use crate::helpers::*;

const KEY: &str = "key-sandbox";

fn config() -> String {
    format!(
        "[[sources]]\nid = \"sandbox\"\nprovider = \"didit\"\ntenant = \"sandbox\"\nsecrets = [\"{SECRET_NEW}\"]\n\n\
         [[api_keys]]\nname = \"ops\"\ntenant = \"sandbox\"\nsha256 = \"{}\"\n\n\
         [reviews]\nclaim_idle_secs = 0\n",
        hash_api_key(KEY)
    )
}

/// A copy of the v0 data directory in a fresh temporary directory.
fn v0_copy() -> Arc<tempfile::TempDir> {
    let dir = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/data/v0");
    for f in ["events.db", "blocklist.key"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    Arc::new(dir)
}

/// `(tenant, session, kind, hash, subject, seen_at)` of every identity observation in the v0
/// fixture (its store tables are still in `events.db`), in order.
type Seen = (String, String, String, String, String, i64);
fn fixture_observations(dir: &Path) -> std::collections::BTreeSet<Seen> {
    let c = rusqlite::Connection::open(dir.join("events.db")).unwrap();
    let mut stmt = c.prepare("SELECT tenant, session_id, kind, hash, subject, seen_at FROM identities").unwrap();
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    rows
}

fn versions(dir: &Path) -> Vec<i64> {
    let c = rusqlite::Connection::open(dir.join("events.db")).unwrap();
    let exists: bool = c
        .query_row("SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'idstream_migrations')", [], |r| r.get(0))
        .unwrap();
    if !exists {
        return Vec::new();
    }
    let mut stmt = c.prepare("SELECT version FROM idstream_migrations ORDER BY version").unwrap();
    let v = stmt.query_map([], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap();
    v
}

#[tokio::test]
async fn a_data_directory_from_before_schema_versions_opens_with_everything_in_it() {
    let dir = v0_copy();
    assert!(versions(dir.path()).is_empty(), "the fixture predates schema versions");
    let observed = fixture_observations(dir.path());
    let srv = TestServer::start_in(dir.clone(), &config()).await;
    assert_eq!(versions(dir.path()), [1, 2], "migrated in place");

    // Every event, in order, with its offset.
    let events: Vec<Value> = {
        let (s, v) = srv.get("/v1/events?limit=1000", Some(KEY)).await;
        assert_eq!(s, 200, "{v}");
        v["events"].as_array().unwrap().clone()
    };
    assert_eq!(events.len(), 237);
    let offsets: Vec<u64> = events.iter().map(|e| e["offset"].as_u64().unwrap()).collect();
    assert_eq!(offsets, (1..=237).collect::<Vec<_>>());
    let count = |kind: &str| events.iter().filter(|e| e["kind"] == kind).count();
    assert_eq!((count("decision.made"), count("review.opened"), count("blocklist.added")), (59, 5, 3));
    // The decision worker's checkpoint survived: nothing is decided again.
    assert_eq!(srv.state.store.checkpoint("decisions").await.unwrap(), Some(237));
    srv.decided().await;
    assert_eq!(srv.state.log.head(), 237, "no decision was made twice");

    // Identity observations by session (the list each session's row keeps since state.db v9,
    // filled from the observations already there): every session's values, no more, no fewer.
    assert_eq!(observed.len(), 147, "the fixture's observations");
    let mut sessions: Vec<(String, String)> = observed.iter().map(|o| (o.0.clone(), o.1.clone())).collect();
    sessions.dedup();
    assert_eq!(sessions.len(), 49);
    let mut found = std::collections::BTreeSet::new();
    for (tenant, session_id) in sessions {
        let q = IdentityQuery { tenant, session_id: Some(session_id), limit: 1000, ..Default::default() };
        for o in srv.state.store.identities(q).await.unwrap() {
            found.insert((o.tenant, o.session_id, o.kind.as_str().to_owned(), o.hash, o.subject, o.seen_at_us));
        }
    }
    assert_eq!(found, observed);

    // Decisions, sessions and reviews.
    let decision = events.iter().find(|e| e["kind"] == "decision.made").unwrap();
    let (s, d) = srv.get(&format!("/v1/decisions/{}", decision["decision_id"].as_str().unwrap()), Some(KEY)).await;
    assert_eq!(s, 200, "{d}");
    assert!(d["detail"]["inputs"]["provider"].is_object(), "{d}");
    let (s, sess) = srv.get(&format!("/v1/sessions/{}", decision["session_id"].as_str().unwrap()), Some(KEY)).await;
    assert_eq!(s, 200, "{sess}");
    assert!(!sess["decisions"].as_array().unwrap().is_empty());
    let (_, all) = srv.get("/v1/reviews?status=all", Some(KEY)).await;
    let statuses: Vec<&str> =
        all["reviews"].as_array().unwrap().iter().map(|r| r["status"].as_str().unwrap()).collect();
    assert_eq!(statuses.len(), 5, "{all}");
    for (status, n) in [("open", 3), ("claimed", 1), ("resolved", 1)] {
        assert_eq!(statuses.iter().filter(|s| **s == status).count(), n, "{status}: {all}");
    }

    // Blocklists (the removed phone entry stays removed), the subject, the active ruleset.
    for (kind, n) in [("email", 1), ("document", 1), ("phone", 0)] {
        let (s, v) = srv.get(&format!("/v1/blocklists/{kind}"), Some(KEY)).await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["entries"].as_array().unwrap().len(), n, "{kind}: {v}");
    }
    let (s, subject) = srv.get("/v1/subjects/user-1", Some(KEY)).await;
    assert_eq!((s, subject["attributes"]["expected_first_name"].as_str()), (200, Some("Ana")), "{subject}");
    let (_, rulesets) = srv.get("/v1/rulesets", Some(KEY)).await;
    assert_eq!(
        rulesets["active"]["version"], "4e4b326f4ed055bd16de30d14a6998e37780577cd3c7f41a5389febcb5e1d9c4",
        "{rulesets}"
    );

    // The blocklisted email still matches: the hash key and the stored hashes agree.
    let body = crate::decisions::kyc_body("upgrade-1", "upgrade-s1", "upgrade-u1", "Approved", |v| {
        v["decision"]["email_verifications"] = serde_json::json!([{"email": "Fraud@Example.com"}]);
    });
    let (s, v) = srv.post("sandbox", &body, &didit_headers(&body, SECRET_NEW, Sig::All)).await;
    assert_eq!(s, 200, "{v}");
    srv.decided().await;
    let (_, sess) = srv.get("/v1/sessions/upgrade-s1", Some(KEY)).await;
    assert_eq!(sess["decisions"][0]["detail"]["inputs"]["blocklist"]["email"], true, "{sess}");
    assert_eq!(srv.state.log.head(), 239, "a new event and its decision");
}

#[tokio::test]
async fn a_database_from_a_newer_idstream_is_refused() {
    let dir = v0_copy();
    {
        let c = rusqlite::Connection::open(dir.path().join("events.db")).unwrap();
        c.execute_batch(
            "CREATE TABLE idstream_migrations (version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at INTEGER NOT NULL);
             INSERT INTO idstream_migrations VALUES (1, 'v1', 0), (42, 'from the future', 0);",
        )
        .unwrap();
    }
    let mut cfg = idstream_server::config::Config::from_toml(&config()).unwrap();
    cfg.server.data_dir = dir.path().to_path_buf();
    let err = idstream_server::state::AppState::open(&cfg).await.err().expect("refused").to_string();
    assert!(err.contains("schema version 42") && err.contains("newer"), "{err}");
    // Nothing was changed.
    assert_eq!(versions(dir.path()), [1, 42]);

    // The binary says the same, and `migrate` refuses too.
    let toml = dir.path().join("idstream.toml");
    std::fs::write(&toml, format!("[server]\ndata_dir = \"{}\"\nlisten = \"127.0.0.1:0\"\n", dir.path().display()))
        .unwrap();
    for verb in ["migrate", "serve"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_idstream"))
            .args([verb, "--config", toml.to_str().unwrap()])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{verb} accepted a newer database");
        assert!(stderr.contains("schema version 42"), "{verb}: {stderr}");
    }
}

#[tokio::test]
async fn migrate_upgrades_an_embedded_data_directory() {
    let dir = v0_copy();
    let toml = dir.path().join("idstream.toml");
    std::fs::write(&toml, format!("[server]\ndata_dir = \"{}\"\n", dir.path().display())).unwrap();
    let run = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_idstream"))
            .args(["migrate", "--config", toml.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let first = run();
    assert!(first.contains("applied migration 1:") && first.contains("head offset 237"), "{first}");
    let second = run();
    assert!(second.contains("up to date (version 2)"), "{second}");
    assert_eq!(versions(dir.path()), [1, 2]);
}
