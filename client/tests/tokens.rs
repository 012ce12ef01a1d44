//! The token cache: refresh ahead of expiry, one refresh for many requests, 401 handling.

mod support;

use std::{
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::Engine as _;
use storycad_client::{AccessToken, Error, TokenError, TokenProvider};
use support::{bounded, request, Action, TestServer};

const OK_JSON: &str = r#"{"id":"c1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}]}"#;

fn ok() -> Action {
    Action::json(200, OK_JSON)
}

/// Hands out `token-1`, `token-2`, ... and counts the calls. `lifetime(n)` gives token n's
/// expiry; the provider sleeps a little so concurrent callers really overlap.
struct Counting {
    calls: Arc<AtomicU32>,
    lifetime: fn(u32) -> Option<SystemTime>,
}

#[async_trait::async_trait]
impl TokenProvider for Counting {
    async fn token(&self) -> Result<AccessToken, TokenError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut token = AccessToken::new(format!("token-{n}"));
        token.expires_at = (self.lifetime)(n);
        Ok(token)
    }
}

fn counting(lifetime: fn(u32) -> Option<SystemTime>) -> (Counting, Arc<AtomicU32>) {
    let calls = Arc::new(AtomicU32::new(0));
    (
        Counting {
            calls: calls.clone(),
            lifetime,
        },
        calls,
    )
}

fn auths(server: &TestServer) -> Vec<String> {
    server
        .requests()
        .iter()
        .map(|r| r.header("authorization").unwrap_or("").to_owned())
        .collect()
}

#[tokio::test]
async fn unauthorized_then_refresh_then_success() {
    bounded(async {
        let server = TestServer::start(vec![Action::error(401, "invalid_token", &[]), ok()]).await;
        let (provider, calls) = counting(|_| None);
        let client = server
            .builder()
            .token_provider(provider)
            .build()
            .expect("client");
        let done = client.chat(&request()).await.expect("chat");
        assert_eq!(done.text(), "ok");
        assert_eq!(calls.load(Ordering::SeqCst), 2, "provider called twice");
        assert_eq!(auths(&server), ["Bearer token-1", "Bearer token-2"]);
    })
    .await;
}

#[tokio::test]
async fn second_unauthorized_is_an_error() {
    bounded(async {
        let server = TestServer::start(vec![
            Action::error(401, "invalid_token", &[]),
            Action::error(401, "invalid_token", &[("x-request-id", "req-401")]),
            ok(),
        ])
        .await;
        let (provider, calls) = counting(|_| None);
        let client = server
            .builder()
            .token_provider(provider)
            .build()
            .expect("client");
        let err = client.chat(&request()).await.expect_err("401 twice");
        assert!(matches!(err, Error::Unauthorized(_)), "{err:?}");
        assert_eq!(err.status(), Some(401));
        assert_eq!(err.code(), Some("invalid_token"));
        assert_eq!(err.request_id(), Some("req-401"));
        assert!(!err.is_retryable());
        assert_eq!(server.hits(), 2);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        let shown = format!("{err} {err:?}");
        assert!(
            !shown.contains("token-"),
            "no token value in errors: {shown}"
        );
    })
    .await;
}

#[tokio::test]
async fn concurrent_requests_share_one_refresh() {
    bounded(async {
        let server = TestServer::start_with(vec![], Some(ok())).await;
        // Token 1 is already expired when it arrives; later ones live an hour.
        let (provider, calls) = counting(|n| {
            Some(if n == 1 {
                SystemTime::now() - Duration::from_secs(1)
            } else {
                SystemTime::now() + Duration::from_secs(3600)
            })
        });
        let client = server
            .builder()
            .token_provider(provider)
            .build()
            .expect("client");
        client.chat(&request()).await.expect("first request");
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        // 20 requests find the cached token expired: one provider call serves them all.
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let c = client.clone();
                tokio::spawn(async move { c.chat(&request()).await })
            })
            .collect();
        for t in tasks {
            t.await.expect("task").expect("chat");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 2, "exactly one refresh");
        let a = auths(&server);
        assert_eq!(a.len(), 21);
        assert!(a[1..].iter().all(|h| h == "Bearer token-2"), "{a:?}");
    })
    .await;
}

#[tokio::test]
async fn concurrent_first_requests_share_one_fetch() {
    bounded(async {
        let server = TestServer::start_with(vec![], Some(ok())).await;
        let (provider, calls) = counting(|_| None);
        let client = server
            .builder()
            .token_provider(provider)
            .build()
            .expect("client");
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let c = client.clone();
                tokio::spawn(async move { c.chat(&request()).await })
            })
            .collect();
        for t in tasks {
            t.await.expect("task").expect("chat");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    })
    .await;
}

fn jwt_expiring_at(exp: SystemTime, n: u32) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let exp = exp
        .duration_since(UNIX_EPOCH)
        .expect("after epoch")
        .as_secs();
    format!(
        "{}.{}.c2lnbmF0dXJl",
        b64(r#"{"alg":"RS256","typ":"JWT"}"#),
        b64(&format!(r#"{{"sub":"user-{n}","exp":{exp}}}"#))
    )
}

#[tokio::test]
async fn token_refreshed_ahead_of_expiry_from_jwt_exp() {
    bounded(async {
        let server = TestServer::start_with(vec![], Some(ok())).await;
        let calls = Arc::new(AtomicU32::new(0));
        let c = calls.clone();
        // JWTs valid for 2 minutes, no stated expiry: the client must read `exp`.
        let client = server
            .builder()
            .token_fn(move || {
                let n = c.fetch_add(1, Ordering::SeqCst) + 1;
                async move {
                    Ok(AccessToken::new(jwt_expiring_at(
                        SystemTime::now() + Duration::from_secs(120),
                        n,
                    )))
                }
            })
            .refresh_ahead(Duration::from_secs(60))
            .build()
            .expect("client");
        client.chat(&request()).await.expect("1");
        client.chat(&request()).await.expect("2");
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "120 s left > 60 s ahead: cached"
        );

        // With a refresh margin longer than the lifetime, every request refreshes first.
        let calls = Arc::new(AtomicU32::new(0));
        let c = calls.clone();
        let client = server
            .builder()
            .token_fn(move || {
                let n = c.fetch_add(1, Ordering::SeqCst) + 1;
                async move {
                    Ok(AccessToken::new(jwt_expiring_at(
                        SystemTime::now() + Duration::from_secs(120),
                        n,
                    )))
                }
            })
            .refresh_ahead(Duration::from_secs(180))
            .build()
            .expect("client");
        client.chat(&request()).await.expect("1");
        client.chat(&request()).await.expect("2");
        client.chat(&request()).await.expect("3");
        assert_eq!(calls.load(Ordering::SeqCst), 3, "refreshed ahead of exp");
        let a = auths(&server);
        let last3: Vec<_> = a[a.len() - 3..].to_vec();
        assert!(
            last3[0] != last3[1] && last3[1] != last3[2],
            "new token each time"
        );
    })
    .await;
}

#[tokio::test]
async fn token_provider_error_is_returned() {
    bounded(async {
        let server = TestServer::start(vec![ok()]).await;
        let client = server
            .builder()
            .token_fn(|| async { Err(TokenError::new("sign-in required")) })
            .build()
            .expect("client");
        let err = client.chat(&request()).await.expect_err("no token");
        assert!(matches!(err, Error::Token(_)), "{err:?}");
        assert_eq!(
            err.to_string(),
            "cannot get an access token: sign-in required"
        );
        assert_eq!(server.hits(), 0);
    })
    .await;
}
