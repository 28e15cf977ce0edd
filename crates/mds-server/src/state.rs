//! What every handler shares.

use std::sync::{Arc, OnceLock};

use mds_crypto::MasterKey;
use mds_engines::PostgresEngine;
use mds_store::Store;

use crate::error::ApiError;

#[derive(Clone)]
pub struct AppState(Arc<Shared>);

pub struct Shared {
    pub master_key: MasterKey,
    pub max_body_bytes: usize,
    /// Set once the engine is up and migrations are applied.
    store: OnceLock<Store>,
    engine: OnceLock<PostgresEngine>,
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    pub fn new(master_key: MasterKey, max_body_bytes: usize) -> Self {
        Self(Arc::new(Shared {
            master_key,
            max_body_bytes,
            store: OnceLock::new(),
            engine: OnceLock::new(),
        }))
    }

    /// Marks the platform ready: from now on the API serves.
    pub fn set_ready(&self, engine: PostgresEngine, store: Store) {
        let _ = self.engine.set(engine);
        let _ = self.store.set(store);
    }

    pub fn store(&self) -> Result<&Store, ApiError> {
        self.store
            .get()
            .ok_or_else(|| ApiError::unavailable("mds is starting; retry shortly"))
    }

    pub fn engine(&self) -> Option<&PostgresEngine> {
        self.engine.get()
    }

    pub fn is_ready(&self) -> bool {
        self.store.get().is_some()
    }

    /// Ready, and the database reachable right now.
    pub fn is_connected(&self) -> bool {
        self.store.get().is_some_and(Store::is_connected)
    }
}
