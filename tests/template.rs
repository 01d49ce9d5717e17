//! The deployment files agree with the code: `template.yaml` sets exactly the environment
//! variables `config.rs` reads, every parameter is used, the queue settings make SQS
//! retries work, IAM stays scoped; every file in `events/` is valid, in the shape AWS
//! delivers, and listed in `events/README.md`.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use aws_lambda_events::apigw::{ApiGatewayProxyRequest, ApiGatewayV2httpRequest};
use aws_lambda_events::encodings::Base64Data;
use aws_lambda_events::eventbridge::EventBridgeEvent;
use aws_lambda_events::sns::SnsMessage;
use aws_lambda_events::sqs::SqsEvent;
use rudder_kustomer::settings::lambda;
use serde_json::{json, Map, Value};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

// ------------------------------------------------------------------------------------------
// template.yaml → JSON, with CloudFormation's short tags in their long form
// ------------------------------------------------------------------------------------------

mod cfn {
    //! A CloudFormation YAML reader: YAML → `serde_json::Value`, the short intrinsic tags
    //! (`!Ref X`, `!GetAtt A.B`, `!Sub`, `!If`, ...) turned into the JSON form
    //! (`{"Ref": "X"}`, `{"Fn::GetAtt": ["A", "B"]}`, ...). yaml-rust2's own loader drops
    //! unknown tags, so this builds the tree from the parser's events.

    use serde_json::{Map, Number, Value};
    use yaml_rust2::parser::{Event, Parser, Tag};
    use yaml_rust2::scanner::TScalarStyle;

    enum Frame {
        Seq(Option<Tag>, Vec<Value>),
        Map(Option<Tag>, Map<String, Value>, Option<String>),
    }

    pub fn load(text: &str) -> Value {
        let mut parser = Parser::new_from_str(text);
        let mut stack: Vec<Frame> = Vec::new();
        let mut done: Option<Value> = None;
        loop {
            let (event, mark) = parser.next_token().expect("valid YAML");
            let node = match event {
                Event::StreamEnd => break,
                Event::Nothing | Event::StreamStart | Event::DocumentStart | Event::DocumentEnd => {
                    continue
                }
                Event::Alias(_) => panic!("line {}: aliases are not used here", mark.line()),
                Event::SequenceStart(_, tag) => {
                    stack.push(Frame::Seq(tag, Vec::new()));
                    continue;
                }
                Event::MappingStart(_, tag) => {
                    stack.push(Frame::Map(tag, Map::new(), None));
                    continue;
                }
                Event::SequenceEnd => match stack.pop() {
                    Some(Frame::Seq(tag, items)) => tagged(tag, Value::Array(items)),
                    _ => unreachable!("sequence end without start"),
                },
                Event::MappingEnd => match stack.pop() {
                    Some(Frame::Map(tag, map, None)) => tagged(tag, Value::Object(map)),
                    _ => unreachable!("mapping end without start or with a dangling key"),
                },
                Event::Scalar(text, style, _, tag) => tagged(tag, scalar(text, style)),
            };
            match stack.last_mut() {
                None => done = Some(node),
                Some(Frame::Seq(_, items)) => items.push(node),
                Some(Frame::Map(_, map, key)) => match key.take() {
                    Some(k) => {
                        assert!(map.insert(k.clone(), node).is_none(), "duplicate key {k}");
                    }
                    None => match node {
                        Value::String(k) => *key = Some(k),
                        other => panic!("line {}: non-string key {other}", mark.line()),
                    },
                },
            }
        }
        done.expect("one YAML document")
    }

    /// YAML 1.2 core schema for plain scalars; quoted scalars are strings.
    fn scalar(text: String, style: TScalarStyle) -> Value {
        if style != TScalarStyle::Plain {
            return Value::String(text);
        }
        match text.as_str() {
            "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
            "true" | "True" | "TRUE" => return Value::Bool(true),
            "false" | "False" | "FALSE" => return Value::Bool(false),
            _ => {}
        }
        if let Ok(n) = text.parse::<i64>() {
            return Value::Number(n.into());
        }
        if text.bytes().any(|b| b.is_ascii_digit()) {
            if let Some(n) = text.parse::<f64>().ok().and_then(Number::from_f64) {
                return Value::Number(n);
            }
        }
        Value::String(text)
    }

