//! The system's proxy settings from the environment (`HTTPS_PROXY`, `NO_PROXY`). Alone in its
//! binary: the environment is the process's, and other tests' clients would read it too.

mod support;

use support::{
    bounded,
    tls::{ConnectProxy, HttpsFront, TestCa},
    Action, TestServer,
};

const MODELS: &str = r#"{"object":"list","data":[]}"#;

#[tokio::test]
async fn https_proxy_is_followed_unless_turned_off_or_excluded() {
    bounded(async {
        let ca = TestCa::new();
        let server = TestServer::start_with(Vec::new(), Some(Action::json(200, MODELS))).await;
        let front = HttpsFront::start(&ca, server.addr).await;
        let proxy = ConnectProxy::start().await;
        for name in [
            "NO_PROXY",
            "no_proxy",
            "ALL_PROXY",
            "all_proxy",
            "https_proxy",
        ] {
            std::env::remove_var(name);
        }
        std::env::set_var("HTTPS_PROXY", proxy.url());
        let builder = || {
            server
                .builder()
                .base_url(front.base_url())
                .add_root_certificates_pem(ca.pem())
        };

        // The default: the environment's proxy.
        builder()
            .build()
            .expect("client")
            .models()
            .await
            .expect("via HTTPS_PROXY");
        assert_eq!(
            proxy.log(),
            vec![format!("CONNECT {} HTTP/1.1", front.addr)]
        );

        // Turned off: straight to the server.
        builder()
            .system_proxy(false)
            .build()
            .expect("client")
            .models()
            .await
            .expect("direct");
        assert_eq!(proxy.log().len(), 1);

        // NO_PROXY names the host: straight to the server.
        std::env::set_var("NO_PROXY", "127.0.0.1");
        builder()
            .build()
            .expect("client")
            .models()
            .await
            .expect("excluded");
        assert_eq!(proxy.log().len(), 1);

        assert_eq!(server.hits(), 3);
        std::env::remove_var("HTTPS_PROXY");
        std::env::remove_var("NO_PROXY");
    })
    .await;
}
