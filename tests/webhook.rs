//! The webhook door (API Gateway HTTP API 2.0, REST 1.0, function URLs) through
//! `entry::handle`: statuses, summaries, `Retry-After`, the webhook token (shared harness:
//! tests/harness).

mod harness;
mod moto;
mod support;

use harness::*;

// =======================================================================================
// Webhook door
// =======================================================================================

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_http_api_v2_plain_body_one_event_is_200() {
    let (kustomer, harness) = Harness::accepting(Options::default()).await;
    let body = track("u-v2").to_string();
    let answer = harness
        .answer(apigw_v2(&body, Some(&bearer(TOKEN)), false))
        .await;
    let (status, retry_after, summary) = webhook_answer(&answer);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(retry_after, None);
    assert_eq!(
        summary,
        json!({"received": 1, "delivered": 1, "failed": []})
    );
    assert_eq!(answer["headers"]["content-type"], "application/json");
    // Payload 2.0 answers carry `cookies` (cargo lambda's emulator requires the field).
    assert_eq!(answer["cookies"], json!([]));
    let seen = kustomer.seen();
    assert_eq!(seen.len(), 1, "{seen:#?}");
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].target, "/v1/tracking/identityEvent");
    assert_eq!(
        seen[0].authorization.as_deref(),
        Some(bearer(API_KEY).as_str())
    );
    assert_eq!(kustomer.delivered(), ["u-v2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_http_api_v2_base64_body_with_an_array_is_200() {
    let (kustomer, harness) = Harness::accepting(Options::default()).await;
    let body = json!([identify("u-b64-a"), track("u-b64-b"), page("u-b64-c")]).to_string();
    let answer = harness
        .answer(apigw_v2(&body, Some(&bearer(TOKEN)), true))
        .await;
    let (status, _, summary) = webhook_answer(&answer);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        summary,
        json!({"received": 3, "delivered": 3, "failed": []})
    );
    assert_eq!(
        kustomer.delivered_sorted(),
        ["u-b64-a", "u-b64-b", "u-b64-c"]
    );
    // identify: look-ups by e-mail and by userId, nothing found, then a create.
    let identify_requests: Vec<(String, String)> = kustomer
        .seen()
        .into_iter()
        .filter(|s| s.method == "GET" || s.target == "/v1/customers")
        .map(|s| (s.method, s.target))
        .collect();
    assert_eq!(identify_requests.len(), 3, "{identify_requests:?}");
    assert!(identify_requests[0].1.starts_with("/v1/customers/email="));
    assert_eq!(identify_requests[1].1, "/v1/customers/externalId=u-b64-a");
    assert_eq!(
        identify_requests[2],
        ("POST".into(), "/v1/customers".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_rest_api_v1_plain_and_base64_bodies_are_200() {
    let (kustomer, harness) = Harness::accepting(Options::default()).await;
    let plain = harness
        .answer(apigw_v1(
            &track("u-v1-plain").to_string(),
            Some(&bearer(TOKEN)),
            false,
        ))
        .await;
    assert_eq!(webhook_answer(&plain).0, 200, "{plain}");
    // REST proxy answers must not have fields API Gateway 1.0 does not know.
    let fields: Vec<&str> = plain
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let rest_fields = [
        "statusCode",
        "headers",
        "multiValueHeaders",
        "body",
        "isBase64Encoded",
    ];
    assert!(
        fields.iter().all(|field| rest_fields.contains(field)),
        "{fields:?}"
    );
    let array = json!([screen("u-v1-b64"), track("u-v1-b64")]).to_string();
    let encoded = harness
        .answer(apigw_v1(&array, Some(&bearer(TOKEN)), true))
        .await;
    let (status, _, summary) = webhook_answer(&encoded);
    assert_eq!(status, 200, "{encoded}");
    assert_eq!(summary["delivered"], 2);
    assert_eq!(kustomer.delivered(), ["u-v1-plain", "u-v1-b64", "u-v1-b64"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_sample_events_are_200() {
    let kustomer = Kustomer::accepting().await;
    let options = Options {
        keys: Keys::Local {
            token: Some("local-webhook-token"),
        },
        ..Options::default()
    };
    let harness = Harness::start(&kustomer, options).await;
    for file in [
        "apigw-v2-identify.json",
        "apigw-v2-track-base64.json",
        "apigw-v1-page.json",
    ] {
        let answer = harness.answer(sample(file)).await;
        let (status, _, summary) = webhook_answer(&answer);
        assert_eq!(status, 200, "{file}: {answer}");
        assert_eq!(summary["delivered"], 1, "{file}: {summary}");
    }
    assert_eq!(
        kustomer.delivered_sorted(),
        ["usr_2c8d55", "usr_7f3a91", "usr_9b04e1"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_bad_json_is_400_and_sends_nothing() {
    let (kustomer, harness) = Harness::accepting(Options::default()).await;
    for request in [
        apigw_v2("{\"type\": \"track\",", Some(&bearer(TOKEN)), false),
        apigw_v1("not json at all", Some(&bearer(TOKEN)), true),
        apigw_v2("[]", Some(&bearer(TOKEN)), false),
    ] {
        let answer = harness.answer(request).await;
        let (status, _, body) = webhook_answer(&answer);
        assert_eq!(status, 400, "{answer}");
        assert!(body["error"].is_string(), "{body}");
    }
    let answer = harness
        .answer(apigw_v2(
            "{\"type\": \"track\",",
            Some(&bearer(TOKEN)),
            false,
        ))
        .await;
    assert!(webhook_answer(&answer).2["error"]
        .as_str()
        .unwrap()
        .contains("not valid JSON"));
    assert!(kustomer.seen().is_empty(), "{:#?}", kustomer.seen());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_unsupported_type_is_400_naming_the_problem() {
    let (kustomer, harness) = Harness::accepting(Options::default()).await;
    let event =
        json!({"type": "alias", "userId": "u-alias", "messageId": "msg-alias", "previousId": "x"});
    let answer = harness
        .answer(apigw_v2(&event.to_string(), Some(&bearer(TOKEN)), false))
        .await;
    let (status, retry_after, summary) = webhook_answer(&answer);
    assert_eq!(status, 400, "{answer}");
    assert_eq!(retry_after, None);
    assert_eq!(summary["received"], 1);
    assert_eq!(summary["delivered"], 0);
    let failed = &summary["failed"][0];
    assert_eq!(failed["index"], 0);
    assert_eq!(failed["messageId"], "msg-alias");
    assert_eq!(failed["class"], "permanent");
    assert_eq!(failed["status"], 400);
    assert!(
        failed["message"]
            .as_str()
            .unwrap()
            .contains("alias is not supported"),
        "{failed}"
    );
    assert!(kustomer.seen().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_missing_or_wrong_token_is_401() {
    let (kustomer, harness) = Harness::accepting(Options::default()).await;
    let body = track("u-401").to_string();
    let wrong = [
        None,
        Some(String::new()),
        Some(TOKEN.to_string()),                 // no "Bearer "
        Some(format!("Bearer {TOKEN}x")),        // longer
        Some(format!("Bearer {}", &TOKEN[1..])), // shorter
        Some("Bearer ".to_string()),
        Some(format!("Basic {TOKEN}")),
        Some(format!("Bearer {}", TOKEN.to_uppercase())),
    ];
    for authorization in &wrong {
        for request in [
            apigw_v2(&body, authorization.as_deref(), false),
            apigw_v1(&body, authorization.as_deref(), false),
        ] {
            let answer = harness.answer(request).await;
            let (status, _, error) = webhook_answer(&answer);
            assert_eq!(status, 401, "{authorization:?}: {answer}");
            let text = error.to_string();
            assert!(!text.contains(TOKEN), "the answer shows the token: {text}");
        }
    }
    assert!(kustomer.seen().is_empty(), "{:#?}", kustomer.seen());
    // The right token, lower-case scheme too.
    for authorization in [bearer(TOKEN), format!("bearer {TOKEN}")] {
        let answer = harness
            .answer(apigw_v2(&body, Some(&authorization), false))
            .await;
        assert_eq!(webhook_answer(&answer).0, 200, "{answer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_without_a_configured_token_is_401() {
    let kustomer = Kustomer::accepting().await;
    let options = Options {
        keys: Keys::Local { token: None },
        ..Options::default()
    };
    let harness = Harness::start(&kustomer, options).await;
    let body = track("u-no-token").to_string();
    for authorization in [None, Some(bearer(TOKEN)), Some("Bearer ".to_string())] {
        let answer = harness
            .answer(apigw_v2(&body, authorization.as_deref(), false))
            .await;
        let (status, _, error) = webhook_answer(&answer);
        assert_eq!(status, 401, "{answer}");
        assert!(error["error"]
            .as_str()
            .unwrap()
            .contains("no webhook token is configured"));
    }
    assert!(kustomer.seen().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_without_a_token_in_the_secret_is_401() {
    let kustomer = Kustomer::accepting().await;
    let options = Options {
        keys: Keys::Secret("sk-bare-key-in-secret".into()),
        ..Options::default()
    };
    let harness = Harness::start(&kustomer, options).await;
    let answer = harness
        .answer(apigw_v2(
            &track("u").to_string(),
            Some(&bearer(TOKEN)),
            false,
        ))
        .await;
    assert_eq!(webhook_answer(&answer).0, 401, "{answer}");
    assert!(kustomer.seen().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_auth_none_accepts_calls_without_a_token() {
    let kustomer = Kustomer::accepting().await;
    let options = Options {
        keys: Keys::Local { token: None },
        webhook_auth_none: true,
        ..Options::default()
    };
    let harness = Harness::start(&kustomer, options).await;
    let answer = harness
        .answer(apigw_v2(&track("u-open").to_string(), None, false))
        .await;
    assert_eq!(webhook_answer(&answer).0, 200, "{answer}");
    assert_eq!(kustomer.delivered(), ["u-open"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_secret_token_from_secrets_manager_is_checked() {
    let kustomer = Kustomer::accepting().await;
    let secret = json!({"apiKey": "sk-from-moto", "webhookToken": "tok-from-moto"}).to_string();
    let options = Options {
        keys: Keys::Secret(secret),
        ..Options::default()
    };
    let harness = Harness::start(&kustomer, options).await;
    let body = track("u-moto").to_string();
    let refused = harness
        .answer(apigw_v2(&body, Some(&bearer(TOKEN)), false))
        .await;
    assert_eq!(webhook_answer(&refused).0, 401, "{refused}");
    let accepted = harness
        .answer(apigw_v2(&body, Some("Bearer tok-from-moto"), false))
        .await;
    assert_eq!(webhook_answer(&accepted).0, 200, "{accepted}");
    let seen = kustomer.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].authorization.as_deref(),
        Some("Bearer sk-from-moto")
    );
    // The first fetch, and one reload because the first token matched nothing (it could
    // have been a newly rotated one); the right token was then served from the cache.
    assert_eq!(harness.app.pipeline().keys().fetch_count(), 2);
}

/// Issue 8, fault 6: wrong tokens cannot drive Secrets Manager traffic. A burst of
/// concurrent bad calls shares one reload (single-flight), and later bad calls within
/// `TOKEN_RELOAD_INTERVAL` (10 s) reload nothing. Counted with the provider's fetch
/// counter, which counts every GetSecretValue that completed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_bad_token_burst_reloads_the_secret_at_most_once() {
    let logs = capture_logs();
    let kustomer = Kustomer::accepting().await;
    let token = "tok-burst-good-41f0";
    let options = Options {
        keys: Keys::Secret(json!({"apiKey": "sk-burst", "webhookToken": token}).to_string()),
        ..Options::default()
    };
    let harness = Harness::start(&kustomer, options).await;
    let body = track("u-burst").to_string();
    let good = harness
        .answer(apigw_v2(&body, Some(&bearer(token)), false))
        .await;
    assert_eq!(webhook_answer(&good).0, 200, "{good}");
    assert_eq!(harness.app.pipeline().keys().fetch_count(), 1);

    let bad: Vec<String> = (0..40).map(|n| format!("tok-burst-bad-{n:02}")).collect();
    let burst = futures_util::future::join_all(
        bad.iter()
            .map(|t| harness.answer(apigw_v2(&body, Some(&bearer(t)), false))),
    )
    .await;
    for answer in &burst {
        assert_eq!(webhook_answer(answer).0, 401, "{answer}");
    }
    assert_eq!(
        harness.app.pipeline().keys().fetch_count(),
        2,
        "40 concurrent bad calls: one shared reload"
    );
    for t in &bad {
        let answer = harness
            .answer(apigw_v2(&body, Some(&bearer(t)), false))
            .await;
        assert_eq!(webhook_answer(&answer).0, 401, "{answer}");
    }
    assert_eq!(
        harness.app.pipeline().keys().fetch_count(),
        2,
        "no reload within 10 s of the last one"
    );
    // The good token still works and is still served from the cache.
    let good = harness
        .answer(apigw_v2(&body, Some(&bearer(token)), false))
        .await;
    assert_eq!(webhook_answer(&good).0, 200, "{good}");
    assert_eq!(harness.app.pipeline().keys().fetch_count(), 2);
    let mut presented: Vec<&str> = bad.iter().map(String::as_str).collect();
    presented.extend([token, "sk-burst"]);
    logs.assert_absent(&presented);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_throttled_is_429_with_retry_after_and_does_not_wait_past_the_reply_time() {
    let kustomer = Kustomer::start(|request: &Request| {
        if is_write(request) {
            Reply::json(429, &json!({"errors": [{"title": "Too Many Requests"}]}))
                .with_header("Retry-After", "30")
        } else {
            accept(request)
        }
    })
    .await;
    // Three attempts allowed, but Kustomer asks for 30 s: more than RudderStack waits.
    let harness = Harness::start(&kustomer, Options::default().attempts(3)).await;
    let started = std::time::Instant::now();
    let answer = harness
        .answer(apigw_v2(
            &track("u-429").to_string(),
            Some(&bearer(TOKEN)),
            false,
        ))
        .await;
    let elapsed = started.elapsed();
    let (status, retry_after, summary) = webhook_answer(&answer);
    assert_eq!(status, 429, "{answer}");
    assert_eq!(retry_after.as_deref(), Some("30"));
    assert_eq!(summary["failed"][0]["class"], "throttled");
    assert_eq!(summary["failed"][0]["status"], 429);
    assert_eq!(
        kustomer.writes().len(),
        1,
        "no retry can finish before the reply"
    );
    assert!(
        elapsed < Duration::from_secs(9),
        "answered after {elapsed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_transient_failure_is_503_never_4xx() {
    let kustomer = Kustomer::start(|request: &Request| {
        if is_write(request) {
            Reply::text(503, "upstream unavailable")
        } else {
            accept(request)
        }
    })
    .await;
    let harness = Harness::start(&kustomer, Options::default()).await;
    let answer = harness
        .answer(apigw_v2(
            &track("u-503").to_string(),
            Some(&bearer(TOKEN)),
            false,
        ))
        .await;
    let (status, _, summary) = webhook_answer(&answer);
    assert_eq!(status, 503, "{answer}");
    assert_eq!(summary["failed"][0]["class"], "transient");
    assert_eq!(summary["failed"][0]["status"], 503);
    // max_attempts 2: the write was tried twice.
    assert_eq!(kustomer.writes().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_mixed_bad_and_throttled_events_answer_the_retryable_status() {
    let kustomer = Kustomer::failing_for(
        "u-throttled",
        Reply::empty(429).with_header("Retry-After", "2"),
    )
    .await;
    let harness = Harness::start(&kustomer, Options::default().attempts(1)).await;
    let bad = unnamed_track("u-bad");
    let body = json!([track("u-ok"), bad, track("u-throttled")]).to_string();
    let answer = harness
        .answer(apigw_v2(&body, Some(&bearer(TOKEN)), false))
        .await;
    let (status, retry_after, summary) = webhook_answer(&answer);
    assert_eq!(
        status, 429,
        "a batch holding a retryable event must be retried: {answer}"
    );
    assert_eq!(retry_after.as_deref(), Some("2"));
    assert_eq!(summary["received"], 3);
    assert_eq!(summary["delivered"], 1);
    let classes: Vec<(u64, &str)> = summary["failed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["index"].as_u64().unwrap(), f["class"].as_str().unwrap()))
        .collect();
    assert_eq!(classes, [(1, "permanent"), (2, "throttled")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_kustomer_refusing_the_key_is_500_after_one_reload() {
    let kustomer = Kustomer::start(|_: &Request| {
        Reply::json(401, &json!({"errors": [{"title": "Unauthorized"}]}))
    })
    .await;
    let harness = Harness::start(&kustomer, Options::default()).await;
    let answer = harness
        .answer(apigw_v2(
            &track("u-key").to_string(),
            Some(&bearer(TOKEN)),
            false,
        ))
        .await;
    let (status, _, summary) = webhook_answer(&answer);
    assert_eq!(status, 500, "our own configuration is wrong: {answer}");
    assert_eq!(summary["failed"][0]["class"], "auth");
    // One attempt, one after the reload: never more.
    assert_eq!(kustomer.writes().len(), 2);
}

/// Issue 18, queue mode: the webhook checks the token and the body as always, then puts
/// each event on the function's queue (FIFO: the user's group, a deduplication id from the
/// messageId) and answers 202; nothing goes to Kustomer. RudderStack's retry of the same
/// call adds nothing to a FIFO queue. An event SQS can never take is a 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_queue_mode_queues_the_events_and_answers_202() {
    let options = Options::default()
        .with_fifo_queues()
        .with_setting(lambda::WEBHOOK_MODE, "queue")
        .with_setting(
            lambda::RETRY_QUEUE_URL,
            "https://sqs.us-east-1.amazonaws.com/123456789012/events.fifo",
        );
    let (kustomer, harness) = Harness::accepting(options).await;
    let events = json!([identify("u-q1"), track("u-q2"), page("u-q1")]);
    let call = apigw_v2(&events.to_string(), Some(&bearer(TOKEN)), false);
    for _ in 0..2 {
        let answer = harness.answer(call.clone()).await;
        let (status, _, summary) = webhook_answer(&answer);
        assert_eq!(status, 202, "{answer}");
        assert_eq!(summary, json!({"received": 3, "queued": 3, "failed": []}));
    }
    assert!(
        kustomer.seen().is_empty(),
        "queue mode sends nothing itself"
    );
    let queued = harness.queues().requeued_messages();
    assert_eq!(queued.len(), 3, "the retried call was deduplicated");
    let keys: Vec<(String, String)> = queued
        .iter()
        .map(|m| {
            m.keys
                .clone()
                .map(|k| (k.group, k.dedup))
                .unwrap_or_default()
        })
        .collect();
    let expected = [
        ("u-q1", "identify:u-q1:msg-u-q1"),
        ("u-q2", "track:u-q2:msg-u-q2"),
        ("u-q1", "page:u-q1:msg-u-q1"),
    ];
    assert_eq!(keys, expected.map(|(g, d)| (g.to_string(), d.to_string())));
    let bodies: Vec<Value> = queued
        .iter()
        .map(|m| serde_json::from_str(&m.body).unwrap())
        .collect();
    assert_eq!(Value::Array(bodies), events);

    let refused = harness
        .answer(apigw_v2(&events.to_string(), Some(&bearer("wrong")), false))
        .await;
    assert_eq!(webhook_answer(&refused).0, 401);
    let huge = json!([{"type": "track", "userId": "u-big", "messageId": "big",
                       "properties": {"blob": "x".repeat(300_000)}}]);
    let answer = harness
        .answer(apigw_v2(&huge.to_string(), Some(&bearer(TOKEN)), false))
        .await;
    let (status, _, summary) = webhook_answer(&answer);
    assert_eq!(status, 400, "{answer}");
    assert_eq!(summary["failed"][0]["messageId"], "big");
    assert_eq!(harness.queues().requeued_messages().len(), 3);
}
