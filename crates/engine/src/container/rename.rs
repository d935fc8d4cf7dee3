//! `rename`: a new name for a container, checked against the name index.

use std::sync::Arc;

use super::{ContainerError, valid_name};
use crate::Engine;
use crate::meta::Table;

impl Engine {
    pub async fn rename(self: &Arc<Self>, key: &str, new_name: &str) -> Result<(), ContainerError> {
        let new_name = new_name.strip_prefix('/').unwrap_or(new_name);
        if !valid_name(new_name) {
            return Err(ContainerError::BadName(new_name.to_string()));
        }
        let c = self.registry().lookup(key)?;
        let _op = c.op.lock().await;
        let mut registry = self.registry();
        let (id, old) = {
            let r = c.record();
            (r.id.clone(), r.name.clone())
        };
        if old == new_name {
            return Err(ContainerError::Conflict(
                "Renaming a container with the same name as its current name".into(),
            ));
        }
        if let Some(owner) = registry.name_owner(new_name) {
            return Err(ContainerError::NameInUse {
                name: new_name.to_string(),
                id: owner.clone(),
            });
        }
        let record = {
            let mut r = c.record();
            r.name = new_name.to_string();
            r.clone()
        };
        if let Err(e) = self.meta.put(Table::Containers, &id, &record) {
            c.record().name = old;
            return Err(e.into());
        }
        registry.rename(&id, &old, new_name);
        Ok(())
    }
}
