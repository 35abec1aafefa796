use super::*;

#[test]
fn rfc3339_matches_arm_format() {
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00.0000000Z");
    assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.1230000Z");
    assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.0000000Z");
}

#[test]
fn timestamp_uses_entra_format() {
    let t = entra_timestamp();
    assert_eq!(t.len(), 20);
    assert_eq!(&t[10..11], " ");
    assert!(t.ends_with('Z'));
}
