//! The SQS door through `entry::handle`: batch item failures, envelopes, the dead-letter
//! queue and its attributes (shared harness: tests/harness).

mod harness;
mod moto;
mod support;

use harness::*;

// =======================================================================================
// SQS door
// =======================================================================================

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_raw_event_and_array_bodies_are_delivered() {
    let (kustomer, harness) = Harness::accepting(Options::default()).await;
    let records = [
        ("m-raw", track("u-raw").to_string()),
        (
            "m-array",
            json!([identify("u-arr-1"), page("u-arr-2")]).to_string(),
        ),
    ];
    let answer = harness.answer(sqs(&records)).await;
    assert_eq!(answer, json!({"batchItemFailures": []}));
    assert_eq!(kustomer.delivered_sorted(), ["u-arr-1", "u-arr-2", "u-raw"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_eventbridge_and_sns_envelopes_are_unwrapped() {
    let (kustomer, harness) = Harness::accepting(Options::default()).await;
    let records = [
        ("m-bridge", eventbridge(&track("u-bridge")).to_string()),
        ("m-sns", sns(&page("u-sns")).to_string()),
        (
            "m-sns-bridge",
            sns(&eventbridge(&screen("u-sns-bridge"))).to_string(),
        ),
        (
            "m-sns-array",
            sns(&json!([track("u-sns-arr-1"), track("u-sns-arr-2")])).to_string(),
        ),
    ];
    let answer = harness.answer(sqs(&records)).await;
    assert_eq!(answer, json!({"batchItemFailures": []}));
    assert_eq!(
        kustomer.delivered_sorted(),
        [
            "u-bridge",
            "u-sns",
            "u-sns-arr-1",
            "u-sns-arr-2",
            "u-sns-bridge"
        ]
    );
    let names: Vec<String> = kustomer.seen().iter().map(|s| s.target.clone()).collect();
    assert!(
        names.iter().all(|t| t == "/v1/tracking/identityEvent"),
        "{names:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_sample_events_have_no_batch_failures() {
    let (kustomer, harness) = Harness::accepting(Options::default()).await;
    let mut expected = 0;
    for file in [
        "sqs-raw-event.json",
        "sqs-array.json",
        "sqs-eventbridge.json",
        "sqs-sns.json",
    ] {
        let payload = sample(file);
        for record in payload["Records"].as_array().unwrap() {
            expected += decode_events(record["body"].as_str().unwrap())
                .unwrap()
                .len();
        }
        let answer = harness.answer(payload).await;
        assert_eq!(answer, json!({"batchItemFailures": []}), "{file}");
    }
    assert_eq!(kustomer.delivered().len(), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_undecodable_body_goes_to_the_dlq_with_its_error() {
    let (kustomer, harness) = Harness::accepting(Options::default().with_queues()).await;
    let records = [
        ("m-garbage", "{\"type\": \"track\", oops".to_string()),
        ("m-number", "42".to_string()),
        ("m-good", track("u-good").to_string()),
    ];
    let answer = harness.answer(sqs(&records)).await;
    assert_eq!(answer, json!({"batchItemFailures": []}));
    assert_eq!(kustomer.delivered(), ["u-good"]);
    let mut parked = harness.dead_letters().await;
    parked.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(parked.len(), 2, "{parked:#?}");
    let (body, attributes) = &parked[1];
    assert_eq!(
        body, "{\"type\": \"track\", oops",
        "the original body, as received"
    );
    assert_eq!(attributes["errorClass"], "permanent");
    assert_eq!(attributes["errorStatus"], "400");
    assert!(
        attributes["errorMessage"].contains("not valid JSON"),
        "{attributes:?}"
    );
    assert_eq!(attributes["source"], "sqs");
    assert_eq!(parked[0].0, "42");
    assert!(
        parked[0].1["errorMessage"].contains("neither an event"),
        "{:?}",
        parked[0].1
    );
    assert!(harness.requeued().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_batch_item_failures_carry_exactly_the_failed_message_ids() {
    let kustomer = Kustomer::start(|request: &Request| match write_key(request).as_deref() {
        Some(user) if user.starts_with("u-flaky") => Reply::empty(503),
        Some("u-bad") => Reply::json(400, &json!({"errors": [{"title": "invalid"}]})),
        _ => accept(request),
    })
    .await;
    let harness = Harness::start(&kustomer, Options::default().with_queues()).await;
    let records = [
        ("2f1b8f8a-0001", track("u-ok-1").to_string()),
        ("2f1b8f8a-0002", track("u-flaky-1").to_string()),
        ("2f1b8f8a-0003", track("u-bad").to_string()),
        (
            "2f1b8f8a-0004",
            json!([track("u-ok-2"), track("u-flaky-2")]).to_string(),
        ),
        ("2f1b8f8a-0005", page("u-ok-3").to_string()),
    ];
    let answer = harness.answer(sqs(&records)).await;
    assert_eq!(
        batch_failures(&answer),
        ["2f1b8f8a-0002", "2f1b8f8a-0004"],
        "{answer}"
    );
    // The 400 was parked, not reported.
    let parked = harness.dead_letters().await;
    assert_eq!(parked.len(), 1, "{parked:#?}");
    assert_eq!(keys_of_body(&parked[0].0), ["u-bad"]);
    assert_eq!(parked[0].1["errorStatus"], "400");
    assert_eq!(parked[0].1["errorClass"], "permanent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_permanent_failure_without_a_dlq_is_reported_for_the_redrive_policy() {
    let (_kustomer, harness) = Harness::accepting(Options::default()).await;
    let records = [
        ("m-bad", unnamed_track("u-bad").to_string()),
        ("m-garbage", "not json".to_string()),
        ("m-ok", track("u-ok").to_string()),
    ];
    let answer = harness.answer(sqs(&records)).await;
    assert_eq!(batch_failures(&answer), ["m-bad", "m-garbage"]);
}

/// Issue 18, FIFO: once a record of a message group fails transiently, every later record
/// of that group is reported (and none of their events sent), whatever user it is for;
/// records before it and other groups are delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_fifo_reports_the_rest_of_a_failed_group_and_sends_none_of_it() {
    let kustomer = Kustomer::failing_for("u-fail", Reply::json(503, &json!({}))).await;
    let harness = Harness::start(&kustomer, Options::default()).await;
    let records = [
        ("m-a", "g-1", track("u-a").to_string()),
        ("m-other", "g-2", track("u-other").to_string()),
        ("m-fail", "g-1", track("u-fail").to_string()),
        ("m-unnamed", "g-1", unnamed_track("u-x").to_string()),
        ("m-b", "g-1", track("u-b").to_string()),
        ("m-other-2", "g-2", page("u-other-2").to_string()),
    ];
    let answer = harness.answer(sqs_fifo(&records)).await;
    assert_eq!(batch_failures(&answer), ["m-b", "m-fail", "m-unnamed"]);
    assert_eq!(kustomer.delivered_sorted(), ["u-a", "u-other", "u-other-2"]);
    assert!(
        kustomer.writes_for("u-b").is_empty(),
        "u-b went ahead of u-fail"
    );
    assert!(harness.dead_letters().await.is_empty(), "held, not parked");
}
