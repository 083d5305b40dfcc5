//! Rendering a request's templates runs off the async runtime, within a budget of render
//! steps for the whole request.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::json;

use crate::{bounds::topic_of, harness::TestApp};

// On a multi-thread runtime, as the binaries run (a current-thread one plans in place:
// notify-api/src/accept.rs, `plan_off_runtime`), with one worker thread, so a render on
// it would hold /healthz.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_template_too_heavy_for_a_large_topic_is_422_and_healthz_answers_meanwhile() {
    // A budget of some 100 of these renders: over a second in a debug build.
    let app = TestApp::api_with(|c| c.limits.render_fuel = 6_000_000).await;
    let (status, _) = app.call("PUT", "/v1/types/heavy", Some(&json!({"channels": ["email"]}))).await;
    assert_eq!(status, 201);
    // Some 60,000 render steps a render (under a render's own bound), per subscriber.
    let template = json!({"subject": "S", "text": "{% for i in range(20000) %}{% endfor %}{{ subscriber.id }}"});
    let (status, answer) = app.call("PUT", "/v1/templates/heavy/email", Some(&template)).await;
    assert_eq!(status, 200, "{answer}");
    topic_of(&app, "all", 2_000).await;

    // Another thread asks /healthz over and over while the request renders: what blocks the
    // API's runtime delays its answers, however this test's own runtime fares.
    let stop = Arc::new(AtomicBool::new(false));
    let prober = std::thread::spawn({
        let (stop, url) = (Arc::clone(&stop), app.url("/healthz"));
        move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                let (http, mut answered, mut slowest) = (reqwest::Client::new(), 0, Duration::ZERO);
                while !stop.load(Ordering::Relaxed) {
                    let asked = Instant::now();
                    let response = http.get(&url).timeout(Duration::from_secs(30)).send().await.unwrap();
                    assert_eq!(response.status(), 200);
                    (answered, slowest) = (answered + 1, slowest.max(asked.elapsed()));
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                (answered, slowest)
            })
        }
    });
    let started = Instant::now();
    let (status, problem) = app.post(&json!({"type": "heavy", "to": [{"topic": "all"}]})).await;
    let rendering = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (answered, slowest) = prober.join().unwrap();
    eprintln!("the request took {rendering:?}; /healthz answered {answered} times, the slowest in {slowest:?}");
    assert!(
        answered > 1 && slowest < Duration::from_millis(500),
        "/healthz took {slowest:?} while the request rendered"
    );
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "type", "{problem}");
    assert!(problem["errors"][0]["message"].as_str().unwrap().contains("email template"), "{problem}");
    assert_eq!(app.notification_count().await, 0);
}
