//! The Lambda `bootstrap`: reads the settings once, then serves every door.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lambda_runtime::{service_fn, LambdaEvent};
use rudder_kustomer::entry::{handle, App, StartupError};
use rudder_kustomer::settings::lambda::LambdaSettings;
use rudder_kustomer::telemetry::init_logging;
use serde_json::Value;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    // A bad setting stops the init with a message naming the variable: in the log, and
    // through the Runtime API's init-error call, so Lambda shows it as the error.
    let config = match LambdaSettings::from_env() {
        Ok(config) => config,
        Err(problem) => return Err(fail_init(StartupError::from(problem)).await),
    };
    init_logging(config.log_level);
    // The default hook prints the panic's message, which may quote event data: log only
    // where it happened. `entry::handle` turns the panic into an invocation error.
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()));
        tracing::error!(location, "panic (a bug); its message is not logged");
    }));
    let app = match App::new(&config) {
        Ok(app) => app,
        Err(problem) => return Err(fail_init(problem).await),
    };
    let app: &'static App = Box::leak(Box::new(app));
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let deadline = remaining(event.context.deadline);
        // Boxed: the handler's future is deep enough to overflow the compiler's layout limit.
        Box::pin(handle(
            app,
            event.payload,
            &event.context.request_id,
            deadline,
        ))
        .await
        .map_err(lambda_runtime::Diagnostic::from)
    }))
    .await
}

/// Lambda's deadline (epoch milliseconds) as a monotonic instant.
///
/// `cargo lambda watch` sends the time left in milliseconds instead (`600000`), not an
/// epoch value: anything before 2001 is read as that, or every event would time out at once.
fn remaining(deadline_ms: u64) -> tokio::time::Instant {
    const EPOCH_MS_2001: u64 = 978_307_200_000;
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let left_ms = if deadline_ms < EPOCH_MS_2001 {
        deadline_ms
    } else {
        deadline_ms.saturating_sub(now_ms)
    };
    // The Runtime API's header is outside input too: never past Lambda's 15-minute limit.
    let left = Duration::from_millis(left_ms).min(Duration::from_secs(15 * 60));
    let now = tokio::time::Instant::now();
    now.checked_add(left).unwrap_or(now)
}

/// Reports a start-up failure to Lambda (`/runtime/init/error`, with the error's type) and
/// the log, then hands it back to end the process.
async fn fail_init(problem: StartupError) -> lambda_runtime::Error {
    eprintln!(
        "{}",
        serde_json::json!({"level": "ERROR", "errorType": problem.error_type(), "message": problem.to_string()})
    );
    if let Ok(api) = std::env::var("AWS_LAMBDA_RUNTIME_API") {
        let body = serde_json::json!({"errorType": problem.error_type(), "errorMessage": problem.to_string()});
        if let Err(failure) = post_init_error(&api, problem.error_type(), body.to_string()).await {
            eprintln!("could not report the init error to the Runtime API: {failure}");
        }
    }
    problem.into()
}

async fn post_init_error(api: &str, error_type: &str, body: String) -> Result<(), String> {
    use http_body_util::Full;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let request = http::Request::post(format!("http://{api}/2018-06-01/runtime/init/error"))
        .header("Lambda-Runtime-Function-Error-Type", error_type)
        .header("Content-Type", "application/json")
        .body(Full::new(bytes::Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let client = Client::builder(TokioExecutor::new()).build_http();
    let answer = tokio::time::timeout(Duration::from_secs(2), client.request(request))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?;
    match answer.status().is_success() {
        true => Ok(()),
        false => Err(format!("status {}", answer.status())),
    }
}
