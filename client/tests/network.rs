//! The client on a writer's network: whose certificates it trusts and which proxy it uses
//! (the system's proxy settings from the environment are tested alone, in `env_proxy.rs`).

mod support;

use storycad_client::{Client, Error};
use support::{
    bounded,
    tls::{ConnectProxy, HttpsFront, TestCa},
    Action, TestServer,
};

const MODELS: &str = r#"{"object":"list","data":[{"id":"storycad-fast","object":"model","created":0,"owned_by":"storycad"}]}"#;

/// The scripted server answering `/models` on every connection, behind HTTPS from `ca`.
async fn https(ca: &TestCa) -> (TestServer, HttpsFront) {
    let server = TestServer::start_with(Vec::new(), Some(Action::json(200, MODELS))).await;
    let front = HttpsFront::start(ca, server.addr).await;
    (server, front)
}

fn builder(server: &TestServer, front: &HttpsFront) -> storycad_client::ClientBuilder {
    server
        .builder()
        .base_url(front.base_url())
        .system_proxy(false)
}

async fn models(client: &Client) -> Result<usize, Error> {
    client.models().await.map(|m| m.data.len())
}

#[tokio::test]
async fn a_private_ca_is_trusted_only_when_configured() {
    bounded(async {
        let ca = TestCa::new();
        let (server, front) = https(&ca).await;
        for system_trust in [true, false] {
            let before = server.hits();
            let plain = builder(&server, &front)
                .system_trust(system_trust)
                .build()
                .expect("client");
            match models(&plain).await {
                Err(Error::Connect { message, .. }) => {
                    assert!(message.contains("certificate"), "{message}")
                }
                other => panic!("system_trust={system_trust}: {other:?}"),
            }
            assert_eq!(server.hits(), before, "nothing crossed an untrusted link");

            let trusting = builder(&server, &front)
                .system_trust(system_trust)
                .add_root_certificates_pem(ca.pem())
                .build()
                .expect("client");
            assert_eq!(models(&trusting).await.expect("trusted"), 1);
        }
        assert_eq!(server.hits(), 2);
        assert_eq!(front.handshakes(), 2);
    })
    .await;
}

#[tokio::test]
async fn another_ca_does_not_vouch_for_the_server() {
    bounded(async {
        let (ca, other) = (TestCa::new(), TestCa::new());
        let (server, front) = https(&ca).await;
        let client = builder(&server, &front)
            .add_root_certificates_pem(other.pem())
            .build()
            .expect("client");
        assert!(matches!(models(&client).await, Err(Error::Connect { .. })));
        assert_eq!(server.hits(), 0);
    })
    .await;
}

#[tokio::test]
async fn several_pem_texts_and_several_certificates_in_one() {
    bounded(async {
        let (ca, other) = (TestCa::new(), TestCa::new());
        let (server, front) = https(&ca).await;
        let bundle = format!("{}\n{}", other.pem(), ca.pem());
        let client = builder(&server, &front)
            .add_root_certificates_pem(TestCa::new().pem())
            .add_root_certificates_pem(bundle)
            .build()
            .expect("client");
        assert_eq!(models(&client).await.expect("trusted"), 1);
    })
    .await;
}

#[test]
fn a_pem_text_without_a_certificate_fails_the_build() {
    let e = Client::builder()
        .base_url("https://127.0.0.1:1/v1")
        .token("t")
        // A PEM block of another kind (a revocation list), not a certificate.
        .add_root_certificates_pem("-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n")
        .build()
        .expect_err("no certificate");
    assert!(
        matches!(&e, Error::Config(m) if m.contains("BEGIN CERTIFICATE")),
        "{e}"
    );
}

#[tokio::test]
async fn an_explicit_proxy_carries_every_connection() {
    bounded(async {
        let ca = TestCa::new();
        let (server, front) = https(&ca).await;
        let proxy = ConnectProxy::start().await;
        let client = builder(&server, &front)
            .add_root_certificates_pem(ca.pem())
            .proxy(proxy.url())
            .build()
            .expect("client");
        assert_eq!(models(&client).await.expect("through the proxy"), 1);
        assert_eq!(
            proxy.log(),
            vec![format!("CONNECT {} HTTP/1.1", front.addr)],
            "one tunnel to the server"
        );
        assert_eq!(server.hits(), 1);
    })
    .await;
}

#[tokio::test]
async fn a_proxy_that_cannot_reach_the_server_is_a_connection_error() {
    bounded(async {
        let proxy = ConnectProxy::start().await;
        // A port nothing listens on (bound, then closed).
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let client = Client::builder()
            .base_url(format!("https://127.0.0.1:{port}/v1"))
            .token("t")
            .retry_policy(storycad_client::RetryPolicy::default().max_retries(0))
            .proxy(proxy.url())
            .build()
            .expect("client");
        let e = models(&client).await.expect_err("no server");
        assert!(matches!(e, Error::Connect { .. }), "{e:?}");
        assert_eq!(proxy.log().len(), 1);
    })
    .await;
}