    fn tagged(tag: Option<Tag>, value: Value) -> Value {
        let Some(tag) = tag else { return value };
        if tag.handle != "!" {
            return value; // `!!str` and friends: the value as it is
        }
        let name = match tag.suffix.as_str() {
            "Ref" | "Condition" => tag.suffix.clone(),
            other => format!("Fn::{other}"),
        };
        let value = match (name.as_str(), value) {
            ("Fn::GetAtt", Value::String(s)) => {
                let (resource, attribute) = s.split_once('.').expect("!GetAtt Resource.Attribute");
                Value::Array(vec![resource.into(), attribute.into()])
            }
            (_, value) => value,
        };
        let mut map = Map::new();
        map.insert(name, value);
        Value::Object(map)
    }
}

fn template() -> Value {
    let text = fs::read_to_string(root().join("template.yaml")).expect("template.yaml");
    cfn::load(&text)
}

fn resources(t: &Value) -> &Map<String, Value> {
    t["Resources"].as_object().expect("Resources")
}

fn parameters(t: &Value) -> &Map<String, Value> {
    t["Parameters"].as_object().expect("Parameters")
}

fn resources_of_type<'a>(t: &'a Value, kind: &str) -> Vec<(&'a String, &'a Value)> {
    resources(t)
        .iter()
        .filter(|(_, r)| r["Type"] == kind)
        .collect()
}

/// The one Lambda function of the template.
fn function(t: &Value) -> (&String, &Value) {
    let functions = resources_of_type(t, "AWS::Serverless::Function");
    assert_eq!(functions.len(), 1, "exactly one function");
    functions[0]
}

/// `{"Ref": name}` → `Some(name)`.
fn ref_name(value: &Value) -> Option<&str> {
    value
        .as_object()
        .filter(|o| o.len() == 1)?
        .get("Ref")?
        .as_str()
}

/// `{"Fn::GetAtt": [resource, attribute]}` → `Some(resource)` when the attribute matches.
fn get_att<'a>(value: &'a Value, attribute: &str) -> Option<&'a str> {
    let parts = value.get("Fn::GetAtt")?.as_array()?;
    (parts.get(1)? == attribute)
        .then(|| parts[0].as_str())
        .flatten()
}

/// A number property: a literal, or a `Ref` to a Number parameter whose default and
/// minimum both satisfy `check`.
fn assert_number(t: &Value, value: &Value, what: &str, check: impl Fn(i64) -> bool) {
    let as_int = |v: &Value| {
        v.as_i64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
    };
    if let Some(n) = as_int(value) {
        assert!(check(n), "{what} = {n}");
        return;
    }
    let name = ref_name(value).unwrap_or_else(|| panic!("{what}: a number or a Ref, got {value}"));
    let param = &parameters(t)[name];
    let default = as_int(&param["Default"]).unwrap_or_else(|| panic!("{name} has a default"));
    let min = as_int(&param["MinValue"]).unwrap_or_else(|| panic!("{name} has a MinValue"));
    assert!(check(default), "{what}: parameter {name} default {default}");
    assert!(check(min), "{what}: parameter {name} allows {min}");
}

/// Parameters and conditions a value refers to: `Ref`, `${Name}` in `Fn::Sub`, the
/// condition of `Fn::If`, `{"Condition": name}`.
fn collect_refs(value: &Value, refs: &mut BTreeSet<String>, conditions: &mut BTreeSet<String>) {
    match value {
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, refs, conditions)),
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("Ref", Value::String(name)) => {
                        refs.insert(name.clone());
                    }
                    ("Condition", Value::String(name)) => {
                        conditions.insert(name.clone());
                    }
                    ("Fn::If", Value::Array(args)) => {
                        if let Some(Value::String(name)) = args.first() {
                            conditions.insert(name.clone());
                        }
                    }
                    ("Fn::Sub", Value::String(text)) => sub_refs(text, refs),
                    ("Fn::Sub", Value::Array(args)) => {
                        if let Some(Value::String(text)) = args.first() {
                            sub_refs(text, refs);
                        }
                    }
                    _ => {}
                }
                collect_refs(v, refs, conditions);
            }
        }
        _ => {}
    }
}

/// `${Name}` and `${Name.Attribute}` in a `Fn::Sub` string (`${!Literal}` is text).
fn sub_refs(text: &str, refs: &mut BTreeSet<String>) {
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else { break };
        let name = &after[..end];
        if !name.starts_with('!') {
            refs.insert(name.split('.').next().unwrap_or(name).to_string());
        }
        rest = &after[end + 1..];
    }
}

