use std::sync::Mutex;

use super::*;

/// conntrack-tools 1.4.7's `-L` lines: a pod's connection that reached IMDS directly (no NAT), one
/// DNATed to NMI, one that went through another DNAT (the node's own route to its IMDS), and the
/// node's own connection (NMI's, to IMDS).
const LISTING: &str = "\
tcp      6 431999 ESTABLISHED src=10.244.9.5 dst=169.254.169.254 sport=54254 dport=80 src=169.254.169.254 dst=10.244.9.5 sport=80 dport=54254 [ASSURED] mark=0 use=1
tcp      6 431990 ESTABLISHED src=10.244.9.6 dst=169.254.169.254 sport=48782 dport=80 src=127.0.0.1 dst=10.244.9.6 sport=2579 dport=48782 [ASSURED] mark=0 use=1
tcp      6 119 TIME_WAIT src=10.244.9.7 dst=169.254.169.254 sport=40000 dport=80 src=10.250.0.2 dst=10.250.0.14 sport=18004 dport=40000 [ASSURED] mark=0 use=1
tcp      6 86399 ESTABLISHED src=10.250.0.14 dst=169.254.169.254 sport=33000 dport=80 src=169.254.169.254 dst=10.250.0.14 sport=80 dport=33000 [ASSURED] mark=0 use=1
garbage line
";

fn nmi() -> Target {
    Target::new([127, 0, 0, 1].into(), 2579)
}

#[derive(Default)]
struct Fake {
    listing: String,
    gone: Vec<u16>,
    deleted: Mutex<Vec<Entry>>,
}

impl Tool for Fake {
    fn list(&self) -> BoxFuture<'_, Result<String>> {
        Box::pin(async move { Ok(self.listing.clone()) })
    }

    fn delete<'a>(&'a self, e: &'a Entry) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            self.deleted.lock().unwrap().push(e.clone());
            Ok(!self.gone.contains(&e.sport))
        })
    }
}

#[test]
fn listing_lines_parse_into_both_directions() {
    let entries = parse(LISTING);
    assert_eq!(entries.len(), 4, "{entries:?}");
    assert_eq!(
        entries[0],
        Entry {
            src: "10.244.9.5".into(),
            sport: 54254,
            dst: METADATA_IP.into(),
            dport: 80,
            reply_src: METADATA_IP.into(),
            reply_sport: 80,
        }
    );
    assert!(entries[1].goes_to(nmi()));
    assert!(!entries[1].goes_to(Target::new([127, 0, 0, 1].into(), 2580)));
    assert!(!entries[0].goes_to(nmi()));
}

#[tokio::test]
async fn every_connection_not_going_to_nmi_is_cut_and_nmis_are_left() {
    let fake = Fake {
        listing: LISTING.into(),
        gone: vec![40000],
        ..Fake::default()
    };
    let cut = cut_bypassing(&fake, nmi()).await.unwrap();
    let deleted: Vec<u16> = fake.deleted.lock().unwrap().iter().map(|e| e.sport).collect();
    // The direct one, the one DNATed elsewhere (already gone when deleted), and the node's own
    // (whose next packet makes an identical entry again: host traffic is not intercepted).
    assert_eq!(deleted, [54254, 40000, 33000]);
    assert_eq!(cut, 2, "an entry already gone is not counted");
}

#[tokio::test]
async fn nothing_to_cut_is_fine_and_a_failing_tool_is_an_error() {
    assert_eq!(cut_bypassing(&Fake::default(), nmi()).await.unwrap(), 0);
    let missing = System {
        program: "/nonexistent/conntrack".into(),
    };
    let err = cut_bypassing(&missing, nmi()).await.unwrap_err();
    assert!(err.to_string().contains("conntrack-tools"), "{err}");
}
