//! Metadata: one redb database, one table per kind of record, values stored as JSON.
//!
//! ```text
//! images      image id ("sha256:<hex>")      -> image::ImageRecord
//! tags        reference ("repo:tag")          -> image id
//! containers  container id (64 hex)           -> container::ContainerRecord
//! networks    network id (64 hex)             -> network::NetworkRecord
//! ```
//! The daemon is the only process that opens the file; redb holds an exclusive lock on it.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
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
    redb::CommitError
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

pub struct Meta {
    db: Database,
}

impl Meta {
    pub fn open(path: &Path) -> Result<Meta, MetaError> {
        let db = Database::create(path)?;
        let tx = db.begin_write()?;
        for table in Table::ALL {
            tx.open_table(table.def())?;
        }
        tx.commit()?;
        Ok(Meta { db })
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

    /// Applies all changes in one transaction: all of them land, or none.
    pub fn apply(&self, changes: Vec<Change>) -> Result<(), MetaError> {
        let tx = self.db.begin_write()?;
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
}
