//! The auth contract, over HTTP, against the all-in-one binary (SQLite) and the
//! microservices (PostgreSQL).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use chat_e2e::*;
use serde_json::{Value, json};
use std::time::Duration;

fn reg(u: &str, p: &str) -> Option<Value> {
    Some(json!({"username": u, "password": p}))
}

async fn registration_rules(t: &Target) {
    let api = t.api();
    let name = unique("Ann");
    let (s, v) = api.call("POST", "/v1/auth/register", None, reg(&name, "password1")).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["user"]["username"], name.to_lowercase());
    assert_eq!(v["user"]["display_name"], name.to_lowercase(), "display_name defaults to the stored username");
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["expires_in"], 900);
    assert!(v["user"].get("password_hash").is_none() && v["user"].get("password").is_none());
    // Case-insensitive uniqueness.
    let (s, v) = api.call("POST", "/v1/auth/register", None, reg(&name.to_uppercase(), "password1")).await;
    assert_eq!((s, v["code"].as_str()), (409, Some("username_taken")), "{v}");
    for (u, p) in
        [("ab", "password1"), ("has space", "password1"), ("ünïcode", "password1"), (&"x".repeat(33), "password1")]
    {
        let (s, v) = api.call("POST", "/v1/auth/register", None, reg(u, p)).await;
        assert_eq!((s, v["code"].as_str()), (422, Some("validation_failed")), "username {u:?}: {v}");
    }
    let u = unique("pw");
    for p in ["short7!", "nul\u{0}password", &"p".repeat(257)] {
        let (s, _) = api.call("POST", "/v1/auth/register", None, reg(&u, p)).await;
        assert_eq!(s, 422, "password {p:?}");
    }
    let (s, _) = api
        .call(
            "POST",
            "/v1/auth/register",
            None,
            Some(json!({"username": u, "password": "password1", "display_name": ""})),
        )
        .await;
    assert_eq!(s, 422, "empty display name");
    let (s, v) = api
        .call(
            "POST",
            "/v1/auth/register",
            None,
            Some(json!({"username": u, "password": "pässwörd 1", "display_name": "<b>Zoë</b> ' OR 1=1", "extra": 1})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["user"]["display_name"], "<b>Zoë</b> ' OR 1=1", "stored verbatim");
    // Malformed JSON and wrong types are 422, never 500.
    let (s, v) = api.raw("POST", "/v1/auth/register", None, b"{not json".to_vec()).await;
    assert_eq!((s, v["code"].as_str()), (422, Some("validation_failed")));
    let (s, _) = api.call("POST", "/v1/auth/register", None, Some(json!({"username": 5, "password": "x"}))).await;
    assert_eq!(s, 422);
    let (s, v) = api.raw("POST", "/v1/auth/register", None, vec![b' '; 1024 * 1024 + 10]).await;
    assert_eq!((s, v["code"].as_str()), (413, Some("payload_too_large")), "{v}");
}
both!(registration_rules);

