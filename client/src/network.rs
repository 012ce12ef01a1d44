//! How the client reaches the proxy from a writer's machine: which certificates it trusts and
//! which HTTP proxy it goes through.
//!
//! **Trust, with `rustls` (the default feature).** By default the operating system decides,
//! through `rustls-platform-verifier`: on Windows the CryptoAPI chain engine, on macOS the
//! Security framework, on Linux the system's CA bundle. A platform *verifier* rather than a copy
//! of the system's *roots* (`rustls-native-certs`), because on Windows the root store is filled
//! on demand (a root the machine has never needed is fetched when a chain first needs it, so a
//! copy misses it), and because the OS applies what an administrator set: roots pushed by group
//! policy or an MDM profile (a company's TLS-inspecting proxy), distrusted certificates and
//! revocation. Extra roots (PEM) are added on top. With system trust off, the client trusts
//! Mozilla's roots (bundled, `webpki-roots`) and the extra ones only.
//!
//! **Trust, with `native-tls` (and without `rustls`).** The platform's TLS library verifies:
//! SChannel on Windows and the Security framework on macOS (each with the system's trust
//! settings, as above), OpenSSL elsewhere (its default CA paths). Extra roots are added on top.
//! With system trust off, the library's built-in roots are dropped and Mozilla's (bundled,
//! `webpki-root-certs`) are added, with the extra ones. What differs from rustls: on a Linux
//! machine without a CA bundle the client does not fall back on Mozilla's roots (every HTTPS
//! connection fails until system trust is turned off), and how each platform applies an
//! extra root or a distrusted certificate is its TLS library's affair.
//!
//! **Proxy.** By default the system's settings: `HTTPS_PROXY` / `HTTP_PROXY` / `ALL_PROXY` and
//! `NO_PROXY` (either case), and on Windows and macOS the proxy set in the OS's settings (no PAC
//! scripts: set the proxy explicitly where a PAC file is used). An explicit proxy URL replaces
//! them; the system proxy can be turned off.

#[cfg(feature = "rustls")]
use std::sync::Arc;

#[cfg(feature = "rustls")]
use rustls::{
    client::danger::ServerCertVerifier,
    crypto::CryptoProvider,
    pki_types::{pem::PemObject as _, CertificateDer},
    ClientConfig, RootCertStore,
};

use crate::error::{Error, Result};

/// The network settings of a [`crate::ClientBuilder`].
#[derive(Clone)]
pub(crate) struct Network {
    pub(crate) system_trust: bool,
    /// PEM texts, each with one or more certificates.
    pub(crate) extra_roots: Vec<Vec<u8>>,
    pub(crate) proxy: Option<String>,
    pub(crate) system_proxy: bool,
}

impl Default for Network {
    fn default() -> Self {
        Network {
            system_trust: true,
            extra_roots: Vec::new(),
            proxy: None,
            system_proxy: true,
        }
    }
}

impl Network {
    /// Applies the TLS and proxy settings to reqwest's builder.
    pub(crate) fn apply(&self, builder: reqwest::ClientBuilder) -> Result<reqwest::ClientBuilder> {
        let builder = self.apply_tls(builder)?;
        Ok(match (&self.proxy, self.system_proxy) {
            (Some(url), _) => builder.proxy(
                reqwest::Proxy::all(url.as_str())
                    .map_err(|e| Error::Config(format!("proxy {:?}: {e}", redact(url))))?,
            ),
            (None, true) => builder,
            (None, false) => builder.no_proxy(),
        })
    }

    #[cfg(feature = "rustls")]
    fn apply_tls(&self, builder: reqwest::ClientBuilder) -> Result<reqwest::ClientBuilder> {
        Ok(builder.use_preconfigured_tls(self.tls()?))
    }