/// Everything the resources use, directly or through the conditions they evaluate.
fn used_by_resources(t: &Value) -> BTreeSet<String> {
    let mut refs = BTreeSet::new();
    let mut conditions = BTreeSet::new();
    collect_refs(&t["Resources"], &mut refs, &mut conditions);
    let mut seen = BTreeSet::new();
    while let Some(name) = conditions.iter().find(|c| !seen.contains(*c)).cloned() {
        seen.insert(name.clone());
        let condition = &t["Conditions"][&name];
        assert!(
            !condition.is_null(),
            "condition {name} is used but not defined"
        );
        collect_refs(condition, &mut refs, &mut conditions);
    }
    refs
}

fn env_vars(t: &Value) -> &Map<String, Value> {
    let (_, f) = function(t);
    f["Properties"]["Environment"]["Variables"]
        .as_object()
        .expect("Environment.Variables")
}

/// The function's timeout: its own, else the Globals, else Lambda's default of 3 s.
fn function_timeout(t: &Value) -> &Value {
    let (_, f) = function(t);
    [
        &f["Properties"]["Timeout"],
        &t["Globals"]["Function"]["Timeout"],
    ]
    .into_iter()
    .find(|v| !v.is_null())
    .unwrap_or(&Value::Null)
}

fn literal_int(t: &Value, value: &Value) -> i64 {
    if let Some(n) = value.as_i64() {
        return n;
    }
    let name = ref_name(value).unwrap_or_else(|| panic!("a number or a Ref, got {value}"));
    parameters(t)[name]["Default"]
        .as_i64()
        .unwrap_or_else(|| panic!("{name} default"))
}

// ------------------------------------------------------------------------------------------
// Template checks
// ------------------------------------------------------------------------------------------

#[test]
fn the_template_sets_exactly_the_variables_the_code_reads() {
    let t = template();
    let set: BTreeSet<&str> = env_vars(&t).keys().map(String::as_str).collect();
    let read: BTreeSet<&str> = lambda::template_env_vars().into_iter().collect();
    let missing: Vec<_> = read.difference(&set).collect();
    let unknown: Vec<_> = set.difference(&read).collect();
    assert!(
        missing.is_empty(),
        "read by config.rs, not set by template.yaml: {missing:?}"
    );
    assert!(
        unknown.is_empty(),
        "set by template.yaml, not in template_env_vars(): {unknown:?}"
    );
    for local_only in [lambda::LOCAL_API_KEY, lambda::LOCAL_WEBHOOK_TOKEN] {
        assert!(
            !set.contains(local_only),
            "{local_only} is for local runs only"
        );
        let text = fs::read_to_string(root().join("template.yaml")).unwrap();
        assert!(
            !text.contains(local_only),
            "{local_only} must not appear in template.yaml"
        );
    }
    for (name, value) in env_vars(&t) {
        assert!(!value.is_null() && value != "", "{name} has no value");
    }
}

#[test]
fn every_parameter_is_used_by_a_resource() {
    let t = template();
    let used = used_by_resources(&t);
    let unused: Vec<_> = parameters(&t)
        .keys()
        .filter(|p| !used.contains(*p))
        .collect();
    assert!(
        unused.is_empty(),
        "parameters that reach no resource: {unused:?}"
    );
    // ... and every Ref points at something that exists.
    let known: BTreeSet<&str> = parameters(&t)
        .keys()
        .chain(resources(&t).keys())
        .map(String::as_str)
        .collect();
    for name in &used {
        assert!(
            known.contains(name.as_str()) || name.starts_with("AWS::"),
            "reference to unknown {name}"
        );
    }
}

#[test]
fn boolean_parameters_take_the_strings_true_and_false() {
    let t = template();
    let looks_boolean =
        |v: &Value| v.is_boolean() || v == "true" || v == "false" || v == "True" || v == "False";
    let mut booleans = BTreeSet::new();
    for (name, p) in parameters(&t) {
        let allowed = p["AllowedValues"].as_array().cloned().unwrap_or_default();
        if looks_boolean(&p["Default"]) || allowed.iter().any(looks_boolean) {
            assert_eq!(p["Type"], "String", "{name}");
            assert_eq!(p["AllowedValues"], json!(["true", "false"]), "{name}");
            assert!(
                p["Default"] == "true" || p["Default"] == "false",
                "{name} default"
            );
            booleans.insert(name.clone());
        }
    }
    // The five flags of the destination come from such parameters, with RudderStack's
    // defaults (advancedTransform on, the others off).
    let vars = env_vars(&t);
    for (var, default) in [
        (lambda::GENERIC_PAGE, "false"),
        (lambda::GENERIC_SCREEN, "false"),
        (lambda::ADVANCED_TRANSFORM, "true"),
        (lambda::SET_IDENTITY_EMAIL, "false"),
        (lambda::DISABLE_EMAIL_AS_TRACKING_PROPERTY, "false"),
    ] {
        let param = ref_name(&vars[var]).unwrap_or_else(|| panic!("{var} is a Ref"));
        assert!(
            booleans.contains(param),
            "{var} comes from boolean parameter {param}"
        );
        assert_eq!(parameters(&t)[param]["Default"], default, "{param} default");
    }
}

