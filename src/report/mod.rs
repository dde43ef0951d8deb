//! The only code that writes to the screen. Host tasks send events; the reporter shows them as
//! live progress bars (a terminal), plain lines `TIME HOST STEP | output` (cron, CI) or JSON
//! (`--json`), then failure reports and the final table, and masks secrets in all of it.

pub mod json;
mod progress;

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::time::Duration;

use chrono::SecondsFormat;

use crate::events::{Event, EventKind, Events, Wave};
use crate::mask::Masker;
use crate::transport::Outcome;

/// The most events shown between two flushes of the live output.
const BATCH: usize = 1024;

/// Lines of a failing command's output shown in its failure report.
const TAIL_LINES: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verbosity {
    Quiet,
    Normal,
    Verbose,
}

/// How events are shown while the command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// One line per event; for pipes, cron and CI.
    Plain,
    /// One JSON object per line on stdout; the summary goes to stderr.
    Json,
    /// Live bars, one per host, on a terminal.
    Progress { color: bool },
}

enum Live {
    Plain,
    Json,
    Progress(Box<progress::Bars>),
}

/// Lines that progress bars replace, and lines that must be seen anyway.
#[derive(PartialEq, Eq)]
enum Weight {
    Routine,
    Output,
    Important,
}

pub struct Reporter {
    /// Live lines and JSON events: buffered, and flushed whenever the events that have arrived
    /// are shown (a write per line would cap what a chatty step can print).
    out: std::io::BufWriter<Box<dyn Write + Send>>,
    summary_out: Box<dyn Write + Send>,
    live: Live,
    masker: Masker,
    verbosity: Verbosity,
    /// Step names in the order they started, for the table's columns.
    steps: Vec<String>,
    hosts: Vec<String>,
    results: BTreeMap<(String, String), (Outcome, Duration)>,
    /// The last lines of output of each host's steps: host → step → lines.
    tails: BTreeMap<String, BTreeMap<String, VecDeque<String>>>,
    failures: Vec<(String, String, Outcome)>,
    probes: Vec<(String, Vec<(String, String)>)>,
    /// The last lines of the summary: one per wave of an activation.
    activation: Vec<String>,
    clock: Clock,
    /// `--dry-run`: the scripts are what is shown; steps' results and timings, all made up
    /// by the dry run's transport, are not.
    dry_run: bool,
}

/// Event times as plain output shows them (to the second), formatted once per second.
#[derive(Default)]
struct Clock {
    second: i64,
    text: std::sync::Arc<str>,
}

impl Clock {
    fn format(&mut self, time: chrono::DateTime<chrono::Utc>) -> std::sync::Arc<str> {
        if self.text.is_empty() || time.timestamp() != self.second {
            self.second = time.timestamp();
            self.text = time.to_rfc3339_opts(SecondsFormat::Secs, true).into();
        }
        self.text.clone()
    }
}

impl Reporter {
    pub fn new(style: Style, masker: Masker, verbosity: Verbosity) -> Reporter {
        let (summary_out, live): (Box<dyn Write + Send>, Live) = match style {
            Style::Plain => (Box::new(std::io::stdout()), Live::Plain),
            Style::Json => (Box::new(std::io::stderr()), Live::Json),
            Style::Progress { color } => (
                Box::new(std::io::stdout()),
                Live::Progress(Box::new(progress::Bars::new(color))),
            ),
        };
        Reporter {
            out: std::io::BufWriter::with_capacity(64 * 1024, Box::new(std::io::stdout())),
            summary_out,
            live,
            masker,
            verbosity,
            steps: Vec::new(),
            hosts: Vec::new(),
            results: BTreeMap::new(),
            tails: BTreeMap::new(),
            failures: Vec::new(),
            probes: Vec::new(),
            activation: Vec::new(),
            clock: Clock::default(),
            dry_run: false,
        }
    }

    /// A reporter for `--dry-run`: every script as it would be sent, per host and step.
    pub fn for_dry_run(self) -> Reporter {
        Reporter {
            dry_run: true,
            ..self
        }
    }

