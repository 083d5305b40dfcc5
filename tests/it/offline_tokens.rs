//! Subscriber tokens a tenant mints itself, offline: JWTs its Ed25519 key signs, verified
//! with the public key it registered (`PUT /v1/subscriber-token-key`); issued tokens keep
//! working beside them.

use aws_lc_rs::{
    rand::SystemRandom,
    signature::{Ed25519KeyPair, KeyPair},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::harness::TestApp;

fn key_pair() -> Ed25519KeyPair {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
    Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
}

fn jwk(pair: &Ed25519KeyPair) -> Value {
    json!({"kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(pair.public_key().as_ref())})
}

/// A JWT as any library makes one: `EdDSA`, these claims, signed with `pair`.
fn mint(pair: &Ed25519KeyPair, claims: Value) -> String {
    let part = |v: Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(&v).unwrap());
    let input = format!("{}.{}", part(json!({"alg": "EdDSA", "typ": "JWT"})), part(claims));
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(pair.sign(input.as_bytes()).as_ref()))
}

fn in_seconds(seconds: i64) -> i64 {
    OffsetDateTime::now_utc().unix_timestamp() + seconds
}

async fn count(app: &TestApp, token: &str) -> u16 {
    app.http.get(app.url("/v1/inbox/count")).bearer_auth(token).send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn a_tenant_mints_subscriber_tokens_with_its_own_key() {
    let app = TestApp::api_only().await;
    let (status, _) = app.call("PUT", "/v1/subscribers/u-1", Some(&json!({"email": "u1@example.com"}))).await;
    assert_eq!(status, 201);
    let pair = key_pair();
    let tenant = app.tenant_id.to_string();
    let token = mint(&pair, json!({"tid": tenant, "sub": "u-1", "exp": in_seconds(3600)}));
    assert_eq!(count(&app, &token).await, 401, "no key registered yet");

    let (status, answer) = app.call("PUT", "/v1/subscriber-token-key", Some(&jwk(&pair))).await;
    assert_eq!((status, &answer), (200, &jwk(&pair)));
    assert_eq!(app.call("GET", "/v1/subscriber-token-key", None).await, (200, jwk(&pair)));
    assert_eq!(count(&app, &token).await, 200);
    let response = app.http.get(app.url("/v1/me/preferences")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(response.status(), 200, "it opens what an issued token opens");
    let response = app.http.get(app.url("/v1/subscribers/u-1/devices")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(response.status(), 200, "the subscriber's devices too");
    let response = app.http.get(app.url("/v1/subscribers/u-2/devices")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(response.status(), 403, "and only its own");

    for (why, refused) in [
        ("expired", mint(&pair, json!({"tid": tenant, "sub": "u-1", "exp": in_seconds(-5)}))),
        ("more than 24 hours ahead", mint(&pair, json!({"tid": tenant, "sub": "u-1", "exp": in_seconds(25 * 3600)}))),
        ("no expiry", mint(&pair, json!({"tid": tenant, "sub": "u-1"}))),
        ("another key", mint(&key_pair(), json!({"tid": tenant, "sub": "u-1", "exp": in_seconds(3600)}))),
        ("an unknown subscriber", mint(&pair, json!({"tid": tenant, "sub": "u-2", "exp": in_seconds(3600)}))),
        ("another tenant", mint(&pair, json!({"tid": uuid::Uuid::now_v7(), "sub": "u-1", "exp": in_seconds(3600)}))),
    ] {
        assert_eq!(count(&app, &refused).await, 401, "{why}");
    }
    // Tampered: the claims changed after signing.
    let (head, rest) = token.split_once('.').unwrap();
    let (_, signature) = rest.split_once('.').unwrap();
    let other = URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(&json!({"tid": tenant, "sub": "u-1", "exp": in_seconds(7200)})).unwrap());
    assert_eq!(count(&app, &format!("{head}.{other}.{signature}")).await, 401, "tampered");

    // The issued tokens keep working beside them.
    let (_, issued) = app.call("POST", "/v1/subscribers/u-1/token", None).await;
    assert_eq!(count(&app, issued["token"].as_str().unwrap()).await, 200);

    for (body, field) in [
        (json!({"kty": "OKP", "crv": "Ed25519", "x": "c2hvcnQ"}), "x"),
        (json!({"kty": "EC", "crv": "Ed25519", "x": jwk(&pair)["x"]}), "kty"),
    ] {
        let (status, problem) = app.call("PUT", "/v1/subscriber-token-key", Some(&body)).await;
        assert_eq!((status, &problem["errors"][0]["field"]), (422, &json!(field)), "{problem}");
    }
    // Removed: its tokens are refused from then on.
    assert_eq!(app.call("DELETE", "/v1/subscriber-token-key", None).await.0, 204);
    assert_eq!(count(&app, &token).await, 401);
    assert_eq!(app.call("GET", "/v1/subscriber-token-key", None).await.0, 404);
}
