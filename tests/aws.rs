//! Secrets Manager and SQS against moto's server on loopback, through the real AWS SDK:
//! the key provider (parsing, TTL cache, reload, single flight, failure classes) and the
//! queues (DLQ parking with attributes, requeue, batching, failures per item); the fleet's
//! ledger of delivered events in DynamoDB, alone and shared by two pipelines.

mod moto;
mod support;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use moto::{sdk_config_for, unreachable_endpoint, MotoServer};
use rudder_kustomer::aws::ledger::DeliveredLedger;
use rudder_kustomer::aws::secrets::KeyProvider;
use rudder_kustomer::aws::sqs::{
    FifoKeys, Parked, QueueErrorKind, Queued, SqsQueues, MAX_MESSAGE_BYTES,
};
use rudder_kustomer::outcome::{Delivered, Failure, FailureClass, Outcome, Report, Skipped};
use rudder_kustomer::pipeline::Pipeline;
use rudder_kustomer::settings::lambda::{self, KeySource, LambdaSettings};
use serde_json::{json, Value};

const HOUR: Duration = Duration::from_secs(3600);

fn secret(id: &str) -> KeySource {
    KeySource::SecretsManager {
        secret_id: id.to_string(),
    }
}

async fn provider(moto: &MotoServer, id: &str, ttl: Duration) -> KeyProvider {
    provider_at(&moto.endpoint(), id, ttl).await
}

async fn provider_at(endpoint: &str, id: &str, ttl: Duration) -> KeyProvider {
    KeyProvider::with_sdk_config(secret(id), ttl, sdk_config_for(endpoint).await)
}

/// The first fetch fails with `class`, naming the secret `id`.
async fn failed_fetch(keys: &KeyProvider, class: FailureClass, id: &str) -> Failure {
    let failure = keys.current().await.unwrap_err();
    assert_eq!(failure.class, class, "{failure}");
    assert!(failure.message.contains(id), "{failure}");
    failure
}

/// The bodies of every visible message of the queue, sorted.
async fn bodies_in(moto: &MotoServer, queue_url: &str) -> Vec<String> {
    let mut bodies: Vec<String> = moto
        .receive_all(queue_url)
        .await
        .into_iter()
        .map(|(body, _)| body)
        .collect();
    bodies.sort();
    bodies
}

#[tokio::test]
async fn secret_as_bare_key() {
    let moto = MotoServer::shared();
    moto.create_secret("kustomer/bare", "sk-bare-1\n").await;
    let keys = provider(moto, "kustomer/bare", HOUR).await;
    let credentials = keys.current().await.unwrap();
    assert_eq!(credentials.api_key.expose(), "sk-bare-1");
    assert!(credentials.webhook_token.is_none());
    assert_eq!(keys.fetch_count(), 1);
}

#[tokio::test]
async fn secret_as_json_with_webhook_token() {
    let moto = MotoServer::shared();
    moto.create_secret(
        "kustomer/json",
        r#"{"apiKey": "sk-json-1", "webhookToken": "tok-json-1"}"#,
    )
    .await;
    let keys = provider(moto, "kustomer/json", HOUR).await;
    let credentials = keys.current().await.unwrap();
    assert_eq!(credentials.api_key.expose(), "sk-json-1");
    assert_eq!(
        credentials.webhook_token.as_ref().map(|t| t.expose()),
        Some("tok-json-1")
    );
    let shown = format!("{credentials:?} {keys:?}");
    assert!(
        !shown.contains("sk-json-1") && !shown.contains("tok-json-1"),
        "{shown}"
    );
}

#[tokio::test]
async fn cached_for_the_ttl_then_fetched_again() {
    let moto = MotoServer::shared();
    moto.create_secret("kustomer/ttl", "sk-old").await;
    let keys = provider(moto, "kustomer/ttl", Duration::from_millis(1500)).await;
    let first = keys.current().await.unwrap();
    assert_eq!(first.api_key.expose(), "sk-old");

    moto.update_secret("kustomer/ttl", "sk-new").await;
    let second = keys.current().await.unwrap();
    assert!(Arc::ptr_eq(&first, &second), "served from the cache");
    assert_eq!(second.api_key.expose(), "sk-old");
    assert_eq!(keys.fetch_count(), 1);

    tokio::time::sleep(Duration::from_millis(1600)).await;
    let third = keys.current().await.unwrap();
    assert_eq!(third.api_key.expose(), "sk-new");
    assert_eq!(keys.fetch_count(), 2);
}