async fn login_and_users(t: &Target) {
    let api = t.api();
    let name = unique("Carl");
    let me = api.register(&name).await;
    let (s, v) = api.call("POST", "/v1/auth/login", None, reg(&name.to_uppercase(), "correct horse 1")).await;
    assert_eq!(s, 200, "login is case-insensitive: {v}");
    assert_eq!(v["user"]["id"], me.id.to_string());
    let (s1, wrong) = api.call("POST", "/v1/auth/login", None, reg(&name, "wrong password")).await;
    let (s2, unknown) = api.call("POST", "/v1/auth/login", None, reg(&unique("nobody"), "wrong password")).await;
    assert_eq!((s1, s2), (401, 401));
    assert_eq!(wrong, unknown, "unknown user and wrong password look the same");

    let (s, v) = api.call("GET", "/v1/users/me", Some(&me.token), None).await;
    assert_eq!((s, v["id"].as_str()), (200, Some(me.id.to_string().as_str())));
    let (s, _) = api.call("GET", "/v1/users/me", None, None).await;
    assert_eq!(s, 401);
    let (s, v) = api.call("GET", &format!("/v1/users/{}", me.id), Some(&me.token), None).await;
    assert_eq!((s, v["username"].as_str()), (200, Some(name.to_lowercase().as_str())));
    let (s, _) = api.call("GET", &format!("/v1/users/{}", uuid::Uuid::now_v7()), Some(&me.token), None).await;
    assert_eq!(s, 404);
    let (s, _) = api.call("GET", "/v1/users/not-a-uuid", Some(&me.token), None).await;
    assert_eq!(s, 404);

    // Prefix search, ordered by username.
    let prefix = unique("srch");
    for suffix in ["b", "a", "c"] {
        api.register(&format!("{prefix}{suffix}")).await;
    }
    let (s, v) =
        api.call("GET", &format!("/v1/users?q={}&limit=2", prefix.to_uppercase()), Some(&me.token), None).await;
    assert_eq!(s, 200);
    let names: Vec<&str> = v["users"].as_array().unwrap().iter().map(|u| u["username"].as_str().unwrap()).collect();
    assert_eq!(names, vec![format!("{prefix}a"), format!("{prefix}b")]);
    for bad in ["0", "101", "x"] {
        let (s, _) = api.call("GET", &format!("/v1/users?limit={bad}"), Some(&me.token), None).await;
        assert_eq!(s, 422, "limit={bad}");
    }
    let (s, v) = api.call("GET", "/.well-known/jwks.json", None, None).await;
    assert_eq!(s, 200);
    assert_eq!(v["keys"][0]["kty"], "OKP");
    assert!(v["keys"][0]["kid"].is_string());
}
both!(login_and_users);

