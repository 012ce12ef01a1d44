//! The network a writer's machine may sit behind, on 127.0.0.1: a test CA and an HTTPS front
//! with a certificate from it ([`HttpsFront`], TLS in front of a [`super::TestServer`]), and an
//! HTTP `CONNECT` proxy that logs where it was asked to go ([`ConnectProxy`]).

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};
use tokio_rustls::{
    rustls::{
        self,
        pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer},
    },
    TlsAcceptor,
};

/// A certificate authority made for one test: trusted by no system.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    pub fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // A name of its own, as real CAs have: OpenSSL (the `native-tls` feature) looks the
        // issuer up by name and tries only the first CA it finds with that name.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        params.distinguished_name.push(
            DnType::CommonName,
            format!("StoryCAD test CA {n} (not trusted anywhere)"),
        );
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        TestCa {
            issuer: CertifiedIssuer::self_signed(params, key).expect("CA certificate"),
        }
    }

    /// The CA's certificate, as a client would be given it.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for 127.0.0.1 and `localhost`, and its key.
    fn server_certificate(&self) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .expect("server params");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().expect("server key");
        let cert = params.signed_by(&key, &self.issuer).expect("server cert");
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        (cert.der().clone(), key)
    }
}

/// HTTPS on 127.0.0.1 with a certificate from a [`TestCa`], passing the decrypted bytes to
/// `backend` (a [`super::TestServer`]'s address). Counts completed TLS handshakes.
pub struct HttpsFront {
    pub addr: SocketAddr,
    handshakes: Arc<Mutex<u32>>,
    task: JoinHandle<()>,
}

impl Drop for HttpsFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HttpsFront {
    pub async fn start(ca: &TestCa, backend: SocketAddr) -> Self {
        let (cert, key) = ca.server_certificate();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .expect("server config");
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let handshakes = Arc::new(Mutex::new(0));
        let counted = handshakes.clone();
        let task = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let (acceptor, counted) = (acceptor.clone(), counted.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(sock).await else {
                        return;
                    };
                    *counted.lock().expect("lock") += 1;
                    if let Ok(mut plain) = TcpStream::connect(backend).await {
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                    }
                });
            }
        });
        HttpsFront {
            addr,
            handshakes,
            task,
        }
    }

    /// The API root over HTTPS.
    pub fn base_url(&self) -> String {
        format!("https://{}/v1", self.addr)
    }

    pub fn handshakes(&self) -> u32 {
        *self.handshakes.lock().expect("lock")
    }
}

/// An HTTP proxy that only tunnels (`CONNECT host:port`), logging each target.
pub struct ConnectProxy {
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl Drop for ConnectProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ConnectProxy {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let logged = log.clone();
        let task = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let logged = logged.clone();
                tokio::spawn(async move {
                    let _ = tunnel(sock, logged).await;
                });
            }
        });
        ConnectProxy { addr, log, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request line received, in order (`CONNECT 127.0.0.1:4321 HTTP/1.1`).
    pub fn log(&self) -> Vec<String> {
        self.log.lock().expect("lock").clone()
    }
}

async fn tunnel(mut client: TcpStream, log: Arc<Mutex<Vec<String>>>) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    // Byte by byte up to the blank line, so nothing after the head is read here.
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 16 * 1024 || client.read(&mut byte).await? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head);
    let line = text.lines().next().unwrap_or_default().to_owned();
    log.lock().expect("lock").push(line.clone());
    let mut parts = line.split(' ');
    let (Some("CONNECT"), Some(target)) = (parts.next(), parts.next()) else {
        client
            .write_all(b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n")
            .await?;
        return Ok(());
    };
    let Ok(mut upstream) = TcpStream::connect(target).await else {
        client
            .write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n")
            .await?;
        return Ok(());
    };
    client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await?;
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    Ok(())
}