#[test]
fn the_queue_retries_then_dead_letters() {
    let t = template();
    let queues = resources_of_type(&t, "AWS::SQS::Queue");
    let redriven: Vec<_> = queues
        .iter()
        .filter(|(_, q)| !q["Properties"]["RedrivePolicy"].is_null())
        .collect();
    assert_eq!(redriven.len(), 1, "one queue with a redrive policy");
    let (_, queue) = redriven[0];
    let policy = &queue["Properties"]["RedrivePolicy"];
    assert_number(&t, &policy["maxReceiveCount"], "maxReceiveCount", |n| {
        n >= 5
    });
    let dlq = get_att(&policy["deadLetterTargetArn"], "Arn").expect("deadLetterTargetArn");
    assert_eq!(resources(&t)[dlq]["Type"], "AWS::SQS::Queue");
    assert_eq!(
        ref_name(&env_vars(&t)[lambda::DEAD_LETTER_QUEUE_URL]),
        Some(dlq)
    );
}

/// The SQS event source: a standalone mapping or a SAM `SQS` event of the function.
fn sqs_event_source(t: &Value) -> (String, Value) {
    let (_, f) = function(t);
    let mut found: Vec<(String, Value)> = Vec::new();
    for (_, esm) in resources_of_type(t, "AWS::Lambda::EventSourceMapping") {
        let p = &esm["Properties"];
        found.push((
            get_att(&p["EventSourceArn"], "Arn")
                .expect("queue")
                .to_string(),
            p.clone(),
        ));
    }
    if let Some(events) = f["Properties"]["Events"].as_object() {
        for event in events.values().filter(|e| e["Type"] == "SQS") {
            let p = &event["Properties"];
            found.push((
                get_att(&p["Queue"], "Arn").expect("queue").to_string(),
                p.clone(),
            ));
        }
    }
    assert_eq!(found.len(), 1, "one SQS event source");
    found.remove(0)
}

#[test]
fn the_sqs_event_source_reports_partial_failures() {
    let t = template();
    let (queue, props) = sqs_event_source(&t);
    let types = props["FunctionResponseTypes"]
        .as_array()
        .expect("FunctionResponseTypes");
    assert!(types.contains(&json!("ReportBatchItemFailures")));
    assert!(!props["BatchSize"].is_null(), "BatchSize");
    assert!(
        !props["MaximumBatchingWindowInSeconds"].is_null(),
        "batching window"
    );
    assert_number(
        &t,
        &props["ScalingConfig"]["MaximumConcurrency"],
        "MaximumConcurrency",
        |n| (2..=1000).contains(&n),
    );
    // The queue the function reads is the one it re-queues direct invocations to.
    assert_eq!(
        ref_name(&env_vars(&t)[lambda::RETRY_QUEUE_URL]),
        Some(queue.as_str())
    );
    assert!(!resources(&t)[&queue]["Properties"]["RedrivePolicy"].is_null());
}

#[test]
fn the_visibility_timeout_is_six_times_the_function_timeout() {
    let t = template();
    let (queue, _) = sqs_event_source(&t);
    let timeout = literal_int(&t, function_timeout(&t));
    let visibility = &resources(&t)[&queue]["Properties"]["VisibilityTimeout"];
    let visibility = if visibility.is_null() {
        30
    } else {
        literal_int(&t, visibility)
    };
    assert!(
        visibility >= 6 * timeout,
        "VisibilityTimeout {visibility} < 6 x function timeout {timeout}"
    );
}

