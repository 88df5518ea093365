#!/usr/bin/env python3
"""Pages written per session status update by the embedded store's SQL, before and after f48b29e:
the `sessions` table and its `sessions_by_subject` index as state.db has them, N sessions,
then U status updates of random existing sessions, B per commit (a session's webhooks arrive
minutes apart, so each lands in a different commit). Counts WAL frames with auto-checkpoints off.

    python3 scripts/bench-session-pages.py          # both variants, a few seconds

The statements are copies of `Op::UpsertSession` in crates/idstream-server/src/store/sqlite.rs.
"""
import os, random, sqlite3, sys, tempfile, uuid
N, U, B = 200_000, 20_000, 100
OLD = """INSERT INTO sessions (tenant, session_id, subject, provider_status, state, outcome, decision_id, created_at, updated_at)
 VALUES (?1, ?2, ?3, ?4, ?5, NULL, NULL, ?6, ?6)
 ON CONFLICT (tenant, session_id) DO UPDATE SET subject = COALESCE(excluded.subject, subject),
 provider_status = COALESCE(excluded.provider_status, provider_status), state = excluded.state, updated_at = excluded.updated_at"""
NEW = OLD.replace("SET subject = COALESCE(excluded.subject, subject),\n provider_status", "SET provider_status")
SUBJ = "UPDATE sessions SET subject = ?3 WHERE tenant = ?1 AND session_id = ?2 AND subject IS NOT ?3"
def run(variant):
    path = os.path.join(tempfile.gettempdir(), f"idstream-session-pages-{variant}.db")
    for s in ["", "-wal", "-shm"]:
        if os.path.exists(path + s): os.remove(path + s)
    c = sqlite3.connect(path, isolation_level=None)
    c.execute("PRAGMA journal_mode=WAL"); c.execute("PRAGMA wal_autocheckpoint=0")
    c.executescript("""CREATE TABLE sessions (tenant TEXT NOT NULL, session_id TEXT NOT NULL, subject TEXT, provider_status TEXT,
      state TEXT NOT NULL, outcome TEXT, decision_id TEXT, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL,
      PRIMARY KEY (tenant, session_id)) WITHOUT ROWID;
      CREATE INDEX sessions_by_subject ON sessions (tenant, subject);""")
    rnd = random.Random(7)
    ids = [str(uuid.UUID(int=rnd.getrandbits(128))) for _ in range(N)]
    c.execute("BEGIN")
    for i, s in enumerate(ids):
        c.execute(OLD, ("t", s, f"user-{i}", "Not Started", "not_started", 1))
    c.execute("COMMIT"); c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    for k in range(U // B):
        c.execute("BEGIN")
        for s in rnd.sample(range(N), B):
            args = ("t", ids[s], f"user-{s}", "In Progress", "in_progress", 2)
            if variant == "old":
                c.execute(OLD, args)
            else:
                c.execute(NEW, args); c.execute(SUBJ, ("t", ids[s], f"user-{s}"))
        c.execute("COMMIT")
    frames = os.path.getsize(path + "-wal") // (4096 + 24)
    print(f"{variant}: {frames} WAL frames for {U} updates in {U // B} commits = {frames / U:.2f} pages per update")
    c.close()
    for s in ["", "-wal", "-shm"]:
        if os.path.exists(path + s): os.remove(path + s)
for v in sys.argv[1:] or ["old", "new"]:
    run(v)
