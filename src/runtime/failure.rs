//! Ending a run whose worker or process failed: promptly, with the first
//! failure's message, never a hang.
//!
//! Timely workers wait for each other's progress, so a worker that stops
//! (an error, a panic, a lost connection to another process) leaves the
//! others waiting forever, or panicking one after the other. The first
//! panic is remembered by a hook, and the run ends with it.

use std::any::Any;
use std::sync::{Mutex, Once, OnceLock};

/// The first panic of a network thread: a lost connection to another
/// process, the root cause of the worker panics that follow it.
static LOST_PEER: OnceLock<String> = OnceLock::new();
static HOOK: Once = Once::new();
/// Held while printing and exiting, so two failing threads print one message.
static EXITING: Mutex<()> = Mutex::new(());

/// Remembers the first panic of any thread (beside printing it as usual).
pub fn install_hook() {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let thread = std::thread::current();
            let thread = thread.name().unwrap_or("unnamed");
            if let Some(lost) = lost_peer(thread, &message(info.payload())) {
                let _ = LOST_PEER.set(lost);
            }
            previous(info);
        }));
    });
}

/// A panic of one of timely's network threads, in words naming the peer.
fn lost_peer(thread: &str, message: &str) -> Option<String> {
    let process = thread
        .strip_prefix("timely:recv-")
        .or_else(|| thread.strip_prefix("timely:send-"))?;
    Some(format!(
        "lost the connection to process {process} (stopped or failed?): {message}"
    ))
}

/// The message of a panic payload.
pub fn message(payload: &(dyn Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "(no message)".to_owned()
    }
}

/// Ends the process: prints `error` on stderr, after the lost connection
/// that caused it if there was one, and exits with status 1.
pub fn exit(error: &str) -> ! {
    let _exiting = EXITING.lock();
    match LOST_PEER.get() {
        Some(lost) => eprintln!("persona: error: {lost}\npersona: then {error}"),
        None => eprintln!("persona: error: {error}"),
    }
    std::process::exit(1)
}

/// A fault injected for tests (as Materialize's failpoints): with
/// `PERSONA_FAILPOINT=worker-panic:N`, worker N panics at the point named
/// `point` of a run, so tests can check that a failing worker ends the run.
pub fn failpoint(point: &str, worker: usize) {
    if let Ok(spec) = std::env::var("PERSONA_FAILPOINT") {
        if spec == format!("{point}:{worker}") {
            panic!("injected failure {spec} (PERSONA_FAILPOINT)");
        }
    }
}
