//! End-to-end support for the StoryCAD LLM proxy: a fake LLM provider, JWT minting, a JWKS
//! endpoint, and a harness running the real Worker under workerd (`wrangler dev`).
//!
//! Used by this crate's end-to-end tests and by `cargo xtask dev`:
//!
//! ```no_run
//! use storycad_e2e::{fake_provider::FakeProvider, tokens::{self, DevKey}, workerd::{Worker, WorkerOptions}};
//! # fn main() -> anyhow::Result<()> {
//! let provider = FakeProvider::start()?;
//! let key = DevKey::load_or_generate("target/dev/dev-key.jwk.json")?;
//! let worker = Worker::start(
//!     WorkerOptions { name: "dev".into(), ..Default::default() }
//!         .var("OPENAI_BASE_URL", provider.openai_base_url())
//!         .var("JWT_PUBLIC_JWK", key.public_jwk().to_string())
//!         .secret("OPENAI_API_KEY", "sk-fake"),
//! )?;
//! let token = key.mint(&tokens::claims("issuer", "audience", "dev-user", std::time::Duration::from_secs(3600)));
//! println!("{} {token}", worker.api_base());
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod fake_provider;
mod http;
pub mod jwks_server;
pub mod relay;
mod server;
pub mod tokens;
pub mod workerd;
pub mod writer_session;