#[test]
fn the_function_is_built_and_invoked_as_documented() {
    let t = template();
    let (_, f) = function(&t);
    assert_eq!(f["Metadata"]["BuildMethod"], "rust-cargolambda");
    let p = &f["Properties"];
    assert_eq!(p["Runtime"], "provided.al2023");
    assert_eq!(p["Handler"], "bootstrap");
    let arch = ref_name(&p["Architectures"][0]).expect("Architectures from a parameter");
    assert_eq!(
        parameters(&t)[arch]["AllowedValues"],
        json!(["x86_64", "arm64"])
    );
    assert_eq!(parameters(&t)[arch]["Default"], "x86_64");
    // Direct invocation: Lambda's retries, then the dead-letter queue (a standard queue of
    // its own when the queues are FIFO: Lambda's destinations take no FIFO queue).
    let invoke = &p["EventInvokeConfig"];
    assert!(!invoke["MaximumRetryAttempts"].is_null());
    let on_failure = &invoke["DestinationConfig"]["OnFailure"];
    assert_eq!(on_failure["Type"], "SQS");
    let dlq = ref_name(&env_vars(&t)[lambda::DEAD_LETTER_QUEUE_URL]).unwrap();
    let standard = resolve(&on_failure["Destination"], false);
    assert_eq!(get_att(&standard, "Arn"), Some(dlq));
    let fifo = resolve(&on_failure["Destination"], true);
    let failed = get_att(&fifo, "Arn").expect("a queue");
    let failed = resolve(&resources(&t)[failed], true);
    assert_eq!(failed["Type"], "AWS::SQS::Queue");
    assert!(
        failed["Properties"]["FifoQueue"].is_null(),
        "a standard queue"
    );
    // The webhook: one POST route, payload format 2.0.
    let events = p["Events"].as_object().expect("Events");
    let http: Vec<_> = events.values().filter(|e| e["Type"] == "HttpApi").collect();
    assert_eq!(http.len(), 1, "one HTTP API route");
    assert_eq!(http[0]["Properties"]["Method"], "POST");
    assert_eq!(http[0]["Properties"]["PayloadFormatVersion"], "2.0");
}

