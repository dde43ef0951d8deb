//! Live progress on a terminal: one line per host (spinner, step, elapsed, state) and one
//! overall line, drawn by indicatif so printed lines never tear the bars.

use std::collections::HashMap;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::events::{Event, EventKind};

pub struct Bars {
    multi: MultiProgress,
    overall: ProgressBar,
    hosts: HashMap<String, ProgressBar>,
    running: ProgressStyle,
    done: ProgressStyle,
    width: usize,
    finished_steps: u64,
}

impl Bars {
    pub fn new(color: bool) -> Bars {
        let multi = MultiProgress::new();
        let (spinner, ok) = if color {
            ("{spinner:.cyan}", "{prefix:.bold}")
        } else {
            ("{spinner}", "{prefix}")
        };
        let running =
            ProgressStyle::with_template(&format!("{spinner} {ok} {{msg}} {{elapsed:.dim}}"))
                .expect("valid template");
        let done =
            ProgressStyle::with_template(&format!("  {ok} {{msg}}")).expect("valid template");
        let overall = multi.add(ProgressBar::new_spinner());
        overall.set_style(
            ProgressStyle::with_template(&format!("{spinner} {{msg}} [{{elapsed}}]"))
                .expect("valid template"),
        );
        overall.set_message("connecting");
        overall.enable_steady_tick(Duration::from_millis(120));
        Bars {
            multi,
            overall,
            hosts: HashMap::new(),
            running,
            done,
            width: 4,
            finished_steps: 0,
        }
    }

    fn bar(&mut self, host: &str) -> &ProgressBar {
        if !self.hosts.contains_key(host) {
            self.width = self.width.max(host.len());
            let bar = self.multi.add(ProgressBar::new_spinner());
            bar.set_style(self.running.clone());
            bar.enable_steady_tick(Duration::from_millis(120));
            self.hosts.insert(host.to_string(), bar);
            for (name, bar) in &self.hosts {
                bar.set_prefix(format!("{name:width$}", width = self.width));
            }
        }
        &self.hosts[host]
    }

    pub fn handle(&mut self, event: &Event) {
        match &event.kind {
            EventKind::Connected { host, .. } => self.bar(host).set_message("connected"),
            EventKind::ConnectFailed { host, .. } => {
                let done = self.done.clone();
                let bar = self.bar(host);
                bar.set_style(done);
                bar.finish_with_message("failed to connect");
            }
            EventKind::StepStarted { host, step } => {
                let running = self.running.clone();
                let bar = self.bar(host);
                bar.set_style(running);
                bar.reset_elapsed();
                bar.set_message(step.clone());
            }
            EventKind::Transferred {
                host,
                step,
                sent,
                total,
            } => {
                let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
                self.bar(host).set_message(format!(
                    "{step} {:.1}/{:.1} MiB",
                    mib(*sent),
                    mib(*total)
                ));
            }
            EventKind::StepFinished {
                host,
                step,
                outcome,
                ..
            } => {
                self.finished_steps += 1;
                let state = if outcome.success() { "ok" } else { "FAILED" };
                self.bar(host).set_message(format!("{step} {state}"));
                self.overall
                    .set_message(format!("{} steps done", self.finished_steps));
            }
            _ => {}
        }
    }

    pub fn println(&self, line: &str) {
        let _ = self.multi.println(line);
    }

    /// Freezes every host's line in its final state before the summary is printed.
    pub fn finish(&mut self) {
        for bar in self.hosts.values() {
            let message = bar.message();
            bar.set_style(self.done.clone());
            bar.finish_with_message(message);
        }
        self.overall.finish_and_clear();
    }
}
