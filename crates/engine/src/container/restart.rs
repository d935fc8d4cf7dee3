//! `restart`: stop when running, then start.

use std::sync::Arc;

use super::ContainerError;
use crate::Engine;

impl Engine {
    pub async fn restart(
        self: &Arc<Self>,
        key: &str,
        timeout: Option<i64>,
    ) -> Result<(), ContainerError> {
        let c = self.registry().lookup(key)?;
        let _op = c.op.lock().await;
        if c.record().state.status.is_running() {
            self.stop_locked(&c, timeout, None).await?;
        }
        self.start_locked(&c).await
    }
}
