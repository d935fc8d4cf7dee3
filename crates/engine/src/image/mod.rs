//! STUB (lead worktree only): replaced by the image store.
use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use wharf_api::models;

use crate::error::ErrorKind;
use crate::meta::Meta;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("No such image: {0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
}
impl ImageError {
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::NotFound
    }
}
pub enum InUse {
    No,
    Stopped(String),
    Running(String),
}
#[derive(Debug, Clone, Default)]
pub struct ImageConfig {
    pub user: Option<String>,
    pub env: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    pub working_dir: Option<String>,
    pub exposed_ports: Option<Vec<String>>,
    pub volumes: Option<Vec<String>>,
    pub labels: Option<HashMap<String, String>>,
    pub stop_signal: Option<String>,
    pub healthcheck: Option<models::HealthConfig>,
    pub shell: Option<Vec<String>>,
    pub on_build: Option<Vec<String>>,
}
#[derive(Debug, Clone, Default)]
pub struct Image {
    pub id: String,
    pub repo_tags: Vec<String>,
    pub config: ImageConfig,
    pub size: u64,
}
impl Image {
    pub fn created_unix(&self) -> i64 {
        0
    }
}
pub struct ImageStore;
impl ImageStore {
    pub fn open(_root: &Path, _meta: Arc<Meta>) -> Result<ImageStore, ImageError> {
        Ok(ImageStore)
    }
    pub fn resolve(&self, name: &str) -> Result<Image, ImageError> {
        Err(ImageError::NotFound(name.into()))
    }
    pub fn list(&self) -> Result<Vec<Image>, ImageError> {
        Ok(vec![])
    }
    pub fn import(&self, _r: &mut dyn Read, _c: &[String], _reference: Option<&str>, _m: Option<&str>) -> Result<Image, ImageError> {
        Err(ImageError::NotFound(String::new()))
    }
    pub fn load(&self, _r: &mut dyn Read) -> Result<Vec<String>, ImageError> {
        Ok(vec![])
    }
    pub fn save(&self, _names: &[String], _out: &mut dyn Write) -> Result<(), ImageError> {
        Ok(())
    }
    pub fn tag(&self, _s: &str, _t: &str) -> Result<(), ImageError> {
        Ok(())
    }
    pub fn remove(&self, _n: &str, _f: bool, _in_use: &dyn Fn(&str) -> InUse) -> Result<Vec<models::ImageDeleteResponseItem>, ImageError> {
        Ok(vec![])
    }
    pub fn prune(&self, _all: bool, _in_use: &dyn Fn(&str) -> InUse) -> Result<(Vec<models::ImageDeleteResponseItem>, u64), ImageError> {
        Ok((vec![], 0))
    }
    pub fn history(&self, _n: &str) -> Result<Vec<models::ImageHistoryResponseItem>, ImageError> {
        Ok(vec![])
    }
    pub fn inspect(&self, _i: &Image) -> models::ImageInspect {
        Default::default()
    }
    pub fn summary(&self, _i: &Image) -> models::ImageSummary {
        Default::default()
    }
    pub fn lower_dirs(&self, _i: &Image) -> Result<Vec<PathBuf>, ImageError> {
        Ok(vec![])
    }
}