    /// The TLS configuration: the verifier, and the protocols offered (h2, then HTTP/1.1).
    #[cfg(feature = "rustls")]
    pub(crate) fn tls(&self) -> Result<ClientConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let extra = self.extra_certificates()?;
        let verifier: Arc<dyn ServerCertVerifier> = if self.system_trust {
            match rustls_platform_verifier::Verifier::new_with_extra_roots(
                extra.iter().cloned(),
                provider.clone(),
            ) {
                Ok(v) => Arc::new(v),
                Err(e) if no_system_roots(&e) => {
                    // A Linux machine without a CA bundle (a minimal container): the bundled
                    // roots are what the client trusted before it asked the system.
                    tracing::warn!(
                        error = %e,
                        "no certificates in the system's store; trusting the bundled Mozilla roots"
                    );
                    bundled_verifier(&extra, &provider)?
                }
                Err(e) => return Err(Error::Config(format!("the system's TLS verifier: {e}"))),
            }
        } else {
            bundled_verifier(&extra, &provider)?
        };
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Config(format!("TLS versions: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }

    #[cfg(feature = "rustls")]
    fn extra_certificates(&self) -> Result<Vec<CertificateDer<'static>>> {
        let mut out = Vec::new();
        for (i, pem) in self.extra_roots.iter().enumerate() {
            let before = out.len();
            for cert in CertificateDer::pem_slice_iter(pem) {
                out.push(cert.map_err(|e| {
                    Error::Config(format!("extra root certificates #{}: bad PEM: {e}", i + 1))
                })?);
            }
            if out.len() == before {
                return Err(Error::Config(format!(
                    "extra root certificates #{}: no `BEGIN CERTIFICATE` block in the PEM text",
                    i + 1
                )));
            }
        }
        Ok(out)
    }
}

/// The platform's TLS library (reqwest's `native-tls`): it offers h2 then HTTP/1.1 by ALPN, as
/// the rustls configuration does.
#[cfg(all(feature = "native-tls", not(feature = "rustls")))]
impl Network {
    fn apply_tls(&self, builder: reqwest::ClientBuilder) -> Result<reqwest::ClientBuilder> {
        let mut builder = builder.use_native_tls();
        if !self.system_trust {
            builder = builder.tls_built_in_root_certs(false);
            for der in webpki_root_certs::TLS_SERVER_ROOT_CERTS {
                match reqwest::Certificate::from_der(der) {
                    Ok(cert) => builder = builder.add_root_certificate(cert),
                    // One root the platform cannot read costs only the servers it vouches for.
                    Err(e) => tracing::warn!(error = %e, "a bundled Mozilla root was refused"),
                }
            }
        }
        for cert in self.extra_certificates()? {
            builder = builder.add_root_certificate(cert);
        }
        Ok(builder)
    }

    fn extra_certificates(&self) -> Result<Vec<reqwest::Certificate>> {
        let mut out = Vec::new();
        for (i, pem) in self.extra_roots.iter().enumerate() {
            let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| {
                Error::Config(format!("extra root certificates #{}: bad PEM: {e}", i + 1))
            })?;
            if certs.is_empty() {
                return Err(Error::Config(format!(
                    "extra root certificates #{}: no `BEGIN CERTIFICATE` block in the PEM text",
                    i + 1
                )));
            }
            out.extend(certs);
        }
        Ok(out)
    }
}

/// Mozilla's roots and the extra ones.
#[cfg(feature = "rustls")]
fn bundled_verifier(
    extra: &[CertificateDer<'static>],
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ServerCertVerifier>> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for cert in extra {
        roots
            .add(cert.clone())
            .map_err(|e| Error::Config(format!("an extra root certificate: {e}")))?;
    }
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| Error::Config(format!("the TLS verifier: {e}")))?;
    Ok(verifier)
}

/// The platform verifier's "nothing in the system store" (Linux without a CA bundle).
#[cfg(feature = "rustls")]
fn no_system_roots(e: &rustls::Error) -> bool {
    matches!(e, rustls::Error::General(m) if m.contains("No CA certificates"))
}

/// A proxy URL without its password, for error messages and `Debug`.
pub(crate) fn redact(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "(not a URL)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pem_without_a_certificate_is_a_config_error() {
        let n = Network {
            extra_roots: vec![b"not a certificate".to_vec()],
            ..Network::default()
        };
        let e = n
            .apply(reqwest::Client::builder())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("#1") && e.contains("BEGIN CERTIFICATE"), "{e}");
    }

    #[test]
    fn both_trusts_build_a_client() {
        for system_trust in [true, false] {
            let n = Network {
                system_trust,
                ..Network::default()
            };
            let built = n
                .apply(reqwest::Client::builder())
                .map_err(|e| e.to_string())
                .and_then(|b| b.build().map_err(|e| e.to_string()));
            assert!(built.is_ok(), "system_trust={system_trust}: {built:?}");
        }
    }

    #[cfg(feature = "rustls")]
    #[test]
    fn both_trusts_offer_h2_and_http1() {
        for system_trust in [true, false] {
            let n = Network {
                system_trust,
                ..Network::default()
            };
            let c = n.tls().map_err(|e| e.to_string());
            assert_eq!(
                c.map(|c| c.alpn_protocols),
                Ok(vec![b"h2".to_vec(), b"http/1.1".to_vec()])
            );
        }
    }

    #[test]
    fn a_bad_proxy_url_names_no_password() {
        let n = Network {
            proxy: Some("http://user:s3cret@".to_owned()),
            ..Network::default()
        };
        let e = n
            .apply(reqwest::Client::builder())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("proxy") && !e.contains("s3cret"), "{e}");
    }
}