#[tokio::test]
async fn reload_after_rotation_returns_the_new_key() {
    let moto = MotoServer::shared();
    moto.create_secret("kustomer/rotate", r#"{"apiKey": "sk-v1"}"#)
        .await;
    let keys = provider(moto, "kustomer/rotate", HOUR).await;
    let stale = keys.current().await.unwrap();
    moto.update_secret(
        "kustomer/rotate",
        r#"{"apiKey": "sk-v2", "webhookToken": "tok-v2"}"#,
    )
    .await;
    assert_eq!(keys.current().await.unwrap().api_key.expose(), "sk-v1");

    let fresh = keys.reload(&stale).await.unwrap();
    assert_eq!(fresh.api_key.expose(), "sk-v2");
    assert_eq!(
        fresh.webhook_token.as_ref().map(|t| t.expose()),
        Some("tok-v2")
    );
    // The reloaded value is what `current` serves from now on.
    assert!(Arc::ptr_eq(&fresh, &keys.current().await.unwrap()));
    // A late reload of the same stale value does not fetch again.
    let late = keys.reload(&stale).await.unwrap();
    assert!(Arc::ptr_eq(&fresh, &late));
    assert_eq!(keys.fetch_count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_calls_fetch_once() {
    let moto = MotoServer::shared();
    moto.create_secret("kustomer/burst", "sk-burst").await;
    let keys = Arc::new(provider(moto, "kustomer/burst", HOUR).await);
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let keys = keys.clone();
        tasks.push(tokio::spawn(async move { keys.current().await }));
    }
    let mut values = Vec::new();
    for task in tasks {
        values.push(task.await.unwrap().unwrap());
    }
    assert!(values.iter().all(|v| Arc::ptr_eq(v, &values[0])));
    assert_eq!(keys.fetch_count(), 1, "one GetSecretValue for 32 callers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reload_is_single_flight() {
    let moto = MotoServer::shared();
    moto.create_secret("kustomer/flight", "sk-v1").await;
    let keys = Arc::new(provider(moto, "kustomer/flight", HOUR).await);
    let stale = keys.current().await.unwrap();
    moto.update_secret("kustomer/flight", "sk-v2").await;

    let mut tasks = Vec::new();
    for _ in 0..32 {
        let keys = keys.clone();
        let stale = stale.clone();
        tasks.push(tokio::spawn(async move { keys.reload(&stale).await }));
    }
    let mut values = Vec::new();
    for task in tasks {
        values.push(task.await.unwrap().unwrap());
    }
    assert!(values.iter().all(|v| v.api_key.expose() == "sk-v2"));
    assert!(values.iter().all(|v| Arc::ptr_eq(v, &values[0])));
    assert_eq!(
        keys.fetch_count(),
        2,
        "32 reloads of one stale key fetch once"
    );
}

#[tokio::test]
async fn secrets_manager_down_is_transient_and_shows_no_secret() {
    // Never reachable: the first fetch fails.
    let keys = provider_at(&unreachable_endpoint(), "kustomer/down", HOUR).await;
    let failure = failed_fetch(&keys, FailureClass::Transient, "kustomer/down").await;
    assert!(failure.class.is_retryable());

    // Reachable, then gone: the reload after a 401 fails transiently, without the value.
    let moto = MotoServer::start();
    moto.create_secret(
        "kustomer/gone",
        r#"{"apiKey": "sk-gone-value", "webhookToken": "tok-gone-value"}"#,
    )
    .await;
    let keys = provider(&moto, "kustomer/gone", HOUR).await;
    let stale = keys.current().await.unwrap();
    drop(moto);
    let failure = keys.reload(&stale).await.unwrap_err();
    assert_eq!(failure.class, FailureClass::Transient, "{failure}");
    assert!(failure.message.contains("kustomer/gone"), "{failure}");
    let shown = format!("{failure} {failure:?}");
    assert!(!shown.contains("gone-value"), "{shown}");
}

#[tokio::test]
async fn a_hung_secrets_manager_fails_within_the_operation_timeout() {
    // Accepts connections (in the backlog) and never answers.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", hung.local_addr().unwrap());
    let keys = provider_at(&endpoint, "kustomer/hung", HOUR).await;
    // The minute only keeps a missing timeout from hanging the test run; what is checked
    // is that the SDK's operation timeout ended the call.
    let fetch = failed_fetch(&keys, FailureClass::Transient, "kustomer/hung");
    let failure = tokio::time::timeout(Duration::from_secs(60), fetch)
        .await
        .expect("no operation timeout: the fetch hung");
    assert!(failure.message.ends_with("timed out"), "{failure}");
}

#[tokio::test]
async fn missing_secret_is_an_auth_failure() {
    let moto = MotoServer::shared();
    let keys = provider(moto, "kustomer/missing", HOUR).await;
    let failure = failed_fetch(&keys, FailureClass::Auth, "kustomer/missing").await;
    assert!(failure.message.contains("does not exist"), "{failure}");
}

#[tokio::test]
async fn unusable_secret_values_are_auth_failures_without_the_value() {
    let moto = MotoServer::shared();
    for (name, value, expected) in [
        (
            "kustomer/no-key",
            r#"{"webhookToken": "tok-hidden-1"}"#,
            "without an \"apiKey\"",
        ),
        (
            "kustomer/empty-key",
            r#"{"apiKey": " ", "webhookToken": "tok-hidden-2"}"#,
            "empty \"apiKey\"",
        ),
        ("kustomer/blank", "   ", "empty API key"),
    ] {
        moto.create_secret(name, value).await;
        let keys = provider(moto, name, HOUR).await;
        let failure = failed_fetch(&keys, FailureClass::Auth, name).await;
        assert!(failure.message.contains(expected), "{failure}");
        assert!(!failure.message.contains("hidden"), "{failure}");
    }
}

fn parked(body: &str, class: FailureClass, status: Option<u16>, message: &str) -> Parked {
    Parked {
        body: body.to_string(),
        failure: Failure::new(class, status, message),
        source: "sqs",
        keys: FifoKeys::new("user-1", body),
    }
}

/// Bodies as retry-queue items (their FIFO keys matter only to a FIFO queue).
fn queued(bodies: &[String]) -> Vec<Queued> {
    bodies
        .iter()
        .map(|body| Queued {
            body: body.clone(),
            keys: FifoKeys::new("user-1", body),
        })
        .collect()
}

/// An event refused for good with a 400 (the common reason to park).
fn refused(body: &str, message: &str) -> Parked {
    parked(body, FailureClass::Permanent, Some(400), message)
}

#[tokio::test]
async fn park_sends_the_body_with_error_attributes() {
    let moto = MotoServer::shared();
    let dlq = moto.create_queue("kustomer-dlq").await;
    let queues = SqsQueues::with_sdk_config(None, Some(dlq.clone()), moto.sdk_config().await);
    assert!(queues.has_dead_letter_queue() && !queues.has_retry_queue());

    let long_message = "é".repeat(1_500);
    let mut items = vec![
        refused(r#"{"type":"identify","userId":"u1"}"#, "missing email"),
        parked(
            r#"{"type":"track"}"#,
            FailureClass::Auth,
            None,
            &long_message,
        ),
    ];
    items[1].source = "direct";
    let results = queues.park(&items).await;
    assert_eq!(results, vec![Ok(()), Ok(())]);

    let received = moto.receive_all(&dlq).await;
    assert_eq!(received.len(), 2);
    let by_body: HashMap<String, HashMap<String, String>> = received.into_iter().collect();
    let first = &by_body[r#"{"type":"identify","userId":"u1"}"#];
    assert_eq!(first["errorClass"], "permanent");
    assert_eq!(first["errorStatus"], "400");
    assert_eq!(first["errorMessage"], "missing email");
    assert_eq!(first["source"], "sqs");
    let second = &by_body[r#"{"type":"track"}"#];
    assert_eq!(second["errorClass"], "auth");
    assert!(!second.contains_key("errorStatus"));
    assert_eq!(second["errorMessage"].chars().count(), 1_000);
    assert_eq!(second["source"], "direct");
}

#[tokio::test]
async fn requeue_sends_the_bodies_to_the_retry_queue() {
    let moto = MotoServer::shared();
    let queue = moto.create_queue("kustomer-events").await;
    let queues = SqsQueues::with_sdk_config(Some(queue.clone()), None, moto.sdk_config().await);
    assert!(queues.has_retry_queue() && !queues.has_dead_letter_queue());
    let bodies = vec![
        r#"{"type":"track","n":1}"#.to_string(),
        r#"{"type":"track","n":2}"#.to_string(),
    ];
    assert_eq!(queues.requeue(&queued(&bodies)).await, vec![Ok(()), Ok(())]);
    let received = bodies_in(moto, &queue).await;
    assert_eq!(received, bodies);
    // Not configured: every item fails, nothing panics.
    let results = queues
        .park(&[parked("{}", FailureClass::Permanent, None, "x")])
        .await;
    assert_eq!(
        results[0].as_ref().map_err(|e| e.kind),
        Err(QueueErrorKind::NotConfigured)
    );
}

#[tokio::test]
async fn dlq_unreachable_fails_every_item() {
    let queues = SqsQueues::with_sdk_config(
        None,
        Some(format!(
            "{}/123456789012/kustomer-dlq",
            unreachable_endpoint()
        )),
        sdk_config_for(&unreachable_endpoint()).await,
    );
    let items: Vec<Parked> = (0..3)
        .map(|i| refused(&format!(r#"{{"body-secret":{i}}}"#), "bad"))
        .collect();
    let results = queues.park(&items).await;
    assert_eq!(results.len(), 3);
    for result in &results {
        let error = result.as_ref().unwrap_err();
        assert_eq!(error.kind, QueueErrorKind::Unreachable, "{error}");
        assert!(error.detail.contains("kustomer-dlq"), "{error}");
        assert!(!error.detail.contains("body-secret"), "{error}");
    }
}

#[tokio::test]
async fn a_queue_that_does_not_exist_fails_every_item() {
    let moto = MotoServer::shared();
    let url = format!("{}/123456789012/no-such-queue", moto.endpoint());
    let queues = SqsQueues::with_sdk_config(Some(url), None, moto.sdk_config().await);
    let results = queues
        .requeue(&queued(&["{}".to_string(), "{}".to_string()]))
        .await;
    assert_eq!(results.len(), 2);
    for result in &results {
        assert_eq!(
            result.as_ref().map_err(|e| e.kind),
            Err(QueueErrorKind::Refused),
            "{results:?}"
        );
    }
}

#[tokio::test]
async fn twenty_three_items_give_twenty_three_results_in_order() {
    let moto = MotoServer::shared();
    let dlq = moto.create_queue("kustomer-dlq-batch").await;
    let queues = SqsQueues::with_sdk_config(None, Some(dlq.clone()), moto.sdk_config().await);
    let oversized = "x".repeat(MAX_MESSAGE_BYTES + 1);
    let items: Vec<Parked> = (0..23)
        .map(|i| match i {
            7 => refused(&oversized, "too big"),
            15 => refused("", "empty"),
            _ => refused(&format!(r#"{{"n":{i}}}"#), "bad"),
        })
        .collect();
    let results = queues.park(&items).await;
    assert_eq!(results.len(), 23);
    for (i, result) in results.iter().enumerate() {
        match i {
            7 => assert!(
                result.as_ref().unwrap_err().detail.contains("bytes"),
                "{result:?}"
            ),
            15 => assert!(result.is_err()),
            _ => assert_eq!(result, &Ok(()), "item {i}"),
        }
    }
    let received = bodies_in(moto, &dlq).await;
    let mut expected: Vec<String> = (0..23)
        .filter(|i| *i != 7 && *i != 15)
        .map(|i| format!(r#"{{"n":{i}}}"#))
        .collect();
    expected.sort();
    assert_eq!(received, expected);
}

/// Issue 18: FIFO queues (moto's FIFO works for small counts). Every message carries its
/// group and deduplication id; a group keeps its order across several calls (12 messages:
/// two SendMessageBatch calls, sent one after the other); a repeated deduplication id is
/// dropped by SQS; a permanently failed event parks in a FIFO dead-letter queue.
#[tokio::test]
async fn fifo_queues_get_groups_deduplication_ids_and_order() {
    let moto = MotoServer::shared();
    let fifo = [
        ("FifoQueue", "true"),
        ("DeduplicationScope", "messageGroup"),
    ];
    let queue = moto.create_queue_with("kustomer-events.fifo", &fifo).await;
    let dlq = moto.create_queue_with("kustomer-dlq.fifo", &fifo).await;
    let queues = SqsQueues::with_sdk_config(
        Some(queue.clone()),
        Some(dlq.clone()),
        moto.sdk_config().await,
    );
    let items: Vec<Queued> = (0..12)
        .map(|n| Queued {
            body: format!(r#"{{"n":{n}}}"#),
            keys: FifoKeys::new("user-7", &format!("msg-{}", n.min(10))),
        })
        .collect();
    let results = queues.requeue(&items).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let mut received = moto.receive_fifo(&queue).await;
    assert_eq!(received.len(), 10, "one group: a receive gives 10 in order");
    let bodies: Vec<String> = received.iter().map(|(body, ..)| body.clone()).collect();
    let expected: Vec<String> = (0..10).map(|n| format!(r#"{{"n":{n}}}"#)).collect();
    assert_eq!(bodies, expected);
    let (_, group, dedup) = received.remove(3);
    assert_eq!((group.as_str(), dedup.as_str()), ("user-7", "msg-3"));
    // 12 sent, the last two with one deduplication id: 11 kept (10 in flight, 1 waiting).
    let counts = aws_sdk_sqs::Client::new(&moto.sdk_config().await)
        .get_queue_attributes()
        .queue_url(&queue)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::All)
        .send()
        .await
        .expect("queue attributes");
    let count = |name: aws_sdk_sqs::types::QueueAttributeName| -> u32 {
        (counts.attributes())
            .and_then(|map| map.get(&name))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    use aws_sdk_sqs::types::QueueAttributeName as Attribute;
    let kept = count(Attribute::ApproximateNumberOfMessages)
        + count(Attribute::ApproximateNumberOfMessagesNotVisible);
    assert_eq!(kept, 11);

    let parked = queues
        .park(&[Parked {
            keys: FifoKeys::new("a user with spaces", "msg-bad"),
            ..refused(r#"{"type":"track"}"#, "bad")
        }])
        .await;
    assert_eq!(parked, vec![Ok(())]);
    let letters = moto.receive_fifo(&dlq).await;
    assert_eq!(letters.len(), 1);
    assert!(letters[0].1.starts_with("h-"), "{letters:?}");
    assert_eq!(letters[0].2, "msg-bad");
}

#[tokio::test]
async fn one_refused_message_does_not_fail_the_others() {
    let moto = MotoServer::shared();
    // A queue that refuses messages over 1 KiB: SQS (moto) refuses the whole batch call.
    let small = moto
        .create_queue_with("kustomer-small", &[("MaximumMessageSize", "1024")])
        .await;
    let queues = SqsQueues::with_sdk_config(Some(small.clone()), None, moto.sdk_config().await);
    let bodies = vec!["a".to_string(), "b".repeat(2_000), "c".to_string()];
    let results = queues.requeue(&queued(&bodies)).await;
    assert_eq!(results.len(), 3);
    assert_eq!(results[0], Ok(()));
    assert!(results[1].is_err(), "{results:?}");
    assert_eq!(results[2], Ok(()));
    let received = bodies_in(moto, &small).await;
    assert_eq!(received, vec!["a".to_string(), "c".to_string()]);
}

#[tokio::test]
async fn an_outage_after_expiry_serves_the_expired_key_for_a_grace_period() {
    let moto = MotoServer::start();
    moto.create_secret("kustomer/outage", r#"{"apiKey": "sk-outage"}"#)
        .await;
    let keys = provider(&moto, "kustomer/outage", Duration::from_millis(300)).await;
    let known = keys.current().await.unwrap();
    drop(moto);
    tokio::time::sleep(Duration::from_millis(400)).await;

    let served = keys.current().await.expect("the expired key is served");
    assert_eq!(served.api_key.expose(), "sk-outage");
    assert!(Arc::ptr_eq(&known, &served));
    assert_eq!(keys.fetch_count(), 2, "one failed refetch");
    // Re-armed: the next events do not each wait for Secrets Manager.
    keys.current().await.unwrap();
    assert_eq!(keys.fetch_count(), 2);
}

// ------------------------------------------------------------------------------------------
// The fleet's ledger of delivered events (DynamoDB, SharedDeduplication)
// ------------------------------------------------------------------------------------------

const WINDOW: Duration = Duration::from_secs(300);

/// A ledger on `table`, reached at `endpoint`.
async fn ledger_at(endpoint: &str, table: &str) -> DeliveredLedger {
    DeliveredLedger::with_sdk_config(table.to_string(), WINDOW, sdk_config_for(endpoint).await)
}

async fn ledger(moto: &MotoServer, table: &str) -> DeliveredLedger {
    ledger_at(&moto.endpoint(), table).await
}

/// One container of the function as the ledger tests run it: a local key, `stub` as
/// Kustomer, one attempt per event, the schema fit off, and `ledger`.
fn container(stub: &support::StubServer, ledger: Option<DeliveredLedger>) -> Pipeline {
    let base = stub.base_url();
    let settings = LambdaSettings::from_lookup(|name| match name {
        lambda::LOCAL_API_KEY => Some("ledger-test-key".into()),
        lambda::BASE_ENDPOINT => Some(base.clone()),
        lambda::RETRY_MAX_ATTEMPTS => Some("1".into()),
        lambda::FIT_TO_SCHEMA => Some("false".into()),
        _ => None,
    })
    .unwrap();
    Pipeline::new(&settings).unwrap().with_ledger(ledger)
}

async fn deliver_one(pipeline: &Pipeline, event: Value) -> Report {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    pipeline.deliver_all(&[event], deadline).await.remove(0)
}

#[tokio::test]
async fn the_ledger_answers_what_was_recorded_within_the_window() {
    let moto = MotoServer::shared();
    moto.create_ledger_table("ledger-window").await;
    let ledger = ledger(moto, "ledger-window").await;
    assert!(ledger.delivered(&[]).await.unwrap().is_empty());
    assert!(ledger.delivered(&[1, 2]).await.unwrap().is_empty());
    ledger.record(1).await.unwrap();
    assert_eq!(ledger.delivered(&[1, 2]).await.unwrap(), HashSet::from([1]));

    // An item past its expiry that DynamoDB's TTL has not removed yet does not count.
    let client = aws_sdk_dynamodb::Client::new(&moto.sdk_config().await);
    client
        .put_item()
        .table_name("ledger-window")
        .item("id", AttributeValue::S(format!("{:032x}", 3u128)))
        .item("expiresAt", AttributeValue::N("1000".into()))
        .send()
        .await
        .unwrap();
    assert!(ledger.delivered(&[3]).await.unwrap().is_empty());

    // More keys than one BatchGetItem takes (100), repeats included.
    let keys: Vec<u128> = (1_000..1_250).collect();
    for &key in keys.iter().step_by(10) {
        ledger.record(key).await.unwrap();
    }
    let mut asked = keys.clone();
    asked.extend_from_slice(&keys[..10]);
    let found = ledger.delivered(&asked).await.unwrap();
    assert_eq!(found, keys.iter().step_by(10).copied().collect());
}

#[tokio::test]
async fn an_unreachable_ledger_is_an_error_naming_the_table() {
    // One ledger per call: a failed call pauses a ledger.
    let endpoint = unreachable_endpoint();
    let error = ledger_at(&endpoint, "ledger-gone")
        .await
        .delivered(&[1])
        .await
        .unwrap_err();
    assert!(error.0.contains("ledger-gone"), "{error}");
    assert!(error.0.contains("BatchGetItem"), "{error}");
    let error = ledger_at(&endpoint, "ledger-gone")
        .await
        .record(1)
        .await
        .unwrap_err();
    assert!(error.0.contains("PutItem"), "{error}");
}

/// Two containers (two pipelines) share one ledger: what the first delivered, the second
/// skips as `duplicate` without a request; an event the first failed is sent by the
/// second. With the ledger unreachable, events are sent (nothing is lost) and counted.
#[tokio::test]
async fn containers_sharing_a_ledger_send_a_repeated_message_once() {
    let moto = MotoServer::shared();
    moto.create_ledger_table("ledger-fleet").await;
    let stub = support::StubServer::start(|request: &support::Request| {
        if request.body_text().contains("\"failing\"") {
            support::Reply::empty(503)
        } else {
            support::Reply::json(201, &json!({"data": {"id": "e1"}}))
        }
    })
    .await;
    let first = container(&stub, Some(ledger(moto, "ledger-fleet").await));
    let second = container(&stub, Some(ledger(moto, "ledger-fleet").await));
    let track = |id: &str, event: &str| json!({"type": "track", "userId": "u1", "event": event, "messageId": id});
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let skipped = |report: &Report| match &report.outcome {
        Outcome::Delivered(Delivered { skipped, .. }) => Ok(*skipped),
        Outcome::Failed(failure) => Err(failure.class),
    };

    let events = [track("m1", "Signed Up"), track("m2", "failing")];
    let reports = first.deliver_all(&events, deadline).await;
    assert_eq!(skipped(&reports[0]), Ok(None));
    assert_eq!(skipped(&reports[1]), Err(FailureClass::Transient));
    assert_eq!(stub.requests().len(), 2);

    // The repeats reach the second container: m1 is skipped, m2 is tried again.
    let reports = second.deliver_all(&events, deadline).await;
    assert_eq!(skipped(&reports[0]), Ok(Some(Skipped::Duplicate)));
    assert_eq!(skipped(&reports[1]), Err(FailureClass::Transient));
    assert_eq!(stub.requests().len(), 3, "only m2 was sent again");
    assert_eq!(second.metrics().take().duplicates_skipped, 1);

    // The ledger down: a third container sends m1 (at-least-once, as without a ledger).
    let gone = ledger_at(&unreachable_endpoint(), "ledger-fleet").await;
    let third = container(&stub, Some(gone));
    let reports = third.deliver_all(&events[..1], deadline).await;
    assert_eq!(skipped(&reports[0]), Ok(None));
    assert_eq!(stub.requests().len(), 4);
    let counts = third.metrics().take();
    assert_eq!(counts.dedup_ledger_errors, 2, "the read and the write");
}

/// A hung table costs one timeout, not one per event: after a failed call the ledger is
/// left alone for a while (no connection is made), and the pipeline sends the events.
#[tokio::test]
async fn after_a_failed_call_the_ledger_is_not_asked_for_a_while() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    // Accepts connections, counts them, never answers.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", hung.local_addr().unwrap());
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&connections);
    std::thread::spawn(move || {
        let mut open = Vec::new();
        for stream in hung.incoming().flatten() {
            counted.fetch_add(1, Ordering::SeqCst);
            open.push(stream);
        }
    });
    let ledger = ledger_at(&endpoint, "ledger-hung").await;
    let error = ledger.delivered(&[1]).await.unwrap_err();
    assert!(error.0.contains("BatchGetItem"), "{error}");
    let after_the_failure = connections.load(Ordering::SeqCst);
    assert!(after_the_failure >= 1);
    for key in 0..20 {
        let error = ledger.record(key).await.unwrap_err();
        assert!(error.0.contains("not asked"), "{error}");
    }
    let error = ledger.delivered(&[1, 2]).await.unwrap_err();
    assert!(error.0.contains("not asked"), "{error}");
    assert_eq!(connections.load(Ordering::SeqCst), after_the_failure);
}

/// With the fleet's ledger, its last body per customer decides what is unchanged: an
/// identify a container would skip (it sent that body last) is sent when another container
/// wrote another body since, and one that container never sent is skipped when it is the
/// fleet's last. Without the ledger the change would be undone by the skip.
#[tokio::test]
async fn an_update_another_container_changed_since_is_not_skipped() {
    let moto = MotoServer::shared();
    moto.create_ledger_table("ledger-bodies").await;
    // Every look-up finds the customer, every write succeeds.
    let stub = support::StubServer::start(|_: &support::Request| {
        support::Reply::json(200, &json!({"data": {"id": "c0ffee"}}))
    })
    .await;
    let identify = |plan: &str, id: &str| {
        json!({"type": "identify", "userId": "ada", "messageId": id,
               "traits": {"email": "ada@example.com", "name": plan}})
    };
    let skipped = |report: &Report| match &report.outcome {
        Outcome::Delivered(Delivered { skipped, .. }) => *skipped,
        Outcome::Failed(failure) => panic!("failed: {failure}"),
    };
    let puts = || stub.requests().iter().filter(|r| r.method == "PUT").count();

    for with_ledger in [true, false] {
        let shared = || async { with_ledger.then_some(ledger(moto, "ledger-bodies").await) };
        let a = container(&stub, shared().await);
        let b = container(&stub, shared().await);
        let tag = if with_ledger { "l" } else { "n" };
        let first = puts();
        let event = |plan: &str, id: &str| identify(plan, &format!("{tag}{id}"));
        assert_eq!(skipped(&deliver_one(&a, event("pro", "1")).await), None);
        let other = deliver_one(&b, event("free", "2")).await;
        assert_eq!(skipped(&other), None, "another container");
        let back = deliver_one(&a, event("pro", "3")).await;
        if with_ledger {
            assert_eq!(skipped(&back), None, "sent: the fleet's last body differs");
            assert_eq!(puts() - first, 3);
            let again = deliver_one(&a, event("pro", "4")).await;
            assert_eq!(skipped(&again), Some(Skipped::Unchanged), "now unchanged");
            // B last sent "free", but the fleet's last body is "pro": unchanged there too.
            let elsewhere = deliver_one(&b, event("pro", "5")).await;
            assert_eq!(skipped(&elsewhere), Some(Skipped::Unchanged), "fleet-wide");
            assert_eq!(puts() - first, 3);
            assert_eq!(a.metrics().take().dedup_ledger_errors, 0);
        } else {
            // The per-container cache alone skips it: Kustomer keeps "free".
            assert_eq!(skipped(&back), Some(Skipped::Unchanged));
            assert_eq!(puts() - first, 2);
        }
    }
}

/// With customer-id sharing (the function's default when the ledger is on), a known
/// user's identify on another container skips its look-ups; an id Kustomer no longer
/// knows (404) is looked up again and the ledger then holds the new one.
#[tokio::test]
async fn containers_sharing_a_ledger_look_a_customer_up_once() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let moto = MotoServer::shared();
    moto.create_ledger_table("ledger-customers").await;
    let merged = Arc::new(AtomicBool::new(false));
    let merged_now = Arc::clone(&merged);
    let stub = support::StubServer::start(move |request: &support::Request| {
        let merged = merged_now.load(Ordering::SeqCst);
        match (request.method.as_str(), request.path()) {
            ("GET", path) if merged && path.contains("email=") => {
                support::Reply::json(200, &json!({"data": {"id": "c2"}}))
            }
            ("GET", _) => support::Reply::empty(404),
            ("POST", _) => support::Reply::json(201, &json!({"data": {"id": "c1"}})),
            ("PUT", "/v1/customers/c1") if merged => support::Reply::empty(404),
            _ => support::Reply::json(200, &json!({"data": {}})),
        }
    })
    .await;
    let sharing = || async {
        let shared = ledger(moto, "ledger-customers")
            .await
            .sharing_customer_ids(Some(Duration::from_secs(300)));
        container(&stub, Some(shared))
    };
    let identify = |name: &str| {
        json!({"type": "identify", "userId": "ada", "messageId": format!("m-{name}"),
               "traits": {"email": "ada@example.com", "name": name}})
    };
    // One identify through `pipeline`: delivered, and the requests it made.
    async fn requests_of(
        pipeline: &Pipeline,
        stub: &support::StubServer,
        event: Value,
    ) -> Vec<String> {
        let before = stub.requests().len();
        let report = deliver_one(pipeline, event).await;
        assert!(
            matches!(report.outcome, Outcome::Delivered(_)),
            "{:?}",
            report.outcome.failure()
        );
        stub.requests()[before..]
            .iter()
            .map(|r| format!("{} {}", r.method, r.path()))
            .collect()
    }

    let a = sharing().await;
    assert_eq!(
        requests_of(&a, &stub, identify("Ada")).await,
        [
            "GET /v1/customers/email=ada@example.com",
            "GET /v1/customers/externalId=ada",
            "POST /v1/customers"
        ]
    );
    // Another container: the id from the ledger, no look-up.
    let b = sharing().await;
    assert_eq!(
        requests_of(&b, &stub, identify("Ada L.")).await,
        ["PUT /v1/customers/c1"]
    );
    assert_eq!(b.metrics().take().cache_hits, 1);

    // Merged in Kustomer: c1 answers 404; a third container looks the customer up again,
    // and a fourth finds the new id in the ledger.
    merged.store(true, Ordering::SeqCst);
    let c = sharing().await;
    assert_eq!(
        requests_of(&c, &stub, identify("Ada Lovelace")).await,
        [
            "PUT /v1/customers/c1",
            "GET /v1/customers/email=ada@example.com",
            "PUT /v1/customers/c2"
        ]
    );
    let d = sharing().await;
    assert_eq!(
        requests_of(&d, &stub, identify("A. Lovelace")).await,
        ["PUT /v1/customers/c2"]
    );
}
