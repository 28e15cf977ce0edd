//! A read-through cache of hot rows (projects, API keys), kept coherent
//! across replicas by `LISTEN mds_invalidate` (see migration 0002).
//!
//! The cache is only used while the listener is connected: a lost listener
//! clears it and every read goes to the database until the listener is
//! back. A read that raced with an invalidation is not cached (the
//! generation counter moved), so a stale row never outlives the
//! notification that retires it. Entries also expire after [`TTL`] as a
//! safety net.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio_postgres::{AsyncMessage, NoTls};

use crate::{ApiKeyRow, ProjectRow};

pub const CHANNEL: &str = "mds_invalidate";
const TTL: Duration = Duration::from_secs(60);
const MAX_ENTRIES: usize = 10_000;

type Entries<K, V> = RwLock<HashMap<K, (Arc<V>, Instant)>>;

#[derive(Default)]
pub(crate) struct Cache {
    listening: AtomicBool,
    generation: AtomicU64,
    /// (tenant, id or slug) -> project
    projects: Entries<(String, String), ProjectRow>,
    /// key hash -> key
    api_keys: Entries<Vec<u8>, ApiKeyRow>,
    /// Woken whenever a binding's state or desired state may have changed:
    /// by this replica's writes, by `binding:` notifications from any
    /// replica, and when the listener (dis)connects.
    pub(crate) bindings_changed: tokio::sync::Notify,
}

/// Proof that a read started at a given generation, while listening.
pub(crate) struct Ticket(u64);

fn get<K: std::hash::Hash + Eq, V>(entries: &Entries<K, V>, key: &K) -> Option<Arc<V>> {
    let map = entries.read().expect("cache lock");
    let (value, at) = map.get(key)?;
    (at.elapsed() < TTL).then(|| value.clone())
}

fn put<K: std::hash::Hash + Eq, V>(entries: &Entries<K, V>, key: K, value: Arc<V>) {
    let mut map = entries.write().expect("cache lock");
    if map.len() >= MAX_ENTRIES {
        map.clear();
    }
    map.insert(key, (value, Instant::now()));
}

impl Cache {
    /// Whether the invalidation listener is connected (and so the database
    /// reachable).
    pub fn is_listening(&self) -> bool {
        self.listening.load(Ordering::Acquire)
    }

    /// Taken before a database read; `None` while the cache is off.
    pub fn ticket(&self) -> Option<Ticket> {
        self.listening
            .load(Ordering::Acquire)
            .then(|| Ticket(self.generation.load(Ordering::Acquire)))
    }

    fn still_valid(&self, ticket: &Ticket) -> bool {
        self.listening.load(Ordering::Acquire)
            && self.generation.load(Ordering::Acquire) == ticket.0
    }

    pub fn project(&self, tenant: &str, reference: &str) -> Option<Arc<ProjectRow>> {
        if !self.listening.load(Ordering::Acquire) {
            return None;
        }
        get(&self.projects, &(tenant.to_string(), reference.to_string()))
    }

    pub fn put_project(&self, ticket: Ticket, tenant: &str, reference: &str, row: Arc<ProjectRow>) {
        if self.still_valid(&ticket) {
            put(
                &self.projects,
                (tenant.to_string(), reference.to_string()),
                row,
            );
        }
    }

    pub fn api_key(&self, hash: &[u8]) -> Option<Arc<ApiKeyRow>> {
        if !self.listening.load(Ordering::Acquire) {
            return None;
        }
        let row = get(&self.api_keys, &hash.to_vec())?;
        let live = row.expires_at.is_none_or(|at| at > chrono::Utc::now());
        live.then_some(row)
    }

    pub fn put_api_key(&self, ticket: Ticket, hash: &[u8], row: Arc<ApiKeyRow>) {
        if self.still_valid(&ticket) {
            put(&self.api_keys, hash.to_vec(), row);
        }
    }

