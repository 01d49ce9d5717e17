#[test]
fn placeholder() {
    let schema = serde_json::json!({"type": "string"});
    assert!(jsonschema::draft7::new(&schema).is_ok());
}
