//! The response cache's KV glue (wasm only): the lookup, and the write in `ctx.wait_until` so the
//! caller never waits for it. What is cached, the key and the entry are decided in
//! [`crate::cache`].

use worker::{console_log, Context, Env, KvStore};

use crate::cache::{self, Cached};
use crate::log::Event;

/// The KV binding (wrangler.toml's `[[kv_namespaces]]`).
pub const BINDING: &str = "CACHE";

/// Where a cacheable answer will be stored once it is complete.
pub struct Store {
    kv: KvStore,
    /// The request's context, owned: a stream's entry is written after the handler returned.
    ctx: Context,
    /// The entry's key.
    pub key: String,
    /// `expiration_ttl`, already clamped to KV's minimum.
    pub ttl: u64,
}

impl Store {
    /// A store for `key`; `None` when the binding is missing (the cache then stays off).
    pub fn new(env: &Env, ctx: &Context, key: String, ttl: u64) -> Option<Store> {
        let kv = env.kv(BINDING).ok()?;
        Some(Store {
            kv,
            ctx: crate::runtime::context_handle(ctx),
            key,
            ttl,
        })
    }

    /// The entry under this key; any failure (KV error, unreadable entry) is a miss.
    pub async fn lookup(&self) -> Option<Cached> {
        let text = self.kv.get(&self.key).text().await.ok()??;
        cache::parse_entry(&text)
    }

    /// Stores `answer` (a complete OpenAI answer, JSON) produced by `route`, in the background.
    pub fn put(&self, route: &str, answer: &[u8]) {
        let Some(entry) = cache::entry(route, answer) else {
            return;
        };
        let kv = self.kv.clone();
        let key = self.key.clone();
        let ttl = self.ttl;
        self.ctx.wait_until(async move {
            // As bytes: workers-rs' `put` of a `String` goes through serde_wasm_bindgen and
            // a float formatter, ~20 KB of wasm for a string KV stores as its UTF-8 anyway.
            let written = match kv.put_bytes(&key, entry.as_bytes()) {
                Ok(put) => put.expiration_ttl(ttl).execute().await,
                Err(e) => Err(e),
            };
            if let Err(e) = written {
                // The key is a hash: nothing of the request in it.
                let event = Event::new("cache_write_failed").with_detail(&format!("{key}: {e}"));
                console_log!("{}", event.to_line());
            }
        });
    }
}
