//! The result of a run, for a person (text) and for CI (JUnit XML).

use std::fmt::Write as _;
use std::time::Duration;

/// One RPC as sent and answered, kept so a failure shows what broke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    pub rpc: String,
    pub request: String,
    pub response: String,
}

/// Why a case failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// What the driver did wrong, or which setup step broke.
    pub message: String,
    /// The last RPC the case made before it failed.
    pub exchange: Option<Exchange>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    Failed(Failure),
    /// Not run, with the reason (usually a capability not advertised).
    Skipped(String),
}

/// One case's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseReport {
    pub name: String,
    /// The spec rule the case checks.
    pub rule: String,
    pub outcome: Outcome,
    /// Things the case created that cleanup could not remove.
    pub leftovers: Vec<String>,
    pub duration: Duration,
}

/// A whole run, cases in the order they ran.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub cases: Vec<CaseReport>,
}

impl Report {
    pub fn passed(&self) -> Vec<&CaseReport> {
        self.with(|o| matches!(o, Outcome::Passed))
    }

    pub fn failed(&self) -> Vec<&CaseReport> {
        self.with(|o| matches!(o, Outcome::Failed(_)))
    }

    pub fn skipped(&self) -> Vec<&CaseReport> {
        self.with(|o| matches!(o, Outcome::Skipped(_)))
    }

    /// True when no case failed.
    pub fn success(&self) -> bool {
        self.failed().is_empty()
    }

    fn with(&self, pick: impl Fn(&Outcome) -> bool) -> Vec<&CaseReport> {
        self.cases.iter().filter(|c| pick(&c.outcome)).collect()
    }

    /// The closing line, exactly `N passed, N failed, N skipped`.
    pub fn summary(&self) -> String {
        format!(
            "{} passed, {} failed, {} skipped",
            self.passed().len(),
            self.failed().len(),
            self.skipped().len()
        )
    }

    /// Failures in full, then the summary line.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let failed = self.failed();
        if !failed.is_empty() {
            out.push_str("\nFailures:\n");
        }
        for case in failed {
            out.push_str(&failure_text(case));
        }
        let leftovers: Vec<_> = self
            .cases
            .iter()
            .filter(|c| !c.leftovers.is_empty())
            .collect();
        if !leftovers.is_empty() {
            out.push_str("\nLeftovers cleanup could not remove:\n");
            for case in leftovers {
                for item in &case.leftovers {
                    let _ = writeln!(out, "  {}: {item}", case.name);
                }
            }
        }
        out.push('\n');
        out.push_str(&self.summary());
        out.push('\n');
        out
    }

    /// A JUnit XML document: one `testsuite`, one `testcase` per case, the
    /// classname being the part of the name before the first `/`.
    pub fn to_junit(&self) -> String {
        let total: f64 = self.cases.iter().map(|c| c.duration.as_secs_f64()).sum();
        let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let _ = writeln!(
            out,
            "<testsuite name=\"cairn-sanity\" tests=\"{}\" failures=\"{}\" skipped=\"{}\" errors=\"0\" time=\"{total:.3}\">",
            self.cases.len(),
            self.failed().len(),
            self.skipped().len()
        );
        for case in &self.cases {
            let (class, short) = case
                .name
                .split_once('/')
                .unwrap_or(("cairn-sanity", &case.name));
            let _ = write!(
                out,
                "  <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\"",
                xml_escape(class),
                xml_escape(short),
                case.duration.as_secs_f64()
            );
            match &case.outcome {
                Outcome::Passed => out.push_str("/>\n"),
                Outcome::Skipped(why) => {
                    let _ = writeln!(
                        out,
                        ">\n    <skipped message=\"{}\"/>\n  </testcase>",
                        xml_escape(why)
                    );
                }
                Outcome::Failed(failure) => {
                    let _ = writeln!(
                        out,
                        ">\n    <failure message=\"{}\">{}</failure>\n  </testcase>",
                        xml_escape(&failure.message),
                        xml_escape(&failure_text(case))
                    );
                }
            }
        }
        out.push_str("</testsuite>\n");
        out
    }
}

/// The progress line printed as a case finishes.
pub fn progress_line(index: usize, total: usize, case: &CaseReport) -> String {
    let width = total.to_string().len();
    let (word, detail) = match &case.outcome {
        Outcome::Passed => ("PASS", String::new()),
        Outcome::Failed(f) => ("FAIL", format!(": {}", first_line(&f.message))),
        Outcome::Skipped(why) => ("SKIP", format!(": {why}")),
    };
    format!(
        "[{index:>width$}/{total}] {word} {} ({} ms){detail}",
        case.name,
        case.duration.as_millis()
    )
}

