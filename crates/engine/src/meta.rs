//! Metadata: one redb database, one table per kind of record, values stored as JSON.
//!
//! ```text
//! images      image id ("sha256:<hex>")      -> image::ImageRecord
//! tags        reference ("repo:tag")          -> image id
//! containers  container id (64 hex)           -> container::ContainerRecord
//! networks    network id (64 hex)             -> network::NetworkRecord
//! ```
//! The daemon is the only process that opens the file; redb holds an exclusive lock on it.
//!
//! Changes that the next start of the daemon can rebuild or settle (a container's running and
//! exit states, a removal) are committed without an fsync ([`Meta::apply_soon`]): visible at
//! once, and made durable by one commit a moment later ([`FLUSH_AFTER`]), together with
//! whatever else changed meanwhile. Everything else is durable before the call returns.

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("metadata database")]
    Db(#[from] redb::Error),
    #[error("metadata record {table}/{key} is corrupt")]
    Corrupt {
        table: &'static str,
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("encoding metadata record")]
    Encode(#[from] serde_json::Error),
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for MetaError {
            fn from(e: $t) -> Self {
                MetaError::Db(e.into())
            }
        }
    )*};
}
from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

/// The tables of the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Images,
    Tags,
    Containers,
    Networks,
}

impl Table {
    const ALL: [Table; 4] = [
        Table::Images,
        Table::Tags,
        Table::Containers,
        Table::Networks,
    ];

    fn name(self) -> &'static str {
        match self {
            Table::Images => "images",
            Table::Tags => "tags",
            Table::Containers => "containers",
            Table::Networks => "networks",
        }
    }

    fn def(self) -> TableDefinition<'static, &'static str, &'static [u8]> {
        TableDefinition::new(self.name())
    }
}

/// One change in a [`Meta::apply`] batch.
pub enum Change {
    Put(Table, String, Vec<u8>),
    Delete(Table, String),
}

impl Change {
    pub fn put<T: Serialize>(
        table: Table,
        key: impl Into<String>,
        value: &T,
    ) -> Result<Change, MetaError> {
        Ok(Change::Put(table, key.into(), serde_json::to_vec(value)?))
    }
}

/// How long [`Meta::apply_soon`] changes may wait for the commit that makes them durable: long
/// enough to gather a container's start, exit and removal into one fsync.
pub const FLUSH_AFTER: Duration = Duration::from_millis(25);

pub struct Meta {
    db: Arc<Database>,
    flusher: Flusher,
}

#[derive(Default)]
struct FlushState {
    /// Changes were committed without an fsync since the last durable commit.
    dirty: bool,
    stop: bool,
}

#[derive(Default)]
struct FlushShared {
    state: Mutex<FlushState>,
    wake: Condvar,
}

impl FlushShared {
    fn lock(&self) -> MutexGuard<'_, FlushState> {
        // Two flags; a panic while they were held cannot leave them torn.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The thread that makes [`Meta::apply_soon`] changes durable.
struct Flusher {
    shared: Arc<FlushShared>,
    thread: Option<JoinHandle<()>>,
}

impl Flusher {
    fn start(db: Arc<Database>) -> Flusher {
        let shared = Arc::new(FlushShared::default());
        let for_thread = shared.clone();
        let thread = std::thread::Builder::new()
            .name("meta-flush".into())
            .spawn(move || flush_loop(&db, &for_thread))
            .ok();
        Flusher { shared, thread }
    }

