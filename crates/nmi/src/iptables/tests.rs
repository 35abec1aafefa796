//! The reconcile logic against a small in-memory nat table that answers like `iptables -S`.
//! The real binaries are exercised in a network namespace by `tests/netns.rs`.

use std::sync::Mutex;

use mirror::sync;

use super::*;

#[derive(Default)]
struct Table {
    /// chain name -> rules (`-A ...` lines); PREROUTING always exists.
    chains: Mutex<Vec<(String, Vec<String>)>>,
    log: Mutex<Vec<String>>,
}

impl Table {
    fn new() -> Self {
        let t = Self::default();
        sync::lock(&t.chains).push(("PREROUTING".into(), vec!["-A PREROUTING -j KUBE-SERVICES".into()]));
        t
    }
    fn chain(&self, name: &str) -> Option<Vec<String>> {
        sync::lock(&self.chains)
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, r)| r.clone())
    }
    fn set(&self, name: &str, rules: Vec<String>) {
        let mut c = sync::lock(&self.chains);
        c.retain(|(n, _)| n != name);
        c.push((name.into(), rules));
    }
    fn remove(&self, name: &str) {
        sync::lock(&self.chains).retain(|(n, _)| n != name);
    }
}

impl Netfilter for Table {
    fn iptables<'a>(&'a self, args: &'a [&'a str]) -> BoxFuture<'a, Result<String>> {
        Box::pin(async move {
            sync::lock(&self.log).push(args.join(" "));
            let fail = || Error::Command {
                command: args.join(" "),
                stderr: "No chain/target/match by that name.".into(),
            };
            match args {
                ["-t", "nat", "-S", name] => {
                    let rules = self.chain(name).ok_or_else(fail)?;
                    let head = if *name == "PREROUTING" {
                        "-P PREROUTING ACCEPT".to_owned()
                    } else {
                        format!("-N {name}")
                    };
                    Ok(std::iter::once(head).chain(rules).map(|l| l + "\n").collect())
                }
                ["-t", "nat", "-D", "PREROUTING", "-j", c] => {
                    let mut rules = self.chain("PREROUTING").unwrap();
                    let at = rules
                        .iter()
                        .position(|r| *r == format!("-A PREROUTING -j {c}"))
                        .ok_or_else(fail)?;
                    rules.remove(at);
                    self.set("PREROUTING", rules);
                    Ok(String::new())
                }
                ["-t", "nat", "-I", "PREROUTING", "1", "-j", c] => {
                    let mut rules = self.chain("PREROUTING").unwrap();
                    rules.insert(0, format!("-A PREROUTING -j {c}"));
                    self.set("PREROUTING", rules);
                    Ok(String::new())
                }
                ["-t", "nat", "-F", name] => {
                    self.chain(name).ok_or_else(fail)?;
                    self.set(name, vec![]);
                    Ok(String::new())
                }
                ["-t", "nat", "-X", name] => {
                    self.chain(name).ok_or_else(fail)?;
                    self.remove(name);
                    Ok(String::new())
                }
                _ => Err(fail()),
            }
        })
    }

    fn restore<'a>(&'a self, input: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            sync::lock(&self.log).push("restore".into());
            let mut lines = input.lines();
            assert_eq!(lines.next(), Some("*nat"));
            let declared = lines.next().unwrap();
            let name = declared
                .trim_start_matches(':')
                .split(' ')
                .next()
                .unwrap()
                .to_owned();
            let rules: Vec<String> = lines.take_while(|l| *l != "COMMIT").map(str::to_owned).collect();
            self.set(&name, rules);
            Ok(())
        })
    }
}

fn target() -> Target {
    Target::new("127.0.0.1".parse().unwrap(), 2579)
}

#[test]
fn expected_rules_are_upstreams() {
    assert_eq!(
        target().expected_chain(),
        [
            "-N aad-metadata",
            "-A aad-metadata ! -s 127.0.0.1/32 -d 169.254.169.254/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 127.0.0.1:2579",
            "-A aad-metadata -j RETURN",
        ]
    );
    let wildcard = Target::new("0.0.0.0".parse().unwrap(), 2579);
    assert!(wildcard.expected_chain()[1].ends_with("127.0.0.1:2579"));
}

#[tokio::test]
async fn installs_then_leaves_correct_rules_alone() {
    let t = Table::new();
    assert_eq!(ensure(&t, target()).await.unwrap(), Repair::Both);
    assert_eq!(t.chain(CHAIN).unwrap(), target().expected_chain()[1..]);
    assert_eq!(t.chain("PREROUTING").unwrap()[0], "-A PREROUTING -j aad-metadata");
    let before = sync::lock(&t.log).len();
    assert_eq!(ensure(&t, target()).await.unwrap(), Repair::None);
    let log = sync::lock(&t.log);
    assert!(
        log[before..].iter().all(|c| c.contains("-S")),
        "only reads: {:?}",
        &log[before..]
    );
}

#[tokio::test]
async fn tampering_is_repaired() {
    let t = Table::new();
    ensure(&t, target()).await.unwrap();
    // A rule added to the chain, and the jump moved behind another rule.
    let mut chain = t.chain(CHAIN).unwrap();
    chain.insert(0, "-A aad-metadata -j ACCEPT".into());
    t.set(CHAIN, chain);
    t.set(
        "PREROUTING",
        vec![
            "-A PREROUTING -j KUBE-SERVICES".into(),
            "-A PREROUTING -j aad-metadata".into(),
        ],
    );
    assert_eq!(ensure(&t, target()).await.unwrap(), Repair::Both);
    assert_eq!(t.chain(CHAIN).unwrap(), target().expected_chain()[1..]);
    assert_eq!(
        t.chain("PREROUTING").unwrap(),
        ["-A PREROUTING -j aad-metadata", "-A PREROUTING -j KUBE-SERVICES"]
    );
    // A flushed chain.
    t.set(CHAIN, vec![]);
    assert_eq!(ensure(&t, target()).await.unwrap(), Repair::Chain);
    assert_eq!(t.chain(CHAIN).unwrap(), target().expected_chain()[1..]);
}

#[tokio::test]
async fn cleanup_removes_everything_and_is_idempotent() {
    let t = Table::new();
    ensure(&t, target()).await.unwrap();
    cleanup(&t).await.unwrap();
    assert!(t.chain(CHAIN).is_none());
    assert_eq!(t.chain("PREROUTING").unwrap(), ["-A PREROUTING -j KUBE-SERVICES"]);
    cleanup(&t).await.unwrap();
}
