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

fn part(v: Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&v).unwrap())
}

/// A JWT as any library makes one: `EdDSA`, these claims, signed with `pair`.
fn mint(pair: &Ed25519KeyPair, claims: Value) -> String {
    let input = format!("{}.{}", part(json!({"alg": "EdDSA", "typ": "JWT"})), part(claims));
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(pair.sign(input.as_bytes()).as_ref()))
}

/// Claims of a token for `subscriber` of `tenant`, issued now for `seconds`.
fn claims(tenant: impl ToString, subscriber: &str, seconds: i64) -> Value {
    json!({"tid": tenant.to_string(), "sub": subscriber, "iat": in_seconds(0), "exp": in_seconds(seconds)})
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
    let token = mint(&pair, claims(&tenant, "u-1", 3600));
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

    // Another tenant, with a key of its own and a subscriber of the same id.
    let other = app.env.store.create_tenant("other").await.unwrap();
    let other_pair = key_pair();
    let response =
        app.http.put(app.url("/v1/subscriber-token-key")).bearer_auth(&other.api_key).json(&jwk(&other_pair));
    assert_eq!(response.send().await.unwrap().status(), 200);
    let response = app.http.put(app.url("/v1/subscribers/u-1")).bearer_auth(&other.api_key).json(&json!({}));
    assert_eq!(response.send().await.unwrap().status(), 201);
    assert_eq!(count(&app, &mint(&other_pair, claims(other.tenant_id, "u-1", 60))).await, 200, "its own token");

    let hs256 = {
        // The public key as an HMAC secret: what a verifier that trusts `alg` would accept.
        let input = format!("{}.{}", part(json!({"alg": "HS256", "typ": "JWT"})), part(claims(&tenant, "u-1", 60)));
        let secret =
            aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, jwk(&pair)["x"].as_str().unwrap().as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(aws_lc_rs::hmac::sign(&secret, input.as_bytes()).as_ref()))
    };
    let unsigned = format!("{}.{}.", part(json!({"alg": "none", "typ": "JWT"})), part(claims(&tenant, "u-1", 60)));
    let mut no_iat = claims(&tenant, "u-1", 60);
    no_iat.as_object_mut().unwrap().remove("iat");
    let mut long = claims(&tenant, "u-1", 3600);
    long["iat"] = json!(in_seconds(-3600));
    long["exp"] = json!(in_seconds(24 * 3600));
    for (why, refused) in [
        ("expired", mint(&pair, json!({"tid": tenant, "sub": "u-1", "iat": in_seconds(-60), "exp": in_seconds(-5)}))),
        ("issued for more than 24 hours", mint(&pair, long)),
        (
            "issued in the future",
            mint(&pair, json!({"tid": tenant, "sub": "u-1", "iat": in_seconds(600), "exp": in_seconds(3600)})),
        ),
        ("no issue time", mint(&pair, no_iat)),
        ("no expiry", mint(&pair, json!({"tid": tenant, "sub": "u-1", "iat": in_seconds(0)}))),
        ("another key", mint(&key_pair(), claims(&tenant, "u-1", 3600))),
        ("another tenant's key naming this tenant", mint(&other_pair, claims(&tenant, "u-1", 3600))),
        ("this tenant's key naming another tenant", mint(&pair, claims(other.tenant_id, "u-1", 3600))),
        ("an unknown subscriber", mint(&pair, claims(&tenant, "u-2", 3600))),
        ("an unknown tenant", mint(&pair, claims(uuid::Uuid::now_v7(), "u-1", 3600))),
        ("HS256 keyed with the public key", hs256),
        ("alg none", unsigned),
    ] {
        assert_eq!(count(&app, &refused).await, 401, "{why}");
    }
    // Tampered: the claims changed after signing.
    let (head, rest) = token.split_once('.').unwrap();
    let (_, signature) = rest.split_once('.').unwrap();
    let changed = part(claims(&tenant, "u-1", 7200));
    assert_eq!(count(&app, &format!("{head}.{changed}.{signature}")).await, 401, "tampered");

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