    /// Drops what a notification (`project:<id>`, `api_key:<id>`) names;
    /// `binding:<service id>` caches nothing and only wakes waiters.
    pub fn invalidate(&self, payload: &str) {
        if payload.starts_with("binding:") {
            self.bindings_changed.notify_waiters();
            return;
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
        if let Some(id) = payload.strip_prefix("project:") {
            self.projects
                .write()
                .expect("cache lock")
                .retain(|_, (row, _)| row.id != id);
        } else if let Some(id) = payload.strip_prefix("api_key:") {
            self.api_keys
                .write()
                .expect("cache lock")
                .retain(|_, (row, _)| row.id != id);
        } else {
            self.clear();
        }
    }

    fn clear(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.projects.write().expect("cache lock").clear();
        self.api_keys.write().expect("cache lock").clear();
    }

    fn set_listening(&self, on: bool) {
        // Whatever was cached may have missed notifications: start over.
        self.clear();
        self.listening.store(on, Ordering::Release);
        // Waiters may have missed notifications too: they look again.
        self.bindings_changed.notify_waiters();
    }
}

/// Keeps a `LISTEN` connection open for the life of the store, reconnecting
/// with backoff; the cache is on only while it is connected.
pub(crate) async fn listen(config: tokio_postgres::Config, cache: Arc<Cache>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match config.connect(NoTls).await {
            Ok((client, mut connection)) => {
                // The connection is driven by its own task, which forwards
                // notifications; it ends (closing the channel) when the
                // connection does.
                let (tx, mut payloads) = tokio::sync::mpsc::unbounded_channel::<String>();
                let driver = tokio::spawn(async move {
                    let mut messages =
                        futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                    while let Some(Ok(message)) = messages.next().await {
                        if let AsyncMessage::Notification(n) = message {
                            if tx.send(n.payload().to_string()).is_err() {
                                break;
                            }
                        }
                    }
                });
                if client
                    .batch_execute(&format!("LISTEN {CHANNEL}"))
                    .await
                    .is_ok()
                {
                    cache.set_listening(true);
                    backoff = Duration::from_millis(100);
                    while let Some(payload) = payloads.recv().await {
                        cache.invalidate(&payload);
                    }
                    tracing::debug!("cache listener disconnected");
                }
                cache.set_listening(false);
                drop(client);
                driver.abort();
            }
            Err(e) => tracing::debug!(error = %e, "cache listener cannot connect"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_row(id: &str) -> Arc<ApiKeyRow> {
        Arc::new(ApiKeyRow {
            id: id.into(),
            tenant_id: "t".into(),
            name: "n".into(),
            token_prefix: "p".into(),
            scopes: vec![],
            created_at: chrono::Utc::now(),
            updated_at: chrono::Utc::now(),
            last_used_at: None,
            expires_at: None,
        })
    }

    #[test]
    fn off_until_listening() {
        let cache = Cache::default();
        assert!(cache.ticket().is_none());
        cache.set_listening(true);
        let ticket = cache.ticket().unwrap();
        cache.put_api_key(ticket, b"h", key_row("k1"));
        assert!(cache.api_key(b"h").is_some());
        cache.set_listening(false);
        assert!(cache.api_key(b"h").is_none());
    }

    #[test]
    fn a_read_that_raced_an_invalidation_is_not_cached() {
        let cache = Cache::default();
        cache.set_listening(true);
        let ticket = cache.ticket().unwrap();
        cache.invalidate("api_key:k1");
        cache.put_api_key(ticket, b"h", key_row("k1"));
        assert!(cache.api_key(b"h").is_none());
    }

    #[test]
    fn binding_notifications_wake_waiters_and_keep_the_cache() {
        let cache = Cache::default();
        cache.set_listening(true);
        cache.put_api_key(cache.ticket().unwrap(), b"a", key_row("k1"));
        let woken = cache.bindings_changed.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        cache.invalidate("binding:ds_1");
        assert!(cache.api_key(b"a").is_some());
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(std::future::Future::poll(woken.as_mut(), &mut cx).is_ready());
    }

    #[test]
    fn invalidation_drops_only_its_row() {
        let cache = Cache::default();
        cache.set_listening(true);
        cache.put_api_key(cache.ticket().unwrap(), b"a", key_row("k1"));
        cache.put_api_key(cache.ticket().unwrap(), b"b", key_row("k2"));
        cache.invalidate("api_key:k1");
        assert!(cache.api_key(b"a").is_none());
        assert!(cache.api_key(b"b").is_some());
    }
}
