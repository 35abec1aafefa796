use super::*;

#[test]
fn timestamp_uses_entra_format() {
    let t = timestamp();
    assert_eq!(t.len(), 20);
    assert_eq!(&t[10..11], " ");
    assert!(t.ends_with('Z'));
}
