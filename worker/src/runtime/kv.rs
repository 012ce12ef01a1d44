//! The response cache's KV glue (wasm only): the lookup, and the write in `ctx.wait_until` so the
//! caller never waits for it. What is cached, the key and the entry are decided in
//! [`crate::cache`].

use worker::js_sys::{Function, Object, Promise, Reflect, Uint8Array};
use worker::wasm_bindgen::{JsCast, JsValue};
use worker::{Context, Env};

use super::wake::settled;
use crate::cache::{self, Cached};
use crate::log::Event;

/// The KV binding (wrangler.toml's `[[kv_namespaces]]`).
pub const BINDING: &str = "CACHE";

/// Where a cacheable answer will be stored once it is complete.
pub struct Store {
    kv: Kv,
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
        let kv = Kv::of(env)?;
        Some(Store {
            kv,
            ctx: crate::runtime::context_handle(ctx),
            key,
            ttl,
        })
    }

    /// The entry under this key; any failure (KV error, unreadable entry) is a miss.
    pub async fn lookup(&self) -> Option<Cached> {
        let text = self.kv.get_text(&self.key).await.ok()??;
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
            let written = kv.put(&key, entry.as_bytes(), ttl).await;
            if let Err(e) = written {
                // The key is a hash: nothing of the request in it.
                let event = Event::new("cache_write_failed").with_detail(&format!("{key}: {e}"));
                super::log_line(&event.to_line());
            }
        });
    }
}

/// The KV namespace through the runtime's binding. workers-rs' `KvStore` builds every call's
/// options (`{type}`, `{expirationTtl}`) with serde-wasm-bindgen, several KB of wasm for two
/// small objects; these two calls build them directly.
#[derive(Clone)]
struct Kv(Object);

impl Kv {
    /// The binding; `None` when it is missing.
    fn of(env: &Env) -> Option<Kv> {
        let this = Reflect::get(env, &BINDING.into()).ok()?;
        this.is_object().then(|| Kv(this.unchecked_into()))
    }

    /// Calls the namespace's method `name` with `args`.
    async fn call(&self, name: &str, args: &[JsValue]) -> worker::Result<JsValue> {
        let method: Function = Reflect::get(&self.0, &name.into())?.dyn_into()?;
        let args: worker::js_sys::Array = args.iter().collect();
        let promise: Promise = method.apply(&self.0, &args)?.dyn_into()?;
        Ok(settled(promise).await?)
    }

    /// The text under `key`; `None` when there is none.
    async fn get_text(&self, key: &str) -> worker::Result<Option<String>> {
        let value = self.call("get", &[key.into(), "text".into()]).await?;
        Ok(value.as_string())
    }

    /// Stores `value` under `key`, to expire `ttl` seconds from now.
    async fn put(&self, key: &str, value: &[u8], ttl: u64) -> worker::Result<()> {
        let options = Object::new();
        Reflect::set(&options, &"expirationTtl".into(), &(ttl as f64).into())?;
        let value = Uint8Array::from(value);
        self.call("put", &[key.into(), value.into(), options.into()])
            .await?;
        Ok(())
    }
}