    fn mark_dirty(&self) {
        self.shared.lock().dirty = true;
        self.shared.wake.notify_one();
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.wake.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn flush_loop(db: &Database, shared: &FlushShared) {
    let mut st = shared.lock();
    loop {
        while !st.dirty && !st.stop {
            st = shared.wake.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        if !st.dirty {
            return;
        }
        let deadline = Instant::now() + FLUSH_AFTER;
        while !st.stop {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            st = shared
                .wake
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        st.dirty = false;
        drop(st);
        // An empty durable commit persists every commit before it.
        let result = db
            .begin_write()
            .map_err(MetaError::from)
            .and_then(|tx| Ok(tx.commit()?));
        if let Err(e) = result {
            tracing::error!(error = %e, "making metadata durable");
        }
        st = shared.lock();
    }
}

impl Meta {
    pub fn open(path: &Path) -> Result<Meta, MetaError> {
        let db = Database::create(path)?;
        let tx = db.begin_write()?;
        for table in Table::ALL {
            tx.open_table(table.def())?;
        }
        tx.commit()?;
        let db = Arc::new(db);
        Ok(Meta {
            flusher: Flusher::start(db.clone()),
            db,
        })
    }

    pub fn get<T: DeserializeOwned>(
        &self,
        table: Table,
        key: &str,
    ) -> Result<Option<T>, MetaError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(table.def())?;
        let Some(raw) = t.get(key)? else {
            return Ok(None);
        };
        decode(table, key, raw.value()).map(Some)
    }

    pub fn list<T: DeserializeOwned>(&self, table: Table) -> Result<Vec<(String, T)>, MetaError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(table.def())?;
        let mut out = Vec::new();
        for row in t.iter()? {
            let (k, v) = row?;
            let key = k.value().to_string();
            let value = decode(table, &key, v.value())?;
            out.push((key, value));
        }
        Ok(out)
    }

    pub fn put<T: Serialize>(&self, table: Table, key: &str, value: &T) -> Result<(), MetaError> {
        self.apply(vec![Change::put(table, key, value)?])
    }

    pub fn delete(&self, table: Table, key: &str) -> Result<(), MetaError> {
        self.apply(vec![Change::Delete(table, key.to_string())])
    }

    /// [`Meta::put`], durable within [`FLUSH_AFTER`] instead of on return.
    pub fn put_soon<T: Serialize>(
        &self,
        table: Table,
        key: &str,
        value: &T,
    ) -> Result<(), MetaError> {
        self.apply_soon(vec![Change::put(table, key, value)?])
    }

    /// [`Meta::delete`], durable within [`FLUSH_AFTER`] instead of on return.
    pub fn delete_soon(&self, table: Table, key: &str) -> Result<(), MetaError> {
        self.apply_soon(vec![Change::Delete(table, key.to_string())])
    }

    /// [`Meta::apply`] without waiting for the disk: the changes are visible at once and
    /// durable within [`FLUSH_AFTER`]. Only for state a restarted daemon can rebuild: a crash
    /// in between loses them.
    pub fn apply_soon(&self, changes: Vec<Change>) -> Result<(), MetaError> {
        self.commit(changes, Durability::None)?;
        self.flusher.mark_dirty();
        Ok(())
    }

    /// Applies all changes in one transaction: all of them land, or none.
    pub fn apply(&self, changes: Vec<Change>) -> Result<(), MetaError> {
        self.commit(changes, Durability::Immediate)
    }

    fn commit(&self, changes: Vec<Change>, durability: Durability) -> Result<(), MetaError> {
        let mut tx = self.db.begin_write()?;
        tx.set_durability(durability)?;
        for change in &changes {
            match change {
                Change::Put(table, key, value) => {
                    tx.open_table(table.def())?
                        .insert(key.as_str(), value.as_slice())?;
                }
                Change::Delete(table, key) => {
                    tx.open_table(table.def())?.remove(key.as_str())?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }
}

fn decode<T: DeserializeOwned>(table: Table, key: &str, raw: &[u8]) -> Result<T, MetaError> {
    serde_json::from_slice(raw).map_err(|source| MetaError::Corrupt {
        table: table.name(),
        key: key.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_is_atomic_and_survives_reopen() {
        let dir = std::env::temp_dir().join(format!("wharf-meta-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("meta.redb");
        {
            let meta = Meta::open(&path).unwrap();
            meta.apply(vec![
                Change::put(Table::Tags, "busybox:latest", &"sha256:aa").unwrap(),
                Change::put(Table::Images, "sha256:aa", &serde_json::json!({"x": 1})).unwrap(),
            ])
            .unwrap();
            meta.delete(Table::Tags, "missing").unwrap();
        }
        let meta = Meta::open(&path).unwrap();
        let tag: Option<String> = meta.get(Table::Tags, "busybox:latest").unwrap();
        assert_eq!(tag.as_deref(), Some("sha256:aa"));
        let images: Vec<(String, serde_json::Value)> = meta.list(Table::Images).unwrap();
        assert_eq!(images.len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn soon_changes_are_visible_at_once_and_kept() {
        let dir = std::env::temp_dir().join(format!("wharf-meta-soon-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("meta.redb");
        {
            let meta = Meta::open(&path).unwrap();
            meta.put_soon(Table::Containers, "a", &1).unwrap();
            meta.put_soon(Table::Containers, "b", &2).unwrap();
            assert_eq!(meta.get::<i32>(Table::Containers, "a").unwrap(), Some(1));
            // Let the flusher commit once, then change more and close before it runs again.
            std::thread::sleep(FLUSH_AFTER * 4);
            meta.delete_soon(Table::Containers, "a").unwrap();
            assert_eq!(meta.get::<i32>(Table::Containers, "a").unwrap(), None);
        }
        let meta = Meta::open(&path).unwrap();
        let rows: Vec<(String, i32)> = meta.list(Table::Containers).unwrap();
        assert_eq!(rows, vec![("b".to_string(), 2)]);
        drop(meta);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
