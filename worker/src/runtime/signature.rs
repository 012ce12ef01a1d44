//! A token's signature checked with the runtime's WebCrypto (`crypto.subtle.verify`, BoringSSL
//! in workerd): native code, where RustCrypto compiled to wasm cost ~3.5 ms of CPU on an
//! isolate's first RS256 check and ~95 KB of the Worker's code.
//!
//! Everything but the algorithm itself was decided before ([`Verifier::signed_with`]: the key's
//! checks when it was parsed, the signature's length, Ed25519's canonical `S` and `R` not of
//! small order), so WebCrypto's verdict is the same as RustCrypto's on the host.
//!
//! Imported keys are kept per isolate, by key identity (the hash of the key's material), as the
//! import's promise; a failed import is forgotten (and the token refused).
//!
//! [`Verifier::signed_with`]: crate::auth::Verifier::signed_with

use wasm_bindgen::prelude::*;
use worker::js_sys::Promise;

use super::wake::settled;
use crate::auth::{PublicKey, Signed};

#[wasm_bindgen(inline_js = r#"
const keys = new Map();
const IMPORT = [
  { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" },
  { name: "ECDSA", namedCurve: "P-256" },
  { name: "Ed25519" },
];
const VERIFY = [
  { name: "RSASSA-PKCS1-v1_5" },
  { name: "ECDSA", hash: "SHA-256" },
  { name: "Ed25519" },
];
// base64url without padding, as a JWK writes its numbers.
function b64u(bytes) {
  let text = "";
  for (const b of bytes) text += String.fromCharCode(b);
  return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}
// `raw`: the key (ES256: SEC1 point, Ed25519: x), or for RS256 its modulus, with `e` its
// exponent.
export function storycadVerify(alg, id, raw, e, signature, data) {
  let key = keys.get(id);
  if (key === undefined) {
    key = alg === 0
      ? crypto.subtle.importKey("jwk", { kty: "RSA", n: b64u(raw), e: b64u(e) }, IMPORT[alg], false, ["verify"])
      : crypto.subtle.importKey("raw", raw.slice(), IMPORT[alg], false, ["verify"]);
    // A key set's keys, and the few it rotates through: a bound, not a working limit.
    if (keys.size >= 64) keys.clear();
    keys.set(id, key);
    key.catch(() => keys.delete(id));
  }
  // Copies: the wasm memory these views are on may move before the key is ready.
  const sig = signature.slice();
  const input = data.slice();
  return key.then((k) => crypto.subtle.verify(VERIFY[alg], k, sig, input));
}
"#)]
extern "C" {
    #[wasm_bindgen(js_name = storycadVerify, catch)]
    fn js_verify(
        alg: u32,
        id: &str,
        raw: &[u8],
        e: &[u8],
        signature: &[u8],
        data: &[u8],
    ) -> Result<Promise, JsValue>;
}

/// Whether `signed`'s signature is valid. `Err` holds WebCrypto's message when it could not
/// check at all (a key it refused to import): the token is refused either way.
pub async fn check(signed: &Signed<'_>) -> Result<bool, String> {
    let mut id = String::with_capacity(64);
    crate::push_hex(&mut id, signed.key_id());
    // The glue writes an RSA key's JWK (base64url is a few lines of JS, and its code in the
    // wasm would serve only this).
    let (alg, raw, e): (u32, &[u8], &[u8]) = match &signed.key {
        PublicKey::Rs256 { n, e } => (0, n, e),
        PublicKey::Es256 { sec1 } => (1, sec1, &[]),
        PublicKey::EdDsa { x } => (2, x, &[]),
    };
    let promise = js_verify(
        alg,
        &id,
        raw,
        e,
        &signed.signature,
        signed.message.as_bytes(),
    )
    .map_err(|e| message(&e))?;
    let verdict = settled(promise).await.map_err(|e| message(&e))?;
    Ok(verdict.as_bool() == Some(true))
}

fn message(error: &JsValue) -> String {
    worker::js_sys::Reflect::get(error, &JsValue::from_str("message"))
        .ok()
        .and_then(|m| m.as_string())
        .unwrap_or_else(|| "WebCrypto refused the key".to_owned())
}
