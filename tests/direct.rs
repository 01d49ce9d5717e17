//! The direct door (RudderStack's AWS Lambda destination) and payloads of no door, through
//! `entry::handle`: summaries, the retry and dead-letter queues, invocation errors (shared
//! harness: tests/harness).

mod harness;
mod moto;
mod support;

use harness::*;

// =======================================================================================
// Direct door
// =======================================================================================

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_single_event_is_delivered() {
    let (kustomer, harness) = Harness::accepting(Options::default()).await;
    let answer = harness.answer(identify("u-direct")).await;
    assert_eq!(
        answer,
        json!({"received": 1, "delivered": 1, "requeued": 0, "parked": 0})
    );
    assert_eq!(kustomer.delivered(), ["u-direct"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_array_and_eventbridge_target_are_delivered() {
    let (kustomer, harness) = Harness::accepting(Options::default()).await;
    let answer = harness
        .answer(json!([identify("u-d1"), track("u-d1"), screen("u-d2")]))
        .await;
    assert_eq!(
        answer,
        json!({"received": 3, "delivered": 3, "requeued": 0, "parked": 0})
    );
    // One user's events in their order: the identify's write before the track.
    let order: Vec<String> = kustomer
        .writes()
        .into_iter()
        .filter(|w| w.key.as_deref() == Some("u-d1"))
        .map(|w| w.target)
        .collect();
    assert_eq!(order, ["/v1/customers", "/v1/tracking/identityEvent"]);

    let answer = harness.answer(eventbridge(&track("u-rule"))).await;
    assert_eq!(answer["delivered"], 1, "{answer}");
    for file in ["direct-single.json", "direct-array.json"] {
        let payload = sample(file);
        let count = payload.as_array().map_or(1, Vec::len) as u64;
        let answer = harness.answer(payload).await;
        assert_eq!(answer["received"], count, "{file}: {answer}");
        assert_eq!(answer["delivered"], count, "{file}: {answer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_transient_failure_goes_to_the_retry_queue() {
    let kustomer = Kustomer::failing_for("u-flaky", Reply::empty(502)).await;
    let harness = Harness::start(&kustomer, Options::default().with_queues()).await;
    let flaky = track("u-flaky");
    let answer = harness
        .answer(json!([track("u-fine"), flaky.clone()]))
        .await;
    assert_eq!(
        answer,
        json!({"received": 2, "delivered": 1, "requeued": 1, "parked": 0})
    );
    let requeued = harness.requeued().await;
    assert_eq!(requeued.len(), 1);
    let body: Value = serde_json::from_str(&requeued[0]).unwrap();
    assert_eq!(body, flaky, "the event itself, so the SQS door can take it");
    assert!(harness.dead_letters().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_permanent_failure_goes_to_the_dlq_with_its_error() {
    let (_kustomer, harness) = Harness::accepting(Options::default().with_queues()).await;
    let bad = json!({"type": "track", "userId": "u-bad", "messageId": "msg-bad"});
    let answer = harness.answer(json!([bad.clone(), track("u-fine")])).await;
    assert_eq!(
        answer,
        json!({"received": 2, "delivered": 1, "requeued": 0, "parked": 1})
    );
    let parked = harness.dead_letters().await;
    assert_eq!(parked.len(), 1);
    let (body, attributes) = &parked[0];
    assert_eq!(serde_json::from_str::<Value>(body).unwrap(), bad);
    assert_eq!(attributes["errorClass"], "permanent");
    assert_eq!(attributes["errorStatus"], "400");
    assert_eq!(attributes["source"], "direct");
    assert!(!attributes["errorMessage"].is_empty());
    assert!(harness.requeued().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_without_queues_fails_the_invocation() {
    let kustomer = Kustomer::failing_for("u-flaky", Reply::empty(500)).await;
    let harness = Harness::start(&kustomer, Options::default()).await;
    let error = harness
        .invoke(json!([track("u-fine"), track("u-flaky")]))
        .await
        .expect_err("a transient failure without a retry queue fails the invocation");
    assert!(error.contains("1 of 2 events"), "{error}");
    let error = harness
        .invoke(unnamed_track("u-bad"))
        .await
        .expect_err("a permanent failure without a DLQ fails the invocation");
    assert!(error.contains("1 of 1 events"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_dlq_send_failing_fails_the_invocation() {
    let (_kustomer, harness) = Harness::accepting(Options::default().missing_dlq()).await;
    let error = harness
        .invoke_typed(unnamed_track("u-bad"))
        .await
        .expect_err("the event could not be parked");
    assert_eq!(error.error_type(), "QueueUnavailable");
    let error = error.to_string();
    assert!(error.contains("neither delivered nor queued"), "{error}");
}

// =======================================================================================
// Anything else
// =======================================================================================

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_shape_is_an_error_naming_keys_not_values() {
    let (kustomer, harness) = Harness::accepting(Options::default()).await;
    let payload = json!({
        "customerEmail": "hidden.person@example.com",
        "action": {"phone": "+1 555 0100"},
        "Records": [{"eventSource": "aws:kinesis", "data": "c2VjcmV0"}],
    });
    let error = harness.invoke(payload).await.expect_err("unknown shape");
    assert!(error.contains("customerEmail"), "{error}");
    assert!(error.contains("action"), "{error}");
    assert!(error.contains("Records"), "{error}");
    for value in ["hidden.person", "555", "c2VjcmV0", "kinesis"] {
        assert!(
            !error.contains(value),
            "the error shows a value ({value}): {error}"
        );
    }
    for payload in [json!("secret-string-value"), json!(12345), json!(null)] {
        let error = harness.invoke(payload).await.expect_err("not an object");
        assert!(error.contains("unsupported payload"), "{error}");
        assert!(
            !error.contains("secret-string-value") && !error.contains("12345"),
            "{error}"
        );
    }
    // Lambda records the error's type: a readable name, not a Rust type path.
    let error = harness
        .invoke_typed(json!({"customerEmail": "x"}))
        .await
        .expect_err("unknown shape");
    let diagnostic = lambda_runtime::Diagnostic::from(error);
    assert_eq!(diagnostic.error_type, "UnsupportedPayload");
    assert!(diagnostic.error_message.contains("customerEmail"));
    assert!(kustomer.seen().is_empty());
}

/// Issue 18, FIFO queues: a user's events held behind its failed one go to the retry queue
/// behind it, in order, in the user's group, each deduplicated by its messageId; a permanent
/// failure goes to the (FIFO) dead-letter queue with its keys too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_fifo_requeues_a_users_held_events_in_order_with_their_keys() {
    let kustomer = Kustomer::failing_for("u-flaky", Reply::empty(502)).await;
    let harness = Harness::start(&kustomer, Options::default().with_fifo_queues()).await;
    let step = |n: u32| {
        let mut event = track("u-flaky");
        event["messageId"] = json!(format!("msg-flaky-{n}"));
        event["properties"]["step"] = json!(n);
        event
    };
    let bad = json!({"type": "track", "userId": "u bad", "messageId": "msg bad"});
    let payload = json!([step(1), track("u-fine"), step(2), bad, step(3)]);
    let answer = harness.answer(payload.clone()).await;
    assert_eq!(
        answer,
        json!({"received": 5, "delivered": 1, "requeued": 3, "parked": 1})
    );
    let requeued = harness.queues().requeued_messages();
    let steps: Vec<(u64, String, String)> = requeued
        .iter()
        .map(|m| {
            let body: Value = serde_json::from_str(&m.body).unwrap();
            let keys = m.keys.clone().expect("FIFO keys");
            (
                body["properties"]["step"].as_u64().unwrap(),
                keys.group,
                keys.dedup,
            )
        })
        .collect();
    assert_eq!(
        steps,
        [1, 2, 3].map(|n| (
            n,
            "u-flaky".to_string(),
            format!("track:u-flaky:msg-flaky-{n}")
        ))
    );
    let parked = harness.queues().dead_letter_messages();
    let keys = parked[0].keys.clone().expect("FIFO keys");
    // "u bad" and "msg bad" hold a space, which SQS refuses in an id: hashed, stably.
    assert!(
        keys.group.starts_with("h-") && keys.dedup.starts_with("h-"),
        "{keys:?}"
    );
    // Lambda retries a failed invocation as a whole: the same events are deduplicated.
    harness.answer(payload).await;
    assert_eq!(harness.queues().requeued_messages().len(), 3);
    assert_eq!(harness.queues().dead_letter_messages().len(), 1);
}