    /// Starts the reporter on its own task; events sent through the returned handle are shown
    /// until every handle is dropped, and then the task prints the summary and ends.
    pub fn spawn(mut self) -> (Events, tokio::task::JoinHandle<Reporter>) {
        let (events, mut receiver) = Events::channel();
        let task = tokio::spawn(async move {
            while let Some(event) = receiver.recv().await {
                self.take(event);
                // Whatever else has arrived meanwhile, then one flush for all of it.
                for _ in 0..BATCH {
                    match receiver.try_recv() {
                        Ok(event) => self.take(event),
                        Err(_) => break,
                    }
                }
                let _ = self.out.flush();
            }
            self.summary();
            self
        });
        (events, task)
    }

    fn take(&mut self, event: Event) {
        self.handle(&event);
        if let EventKind::Output { lines, .. } = &event.kind {
            crate::lines::BACKLOG.shown(lines);
        }
    }

    /// A line of the final summary.
    fn line(&mut self, text: &str) {
        let text = self.masker.mask(text);
        let _ = writeln!(self.summary_out, "{text}");
    }

    /// Keeps `line` among the last [`TAIL_LINES`] of `host`'s `step`, for a failure report.
    /// Looked up by reference: this runs for every line a step prints.
    fn keep(&mut self, host: &str, step: &str, line: &str) {
        if !self.tails.contains_key(host) {
            self.tails.insert(host.to_string(), BTreeMap::new());
        }
        let steps = self.tails.get_mut(host).expect("inserted above");
        if !steps.contains_key(step) {
            steps.insert(step.to_string(), VecDeque::with_capacity(TAIL_LINES));
        }
        let tail = steps.get_mut(step).expect("inserted above");
        if tail.len() == TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line.to_string());
    }

    /// A line of output (already masked) while the command runs, where the style wants it:
    /// written straight out, since a chatty step sends millions of them.
    fn show_output(&mut self, time: &str, host: &str, step: &str, line: &str) {
        match &mut self.live {
            Live::Plain => {
                // Piece by piece: no formatting machinery for millions of lines.
                for piece in [time, " ", host, " ", step, " | ", line, "\n"] {
                    let _ = self.out.write_all(piece.as_bytes());
                }
            }
            Live::Json => {}
            Live::Progress(bars) => {
                if self.verbosity >= Verbosity::Verbose {
                    bars.println(&format!("{time} {host} {step} | {line}"));
                }
            }
        }
    }

    /// A line while the command runs, where the style wants it.
    fn show(&mut self, weight: Weight, text: &str) {
        let text = self.masker.mask(text);
        match &mut self.live {
            Live::Plain => {
                let _ = writeln!(self.out, "{text}");
            }
            Live::Json => {}
            Live::Progress(bars) => {
                if weight == Weight::Important
                    || (weight == Weight::Output && self.verbosity >= Verbosity::Verbose)
                {
                    bars.println(&text);
                }
            }
        }
    }

    fn handle(&mut self, event: &Event) {
        let time = self.clock.format(event.time);
        match &mut self.live {
            // Start-up output is no step's: in JSON too, only with `-v`.
            Live::Json
                if matches!(event.kind, EventKind::StartUpOutput { .. })
                    && self.verbosity < Verbosity::Verbose => {}
            Live::Json => {
                for value in json::event(event, &self.masker) {
                    let _ = writeln!(self.out, "{value}");
                }
            }
            Live::Progress(bars) => bars.handle(event),
            Live::Plain => {}
        }
        if self.dry_run {
            return self.handle_dry(event);
        }
        match &event.kind {
            EventKind::RunStarted { hosts, .. } => {
                for host in hosts {
                    self.host_seen(host);
                }
            }
            EventKind::Connected { host, duration } => {
                self.host_seen(host);
                if self.verbosity >= Verbosity::Verbose {
                    self.show(
                        Weight::Routine,
                        &format!("{time} {host} connect - ok in {}", seconds(*duration)),
                    );
                }
            }
            EventKind::ConnectFailed { host, error } => {
                self.host_seen(host);
                self.show(
                    Weight::Important,
                    &format!("{time} {host} connect - failed: {error}"),
                );
            }
            EventKind::StartUpOutput { host, line } => {
                if self.verbosity >= Verbosity::Verbose {
                    let line = self.masker.mask(line);
                    self.show(Weight::Output, &format!("{time} {host} start-up | {line}"));
                }
            }
            EventKind::StepStarted { host, step } => {
                self.host_seen(host);
                if !self.steps.contains(step) {
                    self.steps.push(step.clone());
                }
                if self.verbosity >= Verbosity::Normal {
                    self.show(Weight::Routine, &format!("{time} {host} {step} - started"));
                }
            }
            EventKind::Output { host, step, lines } => {
                for (_, line) in lines {
                    // Masked alone first: a short line of a secret is masked only as a whole
                    // line.
                    let line = self.masker.mask(line);
                    self.keep(host, step, &line);
                    if self.verbosity >= Verbosity::Normal {
                        self.show_output(&time, host, step, &line);
                    }
                }
            }
            EventKind::StepFinished {
                host,
                step,
                outcome,
                duration,
            } => {
                self.results
                    .insert((host.clone(), step.clone()), (outcome.clone(), *duration));
                if outcome.success() {
                    if self.verbosity >= Verbosity::Normal {
                        self.show(
                            Weight::Routine,
                            &format!(
                                "{time} {host} {step} - ok in {} (exit status 0)",
                                seconds(*duration)
                            ),
                        );
                    }
                } else {
                    self.show(
                        Weight::Important,
                        &format!(
                            "{time} {host} {step} - FAILED: {outcome} after {}",
                            seconds(*duration)
                        ),
                    );
                    self.failures
                        .push((host.clone(), step.clone(), outcome.clone()));
                }
            }
            EventKind::Notice { text } => self.show(Weight::Important, &format!("{time} {text}")),
            EventKind::LockWaiting {
                host,
                holder,
                remaining,
            } => self.show(
                Weight::Important,
                &format!(
                    "{time} waiting for the deploy lock on {host}, held by {holder} (up to {} more)",
                    humantime::format_duration(Duration::from_secs(remaining.as_secs()))
                ),
            ),
            EventKind::Release {
                host,
                release,
                commit,
                marks,
            } => {
                let commit: String = commit.chars().take(12).collect();
                self.show(
                    Weight::Important,
                    &format!("{time} {host} {release} {commit} {}", marks.join(",")),
                );
            }
            EventKind::Diff(diff) => {
                for line in diff.lines() {
                    self.show(Weight::Important, &line);
                }
            }
            EventKind::History(entry) => {
                for line in entry.lines() {
                    self.show(Weight::Important, &line);
                }
            }
            EventKind::Activated {
                release,
                hosts,
                window,
                skew,
            } => {
                let wave = match event.wave {
                    Some(Wave::Canary) => " (canary wave)",
                    Some(Wave::Rest) => " (second wave)",
                    None => "",
                };
                self.activation.push(format!(
                    "{release} live on {hosts} host{}{wave}: activation window {}, switch skew {}",
                    if *hosts == 1 { "" } else { "s" },
                    seconds(*window),
                    milliseconds(*skew)
                ));
            }
            EventKind::Probed { host, facts } => {
                self.host_seen(host);
                self.probes.push((host.clone(), facts.clone()));
            }
            EventKind::StepSkipped { step } => {
                if self.verbosity >= Verbosity::Normal {
                    self.show(
                        Weight::Routine,
                        &format!("{time} - {step} - skipped: no selected host has its roles"),
                    );
                }
            }
            // The live bar shows these; plain lines get the throughput when the upload ends.
            EventKind::Transferred { .. } => {}
            // Only dry runs send these.
            EventKind::WouldRun { .. } => {}
        }
    }

    /// In a dry run: the scripts, as `HOST STEP $ LINE`, and what the command says to the
    /// operator; nothing the dry run's transport made up (output, results, timings).
    fn handle_dry(&mut self, event: &Event) {
        match &event.kind {
            EventKind::WouldRun { host, step, script } => {
                // Masked whole, so that a multi-line secret shows as one `***`.
                let script = self.masker.mask(script);
                for line in script.lines() {
                    self.show(Weight::Important, &format!("{host} {step} $ {line}"));
                }
            }
            EventKind::StepSkipped { step } => self.show(
                Weight::Important,
                &format!("- {step} - skipped: no selected host has its roles"),
            ),
            EventKind::Notice { text } => self.show(Weight::Important, &format!("# {text}")),
            _ => {}
        }
    }

    fn host_seen(&mut self, host: &str) {
        if !self.hosts.iter().any(|h| h == host) {
            self.hosts.push(host.to_string());
        }
    }

    /// The failure reports, then the table of step durations per host.
    fn summary(&mut self) {
        let _ = self.out.flush();
        if let Live::Progress(bars) = &mut self.live {
            bars.finish();
        }
        if self.dry_run {
            return;
        }
        let mut failures = std::mem::take(&mut self.failures);
        failures.sort_by_key(|(host, _, _)| self.hosts.iter().position(|h| h == host));
        for (host, step, outcome) in failures {
            self.line(&format!("\nerror: {host}: step `{step}` failed: {outcome}"));
            let tail: Vec<String> = self
                .tails
                .get(&host)
                .and_then(|steps| steps.get(&step))
                .map(|lines| lines.iter().cloned().collect())
                .unwrap_or_default();
            if tail.is_empty() {
                self.line("  (no output)");
            } else {
                self.line(&format!("  last {} lines of output:", tail.len()));
                for line in tail {
                    self.line(&format!("  | {line}"));
                }
            }
        }
        self.probe_table();
        if !self.steps.is_empty() && self.verbosity > Verbosity::Quiet {
            self.step_table();
        }
        for activation in std::mem::take(&mut self.activation) {
            self.line(&activation);
        }
    }

    fn step_table(&mut self) {
        let mut rows = vec![
            std::iter::once("host".to_string())
                .chain(self.steps.iter().cloned())
                .collect::<Vec<_>>(),
        ];
        for host in &self.hosts {
            let mut row = vec![host.clone()];
            for step in &self.steps {
                row.push(match self.results.get(&(host.clone(), step.clone())) {
                    Some((outcome, duration)) if outcome.success() => seconds(*duration),
                    Some((_, duration)) => format!("{} FAILED", seconds(*duration)),
                    None => "-".to_string(),
                });
            }
            rows.push(row);
        }
        self.line("");
        for line in table(&rows) {
            self.line(&line);
        }
    }
}

