//! moto's server on loopback as the Secrets Manager and SQS of integration tests.
//!
//! [`MotoServer::start`] runs `moto_server -H 127.0.0.1 -p PORT` on a free port as a child
//! process (killed on drop) and waits until `/moto-api/` answers. Each test starts its own
//! server, so tests share no AWS state and may run in parallel. The SDK is pointed at it
//! through an explicit [`SdkConfig`] ([`MotoServer::sdk_config`]: endpoint, `us-east-1`,
//! static `testing` credentials), never through this process's environment, which parallel
//! test threads share. [`MotoServer::env_for_sdk`] gives the same settings as environment
//! variables for a child process (the Lambda binary).
//!
//! ```ignore
//! let moto = MotoServer::start();
//! moto.create_secret("kustomer/api", "sk-1").await;
//! let provider = KeyProvider::with_sdk_config(source, ttl, moto.sdk_config().await);
//! let dlq = moto.create_queue("dlq").await;
//! let messages = moto.receive_all(&dlq).await; // [(body, {attribute: value})]
//! ```
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_secretsmanager::config::Credentials;

/// How long [`MotoServer::start`] waits for the server to answer.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// The program started; `MOTO_SERVER` in the environment overrides it.
const PROGRAM: &str = "moto_server";

/// A running `moto_server`; killed when dropped.
pub struct MotoServer {
    child: Child,
    port: u16,
}

impl MotoServer {
    /// Starts moto on a free loopback port and waits (up to 20 s) until it answers.
    /// Panics with a clear message when `moto_server` is not installed.
    pub fn start() -> MotoServer {
        Self::start_with(|program, port| {
            let mut command = Command::new(program);
            command
                .args(["-H", "127.0.0.1", "-p", port])
                .stdin(Stdio::null());
            command
        })
    }

