//! `--json`: one object per event, one per line, with `time` (RFC 3339, UTC) and `event`.
//! The schema is documented in the README; values are masked like every other output.

use serde_json::{Value, json};

use crate::events::{Event, EventKind};
use crate::mask::Masker;
use crate::transport::Outcome;

/// The objects of one event: one, but one per line for output.
pub fn event(event: &Event, masker: &Masker) -> Vec<Value> {
    let time = event
        .time
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mask = |text: &str| masker.mask(text);
    let stamp = |mut value: Value| {
        value["time"] = json!(time);
        if let Some(wave) = event.wave {
            value["wave"] = json!(wave.name());
        }
        value
    };
    let value = match &event.kind {
        EventKind::RunStarted { command, hosts } => json!({
            "event": "run_started", "command": command, "hosts": hosts,
        }),
        EventKind::Connected { host, duration } => json!({
            "event": "host_connected", "host": host, "duration_ms": millis(*duration),
        }),
        EventKind::ConnectFailed { host, error } => json!({
            "event": "host_connect_failed", "host": host, "error": mask(error),
        }),
        EventKind::StartUpOutput { host, line } => json!({
            "event": "start_up_output", "host": host, "line": mask(line),
        }),
        EventKind::StepStarted { host, step } => json!({
            "event": "step_started", "host": host, "step": step,
        }),
        EventKind::Output { host, step, lines } => {
            return lines
                .iter()
                .map(|(stream, line)| {
                    stamp(json!({
                        "event": "output", "host": &**host, "step": &**step, "stream": stream,
                        "line": mask(line),
                    }))
                })
                .collect();
        }
        EventKind::StepFinished {
            host,
            step,
            outcome,
            duration,
        } => {
            let mut value = json!({
                "event": "step_finished", "host": host, "step": step,
                "ok": outcome.success(), "duration_ms": millis(*duration),
            });
            match outcome {
                Outcome::Exited(code) => value["exit_status"] = json!(code),
                Outcome::Signaled(signal) => value["signal"] = json!(signal),
                Outcome::TimedOut(_) | Outcome::Lost(_) => {
                    value["error"] = json!(mask(&outcome.to_string()))
                }
            }
            value
        }
        EventKind::Transferred {
            host,
            step,
            sent,
            total,
        } => json!({
            "event": "transferred", "host": host, "step": step, "sent": sent, "total": total
        }),
        EventKind::WouldRun { host, step, script } => json!({
            "event": "would_run", "host": host, "step": step, "script": mask(script),
        }),
        EventKind::StepSkipped { step } => json!({ "event": "step_skipped", "step": step }),
        EventKind::Notice { text } => json!({ "event": "notice", "text": mask(text) }),
        EventKind::LockWaiting {
            host,
            holder,
            remaining,
        } => json!({
            "event": "lock_waiting", "host": host, "holder": mask(holder),
            "remaining_ms": millis(*remaining),
        }),
        EventKind::Release {
            host,
            release,
            commit,
            marks,
        } => json!({
            "event": "release", "host": host, "release": release, "commit": commit, "marks": marks,
        }),
        EventKind::Activated {
            release,
            hosts,
            window,
            skew,
        } => json!({
            "event": "activated", "release": release, "hosts": hosts,
            "activation_window_ms": millis(*window), "switch_skew_ms": millis(*skew),
        }),
        EventKind::Diff(diff) => {
            let mut value = serde_json::to_value(diff.as_ref()).unwrap_or_default();
            value["event"] = json!("diff");
            value
        }
        EventKind::History(entry) => {
            let mut value = serde_json::to_value(&entry.record).unwrap_or_default();
            value["event"] = json!("history");
            value["hosts"] = json!(entry.hosts);
            value["disagreeing"] = entry
                .disagreeing
                .iter()
                .map(|(host, record)| {
                    json!({ "host": host, "result": record.result, "release": record.release })
                })
                .collect();
            if let Some(error) = value.get("error").and_then(Value::as_str) {
                value["error"] = json!(mask(error));
            }
            value
        }
        EventKind::Probed { host, facts } => {
            let facts: serde_json::Map<String, Value> = facts
                .iter()
                .map(|(name, value)| (name.clone(), json!(mask(value))))
                .collect();
            json!({ "event": "host_checked", "host": host, "facts": facts })
        }
    };
    vec![stamp(value)]
}

/// The last event of a `--json` run, written by `main` once the exit code is known.
pub fn finished(exit_code: u8, error: Option<&str>) -> Value {
    json!({
        "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "event": "run_finished",
        "exit_code": exit_code,
        "error": error,
    })
}

fn millis(duration: std::time::Duration) -> f64 {
    (duration.as_secs_f64() * 1_000_000.0).round() / 1000.0
}
