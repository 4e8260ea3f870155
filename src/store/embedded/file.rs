//! The store's redb file, reopened in place after an I/O error. redb refuses every write after an
//! I/O error of its file (a full disk, a quota, a file size limit) until the file is opened again;
//! reopening it where the store stands, once space may be back, lets writes resume without a
//! restart of twinlink.

use redb::Database;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// How often a store whose file failed tries to reopen it, at most.
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// How long a reopening waits for the work still using the failed file to finish.
const DRAIN_WAIT: Duration = Duration::from_secs(5);

/// The open file and whether it must be reopened.
pub(super) struct StoreFile {
    path: PathBuf,
    db: RwLock<Option<Arc<Database>>>,
    /// Set when an operation failed on an I/O error of the file.
    failed: AtomicBool,
    /// Serializes reopening, with the time of the last attempt.
    reopening: Mutex<Option<Instant>>,
}

/// Why the file cannot be used at this moment (the caller turns it into a 503).
pub(super) enum Unavailable {
    /// A reopening was tried less than [`RETRY_EVERY`] ago, or work still holds the old file.
    NotYet,
    /// Reopening failed (the disk is still full?).
    Reopen(redb::DatabaseError),
}

impl StoreFile {
    /// The file at `path`, open as `db`.
    pub(super) fn new(path: PathBuf, db: Database) -> StoreFile {
        StoreFile {
            path,
            db: RwLock::new(Some(Arc::new(db))),
            failed: AtomicBool::new(false),
            reopening: Mutex::new(None),
        }
    }

    /// Notes that an operation on the file failed on an I/O error: the next use reopens it.
    pub(super) fn failed(&self) {
        self.failed.store(true, Ordering::SeqCst);
    }

    /// The open file; after a failure, reopened first. `Ok(true)` in the second member when this
    /// call reopened it (the caller then reloads what it keeps in memory from the file). Blocking:
    /// call it off the async runtime's threads.
    pub(super) fn get(&self) -> Result<(Arc<Database>, bool), Unavailable> {
        if !self.failed.load(Ordering::SeqCst) {
            if let Some(db) = self.db.read().unwrap_or_else(|p| p.into_inner()).clone() {
                return Ok((db, false));
            }
        }
        let mut last = self.reopening.lock().unwrap_or_else(|p| p.into_inner());
        if !self.failed.load(Ordering::SeqCst) {
            // Reopened by another caller meanwhile.
            if let Some(db) = self.db.read().unwrap_or_else(|p| p.into_inner()).clone() {
                return Ok((db, false));
            }
        }
        if last.is_some_and(|t| t.elapsed() < RETRY_EVERY) {
            return Err(Unavailable::NotYet);
        }
        *last = Some(Instant::now());
        let mut slot = self.db.write().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = slot.take() {
            // The file can be opened again only once nothing holds it.
            let since = Instant::now();
            while Arc::strong_count(&old) > 1 {
                if since.elapsed() > DRAIN_WAIT {
                    *slot = Some(old);
                    return Err(Unavailable::NotYet);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            drop(old);
        }
        match Database::create(&self.path) {
            Ok(db) => {
                let db = Arc::new(db);
                *slot = Some(db.clone());
                self.failed.store(false, Ordering::SeqCst);
                tracing::warn!(file = %self.path.display(), "the embedded store reopened its file after an I/O error; writes resume");
                Ok((db, true))
            }
            Err(e) => Err(Unavailable::Reopen(e)),
        }
    }
}