async fn refresh_rotation_reuse_and_logout(t: &Target) {
    let api = t.api();
    let name = unique("dana");
    let first = api.register(&name).await;
    let (_, other) = api.call("POST", "/v1/auth/login", None, reg(&name, "correct horse 1")).await;
    let other_refresh = other["refresh_token"].as_str().unwrap().to_string();

    let (s, v) = api.call("POST", "/v1/auth/refresh", None, Some(json!({"refresh_token": first.refresh}))).await;
    assert_eq!(s, 200, "{v}");
    let new_refresh = v["refresh_token"].as_str().unwrap().to_string();
    let new_access = v["access_token"].as_str().unwrap().to_string();
    assert_ne!(new_refresh, first.refresh);
    // Reuse of the rotated token: 401, and the whole login session is revoked.
    let (s, _) = api.call("POST", "/v1/auth/refresh", None, Some(json!({"refresh_token": first.refresh}))).await;
    assert_eq!(s, 401);
    let (s, _) = api.call("POST", "/v1/auth/refresh", None, Some(json!({"refresh_token": new_refresh}))).await;
    assert_eq!(s, 401, "the newer token of that session is revoked too");
    // Its access tokens are refused everywhere within 5 s.
    let mut refused = false;
    for _ in 0..50 {
        let a = api.call("GET", "/v1/users/me", Some(&new_access), None).await.0;
        let b = api.call("GET", "/v1/conversations", Some(&new_access), None).await.0;
        if a == 401 && b == 401 {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(refused, "revoked session's access token still accepted after 5 s");
    // The other login of the same user is untouched.
    let (s, v) = api.call("POST", "/v1/auth/refresh", None, Some(json!({"refresh_token": other_refresh}))).await;
    assert_eq!(s, 200, "{v}");
    let latest = v["refresh_token"].as_str().unwrap().to_string();
    let (s, _) = api.call("POST", "/v1/auth/logout", None, Some(json!({"refresh_token": latest}))).await;
    assert_eq!(s, 204);
    let (s, _) = api.call("POST", "/v1/auth/refresh", None, Some(json!({"refresh_token": latest}))).await;
    assert_eq!(s, 401);
    for junk in [json!("nope"), json!("x".repeat(43))] {
        let (s, _) = api.call("POST", "/v1/auth/logout", None, Some(json!({"refresh_token": junk}))).await;
        assert_eq!(s, 204, "logout with {junk}");
        let (s, _) = api.call("POST", "/v1/auth/refresh", None, Some(json!({"refresh_token": junk}))).await;
        assert_eq!(s, 401, "refresh with {junk}");
    }
    // A token field of the wrong JSON type is a validation failure, not a bad token (audit finding 27).
    for junk in [json!(12), json!(null), json!(["x"])] {
        for route in ["/v1/auth/refresh", "/v1/auth/logout"] {
            let (s, v) = api.call("POST", route, None, Some(json!({"refresh_token": junk}))).await;
            assert_eq!((s, v["code"].as_str()), (422, Some("validation_failed")), "{route} with {junk}");
        }
    }
}
both!(refresh_rotation_reuse_and_logout);

fn forge(header: Value, claims: &Value, sig: &[u8]) -> String {
    format!("{}.{}.{}", B64.encode(header.to_string()), B64.encode(claims.to_string()), B64.encode(sig))
}

async fn forged_tokens_are_refused(t: &Target) {
    let api = t.api();
    let me = api.register(&unique("eve")).await;
    let parts: Vec<&str> = me.token.split('.').collect();
    let header: Value = serde_json::from_slice(&B64.decode(parts[0]).unwrap()).unwrap();
    let claims: Value = serde_json::from_slice(&B64.decode(parts[1]).unwrap()).unwrap();
    assert_eq!(header["alg"], "EdDSA");
    for k in ["sub", "sid", "iat", "exp", "jti"] {
        assert!(claims.get(k).is_some(), "claim {k}");
    }
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 900);
    let kid = header["kid"].as_str().unwrap();
    let mut tampered_claims = claims.clone();
    tampered_claims["exp"] = json!(claims["exp"].as_i64().unwrap() + 3600);
    let sig = B64.decode(parts[2]).unwrap();
    let (_, jwks) = api.call("GET", "/.well-known/jwks.json", None, None).await;
    let public_x = B64.decode(jwks["keys"][0]["x"].as_str().unwrap()).unwrap();
    let hs = jsonwebtoken::encode(
        &jsonwebtoken::Header { alg: jsonwebtoken::Algorithm::HS256, kid: Some(kid.into()), ..Default::default() },
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(&public_x),
    )
    .unwrap();
    let cases = vec![
        ("tampered claims", forge(header.clone(), &tampered_claims, &sig)),
        ("alg none", forge(json!({"alg": "none", "typ": "JWT", "kid": kid}), &claims, b"")),
        ("HS256 keyed with the public key", hs),
        ("unknown kid", forge(json!({"alg": "EdDSA", "typ": "JWT", "kid": "nope"}), &claims, &sig)),
        ("garbage", "a.b.c".to_string()),
    ];
    for (what, token) in cases {
        let (s, v) = api.call("GET", "/v1/users/me", Some(&token), None).await;
        assert_eq!((s, v["code"].as_str()), (401, Some("unauthorized")), "{what} (auth)");
        let (s, _) = api.call("GET", "/v1/conversations", Some(&token), None).await;
        assert_eq!(s, 401, "{what} (message-store)");
        let (s, _) = api.call("GET", &format!("/v1/presence?user_ids={}", me.id), Some(&token), None).await;
        assert_eq!(s, 401, "{what} (presence)");
    }
}
both!(forged_tokens_are_refused);

async fn expired_tokens(t: &Target) {
    let api = t.api();
    let me = api.register(&unique("fay")).await;
    let (s, _) = api.call("GET", "/v1/users/me", Some(&me.token), None).await;
    assert_eq!(s, 200);
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let (s, v) = api.call("GET", "/v1/users/me", Some(&me.token), None).await;
    assert_eq!((s, v["code"].as_str()), (401, Some("token_expired")), "{v}");
    let (s, v) = api.call("GET", "/v1/conversations", Some(&me.token), None).await;
    assert_eq!((s, v["code"].as_str()), (401, Some("token_expired")));
}
both!(expired_tokens, [("CHAT_ACCESS_TOKEN_TTL", "1")]);

async fn login_throttling(t: &Target) {
    let api = t.api();
    let name = unique("gus");
    api.register(&name).await;
    for i in 0..3 {
        let (s, _) = api.call("POST", "/v1/auth/login", None, reg(&name, "wrong password")).await;
        assert_eq!(s, 401, "failure {i}");
    }
    let resp = api
        .http
        .post(format!("{}/v1/auth/login", api.base))
        .json(&json!({"username": name, "password": "correct horse 1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 429, "a correct password is refused while limited");
    assert!(resp.headers().get("retry-after").is_some());
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["code"], "rate_limited");
    // 422 attempts do not count; an unknown username is limited the same way.
    let ghost = unique("ghost");
    for _ in 0..3 {
        api.call("POST", "/v1/auth/login", None, reg(&ghost, "x")).await;
    }
    let (s, _) = api.call("POST", "/v1/auth/login", None, reg(&ghost, "x")).await;
    assert_eq!(s, 429);
}
both!(login_throttling, [("CHAT_LOGIN_MAX_FAILURES_PER_USER", "3")]);

/// Key rotation: `chat-auth rotate-key` makes a new signing key active; tokens signed with the old
/// key keep working until they expire, and every service accepts tokens of the new key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_keeps_old_tokens_valid() {
    let redis = require_redis().await;
    let c = Cluster::start(&redis, 1, &[("AUTH_KEY_RELOAD_SECS", "1".into())]).await;
    let api = c.api();
    let name = unique("rot");
    let before = api.register(&name).await;
    let kid = |t: &str| {
        let h = B64.decode(t.split('.').next().unwrap()).unwrap();
        serde_json::from_slice::<Value>(&h).unwrap()["kid"].as_str().unwrap().to_string()
    };
    let out = std::process::Command::new(binary("chat-auth"))
        .arg("rotate-key")
        .env("AUTH_KEY_ENCRYPTION_KEY", KEY_ENCRYPTION_KEY)
        .env("DATABASE_URL", pg_url())
        .env("DATABASE_SCHEMA", &c.auth_schema)
        .env("LOG_FORMAT", "pretty")
        .output()
        .expect("run rotate-key");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (_, v) = api.call("POST", "/v1/auth/login", None, reg(&name, "correct horse 1")).await;
    let after = v["access_token"].as_str().unwrap().to_string();
    assert_ne!(kid(&before.token), kid(&after), "new tokens use the new key");
    let (_, jwks) = api.call("GET", "/.well-known/jwks.json", None, None).await;
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2, "both keys published");
    for token in [&before.token, &after] {
        assert_eq!(api.call("GET", "/v1/users/me", Some(token), None).await.0, 200);
        assert_eq!(api.call("GET", "/v1/conversations", Some(token), None).await.0, 200);
        let mut ws = Ws::connect(&c.edge_ws(0), token, "").await;
        assert_eq!(ws.next(WAIT).await["type"], "hello");
    }
}

async fn address_limits_and_trusted_proxy(t: &Target) {
    let api = t.api();
    let login = |name: String, xff: &'static str| {
        let api = api.clone();
        async move {
            api.http
                .post(format!("{}/v1/auth/login", api.base))
                .header("x-forwarded-for", xff)
                .json(&json!({"username": name, "password": "wrong password"}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    // The peer (127.0.0.1) is a trusted proxy here, so the address is the forwarded one.
    for i in 0..2 {
        assert_eq!(login(unique(&format!("u{i}")), "203.0.113.7").await, 401);
    }
    assert_eq!(login(unique("u3"), "203.0.113.7").await, 429, "third failure from one address, any username");
    assert_eq!(login(unique("u4"), "198.51.100.1").await, 401, "another address has its own budget");
    // Registrations per address.
    let register = |xff: &'static str| {
        let api = api.clone();
        async move {
            api.http
                .post(format!("{}/v1/auth/register", api.base))
                .header("x-forwarded-for", xff)
                .json(&json!({"username": unique("r"), "password": "password1"}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(register("192.0.2.1").await, 201);
    assert_eq!(register("192.0.2.1").await, 201);
    assert_eq!(register("192.0.2.1").await, 429);
    assert_eq!(register("192.0.2.2").await, 201);
}
both!(
    address_limits_and_trusted_proxy,
    [("CHAT_LOGIN_MAX_FAILURES_PER_IP", "2"), ("CHAT_REGISTER_MAX_PER_IP", "2"), ("CHAT_TRUSTED_PROXIES", "127.0.0.1")]
);
