use super::*;

fn tags(pairs: &[(&str, &str)]) -> Tags {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn merge_updates_names_whatever_their_case_and_keeps_the_first_casing() {
    let current = tags(&[("Env", "prod"), ("team", "a")]);
    let out = merge(&current, &tags(&[("ENV", "Dev"), ("new", "x")])).unwrap();
    assert_eq!(out, tags(&[("Env", "Dev"), ("team", "a"), ("new", "x")]));
}

#[test]
fn replacement_collapses_names_differing_in_case() {
    let out = replacement(&tags(&[("a", "1"), ("A", "2")])).unwrap();
    assert_eq!(out.len(), 1);
}

#[test]
fn delete_by_name_or_by_exact_pair() {
    let current = tags(&[("Env", "prod"), ("team", "a"), ("owner", "me")]);
    let out = delete(&current, &tags(&[("env", ""), ("team", "A"), ("owner", "me")]));
    assert_eq!(out, tags(&[("team", "a")]), "values compare with case");
}

#[test]
fn each_limit_has_its_code() {
    let code = |t: &Tags| replacement(t).unwrap_err().code;
    for bad in ["a<b", "a>b", "a%b", "a&b", "a\\b", "a?b", "a/b", "a\nb"] {
        assert_eq!(code(&tags(&[(bad, "v")])), "InvalidTagNameCharacters", "{bad:?}");
    }
    assert_eq!(code(&tags(&[(" ", "v")])), "InvalidTagName");
    let name = "n".repeat(MAX_NAME_CHARS + 1);
    assert_eq!(code(&tags(&[(&name, "v")])), "InvalidTagName");
    let value = "v".repeat(MAX_VALUE_CHARS + 1);
    assert_eq!(code(&tags(&[("k", &value)])), "InvalidTagValueLength");
    let many: Tags = (0..=MAX_TAGS).map(|i| (format!("k{i}"), String::new())).collect();
    assert_eq!(code(&many), "InvalidTags");
    let exactly: Tags = (0..MAX_TAGS)
        .map(|i| (format!("k{i}"), "v".repeat(MAX_VALUE_CHARS)))
        .collect();
    assert!(replacement(&exactly).is_ok());
    assert!(replacement(&tags(&[(&"n".repeat(MAX_NAME_CHARS), "")])).is_ok());
}

#[test]
fn merge_counts_the_result() {
    let current: Tags = (0..MAX_TAGS).map(|i| (format!("k{i}"), String::new())).collect();
    assert!(merge(&current, &tags(&[("K0", "updated")])).is_ok());
    assert_eq!(
        merge(&current, &tags(&[("extra", "")])).unwrap_err().code,
        "InvalidTags"
    );
}
