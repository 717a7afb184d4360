//! Keeps the hand-written analysis of docs/benchmarks.md honest: every
//! section of it is stamped with the run it was written for (date and
//! commit), and a section whose stamp is not the run on the page is marked
//! "not reviewed for this run" when the page is regenerated. So analysis
//! cannot outlive the numbers and code it explains unnoticed; the test
//! `docs_promise_benchmark_analysis_is_stamped_for_its_run`
//! (tests/docs_promises.rs) checks that the page carries the marks the
//! generator would give it.
//!
//! Used by the bench (benches/echo/report.rs) and by that test, so it
//! depends on nothing else of the bench.

/// The run a page shows: when it ran and the code it measured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunId {
    /// As on the page's `- Date:` line.
    pub date: String,
    /// `git rev-parse --short HEAD`, with `-dirty` for uncommitted changes.
    pub commit: String,
}

const STAMP_OPEN: &str = "<!-- analysis of the run of ";
const STAMP_CLOSE: &str = " -->";
/// Ends the line the generator puts under a section written for another run.
pub const STALE_MARK: &str = "<!-- stale -->";

impl RunId {
    /// The stamp a section carries once it was checked against this run.
    pub fn stamp(&self) -> String {
        format!(
            "{STAMP_OPEN}{}, commit {}{STAMP_CLOSE}",
            self.date, self.commit
        )
    }

    /// The run named by a stamp line, if `line` is one.
    pub fn from_stamp(line: &str) -> Option<RunId> {
        let inner = line
            .trim()
            .strip_prefix(STAMP_OPEN)?
            .strip_suffix(STAMP_CLOSE)?;
        let (date, commit) = inner.rsplit_once(", commit ")?;
        Some(RunId {
            date: date.to_string(),
            commit: commit.to_string(),
        })
    }

    /// The run of a generated page: its `- Date:` and `- Commit:` lines.
    #[allow(dead_code)] // for tests/docs_promises.rs, which checks the page
    pub fn of_page(page: &str) -> Option<RunId> {
        let field = |name: &str| {
            page.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().trim_matches('`').to_string())
        };
        Some(RunId {
            date: field("- Date: ")?,
            commit: field("- Commit: ")?,
        })
    }
}

/// Re-marks the hand-written part for `run`: each section (a `##` or `###`
/// heading and what follows it up to the next) written for another run, or
/// not stamped at all, gets a line saying so right under its heading; the
/// marks of an earlier regeneration are replaced. Returns the new text and
/// one line per section that needs review.
pub fn review(kept: &str, run: &RunId) -> (String, Vec<String>) {
    let mut out = String::new();
    let mut stale = Vec::new();
    for section in sections(kept) {
        let mut lines = section
            .lines()
            .filter(|l| !l.trim_end().ends_with(STALE_MARK));
        let Some(heading) = lines.next() else {
            continue;
        };
        let body: Vec<&str> = lines.collect();
        out.push_str(heading);
        out.push('\n');
        if heading.starts_with('#') {
            let written_for = body.iter().find_map(|l| RunId::from_stamp(l));
            if written_for.as_ref() != Some(run) {
                let when = match &written_for {
                    Some(w) => format!("the run of {} at commit {}", w.date, w.commit),
                    None => "no stated run".to_string(),
                };
                stale.push(format!(
                    "{}: written for {when}",
                    heading.trim_start_matches('#').trim()
                ));
                out.push_str(&format!(
                    "> **Not reviewed for this run:** written for {when}; the numbers above are \
from the run of {} at commit {}. Check it against them, then stamp it `{}`. {STALE_MARK}\n",
                    run.date,
                    run.commit,
                    run.stamp()
                ));
            }
        }
        for line in body {
            out.push_str(line);
            out.push('\n');
        }
    }
    (out, stale)
}

/// Splits at `##`/`###` headings; text before the first is a section of
/// its own (it is kept as is).
fn sections(text: &str) -> Vec<String> {
    let mut out: Vec<String> = vec![String::new()];
    for line in text.lines() {
        if line.starts_with("## ") || line.starts_with("### ") {
            out.push(String::new());
        }
        let last = out.last_mut().expect("never empty");
        last.push_str(line);
        last.push('\n');
    }
    out.retain(|s| !s.is_empty());
    out
}
