//! The `transform` dry run as a user runs it: the real binary, its output and exit codes.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn transform(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_transform"))
        .args(args)
        .env_remove("KUSTOMER_BASE_ENDPOINT")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run transform");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn reports(output: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON report per line"))
        .collect()
}

#[test]
fn sample_events_print_their_requests() {
    let output = transform(
        &[
            "--compact",
            "--base-endpoint",
            "eu",
            "events/rudderstack-identify.json",
            "events/rudderstack-track.json",
            "events/rudderstack-page.json",
            "events/rudderstack-screen.json",
        ],
        "",
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let reports = reports(&output);
    assert_eq!(reports.len(), 4);
    let identify = &reports[0];
    assert!(identify["lookups"][0]["url"]
        .as_str()
        .unwrap()
        .starts_with("https://api.prod2.kustomerapp.com/v1/customers/"));
    assert_eq!(identify["ifNotFound"]["method"], "POST");
    assert_eq!(identify["ifFound"]["method"], "PUT");
    for tracking in &reports[1..] {
        let request = &tracking["requests"][0];
        assert_eq!(
            request["url"],
            "https://api.prod2.kustomerapp.com/v1/tracking/identityEvent"
        );
        assert!(request["body"]["event"]["name"].is_string());
    }
}

#[test]
fn bad_events_are_reported_one_by_one() {
    let input = "{\"type\":\"Batch\",\"userId\":\"u\"}\n{oops\n{\"type\":\"track\",\"event\":\"Signed Up\",\"userId\":\"u\"}\n";
    let output = transform(&["--compact"], input);
    assert!(
        output.status.success(),
        "rejected events are not a failed run"
    );
    let reports = reports(&output);
    assert_eq!(reports.len(), 3);
    assert_eq!(
        reports[0]["error"]["message"],
        "Event type Batch is not supported"
    );
    assert_eq!(reports[0]["error"]["status"], 400);
    assert!(reports[1]["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("line 2: invalid JSON"));
    assert!(reports[2]["requests"].is_array());
}

#[test]
fn a_pretty_printed_array_is_read_whole() {
    let input = "[\n  {\"type\": \"page\", \"userId\": 7},\n  {\"type\": \"screen\", \"anonymousId\": \"a\"}\n]\n";
    let reports = reports(&transform(&["--compact", "--generic-page"], input));
    assert_eq!(reports.len(), 2);
    assert_eq!(
        reports[0]["requests"][0]["body"]["event"]["name"],
        "Web-Page-Viewed"
    );
    assert_eq!(
        reports[1]["requests"][0]["body"]["identity"]["externalId"],
        "a"
    );
}

#[test]
fn bad_settings_and_unreadable_input_fail_the_run() {
    let bad_flag = transform(&["--generic-page=maybe"], "");
    assert_eq!(bad_flag.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad_flag.stderr).contains("--generic-page"));
    let bad_base = transform(&["--base-endpoint", "http://api.kustomerapp.com"], "");
    assert_eq!(bad_base.status.code(), Some(2));
    let missing = transform(&["no-such-file.json"], "");
    assert_eq!(missing.status.code(), Some(1));
    assert!(missing.stdout.is_empty());
}

#[test]
fn schema_fit_is_on_by_default_and_reported_by_field() {
    let input = concat!(
        r#"{"type":"identify","userId":"u1","traits":{"gender":"male","birthday":"20-09-1980"}}"#,
        "\n",
        r#"{"type":"track","event":"Clicked","userId":"u1","context":{"sessionId":1764238511042},"properties":{"ok":true}}"#,
        "\n",
        r#"{"type":"track","event":"Clicked","userId":"u1","properties":{"plan":"team"}}"#,
        "\n"
    );
    let on = reports(&transform(&["--compact"], input));
    assert_eq!(on[0]["ifNotFound"]["body"]["gender"], "m");
    assert!(on[0]["ifNotFound"]["body"].get("birthdayAt").is_none());
    assert_eq!(
        on[0]["schemaFixes"],
        serde_json::json!([
            {"field": "customer.gender", "action": "rewritten", "reason": "spelled as m/f"},
            {"field": "customer.birthdayAt", "action": "dropped", "reason": "not a date-time"}
        ])
    );
    let event = &on[1]["requests"][0]["body"]["event"];
    assert_eq!(event["sessionId"], "1764238511042");
    assert_eq!(event["meta"]["ok"], "true");
    let fields: Vec<&str> = on[1]["schemaFixes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|fix| fix["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["event.sessionId", "event.meta"]);
    // Nothing to fix: no key.
    assert!(on[2].get("schemaFixes").is_none());

    let off = reports(&transform(
        &["--compact", "--fit-to-kustomer-schema=false"],
        input,
    ));
    assert_eq!(off[0]["ifNotFound"]["body"]["gender"], "male");
    assert_eq!(
        off[1]["requests"][0]["body"]["event"]["sessionId"],
        1764238511042_u64
    );
    assert!(off.iter().all(|report| report.get("schemaFixes").is_none()));
    // The bodies that needed nothing are the same either way.
    assert_eq!(on[2], off[2]);
}

/// Spec 12.5: the dry run shows the company look-ups and writes, and `<companyId>` wherever
/// a customer body's company depends on an answer; `--link-companies=false` refuses group.
#[test]
fn companies_in_the_dry_run() {
    let output = transform(
        &[
            "--compact",
            "events/rudderstack-group.json",
            "events/rudderstack-identify.json",
        ],
        "",
    );
    assert!(output.status.success());
    let planned = reports(&output);
    let group = &planned[0];
    assert_eq!(
        group["companyLookups"][0]["url"],
        "https://api.kustomerapp.com/v1/companies?externalId=acct_20931"
    );
    assert_eq!(
        group["ifCompanyFound"]["url"],
        "https://api.kustomerapp.com/v1/companies/{companyId}"
    );
    assert_eq!(group["ifCompanyNotFound"]["method"], "POST");
    assert_eq!(
        group["ifFound"]["body"],
        serde_json::json!({"company": "<companyId>"})
    );
    assert_eq!(group["ifNotFound"]["body"]["company"], "<companyId>");
    let identify = &planned[1];
    let lookups: Vec<&str> = identify["companyLookups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["url"].as_str().unwrap())
        .collect();
    assert_eq!(
        lookups,
        [
            "https://api.kustomerapp.com/v1/companies?externalId=acct_20931",
            "https://api.kustomerapp.com/v1/companies?filter=Northwind%20Example%20Ltd"
        ]
    );
    assert_eq!(
        identify["ifCompanyNotFound"]["body"],
        serde_json::json!({"name": "Northwind Example Ltd", "externalId": "acct_20931"})
    );
    assert_eq!(identify["ifFound"]["body"]["company"], "<companyId>");
    assert_eq!(identify["ifNotFound"]["body"]["company"], "<companyId>");

    let off = transform(
        &[
            "--compact",
            "--link-companies=false",
            "events/rudderstack-group.json",
            "events/rudderstack-identify.json",
        ],
        "",
    );
    let planned = reports(&off);
    assert_eq!(
        planned[0]["error"]["message"],
        "Event type group is not supported"
    );
    assert!(planned[1].get("companyLookups").is_none());
    assert!(planned[1]["ifNotFound"]["body"].get("company").is_none());
}