impl Reporter {
    fn probe_table(&mut self) {
        let Some((_, first)) = self.probes.first() else {
            return;
        };
        let mut rows = vec![
            std::iter::once("host".to_string())
                .chain(first.iter().map(|(name, _)| name.clone()))
                .collect::<Vec<_>>(),
        ];
        let mut probes = std::mem::take(&mut self.probes);
        probes.sort_by_key(|(host, _)| self.hosts.iter().position(|h| h == host));
        for (host, facts) in probes {
            rows.push(
                std::iter::once(host)
                    .chain(facts.into_iter().map(|(_, value)| value))
                    .collect(),
            );
        }
        self.line("");
        for line in table(&rows) {
            self.line(&line);
        }
    }
}

/// Left-aligned columns separated by two spaces.
pub fn table(rows: &[Vec<String>]) -> Vec<String> {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    rows.iter()
        .map(|row| {
            let cells: Vec<String> = row
                .iter()
                .enumerate()
                .map(|(c, cell)| format!("{cell:width$}", width = widths[c]))
                .collect();
            cells.join("  ").trim_end().to_string()
        })
        .collect()
}

pub fn seconds(duration: Duration) -> String {
    format!("{:.2}s", duration.as_secs_f64())
}

pub fn milliseconds(duration: Duration) -> String {
    format!("{:.1}ms", duration.as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_pads_columns() {
        let rows = vec![
            vec!["host".to_string(), "step".to_string()],
            vec!["web10".to_string(), "1.00s".to_string()],
        ];
        assert_eq!(table(&rows), ["host   step", "web10  1.00s"]);
    }
}
