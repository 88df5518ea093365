//! SQLite plumbing shared by the embedded log (`events.db`) and store (`state.db`): durable
//! connections, reader pools, the group-commit writer thread, background WAL checkpoints, and
//! the data directory's lock file.
//!
//! Each database has exactly one writer thread owning its only writing connection. Commands
//! from every caller queue on a bounded channel; the writer takes everything queued (up to a
//! batch size), applies it in one transaction and commits — one WAL fsync for the batch —
//! before answering any caller. The two databases have a writer each, so ingest and decisions
//! commit in parallel.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot, watch};

/// Opens a connection whose commits are durable: WAL + `synchronous=FULL` (a commit returns
/// only after the WAL is fsync'd — what makes an acknowledgement mean "on disk").
pub fn open_durable(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "busy_timeout", 5000)?;
    Ok(conn)
}

/// Takes the data directory's lock: one idstream process per directory (two writers would
/// break the offset invariant).
pub fn lock_dir(dir: &Path) -> Result<File, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create data directory {}: {e}", dir.display()))?;
    let lock_path = dir.join("idstream.lock");
    let lock = File::create(&lock_path).map_err(|e| format!("cannot create {}: {e}", lock_path.display()))?;
    lock.try_lock().map_err(|_| {
        format!("{} is in use by another idstream process (lock file {})", dir.display(), lock_path.display())
    })?;
    Ok(lock)
}

/// Read-only connections to one database, reused; readers never block the writer (WAL).
pub struct ReaderPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl ReaderPool {
    pub fn new(path: PathBuf, first: Option<Connection>) -> ReaderPool {
        ReaderPool { path, idle: Mutex::new(first.into_iter().collect()) }
    }

    fn take(&self) -> rusqlite::Result<Connection> {
        if let Some(c) = self.idle.lock().expect("reader pool poisoned").pop() {
            return Ok(c);
        }
        let c = open_durable(&self.path)?;
        c.pragma_update(None, "query_only", true)?;
        Ok(c)
    }

    fn give(&self, c: Connection) {
        let mut idle = self.idle.lock().expect("reader pool poisoned");
        if idle.len() < 16 {
            idle.push(c);
        }
    }

    /// Runs `f` on a pooled connection, on the blocking pool.
    pub async fn read<T: Send + 'static>(
        self: &std::sync::Arc<Self>,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, String> {
        let pool = self.clone();
        tokio::task::spawn_blocking(move || {
            let conn = pool.take().map_err(|e| e.to_string())?;
            let out = f(&conn).map_err(|e| e.to_string());
            pool.give(conn);
            out
        })
        .await
        .map_err(|e| format!("reader task failed: {e}"))?
    }
}

/// A message to a writer thread.
pub enum Msg<C> {
    Cmd(C),
    /// Finish what is queued before this, answer commands queued after it with `closed`, stop.
    Shutdown(oneshot::Sender<()>),
}

/// Starts a writer thread: it takes every queued command (until their `size`s reach
/// `max_batch`) and hands the batch to `commit`, which applies it in one transaction and answers
/// each command. Commands queued after a shutdown are handed to `closed`.
pub fn spawn_writer<C: Send + 'static>(
    name: &str,
    max_batch: usize,
    mut rx: mpsc::Receiver<Msg<C>>,
    size: fn(&C) -> usize,
    mut commit: impl FnMut(Vec<C>, usize) + Send + 'static,
    closed: fn(C),
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name(name.into()).spawn(move || {
        let mut batch: Vec<C> = Vec::new();
        while let Some(first) = rx.blocking_recv() {
            let mut shutdown = None;
            let mut total = 0;
            let mut next = Some(first);
            while let Some(m) = next.take() {
                match m {
                    Msg::Cmd(c) => {
                        total += size(&c);
                        batch.push(c);
                    }
                    Msg::Shutdown(done) => {
                        shutdown = Some(done);
                        break;
                    }
                }
                if total < max_batch {
                    next = rx.try_recv().ok();
                }
            }
            if !batch.is_empty() {
                commit(std::mem::take(&mut batch), total);
            }
            if let Some(done) = shutdown {
                rx.close();
                while let Ok(m) = rx.try_recv() {
                    match m {
                        Msg::Cmd(c) => closed(c),
                        Msg::Shutdown(d) => {
                            let _ = d.send(());
                        }
                    }
                }
                let _ = done.send(());
                return;
            }
        }
    })
}

/// Copies committed WAL frames into the database file in the background: every 50 ms with new
/// commits, a PASSIVE checkpoint, which never blocks the writer or readers. (A RESTART
/// checkpoint here was measured to make tail latency worse: it waits for the writer.) Stops when
/// `changes` closes (the writer is gone), after one last TRUNCATE checkpoint.
pub fn spawn_checkpointer<T: Send + Sync + 'static>(
    name: &str,
    conn: Connection,
    mut changes: watch::Receiver<T>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name(name.into()).spawn(move || {
        let checkpoint = |mode: &str| conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |_| Ok(()));
        loop {
            std::thread::sleep(Duration::from_millis(50));
            match changes.has_changed() {
                Ok(true) => {
                    changes.mark_unchanged();
                    if let Err(e) = checkpoint("PASSIVE") {
                        tracing::warn!(error = %e, "WAL checkpoint failed; will retry");
                    }
                }
                Ok(false) => {}
                Err(_) => {
                    let _ = checkpoint("TRUNCATE");
                    return;
                }
            }
        }
    })
}

/// A database's threads (writer, checkpointer, ...), joined on close so that a database closed
/// and reopened in one process never has two of them.
#[derive(Default)]
pub struct Threads(Mutex<Vec<JoinHandle<()>>>);

impl Threads {
    pub fn add(&self, t: JoinHandle<()>) {
        self.0.lock().expect("threads lock").push(t);
    }

    /// Waits for every thread (they stop once their writer is gone).
    pub async fn join(&self) {
        let threads = std::mem::take(&mut *self.0.lock().expect("threads lock"));
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}

/// The writer's own auto-checkpoint interval (frames). By then the background checkpointer has
/// copied nearly everything, so it is short, and because it completes, the next commit restarts
/// the WAL from its beginning. Without that the WAL grows without bound under sustained load,
/// and every commit pays for the kernel allocating and zeroing fresh file blocks (measured:
/// ~30% of the writer's time).
pub const WAL_AUTOCHECKPOINT: i64 = 4000;
