//! A Durable Object's storage through the runtime's binding, as the limiter and the stream
//! store use it: text values, byte chunks, a listing by prefix, the alarm.
//!
//! workers-rs' `Storage` reads a value and builds a listing's options with serde-wasm-bindgen;
//! for a string and a `{prefix}` object that is several KB of wasm (the same as the KV glue's,
//! see `kv.rs`). These calls hand the runtime its own values instead.

use std::time::Duration;

use super::wake::settled;
use worker::js_sys::{Date, Map, Object, Reflect};
use worker::wasm_bindgen::{JsCast, JsValue};
use worker::worker_sys::DurableObjectStorage;
use worker::{Result, State};

/// One object's storage.
pub struct Storage(DurableObjectStorage);

impl Storage {
    /// The storage of the object `state` belongs to.
    pub fn of(state: &State) -> Result<Storage> {
        Ok(Storage(state.as_raw().storage()?))
    }

    /// The text stored under `key`; `None` when there is none (or it is not text, which
    /// nothing here writes).
    pub async fn get_text(&self, key: &str) -> Result<Option<String>> {
        Ok(settled(self.0.get(key)?).await?.as_string())
    }

    /// Stores `text` under `key`.
    pub async fn put_text(&self, key: &str, text: &str) -> Result<()> {
        settled(self.0.put(key, JsValue::from_str(text))?).await?;
        Ok(())
    }

    /// Stores every property of `values` (key -> value) in one call.
    pub async fn put_all(&self, values: Object) -> Result<()> {
        settled(self.0.put_multiple(values.into())?).await?;
        Ok(())
    }

    /// The values of `keys` that exist, by key.
    pub async fn get_all(&self, keys: &[String]) -> Result<Map> {
        let keys = keys.iter().map(|k| JsValue::from_str(k)).collect();
        Ok(settled(self.0.get_multiple(keys)?).await?.dyn_into()?)
    }

    /// Deletes `key`.
    pub async fn delete(&self, key: &str) -> Result<()> {
        settled(self.0.delete(key)?).await?;
        Ok(())
    }

    /// Deletes `keys` in one call.
    pub async fn delete_all(&self, keys: &[String]) -> Result<()> {
        let keys = keys.iter().map(|k| JsValue::from_str(k)).collect();
        settled(self.0.delete_multiple(keys)?).await?;
        Ok(())
    }

    /// Every key starting with `prefix` and its value, in key order.
    pub async fn list_prefix(&self, prefix: &str) -> Result<Map> {
        let options = Object::new();
        Reflect::set(&options, &"prefix".into(), &prefix.into())?;
        Ok(settled(self.0.list_with_options(options)?)
            .await?
            .dyn_into()?)
    }

    /// When the alarm is set for, in ms since the epoch; `None` when it is not set.
    pub async fn alarm(&self) -> Result<Option<f64>> {
        Ok(settled(self.0.get_alarm(JsValue::NULL.into())?)
            .await?
            .as_f64())
    }

    /// Sets the alarm `after` from now.
    pub async fn set_alarm(&self, after: Duration) -> Result<()> {
        let at = Date::now() + after.as_millis() as f64;
        let at = Date::new(&JsValue::from_f64(at));
        settled(self.0.set_alarm(at, JsValue::NULL.into())?).await?;
        Ok(())
    }
}