fn failure_text(case: &CaseReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "--- FAIL {}", case.name);
    let _ = writeln!(out, "  rule:     {}", case.rule);
    if let Outcome::Failed(failure) = &case.outcome {
        let _ = writeln!(out, "  problem:  {}", failure.message);
        if let Some(ex) = &failure.exchange {
            let _ = writeln!(out, "  last rpc: {}", ex.rpc);
            let _ = writeln!(out, "  request:\n{}", indent(&ex.request, 4));
            let _ = writeln!(out, "  response:\n{}", indent(&ex.response, 4));
        }
    }
    for item in &case.leftovers {
        let _ = writeln!(out, "  leftover: {item}");
    }
    out
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

fn indent(text: &str, by: usize) -> String {
    let pad = " ".repeat(by);
    text.lines()
        .map(|line| format!("{pad}{line}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Escapes text for an XML attribute or element; drops characters XML 1.0
/// cannot carry at all (other control characters).
pub fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' => out.push_str("&#10;"),
            '\t' | '\r' => out.push(c),
            c if (c as u32) < 0x20 => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(name: &str, outcome: Outcome) -> CaseReport {
        CaseReport {
            name: name.to_string(),
            rule: "a rule".to_string(),
            outcome,
            leftovers: vec![],
            duration: Duration::from_millis(5),
        }
    }

    fn sample() -> Report {
        let failure = Failure {
            message: "expected 3 INVALID_ARGUMENT, got 0 OK".to_string(),
            exchange: Some(Exchange {
                rpc: "CreateVolume".to_string(),
                request: "CreateVolumeRequest {\n    name: \"\",\n}".to_string(),
                response: "OK <volume & \"id\">".to_string(),
            }),
        };
        let mut failed = case("CreateVolume/no-name", Outcome::Failed(failure));
        failed
            .leftovers
            .push("volume v1: DeleteVolume failed".to_string());
        Report {
            cases: vec![
                case("Identity/probe", Outcome::Passed),
                failed,
                case(
                    "Snapshot/create",
                    Outcome::Skipped("no CREATE_DELETE_SNAPSHOT".into()),
                ),
                case("Identity/info", Outcome::Passed),
            ],
        }
    }

    #[test]
    fn counts_and_summary_line() {
        let report = sample();
        assert_eq!(report.passed().len(), 2);
        assert_eq!(report.failed().len(), 1);
        assert_eq!(report.skipped().len(), 1);
        assert!(!report.success());
        assert_eq!(report.summary(), "2 passed, 1 failed, 1 skipped");
        assert!(Report::default().success());
    }

    #[test]
    fn text_ends_with_summary_and_shows_the_exchange() {
        let text = sample().to_text();
        assert_eq!(text.lines().last(), Some("2 passed, 1 failed, 1 skipped"));
        assert!(text.contains("--- FAIL CreateVolume/no-name"));
        assert!(text.contains("rule:     a rule"));
        assert!(text.contains("    CreateVolumeRequest {"));
        assert!(text.contains("OK <volume & \"id\">"));
        assert!(text.contains("leftover: volume v1"));
    }

    #[test]
    fn junit_is_escaped_and_counts_match() {
        let xml = sample().to_junit();
        assert!(xml.starts_with("<?xml"));
        assert!(xml.contains("tests=\"4\" failures=\"1\" skipped=\"1\""));
        assert!(xml.contains("<testcase classname=\"CreateVolume\" name=\"no-name\""));
        assert!(xml.contains("&lt;volume &amp; &quot;id&quot;&gt;"));
        assert!(xml.contains("<skipped message=\"no CREATE_DELETE_SNAPSHOT\"/>"));
        assert!(!xml.contains("<volume"));
        assert_eq!(xml.matches("<testcase").count(), 4);
        assert_eq!(xml.matches("</testcase>").count(), 2);
        assert!(xml.trim_end().ends_with("</testsuite>"));
    }

    #[test]
    fn xml_escape_drops_control_characters() {
        assert_eq!(xml_escape("a\u{1}b<"), "ab&lt;");
    }

    #[test]
    fn progress_line_shape() {
        let report = sample();
        assert_eq!(
            progress_line(1, 12, &report.cases[0]),
            "[ 1/12] PASS Identity/probe (5 ms)"
        );
        assert!(progress_line(2, 12, &report.cases[1])
            .ends_with("FAIL CreateVolume/no-name (5 ms): expected 3 INVALID_ARGUMENT, got 0 OK"));
    }
}
