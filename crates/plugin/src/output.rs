//! `-o text|json|yaml`: how a [`Report`] is printed. JSON and YAML carry one documented shape,
//! [`Document`], the same fields in both, so a script may switch format without re-reading the
//! schema; the text form is [`Report::text`].

use serde::Serialize;

use crate::report::{Link, Report};

/// The output formats, as kubectl's `-o`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Marks (✔ ✘ –), the facts indented below each link, then the fix.
    #[default]
    Text,
    /// The report as one JSON object (pretty-printed).
    Json,
    /// The same object as YAML.
    Yaml,
}

/// The shape of `-o json` and `-o yaml`. Fields are only ever added, never renamed or removed:
///
/// - `subject`: what was examined (`pod shop/web`, `pod identity in this cluster`);
/// - `ok`: no link failed (the exit code is 0 exactly then);
/// - `links`: in the order the text shows them, each with
///   - `id`: stable for scripts (`pod`, `exceptions`, `bindings`, `identity`, `assignment`, `vm`,
///     `nmi`; for `check`: `crds`, `mic`, `nmi`, `cloud-config`, `identities`, `bindings`,
///     `consent`, `stuck`, `limits`),
///   - `title`: the line after the mark,
///   - `verdict`: `pass` (✔ holds), `fail` (✘ broken) or `unchecked` (– unknown: could not be
///     checked, and a fact says why),
///   - `facts`: the detail lines,
///   - `fix`: what to do, present on failed links only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Document<'r> {
    pub subject: &'r str,
    pub ok: bool,
    pub links: &'r [Link],
}

impl<'r> From<&'r Report> for Document<'r> {
    fn from(report: &'r Report) -> Self {
        Self {
            subject: &report.subject,
            ok: report.ok(),
            links: &report.links,
        }
    }
}

/// The report as `format` prints it, ending in a newline.
pub fn render(report: &Report, format: Format) -> String {
    let document = Document::from(report);
    match format {
        Format::Text => report.text(),
        Format::Json => {
            serde_json::to_string_pretty(&document).expect("a report is strings, bools and lists") + "\n"
        }
        Format::Yaml => serde_saphyr::to_string(&document).expect("a report is strings, bools and lists"),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::report::Verdict;

    /// A report whose strings are the ones YAML gets wrong when it does not quote: booleans,
    /// nulls, numbers, a `: `, a leading `- ` or `#`, an empty string, several lines, non-ASCII.
    fn tricky() -> Report {
        Report {
            subject: "pod shop/web".into(),
            links: vec![
                Link::pass("pod", "pod shop/web").facts(
                    [
                        "yes",
                        "no",
                        "on",
                        "null",
                        "~",
                        "123",
                        "0x1F",
                        "1e3",
                        "",
                        "key: value",
                        "- item",
                        "# note",
                        "line one\nline two",
                        "✔ done → «ok»",
                        "  leading",
                        "trailing ",
                        "'quoted'",
                        "\"dq\"",
                        "{flow}",
                        "[list]",
                        "*alias",
                        "&anchor",
                        "!tag",
                        "%directive",
                        "@at",
                        "`tick`",
                    ]
                    .map(String::from),
                ),
                Link::fail(
                    "bindings",
                    "no AzureIdentityBinding has selector app",
                    "create one: selector: app",
                ),
                Link::unchecked("vm", "VM", "no --cloud-config given"),
            ],
        }
    }

    #[test]
    fn json_is_the_document_with_the_verdicts_the_text_marks() {
        let text = render(&tricky(), Format::Json);
        // In the documented order, for a person reading it.
        assert!(
            text.starts_with("{\n  \"subject\": \"pod shop/web\",\n  \"ok\": false,\n  \"links\": ["),
            "{text}"
        );
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["subject"], "pod shop/web");
        assert_eq!(v["ok"], false);
        let verdicts: Vec<&Value> = v["links"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| &l["verdict"])
            .collect();
        assert_eq!(verdicts, [&json!("pass"), &json!("fail"), &json!("unchecked")]);
        assert_eq!(v["links"][1]["fix"], "create one: selector: app");
        assert!(v["links"][0].get("fix").is_none(), "fix only on failed links");
        assert_eq!(v["links"][2]["facts"], json!(["no --cloud-config given"]));
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["links", "ok", "subject"], "no other top-level field");
    }

    #[test]
    fn yaml_reads_back_as_exactly_the_json() {
        let report = tricky();
        let yaml = render(&report, Format::Yaml);
        let from_yaml: Value = serde_saphyr::from_str(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        let from_json: Value = serde_json::from_str(&render(&report, Format::Json)).unwrap();
        assert_eq!(from_yaml, from_json, "{yaml}");
        assert!(yaml.ends_with('\n'));
    }

    #[test]
    fn ok_follows_the_verdicts_as_the_exit_code_does() {
        let passing = Report {
            subject: "cluster".into(),
            links: vec![
                Link::pass("crds", "CRDs"),
                Link::unchecked("mic", "MIC", "unread"),
            ],
        };
        let v: Value = serde_json::from_str(&render(&passing, Format::Json)).unwrap();
        assert_eq!(v["ok"], true);
        assert_eq!(passing.exit_code(), crate::report::EXIT_OK);
        assert_eq!(passing.links[1].verdict, Verdict::Unchecked);
    }

    #[test]
    fn text_is_the_report_s_own() {
        assert_eq!(render(&tricky(), Format::Text), tricky().text());
    }
}
