//! What `explain` and `check` print: links (one fact of the chain each) with a verdict, the
//! facts behind it and, for a failed one, the fix; as text for people here, as JSON and YAML
//! for scripts in `crate::output`. The exit code follows from the verdicts ([`Report::exit_code`]).

use serde::Serialize;

/// Exit code: every link holds.
pub const EXIT_OK: i32 = 0;
/// Exit code: at least one link failed (✘).
pub const EXIT_FAILED: i32 = 1;
/// Exit code: bad usage, or the cluster could not be asked (kubeconfig, connection, RBAC).
pub const EXIT_ERROR: i32 = 2;

/// How one link of the chain stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// ✔ it holds.
    Pass,
    /// ✘ it breaks the chain; the link says how to fix it.
    Fail,
    /// – it could not be checked (no credentials, no permission); the link says why. Not a failure.
    Unchecked,
}

impl Verdict {
    pub fn mark(self) -> &'static str {
        match self {
            Self::Pass => "✔",
            Self::Fail => "✘",
            Self::Unchecked => "–",
        }
    }
}

/// One link: a title, its verdict, the facts found and, when it failed, what to do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Link {
    /// A stable identifier for scripts (`pod`, `bindings`, `assignment`, ...).
    pub id: &'static str,
    pub title: String,
    pub verdict: Verdict,
    pub facts: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Link {
    pub fn pass(id: &'static str, title: impl Into<String>) -> Self {
        Self::new(id, title, Verdict::Pass)
    }

    pub fn fail(id: &'static str, title: impl Into<String>, fix: impl Into<String>) -> Self {
        let mut l = Self::new(id, title, Verdict::Fail);
        l.fix = Some(fix.into());
        l
    }

    /// A link that could not be checked; `why` goes in its facts.
    pub fn unchecked(id: &'static str, title: impl Into<String>, why: impl Into<String>) -> Self {
        Self::new(id, title, Verdict::Unchecked).fact(why)
    }

    fn new(id: &'static str, title: impl Into<String>, verdict: Verdict) -> Self {
        Self {
            id,
            title: title.into(),
            verdict,
            facts: Vec::new(),
            fix: None,
        }
    }

    pub fn fact(mut self, fact: impl Into<String>) -> Self {
        self.facts.push(fact.into());
        self
    }

    pub fn facts(mut self, facts: impl IntoIterator<Item = String>) -> Self {
        self.facts.extend(facts);
        self
    }
}

/// The whole answer of one command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Report {
    /// What was examined: `pod default/web-0`, `cluster`.
    pub subject: String,
    pub links: Vec<Link>,
}

impl Report {
    /// Whether every link holds (unchecked links do not count against it).
    pub fn ok(&self) -> bool {
        self.links.iter().all(|l| l.verdict != Verdict::Fail)
    }

    pub fn exit_code(&self) -> i32 {
        if self.ok() { EXIT_OK } else { EXIT_FAILED }
    }

    /// The text form: one line per link, its facts indented below, then the fix.
    pub fn text(&self) -> String {
        let mut out = format!("{}\n", self.subject);
        for l in &self.links {
            out.push_str(&format!("{} {}\n", l.verdict.mark(), l.title));
            for f in &l.facts {
                out.push_str(&format!("    {f}\n"));
            }
            if let Some(fix) = &l.fix {
                out.push_str(&format!("    fix: {fix}\n"));
            }
        }
        let failed = self.links.iter().filter(|l| l.verdict == Verdict::Fail).count();
        out.push_str(&if failed == 0 {
            "all links hold\n".to_owned()
        } else {
            format!("{failed} link(s) broken\n")
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(verdicts: &[Verdict]) -> Report {
        Report {
            subject: "pod ns/p".into(),
            links: verdicts
                .iter()
                .map(|v| Link {
                    id: "x",
                    title: "t".into(),
                    verdict: *v,
                    facts: vec!["a fact".into()],
                    fix: (*v == Verdict::Fail).then(|| "do this".into()),
                })
                .collect(),
        }
    }

    #[test]
    fn exit_code_is_1_only_for_a_failed_link() {
        assert_eq!(report(&[Verdict::Pass, Verdict::Unchecked]).exit_code(), EXIT_OK);
        assert_eq!(report(&[Verdict::Pass, Verdict::Fail]).exit_code(), EXIT_FAILED);
    }

    #[test]
    fn text_marks_each_link_and_gives_the_fix() {
        let t = report(&[Verdict::Pass, Verdict::Fail, Verdict::Unchecked]).text();
        assert_eq!(
            t,
            "pod ns/p\n✔ t\n    a fact\n✘ t\n    a fact\n    fix: do this\n– t\n    a fact\n1 link(s) broken\n"
        );
    }
}