/// `value` with every `Fn::If` on `IsFifo` decided (`fifo`) and `AWS::NoValue` dropped:
/// what CloudFormation makes of it for one QueueType.
fn resolve(value: &Value, fifo: bool) -> Value {
    let no_value = |v: &Value| ref_name(v) == Some("AWS::NoValue");
    match value {
        Value::Object(map) => {
            if let Some(Value::Array(args)) = map.get("Fn::If") {
                if args.first() == Some(&json!("IsFifo")) && args.len() == 3 {
                    return resolve(&args[if fifo { 1 } else { 2 }], fifo);
                }
            }
            let mut out = Map::new();
            for (key, v) in map {
                let v = resolve(v, fifo);
                if !no_value(&v) {
                    out.insert(key.clone(), v);
                }
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| resolve(v, fifo))
                .filter(|v| !no_value(v))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Issue 18: `QueueType` fifo makes the queue and its dead-letter queue FIFO (names ending
/// in `.fifo`, senders' deduplication ids, deduplication and throughput per message group)
/// and drops the batching window FIFO does not have; standard leaves them standard.
#[test]
fn queue_type_fifo_makes_the_queues_fifo() {
    let t = template();
    assert_eq!(
        parameters(&t)["QueueType"]["AllowedValues"],
        json!(["standard", "fifo"])
    );
    assert_eq!(parameters(&t)["QueueType"]["Default"], "standard");
    assert_eq!(
        t["Conditions"]["IsFifo"],
        json!({"Fn::Equals": [{"Ref": "QueueType"}, "fifo"]})
    );
    let (queue, esm) = sqs_event_source(&t);
    let dlq = ref_name(&env_vars(&t)[lambda::DEAD_LETTER_QUEUE_URL]).unwrap();
    for fifo in [false, true] {
        for name in [queue.as_str(), dlq] {
            let p = resolve(&resources(&t)[name]["Properties"], fifo);
            if !fifo {
                for key in ["QueueName", "FifoQueue", "DeduplicationScope"] {
                    assert!(p[key].is_null(), "standard {name}: {key} = {}", p[key]);
                }
                continue;
            }
            assert_eq!(p["FifoQueue"], true, "{name}");
            let queue_name = p["QueueName"]["Fn::Sub"].as_str().expect("a name");
            assert!(queue_name.ends_with(".fifo"), "{name}: {queue_name}");
            assert_eq!(p["ContentBasedDeduplication"], false, "{name}");
            assert_eq!(p["DeduplicationScope"], "messageGroup", "{name}");
            assert_eq!(p["FifoThroughputLimit"], "perMessageGroupId", "{name}");
        }
        let resolved = resolve(&esm, fifo);
        let window = &resolved["MaximumBatchingWindowInSeconds"];
        assert_eq!(window.is_null(), fifo, "batching window: {window}");
    }
    // A FIFO batch holds at most 10 messages: the template refuses more.
    let rule = &t["Rules"]["FifoBatchesHoldAtMostTenMessages"];
    assert_eq!(rule["RuleCondition"], t["Conditions"]["IsFifo"]);
    let allowed = &rule["Assertions"][0]["Assert"]["Fn::Contains"];
    assert_eq!(allowed[1], json!({"Ref": "BatchSize"}));
    assert_eq!(allowed[0].as_array().map(Vec::len), Some(10));
}

/// Issue 18: `WebhookMode` queue needs nothing the function lacks: it sends to the queue
/// it already may send to (`RETRY_QUEUE_URL`).
#[test]
fn webhook_mode_is_a_parameter_and_queue_mode_may_send_to_the_queue() {
    let t = template();
    assert_eq!(
        parameters(&t)["WebhookMode"]["AllowedValues"],
        json!(["deliver", "queue"])
    );
    assert_eq!(parameters(&t)["WebhookMode"]["Default"], "deliver");
    assert_eq!(
        ref_name(&env_vars(&t)[lambda::WEBHOOK_MODE]),
        Some("WebhookMode")
    );
    let queue = ref_name(&env_vars(&t)[lambda::RETRY_QUEUE_URL]).unwrap();
    let (_, f) = function(&t);
    let statements = resolve(&f["Properties"]["Policies"], true);
    let sends_to_queue = statements
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|policy| policy["Statement"].as_array().cloned().unwrap_or_default())
        .filter(|s| s["Action"] == "sqs:SendMessage")
        .flat_map(|s| s["Resource"].as_array().cloned().unwrap_or_default())
        .any(|resource| get_att(&resource, "Arn") == Some(queue));
    assert!(sends_to_queue, "sqs:SendMessage on {queue}");
}

#[test]
fn shared_deduplication_is_on_with_fifo_and_reaches_only_its_table() {
    let t = template();
    let parameter = &parameters(&t)["SharedDeduplication"];
    assert_eq!(parameter["AllowedValues"], json!(["auto", "on", "off"]));
    assert_eq!(parameter["Default"], "auto");
    // auto: on with a FIFO queue (where the ledger cannot race), off with a standard one.
    assert_eq!(
        t["Conditions"]["HasDedupTable"],
        json!({"Fn::Or": [
            {"Fn::Equals": [{"Ref": "SharedDeduplication"}, "on"]},
            {"Fn::And": [
                {"Fn::Equals": [{"Ref": "SharedDeduplication"}, "auto"]},
                {"Condition": "IsFifo"}
            ]}
        ]})
    );
    // DEDUP_TABLE: the table when on, empty (off) otherwise.
    let variable = &env_vars(&t)[lambda::DEDUP_TABLE]["Fn::If"];
    assert_eq!(variable[0], "HasDedupTable");
    let table = ref_name(&variable[1]).expect("Ref to the table");
    assert_eq!(variable[2], "");
    let resource = &resources(&t)[table];
    assert_eq!(resource["Type"], "AWS::DynamoDB::Table");
    assert_eq!(resource["Condition"], "HasDedupTable");
    let properties = &resource["Properties"];
    assert_eq!(properties["BillingMode"], "PAY_PER_REQUEST");
    assert_eq!(properties["KeySchema"][0]["AttributeName"], "id");
    // The entries expire: the attribute the function writes is the table's TTL.
    assert_eq!(
        properties["TimeToLiveSpecification"],
        json!({"AttributeName": "expiresAt", "Enabled": true})
    );
    let (_, f) = function(&t);
    let ledger_statements: Vec<Value> = f["Properties"]["Policies"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|policy| policy["Statement"].as_array().cloned().unwrap_or_default())
        .filter_map(|s| s.get("Fn::If").cloned())
        .filter(|branches| branches[0] == "HasDedupTable")
        .collect();
    assert_eq!(ledger_statements.len(), 1, "one statement, only when on");
    let statement = &ledger_statements[0][1];
    assert_eq!(
        statement["Action"],
        json!(["dynamodb:BatchGetItem", "dynamodb:PutItem"])
    );
    assert_eq!(get_att(&statement["Resource"], "Arn"), Some(table));
}

#[test]
fn iam_statements_are_scoped_to_named_resources() {
    let t = template();
    let (_, f) = function(&t);
    let mut actions = BTreeSet::new();
    for policy in f["Properties"]["Policies"].as_array().expect("Policies") {
        let statements = policy["Statement"].as_array().expect("inline statements");
        for statement in statements {
            // `Fn::If` wraps optional statements: check both branches.
            let branches: Vec<&Value> = match statement.get("Fn::If") {
                Some(Value::Array(args)) => args[1..].iter().collect(),
                _ => vec![statement],
            };
            for s in branches
                .into_iter()
                .filter(|s| ref_name(s) != Some("AWS::NoValue"))
            {
                let resource = &s["Resource"];
                let list = resource
                    .as_array()
                    .cloned()
                    .unwrap_or_else(|| vec![resource.clone()]);
                assert!(!list.is_empty() && !list.contains(&json!("*")), "{s}");
                let acts = s["Action"]
                    .as_array()
                    .cloned()
                    .unwrap_or_else(|| vec![s["Action"].clone()]);
                for a in acts {
                    let a = a.as_str().expect("action").to_string();
                    assert!(!a.contains('*'), "wildcard action {a}");
                    actions.insert(a);
                }
            }
        }
    }
    for needed in [
        "secretsmanager:GetSecretValue",
        "sqs:SendMessage",
        "sqs:ReceiveMessage",
    ] {
        assert!(actions.contains(needed), "{needed}");
    }
}

// ------------------------------------------------------------------------------------------
// events/
// ------------------------------------------------------------------------------------------

fn event_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(root().join("events"))
        .expect("events/")
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap() != "README.md")
        .collect();
    files.sort();
    files
}

fn name(path: &Path) -> &str {
    path.file_name().unwrap().to_str().unwrap()
}

fn read_json(path: &Path) -> Value {
    let text = fs::read_to_string(path).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", name(path)))
}

#[test]
fn every_event_file_is_json_and_listed_in_the_readme() {
    let readme = fs::read_to_string(root().join("events/README.md")).expect("events/README.md");
    let files = event_files();
    assert!(files.len() >= 13, "the sample events are there");
    for path in &files {
        assert!(
            name(path).ends_with(".json"),
            "{}: only JSON files here",
            name(path)
        );
        read_json(path);
        assert!(
            readme.contains(&format!("`{}`", name(path))),
            "{} not in README",
            name(path)
        );
    }
    // ... and the README lists no file that is not there.
    for word in readme.split('`').skip(1).step_by(2) {
        if word.ends_with(".json") && !word.contains([' ', '*']) {
            assert!(
                root().join("events").join(word).exists(),
                "README lists missing {word}"
            );
        }
    }
}

/// A RudderStack event as SDKs send it.
fn assert_rudderstack_event(event: &Value, from: &str) {
    let kind = event["type"]
        .as_str()
        .unwrap_or_else(|| panic!("{from}: no type"));
    assert!(
        ["identify", "track", "page", "screen", "group"].contains(&kind),
        "{from}: {kind}"
    );
    for field in [
        "messageId",
        "anonymousId",
        "userId",
        "context",
        "originalTimestamp",
        "sentAt",
    ] {
        assert!(!event[field].is_null(), "{from}: no {field}");
    }
    assert!(
        event["context"]["library"]["name"].is_string(),
        "{from}: context.library"
    );
    if kind == "track" {
        assert!(
            event["event"].is_string(),
            "{from}: track without event name"
        );
    }
    if kind == "group" {
        assert!(
            event["groupId"].is_string() && event["traits"]["name"].is_string(),
            "{from}: group without groupId or company name"
        );
    }
}

/// One event or an array of events.
fn assert_events(value: &Value, from: &str) -> usize {
    match value {
        Value::Array(items) => {
            assert!(!items.is_empty(), "{from}: empty array");
            items.iter().for_each(|e| assert_rudderstack_event(e, from));
            items.len()
        }
        event => {
            assert_rudderstack_event(event, from);
            1
        }
    }
}

/// An SQS body: events, an EventBridge envelope, or an SNS notification around either.
fn assert_sqs_body(body: &str, from: &str) -> usize {
    let value: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{from}: {e}"));
    if value.get("detail").is_some() {
        let envelope: EventBridgeEvent = serde_json::from_value(value).expect("EventBridge event");
        return assert_events(&envelope.detail, from);
    }
    if value.get("Type") == Some(&json!("Notification")) {
        let sns: SnsMessage = serde_json::from_value(value).expect("SNS notification");
        return assert_sqs_body(&sns.message, from);
    }
    assert_events(&value, from)
}

#[test]
fn sample_events_have_the_shapes_aws_and_rudderstack_send() {
    let bearer = "Bearer local-webhook-token";
    let mut seen_base64 = false;
    for path in event_files() {
        let file = name(&path);
        let value = read_json(&path);
        let count = if file.starts_with("apigw-v2-") {
            let request: ApiGatewayV2httpRequest =
                serde_json::from_value(value).unwrap_or_else(|e| panic!("{file}: {e}"));
            assert_eq!(request.headers["authorization"], bearer, "{file}");
            assert_eq!(request.request_context.http.method, "POST");
            let body = request.body.expect("body");
            let body = if request.is_base64_encoded {
                seen_base64 = true;
                let bytes: Base64Data = serde_json::from_value(json!(body)).expect("base64");
                String::from_utf8(bytes.0).expect("UTF-8")
            } else {
                body
            };
            assert_events(&serde_json::from_str(&body).unwrap(), file)
        } else if file.starts_with("apigw-v1-") {
            let request: ApiGatewayProxyRequest =
                serde_json::from_value(value).unwrap_or_else(|e| panic!("{file}: {e}"));
            assert_eq!(request.headers["authorization"], bearer, "{file}");
            assert_eq!(request.http_method, "POST");
            assert_events(
                &serde_json::from_str(&request.body.expect("body")).unwrap(),
                file,
            )
        } else if file.starts_with("sqs-") {
            let event: SqsEvent =
                serde_json::from_value(value).unwrap_or_else(|e| panic!("{file}: {e}"));
            assert!(!event.records.is_empty(), "{file}");
            let mut ids = BTreeSet::new();
            let mut count = 0;
            for record in &event.records {
                let id = record.message_id.clone().expect("messageId");
                assert!(
                    !id.is_empty() && ids.insert(id),
                    "{file}: message ids unique"
                );
                assert_eq!(record.event_source.as_deref(), Some("aws:sqs"));
                count += assert_sqs_body(record.body.as_deref().expect("body"), file);
            }
            count
        } else if file.starts_with("direct-") {
            assert_events(&value, file)
        } else if let Some(kind) = file.strip_prefix("rudderstack-") {
            assert_rudderstack_event(&value, file);
            assert_eq!(value["type"], kind.trim_end_matches(".json"), "{file}");
            1
        } else {
            panic!("{file}: unknown kind of sample event (apigw-, sqs-, direct-, rudderstack-)");
        };
        assert!(count >= 1, "{file}");
        if file.contains("array") {
            assert!(count >= 2, "{file}: an array of events");
        }
    }
    assert!(seen_base64, "one webhook sample has a base64 body");
}

/// The dashboard's body with every `${...}` of its `!Sub` replaced: the metrics
/// namespace by `NAMESPACE`, anything else by its name.
fn dashboard_body(t: &Value) -> Value {
    let dashboards = resources_of_type(t, "AWS::CloudWatch::Dashboard");
    assert_eq!(dashboards.len(), 1, "one dashboard");
    let (_, dashboard) = dashboards[0];
    assert_eq!(
        ref_name(&dashboard["Properties"]["DashboardName"]),
        Some("AWS::StackName"),
        "named after the stack"
    );
    let text = dashboard["Properties"]["DashboardBody"]["Fn::Sub"]
        .as_str()
        .expect("DashboardBody: !Sub with the JSON body");
    let mut body = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        body.push_str(&rest[..start]);
        let end = rest[start..].find('}').expect("closed ${...}") + start;
        let name = &rest[start + 2..end];
        body.push_str(if name == "MetricsNamespace" {
            "NAMESPACE"
        } else {
            name
        });
        rest = &rest[end + 1..];
    }
    body.push_str(rest);
    serde_json::from_str(&body).expect("the dashboard body is JSON")
}

