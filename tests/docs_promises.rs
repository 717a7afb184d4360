//! The documentation's checkable promises, each run against the code: one
//! test per guarantee or planning number in README.md, docs/*.md and the
//! crate docs, named `docs_promise_*`, so that a promise without a test shows
//! in review. Where another test already checks a promise in depth, the test
//! here is a small focused check of the same sentence (and names the deeper
//! one). The list of promises and their tests is in the module docs of each
//! section below.

mod common;

#[path = "../benches/echo/analysis.rs"]
mod analysis;

// ----- docs/benchmarks.md ----------------------------------------------------
//
// "Each section of the hand-written analysis is stamped with the run (date
// and commit) it was written for; regenerating marks every section written
// for another run as not reviewed."

mod benchmarks {
    use super::analysis;

    fn run(date: &str, commit: &str) -> analysis::RunId {
        analysis::RunId {
            date: date.into(),
            commit: commit.into(),
        }
    }

    #[test]
    fn docs_promise_benchmark_analysis_marks_sections_of_another_run() {
        let old = run("2026-01-01 00:00 UTC", "aaaaaaa");
        let new = run("2026-02-02 00:00 UTC", "bbbbbbb");
        let text = format!(
            "\n## Analysis\n\n{}\nintro\n\n### One\n\n{}\nfast\n\n### Two\n\nundated\n",
            new.stamp(),
            old.stamp()
        );
        let (out, stale) = analysis::review(&text, &new);
        assert_eq!(stale.len(), 2, "{stale:?}");
        assert!(out.contains(
            "### One\n> **Not reviewed for this run:** written for the run of 2026-01-01"
        ));
        assert!(out.contains("### Two\n> **Not reviewed for this run:** written for no stated run"));
        assert!(!out.contains("## Analysis\n> **Not"));
        // Idempotent, and a re-stamped section loses its mark.
        assert_eq!(analysis::review(&out, &new).0, out);
        let fixed = out.replace(&old.stamp(), &new.stamp());
        let (again, stale) = analysis::review(&fixed, &new);
        assert_eq!(stale.len(), 1);
        assert!(!again.contains("### One\n> **Not"));
    }

    #[test]
    fn docs_promise_benchmark_page_names_its_run() {
        let page = "- Date: 2026-11-23 18:50 UTC\n- Commit: `092ecf9`\n";
        assert_eq!(
            analysis::RunId::of_page(page),
            Some(run("2026-11-23 18:50 UTC", "092ecf9"))
        );
        let r = run("d", "c");
        assert_eq!(analysis::RunId::from_stamp(&r.stamp()), Some(r));
    }

    /// The page as committed carries exactly the marks the generator would
    /// give it: every analysis section stamped, and a section written for
    /// another run than the page's marked "not reviewed". A hand edit that
    /// drops a mark without re-stamping fails here.
    #[test]
    fn docs_promise_benchmark_analysis_is_stamped_for_its_run() {
        let page = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/benchmarks.md"),
        )
        .unwrap();
        let run = analysis::RunId::of_page(&page).expect("the page names its run (Date, Commit)");
        let marker =
            "<!-- Hand-written below this line: kept when the bench regenerates the page. -->";
        let at = page.find(marker).expect("the hand-written marker") + marker.len() + 1;
        let kept = &page[at..];
        let (expected, _) = analysis::review(kept, &run);
        assert!(
            kept == expected,
            "docs/benchmarks.md: the analysis marks differ from what the generator would write:\n{}",
            expected
        );
        assert!(
            kept.contains("<!-- analysis of the run of"),
            "no stamped section"
        );
        // The stale claims of issue 15 are gone from the prose.
        for stale in [
            "fills a 64-entry",
            "re-arming the shared read buffer on\nevery read",
        ] {
            assert!(!page.contains(stale), "stale claim {stale:?}");
        }
    }
}