    /// One server for every test of this test binary that needs no server of its own
    /// (tests keep apart by the names of their secrets and queues). It lives until the
    /// test process exits, however it exits: a shell runs moto and kills it when its
    /// stdin, a pipe held by this process, closes.
    pub fn shared() -> &'static MotoServer {
        static SHARED: std::sync::OnceLock<MotoServer> = std::sync::OnceLock::new();
        SHARED.get_or_init(|| {
            Self::start_with(|program, port| {
                let mut command = Command::new("sh");
                command
                    .args([
                        "-c",
                        r#"exec 3<&0; "$0" -H 127.0.0.1 -p "$1" & m=$!; (read _ <&3; kill $m) & wait $m"#,
                        program,
                        port,
                    ])
                    .stdin(Stdio::piped());
                command
            })
        })
    }

    fn start_with(command_for: impl Fn(&str, &str) -> Command) -> MotoServer {
        let program = std::env::var("MOTO_SERVER").unwrap_or_else(|_| PROGRAM.to_string());
        // The port is free when picked but could be taken before moto binds it: retry.
        let mut last_problem = String::new();
        for _ in 0..3 {
            let port = free_port();
            let child = command_for(&program, &port.to_string())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn();
            let child = match child {
                Ok(child) => child,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => panic!(
                    "{program} was not found on PATH: install it with pip install 'moto[server]'"
                ),
                Err(error) => panic!("cannot start {program}: {error}"),
            };
            let mut server = MotoServer { child, port };
            match server.wait_ready() {
                Ok(()) => return server,
                Err(problem) => last_problem = problem,
            }
        }
        panic!("{program} did not become ready: {last_problem}");
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "moto_server exited early ({status}) on port {}",
                    self.port
                ));
            }
            if moto_api_answers(self.port) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "http://127.0.0.1:{}/moto-api/ did not answer within {READY_TIMEOUT:?}",
                    self.port
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// An SDK configuration for this server: endpoint, `us-east-1`, static test credentials.
    pub async fn sdk_config(&self) -> SdkConfig {
        sdk_config_for(&self.endpoint()).await
    }

    /// The environment a child process needs to reach this server through the SDK.
    pub fn env_for_sdk(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_REGION", "us-east-1".to_string()),
            ("AWS_DEFAULT_REGION", "us-east-1".to_string()),
            ("AWS_ACCESS_KEY_ID", "testing".to_string()),
            ("AWS_SECRET_ACCESS_KEY", "testing".to_string()),
            ("AWS_SESSION_TOKEN", "testing".to_string()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
        ]
    }

    async fn secrets_client(&self) -> aws_sdk_secretsmanager::Client {
        aws_sdk_secretsmanager::Client::new(&self.sdk_config().await)
    }

    async fn sqs_client(&self) -> aws_sdk_sqs::Client {
        aws_sdk_sqs::Client::new(&self.sdk_config().await)
    }

    pub async fn create_secret(&self, name: &str, value: &str) {
        let client = self.secrets_client().await;
        let request = client.create_secret().name(name).secret_string(value);
        sent("create_secret", name, request.send().await);
    }

    /// Stores a new current version of the secret (a rotation).
    pub async fn update_secret(&self, name: &str, value: &str) {
        let client = self.secrets_client().await;
        let request = client
            .put_secret_value()
            .secret_id(name)
            .secret_string(value);
        sent("put_secret_value", name, request.send().await);
    }

    /// Creates a table keyed by the string attribute `id`, as the template's ledger is.
    pub async fn create_ledger_table(&self, name: &str) {
        use aws_sdk_dynamodb::types::{
            AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
        };
        let client = aws_sdk_dynamodb::Client::new(&self.sdk_config().await);
        let request = client
            .create_table()
            .table_name(name)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name("id")
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .expect("attribute definition"),
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name("id")
                    .key_type(KeyType::Hash)
                    .build()
                    .expect("key schema"),
            );
        sent("create_table", name, request.send().await);
    }

    /// Creates a standard queue and returns its URL.
    pub async fn create_queue(&self, name: &str) -> String {
        self.create_queue_with(name, &[]).await
    }

    /// Creates a standard queue with attributes (`("MaximumMessageSize", "1024")`, ...).
    pub async fn create_queue_with(&self, name: &str, attributes: &[(&str, &str)]) -> String {
        let mut request = self.sqs_client().await.create_queue().queue_name(name);
        for (key, value) in attributes {
            request =
                request.attributes(aws_sdk_sqs::types::QueueAttributeName::from(*key), *value);
        }
        let output = sent("create_queue", name, request.send().await);
        output
            .queue_url()
            .unwrap_or_else(|| panic!("create_queue {name}: no QueueUrl"))
            .to_string()
    }

    /// Receives every visible message of the queue: (body, message attributes as
    /// name → string value). Received messages stay invisible for 5 minutes.
    pub async fn receive_all(&self, queue_url: &str) -> Vec<(String, HashMap<String, String>)> {
        let client = self.sqs_client().await;
        let mut all = Vec::new();
        loop {
            let output = client
                .receive_message()
                .queue_url(queue_url)
                .max_number_of_messages(10)
                .visibility_timeout(300)
                .wait_time_seconds(0)
                .message_attribute_names("All")
                .send()
                .await
                .unwrap_or_else(|e| panic!("receive_message {queue_url}: {}", show(&e)));
            let messages = output.messages();
            if messages.is_empty() {
                return all;
            }
            for message in messages {
                let attributes = message
                    .message_attributes()
                    .map(|map| {
                        map.iter()
                            .map(|(name, value)| {
                                (
                                    name.clone(),
                                    value.string_value().unwrap_or_default().to_string(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                all.push((message.body().unwrap_or_default().to_string(), attributes));
            }
        }
    }
}

impl MotoServer {
    /// Receives up to 10 messages of a FIFO queue in one call (a group's messages come in
    /// order; a group in flight gives nothing more): (body, MessageGroupId,
    /// MessageDeduplicationId).
    pub async fn receive_fifo(&self, queue_url: &str) -> Vec<(String, String, String)> {
        use aws_sdk_sqs::types::MessageSystemAttributeName as Name;
        let output = self
            .sqs_client()
            .await
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .visibility_timeout(300)
            .wait_time_seconds(0)
            .message_system_attribute_names(Name::All)
            .send()
            .await
            .unwrap_or_else(|e| panic!("receive_message {queue_url}: {}", show(&e)));
        output
            .messages()
            .iter()
            .map(|message| {
                let attribute = |name: Name| {
                    (message.attributes())
                        .and_then(|map| map.get(&name))
                        .cloned()
                        .unwrap_or_default()
                };
                (
                    message.body().unwrap_or_default().to_string(),
                    attribute(Name::MessageGroupId),
                    attribute(Name::MessageDeduplicationId),
                )
            })
            .collect()
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An SDK configuration for any endpoint: `us-east-1`, static `testing` credentials.
pub async fn sdk_config_for(endpoint: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(
            "testing",
            "testing",
            None,
            None,
            "moto-tests",
        ))
        .load()
        .await
}

/// A loopback URL where nothing listens (connections are refused): an AWS that is down.
pub fn unreachable_endpoint() -> String {
    format!("http://127.0.0.1:{}", free_port())
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free loopback port");
    listener.local_addr().expect("local address").port()
}

/// `GET /moto-api/` answers with a 2xx.
fn moto_api_answers(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request =
        format!("GET /moto-api/ HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    match stream.read_exact(&mut head) {
        Ok(()) => head.starts_with(b"HTTP/1.") && head[9] == b'2',
        Err(_) => false,
    }
}

/// The output of an SDK call that must succeed; otherwise a panic naming the call.
fn sent<T, E: std::error::Error + 'static>(call: &str, name: &str, result: Result<T, E>) -> T {
    result.unwrap_or_else(|e| panic!("{call} {name}: {}", show(&e)))
}

fn show(error: &(dyn std::error::Error + 'static)) -> String {
    aws_sdk_sqs::error::DisplayErrorContext(error).to_string()
}