/// Metrics of the custom namespace on the dashboard: `[namespace, name, ...]` rows and
/// `MetricName="..."` in SEARCH expressions over `{namespace,...}`.
fn dashboard_metrics(body: &Value) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for widget in body["widgets"].as_array().expect("widgets") {
        for row in widget["properties"]["metrics"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let row = row.as_array().expect("a metrics row");
            if row.first() == Some(&json!("NAMESPACE")) {
                names.insert(row[1].as_str().expect("metric name").to_string());
            }
            for item in row {
                let Some(expression) = item.get("expression").and_then(Value::as_str) else {
                    continue;
                };
                if !expression.contains("{NAMESPACE,") {
                    continue;
                }
                for piece in expression.split("MetricName=\"").skip(1) {
                    names.insert(piece.split('"').next().unwrap_or("").to_string());
                }
            }
        }
    }
    names
}

#[test]
fn the_dashboard_shows_exactly_the_metrics_the_code_emits() {
    let t = template();
    let shown = dashboard_metrics(&dashboard_body(&t));
    let emitted: BTreeSet<String> = rudder_kustomer::telemetry::EMITTED_METRICS
        .iter()
        .map(|m| m.to_string())
        .collect();
    assert_eq!(shown, emitted);
    let outputs = t["Outputs"].as_object().expect("Outputs");
    let url = outputs["DashboardUrl"]["Value"]["Fn::Sub"]
        .as_str()
        .unwrap_or("");
    assert!(url.contains("#dashboards:name=${Dashboard}"), "{url}");
}
